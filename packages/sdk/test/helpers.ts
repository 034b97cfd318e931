import { api, type TestGateway } from '../../server/test/harness.js'

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

/** Whether the gateway serves `method path` at all (an unknown route is a 404 "no route"). */
export async function hasRoute(gw: TestGateway, method: string, path: string, body?: unknown): Promise<boolean> {
  const res = await api(gw.url, gw.adminKey, method, path, body)
  return !(res.status === 404 && /^no route/.test(String(res.body?.error?.message)))
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
