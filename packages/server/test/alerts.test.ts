/**
 * Alerts (DESIGN §7, §10, §11): admins register webhooks; a real HTTP receiver on 127.0.0.1
 * gets every alert type as `{alert_id, type, agent, details, at}`, signed
 * `x-chokepoint-signature: sha256=<hex HMAC-SHA256 of the raw body>` (verified here with
 * node:crypto), with an `x-chokepoint-delivery` id that stays the same across retries.
 * Failing receivers are retried with exponential backoff until a 2xx, and the outbox survives
 * a gateway restart and a SIGKILL of the gateway process.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { ensureBuilt, randomAdminKey, startChildGateway, type ChildGateway } from './child-gateway.js'
import { agentKey, api, pollUntil, startTestGateway, type TestGateway } from './harness.js'

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const ALL_TYPES = ['agent.stale', 'agent.recovered', 'agent.killed', 'agent.auto_killed', 'agent.resumed', 'budget.threshold', 'rate.breach']
const DELIVERY_KEYS = [
  'alert_id',
  'attempts',
  'created_at',
  'delivered_at',
  'gave_up_at',
  'last_error',
  'last_status',
  'next_attempt_at',
  'status',
  'type',
  'webhook_id',
].sort()

interface Hit {
  path: string
  headers: IncomingHttpHeaders
  raw: string
  body: any
  /** Date.now() when the request had been read. */
  at: number
  /** The status this receiver answered. */
  status: number
}

/**
 * A webhook receiver on 127.0.0.1: records every request (raw body kept for signature checks)
 * and answers the status `respond` picks (by path and the number of earlier hits of the same
 * delivery id).
 */
class Receiver {
  readonly hits: Hit[] = []
  #server: Server | null = null
  port = 0

  constructor(private readonly respond: (path: string, earlierAttempts: number) => number = () => 200) {}

  async listen(port = 0): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (chunk: Buffer) => chunks.push(chunk))
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8')
        const path = req.url ?? '/'
        const delivery = req.headers['x-chokepoint-delivery']
        const earlier = this.hits.filter((h) => h.path === path && h.headers['x-chokepoint-delivery'] === delivery).length
        const status = this.respond(path, earlier)
        let body: unknown = null
        try {
          body = JSON.parse(raw)
        } catch {
          body = raw
        }
        this.hits.push({ path, headers: req.headers, raw, body, at: Date.now(), status })
        res.writeHead(status, { 'content-type': 'text/plain' })
        res.end(status < 300 ? 'thanks' : 'not now')
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => resolve())
    })
    this.#server = server
    this.port = (server.address() as AddressInfo).port
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`
  }

  on(path: string): Hit[] {
    return this.hits.filter((h) => h.path === path)
  }

  async close(): Promise<void> {
    const server = this.#server
    if (!server) return
    this.#server = null
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** A port that nothing listens on right now (listened on, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function expectedSignature(secret: string, raw: string): string {
  return `sha256=${createHmac('sha256', secret).update(raw).digest('hex')}`
}

/** Constant-time check of `x-chokepoint-signature` against the raw body. */
function signatureValid(secret: string, hit: Hit): boolean {
  const given = hit.headers['x-chokepoint-signature']
  if (typeof given !== 'string') return false
  const expected = expectedSignature(secret, hit.raw)
  return given.length === expected.length && timingSafeEqual(Buffer.from(given), Buffer.from(expected))
}

function expectError(res: { status: number; body: any; headers: Headers }, status: number, code: string): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { ok: false, error: { code, message: expect.any(String), request_id: expect.any(String) } },
  })
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

async function createKey(url: string, adminKey: string, role: string, agent?: string): Promise<string> {
  const res = await api(url, adminKey, 'POST', '/v1/keys', agent === undefined ? { role } : { role, agent })
  if (res.status !== 200) throw new Error(`key: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.key as string
}

