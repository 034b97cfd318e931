/** Time source for core. Tests pass a controllable clock; production uses the system clock. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** A clock tests can move by hand while the gateway serves real HTTP. */
export class ManualClock implements Clock {
  #now: number
  constructor(start = Date.now()) {
    this.#now = start
  }
  now(): number {
    return this.#now
  }
  advance(ms: number): void {
    this.#now += ms
  }
  set(ms: number): void {
    this.#now = ms
  }
}

export const iso = (ms: number): string => new Date(ms).toISOString()
