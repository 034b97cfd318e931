/**
 * The replicas' shared clock (store/postgres/postgres-clock.ts): the offset to the database's
 * clock is applied when it is real and ignored when it is inside the measurement's noise, and
 * time read through it never runs backwards.
 */
import { describe, expect, it } from 'vitest'
import { DatabaseClock } from '../src/store/postgres/postgres-clock.js'

const clockAt = (skewMs: () => number, warnings: unknown[] = []) =>
  new DatabaseClock({ readDatabaseMs: async () => Date.now() + skewMs(), log: (_level, message, fields) => warnings.push({ message, fields }) })

describe('DatabaseClock', () => {
  it('ignores an offset within the round trip and timer noise: a replica on the same host runs on its own time', async () => {
    const clock = clockAt(() => 3)
    await clock.start()
    clock.stop()
    expect(clock.offsetMs).toBe(0)
    expect(Math.abs(clock.now() - Date.now())).toBeLessThanOrEqual(1)
  })

  it('applies a real offset and says so once', async () => {
    const warnings: unknown[] = []
    const clock = clockAt(() => 600_000, warnings)
    await clock.start()
    clock.stop()
    expect(Math.abs(clock.offsetMs - 600_000)).toBeLessThanOrEqual(20)
    expect(Math.abs(clock.now() - (Date.now() + 600_000))).toBeLessThanOrEqual(20)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toMatchObject({ fields: { offset_ms: clock.offsetMs } })
  })

  it('never runs backwards when a later sample moves the offset back', async () => {
    let skew = 60_000
    const clock = clockAt(() => skew)
    await clock.start()
    const ahead = clock.now()
    clock.stop()
    skew = 0
    await clock.start() // a new measurement: the database is now at the system clock's time
    clock.stop()
    expect(clock.offsetMs).toBe(0)
    expect(clock.now()).toBeGreaterThanOrEqual(ahead)
  })
})
