import type { Change, ChangeFeed } from '../../store/change-feed.js'
import type { InboxStream } from './inbox-stream.js'

const PING_INTERVAL_MS = 15_000

/**
 * Open inbox streams of this replica, by agent. The change feed wakes them when work
 * arrives (one idle stream per new intent, round robin, so instances compete without a
 * thundering herd) and cuts them when their agent is killed.
 */
export class StreamRegistry {
  readonly #byAddress = new Map<string, InboxStream[]>()
  readonly #unsubscribe: () => void
  readonly #pingTimer: NodeJS.Timeout
  #rr = 0

  constructor(feed: ChangeFeed, pingIntervalMs = PING_INTERVAL_MS) {
    this.#unsubscribe = feed.subscribe((change) => this.#onChange(change))
    // One shared timer for every open stream's keep-alive.
    this.#pingTimer = setInterval(() => this.#pingAll(), pingIntervalMs)
    this.#pingTimer.unref()
  }

  get openStreams(): number {
    let n = 0
    for (const streams of this.#byAddress.values()) n += streams.length
    return n
  }

  add(stream: InboxStream): void {
    const list = this.#byAddress.get(stream.addressId) ?? []
    list.push(stream)
    this.#byAddress.set(stream.addressId, list)
    // A stream that fills up may leave queued work: a sibling with room looks at it.
    stream.onFilled = () => this.#wakeFor(stream.addressId, 1)
  }

  remove(stream: InboxStream): void {
    const list = this.#byAddress.get(stream.addressId)
    if (!list) return
    const next = list.filter((s) => s !== stream)
    if (next.length === 0) this.#byAddress.delete(stream.addressId)
    else this.#byAddress.set(stream.addressId, next)
  }

  /** Ends every open stream of an agent with the `agent.killed` frame. Returns how many. */
  cut(addressId: string, message: string): number {
    const list = this.#byAddress.get(addressId) ?? []
    for (const stream of list) stream.killed(message)
    return list.length
  }

  /** Ends the open streams of one instance with the `instance.quarantined` frame. Returns how many. */
  cutInstance(addressId: string, instanceId: string, message: string): number {
    const list = (this.#byAddress.get(addressId) ?? []).filter((s) => s.instanceId === instanceId)
    const details = { address_id: addressId, instance_id: instanceId, quarantined: true }
    for (const stream of list) stream.quarantined(message, details)
    return list.length
  }

  close(): void {
    this.#unsubscribe()
    clearInterval(this.#pingTimer)
  }

  #onChange(change: Change): void {
    switch (change.type) {
      case 'intent.available':
        this.#available(change.address_id)
        break
      case 'slot.freed':
        // Only a stream that stopped claiming because it was full needs the freed slot.
        for (const s of this.#byAddress.get(change.address_id) ?? []) {
          if (s.instanceId === change.instance_id && s.full) s.wake()
        }
        break
      case 'key.revoked':
        for (const list of this.#byAddress.values()) {
          for (const stream of list) if (stream.options.keyId === change.key_id) stream.revoked()
        }
        break
      case 'agent.killed':
        this.cut(change.address_id, 'this agent was killed by an operator; its streams are closed')
        break
      case 'instance.quarantined':
        this.cutInstance(
          change.address_id,
          change.instance_id,
          `instance ${change.instance_id} was quarantined by an operator; its streams are closed and its leased intents went to its siblings`,
        )
        // Its leases came back all at once: every sibling with room looks, not just one (a
        // single woken sibling may fill up and leave the rest waiting for its idle recheck).
        for (const s of this.#byAddress.get(change.address_id) ?? []) if (!s.closed && !s.full) s.wake()
        break
      default:
        break
    }
  }

  /**
   * New work for an address. A commit of several intents publishes one change each; they are
   * counted until the end of this turn and answered together (#wakeFor), so a batch of new
   * intents wakes as many streams as can take it rather than one per intent: the others' claims
   * would find the queue already emptied by the first.
   */
  #available(addressId: string): void {
    if (!this.#byAddress.has(addressId)) return
    this.#arrived.set(addressId, (this.#arrived.get(addressId) ?? 0) + 1)
    if (this.#arrived.size === 1 && this.#arrived.get(addressId) === 1) queueMicrotask(() => this.#wakeArrived())
  }

  readonly #arrived = new Map<string, number>()

  #wakeArrived(): void {
    const arrived = [...this.#arrived]
    this.#arrived.clear()
    for (const [addressId, count] of arrived) this.#wakeFor(addressId, count)
  }

  /**
   * Wakes idle streams with room, round robin, until they can take `count` intents between them
   * (a persistent stream up to its max_in_flight; a window stream ends after one claim, so it
   * counts for one). A claim leaves work behind only when its stream is full (a freed slot wakes
   * it again) or took a whole batch (it claims again at once), so nothing is stranded.
   */
  #wakeFor(addressId: string, count: number): void {
    const list = this.#byAddress.get(addressId)
    if (!list || list.length === 0) return
    this.#rr = (this.#rr + 1) % 1_000_000
    let room = 0
    for (let i = 0; i < list.length && room < count; i += 1) {
      const stream = list[(this.#rr + i) % list.length] as InboxStream
      // A stream just cut (kill, quarantine) is still listed until its run ends: skip it.
      if (stream.idle && !stream.full && !stream.closed) {
        stream.wake()
        room += stream.options.windowMs === null ? stream.options.maxInFlight : 1
      }
    }
    if (room > 0) return
    // Nobody idle with room: the work may have committed after a running claim read the queue.
    // One persistent stream looks again when it finishes what it is doing (its claim takes what
    // it can; if it fills up, a freed slot wakes it); window streams, which end after a claim, all do.
    let persistent = false
    for (let i = 0; i < list.length; i += 1) {
      const stream = list[(this.#rr + i) % list.length] as InboxStream
      if (stream.full || stream.closed) continue
      if (stream.options.windowMs !== null) stream.wake()
      else if (!persistent) {
        stream.wake()
        persistent = true
      }
    }
  }

  #pingAll(): void {
    for (const list of this.#byAddress.values()) for (const stream of list) stream.ping()
  }
}
