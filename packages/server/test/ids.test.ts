import { describe, expect, it } from 'vitest'
import { randomBase62 } from '../src/core/ids.js'

describe('randomBase62 (request, key and address ids)', () => {
  it('gives strings of the asked length over base62, never repeating, across many refills of its byte pool', () => {
    const seen = new Set<string>()
    for (let i = 0; i < 20_000; i += 1) {
      const id = randomBase62(20)
      expect(id).toMatch(/^[0-9A-Za-z]{20}$/)
      seen.add(id)
    }
    expect(seen.size).toBe(20_000)
  })

  it('uses every symbol about equally often (no bias from the byte mapping)', () => {
    const counts = new Map<string, number>()
    const text = Array.from({ length: 5_000 }, () => randomBase62(62)).join('')
    for (const c of text) counts.set(c, (counts.get(c) ?? 0) + 1)
    expect(counts.size).toBe(62)
    const expected = text.length / 62
    // Chi-square with 61 degrees of freedom: 120 is far beyond p = 0.0001 (≈ 110).
    const chi = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0)
    expect(chi).toBeLessThan(120)
  })
})
