/**
 * Test harness: a real gateway on 127.0.0.1 (port 0) over a real store — SQLite in a temp
 * directory, or a fresh database in a throwaway PostgreSQL cluster — plus small fetch
 * helpers. Nothing of the product is mocked.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll } from 'vitest'
import { loadConfig, startGateway, type Clock, type Gateway, type Logger } from '../src/index.js'
import { newIntentId } from '../src/core/ids.js'
import type { NewIntent } from '../src/store/store.js'
import { postgresBinDir, startPostgres, type PostgresCluster } from './postgres.js'

/** The store engines every engine-parameterised test runs against. */
export const ENGINES = ['sqlite', 'postgres'] as const
export type Engine = (typeof ENGINES)[number]

let sharedCluster: Promise<PostgresCluster | null> | null = null

/** The test file's PostgreSQL cluster, started on first use (null when not installed). */
export function sharedPostgres(): Promise<PostgresCluster | null> {
  sharedCluster ??= startPostgres()
  return sharedCluster
}

/** Stops the test file's cluster (registered as an afterAll hook by `testEngines()`). */
export async function stopSharedPostgres(): Promise<void> {
  const cluster = sharedCluster
  sharedCluster = null
  await (await cluster)?.stop()
}

/**
 * The engines to run a suite on: `describe.each(testEngines())('%s', (engine) => …)`.
 * Includes postgres only when PostgreSQL is installed (else it says so and skips it), and
 * registers the hook that stops the file's cluster. `CHOKEPOINT_TEST_ENGINES=sqlite` (or
 * `postgres`) narrows the list.
 */
export function testEngines(label = 'this file'): Engine[] {
  const wanted = (process.env['CHOKEPOINT_TEST_ENGINES'] ?? ENGINES.join(','))
    .split(',')
    .map((e) => e.trim())
    .filter((e): e is Engine => (ENGINES as readonly string[]).includes(e))
  const engines = wanted.filter((engine) => {
    if (engine !== 'postgres' || postgresBinDir() !== null) return true
    console.warn(`PostgreSQL not installed: skipping the postgres runs of ${label} (apt-get install postgresql)`)
    return false
  })
  if (engines.includes('postgres')) afterAll(stopSharedPostgres)
  return engines
}

export interface TestGateway {
  gateway: Gateway
  url: string
  adminKey: string
  dataDir: string
  engine: Engine
  /** The PostgreSQL database (postgres engine), e.g. to start a second replica on it. */
  databaseUrl: string | null
  close(): Promise<void>
}

