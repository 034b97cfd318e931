/**
 * Heartbeats and health over real HTTP (DESIGN §5c, §7, §10, §11), with a manual clock so
 * every transition is deterministic: the answer of `POST /v1/mesh/heartbeat`, each health
 * transition (unknown → healthy → degraded → unreachable → healthy, killed over all, resume
 * back to unknown), the sweeper marking silent agents without any request, instances leaving
 * the list after their TTL, and the mesh views (`GET /v1/mesh/agents`, `…/{id}`, register).
 *
 * The background sweeper is slowed to one pass a minute so that the passes a test runs with
 * `gateway.sweeper.tick()` are the only ones that see each clock value.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, openSseStream, readSse, startTestGateway, testEngines, type SseConnection, type TestGateway } from './harness.js'

/** Every block runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('heartbeat-health.test.ts')

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const SECOND = 1_000
const MINUTE = 60_000
const iso = (ms: number): string => new Date(ms).toISOString()

/** MeshAgent fields (DESIGN §5c), without the kill fields that only a killed agent has. */
const MESH_AGENT_KEYS = [
  'address',
  'address_id',
  'cost_period',
  'created_at',
  'display_name',
  'health_status',
  'instances_healthy',
  'instances_total',
  'intents_period',
  'labels',
  'last_heartbeat_at',
  'metadata',
].sort()
const KILLED_MESH_AGENT_KEYS = [...MESH_AGENT_KEYS, 'kill_reason', 'killed_at', 'killed_by'].sort()
/** The list and the single-agent view also give the cost ceiling that applies. */
const LISTED_AGENT_KEYS = [...MESH_AGENT_KEYS, 'cost_ceiling_usd'].sort()
const KILLED_LISTED_AGENT_KEYS = [...KILLED_MESH_AGENT_KEYS, 'cost_ceiling_usd'].sort()

