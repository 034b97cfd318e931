/** SQLite engine: API keys. Functions of SqliteStore's context, run inside its write queue where they write. */
import { GatewayError } from '../../core/errors.js'
import type { AuditDraft, KeyRow, Role } from '../store.js'
import type { SqliteContext } from './context.js'

// ---- keys ----
export async function insertKey(
  ctx: SqliteContext,
  key: Omit<KeyRow, 'address_id'>,
  now: number,
  audit: (row: KeyRow) => AuditDraft,
): Promise<KeyRow> {
  return ctx.write((changes) => {
    const agent = key.address === null ? null : ctx.ensureAgent(key.address, now, true, changes)
    const row: KeyRow = { ...key, address_id: agent?.address_id ?? null }
    ctx.q.insertKey.run(stripAddress(row))
    ctx.audit(audit(row))
    return row
  })
}

export async function findKeyByHash(ctx: SqliteContext, keyHash: string): Promise<KeyRow | undefined> {
  return ctx.q.keyByHash.get(keyHash) as KeyRow | undefined
}

export async function getKey(ctx: SqliteContext, keyId: string): Promise<KeyRow | undefined> {
  return ctx.q.keyById.get(keyId) as KeyRow | undefined
}

export async function listKeys(ctx: SqliteContext): Promise<KeyRow[]> {
  return ctx.q.listKeys.all() as KeyRow[]
}

export async function revokeKey(
  ctx: SqliteContext,
  keyId: string,
  now: number,
  guard: (key: KeyRow, otherAdmins: number) => void,
  audit: (key: KeyRow) => AuditDraft,
): Promise<KeyRow> {
  return ctx.write((changes) => {
    const key = ctx.q.keyById.get(keyId) as KeyRow | undefined
    if (!key) throw new GatewayError('not_found', `key ${keyId} not found`)
    const admins = (ctx.q.countActive.get('admin') as { n: number }).n
    const others = key.role === 'admin' && key.revoked_at === null ? admins - 1 : admins
    guard(key, others)
    if (key.revoked_at === null) {
      ctx.q.revokeKey.run(now, keyId)
      changes.push({ type: 'key.revoked', key_id: keyId })
      const revoked = { ...key, revoked_at: now }
      ctx.audit(audit(revoked))
      return revoked
    }
    return key
  })
}

export async function ensureAdminKey(ctx: SqliteContext, key: KeyRow): Promise<'created' | 'existing'> {
  return ctx.write(() => {
    const existing = ctx.q.keyByHash.get(key.key_hash) as KeyRow | undefined
    ctx.q.insertKeyIfNew.run(stripAddress(key))
    return existing ? 'existing' : 'created'
  })
}

export async function createFirstAdminKey(ctx: SqliteContext, key: KeyRow, audit: AuditDraft): Promise<boolean> {
  return ctx.write(() => {
    if ((ctx.q.countActive.get('admin') as { n: number }).n > 0) return false
    ctx.q.insertKey.run(stripAddress(key))
    ctx.audit(audit)
    return true
  })
}

export async function countActiveKeys(ctx: SqliteContext, role: Role): Promise<number> {
  return (ctx.q.countActive.get(role) as { n: number }).n
}

function stripAddress(key: KeyRow): Omit<KeyRow, 'address'> {
  const { address: _address, ...rest } = key
  return rest
}
