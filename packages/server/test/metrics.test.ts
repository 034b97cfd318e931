/**
 * `GET /metrics` (DESIGN §7, §10): Prometheus text with `chokepoint_` names, checked after a
 * known scenario with a small parser of the text exposition format, and the optional
 * metrics key (`CHOKEPOINT_METRICS_KEY`).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock, loadConfig } from '../src/index.js'
import { agentKey, api, openSseStream, pollUntil, readSse, startTestGateway, type TestGateway } from './harness.js'

// ---- a small parser of the Prometheus text format (0.0.4) ----

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

interface Exposition {
  types: Map<string, string>
  helps: Map<string, string>
  samples: Sample[]
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < text.length) {
    while (text[i] === ' ' || text[i] === ',') i += 1
    if (i >= text.length) break
    const eq = text.indexOf('=', i)
    if (eq === -1) throw new Error(`bad labels in: ${line}`)
    const name = text.slice(i, eq).trim()
    if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(name)) throw new Error(`bad label name "${name}" in: ${line}`)
    if (text[eq + 1] !== '"') throw new Error(`unquoted label value in: ${line}`)
    let j = eq + 2
    let value = ''
    for (;;) {
      const ch = text[j]
      if (ch === undefined) throw new Error(`unterminated label value in: ${line}`)
      if (ch === '\\') {
        const next = text[j + 1]
        value += next === 'n' ? '\n' : next ?? ''
        j += 2
        continue
      }
      if (ch === '"') break
      value += ch
      j += 1
    }
    labels[name] = value
    i = j + 1
  }
  return labels
}

function parseValue(raw: string, line: string): number {
  if (raw === '+Inf') return Infinity
  if (raw === '-Inf') return -Infinity
  if (raw === 'NaN') return NaN
  const n = Number(raw)
  if (raw === '' || Number.isNaN(n)) throw new Error(`bad value "${raw}" in: ${line}`)
  return n
}

function parseExposition(text: string): Exposition {
  const out: Exposition = { types: new Map(), helps: new Map(), samples: [] }
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line)
      if (m) (m[1] === 'TYPE' ? out.types : out.helps).set(m[2] as string, m[3] as string)
      continue
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?$/.exec(line)
    if (!m) throw new Error(`unparseable sample line: ${line}`)
    out.samples.push({ name: m[1] as string, labels: m[2] === undefined ? {} : parseLabels(m[2], line), value: parseValue(m[3] as string, line) })
  }
  return out
}

/** The value of the one sample with this name and exactly these labels (undefined if none). */
function value(exp: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort())
  const found = exp.samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want)
  if (found.length > 1) throw new Error(`duplicate sample ${name}${want}`)
  return found[0]?.value
}

async function scrape(url: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string; contentType: string | null }> {
  const res = await fetch(`${url}/metrics`, { headers })
  return { status: res.status, text: await res.text(), contentType: res.headers.get('content-type') }
}

describe('the tiny exposition parser', () => {
  it('reads names, escaped labels, special values and timestamps', () => {
    const exp = parseExposition(
      [
        '# HELP x_total Things',
        '# TYPE x_total counter',
        'x_total{a="1",b="with \\"quotes\\" and \\\\ and \\n"} 3',
        'x_total 4 1700000000000',
        'y_bucket{le="+Inf"} +Inf',
        'z NaN',
        '',
      ].join('\n'),
    )
    expect(exp.types.get('x_total')).toBe('counter')
    expect(value(exp, 'x_total', { a: '1', b: 'with "quotes" and \\ and \n' })).toBe(3)
    expect(value(exp, 'x_total')).toBe(4)
    expect(value(exp, 'y_bucket', { le: '+Inf' })).toBe(Infinity)
    expect(Number.isNaN(value(exp, 'z'))).toBe(true)
    expect(() => parseExposition('bad line here')).toThrow()
  })
})

