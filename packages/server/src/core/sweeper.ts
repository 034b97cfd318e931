import type { Store } from '../store/store.js'
import type { Clock } from './clock.js'

export interface SweeperOptions {
  intervalMs: number
  /** Terminal intents older than this are purged (DESIGN §8: default 7 days). */
  retentionMs: number
  onError: (error: unknown) => void
  /** Further background passes run on every tick (health staleness, alert delivery). */
  tasks?: (() => Promise<unknown>)[]
  onLeasesExpired?: (count: number) => void
}

const DAY_MS = 86_400_000
const PURGE_EVERY_MS = 60_000

/**
 * Background work of one replica (safe to run on all): expire leases so their intents are
 * redelivered, and purge old terminal intents. Each pass is bounded so it never holds the
 * writer for long.
 */
export class Sweeper {
  readonly #store: Store
  readonly #clock: Clock
  readonly #options: SweeperOptions
  #timer: NodeJS.Timeout | null = null
  #current: Promise<void> | null = null
  #lastPurge = 0

  constructor(store: Store, clock: Clock, options: SweeperOptions) {
    this.#store = store
    this.#clock = clock
    this.#options = options
  }

  start(): void {
    // Background passes never queue up behind each other: skip a beat while one runs.
    this.#timer = setInterval(() => {
      if (!this.#current) void this.tick()
    }, this.#options.intervalMs)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = null
  }

  /**
   * One pass; exposed so tests with a manual clock can drive it. If a pass is running, this
   * waits for it and then runs a fresh one, so an awaited tick always sweeps at the current time.
   */
  async tick(): Promise<void> {
    while (this.#current) await this.#current
    this.#current = this.#pass().finally(() => {
      this.#current = null
    })
    return this.#current
  }

  async #pass(): Promise<void> {
    try {
      const now = this.#clock.now()
      for (let i = 0; i < 20; i += 1) {
        const { requeued, failed } = await this.#store.expireLeases(now, 500)
        if (requeued + failed > 0) this.#options.onLeasesExpired?.(requeued + failed)
        if (requeued + failed < 500) break
      }
      await this.#store.timeOutIntents(now, 500)
      for (const task of this.#options.tasks ?? []) {
        try {
          await task()
        } catch (error) {
          this.#options.onError(error)
        }
      }
      if (now - this.#lastPurge >= PURGE_EVERY_MS) {
        this.#lastPurge = now
        await this.#store.purge(now - this.#options.retentionMs, now - 2 * DAY_MS, 1_000)
      }
    } catch (error) {
      this.#options.onError(error)
    }
  }
}
