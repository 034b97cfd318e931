/** SQLite engine: webhooks and the alert outbox. Functions of SqliteStore's context, run inside its write queue where they write. */
import { GatewayError } from '../../core/errors.js'
import type { AlertRow, WebhookRow, AuditDraft } from '../store.js'
import type { SqliteContext } from './context.js'

// ---- webhooks and the alert outbox ----
export async function createWebhook(ctx: SqliteContext, row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
  return ctx.write(() => {
    ctx.q.insertWebhook.run(row)
    ctx.audit(audit)
    return row
  })
}

export async function listWebhooks(ctx: SqliteContext): Promise<WebhookRow[]> {
  return ctx.q.activeWebhooks.all() as WebhookRow[]
}

export async function deleteWebhook(
  ctx: SqliteContext,
  webhookId: string,
  now: number,
  audit: (row: WebhookRow) => AuditDraft,
): Promise<WebhookRow> {
  return ctx.write(() => {
    const row = ctx.q.webhookById.get(webhookId) as WebhookRow | undefined
    if (!row || row.deleted_at !== null) throw new GatewayError('not_found', `webhook ${webhookId} not found`)
    ctx.q.deleteWebhook.run(now, webhookId)
    ctx.audit(audit(row))
    return { ...row, deleted_at: now }
  })
}

export async function claimAlerts(ctx: SqliteContext, now: number, leaseMs: number, limit: number) {
  return ctx.write(() => {
    const rows = ctx.q.dueAlerts.all(now, limit) as (AlertRow & { url: string; secret: string })[]
    for (const row of rows) ctx.q.leaseAlert.run(now + leaseMs, row.alert_id)
    return rows
  })
}

export async function recordAlertAttempt(
  ctx: SqliteContext,
  alertId: string,
  result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
): Promise<void> {
  await ctx.write(() =>
    ctx.q.alertAttempt.run({
      alert_id: alertId,
      now: result.now,
      status: result.status,
      error: result.error,
      delivered: result.delivered ? 1 : 0,
      next: result.next_attempt_at,
    }),
  )
}

export async function listAlerts(ctx: SqliteContext, limit: number, webhookId: string | null): Promise<AlertRow[]> {
  const sql = webhookId === null
    ? 'SELECT * FROM alert_outbox ORDER BY created_at DESC, alert_id LIMIT ?'
    : 'SELECT * FROM alert_outbox WHERE webhook_id = ? ORDER BY created_at DESC, alert_id LIMIT ?'
  const args = webhookId === null ? [limit] : [webhookId, limit]
  return ctx.adhoc(sql).all(...args) as AlertRow[]
}