describe('GET /metrics after a known scenario', () => {
  const clock = new ManualClock(Date.parse('2026-03-15T10:00:00.000Z'))
  let gw: TestGateway
  let webhookServer: Server
  let webhookHits = 0
  const A = 'agent://metrics/prod/sender'
  const B = 'agent://metrics/prod/worker'
  const C = 'agent://metrics/prod/idle'
  const K = 'agent://metrics/prod/killed'
  let keyA: string
  let keyB: string
  let keyC: string
  let exp: Exposition
  let scraped: { status: number; text: string; contentType: string | null }

  beforeAll(async () => {
    webhookServer = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        webhookHits += 1
        res.writeHead(204).end()
      })
    })
    await new Promise<void>((resolve) => webhookServer.listen(0, '127.0.0.1', () => resolve()))
    const hookUrl = `http://127.0.0.1:${(webhookServer.address() as AddressInfo).port}/hook`
    gw = await startTestGateway({ clock })
    const hook = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', { url: hookUrl, secret: 'metrics-secret-0123456789' })
    if (hook.status !== 200) throw new Error(`webhook: ${hook.status}`)
    keyA = await agentKey(gw, A)
    keyB = await agentKey(gw, B)
    keyC = await agentKey(gw, C)
    await agentKey(gw, K)

    const send = (to: string, intentType = 'metrics.work.v1') =>
      api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: intentType, to_agent: to, payload: {} })
    const expectStatus = async (p: Promise<{ status: number; body: any }>, status: number, code?: string) => {
      const res = await p
      if (res.status !== status || (code !== undefined && res.body.error?.code !== code)) {
        throw new Error(`expected ${status} ${code ?? ''}, got ${res.status} ${JSON.stringify(res.body)}`)
      }
      return res
    }

    // 5 accepted: 3 to B (to be delivered), 2 to C (never read).
    for (let i = 0; i < 3; i += 1) await expectStatus(send(B), 200)
    for (let i = 0; i < 2; i += 1) await expectStatus(send(C), 200)
    // One kill; then 2 rejected as agent_killed.
    await expectStatus(api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(K)}/kill`, { reason: 'metrics' }), 200)
    await expectStatus(send(K), 403, 'agent_killed')
    await expectStatus(send(K), 403, 'agent_killed')
    // 1 rejected as policy_denied.
    await expectStatus(
      api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/policies`, {
        kind: 'action',
        direction: 'send',
        mode: 'denylist',
        patterns: ['forbidden.**'],
      }),
      200,
    )
    await expectStatus(send(B, 'forbidden.thing.v1'), 403, 'policy_denied')

    // 3 deliveries to B with 1-second leases; B resolves two of them.
    const first = await readSse(gw.url, keyB, '/v1/agents/metrics/prod/worker/intents/stream?wait_seconds=5&lease_seconds=1', {
      'x-instance-id': 'b-1',
    })
    const delivered = first.frames.filter((f) => f.event === 'intent.delivered')
    if (delivered.length !== 3) throw new Error(`expected 3 deliveries, got ${JSON.stringify(first.frames)}`)
    for (const f of delivered.slice(0, 2)) {
      await expectStatus(api(gw.url, keyB, 'POST', `/v1/intents/${f.data.intent_id}/resolve`, { status: 'COMPLETED' }), 200)
    }
    // The third lease expires (manual clock + a sweeper pass) and is redelivered once.
    clock.advance(2_000)
    await gw.gateway.sweeper.tick()
    const again = await readSse(gw.url, keyB, '/v1/agents/metrics/prod/worker/intents/stream?wait_seconds=5&lease_seconds=60', {
      'x-instance-id': 'b-1',
    })
    const redelivered = again.frames.filter((f) => f.event === 'intent.delivered')
    if (redelivered.length !== 1 || redelivered[0]?.data.delivery_attempt !== 2) {
      throw new Error(`expected one redelivery, got ${JSON.stringify(again.frames)}`)
    }
    // One heartbeat.
    await expectStatus(api(gw.url, keyB, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'b-1' }), 200)
    // The kill's alert reaches the webhook.
    await pollUntil(() => webhookHits >= 1, { what: 'the kill alert' })
    await pollUntil(
      async () => value(parseExposition((await scrape(gw.url)).text), 'chokepoint_alert_deliveries_total', { result: 'delivered' }) === 1,
      { what: 'the alert delivery to be counted' },
    )
    scraped = await scrape(gw.url)
    exp = parseExposition(scraped.text)
  })
  afterAll(async () => {
    await gw?.close()
    await new Promise<void>((resolve) => webhookServer?.close(() => resolve()))
  })

  it('answers Prometheus text without a key', () => {
    expect(scraped.status).toBe(200)
    expect(scraped.contentType).toMatch(/^text\/plain/)
    expect(scraped.contentType).toContain('version=0.0.4')
    // Every sample is chokepoint_-prefixed (DESIGN §10) and typed.
    expect(exp.samples.length).toBeGreaterThan(0)
    for (const s of exp.samples) {
      expect(s.name.startsWith('chokepoint_')).toBe(true)
      const family = s.name.replace(/_(bucket|sum|count)$/, '')
      expect(exp.types.has(s.name) || exp.types.has(family)).toBe(true)
    }
  })

  it('counts intents by result and reason', () => {
    expect(exp.types.get('chokepoint_intents_total')).toBe('counter')
    expect(value(exp, 'chokepoint_intents_total', { result: 'accepted', reason: '' })).toBe(5)
    expect(value(exp, 'chokepoint_intents_total', { result: 'rejected', reason: 'agent_killed' })).toBe(2)
    expect(value(exp, 'chokepoint_intents_total', { result: 'rejected', reason: 'policy_denied' })).toBe(1)
    const all = exp.samples.filter((s) => s.name === 'chokepoint_intents_total').reduce((n, s) => n + s.value, 0)
    expect(all).toBe(8)
  })

  it('counts deliveries, redeliveries, expired leases and heartbeats', () => {
    expect(exp.types.get('chokepoint_deliveries_total')).toBe('counter')
    expect(value(exp, 'chokepoint_deliveries_total', { kind: 'delivered' })).toBe(3)
    expect(value(exp, 'chokepoint_deliveries_total', { kind: 'redelivered' })).toBe(1)
    expect(exp.types.get('chokepoint_leases_expired_total')).toBe('counter')
    expect(value(exp, 'chokepoint_leases_expired_total')).toBe(1)
    expect(exp.types.get('chokepoint_heartbeats_total')).toBe('counter')
    expect(value(exp, 'chokepoint_heartbeats_total')).toBe(1)
  })

  it('reports agents by health', () => {
    expect(exp.types.get('chokepoint_agents')).toBe('gauge')
    expect(value(exp, 'chokepoint_agents', { health: 'killed' })).toBe(1)
    expect(value(exp, 'chokepoint_agents', { health: 'healthy' })).toBe(1)
    expect(value(exp, 'chokepoint_agents', { health: 'unknown' })).toBe(2)
    expect(value(exp, 'chokepoint_agents', { health: 'degraded' })).toBe(0)
    expect(value(exp, 'chokepoint_agents', { health: 'unreachable' })).toBe(0)
  })

  it('times the kill and the store transactions as histograms', () => {
    expect(exp.types.get('chokepoint_kill_enforcement_seconds')).toBe('histogram')
    expect(value(exp, 'chokepoint_kill_enforcement_seconds_count')).toBe(1)
    expect(value(exp, 'chokepoint_kill_enforcement_seconds_bucket', { le: '+Inf' })).toBe(1)
    expect(value(exp, 'chokepoint_kill_enforcement_seconds_sum')).toBeGreaterThan(0)

    expect(exp.types.get('chokepoint_store_transaction_seconds')).toBe('histogram')
    const accepts = value(exp, 'chokepoint_store_transaction_seconds_count', { op: 'acceptIntent' })
    // Every accepted intent went through the accepting transaction (rejections may too).
    expect(accepts).toBeGreaterThanOrEqual(5)
    expect(accepts).toBeLessThanOrEqual(8)
    expect(value(exp, 'chokepoint_store_transaction_seconds_bucket', { op: 'acceptIntent', le: '+Inf' })).toBe(accepts)
    // Buckets are cumulative.
    const buckets = exp.samples
      .filter((s) => s.name === 'chokepoint_store_transaction_seconds_bucket' && s.labels['op'] === 'acceptIntent')
      .map((s) => s.value)
    expect(buckets).toEqual([...buckets].sort((a, b) => a - b))
    expect(value(exp, 'chokepoint_store_transaction_seconds_count', { op: 'heartbeat' })).toBe(1)
  })

  it('counts alert deliveries by result', () => {
    expect(exp.types.get('chokepoint_alert_deliveries_total')).toBe('counter')
    expect(value(exp, 'chokepoint_alert_deliveries_total', { result: 'delivered' })).toBe(1)
  })

  it("reports the process's memory, heap and open descriptors", () => {
    expect(exp.types.get('chokepoint_process_resident_memory_bytes')).toBe('gauge')
    expect(value(exp, 'chokepoint_process_resident_memory_bytes')).toBeGreaterThan(10 * 1024 * 1024)
    expect(exp.types.get('chokepoint_nodejs_heap_size_used_bytes')).toBe('gauge')
    expect(value(exp, 'chokepoint_nodejs_heap_size_used_bytes')).toBeGreaterThan(1024 * 1024)
    expect(exp.types.get('chokepoint_process_open_fds')).toBe('gauge')
    expect(value(exp, 'chokepoint_process_open_fds')).toBeGreaterThan(3)
    expect(exp.types.get('chokepoint_nodejs_eventloop_lag_seconds')).toBe('gauge')
  })

  it('reports open inbox streams', async () => {
    expect(exp.types.get('chokepoint_open_streams')).toBe('gauge')
    expect(value(exp, 'chokepoint_open_streams')).toBe(0)
    const stream = await openSseStream(gw.url, keyC, '/v1/agents/metrics/prod/idle/intents/stream?lease_seconds=60', { 'x-instance-id': 'c-1' })
    try {
      expect(stream.status).toBe(200)
      await pollUntil(async () => value(parseExposition((await scrape(gw.url)).text), 'chokepoint_open_streams') === 1, {
        what: 'one open stream',
      })
    } finally {
      stream.close()
    }
    await pollUntil(async () => value(parseExposition((await scrape(gw.url)).text), 'chokepoint_open_streams') === 0, {
      what: 'no open streams after the client left',
    })
  })
})