export async function startTestGateway(
  options: {
    env?: Record<string, string>
    clock?: Clock
    dataDir?: string
    /** Default sqlite; postgres uses a fresh database in the file's shared cluster. */
    engine?: Engine
    /** Postgres: use this database instead of a fresh one (another replica, a restart). */
    databaseUrl?: string
    /** The gateway's log (default: dropped). */
    log?: Logger
  } = {},
): Promise<TestGateway> {
  // CHOKEPOINT_TEST_DEFAULT_ENGINE=postgres runs tests that name no engine on PostgreSQL too.
  const fallback: Engine = process.env['CHOKEPOINT_TEST_DEFAULT_ENGINE'] === 'postgres' ? 'postgres' : 'sqlite'
  const engine: Engine = options.engine ?? (options.databaseUrl === undefined ? fallback : 'postgres')
  let databaseUrl: string | null = null
  if (engine === 'postgres') {
    if (options.databaseUrl !== undefined) databaseUrl = options.databaseUrl
    else {
      const cluster = await sharedPostgres()
      if (!cluster) throw new Error('PostgreSQL not installed: cannot start a postgres test gateway')
      databaseUrl = await cluster.createDatabase()
    }
  }
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'chokepoint-test-'))
  const config = loadConfig(
    { CHOKEPOINT_SWEEP_INTERVAL_MS: '50', ...options.env },
    { port: '0', data: dataDir, ...(databaseUrl === null ? {} : { 'database-url': databaseUrl }) },
  )
  const gateway = await startGateway(config, {
    ...(options.clock ? { clock: options.clock } : {}),
    log: options.log ?? (() => undefined),
  })
  const adminKey = gateway.bootstrapKey ?? options.env?.['CHOKEPOINT_ADMIN_KEY']
  if (!adminKey) throw new Error('test gateway has no admin key')
  return {
    gateway,
    url: gateway.url,
    adminKey,
    dataDir,
    engine,
    databaseUrl,
    async close() {
      await gateway.close()
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

export interface ApiResponse<T = Record<string, unknown>> {
  status: number
  body: T
  headers: Headers
}

/** JSON request helper: `api(gw, key, 'POST', '/v1/intents', body)`. */
export async function api<T = any>(
  url: string,
  key: string | null,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<ApiResponse<T>> {
  const res = await fetch(url + path, {
    method,
    headers: {
      ...(key ? { 'x-api-key': key } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  const text = await res.text()
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = text
  }
  return { status: res.status, body: parsed as T, headers: res.headers }
}

/** Creates an agent key for `address` and returns the raw key. */
export async function agentKey(gw: TestGateway, address: string): Promise<string> {
  const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
  if (res.status !== 200) throw new Error(`agent key: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.key as string
}

export interface SseFrame {
  id?: string
  event: string
  data: any
}

/** Reads a whole (windowed) SSE response into frames. */
export async function readSse(
  url: string,
  key: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; frames: SseFrame[]; body: any }> {
  const res = await fetch(url + path, { headers: { 'x-api-key': key, ...headers } })
  const text = await res.text()
  if (res.status !== 200) return { status: res.status, frames: [], body: JSON.parse(text) }
  return { status: 200, frames: parseSse(text), body: null }
}

export function parseSse(text: string): SseFrame[] {
  const frames: SseFrame[] = []
  for (const block of text.split('\n\n')) {
    const frame: Partial<SseFrame> & { dataLines: string[] } = { dataLines: [] }
    for (const line of block.split('\n')) {
      if (line.startsWith(':') || line === '') continue
      const i = line.indexOf(':')
      const field = i === -1 ? line : line.slice(0, i)
      const value = i === -1 ? '' : line.slice(i + 1).replace(/^ /, '')
      if (field === 'id') frame.id = value
      else if (field === 'event') frame.event = value
      else if (field === 'data') frame.dataLines.push(value)
    }
    if (frame.event || frame.dataLines.length > 0) {
      frames.push({
        ...(frame.id === undefined ? {} : { id: frame.id }),
        event: frame.event ?? 'message',
        data: JSON.parse(frame.dataLines.join('\n')),
      })
    }
  }
  return frames
}

/** Polls `check` until it returns a truthy value (returned) or `timeoutMs` passes (throws). */
export async function pollUntil<T>(
  check: () => T | Promise<T>,
  options: { timeoutMs?: number; intervalMs?: number; what?: string } = {},
): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const intervalMs = options.intervalMs ?? 20
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  for (;;) {
    last = await check()
    if (last) return last as NonNullable<T>
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what ?? 'a condition'}`)
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}

export interface TimedSseFrame extends SseFrame {
  /** `performance.now()` when the frame's last byte was read. */
  receivedAt: number
}

/** An SSE response read incrementally: frames arrive in `frames` as the server writes them. */
export interface SseConnection {
  status: number
  headers: Headers
  /** The JSON error body when status is not 200. */
  body: any
  frames: TimedSseFrame[]
  /** True once the server ended the response (or the client closed it). */
  readonly ended: boolean
  /** Resolves when the response has ended. */
  done: Promise<void>
  /** Waits until `predicate(frames)` holds; rejects on timeout or if the stream ends first. */
  waitFor(predicate: (frames: TimedSseFrame[]) => boolean, timeoutMs?: number, what?: string): Promise<TimedSseFrame[]>
  /** Aborts the request (a client that goes away). */
  close(): void
}

/** Opens an SSE stream with fetch and parses frames as they arrive (persistent or windowed). */
export async function openSseStream(
  url: string,
  key: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<SseConnection> {
  const controller = new AbortController()
  const res = await fetch(url + path, {
    headers: { 'x-api-key': key, ...headers },
    signal: controller.signal,
  })
  const frames: TimedSseFrame[] = []
  const listeners = new Set<() => void>()
  let ended = false
  const notify = (): void => {
    for (const listener of [...listeners]) listener()
  }
  if (res.status !== 200) {
    const text = await res.text()
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // keep the text
    }
    return {
      status: res.status,
      headers: res.headers,
      body,
      frames,
      ended: true,
      done: Promise.resolve(),
      waitFor: () => Promise.reject(new Error(`stream answered ${res.status}: ${text}`)),
      close: () => undefined,
    }
  }
  const done = (async () => {
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let buffer = ''
    try {
      for (;;) {
        const { value, done: finished } = await reader.read()
        if (finished) break
        buffer += decoder.decode(value, { stream: true })
        let cut = buffer.indexOf('\n\n')
        let added = false
        while (cut !== -1) {
          const block = buffer.slice(0, cut)
          buffer = buffer.slice(cut + 2)
          const at = performance.now()
          for (const frame of parseSse(block)) {
            frames.push({ ...frame, receivedAt: at })
            added = true
          }
          cut = buffer.indexOf('\n\n')
        }
        if (added) notify()
      }
    } catch {
      // aborted by close() or the connection dropped: the stream has ended either way
    } finally {
      ended = true
      notify()
    }
  })()
  const connection: SseConnection = {
    status: 200,
    headers: res.headers,
    body: null,
    frames,
    get ended() {
      return ended
    },
    done,
    waitFor(predicate, timeoutMs = 10_000, what = 'frames') {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (predicate(frames)) {
            cleanup()
            resolve(frames)
          } else if (ended) {
            cleanup()
            reject(new Error(`stream ended before ${what} (${frames.length} frames: ${summarize(frames)})`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${frames.length} frames: ${summarize(frames)})`))
        }, timeoutMs)
        const cleanup = (): void => {
          clearTimeout(timer)
          listeners.delete(check)
        }
        listeners.add(check)
        check()
      })
    },
    close() {
      controller.abort()
    },
  }
  return connection
}

function summarize(frames: SseFrame[]): string {
  return frames
    .slice(-5)
    .map((f) => `${f.event}${f.id === undefined ? '' : `#${f.id}`}`)
    .join(', ')
}

/** A new intent for tests that call a Store directly (no HTTP). */
export function storeIntent(intentType: string, from: string, to: string, maxDeliveryAttempts = 5): NewIntent {
  return {
    intent_id: newIntentId(),
    intent_type: intentType,
    from_agent: from,
    to_agent: to,
    payload: '{}',
    correlation_id: null,
    reply_to: null,
    deadline_at: null,
    max_delivery_attempts: maxDeliveryAttempts,
    trace_id: null,
  }
}

/** `onIdempotencyMismatch` for accepts that carry no idempotency key. */
export const noIdempotencyKeys = (): never => {
  throw new Error('no idempotency keys here')
}
