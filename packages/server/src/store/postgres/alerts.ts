/** PostgreSQL engine, webhooks and the alert outbox. */
import { GatewayError } from '../../core/errors.js'
import type { AlertRow, AuditDraft, WebhookRow } from '../store.js'
import { queueAudit } from './audit.js'
import type { PgDb } from './tx.js'

export async function createWebhook(db: PgDb, row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
  return db.tx(async (tx) => {
    await tx.run(
      `INSERT INTO webhooks (webhook_id, url, event_types, secret, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)`,
      [row.webhook_id, row.url, row.event_types, row.secret, row.created_at],
    )
    queueAudit(db, tx, audit)
    return row
  })
}

export async function listWebhooks(db: PgDb): Promise<WebhookRow[]> {
  return db.read<WebhookRow>('SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at')
}

export async function deleteWebhook(db: PgDb, webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow> {
  return db.tx(async (tx) => {
    const row = await tx.one<WebhookRow>('SELECT * FROM webhooks WHERE webhook_id = $1 FOR UPDATE', [webhookId])
    if (!row || row.deleted_at !== null) throw new GatewayError('not_found', `webhook ${webhookId} not found`)
    await tx.run('UPDATE webhooks SET deleted_at = $1 WHERE webhook_id = $2 AND deleted_at IS NULL', [now, webhookId])
    queueAudit(db, tx, audit(row))
    return { ...row, deleted_at: now }
  })
}

export async function claimAlerts(db: PgDb, now: number, leaseMs: number, limit: number) {
  return db.tx(async (tx) => {
    // Replicas share the outbox: SKIP LOCKED plus the lease keep one alert with one sender.
    const rows = await tx.rows<AlertRow & { url: string; secret: string }>(
      `SELECT o.*, w.url, w.secret FROM alert_outbox o JOIN webhooks w ON w.webhook_id = o.webhook_id
       WHERE o.delivered_at IS NULL AND o.gave_up_at IS NULL AND o.next_attempt_at <= $1
       ORDER BY o.next_attempt_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED`,
      [now, limit],
    )
    if (rows.length > 0) {
      await tx.run('UPDATE alert_outbox SET next_attempt_at = $1 WHERE alert_id = ANY($2::text[])', [
        now + leaseMs,
        rows.map((r) => r.alert_id),
      ])
    }
    return rows
  })
}

export async function recordAlertAttempt(
  db: PgDb,
  alertId: string,
  result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
): Promise<void> {
  await db.tx((tx) =>
    tx.run(
      `UPDATE alert_outbox SET attempts = attempts + 1, last_status = $2, last_error = $3,
         delivered_at = CASE WHEN $4::boolean THEN $5::bigint ELSE NULL END,
         gave_up_at = CASE WHEN NOT $4::boolean AND $6::bigint IS NULL THEN $5::bigint ELSE NULL END,
         next_attempt_at = coalesce($6::bigint, next_attempt_at)
       WHERE alert_id = $1`,
      [alertId, result.status, result.error, result.delivered, result.now, result.next_attempt_at],
    ),
  )
}

export async function listAlerts(db: PgDb, limit: number, webhookId: string | null): Promise<AlertRow[]> {
  return webhookId === null
    ? db.read<AlertRow>('SELECT * FROM alert_outbox ORDER BY created_at DESC, alert_id LIMIT $1', [limit])
    : db.read<AlertRow>('SELECT * FROM alert_outbox WHERE webhook_id = $1 ORDER BY created_at DESC, alert_id LIMIT $2', [
        webhookId,
        limit,
      ])
}
