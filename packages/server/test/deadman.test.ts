/**
 * The dead-man switch: a `deadman` policy kills (or alerts on) an agent none of whose instances
 * has beaten for `silent_after_seconds`, without anyone asking, exactly once per silence — also
 * when three replicas on one PostgreSQL database sweep at the same moment. Manual clocks; the
 * background sweeper is slowed so that the passes the test runs are the only ones.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('deadman.test.ts')
const SLOW_SWEEPER = { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' }
const enc = encodeURIComponent

describe.each(ENGINES)('dead-man switch (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-04-01T10:00:00.000Z'))
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: SLOW_SWEEPER })
  })
  afterAll(async () => {
    await gw?.close()
  })
  const beat = (key: string) => api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'pod-1' })
  const agent = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
  const audits = async (target: string) =>
    ((await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')).body.entries as any[]).filter(
      (e) => e.target === target && e.action === 'agent.auto_kill',
    )

  it('validates the policy', async () => {
    const address = 'agent://dm/prod/invalid'
    await agentKey(gw, address)
    for (const body of [
      { kind: 'deadman', silent_after_seconds: 5, on_trigger: 'kill' },
      { kind: 'deadman', silent_after_seconds: 60, on_trigger: 'explode' },
      { kind: 'deadman', silent_after_seconds: 60.5, on_trigger: 'kill' },
      { kind: 'deadman', on_trigger: 'kill' },
    ]) {
      const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
      expect(res.status, JSON.stringify(body)).toBe(422)
    }
  })

  it('kills a silent agent once (actor policy:<id>, reason naming the silence); a resume gives it a full period again', async () => {
    const address = 'agent://dm/prod/looper'
    const key = await agentKey(gw, address)
    const created = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, {
      kind: 'deadman',
      silent_after_seconds: 60,
      on_trigger: 'kill',
    })
    expect(created.status, JSON.stringify(created.body)).toBe(200)
    const policyId = created.body.policy.policy_id
    expect((await beat(key)).status).toBe(200)
    clock.advance(30_000)
    expect((await beat(key)).status).toBe(200) // still beating: silence restarts
    clock.advance(59_000)
    await gw.gateway.sweeper.tick()
    expect((await agent(address)).health_status).not.toBe('killed')
    clock.advance(1_000)
    await gw.gateway.sweeper.tick()
    const killed = await agent(address)
    expect(killed.health_status).toBe('killed')
    expect(killed.kill_reason).toMatch(/dead-man switch: no heartbeat from any instance for 60 s/)
    const refused = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'dm.v1', to_agent: 'agent://dm/prod/sink', payload: {} })
    expect(refused.body.error?.code).toBe('agent_killed')
    await gw.gateway.sweeper.tick()
    clock.advance(120_000)
    await gw.gateway.sweeper.tick()
    const entries = await audits(address)
    expect(entries).toHaveLength(1)
    expect(entries[0].actor).toBe(`policy:${policyId}`)

    // Resume: not killed again at the next pass, only after a new full silence.
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/resume`, {})).status).toBe(200)
    await gw.gateway.sweeper.tick()
    clock.advance(59_000)
    await gw.gateway.sweeper.tick()
    expect((await agent(address)).health_status).not.toBe('killed')
    clock.advance(1_000)
    await gw.gateway.sweeper.tick()
    expect((await agent(address)).health_status).toBe('killed')
    expect(await audits(address)).toHaveLength(2)
  })

  it('on_trigger alert records one agent.deadman event per silence and kills nothing; a disabled policy does nothing', async () => {
    const address = 'agent://dm/prod/quiet'
    const key = await agentKey(gw, address)
    await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, {
      kind: 'deadman',
      silent_after_seconds: 60,
      on_trigger: 'alert',
    })
    const off = 'agent://dm/prod/off'
    await agentKey(gw, off)
    await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(off)}/policies`, {
      kind: 'deadman',
      silent_after_seconds: 60,
      on_trigger: 'kill',
      enabled: false,
    })
    await beat(key)
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    const events = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?event_type=agent.deadman&address=${enc(address)}`)).body.events
    expect(events).toHaveLength(1)
    expect((await agent(address)).health_status).not.toBe('killed')
    expect((await agent(off)).health_status).not.toBe('killed')
    // It beats again, then falls silent again: a second event.
    await beat(key)
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    const again = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?event_type=agent.deadman&address=${enc(address)}`)).body.events
    expect(again).toHaveLength(2)
  })
})

describe.skipIf(!ENGINES.includes('postgres'))('dead-man switch on three PostgreSQL replicas sweeping at once', () => {
  const clock = new ManualClock(Date.parse('2026-04-02T10:00:00.000Z'))
  const replicas: TestGateway[] = []
  beforeAll(async () => {
    const first = await startTestGateway({ engine: 'postgres', clock, env: SLOW_SWEEPER })
    replicas.push(first)
    for (let i = 0; i < 2; i += 1) {
      replicas.push(
        await startTestGateway({
          engine: 'postgres',
          clock,
          databaseUrl: first.databaseUrl as string,
          env: { ...SLOW_SWEEPER, CHOKEPOINT_ADMIN_KEY: first.adminKey },
        }),
      )
    }
  }, 60_000)
  afterAll(async () => {
    for (const r of replicas.reverse()) await r.close()
  })

  it('fires exactly once: one kill, one audit entry, one agent.auto_killed event for 20 silent agents', async () => {
    const gw = replicas[0]!
    const addresses = Array.from({ length: 20 }, (_, i) => `agent://dm3/prod/a${i}`)
    for (const address of addresses) {
      const key = await agentKey(gw, address)
      await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, {
        kind: 'deadman',
        silent_after_seconds: 30,
        on_trigger: 'kill',
      })
      await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'pod' })
    }
    clock.advance(31_000)
    await Promise.all(replicas.map((r) => r.gateway.sweeper.tick()))
    await Promise.all(replicas.map((r) => r.gateway.sweeper.tick()))
    const entries = ((await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?action_prefix=agent.auto_kill&limit=500')).body.entries as any[])
    const events = (await api(gw.url, gw.adminKey, 'GET', '/v1/mesh/events?event_type=agent.auto_killed&limit=500')).body.events as any[]
    for (const address of addresses) {
      expect((await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent.health_status).toBe('killed')
      expect(entries.filter((e) => e.target === address), address).toHaveLength(1)
      expect(events.filter((e) => e.address === address), address).toHaveLength(1)
    }
  }, 60_000)
})