/** One background pass a minute: explicit ticks decide what the sweeper sees. */
const SLOW_SWEEPER = { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' }

async function createKey(gw: TestGateway, role: string): Promise<string> {
  const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role })
  if (res.status !== 200) throw new Error(`key: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.key as string
}

function expectError(res: { status: number; body: any; headers: Headers }, status: number, code: string): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { ok: false, error: { code, message: expect.any(String), request_id: expect.any(String) } },
  })
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

/** Small client over one test gateway. */
function client(gw: TestGateway) {
  const admin = gw.adminKey
  return {
    beat: (key: string, instance?: string, body: unknown = {}) =>
      api(gw.url, key, 'POST', '/v1/mesh/heartbeat', body, instance === undefined ? {} : { 'x-instance-id': instance }),
    show: async (address: string) => {
      const res = await api(gw.url, admin, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
      if (res.status !== 200) throw new Error(`show ${address}: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body as { ok: true; agent: any; events: any[] }
    },
    list: async (query = '') => {
      const res = await api(gw.url, admin, 'GET', `/v1/mesh/agents${query === '' ? '' : `?${query}`}`)
      if (res.status !== 200) throw new Error(`list: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body as { ok: true; agents: any[]; summary: Record<string, number> }
    },
    /** `agent.health_changed` events of one address, oldest first. */
    healthEvents: async (address: string) => {
      const res = await api(
        gw.url,
        admin,
        'GET',
        `/v1/mesh/events?event_type=agent.health_changed&address=${encodeURIComponent(address)}&limit=500`,
      )
      if (res.status !== 200) throw new Error(`events: ${res.status} ${JSON.stringify(res.body)}`)
      return (res.body.events as any[]).slice().reverse()
    },
    sweep: () => gw.gateway.sweeper.tick(),
  }
}

describe.each(ENGINES)('POST /v1/mesh/heartbeat answers (%s)', (engine) => {
  let gw: TestGateway
  let c: ReturnType<typeof client>
  const A = 'agent://hb/prod/answer'
  let key: string
  const clock = new ManualClock(Date.parse('2026-03-15T12:00:00.000Z'))

  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: SLOW_SWEEPER })
    c = client(gw)
    key = await agentKey(gw, A)
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('a body-less POST with content-type json gets {ok, address_id, address, instance_id, health_status, next_heartbeat_s}', async () => {
    const res = await fetch(`${gw.url}/v1/mesh/heartbeat`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual(['address', 'address_id', 'health_status', 'instance_id', 'next_heartbeat_s', 'ok'])
    const { agent } = await c.show(A)
    expect(body).toEqual({
      ok: true,
      address_id: agent.address_id,
      address: A,
      instance_id: 'default',
      health_status: 'healthy',
      next_heartbeat_s: 30,
    })
    expect(agent.address_id).toMatch(/^addr_[0-9A-Za-z]+$/)
    expect(agent.instances.map((i: any) => i.instance_id)).toEqual(['default'])
  })

  it('takes the instance from x-instance-id and the key from Authorization: Bearer', async () => {
    const res = await api(gw.url, null, 'POST', '/v1/mesh/heartbeat', {}, { authorization: `Bearer ${key}`, 'x-instance-id': 'pod-7' })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({ ok: true, address: A, instance_id: 'pod-7', health_status: 'healthy' })
    const { agent } = await c.show(A)
    expect(agent.instances.map((i: any) => i.instance_id).sort()).toEqual(['default', 'pod-7'])
  })

  it('accepts metric deltas, null metric fields, a null metrics object and ignores extra fields', async () => {
    const bodies: unknown[] = [
      { metrics: { intents_total: 3, intents_succeeded: 3, intents_failed: 0, avg_latency_ms: 12.5, cost_usd: 0.01 } },
      { metrics: { intents_total: null, intents_succeeded: null, intents_failed: null, avg_latency_ms: null, cost_usd: null } },
      { metrics: null },
      { metrics: {} },
      { metrics: { cost_usd: 0 } },
      { metrics: { intents_total: 1, intents_succeeded: 1, p99_ms: 40, custom: { a: 1 } }, agent_version: '1.2.3', uptime_s: 99 },
      { totally: 'unrelated' },
    ]
    for (const body of bodies) {
      const res = await c.beat(key, 'pod-7', body)
      expect({ body, status: res.status, answer: res.body }).toMatchObject({
        status: 200,
        answer: { ok: true, instance_id: 'pod-7', health_status: 'healthy' },
      })
    }
    // The first delta's cost is counted (cost_period covers heartbeat cost deltas).
    const { agent } = await c.show(A)
    expect(agent.cost_period).toBeCloseTo(0.01, 9)
  })

  it('rejects malformed bodies, bad metric values and bad instance ids with 4xx', async () => {
    expectError(await c.beat(key, 'pod-7', '{"metrics":'), 400, 'invalid_request')
    const negative = await c.beat(key, 'pod-7', { metrics: { intents_total: -1 } })
    expectError(negative, 422, 'schema_invalid')
    expect(JSON.stringify(negative.body.error.details)).toContain('intents_total')
    expectError(await c.beat(key, 'pod-7', { metrics: { cost_usd: 'lots' } }), 422, 'schema_invalid')
    expectError(await c.beat(key, 'pod-7', { metrics: 'fine' }), 422, 'schema_invalid')
    expectError(await c.beat(key, 'x'.repeat(129)), 400, 'invalid_request')
    // Nothing above was recorded as an instance.
    const { agent } = await c.show(A)
    expect(agent.instances.map((i: any) => i.instance_id).sort()).toEqual(['default', 'pod-7'])
  })

  it('is for agent keys only: admin, operator and viewer keys get 403, no key 401', async () => {
    const operator = await createKey(gw, 'operator')
    const viewer = await createKey(gw, 'viewer')
    for (const k of [gw.adminKey, operator, viewer]) expectError(await c.beat(k), 403, 'forbidden')
    expectError(await c.beat('cp_' + 'A'.repeat(43)), 401, 'unauthorized')
    const res = await fetch(`${gw.url}/v1/mesh/heartbeat`, { method: 'POST', headers: { 'content-type': 'application/json' } })
    expect(res.status).toBe(401)
  })
})

describe.each(ENGINES)('health transitions (manual clock, sweeper driven by hand) (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-03-15T08:00:00.000Z'))
  let gw: TestGateway
  let c: ReturnType<typeof client>
  let operator: string
  const streams: SseConnection[] = []

  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: SLOW_SWEEPER })
    c = client(gw)
    operator = await createKey(gw, 'operator')
  })
  afterAll(async () => {
    for (const s of streams) s.close()
    await gw?.close()
  })

  it('unknown → healthy → unreachable (by the sweeper alone, at stale_after + 1 ms) → healthy', async () => {
    const H = 'agent://health/prod/single'
    const key = await agentKey(gw, H)

    // Registered but never seen: unknown, and a sweep does not change that.
    let { agent } = await c.show(H)
    expect(agent).toMatchObject({ health_status: 'unknown', last_heartbeat_at: null, instances_total: 0, instances_healthy: 0 })
    expect(agent.instances).toEqual([])
    await c.sweep()
    expect((await c.show(H)).agent.health_status).toBe('unknown')

    // First beat: healthy, answered and shown, with a health_changed event.
    clock.advance(10 * SECOND)
    const beatAt = clock.now()
    const first = await c.beat(key, 'h-1')
    expect(first.body).toMatchObject({ ok: true, health_status: 'healthy', instance_id: 'h-1' })
    ;({ agent } = await c.show(H))
    expect(agent).toMatchObject({ health_status: 'healthy', last_heartbeat_at: iso(beatAt), instances_total: 1, instances_healthy: 1 })
    expect(agent.instances).toEqual([expect.objectContaining({ instance_id: 'h-1', health_status: 'healthy', last_heartbeat_at: iso(beatAt) })])
    expect((await c.healthEvents(H)).map((e) => e.details)).toEqual([{ from: 'unknown', to: 'healthy' }])

    // Exactly stale_after (90 s) later it is still healthy.
    clock.advance(90 * SECOND)
    await c.sweep()
    expect((await c.show(H)).agent.health_status).toBe('healthy')

    // One millisecond more, with no request from anyone: the sweeper marks it unreachable,
    // and the live mesh event stream carries the transition.
    const live = await openSseStream(gw.url, gw.adminKey, '/v1/mesh/events/stream')
    streams.push(live)
    expect(live.status).toBe(200)
    clock.advance(1)
    const staleAt = clock.now()
    await c.sweep()
    ;({ agent } = await c.show(H))
    expect(agent).toMatchObject({ health_status: 'unreachable', last_heartbeat_at: iso(beatAt), instances_total: 1, instances_healthy: 0 })
    expect(agent.instances).toEqual([expect.objectContaining({ instance_id: 'h-1', health_status: 'unreachable' })])
    const events = await c.healthEvents(H)
    expect(events.map((e) => e.details)).toEqual([
      { from: 'unknown', to: 'healthy' },
      { from: 'healthy', to: 'unreachable' },
    ])
    expect(events[1]).toMatchObject({
      event_id: expect.stringMatching(/^evt_\d+$/),
      address: H,
      event_type: 'agent.health_changed',
      actor_id: 'system',
      created_at: iso(staleAt),
    })
    const frames = await live.waitFor(
      (fs) => fs.some((f) => f.event === 'agent.health_changed' && f.data.address === H),
      5_000,
      'the health_changed frame',
    )
    const frame = frames.find((f) => f.event === 'agent.health_changed' && f.data.address === H)
    expect(frame?.data).toEqual(events[1])
    expect(frame?.id).toBe(events[1].event_id)
    expect((await c.list('health=unreachable')).agents.map((a) => a.address)).toContain(H)

    // Further sweeps do not repeat the transition.
    clock.advance(30 * SECOND)
    await c.sweep()
    await c.sweep()
    expect(await c.healthEvents(H)).toHaveLength(2)

    // A beat brings it back.
    clock.advance(5 * SECOND)
    const back = await c.beat(key, 'h-1')
    expect(back.body.health_status).toBe('healthy')
    ;({ agent } = await c.show(H))
    expect(agent).toMatchObject({ health_status: 'healthy', last_heartbeat_at: iso(clock.now()), instances_healthy: 1 })
    expect((await c.healthEvents(H)).map((e) => e.details).at(-1)).toEqual({ from: 'unreachable', to: 'healthy' })
  })

  it('degraded while some instances are stale; healthy again when the stale one beats; stale instances leave after the TTL', async () => {
    const D = 'agent://health/prod/pair'
    const key = await agentKey(gw, D)
    await c.beat(key, 'd-1')
    expect((await c.beat(key, 'd-2')).body.health_status).toBe('healthy')

    // d-1 keeps beating, d-2 goes silent.
    clock.advance(60 * SECOND)
    expect((await c.beat(key, 'd-1')).body.health_status).toBe('healthy')
    clock.advance(30 * SECOND) // d-2 is exactly 90 s old: not stale yet
    await c.sweep()
    expect((await c.show(D)).agent.health_status).toBe('healthy')
    clock.advance(1)
    await c.sweep()
    let shown = await c.show(D)
    expect(shown.agent).toMatchObject({ health_status: 'degraded', instances_total: 2, instances_healthy: 1 })
    expect(shown.agent.instances).toEqual([
      expect.objectContaining({ instance_id: 'd-1', health_status: 'healthy' }),
      expect.objectContaining({ instance_id: 'd-2', health_status: 'unreachable' }),
    ])
    expect((await c.healthEvents(D)).map((e) => e.details)).toEqual([
      { from: 'unknown', to: 'healthy' },
      { from: 'healthy', to: 'degraded' },
    ])
    const row = (await c.list()).agents.find((a) => a.address === D)
    expect(row).toMatchObject({ health_status: 'degraded', instances_total: 2, instances_healthy: 1 })
    // The healthy instance's own beat is answered with the agent's health.
    expect((await c.beat(key, 'd-1')).body.health_status).toBe('degraded')

    // d-2 comes back: healthy.
    expect((await c.beat(key, 'd-2')).body.health_status).toBe('healthy')
    expect((await c.healthEvents(D)).map((e) => e.details).at(-1)).toEqual({ from: 'degraded', to: 'healthy' })

    // d-2 stops for good; d-1 beats every 30 s. d-2 stays listed (unreachable) for the
    // instance TTL (default 600 s), then leaves the list.
    const d2Last = clock.now()
    while (clock.now() + 30 * SECOND <= d2Last + 600 * SECOND) {
      clock.advance(30 * SECOND)
      await c.beat(key, 'd-1')
      await c.sweep()
    }
    clock.set(d2Last + 600 * SECOND)
    await c.sweep()
    shown = await c.show(D)
    expect(shown.agent.health_status).toBe('degraded')
    expect(shown.agent.instances.map((i: any) => [i.instance_id, i.health_status])).toEqual([
      ['d-1', 'healthy'],
      ['d-2', 'unreachable'],
    ])
    clock.advance(1)
    await c.sweep()
    shown = await c.show(D)
    expect(shown.agent.instances.map((i: any) => i.instance_id)).toEqual(['d-1'])
    expect(shown.agent.instances_total).toBe(1)
    expect((await c.list()).agents.find((a) => a.address === D)).toMatchObject({ instances_total: 1, instances_healthy: 1 })
    // With only fresh instances left, the next beat is healthy.
    clock.advance(10 * SECOND)
    expect((await c.beat(key, 'd-1')).body.health_status).toBe('healthy')
    expect((await c.show(D)).agent.health_status).toBe('healthy')
  })

  it('degraded at an error rate ≥ 20 % over ≥ 10 reported intents in 5 minutes, not with fewer than 10', async () => {
    const beatWith = async (address: string, instance: string, total: number, failed: number) => {
      const key = keys.get(address) ?? (await agentKey(gw, address))
      keys.set(address, key)
      return c.beat(key, instance, {
        metrics: { intents_total: total, intents_succeeded: total - failed, intents_failed: failed, avg_latency_ms: 5, cost_usd: 0 },
      })
    }
    const keys = new Map<string, string>()
    // Exactly 20 % of 10: degraded.
    expect((await beatWith('agent://health/rate/at20', 'i', 10, 2)).body.health_status).toBe('degraded')
    // 10 % of 10: healthy.
    expect((await beatWith('agent://health/rate/at10', 'i', 10, 1)).body.health_status).toBe('healthy')
    // Two instances' deltas add up per agent: 1 + 1 failed of 5 + 5 = 20 %.
    expect((await beatWith('agent://health/rate/split', 'a', 5, 1)).body.health_status).toBe('healthy')
    expect((await beatWith('agent://health/rate/split', 'b', 5, 1)).body.health_status).toBe('degraded')
    // 9 of 9 failed is not judged (fewer than 10 intents) ...
    const E = 'agent://health/rate/small'
    expect((await beatWith(E, 'i', 9, 9)).body.health_status).toBe('healthy')
    expect((await c.show(E)).agent.health_status).toBe('healthy')
    // ... until the 10th arrives within the window.
    clock.advance(20 * SECOND)
    expect((await beatWith(E, 'i', 1, 0)).body.health_status).toBe('degraded')
    expect((await c.show(E)).agent.health_status).toBe('degraded')
    expect((await c.list('health=degraded')).agents.map((a) => a.address)).toEqual(
      expect.arrayContaining(['agent://health/rate/at20', 'agent://health/rate/split', E]),
    )
    expect((await c.healthEvents(E)).map((e) => e.details)).toEqual([
      { from: 'unknown', to: 'healthy' },
      { from: 'healthy', to: 'degraded' },
    ])
    // Clean beats every minute: 4 minutes later the failures still count; 6 minutes later they
    // have left the 5-minute window and the agent is healthy again.
    for (let m = 1; m <= 4; m += 1) {
      clock.advance(MINUTE)
      await beatWith(E, 'i', 0, 0)
    }
    expect((await beatWith(E, 'i', 0, 0)).body.health_status).toBe('degraded')
    clock.advance(2 * MINUTE)
    expect((await beatWith(E, 'i', 0, 0)).body.health_status).toBe('healthy')
    expect((await c.healthEvents(E)).map((e) => e.details).at(-1)).toEqual({ from: 'degraded', to: 'healthy' })
  })

  it('killed overrides all; a killed agent’s beats are recorded and answered killed; resume → unknown → healthy', async () => {
    const K = 'agent://health/prod/killed'
    const key = await agentKey(gw, K)
    expect((await c.beat(key, 'k-1')).body.health_status).toBe('healthy')
    const eventsBefore = (await c.healthEvents(K)).length

    clock.advance(SECOND)
    const killedAt = clock.now()
    const kill = await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(K)}/kill`, { reason: 'runaway deploys' })
    expect(kill.status).toBe(200)
    expect(kill.body).toMatchObject({ ok: true, address: K, health_status: 'killed', killed_at: iso(killedAt) })
    let { agent } = await c.show(K)
    expect(Object.keys(agent).filter((k) => !['instances', 'policies', 'effective_policies'].includes(k)).sort()).toEqual(
      KILLED_LISTED_AGENT_KEYS,
    )
    expect(agent).toMatchObject({ health_status: 'killed', killed_at: iso(killedAt), kill_reason: 'runaway deploys', instances_healthy: 0 })

    // Its heartbeat is still recorded (last_heartbeat_at moves) and answered `killed`, even
    // with metrics that would otherwise degrade it.
    clock.advance(10 * SECOND)
    const beat = await c.beat(key, 'k-1', { metrics: { intents_total: 10, intents_succeeded: 0, intents_failed: 10 } })
    expect(beat.status).toBe(200)
    expect(beat.body).toEqual({
      ok: true,
      address_id: agent.address_id,
      address: K,
      instance_id: 'k-1',
      health_status: 'killed',
      next_heartbeat_s: 30,
    })
    ;({ agent } = await c.show(K))
    expect(agent).toMatchObject({ health_status: 'killed', last_heartbeat_at: iso(clock.now()) })
    expect(agent.instances).toEqual([expect.objectContaining({ instance_id: 'k-1', health_status: 'killed', last_heartbeat_at: iso(clock.now()) })])
    const bodyless = await fetch(`${gw.url}/v1/mesh/heartbeat`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json', 'x-instance-id': 'k-2' },
    })
    expect(bodyless.status).toBe(200)
    expect(((await bodyless.json()) as any).health_status).toBe('killed')

    // Going silent while killed: still killed, never unreachable, no health event.
    clock.advance(10 * MINUTE)
    await c.sweep()
    expect((await c.show(K)).agent.health_status).toBe('killed')
    expect((await c.list('health=killed')).agents.map((a) => a.address)).toContain(K)
    expect(await c.healthEvents(K)).toHaveLength(eventsBefore)

    // Resume: unknown until the next heartbeat, even through sweeps.
    clock.advance(SECOND)
    const resume = await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(K)}/resume`, { reason: 'fixed' })
    expect(resume.status).toBe(200)
    expect(resume.body).toMatchObject({ ok: true, address: K, health_status: 'unknown', resumed_at: iso(clock.now()) })
    ;({ agent } = await c.show(K))
    expect(agent.health_status).toBe('unknown')
    expect(agent).not.toHaveProperty('killed_at')
    expect(agent).not.toHaveProperty('kill_reason')
    clock.advance(SECOND)
    await c.sweep()
    expect((await c.show(K)).agent.health_status).toBe('unknown')
    expect((await c.list('health=unknown')).agents.map((a) => a.address)).toContain(K)

    clock.advance(SECOND)
    expect((await c.beat(key, 'k-1')).body.health_status).toBe('healthy')
    expect((await c.show(K)).agent.health_status).toBe('healthy')
    expect((await c.healthEvents(K)).map((e) => e.details).at(-1)).toEqual({ from: 'unknown', to: 'healthy' })
  })
})

describe.each(ENGINES)('health settings from the environment (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-03-15T08:00:00.000Z'))
  let gw: TestGateway
  let c: ReturnType<typeof client>

  beforeAll(async () => {
    gw = await startTestGateway({
      engine,
      clock,
      env: {
        ...SLOW_SWEEPER,
        CHOKEPOINT_STALE_AFTER_SECONDS: '20',
        CHOKEPOINT_HEARTBEAT_INTERVAL_SECONDS: '7',
        CHOKEPOINT_INSTANCE_TTL_SECONDS: '120',
      },
    })
    c = client(gw)
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('next_heartbeat_s, stale_after and the instance TTL follow CHOKEPOINT_* settings', async () => {
    const A = 'agent://health/env/agent'
    const key = await agentKey(gw, A)
    const answer = await c.beat(key, 'e-1')
    expect(answer.body).toMatchObject({ health_status: 'healthy', next_heartbeat_s: 7 })
    const beatAt = clock.now()

    clock.set(beatAt + 20 * SECOND)
    await c.sweep()
    expect((await c.show(A)).agent.health_status).toBe('healthy')
    clock.set(beatAt + 20 * SECOND + 1)
    await c.sweep()
    expect((await c.show(A)).agent.health_status).toBe('unreachable')

    clock.set(beatAt + 120 * SECOND)
    await c.sweep()
    expect((await c.show(A)).agent.instances.map((i: any) => i.instance_id)).toEqual(['e-1'])
    clock.set(beatAt + 120 * SECOND + 1)
    await c.sweep()
    const { agent } = await c.show(A)
    expect(agent.instances).toEqual([])
    expect(agent).toMatchObject({ health_status: 'unreachable', instances_total: 0, instances_healthy: 0 })
    expect((await c.beat(key, 'e-2')).body.health_status).toBe('healthy')
  })
})

describe.each(ENGINES)('mesh views: GET /v1/mesh/agents, GET /v1/mesh/agents/{id}, POST /v1/mesh/agents (%s)', (engine) => {
  // Activity on four days; "today" is Sunday 2026-03-15 (ISO week from Monday 03-09).
  const FEB_28 = Date.parse('2026-02-28T12:00:00.000Z') // previous month
  const MAR_01 = Date.parse('2026-03-01T12:00:00.000Z') // this month, previous ISO week
  const MAR_14 = Date.parse('2026-03-14T12:00:00.000Z') // yesterday, this week
  const MAR_15 = Date.parse('2026-03-15T12:00:00.000Z') // today
  const clock = new ManualClock(FEB_28)
  let gw: TestGateway
  let c: ReturnType<typeof client>
  let operator: string
  let viewer: string
  const M = 'agent://views/prod/main'
  const N = 'agent://views/prod/peer'
  const O = 'agent://views/prod/other'
  const Z = 'agent://views/prod/zombie'
  const R = 'agent://views/prod/registered'
  let keyM: string
  let keyN: string
  let keyO: string
  let registeredAt: number

  const send = (key: string, to: string, intentType = 'views.work.v1') =>
    api(gw.url, key, 'POST', '/v1/intents', { intent_type: intentType, to_agent: to, payload: { at: clock.now() } })
  const sendOk = async (key: string, to: string) => {
    const res = await send(key, to)
    if (res.status !== 200) throw new Error(`send: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body.intent_id as string
  }

  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: SLOW_SWEEPER })
    c = client(gw)
    operator = await createKey(gw, 'operator')
    viewer = await createKey(gw, 'viewer')

    // M is registered by an operator with a display name and metadata, then gets its key.
    registeredAt = clock.now()
    const reg = await api(gw.url, operator, 'POST', '/v1/mesh/agents', {
      address: M,
      display_name: 'Main worker',
      metadata: { team: 'infra', replicas: 3, tags: ['a', 'b'] },
    })
    if (reg.status !== 200) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`)
    keyM = await agentKey(gw, M)
    keyN = await agentKey(gw, N)
    keyO = await agentKey(gw, O)
    await agentKey(gw, Z)

    // Previous month: outside every window.
    await sendOk(keyM, N)
    // 1 March: inside month, outside week and day.
    clock.set(MAR_01)
    await sendOk(keyM, N)
    await sendOk(keyM, N)
    // Yesterday: inside week and month, outside day.
    clock.set(MAR_14)
    await sendOk(keyM, N)
    const hb = await c.beat(keyM, 'm-1', { metrics: { intents_total: 0, intents_succeeded: 0, intents_failed: 0, cost_usd: 1 } })
    if (hb.status !== 200) throw new Error(`beat: ${hb.status}`)
    // Today: M sends 3, receives 2 (and resolves one of them with a cost), one rejected send.
    clock.set(MAR_15)
    await sendOk(keyM, N)
    await sendOk(keyM, N)
    await sendOk(keyM, N)
    const toM1 = await sendOk(keyO, M)
    await sendOk(keyO, M)
    const kill = await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(Z)}/kill`, { reason: 'zombie' })
    if (kill.status !== 200) throw new Error(`kill: ${kill.status}`)
    const rejected = await send(keyM, Z)
    if (rejected.status !== 403 || rejected.body.error.code !== 'agent_killed') throw new Error(`expected agent_killed: ${rejected.status}`)
    const inbox = await readSse(gw.url, keyM, '/v1/agents/views/prod/main/intents/stream?wait_seconds=2', { 'x-instance-id': 'm-1' })
    if (!inbox.frames.some((f) => f.data.intent_id === toM1)) throw new Error('M did not receive its intent')
    const resolved = await api(gw.url, keyM, 'POST', `/v1/intents/${toM1}/resolve`, { status: 'COMPLETED', result: {}, cost_usd: 0.25 })
    if (resolved.status !== 200) throw new Error(`resolve: ${resolved.status} ${JSON.stringify(resolved.body)}`)
    const hb2 = await c.beat(keyM, 'm-1', { metrics: { intents_total: 2, intents_succeeded: 2, intents_failed: 0, cost_usd: 0.5 } })
    if (hb2.status !== 200) throw new Error(`beat: ${hb2.status}`)
    await c.sweep()
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('lists MeshAgents with exactly the §5c fields and a summary by health', async () => {
    const res = await api(gw.url, viewer, 'GET', '/v1/mesh/agents')
    expect(res.status).toBe(200)
    expect(Object.keys(res.body).sort()).toEqual(['agents', 'next_offset', 'ok', 'summary', 'total'])
    const agents = res.body.agents as any[]
    expect(agents.map((a) => a.address).sort()).toEqual([M, O, N, Z].sort())
    for (const a of agents) {
      expect(Object.keys(a).sort()).toEqual(a.address === Z ? KILLED_LISTED_AGENT_KEYS : LISTED_AGENT_KEYS)
      expect(a.address_id).toMatch(/^addr_[0-9A-Za-z]+$/)
      expect(a.created_at).toMatch(ISO_MS)
      expect(typeof a.intents_period).toBe('number')
      expect(typeof a.cost_period).toBe('number')
      // Always a string (typed clients declare it so): the address's last segment by default.
      expect(typeof a.display_name).toBe('string')
    }
    const byAddress = new Map(agents.map((a) => [a.address, a]))
    expect(byAddress.get(M)).toEqual({
      address_id: expect.stringMatching(/^addr_/),
      address: M,
      display_name: 'Main worker',
      health_status: 'healthy',
      last_heartbeat_at: iso(MAR_15),
      created_at: iso(registeredAt),
      intents_period: 5,
      cost_period: 0.75,
      metadata: { team: 'infra', replicas: 3, tags: ['a', 'b'] },
      labels: {},
      instances_total: 1,
      instances_healthy: 1,
      cost_ceiling_usd: null,
    })
    expect(res.body).toMatchObject({ total: 4, next_offset: null })
    expect(byAddress.get(N)).toMatchObject({ display_name: N.slice(N.lastIndexOf('/') + 1), metadata: null, health_status: 'unknown', last_heartbeat_at: null, intents_period: 3, cost_period: 0 })
    expect(byAddress.get(O)).toMatchObject({ health_status: 'unknown', intents_period: 2, cost_period: 0, instances_total: 0 })
    expect(byAddress.get(Z)).toMatchObject({ health_status: 'killed', kill_reason: 'zombie', killed_at: iso(MAR_15), intents_period: 0 })
    expect(res.body.summary).toEqual({ total: 4, healthy: 1, degraded: 0, unreachable: 0, killed: 1, unknown: 2, intents_period: 5, cost_period: 0.75 })
  })

  it('window=day|week|month sums intents sent or received and cost (resolve cost_usd + heartbeat cost deltas)', async () => {
    const row = async (window: string, address: string) =>
      (await c.list(`window=${window}`)).agents.find((a) => a.address === address)
    // day: today only (send 3 + receive 2; the rejected send does not count).
    expect(await row('day', M)).toMatchObject({ intents_period: 5, cost_period: 0.75 })
    expect((await c.list()).agents.find((a) => a.address === M)).toMatchObject({ intents_period: 5, cost_period: 0.75 })
    // week (from Monday 03-09): + yesterday's send and heartbeat cost.
    expect(await row('week', M)).toMatchObject({ intents_period: 6, cost_period: 1.75 })
    // month: + 1 March's two sends; February stays out.
    expect(await row('month', M)).toMatchObject({ intents_period: 8, cost_period: 1.75 })
    expect(await row('day', N)).toMatchObject({ intents_period: 3 })
    expect(await row('week', N)).toMatchObject({ intents_period: 4 })
    expect(await row('month', N)).toMatchObject({ intents_period: 6 })
    expect(await row('month', O)).toMatchObject({ intents_period: 2, cost_period: 0 })
    expect(await row('month', Z)).toMatchObject({ intents_period: 0 })
    const bad = await api(gw.url, viewer, 'GET', '/v1/mesh/agents?window=year')
    expectError(bad, 422, 'schema_invalid')
  })

  it('filters by health= and honours limit=, with the summary over all agents', async () => {
    const killed = await c.list('health=killed')
    expect(killed.agents.map((a) => a.address)).toEqual([Z])
    expect(killed.summary).toMatchObject({ total: 4, healthy: 1, degraded: 0, unreachable: 0, killed: 1, unknown: 2 })
    expect((await c.list('health=unknown')).agents.map((a) => a.address).sort()).toEqual([N, O].sort())
    expect((await c.list('health=healthy')).agents.map((a) => a.address)).toEqual([M])
    expect((await c.list('health=degraded')).agents).toEqual([])
    const limited = await c.list('limit=2')
    expect(limited.agents).toHaveLength(2)
    expect(limited.summary.total).toBe(4)
    expectError(await api(gw.url, viewer, 'GET', '/v1/mesh/agents?health=sick'), 422, 'schema_invalid')
    expectError(await api(gw.url, viewer, 'GET', '/v1/mesh/agents?limit=0'), 422, 'schema_invalid')
    expectError(await api(gw.url, viewer, 'GET', '/v1/mesh/agents?limit=501'), 422, 'schema_invalid')
    expectError(await api(gw.url, keyM, 'GET', '/v1/mesh/agents'), 403, 'forbidden')
  })

  it('on Monday 03-16, Sunday’s counts are outside day and week (a new ISO week) but inside month', async () => {
    clock.set(Date.parse('2026-03-16T00:00:00.000Z'))
    try {
      expect((await c.list('window=day')).agents.find((a) => a.address === M)).toMatchObject({ intents_period: 0, cost_period: 0 })
      expect((await c.list('window=week')).agents.find((a) => a.address === M)).toMatchObject({ intents_period: 0, cost_period: 0 })
      expect((await c.list('window=month')).agents.find((a) => a.address === M)).toMatchObject({ intents_period: 8, cost_period: 1.75 })
    } finally {
      clock.set(MAR_15)
    }
  })

  it('GET /v1/mesh/agents/{id} adds instances, policies and events; by addr_ id or address', async () => {
    const policy = await api(gw.url, operator, 'POST', `/v1/mesh/agents/${encodeURIComponent(M)}/policies`, {
      kind: 'rate',
      direction: 'send',
      max_per_day: 1000,
      on_breach: 'block',
    })
    expect(policy.status).toBe(200)
    const byAddress = await api(gw.url, viewer, 'GET', `/v1/mesh/agents/${encodeURIComponent(M)}`)
    expect(byAddress.status).toBe(200)
    expect(Object.keys(byAddress.body).sort()).toEqual(['agent', 'events', 'ok'])
    const agent = byAddress.body.agent
    expect(Object.keys(agent).sort()).toEqual([...LISTED_AGENT_KEYS, 'instances', 'policies', 'effective_policies'].sort())
    expect(agent).toMatchObject({ address: M, display_name: 'Main worker', health_status: 'healthy', intents_period: 5, cost_period: 0.75 })
    expect(agent.instances).toEqual([
      expect.objectContaining({ instance_id: 'm-1', health_status: 'healthy', last_heartbeat_at: iso(MAR_15) }),
    ])
    expect(agent.policies).toEqual([expect.objectContaining({ policy_id: policy.body.policy.policy_id, kind: 'rate', max_per_day: 1000 })])
    const events = byAddress.body.events as any[]
    expect(events.length).toBeGreaterThan(0)
    for (const e of events) {
      expect(Object.keys(e).sort()).toEqual(['actor_id', 'address', 'created_at', 'details', 'event_id', 'event_type'])
      expect(e.address).toBe(M)
    }
    expect(events.map((e) => e.event_type)).toEqual(expect.arrayContaining(['agent.health_changed', 'policy.changed']))
    // Newest first.
    const seq = events.map((e) => Number(String(e.event_id).slice(4)))
    expect(seq).toEqual([...seq].sort((a, b) => b - a))

    const byId = await api(gw.url, viewer, 'GET', `/v1/mesh/agents/${agent.address_id}`)
    expect(byId.status).toBe(200)
    expect(byId.body.agent.address).toBe(M)
    const killed = await c.show(Z)
    expect(killed.agent).toMatchObject({ health_status: 'killed', kill_reason: 'zombie', instances: [] })
    expect(killed.events.map((e) => e.event_type)).toContain('agent.killed')
    expectError(await api(gw.url, viewer, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://views/prod/never-seen')}`), 404, 'not_found')
  })

  it('POST /v1/mesh/agents registers with display_name and metadata; 409 when it exists; 422 for unknown fields', async () => {
    clock.set(MAR_15 + 5 * MINUTE)
    const res = await api(gw.url, operator, 'POST', '/v1/mesh/agents', {
      address: R,
      display_name: 'Registered',
      metadata: { owner: 'ops', nested: { x: 1 } },
    })
    expect(res.status).toBe(200)
    expect(Object.keys(res.body).sort()).toEqual(['agent', 'ok'])
    expect(Object.keys(res.body.agent).sort()).toEqual(MESH_AGENT_KEYS)
    expect(res.body.agent).toEqual({
      address_id: expect.stringMatching(/^addr_[0-9A-Za-z]+$/),
      address: R,
      display_name: 'Registered',
      health_status: 'unknown',
      last_heartbeat_at: null,
      created_at: iso(MAR_15 + 5 * MINUTE),
      intents_period: 0,
      cost_period: 0,
      metadata: { owner: 'ops', nested: { x: 1 } },
      labels: {},
      instances_total: 0,
      instances_healthy: 0,
    })
    const shown = await c.show(R)
    expect(shown.agent).toMatchObject({ address_id: res.body.agent.address_id, display_name: 'Registered', metadata: { owner: 'ops', nested: { x: 1 } } })
    // Address only: metadata is null, display_name the address's last segment.
    const bare = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: 'agent://views/prod/bare' })
    expect(bare.status).toBe(200)
    expect(bare.body.agent).toMatchObject({ display_name: 'bare', metadata: null, health_status: 'unknown' })

    expectError(await api(gw.url, operator, 'POST', '/v1/mesh/agents', { address: R }), 409, 'conflict')
    expectError(await api(gw.url, operator, 'POST', '/v1/mesh/agents', { address: M, display_name: 'again' }), 409, 'conflict')
    const unknownField = await api(gw.url, operator, 'POST', '/v1/mesh/agents', { address: 'agent://views/prod/extra', owner: 'me' })
    expectError(unknownField, 422, 'schema_invalid')
    expectError(await api(gw.url, operator, 'POST', '/v1/mesh/agents', { address: 'not-an-address' }), 422, 'schema_invalid')
    expectError(await api(gw.url, operator, 'POST', '/v1/mesh/agents', { address: 'agent://views/prod/x', metadata: [1] }), 422, 'schema_invalid')
    expectError(await api(gw.url, operator, 'POST', '/v1/mesh/agents', {}), 422, 'schema_invalid')
    expectError(await api(gw.url, viewer, 'POST', '/v1/mesh/agents', { address: 'agent://views/prod/v' }), 403, 'forbidden')
    expectError(await api(gw.url, keyN, 'POST', '/v1/mesh/agents', { address: 'agent://views/prod/a' }), 403, 'forbidden')
    // None of the refused calls registered anything.
    const all = await c.list()
    expect(all.agents.map((a) => a.address).sort()).toEqual([M, N, O, Z, R, 'agent://views/prod/bare'].sort())
    expect(all.summary.total).toBe(6)
  })
})

