/** SQLite engine: the audit chain and mesh events. Functions of SqliteStore's context, run inside its write queue where they write. */
import type { Change } from '../change-feed.js'
import type { WebhookRow, AuditDraft, AuditQuery, AuditRow, MeshEventDraft, MeshEventQuery, MeshEventRow } from '../store.js'
import { randomBase62 } from '../../core/ids.js'
import { auditRow } from '../rows.js'
import type { SqliteContext } from './context.js'

// ---- audit and mesh events ----
/** Appends one chained entry; callers are inside a write transaction (the single writer serializes appends). */
export function audit(ctx: SqliteContext, draft: AuditDraft): AuditRow {
  const head = ctx.q.auditHead.get() as { seq: number; hash: string } | undefined
  const seq = (head?.seq ?? 0) + 1
  const prev_hash = head?.hash ?? '0'.repeat(64)
  const row = auditRow(draft, seq, prev_hash, ctx.hashAudit)
  ctx.q.insertAudit.run(row)
  return row
}

/** A mesh event and, in the same transaction, its alert in the outbox of every matching webhook. */
export function meshEvent(ctx: SqliteContext, draft: MeshEventDraft, changes: Change[]): MeshEventRow {
  const row = ctx.q.insertMeshEvent.get({
    ...draft,
    details: draft.details === null ? null : JSON.stringify(draft.details),
  }) as MeshEventRow
  changes.push({ type: 'mesh.event', seqno: row.seqno })
  for (const hook of ctx.q.activeWebhooks.all() as WebhookRow[]) {
    const alertId = `alt_${randomBase62(20)}`
    const alert = ctx.alertFor(draft, alertId)
    if (!alert) break
    const types = hook.event_types === null ? null : (JSON.parse(hook.event_types) as string[])
    if (types && !types.includes(alert.type)) continue
    ctx.q.insertAlert.run(alertId, hook.webhook_id, alert.type, alert.body, draft.created_at, draft.created_at)
    changes.push({ type: 'alert.queued' })
  }
  return row
}

export async function appendAudit(ctx: SqliteContext, draft: AuditDraft): Promise<AuditRow> {
  return ctx.write(() => ctx.audit(draft))
}

export async function listAudit(ctx: SqliteContext, query: AuditQuery): Promise<AuditRow[]> {
  const where = ['seq > ?']
  const params: unknown[] = [query.after_seq]
  if (query.action_prefix !== null) {
    where.push("action LIKE ? ESCAPE '\\'")
    params.push(`${query.action_prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
  }
  if (query.target !== null) {
    where.push('target = ?')
    params.push(query.target)
  }
  params.push(query.limit)
  return ctx.adhoc(`SELECT * FROM audit_log WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...params) as AuditRow[]
}

export async function appendMeshEvent(ctx: SqliteContext, draft: MeshEventDraft): Promise<MeshEventRow> {
  return ctx.write((changes) => ctx.meshEvent(draft, changes))
}

export async function listMeshEvents(ctx: SqliteContext, query: MeshEventQuery): Promise<MeshEventRow[]> {
  const where: string[] = ['1 = 1']
  const params: unknown[] = []
  if (query.event_type !== null) {
    where.push('event_type = ?')
    params.push(query.event_type)
  }
  if (query.address !== null) {
    where.push('address = ?')
    params.push(query.address)
  }
  if (query.before_seqno !== null) {
    where.push('seqno < ?')
    params.push(query.before_seqno)
  }
  params.push(query.limit)
  return ctx.db
    .prepare(`SELECT * FROM mesh_events WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT ?`)
    .all(...params) as MeshEventRow[]
}

export async function meshEventsAfter(ctx: SqliteContext, afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
  return ctx.q.meshAfter.all(afterSeqno, limit) as MeshEventRow[]
}
