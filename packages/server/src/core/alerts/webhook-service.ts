import type { AlertRow, Store, WebhookRow } from '../../store/store.js'
import { iso, type Clock } from '../clock.js'
import { randomBase62 } from '../ids.js'
import { GatewayError } from '../errors.js'
import { BlockedAddressError, assertHostAllowed, type AddressClass } from './address-guard.js'

export const webhookView = (row: WebhookRow) => ({
  webhook_id: row.webhook_id,
  url: row.url,
  event_types: row.event_types === null ? null : (JSON.parse(row.event_types) as string[]),
  created_at: iso(row.created_at),
})

export const alertView = (row: AlertRow) => ({
  alert_id: row.alert_id,
  webhook_id: row.webhook_id,
  type: row.type,
  created_at: iso(row.created_at),
  attempts: row.attempts,
  status: row.delivered_at !== null ? 'delivered' : row.gave_up_at !== null ? 'gave_up' : row.attempts > 0 ? 'retrying' : 'pending',
  last_status: row.last_status,
  last_error: row.last_error,
  delivered_at: row.delivered_at === null ? null : iso(row.delivered_at),
  next_attempt_at: row.delivered_at === null && row.gave_up_at === null ? iso(row.next_attempt_at) : null,
  gave_up_at: row.gave_up_at === null ? null : iso(row.gave_up_at),
})

/** Webhooks admins register for alerts (DESIGN §7, §10); create and delete are audited. */
export class WebhookService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #blocked: ReadonlySet<AddressClass>

  constructor(store: Store, clock: Clock, options: { blocked?: ReadonlySet<AddressClass> } = {}) {
    this.#store = store
    this.#clock = clock
    this.#blocked = options.blocked ?? new Set()
  }

  async create(actor: string, input: { url: string; event_types?: string[] | undefined; secret?: string | undefined }) {
    // An address literal in a blocked range is refused now; names are checked at every send,
    // on the address they resolve to then.
    let host: string
    try {
      host = new URL(input.url).hostname
    } catch {
      throw new GatewayError('schema_invalid', 'url: must be an http:// or https:// URL', { details: { field: 'url' } })
    }
    try {
      assertHostAllowed(host, this.#blocked)
    } catch (error) {
      if (!(error instanceof BlockedAddressError)) throw error
      throw new GatewayError('schema_invalid', `url: ${error.message}`, { details: { field: 'url' } })
    }
    const now = this.#clock.now()
    const secret = input.secret ?? `whsec_${randomBase62(32)}`
    const row: WebhookRow = {
      webhook_id: `wh_${randomBase62(16)}`,
      url: input.url,
      event_types: input.event_types === undefined ? null : JSON.stringify([...new Set(input.event_types)]),
      secret,
      created_at: now,
      deleted_at: null,
    }
    await this.#store.createWebhook(row, {
      at: iso(now),
      actor,
      action: 'webhook.create',
      target: row.webhook_id,
      reason: null,
      before: null,
      after: webhookView(row),
    })
    return { webhook: row, secret }
  }

  list(): Promise<WebhookRow[]> {
    return this.#store.listWebhooks()
  }

  async delete(actor: string, webhookId: string): Promise<WebhookRow> {
    const now = this.#clock.now()
    return this.#store.deleteWebhook(webhookId, now, (row) => ({
      at: iso(now),
      actor,
      action: 'webhook.delete',
      target: row.webhook_id,
      reason: null,
      before: webhookView(row),
      after: null,
    }))
  }

  deliveries(limit: number, webhookId: string | null): Promise<AlertRow[]> {
    return this.#store.listAlerts(limit, webhookId)
  }
}
