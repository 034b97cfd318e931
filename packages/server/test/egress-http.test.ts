/**
 * HTTP-tool egress (`ANY /egress/{upstream}/{path…}`) against a tiny node:http API on 127.0.0.1
 * that records what reached it, on both stores: methods, paths, queries and raw bodies
 * forwarded under `base_url`; the configured credential injected and the agent's `cp_` key
 * never forwarded; hop-by-hop headers dropped both ways; status, body and Retry-After passed
 * through (streamed bodies too); path traversal refused; `tool` policies over
 * `<upstream>/<METHOD> <path>`; the per-call cost charged and a ceiling refusing exactly the
 * call that would pass it; the kill refusing calls and cutting in-flight ones (on another
 * replica too, PostgreSQL) with the upstream request aborted; upstream failures as 502/504.
 */
import { createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { clientResponseHeaders, hopByHopNames, normaliseUpstreamPath, upstreamRequestHeaders } from '../src/core/egress/http-proxy.js'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('egress-http.test.ts')
const TOKEN = 'Bearer upstream-secret-token-42'
const enc = encodeURIComponent
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

interface Seen {
  method: string
  url: string
  headers: IncomingHttpHeaders
  rawHeaders: string[]
  body: Buffer
}

/** The upstream API: echoes by default; `/status/<n>`, `/stream`, `/slow`, `/hop` behave as named. */
class FakeApi {
  server!: Server
  url = ''
  requests: Seen[] = []
  /** Responses whose connection closed before the upstream finished them (aborted by the gateway). */
  aborted = 0
  /** Bytes `/flood` has written. */
  flooded = 0

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.#handle(req, res))
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = []
    for await (const chunk of req) chunks.push(chunk as Buffer)
    const body = Buffer.concat(chunks)
    this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body })
    res.on('close', () => {
      if (!res.writableFinished) this.aborted += 1
    })
    const url = new URL(req.url ?? '/', 'http://x')
    const num = (name: string, fallback: number) => Number(url.searchParams.get(name) ?? fallback)
    if (url.pathname.endsWith('/status/429')) {
      res.writeHead(429, { 'retry-after': '7', 'content-type': 'application/json' }).end('{"error":"slow down"}')
    } else if (url.pathname.endsWith('/status/201')) {
      res.writeHead(201, { 'content-type': 'text/plain', location: '/v2/things/1' }).end('created')
    } else if (url.pathname.endsWith('/status/204')) {
      res.writeHead(204).end()
    } else if (url.pathname.endsWith('/stream')) {
      res.writeHead(200, { 'content-type': 'text/plain' })
      for (let i = 0; i < num('n', 5); i++) {
        if (res.destroyed) return
        res.write(`chunk-${i}\n`)
        await sleep(num('delay', 0))
      }
      res.end()
    } else if (url.pathname.endsWith('/flood')) {
      // 64 KiB chunks for as long as the reader keeps up (it waits when the gateway stops reading).
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const chunk = Buffer.alloc(64 * 1024, 0x61)
      while (!res.destroyed) {
        this.flooded += chunk.length
        if (!res.write(chunk)) await new Promise((resolve) => (res.once('drain', resolve), res.once('close', resolve)))
      }
    } else if (url.pathname.endsWith('/slow')) {
      await sleep(num('ms', 300))
      if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end('{"slow":true}')
    } else if (url.pathname.endsWith('/hop')) {
      res.writeHead(200, {
        connection: 'x-hop-res',
        'x-hop-res': 'must-not-pass',
        'keep-alive': 'timeout=77, max=9',
        'proxy-authenticate': 'Basic realm="up"',
        'x-request-id': 'up-123',
        'x-kept': 'yes',
        'content-type': 'text/plain',
      })
      res.end('hop')
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ method: req.method, url: req.url, bytes: body.length }))
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  json: any
}

