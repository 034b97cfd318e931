/**
 * Policies over real HTTP (DESIGN §2.6, §4, §5d, §6, §10, §11): action globs for send and
 * receive, hourly/daily rate limits with their 429 headers and window resets, auto-kill of the
 * policy's owner with its audit entry and mesh event, the resume baseline, cost ceilings and
 * budget thresholds (resolve and heartbeat cost), versioned updates with If-Match, the dry-run
 * evaluation (no side effects) and bad policy bodies (422 naming the field, never 5xx).
 *
 * Every gateway runs on a ManualClock set to 10:20:00 UTC of today, so no window boundary is
 * crossed by accident; tests that need a new hour or day move the clock explicitly.
 */
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type ApiResponse, type Engine, type TestGateway } from './harness.js'

/** Every block runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('policies.test.ts')

const HOUR_MS = 3_600_000
const DAY_MS = 86_400_000
const today = new Date()
/** 10:20:00.000 UTC today: 40 minutes to the end of the hour, 13 h 40 min to the end of the day. */
const START = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate(), 10, 20, 0)

let seq = 0
/** A fresh agent address per use, so tests never share counters or policies. */
const addr = (name: string): string => `agent://acme/pol/${name}-${++seq}`
const enc = encodeURIComponent

/** Asserts the §4 error shape with the given status and code; request_id matches the header. */
function expectError(res: ApiResponse<any>, status: number, code: string): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { ok: false, error: { code, message: expect.any(String), request_id: expect.stringMatching(/^req_/) } },
  })
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

/** 422 `schema_invalid` whose details name `field`. */
function expectInvalid(res: ApiResponse<any>, field: string): void {
  expectError(res, 422, 'schema_invalid')
  expect(res.body.error.details?.field, JSON.stringify(res.body.error)).toBe(field)
}

/** Seconds from `now` to the end of its UTC window of `ms`. */
const toWindowEnd = (now: number, ms: number): number => Math.ceil((ms - (now % ms)) / 1000)

