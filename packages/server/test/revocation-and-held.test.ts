import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, openSseStream, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'

const enc = encodeURIComponent

describe.each(testEngines())('revoked keys and held work (%s)', (engine) => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine })
  })
  afterAll(() => gw.close())

  it("revoking a key ends the inbox stream it opened; nothing more is leased to it", async () => {
    const worker = 'agent://rev/prod/worker'
    const created = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: worker })
    const sender = await agentKey(gw, 'agent://rev/prod/sender')
    const stream = await openSseStream(gw.url, created.body.key, '/v1/agents/rev/prod/worker/intents/stream', { 'x-instance-id': 'i1' })
    expect(stream.status).toBe(200)
    const revoked = await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)
    expect(revoked.status).toBe(200)
    await pollUntil(() => stream.ended, { what: 'the revoked key’s stream to end' })
    expect(stream.frames.at(-1)?.data.error.code).toBe('unauthorized')
    const sent = await api(gw.url, sender, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: worker, payload: {} })
    expect(sent.status).toBe(200)
    const intent = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${sent.body.intent_id}`)
    expect(intent.body.intent.delivery_state).toBe('queued')
    expect(stream.frames.filter((f) => f.event === 'intent.delivered')).toHaveLength(0)
  })

  it('a revoked key’s mesh event stream ends', async () => {
    const viewer = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer' })
    const stream = await openSseStream(gw.url, viewer.body.key, '/v1/mesh/events/stream')
    expect(stream.status).toBe(200)
    await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${viewer.body.key_id}`)
    await pollUntil(() => stream.ended, { what: 'the stream to end' })
  })

  it('a killed agent cannot read its held work; a live recipient cannot resolve a held intent', async () => {
    const victim = 'agent://rev/prod/victim'
    const victimKey = await agentKey(gw, victim)
    const peer = 'agent://rev/prod/peer'
    const peerKey = await agentKey(gw, peer)
    const inbound = await api(gw.url, peerKey, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: victim, payload: { secret: 'held' } })
    const outbound = await api(gw.url, victimKey, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: peer, payload: {} })
    expect([inbound.status, outbound.status]).toEqual([200, 200])
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(victim)}/kill`, {})).status).toBe(200)

    const list = await api(gw.url, victimKey, 'GET', '/v1/intents?direction=received')
    expect(list.status).toBe(403)
    expect(list.body.error.code).toBe('agent_killed')
    const one = await api(gw.url, victimKey, 'GET', `/v1/intents/${inbound.body.intent_id}`)
    expect(one.body.error.code).toBe('agent_killed')

    const held = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${outbound.body.intent_id}`)
    expect(held.body.intent.delivery_state).toBe('held')
    const resolved = await api(gw.url, peerKey, 'POST', `/v1/intents/${outbound.body.intent_id}/resolve`, { status: 'COMPLETED' })
    expect(resolved.status).toBe(409)
    // An operator may still cancel it.
    const canceled = await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${outbound.body.intent_id}/resolve`, { status: 'CANCELED' })
    expect(canceled.status).toBe(200)
  })

  it('a malformed If-Match is a 400', async () => {
    const address = 'agent://rev/prod/policied'
    await agentKey(gw, address)
    const created = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, {
      kind: 'rate',
      direction: 'send',
      max_per_hour: 5,
      on_breach: 'block',
    })
    const put = await api(
      gw.url,
      gw.adminKey,
      'PUT',
      `/v1/policies/${created.body.policy.policy_id}`,
      { kind: 'rate', direction: 'send', max_per_hour: 6, on_breach: 'block' },
      { 'if-match': '"1' },
    )
    expect(put.status).toBe(400)
    expect(put.body.error.code).toBe('invalid_request')
  })
})

describe.each(testEngines())('idempotency key outliving its purged intent (%s)', (engine) => {
  it('a replay after the intent was purged is accepted as a new intent, not a 500', async () => {
    const { ManualClock } = await import('../src/index.js')
    const clock = new ManualClock(Date.parse('2026-03-10T10:00:00Z'))
    const gw = await startTestGateway({ engine, clock, env: { CHOKEPOINT_RETENTION_DAYS: '1', CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
    try {
      const a = await agentKey(gw, 'agent://idem/prod/a')
      const b = await agentKey(gw, 'agent://idem/prod/b')
      const body = { intent_type: 'work.v1', to_agent: 'agent://idem/prod/b', payload: { n: 1 } }
      const first = await api(gw.url, a, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-purged' })
      expect(first.status).toBe(200)
      const done = await api(gw.url, b, 'POST', `/v1/intents/${first.body.intent_id}/resolve`, { status: 'COMPLETED' })
      expect(done.status).toBe(200)
      clock.advance(36 * 3_600_000)
      await gw.gateway.sweeper.tick()
      expect((await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${first.body.intent_id}`)).status).toBe(404)
      const again = await api(gw.url, a, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-purged' })
      expect(again.status).toBe(200)
      expect(again.body.intent_id).not.toBe(first.body.intent_id)
      const replay = await api(gw.url, a, 'POST', '/v1/intents', body, { 'idempotency-key': 'k-purged' })
      expect(replay.body.intent_id).toBe(again.body.intent_id)
    } finally {
      await gw.close()
    }
  })
})
