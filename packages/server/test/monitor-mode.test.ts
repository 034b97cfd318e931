/**
 * Monitor mode (`enforcement: monitor`): a monitored policy of any kind never blocks or kills;
 * every decision it would have made is recorded (`policy.would_deny` / `policy.would_kill` mesh
 * events), counted (`chokepoint_policy_would_total{policy_id,decision}`) and shown by
 * `/v1/policies/evaluate`. Switched to enforce (a PUT with If-Match), the same policy blocks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('monitor-mode.test.ts')
const enc = encodeURIComponent

describe.each(ENGINES)('monitor mode (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-05-04T10:00:00.000Z'))
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
  })
  afterAll(async () => {
    await gw?.close()
  })

  const policy = async (address: string, body: Record<string, unknown>) => {
    const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body.policy
  }
  const send = (key: string, to: string, type = 'work.item') => api(gw.url, key, 'POST', '/v1/intents', { intent_type: type, to_agent: to, payload: {} })
  const events = async (address: string, type: string) =>
    (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?event_type=${type}&address=${enc(address)}&limit=500`)).body.events as any[]
  const agent = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
  const would = async (policyId: string, decision: string): Promise<number> => {
    const text = await (await fetch(`${gw.url}/metrics`)).text()
    const line = text.split('\n').find((l) => l.startsWith(`chokepoint_policy_would_total{policy_id="${policyId}",decision="${decision}"}`))
    return line ? Number(line.split(' ').pop()) : 0
  }
  const evaluate = async (from: string, to: string, type = 'work.item') => {
    const res = await api(gw.url, gw.adminKey, 'POST', '/v1/policies/evaluate', { from_agent: from, to_agent: to, intent_type: type })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body
  }

  it('a monitored rate limit with on_breach: kill blocks nothing and kills no one, but records each send it would have refused; enforced, it blocks and kills', async () => {
    const A = 'agent://mon/prod/looper'
    const B = 'agent://mon/prod/sink'
    const aKey = await agentKey(gw, A)
    await agentKey(gw, B)
    const p = await policy(A, { kind: 'rate', direction: 'send', max_per_hour: 3, on_breach: 'kill', enforcement: 'monitor' })
    expect(p.enforcement).toBe('monitor')

    const statuses: number[] = []
    for (let i = 0; i < 7; i++) statuses.push((await send(aKey, B)).status)
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 200])
    expect((await agent(A)).health_status).not.toBe('killed')

    const recorded = await events(A, 'policy.would_kill')
    expect(recorded).toHaveLength(4) // sends 4 to 7 would each have been refused (the 4th would have killed)
    expect(recorded[0].details).toMatchObject({ policy_id: p.policy_id, enforcement: 'monitor', decision: 'rate_limited', intent_type: 'work.item' })
    expect(recorded[0].details.reason).toMatch(/reached 3 intents sent per hour/)
    expect(await would(p.policy_id, 'kill')).toBe(4)
    expect(await events(A, 'agent.auto_killed')).toHaveLength(0)

    const ev = await evaluate(A, B)
    expect(ev.decision).toBe('allow')
    expect(ev.monitored).toEqual([
      expect.objectContaining({ policy_id: p.policy_id, would: 'kill', decision: 'rate_limited', agent: A, source: 'agent' }),
    ])

    // Switch it on: the next send is refused and the agent killed, as an enforced policy does.
    const put = await api(gw.url, gw.adminKey, 'PUT', `/v1/policies/${p.policy_id}`, { kind: 'rate', direction: 'send', max_per_hour: 3, on_breach: 'kill', enforcement: 'enforce' }, { 'if-match': String(p.version) })
    expect(put.status, JSON.stringify(put.body)).toBe(200)
    expect(put.body.policy.enforcement).toBe('enforce')
    const blocked = await send(aKey, B)
    expect(blocked.status).toBe(429)
    expect(blocked.body.error.details).toMatchObject({ policy_id: p.policy_id, auto_killed: true })
    expect((await agent(A)).health_status).toBe('killed')
    expect((await send(aKey, B)).body.error.code).toBe('agent_killed')
    expect(await would(p.policy_id, 'kill')).toBe(4) // enforced decisions are not "would" ones

    // The switch is audited with before/after enforcement.
    const audit = (await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')).body.entries as any[]
    const update = audit.find((e) => e.action === 'policy.update' && e.target === p.policy_id)
    expect(update.before.enforcement).toBe('monitor')
    expect(update.after.enforcement).toBe('enforce')
  })

  it('a monitored action denylist records policy.would_deny and lets the send through; enforced, it is 403 policy_denied', async () => {
    const A = 'agent://mon/prod/deployer'
    const B = 'agent://mon/prod/cluster'
    const aKey = await agentKey(gw, A)
    await agentKey(gw, B)
    const p = await policy(A, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.*'], enforcement: 'monitor' })
    expect((await send(aKey, B, 'deploy.prod')).status).toBe(200)
    expect((await send(aKey, B, 'status.read')).status).toBe(200)
    const recorded = await events(A, 'policy.would_deny')
    expect(recorded).toHaveLength(1)
    expect(recorded[0].details).toMatchObject({ policy_id: p.policy_id, decision: 'deny', intent_type: 'deploy.prod' })
    expect(await would(p.policy_id, 'deny')).toBe(1)
    const ev = await evaluate(A, B, 'deploy.prod')
    expect(ev.decision).toBe('allow')
    expect(ev.monitored).toHaveLength(1)
    expect(ev.monitored[0]).toMatchObject({ would: 'deny', decision: 'deny' })
    expect((await evaluate(A, B, 'status.read')).monitored).toEqual([])

    const put = await api(gw.url, gw.adminKey, 'PUT', `/v1/policies/${p.policy_id}`, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.*'] }, { 'if-match': '1' })
    expect(put.body.policy.enforcement).toBe('enforce')
    const denied = await send(aKey, B, 'deploy.prod')
    expect(denied.status).toBe(403)
    expect(denied.body.error.code).toBe('policy_denied')
    expect((await evaluate(A, B, 'deploy.prod')).decision).toBe('deny')
  })

  it('when an enforced policy refuses, the monitored verdicts on the same send are still recorded', async () => {
    const A = 'agent://mon/prod/both'
    const B = 'agent://mon/prod/both-sink'
    const aKey = await agentKey(gw, A)
    await agentKey(gw, B)
    await policy(A, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['drop.*'] })
    const monitored = await policy(B, { kind: 'action', direction: 'receive', mode: 'allowlist', patterns: ['work.*'], enforcement: 'monitor' })
    const res = await send(aKey, B, 'drop.table')
    expect(res.body.error.code).toBe('policy_denied')
    const recorded = await events(B, 'policy.would_deny')
    expect(recorded).toHaveLength(1)
    expect(recorded[0].details.policy_id).toBe(monitored.policy_id)
    expect(await would(monitored.policy_id, 'deny')).toBe(1)
  })

  it('a monitored cost ceiling with on_breach: kill: the agent keeps working, one policy.would_kill per day', async () => {
    const A = 'agent://mon/prod/client'
    const R = 'agent://mon/prod/spender'
    const aKey = await agentKey(gw, A)
    const rKey = await agentKey(gw, R)
    const p = await policy(R, { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'kill', enforcement: 'monitor' })
    for (const cost of [0.6, 0.6, 0.6]) {
      const sent = await send(aKey, R)
      const resolved = await api(gw.url, rKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED', cost_usd: cost })
      expect(resolved.status, JSON.stringify(resolved.body)).toBe(200)
    }
    expect((await agent(R)).health_status).not.toBe('killed')
    const recorded = await events(R, 'policy.would_kill')
    expect(recorded).toHaveLength(1)
    expect(recorded[0].details).toMatchObject({ policy_id: p.policy_id, decision: 'budget_exceeded' })
    expect(recorded[0].details.reason).toMatch(/cost ceiling reached: \$1\.2 of \$1 today/)
    expect(await would(p.policy_id, 'kill')).toBe(1)
    // Sends by the spender past the ceiling would be refused too: each is a would_kill.
    expect((await send(rKey, A)).status).toBe(200)
    expect(await would(p.policy_id, 'kill')).toBe(2)
    expect((await evaluate(R, A)).monitored[0]).toMatchObject({ would: 'kill', decision: 'budget_exceeded' })
  })

  it('a monitored dead-man switch records the kill it would have made, once per silence, and kills nothing', async () => {
    const A = 'agent://mon/prod/silent'
    const key = await agentKey(gw, A)
    const p = await policy(A, { kind: 'deadman', silent_after_seconds: 60, on_trigger: 'kill', enforcement: 'monitor' })
    expect((await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'pod-1' })).status).toBe(200)
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    await gw.gateway.sweeper.tick()
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    expect((await agent(A)).health_status).not.toBe('killed')
    const recorded = await events(A, 'policy.would_kill')
    expect(recorded).toHaveLength(1)
    expect(recorded[0].details.reason).toMatch(/dead-man switch: no heartbeat/)
    expect(await would(p.policy_id, 'kill')).toBe(1)
  })

  it('rejects an unknown enforcement with 422 naming the field', async () => {
    const A = 'agent://mon/prod/typo'
    await agentKey(gw, A)
    const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(A)}/policies`, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'block', enforcement: 'detect' })
    expect(res.status).toBe(422)
    expect(JSON.stringify(res.body.error)).toMatch(/enforcement/)
  })
})
