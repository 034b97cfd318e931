/**
 * Test harness: a real gateway on 127.0.0.1 (port 0) over a real SQLite store in a temp
 * directory, plus small fetch helpers. Nothing of the product is mocked.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, startGateway, type Clock, type Gateway } from '../src/index.js'

export interface TestGateway {
  gateway: Gateway
  url: string
  adminKey: string
  dataDir: string
  close(): Promise<void>
}

export async function startTestGateway(
  options: { env?: Record<string, string>; clock?: Clock; dataDir?: string } = {},
): Promise<TestGateway> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'chokepoint-test-'))
  const config = loadConfig({ CHOKEPOINT_SWEEP_INTERVAL_MS: '50', ...options.env }, { port: '0', data: dataDir })
  const gateway = await startGateway(config, {
    ...(options.clock ? { clock: options.clock } : {}),
    log: () => undefined,
  })
  const adminKey = gateway.bootstrapKey ?? options.env?.['CHOKEPOINT_ADMIN_KEY']
  if (!adminKey) throw new Error('test gateway has no admin key')
  return {
    gateway,
    url: gateway.url,
    adminKey,
    dataDir,
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
