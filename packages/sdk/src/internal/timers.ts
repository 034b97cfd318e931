/** Resolves after `ms`, or early (without error) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

/** Exponential backoff with jitter: `initial · 2^attempt`, capped at `max`, minus up to 25 %. */
export function backoffMs(attempt: number, initial = 500, max = 8_000): number {
  const base = Math.min(initial * 2 ** Math.max(0, attempt), max)
  return Math.round(base * (1 - Math.random() * 0.25))
}

/**
 * `Retry-After` in ms: delta-seconds or an HTTP date. `undefined` when absent or unparsable.
 */
export function retryAfterMs(headers: Headers): number | undefined {
  const value = headers.get('retry-after')?.trim()
  if (!value) return undefined
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value) * 1000
  const at = Date.parse(value)
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now())
}

/** Lets timers not keep a Node process alive; harmless elsewhere. */
export function unref(timer: unknown): void {
  ;(timer as { unref?: () => void } | undefined)?.unref?.()
}

/**
 * Makes `target` abort when `source` does. Returns the function that undoes the link, so
 * long-lived signals do not collect one listener per request.
 */
export function linkAbort(source: AbortSignal | undefined, target: AbortController): () => void {
  if (!source) return () => undefined
  if (source.aborted) {
    target.abort(source.reason)
    return () => undefined
  }
  const onAbort = (): void => target.abort(source.reason)
  source.addEventListener('abort', onAbort, { once: true })
  return () => source.removeEventListener('abort', onAbort)
}
