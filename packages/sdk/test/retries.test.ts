/**
 * Retry, timeout and reconnect logic in isolation, with a scripted `fetch`. Everything that
 * involves the gateway's behaviour is tested against a real gateway in the other files.
 */
import { afterEach, describe, expect, it } from 'vitest'
import {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIUserAbortError,
  Agent,
  ChokepointError,
  InternalServerError,
  NotFoundError,
  Operator,
  RateLimitError,
  type Delivery,
  type Fetch,
} from '../src/index.js'
import { path } from '../src/internal/path.js'

interface Call {
  url: string
  init: RequestInit
}

type Step = Response | Error | ((call: Call) => Promise<Response>)

/** A fetch that plays `steps` in order and records the calls. */
function scripted(steps: Step[]): { fetch: Fetch; calls: Call[] } {
  const calls: Call[] = []
  const fetch: Fetch = async (url, init) => {
    const call = { url, init }
    calls.push(call)
    const step = steps.shift()
    if (step === undefined) throw new Error(`unexpected call ${calls.length}: ${url}`)
    if (step instanceof Error) throw step
    if (typeof step === 'function') return step(call)
    return step
  }
  return { fetch, calls }
}

const json = (status: number, body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } })

const failure = (status: number, code: string, headers: Record<string, string> = {}): Response =>
  json(status, { ok: false, error: { code, message: `${code} happened`, request_id: 'req_1' } }, headers)

const header = (call: Call | undefined, name: string): string | undefined =>
  (call?.init.headers as Record<string, string> | undefined)?.[name]

const base = { baseURL: 'http://gateway.test/', apiKey: 'cp_test' }