describe('GET /metrics with CHOKEPOINT_METRICS_KEY', () => {
  const METRICS_KEY = 'scrape-me-0123456789abcdef'
  let gw: TestGateway

  beforeAll(async () => {
    gw = await startTestGateway({ env: { CHOKEPOINT_METRICS_KEY: METRICS_KEY } })
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('401 without the key or with another key; 200 with it (x-api-key or Bearer)', async () => {
    const none = await api(gw.url, null, 'GET', '/metrics')
    expect(none.status).toBe(401)
    expect(none.body).toMatchObject({ ok: false, error: { code: 'unauthorized', request_id: none.headers.get('x-request-id') } })
    expect((await api(gw.url, 'scrape-me-0123456789abcdeX', 'GET', '/metrics')).status).toBe(401)
    expect((await api(gw.url, gw.adminKey, 'GET', '/metrics')).status).toBe(401)
    expect((await api(gw.url, null, 'GET', '/metrics', undefined, { authorization: 'Bearer nope' })).status).toBe(401)

    const byHeader = await scrape(gw.url, { 'x-api-key': METRICS_KEY })
    expect(byHeader.status).toBe(200)
    const byBearer = await scrape(gw.url, { authorization: `Bearer ${METRICS_KEY}` })
    expect(byBearer.status).toBe(200)
    const exp = parseExposition(byHeader.text)
    expect(exp.types.get('chokepoint_intents_total')).toBe('counter')
    expect(exp.types.get('chokepoint_agents')).toBe('gauge')
    // Other keyless routes stay keyless.
    expect((await api(gw.url, null, 'GET', '/health')).status).toBe(200)
  })

  it('a too-short metrics key stops the start, naming the setting', () => {
    expect(() => loadConfig({ CHOKEPOINT_METRICS_KEY: 'short' })).toThrow(/CHOKEPOINT_METRICS_KEY/)
  })
})