/** A request sent as given (no URL normalisation, any header), on its own connection. */
function send(base: string, method: string, path: string, headers: Record<string, string> = {}, body?: Buffer | string): Promise<Answer> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    // Node's client frames a DELETE/OPTIONS body only with an explicit length.
    const framing = body === undefined || 'transfer-encoding' in headers ? {} : { 'content-length': String(Buffer.byteLength(body)) }
    const req = request({ hostname, port, method, path, headers: { ...framing, ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const buf = Buffer.concat(chunks)
        let json: unknown = null
        try {
          json = JSON.parse(buf.toString('utf8'))
        } catch {
          json = null
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: buf, json })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** A streamed answer: resolves with the response at its headers; `done` when it has closed. */
function openStream(base: string, path: string, key: string): Promise<{ res: IncomingMessage; chunks: string[]; done: Promise<{ complete: boolean }> }> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, method: 'GET', path, headers: { 'x-api-key': key }, agent: false }, (res) => {
      const chunks: string[] = []
      res.on('data', (c: Buffer) => chunks.push(c.toString('utf8')))
      const done = new Promise<{ complete: boolean }>((r) => {
        res.on('error', () => undefined)
        res.on('close', () => r({ complete: res.complete }))
      })
      resolve({ res, chunks, done })
    })
    req.on('error', reject)
    req.end()
  })
}

describe('proxy header filtering and path normalisation (pure functions, shared with other proxies)', () => {
  const key = `cp_${'a1B2'.repeat(11)}`
  it('drops hop-by-hop headers, those Connection names, proxy-*, the gateway key headers and cp_ values; injects credentials', () => {
    expect([...hopByHopNames({ Connection: 'close, X-Foo', 'proxy-foo': '1' })].sort()).toEqual(
      ['close', 'connection', 'keep-alive', 'proxy-connection', 'proxy-foo', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'x-foo'].sort(),
    )
    const out = upstreamRequestHeaders(
      { host: 'gw', 'content-length': '3', expect: '100-continue', authorization: `Bearer ${key}`, 'x-api-key': key, 'x-note': `see ${key} here`, cookie: ['a=1', `k=${key}`], connection: 'x-foo', 'x-foo': '1', 'x-ok': 'yes', 'X-Token': 'agent' },
      { 'X-Token': 'injected', authorization: 'Bearer upstream' },
    )
    expect(out).toEqual({ 'x-ok': 'yes', 'x-token': 'injected', authorization: 'Bearer upstream' })
    expect(clientResponseHeaders({ 'x-request-id': 'u1', 'transfer-encoding': 'chunked', 'retry-after': '3', 'set-cookie': ['a=1', 'b=2'] })).toEqual({
      'x-upstream-request-id': 'u1',
      'retry-after': '3',
      'set-cookie': ['a=1', 'b=2'],
    })
  })

  it('normalises escapes of plain characters and refuses whatever could climb out of base_url', () => {
    expect(normaliseUpstreamPath('')).toBe('/')
    expect(normaliseUpstreamPath('/a/b/')).toBe('/a/b/')
    expect(normaliseUpstreamPath('/%7euser/%2fx/%c3%a9')).toBe('/~user/%2Fx/%C3%A9')
    expect(normaliseUpstreamPath('/a..b/.well-known/...')).toBe('/a..b/.well-known/...')
    for (const bad of ['/..', '/a/../b', '/.', '/%2e', '/%2E%2E', '/%252e%252e', '/%25252e%25252e/x', '/a/..%2F', '/..%5c', '//h', '/a//b', '/a%00', '/a%0a', '/a b', '/a\\b', '/%zz', 'relative'])
      expect(() => normaliseUpstreamPath(bad), bad).toThrow(/upstream path/)
  })
})

