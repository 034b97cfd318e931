// Small helpers every benchmark uses.

export const now = () => performance.now()
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Counts `key` in a tally object. */
export const bump = (tally, key) => {
  tally[key] = (tally[key] ?? 0) + 1
}

/** A positive numeric option, or `fallback` when absent. */
export const num = (value, fallback, name) => {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got "${value}"`)
  return n
}

/** Polls `predicate` until true (→ true) or `timeoutMs` passes (→ false). */
export async function waitUntil(predicate, timeoutMs, stepMs = 2) {
  const deadline = now() + timeoutMs
  while (!predicate()) {
    if (now() >= deadline) return false
    await sleep(stepMs)
  }
  return true
}
