/** PostgreSQL engine, API keys (revocations serialized across replicas). */
import { GatewayError } from '../../core/errors.js'
import type { AuditDraft, KeyRow, Role } from '../store.js'
import { ensureAgents, fleetShared } from './agents.js'
import { queueAudit } from './audit.js'
import { LOCK_CLASS, LOCK_KEYS, type PgDb, type Tx } from './tx.js'

export const KEY_SELECT = 'SELECT k.*, a.address FROM api_keys k LEFT JOIN agents a ON a.address_id = k.address_id'

export async function insertKey(db: PgDb, key: Omit<KeyRow, 'address_id'>, now: number, audit: (row: KeyRow) => AuditDraft): Promise<KeyRow> {
  return db.tx(async (tx) => {
    if (key.address !== null) await fleetShared(db, tx)
    const agent = key.address === null ? null : (await ensureAgents(db, tx, [key.address], now, [key.address])).get(key.address)
    const row: KeyRow = { ...key, address_id: agent?.address_id ?? null }
    await tx.run(
      `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)`,
      [row.key_id, row.role, row.name, row.key_hash, row.address_id, row.created_at, row.revoked_at],
    )
    queueAudit(db, tx, audit(row))
    return row
  })
}

export async function findKeyByHash(db: PgDb, keyHash: string): Promise<KeyRow | undefined> {
  return db.readOne<KeyRow>(`${KEY_SELECT} WHERE k.key_hash = $1`, [keyHash])
}

export async function getKey(db: PgDb, keyId: string): Promise<KeyRow | undefined> {
  return db.readOne<KeyRow>(`${KEY_SELECT} WHERE k.key_id = $1`, [keyId])
}

export async function listKeys(db: PgDb): Promise<KeyRow[]> {
  return db.read<KeyRow>(`${KEY_SELECT} ORDER BY k.created_at, k.key_id`)
}

export async function revokeKey(
  db: PgDb,
  keyId: string,
  now: number,
  guard: (key: KeyRow, otherAdmins: number) => void,
  audit: (key: KeyRow) => AuditDraft,
): Promise<KeyRow> {
  return db.tx(async (tx) => {
    // Revocations are serialized, so two replicas cannot both revoke "one of two" last admins.
    await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
    const key = await tx.one<KeyRow>(`${KEY_SELECT} WHERE k.key_id = $1`, [keyId])
    if (!key) throw new GatewayError('not_found', `key ${keyId} not found`)
    const admins = await countActive(db, tx, 'admin')
    const others = key.role === 'admin' && key.revoked_at === null ? admins - 1 : admins
    guard(key, others)
    if (key.revoked_at === null) {
      await tx.run('UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL', [now, keyId])
      tx.changes.push({ type: 'key.revoked', key_id: keyId })
      const revoked = { ...key, revoked_at: now }
      queueAudit(db, tx, audit(revoked))
      return revoked
    }
    return key
  })
}

export async function ensureAdminKey(db: PgDb, key: KeyRow): Promise<'created' | 'existing'> {
  return db.tx(async (tx) => {
    await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
    const existing = await tx.one<KeyRow>(`${KEY_SELECT} WHERE k.key_hash = $1`, [key.key_hash])
    await tx.run(
      `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
       VALUES ($1, $2, $3, $4, $5, $6, NULL)
       ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, role = 'admin'`,
      [key.key_id, key.role, key.name, key.key_hash, key.address_id, key.created_at],
    )
    return existing ? 'existing' : 'created'
  })
}

export async function createFirstAdminKey(db: PgDb, key: KeyRow, audit: AuditDraft): Promise<boolean> {
  return db.tx(async (tx) => {
    await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
    if ((await countActive(db, tx, 'admin')) > 0) return false
    await tx.run(
      `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
       VALUES ($1, 'admin', $2, $3, NULL, $4, NULL)`,
      [key.key_id, key.name, key.key_hash, key.created_at],
    )
    queueAudit(db, tx, audit)
    return true
  })
}

export async function countActiveKeys(db: PgDb, role: Role): Promise<number> {
  const row = await db.readOne<{ n: number }>('SELECT count(*) AS n FROM api_keys WHERE role = $1 AND revoked_at IS NULL', [role])
  return row?.n ?? 0
}

export async function countActive(db: PgDb, tx: Tx, role: Role): Promise<number> {
  return (await tx.one<{ n: number }>('SELECT count(*) AS n FROM api_keys WHERE role = $1 AND revoked_at IS NULL', [role]))?.n ?? 0
}