describe('heartbeats share commits on SQLite (CHOKEPOINT_HEARTBEAT_BATCH_MS)', () => {
  const WINDOW_MS = 2_000
  let gw: TestGateway
  beforeAll(async () => {
    // The sweeper's own writes are due at once and would take lingering beats along: slow it down.
    gw = await startTestGateway({ engine: 'sqlite', env: { ...SLOW_SWEEPER, CHOKEPOINT_HEARTBEAT_BATCH_MS: String(WINDOW_MS) } })
  })
  afterAll(() => gw.close())

  it('a lone beat waits for company up to the window; beats within it are answered together, after one commit', async () => {
    const keys = await Promise.all([1, 2, 3].map((i) => agentKey(gw, `agent://batch/prod/beat-${i}`)))
    const started = performance.now()
    const answers = await Promise.all(
      keys.map(async (key) => {
        const res = await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'i-1' })
        return { status: res.status, health: res.body.health_status, at: performance.now() - started }
      }),
    )
    expect(answers.map((a) => [a.status, a.health])).toEqual([
      [200, 'healthy'],
      [200, 'healthy'],
      [200, 'healthy'],
    ])
    // Not before the window (timers never fire early), and all three within a few ms of each other.
    for (const a of answers) expect(a.at).toBeGreaterThanOrEqual(WINDOW_MS - 5)
    const spread = Math.max(...answers.map((a) => a.at)) - Math.min(...answers.map((a) => a.at))
    expect(spread).toBeLessThan(WINDOW_MS / 2)
    // Committed when answered: the views show every instance.
    for (let i = 1; i <= 3; i += 1) {
      const agent = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(`agent://batch/prod/beat-${i}`)}`)
      expect(agent.body.agent.instances.map((x: { instance_id: string }) => x.instance_id)).toEqual(['i-1'])
    }
  })

  it('a write that is due now (a kill) does not wait for lingering beats, and takes them along', async () => {
    const beater = await agentKey(gw, 'agent://batch/prod/beater')
    await agentKey(gw, 'agent://batch/prod/target')
    const started = performance.now()
    const beat = api(gw.url, beater, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'i-1' }).then((res) => ({
      res,
      at: performance.now() - started,
    }))
    // Let the beat reach the store and start lingering, then kill another agent.
    await new Promise((r) => setTimeout(r, 200))
    const kill = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent('agent://batch/prod/target')}/kill`, { reason: 'test' })
    const killedAt = performance.now() - started
    expect(kill.status).toBe(200)
    const { res, at } = await beat
    expect(res.status).toBe(200)
    // Both long before the beat's window would have closed.
    expect(killedAt).toBeLessThan(WINDOW_MS / 2)
    expect(at).toBeLessThan(WINDOW_MS / 2)
  })
})
