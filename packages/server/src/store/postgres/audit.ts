/** PostgreSQL engine, the audit chain and mesh events (written at the end of a transaction under the store_heads lock). */
import { randomBase62 } from '../../core/ids.js'
import type { AuditDraft, AuditQuery, AuditRow, MeshEventDraft, MeshEventQuery, MeshEventRow, WebhookRow } from '../store.js'
import { auditRow } from '../rows.js'
import type { PgDb, Tx } from './tx.js'

/** Queues an audit entry; it is chained and written at the end of the transaction. */
export function queueAudit(db: PgDb, tx: Tx, draft: AuditDraft): void {
  tx.audits.push(draft)
}

/** Queues a mesh event (and its alerts); written at the end of the transaction. */
export function queueMeshEvent(db: PgDb, tx: Tx, draft: MeshEventDraft): void {
  tx.meshEvents.push(draft)
}

/**
 * Writes the transaction's audit entries and mesh events. The `store_heads` rows (audit
 * chain head, mesh event counter) are locked in one statement and kept until COMMIT, so
 * appends are serialized across replicas (DESIGN §11): the chain has no forks and mesh
 * event numbers are commit-ordered (live streams read `seqno > cursor`).
 */
export async function writeControl(db: PgDb, tx: Tx): Promise<{ audit: AuditRow[]; mesh: MeshEventRow[] }> {
  const out = { audit: [] as AuditRow[], mesh: [] as MeshEventRow[] }
  if (tx.audits.length === 0 && tx.meshEvents.length === 0) return out
  const heads = await tx.rows<{ name: string; seq: number; hash: string | null }>(
    `SELECT name, seq, hash FROM store_heads WHERE name IN ('audit', 'mesh') ORDER BY name FOR UPDATE`,
  )
  const auditHead = heads.find((r) => r.name === 'audit')
  let seq = auditHead?.seq ?? 0
  let prevHash = auditHead?.hash ?? '0'.repeat(64)
  for (const draft of tx.audits.splice(0)) {
    seq += 1
    const row = auditRow(draft, seq, prevHash, db.config.hashAudit)
    await tx.run(
      `INSERT INTO audit_log (seq, at, actor, action, target, reason, before, after, prev_hash, hash)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
      [row.seq, row.at, row.actor, row.action, row.target, row.reason, row.before, row.after, row.prev_hash, row.hash],
    )
    prevHash = row.hash
    out.audit.push(row)
  }
  if (out.audit.length > 0) await tx.run(`UPDATE store_heads SET seq = $1, hash = $2 WHERE name = 'audit'`, [seq, prevHash])
  let seqno = heads.find((r) => r.name === 'mesh')?.seq ?? 0
  const drafts = tx.meshEvents.splice(0)
  const hooks = drafts.length === 0 ? [] : await tx.rows<WebhookRow>('SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at')
  for (const draft of drafts) {
    seqno += 1
    const row = (await tx.one<MeshEventRow>(
      `INSERT INTO mesh_events (seqno, address_id, address, event_type, details, actor_id, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
      [
        seqno,
        draft.address_id,
        draft.address,
        draft.event_type,
        draft.details === null ? null : JSON.stringify(draft.details),
        draft.actor_id,
        draft.created_at,
      ],
    )) as MeshEventRow
    tx.changes.push({ type: 'mesh.event', seqno })
    out.mesh.push(row)
    // Its alert, in the outbox of every matching webhook (same rule as the SQLite engine).
    for (const hook of hooks) {
      const alertId = `alt_${randomBase62(20)}`
      const alert = db.config.alertFor(draft, alertId)
      if (!alert) break
      const types = hook.event_types === null ? null : (JSON.parse(hook.event_types) as string[])
      if (types && !types.includes(alert.type)) continue
      await tx.run(
        `INSERT INTO alert_outbox (alert_id, webhook_id, type, body, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5)`,
        [alertId, hook.webhook_id, alert.type, alert.body, draft.created_at],
      )
      tx.changes.push({ type: 'alert.queued' })
    }
  }
  if (out.mesh.length > 0) await tx.run(`UPDATE store_heads SET seq = $1 WHERE name = 'mesh'`, [seqno])
  return out
}

export async function appendAudit(db: PgDb, draft: AuditDraft): Promise<AuditRow> {
  return db.tx(async (tx) => {
    queueAudit(db, tx, draft)
    return (await writeControl(db, tx)).audit[0] as AuditRow
  })
}

export async function listAudit(db: PgDb, query: AuditQuery): Promise<AuditRow[]> {
  const where = ['seq > $1']
  const params: unknown[] = [query.after_seq]
  if (query.action_prefix !== null) {
    params.push(`${query.action_prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
    where.push(`action LIKE $${params.length} ESCAPE '\\'`)
  }
  if (query.target !== null) {
    params.push(query.target)
    where.push(`target = $${params.length}`)
  }
  params.push(query.limit)
  return db.read<AuditRow>(`SELECT * FROM audit_log WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${params.length}`, params)
}

export async function appendMeshEvent(db: PgDb, draft: MeshEventDraft): Promise<MeshEventRow> {
  return db.tx(async (tx) => {
    queueMeshEvent(db, tx, draft)
    return (await writeControl(db, tx)).mesh[0] as MeshEventRow
  })
}

export async function listMeshEvents(db: PgDb, query: MeshEventQuery): Promise<MeshEventRow[]> {
  const where: string[] = ['true']
  const params: unknown[] = []
  if (query.event_type !== null) {
    params.push(query.event_type)
    where.push(`event_type = $${params.length}`)
  }
  if (query.address !== null) {
    params.push(query.address)
    where.push(`address = $${params.length}`)
  }
  if (query.before_seqno !== null) {
    params.push(query.before_seqno)
    where.push(`seqno < $${params.length}`)
  }
  params.push(query.limit)
  return db.read<MeshEventRow>(
    `SELECT * FROM mesh_events WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT $${params.length}`,
    params,
  )
}

export async function meshEventsAfter(db: PgDb, afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
  return db.read<MeshEventRow>('SELECT * FROM mesh_events WHERE seqno > $1 ORDER BY seqno LIMIT $2', [afterSeqno, limit])
}
