import type { AgentRow, Store } from '../../store/store.js'
import type { Clock } from '../clock.js'
import { isGatewayError } from '../errors.js'
import { deliveryFrame } from '../intents/intent-view.js'
import { deliveryRule, isQuarantineError } from '../kill-switch/rules.js'
import type { EventSink } from './event-sink.js'

export interface InboxStreamOptions {
  agent: AgentRow
  instanceId: string
  since: number
  /** Window mode: end after this many ms, or shortly after a delivery. Null = persistent. */
  windowMs: number | null
  leaseMs: number
  maxInFlight: number
  requestId: string
  /** The key the stream was opened with: revoking it ends the stream. */
  keyId: string
  /** Counts deliveries written (first or repeated). */
  onDelivered?: (kind: 'delivered' | 'redelivered') => void
}

interface Cut {
  event: 'agent.killed' | 'instance.quarantined'
  message: string
  details: Record<string, unknown> | undefined
}

/** Upper bound between claims while idle: covers paced redelivery and lost wake-ups. */
const IDLE_RECHECK_MS = 2_000
const MAX_BATCH = 64

/**
 * One open inbox stream of one instance. It claims deliveries whenever it is woken by the
 * change feed (push), writes them as frames, and ends when the window closes, the client
 * leaves, or the agent is killed.
 */
export class InboxStream {
  readonly options: InboxStreamOptions
  readonly #store: Store
  readonly #clock: Clock
  readonly #sink: EventSink
  #wakeResolver: (() => void) | null = null
  #wakePending = false
  /** True while this stream cannot take more (max_in_flight reached). */
  full = false
  /** Called when a claim filled the stream: work may be left that a sibling could take. */
  onFilled: (() => void) | null = null
  #lastSeq: number
  #claiming = false
  /** A cut (kill or quarantine) that arrived during a claim, written once the claim is framed. */
  #pendingCut: Cut | null = null

  constructor(store: Store, clock: Clock, sink: EventSink, options: InboxStreamOptions) {
    this.#store = store
    this.#clock = clock
    this.#sink = sink
    this.options = options
    this.#lastSeq = options.since
    sink.onClose(() => this.wake())
  }

  get addressId(): string {
    return this.options.agent.address_id
  }

  get instanceId(): string {
    return this.options.instanceId
  }

  get idle(): boolean {
    return this.#wakeResolver !== null
  }

  get closed(): boolean {
    return this.#sink.closed
  }

  wake(): void {
    this.#wakePending = true
    const resolve = this.#wakeResolver
    this.#wakeResolver = null
    resolve?.()
  }

  ping(): void {
    if (!this.#sink.closed) this.#sink.ping()
  }

  /** Ends the stream because its key was revoked. */
  revoked(): void {
    if (this.#sink.closed) return
    this.#sink.send('error', {
      ok: false,
      error: { code: 'unauthorized', message: 'the API key of this stream was revoked', request_id: this.options.requestId },
    })
    this.#sink.end()
  }

  /**
   * Ends the stream with the `agent.killed` frame (DESIGN §5b). While a claim is in flight
   * the frame waits for it: deliveries committed before the kill are written first, so the
   * kill frame is always the last one and nothing leased is left unframed.
   */
  killed(message: string): void {
    this.#cut({ event: 'agent.killed', message, details: undefined })
  }

  /**
   * Ends the stream because its instance was quarantined: `event: instance.quarantined` with the
   * `agent_killed` error body (`details.quarantined: true`), ordered after claimed frames like a kill.
   */
  quarantined(message: string, details: Record<string, unknown>): void {
    this.#cut({ event: 'instance.quarantined', message, details })
  }

