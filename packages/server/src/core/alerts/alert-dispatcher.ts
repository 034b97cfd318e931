import { createHmac } from 'node:crypto'
import type { Store } from '../../store/store.js'
import type { Clock } from '../clock.js'

export interface AlertDispatcherOptions {
  /** First retry delay; doubles per attempt up to 1 h (DESIGN §11). */
  retryBaseMs: number
  /** Give up this long after the alert was created (default 24 h). */
  giveUpAfterMs: number
  timeoutMs: number
  onResult?: (result: 'delivered' | 'failed' | 'gave_up') => void
}

const MAX_BACKOFF_MS = 3_600_000
const CLAIM_LEASE_MS = 30_000

/** `sha256=<hex HMAC-SHA256 of the raw body>`, GitHub style. */
export function signBody(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`
}

/**
 * Sends the alert outbox: claims due alerts, POSTs each signed, records the attempt, and
 * schedules a retry with exponential backoff until a 2xx (at-least-once; survives restarts
 * because the outbox is in the store).
 */
export class AlertDispatcher {
  readonly #store: Store
  readonly #clock: Clock
  readonly #options: AlertDispatcherOptions
  #running = false

  constructor(store: Store, clock: Clock, options: AlertDispatcherOptions) {
    this.#store = store
    this.#clock = clock
    this.#options = options
  }

  async tick(): Promise<void> {
    if (this.#running) return
    this.#running = true
    try {
      const due = await this.#store.claimAlerts(this.#clock.now(), CLAIM_LEASE_MS, 50)
      await Promise.all(due.map((alert) => this.#send(alert)))
    } finally {
      this.#running = false
    }
  }

  async #send(alert: { alert_id: string; url: string; secret: string; body: string; type: string; attempts: number; created_at: number }) {
    let status: number | null = null
    let error: string | null = null
    try {
      const res = await fetch(alert.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'chokepoint-alerts',
          'x-chokepoint-signature': signBody(alert.secret, alert.body),
          'x-chokepoint-delivery': alert.alert_id,
          'x-chokepoint-event': alert.type,
        },
        body: alert.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.#options.timeoutMs),
      })
      status = res.status
      await res.body?.cancel().catch(() => undefined)
      if (!res.ok) error = `HTTP ${res.status}`
    } catch (e) {
      error = e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 500) : 'request failed'
    }
    const now = this.#clock.now()
    const delivered = error === null
    const attempt = alert.attempts + 1
    const next = Math.min(MAX_BACKOFF_MS, this.#options.retryBaseMs * 2 ** (attempt - 1))
    const giveUp = !delivered && now + next - alert.created_at > this.#options.giveUpAfterMs
    await this.#store.recordAlertAttempt(alert.alert_id, {
      now,
      status,
      error,
      delivered,
      next_attempt_at: delivered || giveUp ? null : now + next,
    })
    this.#options.onResult?.(delivered ? 'delivered' : giveUp ? 'gave_up' : 'failed')
  }
}