/** Small typed helpers around one gateway (admin key for control calls). */
function client(gw: TestGateway) {
  const admin = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    api(gw.url, gw.adminKey, method, path, body, headers)
  const c = {
    admin,
    createPolicy: (address: string, body: unknown) => admin('POST', `/v1/mesh/agents/${enc(address)}/policies`, body),
    async policy(address: string, body: Record<string, unknown>): Promise<any> {
      const res = await c.createPolicy(address, body)
      if (res.status !== 200) throw new Error(`create policy: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body.policy
    },
    listPolicies: async (address: string): Promise<any[]> => {
      const res = await admin('GET', `/v1/mesh/agents/${enc(address)}/policies`)
      expect(res.status).toBe(200)
      return res.body.policies
    },
    send: (key: string, to: string, intentType = 'deploy.service.v1') =>
      api(gw.url, key, 'POST', '/v1/intents', { intent_type: intentType, to_agent: to, payload: { n: 1 } }),
    evaluate: (from: string, to: string, intentType = 'deploy.service.v1', key = gw.adminKey) =>
      api(gw.url, key, 'POST', '/v1/policies/evaluate', { from_agent: from, to_agent: to, intent_type: intentType }),
    async counters(from: string, to: string): Promise<unknown> {
      const res = await c.evaluate(from, to)
      expect(res.status).toBe(200)
      return res.body.counters
    },
    async intents(address: string, direction: 'sent' | 'received'): Promise<any[]> {
      const res = await admin('GET', `/v1/intents?agent=${enc(address)}&direction=${direction}&limit=500`)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      return res.body.intents
    },
    async agent(address: string): Promise<any> {
      const res = await admin('GET', `/v1/mesh/agents/${enc(address)}`)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      return res.body.agent
    },
    async meshEvents(address: string, eventType: string): Promise<any[]> {
      const res = await admin('GET', `/v1/mesh/events?address=${enc(address)}&event_type=${eventType}&limit=500`)
      expect(res.status).toBe(200)
      return res.body.events
    },
    async audit(query: string): Promise<any[]> {
      const res = await admin('GET', `/v1/audit/events?limit=500&${query}`)
      expect(res.status).toBe(200)
      return res.body.entries
    },
    async sendN(key: string, to: string, n: number, intentType?: string): Promise<number[]> {
      const out: number[] = []
      for (let i = 0; i < n; i++) out.push((await c.send(key, to, intentType)).status)
      return out
    },
    resume: (address: string) => admin('POST', `/v1/mesh/agents/${enc(address)}/resume`, { reason: 'fixed' }),
    kill: (address: string) => admin('POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'manual' }),
    heartbeat: (key: string, costUsd: number) =>
      api(gw.url, key, 'POST', '/v1/mesh/heartbeat', { metrics: { cost_usd: costUsd } }, { 'x-instance-id': 'i-1' }),
  }
  return c
}
type Client = ReturnType<typeof client>

/** Each block gets its own gateway on its own ManualClock, on the given store engine. */
function gatewayFixture(engine: Engine) {
  const fx = {} as { gw: TestGateway; clock: ManualClock; c: Client }
  beforeAll(async () => {
    fx.clock = new ManualClock(START)
    fx.gw = await startTestGateway({ engine, clock: fx.clock })
    fx.c = client(fx.gw)
  })
  afterAll(async () => {
    await fx.gw?.close()
  })
  return fx
}

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(a) action policies: allowlists and denylists with globs (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('a denied send is 403 policy_denied naming the policy, and nothing is stored', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['deploy.*'] })
    expect(pol).toMatchObject({ kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['deploy.*'], version: 1, enabled: true })

    const before = await c.counters(S, R)
    const ok = await c.send(sKey, R, 'deploy.api')
    expect(ok.status, JSON.stringify(ok.body)).toBe(200)
    const afterAccept = await c.counters(S, R)
    expect(afterAccept).not.toEqual(before) // the counters seen by evaluate do move on an accept

    for (const type of ['deploy.api.v1', 'deploy', 'build.api', 'deployx.api']) {
      const res = await c.send(sKey, R, type)
      expectError(res, 403, 'policy_denied')
      expect(res.body.error.policy_id).toBe(pol.policy_id)
      expect(res.body.error.details.policy_id).toBe(pol.policy_id)
      expect(res.body.error.message).toContain(pol.policy_id)
    }
    // Nothing stored: one intent sent, one received, counters as after the one accept.
    expect(await c.intents(S, 'sent')).toHaveLength(1)
    expect(await c.intents(R, 'received')).toHaveLength(1)
    expect(await c.counters(S, R)).toEqual(afterAccept)
    expect((await c.agent(S)).intents_period).toBe(1)

    // A denied send to a never-seen address does not even register that address.
    const ghost = addr('ghost')
    expectError(await c.send(sKey, ghost, 'build.x'), 403, 'policy_denied')
    expectError(await c.admin('GET', `/v1/mesh/agents/${enc(ghost)}`), 404, 'not_found')
  })

  it('`*` is exactly one segment and `**` one or more, on send and receive', async () => {
    const { c, gw } = fx
    const cases: { pattern: string; match: string[]; miss: string[] }[] = [
      { pattern: 'deploy.*', match: ['deploy.api', 'deploy.a_1'], miss: ['deploy.api.v1', 'deploy', 'deployx.api', 'xdeploy.api', 'a.deploy.api'] },
      { pattern: 'deploy.**', match: ['deploy.api', 'deploy.api.v1', 'deploy.a.b.c.d'], miss: ['deploy', 'deploy_x.api', 'a.deploy.api'] },
      { pattern: '*.v1', match: ['a.v1', 'deploy.v1'], miss: ['a.b.v1', 'v1', 'a.v2'] },
      { pattern: '**.v1', match: ['a.v1', 'a.b.v1', 'a.b.c.v1'], miss: ['v1', 'a.v1.x'] },
      { pattern: 'a.*.z', match: ['a.b.z'], miss: ['a.z', 'a.b.c.z', 'a.b.z.z'] },
      { pattern: 'a.**.z', match: ['a.b.z', 'a.b.c.z'], miss: ['a.z', 'a.b.c'] },
      { pattern: '*', match: ['a', 'deploy'], miss: ['a.b'] },
      { pattern: '**', match: ['a', 'a.b', 'a.b.c.d'], miss: [] },
      { pattern: 'deploy.api', match: ['deploy.api'], miss: ['deploy.api.v1', 'deploy', 'deploy.apix'] },
      { pattern: 'a_b.c1', match: ['a_b.c1'], miss: ['axb.c1', 'a_b.c12'] },
    ]
    const peer = addr('peer')
    await agentKey(gw, peer)
    for (const { pattern, match, miss } of cases) {
      // Send allowlist on one agent, receive allowlist on another: the same glob decides both.
      const sender = addr('glob-send')
      const recipient = addr('glob-recv')
      await agentKey(gw, sender)
      await agentKey(gw, recipient)
      const sendPol = await c.policy(sender, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: [pattern] })
      const recvPol = await c.policy(recipient, { kind: 'action', direction: 'receive', mode: 'allowlist', patterns: [pattern] })
      for (const type of match) {
        expect((await c.evaluate(sender, peer, type)).body.decision, `${pattern} should match ${type} (send)`).toBe('allow')
        expect((await c.evaluate(peer, recipient, type)).body.decision, `${pattern} should match ${type} (receive)`).toBe('allow')
      }
      for (const type of miss) {
        const s = await c.evaluate(sender, peer, type)
        expect(s.body, `${pattern} should not match ${type} (send)`).toMatchObject({ decision: 'deny', policy_id: sendPol.policy_id })
        const r = await c.evaluate(peer, recipient, type)
        expect(r.body, `${pattern} should not match ${type} (receive)`).toMatchObject({ decision: 'deny', policy_id: recvPol.policy_id })
      }
    }
  })

  it('a send allowlist with ** and a literal: real sends follow the evaluation', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['deploy.**', 'status.ping'] })
    expect((await c.send(sKey, R, 'deploy.api')).status).toBe(200)
    expect((await c.send(sKey, R, 'deploy.api.v1')).status).toBe(200)
    expect((await c.send(sKey, R, 'status.ping')).status).toBe(200)
    for (const type of ['deploy', 'status.ping.v1', 'status']) {
      const res = await c.send(sKey, R, type)
      expectError(res, 403, 'policy_denied')
      expect(res.body.error.policy_id).toBe(pol.policy_id)
    }
    expect(await c.intents(S, 'sent')).toHaveLength(3)
  })

  it('a send denylist blocks only what matches', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.**', 'secrets.*'] })
    for (const type of ['deploy.x', 'deploy.x.y', 'secrets.read']) {
      const res = await c.send(sKey, R, type)
      expectError(res, 403, 'policy_denied')
      expect(res.body.error.details.policy_id).toBe(pol.policy_id)
    }
    for (const type of ['secrets.read.all', 'build.x', 'deploy', 'secrets']) {
      expect((await c.send(sKey, R, type)).status, type).toBe(200)
    }
    expect(await c.intents(S, 'sent')).toHaveLength(4)
  })

  it("receive policies are the recipient's: any sender is held to them, and only towards that recipient", async () => {
    const { c, gw } = fx
    const A = addr('a')
    const B = addr('b')
    const R = addr('guarded')
    const D = addr('denying')
    const O = addr('open')
    const aKey = await agentKey(gw, A)
    const bKey = await agentKey(gw, B)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, D)
    await agentKey(gw, O)
    const allow = await c.policy(R, { kind: 'action', direction: 'receive', mode: 'allowlist', patterns: ['ops.*'] })
    const deny = await c.policy(D, { kind: 'action', direction: 'receive', mode: 'denylist', patterns: ['deploy.**'] })
    expect((await c.send(aKey, R, 'ops.restart')).status).toBe(200)
    expect((await c.send(bKey, R, 'ops.status')).status).toBe(200)
    for (const [key, type] of [[aKey, 'deploy.x'], [bKey, 'ops.restart.now']] as const) {
      const res = await c.send(key, R, type)
      expectError(res, 403, 'policy_denied')
      expect(res.body.error.policy_id).toBe(allow.policy_id)
    }
    const denied = await c.send(aKey, D, 'deploy.x.y')
    expectError(denied, 403, 'policy_denied')
    expect(denied.body.error.details.policy_id).toBe(deny.policy_id)
    expect((await c.send(aKey, D, 'ops.restart')).status).toBe(200)
    // The recipient's receive policy does not restrict what the recipient itself sends,
    // nor what its senders send elsewhere.
    expect((await c.send(rKey, O, 'deploy.x')).status).toBe(200)
    expect((await c.send(aKey, O, 'deploy.x')).status).toBe(200)
    expect(await c.intents(R, 'received')).toHaveLength(2)
    expect(await c.intents(D, 'received')).toHaveLength(1)
  })

  it('precedence: agent_killed before policy_denied before 429', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'block' })
    const deny = await c.policy(S, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['secrets.**'] })
    expect((await c.send(sKey, R)).status).toBe(200)
    expectError(await c.send(sKey, R), 429, 'rate_limited')
    const denied = await c.send(sKey, R, 'secrets.read')
    expectError(denied, 403, 'policy_denied')
    expect(denied.body.error.policy_id).toBe(deny.policy_id)
    expect((await c.kill(S)).status).toBe(200)
    expectError(await c.send(sKey, R, 'secrets.read'), 403, 'agent_killed')
  })

  it('invalid patterns are 422 naming patterns.<i> and quoting the pattern; nothing is created', async () => {
    const { c, gw } = fx
    const A = addr('patterns')
    await agentKey(gw, A)
    const long = `${'a'.repeat(100)}.${'b'.repeat(100)}.${'c'.repeat(56)}` // 258 characters
    const bad = ['de*ploy', 'a..b', 'A.b', '**x', 'a'.repeat(257), long, '', '.a', 'a.', 'a.b-c', 'a.***', 'a b', 'deploy.*x', 'é.a']
    for (const pattern of bad) {
      for (const index of [0, 1]) {
        const patterns = index === 0 ? [pattern] : ['ok.*', pattern]
        const res = await c.createPolicy(A, { kind: 'action', direction: 'send', mode: 'allowlist', patterns })
        expectInvalid(res, `patterns.${index}`)
        expect(res.body.error.message).toContain(`"${pattern.slice(0, 80)}"`)
      }
    }
    for (const [patterns, field] of [
      [[42], 'patterns.0'],
      [['ok', null], 'patterns.1'],
      ['deploy.*', 'patterns'],
      [[], 'patterns'],
    ] as const) {
      expectInvalid(await c.createPolicy(A, { kind: 'action', direction: 'send', mode: 'allowlist', patterns }), field)
    }
    expect(await c.listPolicies(A)).toEqual([])
    // The limits themselves are accepted: exactly 256 characters, and whole-segment globs.
    const max = `${'a'.repeat(100)}.${'b'.repeat(100)}.${'c'.repeat(54)}`
    expect(max).toHaveLength(256)
    const okPatterns = [max, '*', '**', '**.v1', 'a.*.b.**', 'x_1.y_2']
    const ok = await c.createPolicy(A, { kind: 'action', direction: 'send', mode: 'denylist', patterns: okPatterns })
    expect(ok.status, JSON.stringify(ok.body)).toBe(200)
    expect(ok.body.policy.patterns).toEqual(okPatterns)
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(b) rate policies (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('max_per_hour: the (N+1)th send gets 429 rate_limited with Retry-After and X-RateLimit-*', async () => {
    const { c, gw, clock } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 5, on_breach: 'block' })
    expect(pol).toMatchObject({ kind: 'rate', direction: 'send', max_per_hour: 5, on_breach: 'block', version: 1 })
    expect(await c.sendN(sKey, R, 5)).toEqual([200, 200, 200, 200, 200])
    for (let i = 0; i < 3; i++) {
      const res = await c.send(sKey, R)
      expectError(res, 429, 'rate_limited')
      expect(res.body.error.details.policy_id).toBe(pol.policy_id)
      expect(res.body.error.details.auto_killed).toBeUndefined()
      const retryAfter = Number(res.headers.get('retry-after'))
      expect(Number.isInteger(retryAfter)).toBe(true)
      expect(retryAfter).toBeGreaterThan(0)
      expect(retryAfter).toBeLessThanOrEqual(3600)
      expect(retryAfter).toBe(toWindowEnd(clock.now(), HOUR_MS)) // to the end of the UTC hour
      expect(res.headers.get('x-ratelimit-limit')).toBe('5')
      expect(res.headers.get('x-ratelimit-remaining')).toBe('0')
      expect(Number(res.headers.get('x-ratelimit-reset'))).toBe(toWindowEnd(clock.now(), HOUR_MS))
    }
    expect(await c.intents(S, 'sent')).toHaveLength(5)
    expect(await c.intents(R, 'received')).toHaveLength(5)
    const breached = await pollUntil(async () => {
      const e = await c.meshEvents(S, 'policy.breached')
      return e.length > 0 ? e : null
    })
    expect(breached[0].details.policy_id).toBe(pol.policy_id)
    expect((await c.agent(S)).health_status).not.toBe('killed') // block never kills
    // Another sender to the same recipient is not limited by S's policy.
    const other = addr('other')
    const oKey = await agentKey(gw, other)
    expect((await c.send(oKey, R)).status).toBe(200)
  })

  it('max_per_day: Retry-After is capped at 3600 while X-RateLimit-Reset is the time to the day end', async () => {
    const { c, gw, clock } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'rate', direction: 'send', max_per_day: 3, on_breach: 'block' })
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 200])
    const res = await c.send(sKey, R)
    expectError(res, 429, 'rate_limited')
    expect(res.body.error.details.policy_id).toBe(pol.policy_id)
    expect(res.headers.get('retry-after')).toBe('3600')
    expect(res.headers.get('x-ratelimit-limit')).toBe('3')
    expect(res.headers.get('x-ratelimit-remaining')).toBe('0')
    expect(Number(res.headers.get('x-ratelimit-reset'))).toBe(toWindowEnd(clock.now(), DAY_MS))
  })

  it('a receive limit counts what the agent receives, from any sender, and not what it sends', async () => {
    const { c, gw } = fx
    const R = addr('recipient')
    const A = addr('a')
    const B = addr('b')
    const O = addr('other')
    const rKey = await agentKey(gw, R)
    const aKey = await agentKey(gw, A)
    const bKey = await agentKey(gw, B)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'rate', direction: 'receive', max_per_hour: 3, on_breach: 'block' })
    // R's own sends do not count against its receive limit.
    expect(await c.sendN(rKey, O, 5)).toEqual([200, 200, 200, 200, 200])
    expect((await c.send(aKey, R)).status).toBe(200)
    expect((await c.send(bKey, R)).status).toBe(200)
    expect((await c.send(aKey, R)).status).toBe(200)
    for (const key of [aKey, bKey]) {
      const res = await c.send(key, R)
      expectError(res, 429, 'rate_limited')
      expect(res.body.error.details.policy_id).toBe(pol.policy_id)
      expect(res.headers.get('x-ratelimit-limit')).toBe('3')
      expect(res.headers.get('retry-after')).not.toBeNull()
    }
    expect(await c.intents(R, 'received')).toHaveLength(3)
    // The senders themselves are not limited elsewhere.
    expect((await c.send(aKey, O)).status).toBe(200)
  })

  it("all-or-nothing: a send refused by the recipient's limit is not counted for the sender", async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const O = addr('other')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    await agentKey(gw, O)
    await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 3, on_breach: 'block' })
    await c.policy(R, { kind: 'rate', direction: 'receive', max_per_hour: 1, on_breach: 'block' })
    expect((await c.send(sKey, R)).status).toBe(200)
    const counters = await c.counters(S, O)
    for (let i = 0; i < 5; i++) expectError(await c.send(sKey, R), 429, 'rate_limited')
    expect(await c.counters(S, O)).toEqual(counters)
    // S still has its 2 remaining sends of the hour.
    expect(await c.sendN(sKey, O, 3)).toEqual([200, 200, 429])
  })

  it('on_breach: kill — the breaching send gets 429 auto_killed, then every send is 403; audited and evented', async () => {
    const { c, gw } = fx
    const S = addr('rogue')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    const rKey = await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 3, on_breach: 'kill' })
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 200])
    const breach = await c.send(sKey, R)
    expectError(breach, 429, 'rate_limited')
    expect(breach.body.error.details).toMatchObject({ policy_id: pol.policy_id, auto_killed: true })
    expect(breach.headers.get('retry-after')).not.toBeNull()
    for (let i = 0; i < 3; i++) expectError(await c.send(sKey, R), 403, 'agent_killed')
    expectError(await c.send(rKey, S), 403, 'agent_killed') // nothing to it either
    expect(await c.intents(S, 'sent')).toHaveLength(3)
    expect((await c.agent(S)).health_status).toBe('killed')
    expect((await c.agent(R)).health_status).not.toBe('killed')

    const entries = await pollUntil(
      async () => {
        const e = await c.audit(`action_prefix=agent.auto_kill&target=${enc(S)}`)
        return e.length > 0 ? e : null
      },
      { what: 'the agent.auto_kill audit entry' },
    )
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({ action: 'agent.auto_kill', actor: `policy:${pol.policy_id}`, target: S })
    const events = await pollUntil(
      async () => {
        const e = await c.meshEvents(S, 'agent.auto_killed')
        return e.length > 0 ? e : null
      },
      { what: 'the agent.auto_killed mesh event' },
    )
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ address: S, event_type: 'agent.auto_killed', actor_id: `policy:${pol.policy_id}` })
    expect(events[0].details.policy_id).toBe(pol.policy_id)
    expect((await c.admin('GET', '/v1/audit/verify')).body).toMatchObject({ valid: true, first_broken_seq: null })

    // Resume: the window's count is the baseline, so the agent is not re-killed by it...
    expect((await c.resume(S)).status).toBe(200)
    expect((await c.agent(S)).health_status).not.toBe('killed')
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 200])
    // ...but the policy still holds: the next breach (counted from the resume) kills again.
    const again = await c.send(sKey, R)
    expectError(again, 429, 'rate_limited')
    expect(again.body.error.details).toMatchObject({ policy_id: pol.policy_id, auto_killed: true })
    expectError(await c.send(sKey, R), 403, 'agent_killed')
    expect(await c.intents(S, 'sent')).toHaveLength(6)
    expect(await c.audit(`action_prefix=agent.auto_kill&target=${enc(S)}`)).toHaveLength(2)
  })

  it('a manual kill and resume resets nothing: a blocked agent stays blocked in its window', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const pol = await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'block' })
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 429])
    expect((await c.kill(S)).status).toBe(200)
    expect((await c.resume(S)).status).toBe(200)
    const res = await c.send(sKey, R)
    expectError(res, 429, 'rate_limited')
    expect(res.body.error.details.policy_id).toBe(pol.policy_id)
  })

  it("reply_to completions count as the resolver's sends, under its limits; the resolve itself still succeeds", async () => {
    const { c, gw } = fx
    const A = addr('asker')
    const R = addr('resolver')
    const O = addr('other')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'block' })
    const ask = async () => {
      const sent = await api(gw.url, aKey, 'POST', '/v1/intents', { intent_type: 'work.item', to_agent: R, payload: {}, reply_to: A })
      expect(sent.status).toBe(200)
      return api(gw.url, rKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED', result: { ok: 1 } })
    }
    const first = await ask()
    expect(first.status).toBe(200)
    expect(first.body.completion_delivery).toMatchObject({ delivered: true, reply_to: A })
    expect((await c.intents(R, 'sent')).map((i) => i.intent_type)).toEqual(['intent.completion.v1'])
    expect((await c.send(rKey, O)).status).toBe(200) // R's second send of the hour
    const second = await ask()
    expect(second.status).toBe(200)
    expect(second.body.intent.status).toBe('COMPLETED')
    expect(second.body.completion_delivery).toMatchObject({ delivered: false, reply_to: A, reason: 'rate_limited' })
    expect(await c.intents(R, 'sent')).toHaveLength(2)
    expect((await c.evaluate(R, O)).body).toMatchObject({ decision: 'rate_limited', policy_id: pol.policy_id })
  })

  // KNOWN BUG (reported): the completion is refused (429) but the kill policy is not applied to
  // it; the resolver's next ordinary send becomes "the breaching intent" instead. `it.fails`
  // keeps the suite green while the bug stands; drop `.fails` once it is fixed.
  it('a reply_to completion that breaches an on_breach: kill limit auto-kills the resolver', async () => {
    const { c, gw } = fx
    const A = addr('asker')
    const R = addr('resolver')
    const O = addr('other')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'kill' })
    expect((await c.send(rKey, O)).status).toBe(200)
    const sent = await api(gw.url, aKey, 'POST', '/v1/intents', { intent_type: 'work.item', to_agent: R, payload: {}, reply_to: A })
    expect(sent.status).toBe(200)
    const resolved = await api(gw.url, rKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED' })
    expect(resolved.status).toBe(200)
    expect(resolved.body.completion_delivery).toMatchObject({ delivered: false, reason: 'rate_limited' })
    // The completion was the breaching send of R: the kill policy applies to it like to any send.
    const after = await c.send(rKey, O)
    expect(after.status, `R's next send: ${JSON.stringify(after.body)}`).toBe(403)
    expectError(after, 403, 'agent_killed')
    const entries = await c.audit(`action_prefix=agent.auto_kill&target=${enc(R)}`)
    expect(entries.map((e) => e.actor)).toEqual([`policy:${pol.policy_id}`])
  })

  it('an idempotent replay at the limit returns the original 200 and counts nothing', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'block' })
    const body = { intent_type: 'deploy.service.v1', to_agent: R, payload: { n: 1 } }
    const first = await api(gw.url, sKey, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-1' })
    expect(first.status).toBe(200)
    expect((await c.send(sKey, R)).status).toBe(200)
    const counters = await c.counters(S, R)
    const replay = await api(gw.url, sKey, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-1' })
    expect(replay.status).toBe(200)
    expect(replay.body.intent_id).toBe(first.body.intent_id)
    expectError(await api(gw.url, sKey, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-2' }), 429, 'rate_limited')
    expect(await c.counters(S, R)).toEqual(counters)
    expect(await c.intents(S, 'sent')).toHaveLength(2)
  })

  it("a receive-direction auto-kill kills the policy's owner (the recipient), not the sender", async () => {
    const { c, gw } = fx
    const A = addr('sender')
    const R = addr('flooded')
    const O = addr('other')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'rate', direction: 'receive', max_per_hour: 2, on_breach: 'kill' })
    expect(await c.sendN(aKey, R, 2)).toEqual([200, 200])
    const breach = await c.send(aKey, R)
    expectError(breach, 429, 'rate_limited')
    expect(breach.body.error.details).toMatchObject({ policy_id: pol.policy_id, auto_killed: true })
    expect((await c.agent(R)).health_status).toBe('killed')
    expect((await c.agent(A)).health_status).not.toBe('killed')
    expectError(await c.send(aKey, R), 403, 'agent_killed')
    expectError(await c.send(rKey, O), 403, 'agent_killed')
    expect((await c.send(aKey, O)).status).toBe(200) // the sender goes on elsewhere
    const entries = await pollUntil(async () => {
      const e = await c.audit(`action_prefix=agent.auto_kill&target=${enc(R)}`)
      return e.length > 0 ? e : null
    })
    expect(entries[0]).toMatchObject({ actor: `policy:${pol.policy_id}`, target: R })
    expect(await c.audit(`action_prefix=agent.auto_kill&target=${enc(A)}`)).toEqual([])
    const events = await pollUntil(async () => {
      const e = await c.meshEvents(R, 'agent.auto_killed')
      return e.length > 0 ? e : null
    })
    expect(events).toHaveLength(1)
    expect(await c.meshEvents(A, 'agent.auto_killed')).toEqual([])
    // After resume the recipient is not re-killed by this window's count.
    expect((await c.resume(R)).status).toBe(200)
    expect((await c.send(aKey, R)).status).toBe(200)
    expect((await c.send(rKey, O)).status).toBe(200)
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(b) rate windows on a moving clock (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('the next UTC hour resets an hourly limit, the next UTC day a daily one', async () => {
    const { c, gw, clock } = fx
    const S = addr('hourly')
    const D = addr('daily')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    const dKey = await agentKey(gw, D)
    await agentKey(gw, R)
    await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'block' })
    await c.policy(D, { kind: 'rate', direction: 'send', max_per_day: 2, on_breach: 'block' })
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 429])
    expect(await c.sendN(dKey, R, 3)).toEqual([200, 200, 429])

    clock.set(START - (START % HOUR_MS) + HOUR_MS - 1000) // 10:59:59: still the same hour
    const last = await c.send(sKey, R)
    expectError(last, 429, 'rate_limited')
    expect(last.headers.get('retry-after')).toBe('1')

    clock.set(START - (START % HOUR_MS) + HOUR_MS + 1000) // 11:00:01: a new hour
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 429])
    expect(await c.sendN(dKey, R, 1)).toEqual([429]) // the day is the same
    const retry = (await c.send(sKey, R)).headers.get('retry-after')
    expect(retry).toBe(String(toWindowEnd(clock.now(), HOUR_MS)))

    clock.set(START - (START % DAY_MS) + DAY_MS + 1000) // 00:00:01 the next day
    expect(await c.sendN(dKey, R, 3)).toEqual([200, 200, 429])
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 429])
    expect(await c.intents(S, 'sent')).toHaveLength(6)
    expect(await c.intents(D, 'sent')).toHaveLength(4)
  })

  it('a receive limit also resets with the hour', async () => {
    const { c, gw, clock } = fx
    const R = addr('recipient')
    const A = addr('a')
    await agentKey(gw, R)
    const aKey = await agentKey(gw, A)
    await c.policy(R, { kind: 'rate', direction: 'receive', max_per_hour: 2, on_breach: 'block' })
    expect(await c.sendN(aKey, R, 3)).toEqual([200, 200, 429])
    clock.advance(HOUR_MS)
    expect(await c.sendN(aKey, R, 3)).toEqual([200, 200, 429])
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(c) cost policies (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  /** A sends one intent to R; R resolves it with `cost` (returns the resolve response). */
  async function resolveWithCost(c: Client, aKey: string, R: string, rKey: string, cost: number) {
    const sent = await c.send(aKey, R, 'work.item')
    expect(sent.status, JSON.stringify(sent.body)).toBe(200)
    return api(fx.gw.url, rKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED', cost_usd: cost })
  }

  async function thresholds(c: Client, address: string): Promise<number[]> {
    return (await c.meshEvents(address, 'budget.threshold')).map((e: any) => e.details.percent).sort((x: number, y: number) => x - y)
  }

  it('cost_usd on resolve counts for the resolving agent, not the sender', async () => {
    const { c, gw } = fx
    const A = addr('client')
    const R = addr('worker')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    const res = await resolveWithCost(c, aKey, R, rKey, 0.25)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.intent.cost_usd).toBe(0.25)
    expect((await resolveWithCost(c, aKey, R, rKey, 0.5)).status).toBe(200)
    expect((await c.agent(R)).cost_period).toBeCloseTo(0.75, 9)
    expect((await c.agent(A)).cost_period).toBe(0)
  })

  it('thresholds fire once each per day; at the ceiling `block` refuses the next send with 429 budget_exceeded', async () => {
    const { c, gw, clock } = fx
    const A = addr('client')
    const R = addr('spender')
    const O = addr('other')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'block', alert_at_percent: [50, 80, 100] })
    expect(pol).toMatchObject({ kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'block', alert_at_percent: [50, 80, 100], version: 1 })

    // 25 % → 50 % → 62.5 % → 87.5 % → 100 % → 112.5 %: 50 and 80 are crossed by several resolves.
    const steps: [number, number[]][] = [
      [0.25, []],
      [0.25, [50]],
      [0.125, [50]],
      [0.25, [50, 80]],
    ]
    for (const [cost, expected] of steps) {
      expect((await resolveWithCost(c, aKey, R, rKey, cost)).status).toBe(200)
      expect(await thresholds(c, R)).toEqual(expected)
      expect((await c.send(rKey, O)).status).toBe(200) // under the ceiling R may still send
    }
    expect((await resolveWithCost(c, aKey, R, rKey, 0.125)).status).toBe(200)
    expect(await thresholds(c, R)).toEqual([50, 80, 100])
    const events = await c.meshEvents(R, 'budget.threshold')
    for (const e of events) expect(e.details.policy_id).toBe(pol.policy_id)

    const blocked = await c.send(rKey, O)
    expectError(blocked, 429, 'budget_exceeded')
    expect(blocked.body.error.details.policy_id).toBe(pol.policy_id)
    expect(blocked.body.error.details.auto_killed).toBeUndefined()
    const retryAfter = Number(blocked.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThan(0)
    expect(retryAfter).toBeLessThanOrEqual(3600)
    expect(blocked.headers.get('x-ratelimit-limit')).not.toBeNull()
    expect(blocked.headers.get('x-ratelimit-remaining')).not.toBeNull()
    expect(blocked.headers.get('x-ratelimit-reset')).not.toBeNull()
    expect((await c.evaluate(R, O)).body).toMatchObject({ decision: 'budget_exceeded', policy_id: pol.policy_id })

    // Crossing again the same day emits nothing new; R stays blocked (not killed) and can still receive.
    expect((await resolveWithCost(c, aKey, R, rKey, 0.125)).status).toBe(200)
    expect(await thresholds(c, R)).toEqual([50, 80, 100])
    expectError(await c.send(rKey, O), 429, 'budget_exceeded')
    expect((await c.agent(R)).health_status).not.toBe('killed')
    expect((await c.send(aKey, R)).status).toBe(200)

    // The next UTC day: the budget is fresh, and thresholds may fire again (once each).
    clock.set(START - (START % DAY_MS) + DAY_MS + 60_000)
    expect((await c.send(rKey, O)).status).toBe(200)
    expect((await resolveWithCost(c, aKey, R, rKey, 0.5)).status).toBe(200)
    expect((await resolveWithCost(c, aKey, R, rKey, 0.125)).status).toBe(200)
    expect(await thresholds(c, R)).toEqual([50, 50, 80, 100])
  })

  it('on_breach: kill — the resolve that crosses the ceiling returns 200 and the resolver is killed', async () => {
    const { c, gw } = fx
    const A = addr('client')
    const R = addr('costly')
    const O = addr('other')
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    await agentKey(gw, O)
    const pol = await c.policy(R, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'kill' })
    expect(pol.alert_at_percent).toEqual([50, 80, 100]) // the default
    expect((await resolveWithCost(c, aKey, R, rKey, 0.5)).status).toBe(200)
    expect((await c.send(rKey, O)).status).toBe(200)
    const crossing = await resolveWithCost(c, aKey, R, rKey, 0.75)
    expect(crossing.status, JSON.stringify(crossing.body)).toBe(200)
    expect(crossing.body.intent.status).toBe('COMPLETED')
    expectError(await c.send(rKey, O), 403, 'agent_killed')
    expectError(await c.send(aKey, R), 403, 'agent_killed')
    expect((await c.agent(R)).health_status).toBe('killed')
    expect((await c.agent(A)).health_status).not.toBe('killed')
    const entries = await pollUntil(async () => {
      const e = await c.audit(`action_prefix=agent.auto_kill&target=${enc(R)}`)
      return e.length > 0 ? e : null
    })
    expect(entries).toHaveLength(1)
    expect(entries[0]).toMatchObject({ action: 'agent.auto_kill', actor: `policy:${pol.policy_id}` })
    const events = await pollUntil(async () => {
      const e = await c.meshEvents(R, 'agent.auto_killed')
      return e.length > 0 ? e : null
    })
    expect(events[0].details.policy_id).toBe(pol.policy_id)
    // Resume: the day's spend is the baseline, so R is not re-killed by it and may send again.
    expect((await c.resume(R)).status).toBe(200)
    expect((await c.send(rKey, O)).status).toBe(200)
  })

  it('heartbeat metrics.cost_usd deltas count: thresholds, block, and kill (answered "killed")', async () => {
    const { c, gw } = fx
    const H = addr('beating')
    const K = addr('beating-kill')
    const O = addr('other')
    const hKey = await agentKey(gw, H)
    const kKey = await agentKey(gw, K)
    await agentKey(gw, O)
    const pol = await c.policy(H, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'block' })
    const hb1 = await c.heartbeat(hKey, 0.6)
    expect(hb1.status, JSON.stringify(hb1.body)).toBe(200)
    expect((await c.agent(H)).cost_period).toBeCloseTo(0.6, 9)
    expect(await thresholds(c, H)).toEqual([50])
    expect((await c.send(hKey, O)).status).toBe(200)
    expect((await c.heartbeat(hKey, 0.5)).status).toBe(200)
    expect((await c.agent(H)).cost_period).toBeCloseTo(1.1, 9)
    expect(await thresholds(c, H)).toEqual([50, 80, 100])
    const blocked = await c.send(hKey, O)
    expectError(blocked, 429, 'budget_exceeded')
    expect(blocked.body.error.details.policy_id).toBe(pol.policy_id)
    expect((await c.heartbeat(hKey, 0)).body.health_status).not.toBe('killed')

    const kPol = await c.policy(K, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'kill' })
    expect((await c.heartbeat(kKey, 0.4)).body.health_status).not.toBe('killed')
    const hb = await c.heartbeat(kKey, 0.7)
    expect(hb.status).toBe(200)
    expect(hb.body.health_status).toBe('killed')
    expectError(await c.send(kKey, O), 403, 'agent_killed')
    const entries = await pollUntil(async () => {
      const e = await c.audit(`action_prefix=agent.auto_kill&target=${enc(K)}`)
      return e.length > 0 ? e : null
    })
    expect(entries[0].actor).toBe(`policy:${kPol.policy_id}`)
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(d) versioned changes (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('create is version 1; PUT needs the current version (If-Match 1 or "1", or body version); stale is 409', async () => {
    const { c, gw } = fx
    const A = addr('versioned')
    await agentKey(gw, A)
    const body = { kind: 'rate', direction: 'send', max_per_hour: 10, on_breach: 'block' }
    const created = await c.createPolicy(A, body)
    expect(created.status).toBe(200)
    expect(created.body.ok).toBe(true)
    const p = created.body.policy
    expect(p).toMatchObject({ ...body, version: 1, enabled: true, address_id: (await c.agent(A)).address_id })
    expect(p.policy_id).toMatch(/^pol_/)
    expect(new Date(p.created_at).toISOString()).toBe(p.created_at)
    expect(p.updated_at).toBe(p.created_at)
    const path = `/v1/policies/${p.policy_id}`
    expect((await c.admin('GET', path)).body.policy).toEqual(p)

    const next = { ...body, max_per_hour: 20 }
    expectError(await c.admin('PUT', path, next), 409, 'conflict')
    expectError(await c.admin('PUT', path, next, { 'if-match': '7' }), 409, 'conflict')
    expectError(await c.admin('PUT', path, next, { 'if-match': 'soon' }), 400, 'invalid_request')
    expect((await c.admin('GET', path)).body.policy.version).toBe(1)

    const v2 = await c.admin('PUT', path, next, { 'if-match': '1' })
    expect(v2.status, JSON.stringify(v2.body)).toBe(200)
    expect(v2.body.policy).toMatchObject({ ...next, version: 2, policy_id: p.policy_id, created_at: p.created_at })
    expectError(await c.admin('PUT', path, next, { 'if-match': '1' }), 409, 'conflict') // now stale
    const v3 = await c.admin('PUT', path, { ...next, max_per_hour: 30 }, { 'if-match': '"2"' })
    expect(v3.body.policy).toMatchObject({ max_per_hour: 30, version: 3 })
    const v4 = await c.admin('PUT', path, { ...next, max_per_hour: 40, version: 3 })
    expect(v4.status, JSON.stringify(v4.body)).toBe(200)
    expect(v4.body.policy).toMatchObject({ max_per_hour: 40, version: 4 })
    expectError(await c.admin('PUT', path, { ...next, version: 3 }), 409, 'conflict')

    // A second policy: If-Match: "1" (quoted) also works from version 1.
    const q = await c.policy(A, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['a.*'] })
    const q2 = await c.admin('PUT', `/v1/policies/${q.policy_id}`, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['b.*'] }, { 'if-match': '"1"' })
    expect(q2.status).toBe(200)
    expect(q2.body.policy).toMatchObject({ version: 2, patterns: ['b.*'] })

    // PUT replaces the policy whole: a field left out is gone.
    const v5 = await c.admin('PUT', path, { kind: 'rate', direction: 'send', max_per_day: 100, on_breach: 'kill' }, { 'if-match': '4' })
    expect(v5.status).toBe(200)
    expect(v5.body.policy).toMatchObject({ max_per_day: 100, on_breach: 'kill', version: 5 })
    expect(v5.body.policy).not.toHaveProperty('max_per_hour')
    expect((await c.listPolicies(A)).map((x) => x.policy_id)).toEqual([p.policy_id, q.policy_id])
    expect((await c.agent(A)).policies.map((x: any) => [x.policy_id, x.version])).toEqual([
      [p.policy_id, 5],
      [q.policy_id, 2],
    ])
  })

  it('the agent may be named by addr_ id, percent-encoded address or raw address', async () => {
    const { c, gw } = fx
    const A = addr('forms')
    await agentKey(gw, A)
    const id = (await c.agent(A)).address_id as string
    const body = { kind: 'rate', direction: 'send', max_per_hour: 5, on_breach: 'block' }
    const created: string[] = []
    for (const ref of [id, enc(A), A]) {
      const res = await c.admin('POST', `/v1/mesh/agents/${ref}/policies`, body)
      expect(res.status, ref).toBe(200)
      expect(res.body.policy.address_id).toBe(id)
      created.push(res.body.policy.policy_id)
      const list = await c.admin('GET', `/v1/mesh/agents/${ref}/policies`)
      expect(list.body.policies.map((p: any) => p.policy_id)).toEqual(created)
    }
  })

  it('kind cannot change (422), unknown policies are 404, and the write roles are enforced', async () => {
    const { c, gw } = fx
    const A = addr('kinds')
    const aKey = await agentKey(gw, A)
    const p = await c.policy(A, { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block' })
    const path = `/v1/policies/${p.policy_id}`
    const res = await c.admin('PUT', path, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'block' }, { 'if-match': '1' })
    expectInvalid(res, 'kind')
    expect((await c.admin('GET', path)).body.policy).toMatchObject({ kind: 'cost', version: 1 })

    expectError(await c.admin('GET', '/v1/policies/pol_doesnotexist'), 404, 'not_found')
    expectError(
      await c.admin('PUT', '/v1/policies/pol_doesnotexist', { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block' }, { 'if-match': '1' }),
      404,
      'not_found',
    )
    expectError(await c.admin('DELETE', '/v1/policies/pol_doesnotexist'), 404, 'not_found')
    const unknownAgent = addr('never-registered')
    expectError(await c.createPolicy(unknownAgent, { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block' }), 404, 'not_found')
    expectError(await c.admin('GET', `/v1/mesh/agents/${enc(unknownAgent)}`), 404, 'not_found') // not registered by it

    const viewer = (await c.admin('POST', '/v1/keys', { role: 'viewer' })).body.key as string
    const operator = (await c.admin('POST', '/v1/keys', { role: 'operator' })).body.key as string
    const body = { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block' }
    for (const key of [aKey, viewer]) {
      expectError(await api(gw.url, key, 'POST', `/v1/mesh/agents/${enc(A)}/policies`, body), 403, 'forbidden')
      expectError(await api(gw.url, key, 'PUT', path, body, { 'if-match': '1' }), 403, 'forbidden')
      expectError(await api(gw.url, key, 'DELETE', path), 403, 'forbidden')
    }
    expect((await api(gw.url, viewer, 'GET', path)).status).toBe(200)
    expectError(await api(gw.url, aKey, 'GET', path), 403, 'forbidden')
    expectError(await api(gw.url, null, 'GET', path), 401, 'unauthorized')
    const byOperator = await api(gw.url, operator, 'PUT', path, { ...body, max_cost_per_day_usd: 6 }, { 'if-match': '1' })
    expect(byOperator.status).toBe(200)
    expect(byOperator.body.policy.version).toBe(2)
  })

  it('a change takes effect on the next send (no stale cache); disabled and deleted policies do not apply', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const p = await c.policy(S, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['a.*'] })
    const path = `/v1/policies/${p.policy_id}`
    expect((await c.send(sKey, R, 'a.x')).status).toBe(200)
    expectError(await c.send(sKey, R, 'b.x'), 403, 'policy_denied')
    expect((await c.admin('PUT', path, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['b.*'] }, { 'if-match': '1' })).status).toBe(200)
    expect((await c.send(sKey, R, 'b.x')).status).toBe(200)
    expectError(await c.send(sKey, R, 'a.x'), 403, 'policy_denied')
    const off = await c.admin('PUT', path, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['b.*'], enabled: false }, { 'if-match': '2' })
    expect(off.body.policy).toMatchObject({ enabled: false, version: 3 })
    expect((await c.send(sKey, R, 'a.x')).status).toBe(200)
    const on = await c.admin('PUT', path, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['b.*'] }, { 'if-match': '3' })
    expect(on.body.policy).toMatchObject({ enabled: true, version: 4 })
    expectError(await c.send(sKey, R, 'a.x'), 403, 'policy_denied')
    expectError(await c.admin('DELETE', path, undefined, { 'if-match': '3' }), 409, 'conflict') // stale
    const del = await c.admin('DELETE', path)
    expect(del.status).toBe(200)
    expect(del.body.ok).toBe(true)
    expectError(await c.admin('GET', path), 404, 'not_found')
    expectError(await c.admin('DELETE', path), 404, 'not_found')
    expectError(await c.admin('PUT', path, { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['b.*'] }, { 'if-match': '4' }), 404, 'not_found')
    expect(await c.listPolicies(S)).toEqual([])
    expect((await c.send(sKey, R, 'a.x')).status).toBe(200)
  })

  it('every create, update and delete appends one audit entry with before/after, and a policy.changed event', async () => {
    const { c, gw } = fx
    const A = addr('audited')
    await agentKey(gw, A)
    const before = await c.audit('action_prefix=policy.')
    const p = await c.policy(A, { kind: 'rate', direction: 'receive', max_per_day: 50, on_breach: 'block' })
    const path = `/v1/policies/${p.policy_id}`
    expect((await c.admin('PUT', path, { kind: 'rate', direction: 'receive', max_per_day: 60, on_breach: 'block' }, { 'if-match': '1' })).status).toBe(200)
    expect((await c.admin('PUT', path, { kind: 'rate', direction: 'receive', max_per_day: 70, on_breach: 'kill' }, { 'if-match': '2' })).status).toBe(200)
    // Rejected changes are not audited.
    expectError(await c.admin('PUT', path, { kind: 'rate', direction: 'receive', max_per_day: 80, on_breach: 'kill' }, { 'if-match': '1' }), 409, 'conflict')
    expectInvalid(await c.admin('PUT', path, { kind: 'rate', direction: 'receive', max_per_day: -1, on_breach: 'kill' }, { 'if-match': '3' }), 'max_per_day')
    expect((await c.admin('DELETE', path)).status).toBe(200)

    const entries = await c.audit(`target=${p.policy_id}`)
    expect(entries.map((e) => e.action)).toEqual(['policy.create', 'policy.update', 'policy.update', 'policy.delete'])
    expect((await c.audit('action_prefix=policy.')).length).toBe(before.length + 4)
    for (const e of entries) {
      expect(e.actor).toMatch(/^key:/)
      expect(e.target).toBe(p.policy_id)
    }
    const [create, up1, up2, del] = entries
    expect(create.before).toBeNull()
    expect(create.after).toMatchObject({ policy_id: p.policy_id, kind: 'rate', max_per_day: 50, version: 1 })
    expect(up1.before).toMatchObject({ max_per_day: 50, version: 1 })
    expect(up1.after).toMatchObject({ max_per_day: 60, version: 2 })
    expect(up2.before).toMatchObject({ max_per_day: 60, version: 2 })
    expect(up2.after).toMatchObject({ max_per_day: 70, on_breach: 'kill', version: 3 })
    expect(del.before).toMatchObject({ max_per_day: 70, version: 3 })
    expect(del.after).toBeNull()
    const seqs = entries.map((e) => e.seq)
    expect([...seqs].sort((x, y) => x - y)).toEqual(seqs)
    expect((await c.admin('GET', '/v1/audit/verify')).body).toMatchObject({ valid: true, first_broken_seq: null })
    const events = await c.meshEvents(A, 'policy.changed')
    expect(events).toHaveLength(4)
    for (const e of events) expect(e.details.policy_id).toBe(p.policy_id)
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(e) dry run: POST /v1/policies/evaluate (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('returns {decision, policy_id, reason, counters} for allow, deny, rate_limited and budget_exceeded', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const B = addr('spender')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const bKey = await agentKey(gw, B)
    const allow = await c.evaluate(S, R, 'ops.ping')
    expect(allow.status).toBe(200)
    expect(allow.body).toMatchObject({ ok: true, decision: 'allow', policy_id: null, reason: expect.any(String) })
    expect(typeof allow.body.counters).toBe('object')

    const action = await c.policy(R, { kind: 'action', direction: 'receive', mode: 'allowlist', patterns: ['ops.**'] })
    const rate = await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'kill' })
    expect((await c.evaluate(S, R, 'ops.ping')).body).toMatchObject({ decision: 'allow', policy_id: null })
    const deny = await c.evaluate(S, R, 'deploy.x')
    expect(deny.body).toMatchObject({ decision: 'deny', policy_id: action.policy_id, reason: expect.any(String) })
    expect(deny.body.reason.length).toBeGreaterThan(0)
    expect(await c.sendN(sKey, R, 2, 'ops.ping')).toEqual([200, 200])
    const limited = await c.evaluate(S, R, 'ops.ping')
    expect(limited.body).toMatchObject({ decision: 'rate_limited', policy_id: rate.policy_id, reason: expect.any(String) })
    // Precedence is the same as for a send: the denial wins over the limit.
    expect((await c.evaluate(S, R, 'deploy.x')).body).toMatchObject({ decision: 'deny', policy_id: action.policy_id })

    const cost = await c.policy(B, { kind: 'cost', max_cost_per_day_usd: 0.5, on_breach: 'block' })
    expect((await c.heartbeat(bKey, 0.5)).status).toBe(200)
    const budget = await c.evaluate(B, R, 'ops.ping')
    expect(budget.body).toMatchObject({ decision: 'budget_exceeded', policy_id: cost.policy_id, reason: expect.any(String) })
    expectError(await c.send(bKey, R, 'ops.ping'), 429, 'budget_exceeded')
  })

  it('has no side effects: no counts, no intents, no kill, no audit, no events, no registration', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    await c.policy(S, { kind: 'rate', direction: 'send', max_per_hour: 3, on_breach: 'kill' })
    await c.policy(R, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'kill' })
    expect(await c.sendN(sKey, R, 3)).toEqual([200, 200, 200])
    const counters = await c.counters(S, R)
    const auditBefore = (await c.admin('GET', '/v1/audit/events?limit=500')).body.entries.length
    const eventsBefore = (await c.admin('GET', '/v1/mesh/events?limit=500')).body.events.length
    const ghost = addr('ghost')
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        i % 3 === 2 ? c.evaluate(ghost, S, 'ops.ping') : c.evaluate(S, i % 3 === 0 ? R : ghost, 'ops.ping'),
      ),
    )
    for (const [i, res] of results.entries()) {
      expect(res.status).toBe(200)
      expect(res.body.decision).toBe(i % 3 === 2 ? 'allow' : 'rate_limited')
    }
    expect(await c.counters(S, R)).toEqual(counters)
    expect(await c.intents(S, 'sent')).toHaveLength(3)
    expect(await c.intents(R, 'received')).toHaveLength(3)
    expect((await c.agent(S)).health_status).not.toBe('killed') // a rate_limited on_breach: kill is not enforced by a dry run
    expect((await c.admin('GET', '/v1/audit/events?limit=500')).body.entries.length).toBe(auditBefore)
    expect((await c.admin('GET', '/v1/mesh/events?limit=500')).body.events.length).toBe(eventsBefore)
    expectError(await c.admin('GET', `/v1/mesh/agents/${enc(ghost)}`), 404, 'not_found')
    // The real send still behaves as the dry run said (and does have its side effect).
    const real = await c.send(sKey, R)
    expectError(real, 429, 'rate_limited')
    expect(real.body.error.details.auto_killed).toBe(true)
  })

  it('roles and bad input: viewers may evaluate, agents may not; 422 names the field', async () => {
    const { c, gw } = fx
    const S = addr('sender')
    const R = addr('recipient')
    const sKey = await agentKey(gw, S)
    await agentKey(gw, R)
    const viewer = (await c.admin('POST', '/v1/keys', { role: 'viewer' })).body.key as string
    expect((await c.evaluate(S, R, 'ops.ping', viewer)).status).toBe(200)
    expectError(await c.evaluate(S, R, 'ops.ping', sKey), 403, 'forbidden')
    const post = (body: unknown) => c.admin('POST', '/v1/policies/evaluate', body)
    expectInvalid(await post({ from_agent: 'nope', to_agent: R, intent_type: 'a.b' }), 'from_agent')
    expectInvalid(await post({ from_agent: S, to_agent: R, intent_type: 'A.B' }), 'intent_type')
    expectInvalid(await post({ from_agent: S, to_agent: R }), 'intent_type')
    expectInvalid(await post({ from_agent: S, to_agent: R, intent_type: 'a.b', extra: 1 }), 'extra')
    expectError(await c.admin('POST', '/v1/policies/evaluate', '{"from_agent":'), 400, 'invalid_request')
  })
})

