import type { TestGateway } from '../../server/test/harness.js'

/** Polls `check` until it returns a truthy value (or throws after `timeoutMs`). */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 5_000, label = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > until) throw new Error(`timed out waiting for ${label}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/**
 * Whether the gateway serves `method path` at all (an unknown route is a 404 "no route").
 * Reads only the headers of a 2xx answer, so it works on streams too.
 */
export async function hasRoute(gw: TestGateway, method: string, path: string, body?: unknown): Promise<boolean> {
  const controller = new AbortController()
  const res = await fetch(gw.url + path, {
    method,
    headers: { 'x-api-key': gw.adminKey, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: controller.signal,
  })
  if (res.status !== 404) {
    controller.abort()
    return true
  }
  const answer = (await res.json()) as { error?: { message?: string } }
  return !/^no route/.test(String(answer.error?.message))
}

/** The next value of an async iterator, failing after `timeoutMs` instead of hanging the test. */
export async function next<T>(iterator: AsyncIterator<T>, timeoutMs = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no item within ${timeoutMs} ms`)), timeoutMs)
  })
  try {
    const result = await Promise.race([iterator.next(), timeout])
    if (result.done) throw new Error('the iteration ended')
    return result.value
  } finally {
    clearTimeout(timer)
  }
}
