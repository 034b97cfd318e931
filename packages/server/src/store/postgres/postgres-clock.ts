import type { Clock } from '../../core/clock.js'

/** The clock is compared with the database's this often. */
const SYNC_INTERVAL_MS = 10_000
/** A sample whose round trip took longer than this says too little about the offset. */
const MAX_SAMPLE_RTT_MS = 200
/** Timer and clock resolution on both sides of a sample. */
const NOISE_MS = 5
/** An offset this large is worth a line in the log (once per change of that size). */
const WARN_OFFSET_MS = 1_000

export interface DatabaseClockOptions {
  /** Reads the database's clock, in milliseconds since the epoch. */
  readDatabaseMs: () => Promise<number>
  log?: ((level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void) | undefined
}

/**
 * The database's time, as seen from this replica: the system clock plus the offset to
 * PostgreSQL's `clock_timestamp()`, measured at start and every 10 s (from the midpoint of
 * the round trip, so within half of it).
 *
 * Replicas decide with time — lease expiry, which UTC hour and day a send counts in, when an
 * agent went stale — and they share one database, so they must share one clock. With each
 * replica's own clock, one that runs 10 minutes ahead expires every other replica's leases 10
 * minutes early and counts sends in the next hour's bucket, where a `max_per_hour` finds it
 * empty. The offset makes that skew irrelevant. Time never runs backwards through this clock:
 * a new sample that moves it back holds it until the system clock catches up.
 */
export class DatabaseClock implements Clock {
  readonly #options: DatabaseClockOptions
  #offsetMs = 0
  #last = 0
  #warnedOffset = 0
  #timer: NodeJS.Timeout | null = null
  #bestRtt = Infinity

  constructor(options: DatabaseClockOptions) {
    this.#options = options
  }

  now(): number {
    const now = Date.now() + this.#offsetMs
    if (now > this.#last) this.#last = now
    return this.#last
  }

  /** The last measured offset (database minus system clock), in milliseconds. */
  get offsetMs(): number {
    return this.#offsetMs
  }

  /** Measures the offset now (best of three samples), then every SYNC_INTERVAL_MS. */
  async start(): Promise<void> {
    this.stop()
    this.#bestRtt = Infinity
    for (let i = 0; i < 3; i += 1) await this.#sample()
    this.#schedule()
  }

  stop(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = null
  }

  #schedule(): void {
    this.#timer = setTimeout(() => {
      void this.#sample().finally(() => {
        if (this.#timer !== null) this.#schedule()
      })
    }, SYNC_INTERVAL_MS)
    this.#timer.unref()
  }

  async #sample(): Promise<void> {
    let databaseMs: number
    const sent = Date.now()
    try {
      databaseMs = await this.#options.readDatabaseMs()
    } catch {
      return // unreachable: keep the last offset; every decision needs the store anyway
    }
    const received = Date.now()
    const rtt = received - sent
    // At start, the best of the samples; afterwards any sample with a short round trip (the
    // system clock may be stepped by NTP at any time, so an old best must not stick).
    if (rtt > MAX_SAMPLE_RTT_MS || (this.#timer === null && rtt > this.#bestRtt)) return
    this.#bestRtt = Math.min(this.#bestRtt, rtt)
    // The midpoint estimate is only good to half the round trip (plus the timers' resolution):
    // an offset inside that band is no evidence of skew, and applying it would shift every
    // timestamp by noise — a replica on the database's own host would run a few ms off.
    const measured = databaseMs - (sent + received) / 2
    this.#offsetMs = Math.abs(measured) <= rtt / 2 + NOISE_MS ? 0 : Math.round(measured)
    const size = Math.abs(this.#offsetMs)
    if (size >= WARN_OFFSET_MS && Math.abs(size - this.#warnedOffset) >= WARN_OFFSET_MS) {
      this.#warnedOffset = size
      this.#options.log?.('warn', "clock: this replica's clock differs from the database's; the gateway uses the database's time", {
        offset_ms: this.#offsetMs,
      })
    } else if (size < WARN_OFFSET_MS) this.#warnedOffset = 0
  }
}