// ---------------------------------------------------------------------------------------------
describe.each(ENGINES)('(f) bad policy bodies (%s)', (engine) => {
  const fx = gatewayFixture(engine)

  it('422 naming the field for bad limits, kinds, enums, unknown fields and huge lists; nothing is created', async () => {
    const { c, gw } = fx
    const A = addr('bad')
    await agentKey(gw, A)
    const rate = { kind: 'rate', direction: 'send', on_breach: 'block' }
    const cost = { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block' }
    const action = { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['a.*'] }
    const cases: [unknown, string][] = [
      ...[-1, 0, 1e12, 1.5, '10', null, true, [5], { n: 5 }, 1e400].flatMap((v): [unknown, string][] => [
        [{ ...rate, max_per_hour: v }, 'max_per_hour'],
        [{ ...rate, max_per_day: v }, 'max_per_day'],
      ]),
      [{ ...rate, max_per_hour: 5, max_per_day: 0 }, 'max_per_day'],
      [rate, 'max_per_hour'], // neither limit
      [{ ...rate, max_per_hour: 5, direction: 'both' }, 'direction'],
      [{ ...rate, max_per_hour: 5, on_breach: 'warn' }, 'on_breach'],
      [{ ...rate, max_per_hour: 5, burst: 3 }, 'burst'],
      [{ ...rate, max_per_hour: 5, patterns: ['a.*'] }, 'patterns'],
      [{ ...rate, max_per_hour: 5, enabled: 'yes' }, 'enabled'],
      [{ ...rate, max_per_hour: 5, version: 0 }, 'version'],
      ...[-1, 0, 1e12, '5', null].map((v): [unknown, string] => [{ ...cost, max_cost_per_day_usd: v }, 'max_cost_per_day_usd']),
      [{ kind: 'cost', on_breach: 'block' }, 'max_cost_per_day_usd'],
      [{ ...cost, alert_at_percent: [150] }, 'alert_at_percent.0'],
      [{ ...cost, alert_at_percent: [50, 0] }, 'alert_at_percent.1'],
      [{ ...cost, alert_at_percent: [50.5] }, 'alert_at_percent.0'],
      [{ ...cost, alert_at_percent: '50' }, 'alert_at_percent'],
      [{ ...cost, alert_at_percent: Array.from({ length: 1000 }, () => 50) }, 'alert_at_percent'],
      [{ ...cost, on_breach: 'pause' }, 'on_breach'],
      [{ ...cost, max_per_hour: 3 }, 'max_per_hour'],
      [{ ...action, mode: 'blocklist' }, 'mode'],
      [{ ...action, direction: 'sideways' }, 'direction'],
      [{ ...action, patterns: Array.from({ length: 10_000 }, (_, i) => `deploy.p${i}`) }, 'patterns'],
      [{ ...action, patterns: Array.from({ length: 10_000 }, () => 'a..b') }, 'patterns'],
      [{ ...action, max_cost_per_day_usd: 1 }, 'max_cost_per_day_usd'],
      [{ kind: 'quota', max: 5 }, 'kind'],
      [{ kind: 'ACTION', direction: 'send', mode: 'allowlist', patterns: ['a'] }, 'kind'],
      [{ kind: 7 }, 'kind'],
      [{ kind: null }, 'kind'],
      [{ direction: 'send', max_per_hour: 5, on_breach: 'block' }, 'kind'],
      [{}, 'kind'],
    ]
    for (const [body, field] of cases) {
      const res = await c.createPolicy(A, body)
      expect(res.status, `${JSON.stringify(body).slice(0, 120)} → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`).toBe(422)
      expectInvalid(res, field)
    }
    for (const raw of ['[]', '"rate"', '42', 'null']) {
      const res = await c.admin('POST', `/v1/mesh/agents/${enc(A)}/policies`, raw)
      expect(res.status, raw).toBe(422)
      expectError(res, 422, 'schema_invalid')
    }
    for (const raw of ['{"kind":', '{kind: "rate"}', '\u0000']) {
      expectError(await c.admin('POST', `/v1/mesh/agents/${enc(A)}/policies`, raw), 400, 'invalid_request')
    }
    // Same rules on PUT; nothing was created or changed by any of the above.
    const p = await c.policy(A, { ...rate, max_per_hour: 5 })
    expectInvalid(await c.admin('PUT', `/v1/policies/${p.policy_id}`, { ...rate, max_per_hour: -1 }, { 'if-match': '1' }), 'max_per_hour')
    expectInvalid(await c.admin('PUT', `/v1/policies/${p.policy_id}`, { ...rate, max_per_hour: 5, x: 1 }, { 'if-match': '1' }), 'x')
    const list = await c.listPolicies(A)
    expect(list).toHaveLength(1)
    expect(list[0]).toMatchObject({ policy_id: p.policy_id, version: 1, max_per_hour: 5 })
    // Schema errors come before the resource lookup: 422 even for an unknown agent.
    expectInvalid(await c.createPolicy(addr('unknown'), { ...rate, max_per_hour: 0 }), 'max_per_hour')
  })

  it('property: random policy bodies get 200 or 422 with the §4 shape, never anything else', async () => {
    const { c, gw } = fx
    const agents = [addr('prop'), addr('prop'), addr('prop')]
    for (const a of agents) await agentKey(gw, a)

    const junk = fc.oneof(
      fc.integer({ min: -10, max: 2_000_000_000 }),
      fc.double(),
      fc.constantFrom(0, -1, 1.5, 1e12, 1e9, 1e9 + 1, 10_000_000, 10_000_001, 256, 257),
      fc.string({ maxLength: 12 }),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer({ min: -5, max: 120 }), { maxLength: 4 }),
      fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
    )
    /** Mostly a valid value, sometimes junk. */
    const mostly = <T,>(valid: fc.Arbitrary<T>) => fc.oneof({ arbitrary: valid, weight: 6 }, { arbitrary: junk, weight: 1 })
    const pattern = fc.oneof(
      { arbitrary: fc.constantFrom('deploy.*', 'deploy.**', '**', '*', 'x.y.z', 'a.*.b', '**.v1', 'ops.restart'), weight: 8 },
      { arbitrary: fc.constantFrom('a..b', 'A.b', '**x', 'de*ploy', '', 'a.', '.a', 'a-b'), weight: 1 },
      { arbitrary: fc.stringMatching(/^[a-z0-9_*.]{0,14}$/), weight: 1 },
      { arbitrary: fc.string({ maxLength: 16 }), weight: 1 },
    )
    const limit = mostly(fc.integer({ min: 1, max: 1000 }))
    const validish = fc.oneof(
      fc.record(
        {
          kind: fc.constant('action'),
          direction: mostly(fc.constantFrom('send', 'receive')),
          mode: mostly(fc.constantFrom('allowlist', 'denylist')),
          patterns: mostly(fc.array(pattern, { minLength: 1, maxLength: 4 })),
          enabled: fc.boolean(),
        },
        { requiredKeys: ['kind', 'direction', 'mode', 'patterns'] },
      ),
      fc.record(
        {
          kind: fc.constant('rate'),
          direction: mostly(fc.constantFrom('send', 'receive')),
          max_per_hour: limit,
          max_per_day: limit,
          on_breach: mostly(fc.constantFrom('block', 'kill')),
        },
        { requiredKeys: ['kind', 'direction', 'on_breach'] },
      ),
      fc.record(
        {
          kind: fc.constant('cost'),
          max_cost_per_day_usd: mostly(fc.double({ min: 0.01, max: 1000, noNaN: true })),
          on_breach: mostly(fc.constantFrom('block', 'kill')),
          alert_at_percent: mostly(fc.array(fc.integer({ min: 1, max: 100 }), { maxLength: 5 })),
        },
        { requiredKeys: ['kind', 'max_cost_per_day_usd', 'on_breach'] },
      ),
    )
    const random = fc.dictionary(
      fc.oneof(fc.constantFrom('kind', 'direction', 'mode', 'patterns', 'max_per_hour', 'max_per_day', 'on_breach', 'max_cost_per_day_usd', 'alert_at_percent', 'enabled', 'version'), fc.string({ maxLength: 8 })),
      fc.oneof(junk, fc.constantFrom('action', 'rate', 'cost', 'send', 'receive', 'block', 'kill', 'allowlist')),
      { maxKeys: 8 },
    )
    const extra = fc.oneof(
      { arbitrary: fc.constant(undefined), weight: 6 },
      { arbitrary: fc.tuple(fc.constantFrom('extra', 'burst', 'priority', '__proto__', 'constructor'), junk), weight: 1 },
    )
    const bodyArb = fc.tuple(fc.oneof({ arbitrary: validish, weight: 3 }, { arbitrary: random, weight: 1 }), extra, fc.nat({ max: 2 })).map(([body, more, who]) => {
      const out: Record<string, unknown> = { ...(body as Record<string, unknown>) }
      if (more) Object.defineProperty(out, more[0], { value: more[1], enumerable: true, writable: true, configurable: true })
      return { body: out, who }
    })

    /** The glob rule of DESIGN §10, written independently of the gateway. */
    const validPattern = (p: unknown): boolean =>
      typeof p === 'string' &&
      p.length >= 1 &&
      p.length <= 256 &&
      p.split('.').every((s) => s === '*' || s === '**' || /^[a-z0-9_]+$/.test(s))

    const seen = { ok: 0, invalid: 0 }
    await fc.assert(
      fc.asyncProperty(bodyArb, async ({ body, who }) => {
        const res = await c.createPolicy(agents[who] as string, JSON.stringify(body))
        const context = `${JSON.stringify(body)} → ${res.status} ${JSON.stringify(res.body)}`
        if (res.status === 200) {
          seen.ok += 1
          expect(res.body.ok, context).toBe(true)
          expect(res.body.policy, context).toMatchObject({ kind: body['kind'], version: 1 })
          expect(res.body.policy.policy_id, context).toMatch(/^pol_/)
        } else {
          expect(res.status, context).toBe(422)
          seen.invalid += 1
          expectError(res, 422, 'schema_invalid')
          expect(typeof res.body.error.details?.field, context).toBe('string')
          expect(res.body.error.details.field.length, context).toBeGreaterThan(0)
        }
        // Model check for well-typed action bodies: 200 exactly when every pattern is a valid glob.
        const keys = Object.keys(body).sort().join(',')
        if (
          body['kind'] === 'action' &&
          (keys === 'direction,kind,mode,patterns' || keys === 'direction,enabled,kind,mode,patterns') &&
          ['send', 'receive'].includes(body['direction'] as string) &&
          ['allowlist', 'denylist'].includes(body['mode'] as string) &&
          Array.isArray(body['patterns'])
        ) {
          const patterns = body['patterns'] as unknown[]
          const valid = patterns.length >= 1 && patterns.length <= 256 && patterns.every(validPattern)
          expect(res.status, context).toBe(valid ? 200 : 422)
        }
      }),
      { numRuns: 300 },
    )
    expect(seen.ok).toBeGreaterThan(0)
    expect(seen.invalid).toBeGreaterThan(0)
    let listed = 0
    for (const a of agents) listed += (await c.listPolicies(a)).length
    expect(listed).toBe(seen.ok)
    expect((await api(gw.url, null, 'GET', '/health')).status).toBe(200)
  })
})