describe.each(ENGINES)('HTTP-tool egress (%s)', (engine) => {
  const fake = new FakeApi()
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-http-'))
  let gw: TestGateway
  beforeAll(async () => {
    await fake.start()
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const closedPort = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const file = join(dir, 'egress.json')
    writeFileSync(
      file,
      JSON.stringify({
        upstreams: [
          { id: 'api', kind: 'http', base_url: `${fake.url}/base/`, headers_env: { Authorization: 'API_TOKEN', 'X-Extra': 'API_EXTRA' }, cost_per_call_usd: 0.01, timeout_ms: 30_000 },
          { id: 'plain', kind: 'http', base_url: fake.url },
          { id: 'slowapi', kind: 'http', base_url: fake.url, cost_per_call_usd: 0.01, timeout_ms: 1000 },
          { id: 'down', kind: 'http', base_url: `http://127.0.0.1:${closedPort}`, cost_per_call_usd: 0.01 },
          { id: 'llm', kind: 'openai', base_url: fake.url, api_key_env: 'API_TOKEN', models: { m: { input_cost_per_token: 0, output_cost_per_token: 0, max_input_tokens: 10, max_output_tokens: 10 } } },
        ],
      }),
    )
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_EGRESS_CONFIG: file, API_TOKEN: TOKEN, API_EXTRA: 'extra-value' } })
  })
  afterAll(async () => {
    await gw?.close()
    await fake.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const calls = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${enc(address)}`)).body.calls as any[]
  const policy = (address: string, body: Record<string, unknown>) => api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
  const agent = async (name: string) => {
    const address = `agent://http-${engine}/prod/${name}`
    return { address, key: await agentKey(gw, address) }
  }

  it('forwards every method, the path under base_url, the query and the raw body', async () => {
    const { address, key } = await agent('forwarder')
    const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x7b, 0x0a, 0x22])
    for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']) {
      const before = fake.requests.length
      const withBody = method !== 'GET' && method !== 'HEAD'
      const res = await send(gw.url, method, '/egress/api/v2/items/42?x=1&y=a%20b&x=2', { 'x-api-key': key, ...(withBody ? { 'content-type': 'application/octet-stream' } : {}) }, withBody ? bytes : undefined)
      expect(res.status, `${method}: ${res.body.toString()}`).toBe(200)
      expect(fake.requests.length - before).toBe(1)
      const seen = fake.requests.at(-1) as Seen
      expect(seen.method).toBe(method)
      expect(seen.url).toBe('/base/v2/items/42?x=1&y=a%20b&x=2')
      expect(seen.body.equals(withBody ? bytes : Buffer.alloc(0))).toBe(true)
      if (withBody) expect(seen.headers['content-type']).toBe('application/octet-stream')
      if (method === 'HEAD') expect(res.body.length).toBe(0)
      else expect(res.json).toEqual({ method, url: '/base/v2/items/42?x=1&y=a%20b&x=2', bytes: withBody ? bytes.length : 0 })
    }
    // The upstream's root, with and without the slash; escapes of plain characters are decoded.
    expect((await send(gw.url, 'GET', '/egress/api', { 'x-api-key': key })).json.url).toBe('/base')
    expect((await send(gw.url, 'GET', '/egress/api/', { 'x-api-key': key })).json.url).toBe('/base/')
    expect((await send(gw.url, 'GET', '/egress/api/v2/%73ervices/a%2Fb%7e', { 'x-api-key': key })).json.url).toBe('/base/v2/services/a%2Fb~')
    // A body over the gateway's limit: 413 before anything is admitted or sent.
    const before = fake.requests.length
    const big = await send(gw.url, 'POST', '/egress/api/upload', { 'x-api-key': key }, Buffer.alloc(1024 * 1024 + 1, 1))
    expect(big.status).toBe(413)
    expect(fake.requests.length).toBe(before)
    const list = await calls(address)
    expect(list[0]).toMatchObject({ kind: 'http', upstream: 'api', endpoint: 'http', model: null, tool: 'api/GET /v2/services/a%2Fb~', state: 'settled', outcome: 'usage', cost_usd: 0.01 })
    expect(list.map((c) => c.tool)).toContain('api/HEAD /v2/items/42')
    expect(list.map((c) => c.tool)).toContain('api/GET /')
  })

  it('injects the credential; the agent key and every cp_ value stay out; hop-by-hop headers are dropped both ways', async () => {
    const { key } = await agent('headers')
    const res = await send(gw.url, 'POST', '/egress/api/hop', {
      authorization: `Bearer ${key}`,
      'x-custom': 'keep-me',
      'x-leak': `token=${key}`,
      'x-extra': 'from-the-agent',
      connection: 'keep-alive, x-hop-req',
      'x-hop-req': 'must-not-pass',
      'keep-alive': 'timeout=5',
      'proxy-authorization': 'Basic Zm9vOmJhcg==',
      te: 'trailers',
      'transfer-encoding': 'chunked',
      trailer: 'x-checksum',
      upgrade: 'websocket',
    }, 'payload')
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('hop')
    const seen = fake.requests.at(-1) as Seen
    expect(seen.headers['authorization']).toBe(TOKEN)
    expect(seen.headers['x-extra']).toBe('extra-value') // the configured value wins
    expect(seen.headers['x-custom']).toBe('keep-me')
    expect(JSON.stringify(seen.rawHeaders)).not.toMatch(/cp_/)
    for (const name of ['x-api-key', 'x-leak', 'x-hop-req', 'keep-alive', 'proxy-authorization', 'te', 'trailer', 'upgrade', 'transfer-encoding']) {
      expect(seen.headers[name], name).toBeUndefined()
    }
    expect(seen.headers['connection'] ?? '').not.toMatch(/x-hop-req/)
    expect(seen.body.toString()).toBe('payload')
    // The answer: the upstream's hop-by-hop headers are not passed on; the rest is.
    expect(res.headers['x-kept']).toBe('yes')
    expect(res.headers['x-upstream-request-id']).toBe('up-123')
    expect(res.headers['x-request-id']).toMatch(/^req_/)
    expect(res.headers['x-hop-res']).toBeUndefined()
    expect(res.headers['proxy-authenticate']).toBeUndefined()
    expect(res.headers['keep-alive'] ?? '').not.toMatch(/77/)
    expect(res.headers['connection'] ?? '').not.toMatch(/x-hop-res/)
    // With x-api-key and an upstream that injects nothing: no Authorization, no key, upstream side.
    await send(gw.url, 'GET', '/egress/plain/x', { 'x-api-key': key, authorization: `Bearer ${key}` })
    const plain = fake.requests.at(-1) as Seen
    expect(plain.url).toBe('/x')
    expect(plain.headers['authorization']).toBeUndefined()
    expect(JSON.stringify(plain.rawHeaders)).not.toMatch(/cp_/)
  })

  it('passes status, body and Retry-After through: 429, 201, 204 and a streamed chunked body; each answer is charged', async () => {
    const { address, key } = await agent('statuses')
    const limited = await send(gw.url, 'GET', '/egress/api/status/429', { 'x-api-key': key })
    expect(limited.status).toBe(429)
    expect(limited.headers['retry-after']).toBe('7')
    expect(limited.body.toString()).toBe('{"error":"slow down"}')
    const created = await send(gw.url, 'POST', '/egress/api/status/201', { 'x-api-key': key }, '{}')
    expect(created.status).toBe(201)
    expect(created.headers['location']).toBe('/v2/things/1')
    expect(created.headers['content-type']).toBe('text/plain')
    expect(created.body.toString()).toBe('created')
    const empty = await send(gw.url, 'DELETE', '/egress/api/status/204', { 'x-api-key': key })
    expect(empty.status).toBe(204)
    expect(empty.body.length).toBe(0)
    const streamed = await send(gw.url, 'GET', '/egress/api/stream?n=20&delay=5', { 'x-api-key': key })
    expect(streamed.status).toBe(200)
    expect(streamed.headers['transfer-encoding']).toBe('chunked')
    expect(streamed.body.toString()).toBe(Array.from({ length: 20 }, (_, i) => `chunk-${i}\n`).join(''))
    const list = await calls(address)
    expect(list.map((c) => [c.status, c.outcome, c.cost_usd])).toEqual([
      [200, 'usage', 0.01],
      [204, 'usage', 0.01],
      [201, 'usage', 0.01],
      [429, 'usage', 0.01],
    ])
  })

  it('refuses path traversal with 400 before admission: nothing reaches the upstream', async () => {
    const { address, key } = await agent('traverser')
    const before = fake.requests.length
    const attempts = [
      '/egress/api/..',
      '/egress/api/../x',
      '/egress/api/a/../../x',
      '/egress/api/./x',
      '/egress/api/%2e%2e/x',
      '/egress/api/%2E%2e/x',
      '/egress/api/a/.%2E/.%2e/x',
      '/egress/api/%252e%252e/x',
      '/egress/api/..%2f..%2fx',
      '/egress/api/..%5cx',
      '/egress/api//evil.example/x',
      '/egress/api/a//b',
      '/egress/api/a%00b',
      '/egress/api/a%zz',
      '/egress/api/x?q=<script>',
    ]
    for (const path of attempts) {
      const res = await send(gw.url, 'GET', path, { 'x-api-key': key })
      expect(res.status, `${path}: ${res.body.toString()}`).toBe(400)
      expect(res.json?.error?.code, path).toBe('invalid_request')
    }
    expect(fake.requests.length).toBe(before)
    expect(await calls(address)).toEqual([])
  })

  it('tool policies decide on <upstream>/<METHOD> <path>: allowlist and denylist with * and **; a denial reaches nothing', async () => {
    const allowed = await agent('allowlisted')
    const allow = await policy(allowed.address, { kind: 'tool', mode: 'allowlist', patterns: ['api/GET /v2/**', 'api/POST /v2/services/*/deploys'] })
    expect(allow.status, JSON.stringify(allow.body)).toBe(200)
    const denied = await agent('denylisted')
    const deny = await policy(denied.address, { kind: 'tool', mode: 'denylist', patterns: ['api/DELETE /**', 'api/* /admin/**', 'api/GET /secret/**'] })
    expect(deny.status, JSON.stringify(deny.body)).toBe(200)
    const cases: [typeof allowed, string, string, number, string | null][] = [
      [allowed, 'GET', '/v2/services/web/deploys/7', 200, null],
      [allowed, 'POST', '/v2/services/web/deploys', 200, null],
      [allowed, 'POST', '/v2/services/web/deploys/extra', 403, allow.body.policy.policy_id],
      [allowed, 'DELETE', '/v2/services/web', 403, allow.body.policy.policy_id],
      [allowed, 'GET', '/v3/x', 403, allow.body.policy.policy_id],
      [denied, 'GET', '/v2/x', 200, null],
      [denied, 'DELETE', '/v2/x', 403, deny.body.policy.policy_id],
      [denied, 'PATCH', '/admin/users/1', 403, deny.body.policy.policy_id],
      [denied, 'GET', '/admin', 200, null], // `/admin/**` needs the slash after admin
      [denied, 'GET', '/%73ecret/plans', 403, deny.body.policy.policy_id], // escapes cannot dodge a pattern
    ]
    for (const [who, method, path, status, policyId] of cases) {
      const before = fake.requests.length
      const res = await send(gw.url, method, `/egress/api${path}`, { 'x-api-key': who.key })
      expect(res.status, `${who.address} ${method} ${path}: ${res.body.toString()}`).toBe(status)
      if (status === 403) {
        expect(res.json.error).toMatchObject({ code: 'policy_denied', policy_id: policyId })
        expect(fake.requests.length).toBe(before)
      } else {
        expect(fake.requests.length).toBe(before + 1)
      }
    }
  })

  it('a cost ceiling refuses exactly the call that would pass it, sequentially and under concurrency', async () => {
    const { address, key } = await agent('spender')
    const ceiling = await policy(address, { kind: 'cost', max_cost_per_day_usd: 0.03, on_breach: 'block' })
    expect(ceiling.status).toBe(200)
    const before = fake.requests.length
    for (let i = 0; i < 3; i++) expect((await send(gw.url, 'POST', '/egress/api/v2/send', { 'x-api-key': key }, 'hi')).status).toBe(200)
    const fourth = await send(gw.url, 'POST', '/egress/api/v2/send', { 'x-api-key': key }, 'hi')
    expect(fourth.status).toBe(429)
    expect(fourth.json.error).toMatchObject({ code: 'budget_exceeded', policy_id: ceiling.body.policy.policy_id })
    expect(fake.requests.length - before).toBe(3)
    const spent = (await calls(address)).reduce((n, c) => n + c.cost_usd, 0)
    expect(spent).toBeCloseTo(0.03, 9)

    const many = await agent('concurrent')
    expect((await policy(many.address, { kind: 'cost', max_cost_per_day_usd: 0.035, on_breach: 'block' })).status).toBe(200)
    const start = fake.requests.length
    const results = await Promise.all(Array.from({ length: 12 }, () => send(gw.url, 'GET', '/egress/api/slow?ms=300', { 'x-api-key': many.key })))
    expect(results.filter((r) => r.status === 200)).toHaveLength(3)
    expect(results.filter((r) => r.status === 429 && r.json?.error?.code === 'budget_exceeded')).toHaveLength(9)
    expect(fake.requests.length - start).toBe(3)
    const list = await calls(many.address)
    expect(list.filter((c) => c.state === 'open')).toEqual([])
    expect(list.reduce((n, c) => n + c.cost_usd, 0)).toBeLessThanOrEqual(0.035)
  })

  it('a killed agent gets 403 agent_killed and nothing reaches the upstream', async () => {
    const { address, key } = await agent('killed')
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'test' })).status).toBe(200)
    const before = fake.requests.length
    for (const method of ['GET', 'POST', 'DELETE']) {
      const res = await send(gw.url, method, '/egress/api/v2/x', { 'x-api-key': key })
      expect(res.status).toBe(403)
      expect(res.json.error.code).toBe('agent_killed')
    }
    expect(fake.requests.length).toBe(before)
  })

  it('a kill during a slow streaming answer ends the client stream and aborts the upstream request', async () => {
    const { address, key } = await agent('streamer')
    const abortedBefore = fake.aborted
    const stream = await openStream(gw.url, '/egress/api/stream?n=400&delay=25', key)
    expect(stream.res.statusCode).toBe(200)
    await pollUntil(() => stream.chunks.length >= 2 || undefined, { timeoutMs: 5000, what: 'the stream to flow' })
    const killedAt = Date.now()
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'looping' })).status).toBe(200)
    const { complete } = await stream.done
    console.log(`egress-http (${engine}): stream cut ${Date.now() - killedAt} ms after the kill call started, after ${stream.chunks.length} chunks`)
    expect(complete).toBe(false) // cut, not a clean end
    expect(stream.chunks.join('')).not.toContain('chunk-399')
    await expect.poll(() => fake.aborted - abortedBefore, { timeout: 1000 }).toBe(1)
    // The cut reaches the client first (at once, on the kill); the settlement follows it.
    const call = await pollUntil(async () => {
      const [c] = await calls(address)
      return c?.state === 'settled' ? c : undefined
    }, { timeoutMs: 5000, what: 'the cut call to settle' })
    expect(call).toMatchObject({ state: 'settled', outcome: 'usage', status: 200, cost_usd: 0.01 })
  })

  it('a kill cuts the answer of a client that stopped reading (the gateway is waiting on backpressure)', async () => {
    const { address, key } = await agent('stalled')
    const abortedBefore = fake.aborted
    const floodedBefore = fake.flooded
    const stream = await openStream(gw.url, '/egress/api/flood', key)
    stream.res.pause()
    // More than the socket buffers hold: the gateway's writes are refused and it waits for a drain.
    await pollUntil(async () => {
      const seen = fake.flooded
      await sleep(200)
      return (seen - floodedBefore > 1024 * 1024 && fake.flooded === seen) || undefined
    }, { timeoutMs: 10_000, what: 'the upstream to wait on the stalled gateway' })
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'stalled' })).status).toBe(200)
    await expect.poll(() => fake.aborted - abortedBefore, { timeout: 1000 }).toBe(1)
    // Settled while the client still does not read: the gateway stopped waiting on it.
    const settled = await pollUntil(async () => {
      const [call] = await calls(address)
      return call?.state === 'settled' ? call : undefined
    }, { timeoutMs: 5000, what: 'the call to settle while the client is stalled' })
    expect(settled).toMatchObject({ outcome: 'usage', cost_usd: 0.01 })
    stream.res.resume()
    expect((await stream.done).complete).toBe(false)
  })

  it('a client that goes away mid-stream: the upstream request is aborted and the call settled (the API answered: charged)', async () => {
    const { address, key } = await agent('leaver')
    const abortedBefore = fake.aborted
    const stream = await openStream(gw.url, '/egress/api/stream?n=400&delay=25', key)
    await pollUntil(() => stream.chunks.length >= 2 || undefined, { timeoutMs: 5000, what: 'the stream to flow' })
    stream.res.destroy()
    await expect.poll(() => fake.aborted - abortedBefore, { timeout: 2000 }).toBe(1)
    const settled = await pollUntil(async () => {
      const [call] = await calls(address)
      return call?.state === 'settled' ? call : undefined
    }, { timeoutMs: 5000, what: 'the call to settle' })
    expect(settled).toMatchObject({ outcome: 'usage', cost_usd: 0.01, status: 200 })
  })

  it('a kill while the upstream has not answered yet: 403 agent_killed and the upstream request aborted', async () => {
    const { address, key } = await agent('waiter')
    const abortedBefore = fake.aborted
    const before = fake.requests.length
    const pending = send(gw.url, 'GET', '/egress/api/slow?ms=10000', { 'x-api-key': key })
    await pollUntil(() => fake.requests.length > before || undefined, { timeoutMs: 5000, what: 'the call to reach the upstream' })
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'stop' })).status).toBe(200)
    const res = await pending
    expect(res.status).toBe(403)
    expect(res.json.error.code).toBe('agent_killed')
    await expect.poll(() => fake.aborted - abortedBefore, { timeout: 1000 }).toBe(1)
    expect((await calls(address))[0]).toMatchObject({ state: 'settled', outcome: 'reservation', cost_usd: 0.01 })
  })

  it.runIf(engine === 'postgres')('a kill through another replica cuts the stream open on this one and aborts its upstream request', async () => {
    const other = await startTestGateway({ databaseUrl: gw.databaseUrl as string, env: { CHOKEPOINT_EGRESS_CONFIG: join(dir, 'egress.json'), API_TOKEN: TOKEN, API_EXTRA: 'x', CHOKEPOINT_ADMIN_KEY: gw.adminKey } })
    try {
      const { address, key } = await agent('replicated')
      const abortedBefore = fake.aborted
      const stream = await openStream(gw.url, '/egress/api/stream?n=400&delay=25', key)
      await pollUntil(() => stream.chunks.length >= 2 || undefined, { timeoutMs: 5000, what: 'the stream to flow' })
      expect((await api(other.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'elsewhere' })).status).toBe(200)
      expect((await stream.done).complete).toBe(false)
      await expect.poll(() => fake.aborted - abortedBefore, { timeout: 1000 }).toBe(1)
      expect((await send(other.url, 'GET', '/egress/api/v2/x', { 'x-api-key': key })).json.error.code).toBe('agent_killed')
    } finally {
      await other.close()
    }
  })

  it('upstream down → 502 upstream_error, charged 0; too slow → 504 upstream_timeout, the reservation, upstream aborted', async () => {
    const { address, key } = await agent('unlucky')
    const down = await send(gw.url, 'POST', '/egress/down/x', { 'x-api-key': key }, 'x')
    expect(down.status).toBe(502)
    expect(down.json.error.code).toBe('upstream_error')
    expect((await calls(address))[0]).toMatchObject({ state: 'settled', outcome: 'refused', cost_usd: 0 })
    const abortedBefore = fake.aborted
    const slow = await send(gw.url, 'GET', '/egress/slowapi/slow?ms=3000', { 'x-api-key': key })
    expect(slow.status).toBe(504)
    expect(slow.json.error.code).toBe('upstream_timeout')
    await expect.poll(() => fake.aborted - abortedBefore).toBe(1)
    expect((await calls(address))[0]).toMatchObject({ state: 'settled', outcome: 'reservation', cost_usd: 0.01 })
  })

  it('bad input is a 4xx with the error shape: no key, staff keys, unknown or non-http upstreams', async () => {
    const { key } = await agent('careless')
    const before = fake.requests.length
    const cases: [string | null, string, string, number][] = [
      [null, 'GET', '/egress/api/x', 401],
      ['cp_' + 'A'.repeat(43), 'GET', '/egress/api/x', 401],
      [gw.adminKey, 'POST', '/egress/api/x', 403],
      [key, 'GET', '/egress/nope/x', 404],
      [key, 'POST', '/egress/llm/v1/chat/completions', 404],
      [key, 'TRACE', '/egress/api/x', 404],
    ]
    for (const [k, method, path, status] of cases) {
      const res = await send(gw.url, method, path, k === null ? {} : { 'x-api-key': k }, method === 'POST' ? '{}' : undefined)
      expect(res.status, `${method} ${path}`).toBe(status)
      expect(res.json).toMatchObject({ ok: false, error: { code: expect.any(String), request_id: res.headers['x-request-id'] } })
    }
    expect(fake.requests.length).toBe(before)
  })
})