describe('retries', () => {
  it('retries a GET after two 503s and returns the 200', async () => {
    const { fetch, calls } = scripted([
      failure(503, 'store_unavailable', { 'retry-after': '0' }),
      failure(503, 'store_unavailable', { 'retry-after': '0' }),
      json(200, { ok: true, agents: [], summary: { total: 0 } }),
    ])
    const operator = new Operator({ ...base, fetch })
    const res = await operator.agents.list({ limit: 5, health: undefined })
    expect(res.agents).toEqual([])
    expect(calls).toHaveLength(3)
    expect(calls[0]?.url).toBe('http://gateway.test/v1/mesh/agents?limit=5')
    expect(header(calls[0], 'x-api-key')).toBe('cp_test')
  })

  it('backs off with jitter when there is no Retry-After', async () => {
    const { fetch, calls } = scripted([failure(500, 'internal_error'), json(200, { ok: true, keys: [] })])
    const started = Date.now()
    await new Operator({ ...base, fetch }).keys.list()
    expect(calls).toHaveLength(2)
    expect(Date.now() - started).toBeGreaterThanOrEqual(370) // 500 ms minus at most 25 % jitter
  })

  it('gives up after maxRetries with the last error', async () => {
    const { fetch, calls } = scripted([0, 0, 0].map(() => failure(503, 'store_unavailable', { 'retry-after': '0' })))
    const error = await new Operator({ ...base, fetch }).audit.verify().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(InternalServerError)
    expect(error).toMatchObject({ status: 503, code: 'store_unavailable', requestId: 'req_1' })
    expect(calls).toHaveLength(3)
  })

  it('does not retry a POST without an Idempotency-Key', async () => {
    const { fetch, calls } = scripted([failure(503, 'store_unavailable', { 'retry-after': '0' })])
    const operator = new Operator({ ...base, fetch })
    await expect(operator.keys.create({ role: 'viewer' })).rejects.toBeInstanceOf(InternalServerError)
    expect(calls).toHaveLength(1)
    const refused = scripted([new TypeError('fetch failed')])
    const error = await new Operator({ ...base, fetch: refused.fetch }).agents
      .kill('agent://acme/prod/x')
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(APIConnectionError)
    expect((error as Error).cause).toBeInstanceOf(TypeError)
    expect(refused.calls).toHaveLength(1)
  })

  it('retries send with the same generated Idempotency-Key', async () => {
    const { fetch, calls } = scripted([
      new TypeError('fetch failed'),
      failure(502, 'internal_error', { 'retry-after': '0' }),
      json(200, { ok: true, intent_id: 'i1', status: 'SUBMITTED', created_at: '2026-01-01T00:00:00.000Z' }),
    ])
    const agent = new Agent({ ...base, fetch, instanceId: 'pod-1', maxRetries: 3 })
    const res = await agent.send({ to_agent: 'agent://acme/prod/b', intent_type: 'x.v1' })
    expect(res.intent_id).toBe('i1')
    expect(calls).toHaveLength(3)
    const keys = calls.map((c) => header(c, 'Idempotency-Key'))
    expect(keys[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect(new Set(keys).size).toBe(1)
    expect(header(calls[0], 'x-instance-id')).toBe('pod-1')
    expect(header(calls[0], 'content-type')).toBe('application/json')
    expect(JSON.parse(calls[0]?.init.body as string)).toEqual({ to_agent: 'agent://acme/prod/b', intent_type: 'x.v1' })
  })

  it('uses the given idempotencyKey', async () => {
    const { fetch, calls } = scripted([json(200, { ok: true, intent_id: 'i1' })])
    await new Agent({ ...base, fetch }).send({ to_agent: 'agent://a/b/c', intent_type: 'x', idempotencyKey: 'order-42' })
    expect(header(calls[0], 'Idempotency-Key')).toBe('order-42')
    expect(JSON.parse(calls[0]?.init.body as string)).not.toHaveProperty('idempotencyKey')
  })

  it('honours a short Retry-After and refuses to wait for a long one', async () => {
    const short = scripted([failure(429, 'rate_limited', { 'retry-after': '0.05' }), json(200, { ok: true, events: [] })])
    await new Operator({ ...base, fetch: short.fetch }).events.list()
    expect(short.calls).toHaveLength(2)

    const long = scripted([failure(429, 'rate_limited', { 'retry-after': '120' })])
    const error = await new Operator({ ...base, fetch: long.fetch }).events.list().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RateLimitError)
    expect((error as RateLimitError).retryAfterSeconds).toBe(120)
    expect(long.calls).toHaveLength(1)
  })

  it('does not retry a spent budget or a 404', async () => {
    const budget = scripted([failure(429, 'budget_exceeded', { 'retry-after': '0' })])
    await expect(new Agent({ ...base, fetch: budget.fetch }).send({ to_agent: 'agent://a/b/c', intent_type: 'x' })).rejects.toBeInstanceOf(
      RateLimitError,
    )
    expect(budget.calls).toHaveLength(1)
    const missing = scripted([failure(404, 'not_found')])
    await expect(new Operator({ ...base, fetch: missing.fetch }).intents.retrieve('nope')).rejects.toBeInstanceOf(NotFoundError)
    expect(missing.calls).toHaveLength(1)
  })

  it('times out each attempt and retries GETs', async () => {
    const hang = (call: Call): Promise<Response> =>
      new Promise((_resolve, reject) => {
        call.init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))
      })
    const { fetch, calls } = scripted([hang, hang])
    const error = await new Operator({ ...base, fetch, timeout: 30, maxRetries: 1 }).audit.list().catch((e: unknown) => e)
    expect(error).toBeInstanceOf(APIConnectionTimeoutError)
    expect(calls).toHaveLength(2)
  })

  it('stops at once when the caller aborts', async () => {
    const controller = new AbortController()
    const hang = (call: Call): Promise<Response> =>
      new Promise((_resolve, reject) => {
        call.init.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))
        controller.abort()
      })
    const { fetch, calls } = scripted([hang])
    const error = await new Operator({ ...base, fetch }).agents.list({}, { signal: controller.signal }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(APIUserAbortError)
    expect(calls).toHaveLength(1)
  })

  it('rejects a 2xx body that is not JSON', async () => {
    const { fetch } = scripted([new Response('<html>proxy</html>', { status: 200 })])
    await expect(new Operator({ ...base, fetch }).keys.list()).rejects.toThrow(/not JSON/)
  })
})