  #cut(cut: Cut): void {
    if (this.#sink.closed) return
    if (this.#claiming) {
      // A kill outranks a quarantine when both arrive during one claim.
      if (this.#pendingCut === null || cut.event === 'agent.killed') this.#pendingCut = cut
      return
    }
    const error = { code: 'agent_killed', message: cut.message, request_id: this.options.requestId }
    this.#sink.send(cut.event, { ok: false, error: cut.details === undefined ? error : { ...error, details: cut.details } })
    this.#sink.end()
  }

  async run(): Promise<void> {
    const { agent, instanceId, since, windowMs } = this.options
    // The response window is wall time (a transport matter); leases and due times use the clock.
    const deadline = windowMs === null ? Infinity : Date.now() + windowMs
    let sent = 0
    try {
      // Registered before this read, so a kill committed after it cuts the stream through the
      // feed, and one committed before it is seen here: no re-send to a killed agent.
      const fresh = await this.#store.getAgentById(agent.address_id)
      if (fresh) deliveryRule(fresh, (await this.#store.getQuarantine(agent.address_id, instanceId)) ?? null)
      // Reconnect: re-send this instance's deliveries still leased, with their original seq.
      const leased = await this.#store.leasedDeliveries(agent.address_id, instanceId, since, this.#clock.now())
      for (const row of leased) {
        if (!this.#write(row.delivery_seq as number, deliveryFrame(row, row.delivery_seq as number))) return
        sent += 1
      }
      while (!this.#sink.closed) {
        if (windowMs !== null && sent > 0) break
        this.#wakePending = false
        this.#claiming = true
        const claim = await this.#store
          .claimDeliveries({
          address_id: agent.address_id,
          instance_id: instanceId,
          max_in_flight: this.options.maxInFlight,
          lease_ms: this.options.leaseMs,
          max_batch: MAX_BATCH,
          now: this.#clock.now(),
          decide: deliveryRule,
          })
          .finally(() => {
            this.#claiming = false
          })
        this.full = !claim.has_room
        if (this.full && claim.deliveries.length > 0) this.onFilled?.()
        for (const delivery of claim.deliveries) {
          this.options.onDelivered?.(delivery.intent.delivery_attempt > 1 ? 'redelivered' : 'delivered')
          if (!this.#write(delivery.seq, deliveryFrame(delivery.intent, delivery.seq))) return
          sent += 1
        }
        if (this.#pendingCut !== null) {
          const cut = this.#pendingCut
          this.#pendingCut = null
          this.#cut(cut)
          return
        }
        if (claim.deliveries.length > 0 && windowMs !== null) break
        if (claim.deliveries.length === MAX_BATCH && claim.has_room) continue
        const remaining = deadline - Date.now()
        if (remaining <= 0) break
        // Paced redelivery: sleep until the next held intent is due, not a polling tick.
        const due = claim.next_due_at === null ? IDLE_RECHECK_MS : Math.max(1, claim.next_due_at - this.#clock.now())
        if (!this.#wakePending) await this.#sleep(Math.min(remaining, due, IDLE_RECHECK_MS))
      }
      if (!this.#sink.closed && windowMs !== null) {
        // The frame says why the window ended: work was delivered, or the time ran out.
        const [event, reason] = sent > 0 ? ['stream.end', 'delivered'] : ['stream.timeout', 'timeout']
        this.#sink.send(event, { ok: true, next_seq: this.#lastSeq + 1, reason })
      }
    } catch (error) {
      if (isGatewayError(error) && error.code === 'agent_killed') {
        if (isQuarantineError(error)) this.quarantined(error.message, error.details ?? {})
        else this.killed(error.message)
        return
      }
      if (!this.#sink.closed) {
        const code = isGatewayError(error) ? error.code : 'internal_error'
        this.#sink.send('error', {
          ok: false,
          error: { code, message: isGatewayError(error) ? error.message : 'stream failed', request_id: this.options.requestId },
        })
      }
      if (!isGatewayError(error)) throw error
    } finally {
      this.#sink.end()
    }
  }

  #write(seq: number, frame: Record<string, unknown>): boolean {
    if (seq > this.#lastSeq) this.#lastSeq = seq
    return this.#sink.send('intent.delivered', frame, seq)
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.wake(), ms)
      this.#wakeResolver = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }
}
