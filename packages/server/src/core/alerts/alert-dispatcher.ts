import { createHmac } from 'node:crypto'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { assertHostAllowed, guardedLookup, type AddressClass } from './address-guard.js'
import type { Store } from '../../store/store.js'
import type { Clock } from '../clock.js'

export interface AlertDispatcherOptions {
  /** First retry delay; doubles per attempt up to 1 h (DESIGN §11). */
  retryBaseMs: number
  /** Give up this long after the alert was created (default 24 h). */
  giveUpAfterMs: number
  timeoutMs: number
  /** Address classes alerts may not be sent to (checked on the resolved address). */
  blocked?: ReadonlySet<AddressClass>
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
      status = await postOnce(alert.url, alert.body, {
        'content-type': 'application/json',
        'user-agent': 'chokepoint-alerts',
        'x-chokepoint-signature': signBody(alert.secret, alert.body),
        'x-chokepoint-delivery': alert.alert_id,
        'x-chokepoint-event': alert.type,
      }, this.#options.timeoutMs, this.#options.blocked ?? new Set())
      // Redirects are never followed (a 3xx is a failed attempt): a receiver cannot bounce an
      // alert to an address the block list forbids.
      if (status < 200 || status >= 300) error = `HTTP ${status}`
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

/** One POST; resolves with the status. The connection goes only to an allowed address. */
function postOnce(url: string, body: string, headers: Record<string, string>, timeoutMs: number, blocked: ReadonlySet<AddressClass>): Promise<number> {
  return new Promise((resolve, reject) => {
    const target = new URL(url)
    // IP literals are not resolved, so they are checked here; names are checked after lookup.
    assertHostAllowed(target.hostname, blocked)
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest
    const req = send(
      target,
      { method: 'POST', headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) }, lookup: guardedLookup(blocked) },
      (res) => {
        clearTimeout(timer)
        res.resume()
        res.on('error', () => undefined)
        resolve(res.statusCode ?? 0)
      },
    )
    // A bound on the whole attempt, not only on silence: a receiver that drips cannot stall it.
    const timer = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { name: 'TimeoutError' })), timeoutMs)
    req.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    req.end(body)
  })
}