describe('listen reconnects', () => {
  const sse = (text: string, headers: Record<string, string> = {}): Response =>
    new Response(text, { status: 200, headers: { 'content-type': 'text/event-stream', ...headers } })
  const frame = (seq: number): string =>
    `id: ${seq}\nevent: intent.delivered\ndata: ${JSON.stringify({ intent_id: `i${seq}`, seq, payload: {} })}\n\n`

  it('backs off over connection errors and 503s, then resumes with since', async () => {
    const { fetch, calls } = scripted([
      new TypeError('fetch failed'),
      failure(503, 'store_unavailable', { 'retry-after': '0' }),
      sse(frame(4) + frame(5)), // ends without stream.timeout: an unexpected end
      sse(frame(6)),
    ])
    const agent = new Agent({ ...base, fetch, address: 'agent://acme/prod/b', instanceId: 'i-1' })
    const seen: Delivery[] = []
    for await (const delivery of agent.listen({ reconnect: { initialDelayMs: 1 }, leaseSeconds: 5 })) {
      seen.push(delivery)
      if (seen.length === 3) break
    }
    expect(seen.map((d) => d.seq)).toEqual([4, 5, 6])
    const urls = calls.map((c) => new URL(c.url))
    expect(urls[0]?.pathname).toBe('/v1/agents/acme/prod/b/intents/stream')
    expect(urls.map((u) => u.searchParams.get('since'))).toEqual(['0', '0', '0', '5'])
    expect(urls[0]?.searchParams.get('lease_seconds')).toBe('5')
    expect(header(calls[0], 'x-instance-id')).toBe('i-1')
    expect(header(calls[0], 'accept')).toBe('text/event-stream')
  })

  it('reconnects an idle stream', async () => {
    const silent = (): Promise<Response> => Promise.resolve(new Response(new ReadableStream<Uint8Array>(), { status: 200 }))
    const { fetch, calls } = scripted([silent, sse(frame(1))])
    const agent = new Agent({ ...base, fetch, address: 'agent://acme/prod/b' })
    for await (const delivery of agent.listen({ reconnect: { initialDelayMs: 1, idleTimeoutMs: 50 } })) {
      expect(delivery.seq).toBe(1)
      break
    }
    expect(calls).toHaveLength(2)
  })

  it('throws the last error after maxAttempts', async () => {
    const { fetch, calls } = scripted([new TypeError('a'), new TypeError('b'), new TypeError('c')])
    const agent = new Agent({ ...base, fetch, address: 'agent://acme/prod/b' })
    const listen = async (): Promise<void> => {
      for await (const _ of agent.listen({ reconnect: { initialDelayMs: 1, maxAttempts: 2 } })) void _
    }
    await expect(listen()).rejects.toThrow(/c$/)
    expect(calls).toHaveLength(3)
  })

  it('ends quietly when the signal aborts', async () => {
    const controller = new AbortController()
    const { fetch } = scripted([sse(frame(1)), new TypeError('down'), new TypeError('down')])
    const agent = new Agent({ ...base, fetch, address: 'agent://acme/prod/b' })
    const seen: number[] = []
    for await (const delivery of agent.listen({ signal: controller.signal, reconnect: { initialDelayMs: 10_000 } })) {
      seen.push(delivery.seq)
      controller.abort()
    }
    expect(seen).toEqual([1])
  })
})

describe('configuration', () => {
  const saved = { url: process.env['CHOKEPOINT_URL'], key: process.env['CHOKEPOINT_API_KEY'] }
  afterEach(() => {
    for (const [name, value] of [
      ['CHOKEPOINT_URL', saved.url],
      ['CHOKEPOINT_API_KEY', saved.key],
    ] as const) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  })

  it('reads CHOKEPOINT_URL and CHOKEPOINT_API_KEY when options omit them', async () => {
    process.env['CHOKEPOINT_URL'] = ' http://env.test:9000/ '
    process.env['CHOKEPOINT_API_KEY'] = 'cp_env'
    const { fetch, calls } = scripted([json(200, { ok: true, version: '1', store: 'sqlite' })])
    await new Operator({ fetch }).health()
    expect(calls[0]?.url).toBe('http://env.test:9000/health')
    expect(header(calls[0], 'x-api-key')).toBe('cp_env')
  })

  it('says what to change when the key is missing or the address is malformed', () => {
    delete process.env['CHOKEPOINT_API_KEY']
    expect(() => new Operator({ baseURL: 'http://x' })).toThrow(/CHOKEPOINT_API_KEY/)
    expect(() => new Agent({ ...base, address: 'acme/prod/b' })).toThrow(/agent:\/\/org\/workspace\/name/)
    expect(() => new Agent(base).listen()).toThrow(ChokepointError)
    expect(() => new Agent(base).listen()).toThrow(/pass \{ address/)
  })

  it('percent-encodes path parameters and rejects dot segments', () => {
    expect(path`/v1/mesh/agents/${'agent://acme/prod/deployer'}/kill`).toBe(
      '/v1/mesh/agents/agent%3A%2F%2Facme%2Fprod%2Fdeployer/kill',
    )
    expect(path`/v1/mesh/agents/${'addr_7Hq2'}`).toBe('/v1/mesh/agents/addr_7Hq2')
    expect(() => path`/v1/intents/${'..'}/ack`).toThrow(ChokepointError)
    expect(() => path`/v1/intents/${''}`).toThrow(ChokepointError)
  })
})