async function deliveries(url: string, adminKey: string, webhookId?: string): Promise<any[]> {
  const res = await api(url, adminKey, 'GET', `/v1/alerts/deliveries${webhookId === undefined ? '' : `?webhook_id=${webhookId}`}`)
  if (res.status !== 200) throw new Error(`deliveries: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.deliveries as any[]
}

describe('POST /v1/alerts/webhooks', () => {
  let gw: TestGateway
  let operator: string
  let viewer: string
  let agent: string

  beforeAll(async () => {
    gw = await startTestGateway()
    operator = await createKey(gw.url, gw.adminKey, 'operator')
    viewer = await createKey(gw.url, gw.adminKey, 'viewer')
    agent = await agentKey(gw, 'agent://alerts/prod/hooker')
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('registers a webhook with a given secret: {ok, webhook: {webhook_id, url, event_types, created_at}, secret}', async () => {
    const res = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', {
      url: 'http://127.0.0.1:9/hooks/given',
      event_types: ['agent.killed', 'agent.resumed'],
      secret: 'a-given-secret-0123456789',
    })
    expect(res.status).toBe(200)
    expect(Object.keys(res.body).sort()).toEqual(['ok', 'secret', 'webhook'])
    expect(Object.keys(res.body.webhook).sort()).toEqual(['created_at', 'event_types', 'url', 'webhook_id'])
    expect(res.body).toEqual({
      ok: true,
      webhook: {
        webhook_id: expect.any(String),
        url: 'http://127.0.0.1:9/hooks/given',
        event_types: ['agent.killed', 'agent.resumed'],
        created_at: expect.stringMatching(ISO_MS),
      },
      secret: 'a-given-secret-0123456789',
    })
  })

  it('generates a secret when none is given, and never shows secrets again', async () => {
    const a = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', { url: 'https://hooks.example.com/a' })
    const b = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', { url: 'https://hooks.example.com/b' })
    expect(a.status).toBe(200)
    expect(b.status).toBe(200)
    for (const res of [a, b]) {
      expect(typeof res.body.secret).toBe('string')
      expect(res.body.secret.length).toBeGreaterThanOrEqual(32)
      // No filter means every type.
      expect([null, ALL_TYPES]).toContainEqual(res.body.webhook.event_types)
    }
    expect(a.body.secret).not.toBe(b.body.secret)
    expect(a.body.webhook.webhook_id).not.toBe(b.body.webhook.webhook_id)

    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/alerts/webhooks')
    expect(list.status).toBe(200)
    expect(list.body.webhooks.map((w: any) => w.url)).toEqual(expect.arrayContaining(['https://hooks.example.com/a', 'https://hooks.example.com/b']))
    const text = JSON.stringify(list.body)
    expect(text).not.toContain(a.body.secret)
    expect(text).not.toContain(b.body.secret)
    expect(text).not.toContain('a-given-secret-0123456789')

    // Audited (DESIGN §10: webhook.create, target the webhook_id), without the secret.
    const audit = await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?action_prefix=webhook.')
    expect(audit.status).toBe(200)
    expect(audit.body.entries.map((e: any) => e.target)).toEqual(expect.arrayContaining([a.body.webhook.webhook_id, b.body.webhook.webhook_id]))
    expect(JSON.stringify(audit.body)).not.toContain(a.body.secret)
  })

  it('is for admins only', async () => {
    const body = { url: 'http://127.0.0.1:9/nope' }
    for (const key of [operator, viewer, agent]) {
      expectError(await api(gw.url, key, 'POST', '/v1/alerts/webhooks', body), 403, 'forbidden')
      expectError(await api(gw.url, key, 'GET', '/v1/alerts/webhooks'), 403, 'forbidden')
      expectError(await api(gw.url, key, 'GET', '/v1/alerts/deliveries'), 403, 'forbidden')
    }
    expectError(await api(gw.url, null, 'POST', '/v1/alerts/webhooks', body), 401, 'unauthorized')
    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/alerts/webhooks')
    expect(list.body.webhooks.map((w: any) => w.url)).not.toContain('http://127.0.0.1:9/nope')
  })

  it('rejects bad URLs and bad fields with 422 (nothing registered)', async () => {
    const before = (await api(gw.url, gw.adminKey, 'GET', '/v1/alerts/webhooks')).body.webhooks.length
    const bad: unknown[] = [
      { url: 'not a url' },
      { url: 'ftp://127.0.0.1/hook' },
      { url: 'javascript:alert(1)' },
      { url: '' },
      { url: 42 },
      {},
      { url: 'http://127.0.0.1:9/h', event_types: ['agent.exploded'] },
      { url: 'http://127.0.0.1:9/h', event_types: [] },
      { url: 'http://127.0.0.1:9/h', secret: 'short' },
      { url: 'http://127.0.0.1:9/h', colour: 'red' },
    ]
    for (const body of bad) {
      const res = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', body)
      expect({ body, status: res.status, code: res.body?.error?.code }).toEqual({ body, status: 422, code: 'schema_invalid' })
    }
    expectError(await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', '{"url":'), 400, 'invalid_request')
    expect((await api(gw.url, gw.adminKey, 'GET', '/v1/alerts/webhooks')).body.webhooks).toHaveLength(before)
  })
})

describe('every alert type reaches a real receiver, signed', () => {
  const clock = new ManualClock(Date.parse('2026-03-15T09:00:00.000Z'))
  const receiver = new Receiver()
  let gw: TestGateway
  let operator: string
  const SECRET_ALL = 'all-alerts-secret-0123456789abcdef'
  const SECRET_KILLED = 'killed-only-secret-0123456789'
  let generatedSecret: string
  const hooks: Record<string, string> = {}
  const S = 'agent://alerts/prod/sleepy'
  const K = 'agent://alerts/prod/killed'
  const AK = 'agent://alerts/prod/auto'
  const B = 'agent://alerts/prod/spender'
  const RB = 'agent://alerts/prod/chatty'
  const PEER = 'agent://alerts/prod/peer'

  beforeAll(async () => {
    await receiver.listen()
    gw = await startTestGateway({ clock })
    operator = await createKey(gw.url, gw.adminKey, 'operator')
    const add = async (name: string, body: Record<string, unknown>) => {
      const res = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', body)
      if (res.status !== 200) throw new Error(`webhook: ${res.status} ${JSON.stringify(res.body)}`)
      hooks[name] = res.body.webhook.webhook_id
      return res.body.secret as string
    }
    await add('all', { url: receiver.url('/all'), secret: SECRET_ALL })
    await add('killed', { url: receiver.url('/killed-only'), event_types: ['agent.killed'], secret: SECRET_KILLED })
    generatedSecret = await add('health', { url: receiver.url('/health-only'), event_types: ['agent.stale', 'agent.recovered'] })
  })
  afterAll(async () => {
    await gw?.close()
    await receiver.close()
  })

  it('agent.killed, agent.resumed, agent.stale, agent.recovered, agent.auto_killed, budget.threshold, rate.breach', async () => {
    const keyS = await agentKey(gw, S)
    await agentKey(gw, K)
    const keyAK = await agentKey(gw, AK)
    const keyB = await agentKey(gw, B)
    const keyRB = await agentKey(gw, RB)
    await agentKey(gw, PEER)
    const policy = async (address: string, body: Record<string, unknown>) => {
      const res = await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/policies`, body)
      if (res.status !== 200) throw new Error(`policy: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body.policy.policy_id as string
    }
    const send = (key: string) => api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'alerts.work.v1', to_agent: PEER, payload: {} })

    // agent.stale and agent.recovered: a beat, silence past stale_after, a beat.
    expect((await api(gw.url, keyS, 'POST', '/v1/mesh/heartbeat', {})).body.health_status).toBe('healthy')
    clock.advance(91_000)
    const staleAt = clock.now()
    await gw.gateway.sweeper.tick()
    await pollUntil(async () => (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(S)}`)).body.agent.health_status === 'unreachable', {
      what: 'the sweeper to mark the agent unreachable',
    })
    clock.advance(1_000)
    const recoveredAt = clock.now()
    expect((await api(gw.url, keyS, 'POST', '/v1/mesh/heartbeat', {})).body.health_status).toBe('healthy')

    // agent.killed and agent.resumed by an operator.
    clock.advance(1_000)
    const killedAt = clock.now()
    expect((await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(K)}/kill`, { reason: 'alert test' })).status).toBe(200)
    clock.advance(1_000)
    expect((await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(K)}/resume`, { reason: 'fixed' })).status).toBe(200)

    // agent.auto_killed: a rate policy with on_breach kill.
    const autoPolicy = await policy(AK, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'kill' })
    expect((await send(keyAK)).status).toBe(200)
    const breach = await send(keyAK)
    expect(breach.status).toBe(429)
    expect(breach.body.error.details).toMatchObject({ policy_id: autoPolicy, auto_killed: true })

    // budget.threshold: a cost policy alerting at 50 %, reached by a heartbeat's cost delta.
    const costPolicy = await policy(B, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'block', alert_at_percent: [50] })
    expect((await api(gw.url, keyB, 'POST', '/v1/mesh/heartbeat', { metrics: { cost_usd: 0.6 } })).status).toBe(200)

    // rate.breach: a blocking rate policy.
    const ratePolicy = await policy(RB, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'block' })
    expect((await send(keyRB)).status).toBe(200)
    expect((await send(keyRB)).status).toBe(429)

    await pollUntil(() => ALL_TYPES.every((t) => receiver.on('/all').some((h) => h.body?.type === t)), {
      timeoutMs: 15_000,
      what: `all alert types on /all (have ${JSON.stringify(receiver.on('/all').map((h) => h.body?.type))})`,
    })

    const all = receiver.on('/all')
    for (const hit of all) {
      expect(hit.headers['content-type']).toMatch(/^application\/json/)
      expect(hit.headers['x-chokepoint-signature']).toMatch(/^sha256=[0-9a-f]{64}$/)
      expect(signatureValid(SECRET_ALL, hit)).toBe(true)
      expect(signatureValid(SECRET_KILLED, hit)).toBe(false)
      expect(Object.keys(hit.body).sort()).toEqual(['agent', 'alert_id', 'at', 'details', 'type'])
      expect(hit.headers['x-chokepoint-delivery']).toBe(hit.body.alert_id)
      expect(hit.body.at).toMatch(ISO_MS)
      expect(typeof hit.body.details).toBe('object')
    }
    // Every delivery id is distinct (one alert each), each delivered once.
    const ids = all.map((h) => h.body.alert_id)
    expect(new Set(ids).size).toBe(ids.length)
    const byType = (type: string) => all.filter((h) => h.body.type === type)
    for (const t of ALL_TYPES) expect({ t, n: byType(t).length }).toEqual({ t, n: 1 })

    expect(byType('agent.stale')[0]?.body).toMatchObject({ agent: S, at: new Date(staleAt).toISOString(), details: { from: 'healthy', to: 'unreachable' } })
    expect(byType('agent.recovered')[0]?.body).toMatchObject({ agent: S, at: new Date(recoveredAt).toISOString(), details: { from: 'unreachable', to: 'healthy' } })
    expect(byType('agent.killed')[0]?.body).toMatchObject({ agent: K, at: new Date(killedAt).toISOString(), details: { reason: 'alert test' } })
    expect(byType('agent.resumed')[0]?.body).toMatchObject({ agent: K })
    expect(byType('agent.auto_killed')[0]?.body).toMatchObject({ agent: AK, details: { policy_id: autoPolicy } })
    expect(byType('budget.threshold')[0]?.body).toMatchObject({ agent: B })
    expect(JSON.stringify(byType('budget.threshold')[0]?.body.details)).toContain(costPolicy)
    expect(byType('rate.breach')[0]?.body).toMatchObject({ agent: RB, details: { policy_id: ratePolicy } })

    // The alert's `at` and agent match the mesh event it came from.
    const events = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?event_type=agent.killed&address=${encodeURIComponent(K)}`)
    expect(events.body.events[0]).toMatchObject({ address: K, created_at: byType('agent.killed')[0]?.body.at })

    // event_types filters: the outbox only holds matching alerts for filtered webhooks.
    const killedRows = await deliveries(gw.url, gw.adminKey, hooks['killed'])
    expect(killedRows.map((d) => d.type)).toEqual(['agent.killed'])
    const healthRows = await deliveries(gw.url, gw.adminKey, hooks['health'])
    expect(healthRows.map((d) => d.type).sort()).toEqual(['agent.recovered', 'agent.stale'])
    await pollUntil(() => receiver.on('/killed-only').length >= 1 && receiver.on('/health-only').length >= 2, { what: 'filtered deliveries' })
    const killedOnly = receiver.on('/killed-only')
    expect(killedOnly.map((h) => h.body.type)).toEqual(['agent.killed'])
    expect(signatureValid(SECRET_KILLED, killedOnly[0] as Hit)).toBe(true)
    expect(killedOnly[0]?.body.alert_id).not.toBe(byType('agent.killed')[0]?.body.alert_id)
    const healthOnly = receiver.on('/health-only')
    expect(healthOnly.map((h) => h.body.type).sort()).toEqual(['agent.recovered', 'agent.stale'])
    // The generated secret (shown once at creation) signs them.
    for (const hit of healthOnly) expect(signatureValid(generatedSecret, hit)).toBe(true)

    // All delivered: the deliveries view says so.
    await pollUntil(async () => (await deliveries(gw.url, gw.adminKey)).every((d) => d.status === 'delivered'), { what: 'all delivered' })
    for (const d of await deliveries(gw.url, gw.adminKey)) {
      expect(Object.keys(d).sort()).toEqual(DELIVERY_KEYS)
      expect(d).toMatchObject({ status: 'delivered', attempts: 1, last_status: 200, last_error: null, next_attempt_at: null, gave_up_at: null })
      expect(d.delivered_at).toMatch(ISO_MS)
    }
  })
})

describe('retries with exponential backoff until a 2xx', () => {
  const BASE_MS = 50
  // /flaky answers 500 three times, then 200; /down always 500.
  const receiver = new Receiver((path, earlier) => (path === '/flaky' ? (earlier < 3 ? 500 : 200) : path === '/down' ? 500 : 200))
  let gw: TestGateway
  const hooks: Record<string, string> = {}
  const SECRET = 'retry-secret-0123456789abcdef'

  beforeAll(async () => {
    await receiver.listen()
    gw = await startTestGateway({ env: { CHOKEPOINT_ALERT_RETRY_BASE_MS: String(BASE_MS) } })
    const refused = await closedPort()
    for (const [name, url] of [
      ['flaky', receiver.url('/flaky')],
      ['down', receiver.url('/down')],
      ['refused', `http://127.0.0.1:${refused}/nobody-home`],
    ] as const) {
      const res = await api(gw.url, gw.adminKey, 'POST', '/v1/alerts/webhooks', { url, event_types: ['agent.killed'], secret: SECRET })
      if (res.status !== 200) throw new Error(`webhook: ${res.status}`)
      hooks[name] = res.body.webhook.webhook_id
    }
  })
  afterAll(async () => {
    await gw?.close()
    await receiver.close()
  })

  it('a receiver failing 3 times gets the alert exactly once as a 2xx, after 4 attempts with growing gaps', async () => {
    await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: 'agent://alerts/retry/victim' })
    const kill = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent('agent://alerts/retry/victim')}/kill`, {
      reason: 'retry test',
    })
    expect(kill.status).toBe(200)

    await pollUntil(() => receiver.on('/flaky').some((h) => h.status === 200), { timeoutMs: 15_000, what: 'the 2xx attempt on /flaky' })
    const attempts = receiver.on('/flaky')
    expect(attempts.map((h) => h.status)).toEqual([500, 500, 500, 200])
    // Same delivery id, same body and signature on every attempt.
    const id = attempts[0]?.headers['x-chokepoint-delivery']
    expect(id).toEqual(expect.any(String))
    for (const hit of attempts) {
      expect(hit.headers['x-chokepoint-delivery']).toBe(id)
      expect(hit.body.alert_id).toBe(id)
      expect(hit.raw).toBe(attempts[0]?.raw)
      expect(signatureValid(SECRET, hit)).toBe(true)
    }
    // Exponential backoff: the gaps are at least base, 2·base, 4·base, and they grow.
    const gaps = attempts.slice(1).map((h, i) => h.at - (attempts[i] as Hit).at)
    expect(gaps[0]).toBeGreaterThanOrEqual(BASE_MS - 2)
    expect(gaps[1]).toBeGreaterThanOrEqual(2 * BASE_MS - 2)
    expect(gaps[2]).toBeGreaterThanOrEqual(4 * BASE_MS - 2)
    expect(gaps[2] as number).toBeGreaterThan(gaps[0] as number)

    const row = await pollUntil(async () => (await deliveries(gw.url, gw.adminKey, hooks['flaky'])).find((d) => d.status === 'delivered'), {
      what: 'the delivered row',
    })
    expect(row).toMatchObject({
      alert_id: id,
      webhook_id: hooks['flaky'],
      type: 'agent.killed',
      attempts: 4,
      status: 'delivered',
      last_status: 200,
      last_error: null,
      next_attempt_at: null,
      gave_up_at: null,
    })
    expect(row.delivered_at).toMatch(ISO_MS)

    // Nothing more is sent once it was delivered (several sweeper passes later).
    await new Promise((resolve) => setTimeout(resolve, 8 * BASE_MS))
    expect(receiver.on('/flaky')).toHaveLength(4)
    expect(receiver.on('/flaky').filter((h) => h.status < 300)).toHaveLength(1)
  })

  it('a receiver that keeps failing stays retrying with last_status and last_error; a refused connection too', async () => {
    await pollUntil(() => receiver.on('/down').length >= 3, { timeoutMs: 15_000, what: '3 attempts on /down' })
    const down = await pollUntil(async () => (await deliveries(gw.url, gw.adminKey, hooks['down'])).find((d) => d.attempts >= 3), {
      what: 'the /down row with 3 attempts',
    })
    expect(down).toMatchObject({ type: 'agent.killed', status: 'retrying', last_status: 500, delivered_at: null, gave_up_at: null })
    expect(down.last_error).toEqual(expect.stringContaining('500'))
    expect(Date.parse(down.next_attempt_at)).toBeGreaterThan(Date.parse(down.created_at))
    const ids = new Set(receiver.on('/down').map((h) => h.headers['x-chokepoint-delivery']))
    expect(ids.size).toBe(1)

    const refused = await pollUntil(async () => (await deliveries(gw.url, gw.adminKey, hooks['refused'])).find((d) => d.attempts >= 2), {
      what: 'the refused row with 2 attempts',
    })
    expect(refused).toMatchObject({ status: 'retrying', last_status: null, delivered_at: null })
    expect(typeof refused.last_error).toBe('string')
    expect(refused.last_error.length).toBeGreaterThan(0)
  })
})

describe('the outbox survives a gateway restart', () => {
  const dirs: string[] = []
  const receivers: Receiver[] = []
  const gateways: TestGateway[] = []
  const children: ChildGateway[] = []
  const SECRET = 'durable-secret-0123456789abcdef'

  beforeAll(() => {
    ensureBuilt()
  })
  afterAll(async () => {
    for (const child of children) await child.stop('SIGKILL')
    for (const g of gateways) await g.close()
    for (const r of receivers) await r.close()
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })

  /** Registers a webhook on a closed port, kills an agent, waits for ≥ 2 failed attempts. */
  async function produceWhileDown(url: string, adminKey: string, port: number, name: string) {
    const hook = await api(url, adminKey, 'POST', '/v1/alerts/webhooks', { url: `http://127.0.0.1:${port}/durable`, secret: SECRET })
    expect(hook.status).toBe(200)
    const address = `agent://alerts/durable/${name}`
    expect((await api(url, adminKey, 'POST', '/v1/mesh/agents', { address })).status).toBe(200)
    expect((await api(url, adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'before the crash' })).status).toBe(200)
    const row = await pollUntil(
      async () => (await deliveries(url, adminKey, hook.body.webhook.webhook_id)).find((d) => d.attempts >= 2),
      { what: 'two failed attempts while the receiver is down' },
    )
    expect(row).toMatchObject({ type: 'agent.killed', status: 'retrying', last_status: null })
    expect(row.last_error).toEqual(expect.any(String))
    return { address, alertId: row.alert_id as string, webhookId: hook.body.webhook.webhook_id as string, attempts: row.attempts as number }
  }

  async function expectDeliveredAfterRestart(url: string, adminKey: string, port: number, produced: Awaited<ReturnType<typeof produceWhileDown>>) {
    // The alert is still in the outbox, not delivered, after the restart.
    const pending = (await deliveries(url, adminKey, produced.webhookId)).find((d) => d.alert_id === produced.alertId)
    expect(pending).toMatchObject({ status: 'retrying' })
    expect(pending.attempts).toBeGreaterThanOrEqual(produced.attempts)

    const receiver = new Receiver()
    receivers.push(receiver)
    await receiver.listen(port)
    const hit = await pollUntil(() => receiver.on('/durable').find((h) => h.status === 200), {
      timeoutMs: 40_000,
      what: 'the alert after the restart',
    })
    expect(hit.headers['x-chokepoint-delivery']).toBe(produced.alertId)
    expect(hit.body).toMatchObject({ alert_id: produced.alertId, type: 'agent.killed', agent: produced.address, details: { reason: 'before the crash' } })
    expect(signatureValid(SECRET, hit)).toBe(true)
    const row = await pollUntil(
      async () => (await deliveries(url, adminKey, produced.webhookId)).find((d) => d.alert_id === produced.alertId && d.status === 'delivered'),
      { what: 'the delivered row' },
    )
    expect(row.attempts).toBeGreaterThan(produced.attempts)
    expect(row.last_status).toBe(200)
    expect(receiver.on('/durable')).toHaveLength(1)
  }

  it('closed while the receiver is down; a new gateway on the same data dir delivers it', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-alerts-'))
    dirs.push(dataDir)
    const port = await closedPort()
    const env = { CHOKEPOINT_ADMIN_KEY: randomAdminKey(), CHOKEPOINT_ALERT_RETRY_BASE_MS: '50' }
    const first = await startTestGateway({ dataDir, env })
    gateways.push(first)
    const produced = await produceWhileDown(first.url, first.adminKey, port, 'closed')
    await first.close()

    const second = await startTestGateway({ dataDir, env })
    gateways.push(second)
    await expectDeliveredAfterRestart(second.url, second.adminKey, port, produced)
  }, 60_000)

  it('SIGKILLed gateway process; a new process on the same data dir delivers it', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'chokepoint-alerts-')), 'data')
    dirs.push(join(dataDir, '..'))
    const port = await closedPort()
    const adminKey = randomAdminKey()
    const env = { CHOKEPOINT_ALERT_RETRY_BASE_MS: '50', CHOKEPOINT_SWEEP_INTERVAL_MS: '50' }
    const first = await startChildGateway({ dataDir, adminKey, env })
    children.push(first)
    const produced = await produceWhileDown(first.url, adminKey, port, 'sigkilled')
    const exit = await first.stop('SIGKILL')
    expect(exit.signal).toBe('SIGKILL')

    const second = await startChildGateway({ dataDir, adminKey, env })
    children.push(second)
    await expectDeliveredAfterRestart(second.url, adminKey, port, produced)
  }, 60_000)
})
