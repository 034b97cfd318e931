/**
 * Idempotent sends (DESIGN §5a, §11): scope (from_agent, key), canonical body comparison,
 * conflicts, concurrency, and keys kept for at least 24 h.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

/** Every case runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('idempotency.test.ts')

const TO = 'agent://acme/prod/idem-target'

async function sentBy(gw: TestGateway, address: string): Promise<any[]> {
  const res = await api(gw.url, gw.adminKey, 'GET', `/v1/intents?agent=${encodeURIComponent(address)}&direction=sent&limit=500`)
  expect(res.status).toBe(200)
  return res.body.intents as any[]
}

function send(gw: TestGateway, key: string, body: unknown, idem?: string) {
  return api(gw.url, key, 'POST', '/v1/intents', body, idem === undefined ? {} : { 'Idempotency-Key': idem })
}

describe.each(ENGINES)('idempotency (%s)', (engine) => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine })
  })
  afterAll(() => gw.close())

  it('same key + same body → the original intent_id, and only one intent stored', async () => {
    const A = 'agent://acme/prod/idem-a1'
    const key = await agentKey(gw, A)
    const body = { intent_type: 'deploy.service.v1', to_agent: TO, payload: { service: 'api', n: 1 } }
    const first = await send(gw, key, body, 'idem-key-1')
    expect(first.status).toBe(200)
    expect(first.body.ok).toBe(true)
    const second = await send(gw, key, body, 'idem-key-1')
    expect(second.status).toBe(200)
    expect(second.body.ok).toBe(true)
    expect(second.body.intent_id).toBe(first.body.intent_id)
    expect(second.body.created_at).toBe(first.body.created_at)

    const list = await sentBy(gw, A)
    expect(list.map((i) => i.intent_id)).toEqual([first.body.intent_id])
    const events = await api(gw.url, key, 'GET', `/v1/intents/${first.body.intent_id}/events`)
    expect(events.body.events.map((e: any) => e.event_type)).toEqual(['intent.created', 'intent.submitted'])

    // Without the header, the same body is a new intent.
    const third = await send(gw, key, body)
    expect(third.status).toBe(200)
    expect(third.body.intent_id).not.toBe(first.body.intent_id)
    expect(await sentBy(gw, A)).toHaveLength(2)
  })

  it('the body is compared canonically (key order and whitespace do not matter)', async () => {
    const A = 'agent://acme/prod/idem-a2'
    const key = await agentKey(gw, A)
    const text1 = `{"intent_type":"x.y.v1","to_agent":"${TO}","payload":{"a":1,"b":{"c":2,"d":3}}}`
    const text2 = `{ "payload": { "b": { "d": 3, "c": 2 }, "a": 1 },\n  "to_agent": "${TO}", "intent_type": "x.y.v1" }`
    const first = await send(gw, key, text1, 'canon-1')
    const second = await send(gw, key, text2, 'canon-1')
    expect(first.status).toBe(200)
    expect(second.status).toBe(200)
    expect(second.body.intent_id).toBe(first.body.intent_id)
    expect(await sentBy(gw, A)).toHaveLength(1)
  })

  it('same key + different body → 409 conflict, nothing new stored', async () => {
    const A = 'agent://acme/prod/idem-a3'
    const key = await agentKey(gw, A)
    const first = await send(gw, key, { intent_type: 'deploy.service.v1', to_agent: TO, payload: { v: 1 } }, 'idem-key-2')
    expect(first.status).toBe(200)
    for (const changed of [
      { intent_type: 'deploy.service.v1', to_agent: TO, payload: { v: 2 } },
      { intent_type: 'deploy.service.v2', to_agent: TO, payload: { v: 1 } },
      { intent_type: 'deploy.service.v1', to_agent: 'agent://acme/prod/idem-other', payload: { v: 1 } },
      { intent_type: 'deploy.service.v1', to_agent: TO, payload: { v: 1 }, correlation_id: 'c1' },
    ]) {
      const res = await send(gw, key, changed, 'idem-key-2')
      expect(res.status, JSON.stringify(changed)).toBe(409)
      expect(res.body.ok).toBe(false)
      expect(res.body.error.code).toBe('conflict')
      expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
    }
    const list = await sentBy(gw, A)
    expect(list.map((i) => i.intent_id)).toEqual([first.body.intent_id])
    // The other address was not registered by a refused send.
    const other = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/idem-other')}`)
    expect(other.status).toBe(404)
    // The original still replays.
    const replay = await send(gw, key, { intent_type: 'deploy.service.v1', to_agent: TO, payload: { v: 1 } }, 'idem-key-2')
    expect(replay.status).toBe(200)
    expect(replay.body.intent_id).toBe(first.body.intent_id)
  })

  it('the same key from a different sender is independent', async () => {
    const A = 'agent://acme/prod/idem-a4'
    const C = 'agent://acme/prod/idem-c4'
    const keyA = await agentKey(gw, A)
    const keyC = await agentKey(gw, C)
    const body = { intent_type: 'deploy.service.v1', to_agent: TO, payload: { same: true } }
    const fromA = await send(gw, keyA, body, 'shared-key')
    const fromC = await send(gw, keyC, body, 'shared-key')
    expect(fromA.status).toBe(200)
    expect(fromC.status).toBe(200)
    expect(fromC.body.intent_id).not.toBe(fromA.body.intent_id)
    // A different body under the same key from yet another sender is no conflict either.
    const fromC2 = await send(gw, keyC, { ...body, payload: { same: false } }, 'shared-key-2')
    expect(fromC2.status).toBe(200)
    const fromA2 = await send(gw, keyA, { ...body, payload: { same: 'other' } }, 'shared-key-2')
    expect(fromA2.status).toBe(200)
    expect((await sentBy(gw, A)).map((i) => i.intent_id).sort()).toEqual([fromA.body.intent_id, fromA2.body.intent_id].sort())
    expect((await sentBy(gw, C)).map((i) => i.intent_id).sort()).toEqual([fromC.body.intent_id, fromC2.body.intent_id].sort())
    const got = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${fromC.body.intent_id}`)
    expect(got.body.intent.from_agent).toBe(C)
  })

  it('an operator sending as an agent shares that agent\'s idempotency scope', async () => {
    const A = 'agent://acme/prod/idem-a5'
    const key = await agentKey(gw, A)
    const body = { intent_type: 'deploy.service.v1', to_agent: TO, payload: { op: 1 } }
    const byAgent = await send(gw, key, body, 'scope-key')
    const byAdmin = await send(gw, gw.adminKey, { ...body, from_agent: A }, 'scope-key')
    expect(byAgent.status).toBe(200)
    expect(byAdmin.status).toBe(200)
    expect(byAdmin.body.intent_id).toBe(byAgent.body.intent_id)
    expect(await sentBy(gw, A)).toHaveLength(1)
  })

  it('20 concurrent requests with the same key and body → all 200 with one intent_id', async () => {
    const A = 'agent://acme/prod/idem-a6'
    const key = await agentKey(gw, A)
    const body = { intent_type: 'deploy.service.v1', to_agent: TO, payload: { burst: true } }
    const results = await Promise.all(Array.from({ length: 20 }, () => send(gw, key, body, 'burst-key')))
    for (const r of results) {
      expect(r.status, JSON.stringify(r.body)).toBe(200)
      expect(r.body.ok).toBe(true)
    }
    const ids = new Set(results.map((r) => r.body.intent_id))
    expect(ids.size).toBe(1)
    const list = await sentBy(gw, A)
    expect(list).toHaveLength(1)
    expect(list[0].intent_id).toBe([...ids][0])
  })

  it('20 concurrent requests with the same key but different bodies → one 200, the rest 409', async () => {
    const A = 'agent://acme/prod/idem-a7'
    const key = await agentKey(gw, A)
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        send(gw, key, { intent_type: 'deploy.service.v1', to_agent: TO, payload: { i } }, 'race-key'),
      ),
    )
    const ok = results.filter((r) => r.status === 200)
    const conflicts = results.filter((r) => r.status === 409)
    expect(ok).toHaveLength(1)
    expect(conflicts).toHaveLength(19)
    for (const c of conflicts) expect(c.body.error.code).toBe('conflict')
    const list = await sentBy(gw, A)
    expect(list.map((i) => i.intent_id)).toEqual([ok[0]!.body.intent_id])
  })

  it('a malformed Idempotency-Key is 400 invalid_request', async () => {
    const A = 'agent://acme/prod/idem-a8'
    const key = await agentKey(gw, A)
    const res = await send(gw, key, { intent_type: 'deploy.service.v1', to_agent: TO, payload: {} }, 'k'.repeat(300))
    expect(res.status).toBe(400)
    expect(res.body.error.code).toBe('invalid_request')
    expect(await sentBy(gw, A)).toHaveLength(0)
  })
})

describe.each(ENGINES)('idempotency keys are kept at least 24 h (%s)', (engine) => {
  let gw: TestGateway
  const clock = new ManualClock(Date.parse('2030-01-06T10:00:00.000Z'))
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock })
  })
  afterAll(() => gw.close())

  it('a replay 25 h later, after sweeper passes, still returns the original intent', async () => {
    const A = 'agent://acme/prod/idem-ttl'
    const key = await agentKey(gw, A)
    const body = { intent_type: 'deploy.service.v1', to_agent: TO, payload: { ttl: 1 } }
    const first = await send(gw, key, body, 'ttl-key')
    expect(first.status).toBe(200)
    await gw.gateway.sweeper.tick()
    clock.advance(25 * 3_600_000)
    await gw.gateway.sweeper.tick()
    const replay = await send(gw, key, body, 'ttl-key')
    expect(replay.status).toBe(200)
    expect(replay.body.intent_id).toBe(first.body.intent_id)
    const mismatch = await send(gw, key, { ...body, payload: { ttl: 2 } }, 'ttl-key')
    expect(mismatch.status).toBe(409)
    expect(await sentBy(gw, A)).toHaveLength(1)
  })
})
