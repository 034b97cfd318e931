import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, startTestGateway, type TestGateway } from '../../server/test/harness.js'
import {
  Agent,
  AgentKilledError,
  ConflictError,
  NotFoundError,
  Operator,
  PermissionDeniedError,
  RateLimitError,
  UnprocessableEntityError,
  type ActionPolicyBody,
  type KilledEvent,
  type MeshEvent,
} from '../src/index.js'
import { hasRoute, next, waitFor } from './helpers.js'

const OPS = 'agent://acme/prod/ops'

describe('Operator against a real gateway', () => {
  let gw: TestGateway
  let operator: Operator
  let ops: Agent
  let n = 0

  async function newAgent(instanceId = 'i-1'): Promise<{ address: string; agent: Agent }> {
    n += 1
    const address = `agent://acme/prod/target-${n}`
    return { address, agent: new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, address), address, instanceId }) }
  }

  beforeAll(async () => {
    gw = await startTestGateway()
    operator = new Operator({ baseURL: gw.url, apiKey: gw.adminKey })
    ops = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, OPS), address: OPS })
  })
  afterAll(async () => {
    ops?.close()
    await gw?.close()
  })

  it('agents table: search, sort over all pages, offset paging, cost ceiling, cost by hour', async () => {
    const heavy = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, 'agent://sdktable/prod/heavy'), address: 'agent://sdktable/prod/heavy' })
    const light = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, 'agent://sdktable/prod/light'), address: 'agent://sdktable/prod/light' })
    await operator.agents.register({ address: 'agent://sdktable/prod/idle', display_name: 'Idle 50%' })
    await heavy.heartbeat({ metrics: { cost_usd: 18.6 } })
    await light.heartbeat({ metrics: { cost_usd: 0.4 } })
    await operator.policies.create('agent://sdktable/prod/heavy', { kind: 'cost', max_cost_per_day_usd: 50, on_breach: 'block' })

    const first = await operator.agents.list({ q: 'SDKTABLE/', sort: 'cost', limit: 2 })
    expect(first.total).toBe(3)
    expect(first.next_offset).toBe(2)
    expect(first.agents.map((a) => [a.address, a.cost_period, a.cost_ceiling_usd])).toEqual([
      ['agent://sdktable/prod/heavy', 18.6, 50],
      ['agent://sdktable/prod/light', 0.4, null],
    ])
    const rest = await operator.agents.list({ q: 'sdktable/', sort: 'cost', limit: 2, offset: first.next_offset ?? 0 })
    expect(rest).toMatchObject({ total: 3, next_offset: null })
    expect(rest.agents.map((a) => a.address)).toEqual(['agent://sdktable/prod/idle'])
    expect((await operator.agents.list({ q: '50%' })).agents.map((a) => a.address)).toEqual(['agent://sdktable/prod/idle'])
    const byBeat = await operator.agents.list({ q: 'sdktable/', sort: 'last_heartbeat', order: 'desc' })
    expect(byBeat.agents.at(-1)?.address).toBe('agent://sdktable/prod/idle') // never beat: last
    expect((await operator.agents.retrieve('agent://sdktable/prod/heavy')).agent.cost_ceiling_usd).toBe(50)

    const chart = await operator.agents.costByHour('agent://sdktable/prod/heavy', { hours: 3 })
    expect(chart.hours).toHaveLength(3)
    expect(chart.hours.map((h) => h.hour)).toEqual([...chart.hours.map((h) => h.hour)].sort())
    expect(chart.hours[2]?.hour).toBe(new Date().toISOString().slice(0, 13))
    expect(chart.hours.reduce((sum, h) => sum + h.cost_usd, 0)).toBeCloseTo(18.6, 6)
    expect((await operator.agents.costByHour(chart.address_id)).hours).toHaveLength(24)
    await expect(operator.agents.costByHour(chart.address_id, { hours: 0 })).rejects.toBeInstanceOf(UnprocessableEntityError)
    await expect(operator.agents.list({ sort: 'name' as never })).rejects.toBeInstanceOf(UnprocessableEntityError)
    heavy.close()
    light.close()
  })

  it('labels, kill by selector, the standing fleet kill list and resume by selector', async () => {
    const a = (await operator.agents.register({ address: 'agent://sdkfleet/prod/a', labels: { team: 'payments' } })).agent
    expect(a.labels).toEqual({ team: 'payments' })
    const b = (await operator.agents.register({ address: 'agent://sdkfleet/prod/b' })).agent
    expect(b.labels).toEqual({})
    expect((await operator.agents.update(b.address, { labels: { team: 'payments' }, display_name: 'B' })).agent).toMatchObject({
      labels: { team: 'payments' },
      display_name: 'B',
    })
    const dry = await operator.agents.killSelector({ selector: { address: 'agent://sdkfleet/**' }, dry_run: true })
    expect(dry.killed.map((x) => x.address)).toEqual(['agent://sdkfleet/prod/a', 'agent://sdkfleet/prod/b'])
    const killed = await operator.agents.killSelector({ selector: { address: 'agent://sdkfleet/**', labels: { team: 'payments' } }, reason: 'sdk' })
    expect(killed.killed).toHaveLength(2)
    const standing = await operator.agents.fleetKills({ standing: true })
    expect(standing.fleet_kills.map((f) => f.fleet_kill_id)).toContain(killed.fleet_kill_id)
    await expect(operator.agents.killSelector({ selector: {} })).rejects.toMatchObject({ status: 400 })
    const resumed = await operator.agents.resumeSelector({ selector: { labels: { team: 'payments' }, address: 'agent://sdkfleet/**' } })
    expect(resumed.ended_fleet_kills).toEqual([killed.fleet_kill_id])
    expect((await operator.agents.fleetKills({ standing: true })).fleet_kills.map((f) => f.fleet_kill_id)).not.toContain(killed.fleet_kill_id)
  })

  it('kills and resumes by address and by id; both are audited and evented', async (ctx) => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/agents/addr_none/kill', {}))) return ctx.skip('kill is not served yet')
    const { address } = await newAgent()
    const { agent: row } = await operator.agents.retrieve(address)
    const killed = await operator.agents.kill(row.address_id, { reason: 'runaway', cancel_pending: false })
    expect(killed).toMatchObject({ ok: true, address_id: row.address_id, address, health_status: 'killed', held_intents: 0 })
    const again = await operator.agents.kill(address)
    expect(again.killed_at).toBe(killed.killed_at) // a second kill is a no-op
    expect((await operator.agents.retrieve(address)).agent).toMatchObject({ health_status: 'killed', kill_reason: 'runaway' })
    expect((await operator.agents.list({ health: 'killed' })).agents.map((a) => a.address)).toContain(address)

    const resumed = await operator.agents.resume(address, { reason: 'fixed' })
    expect(resumed).toMatchObject({ ok: true, address, redelivering: 0, resumed_at: expect.any(String) })
    expect(resumed.health_status).not.toBe('killed')

    const { entries } = await operator.audit.list({ target: address })
    expect(entries.map((e) => e.action)).toEqual(['agent.kill', 'agent.resume'])
    expect(entries[0]).toMatchObject({ reason: 'runaway', actor: expect.stringMatching(/^key:/), hash: expect.stringMatching(/^[0-9a-f]{64}$/) })
    expect(entries[1]?.prev_hash).toBe(entries[0]?.hash)
    const page = await operator.audit.list({ limit: 1, action_prefix: 'agent.' })
    expect(page.entries).toHaveLength(1)
    expect(page.next_after_seq).toBe(page.entries[0]?.seq)
    expect(await operator.audit.verify()).toMatchObject({ ok: true, valid: true, first_broken_seq: null })

    const { events } = await operator.events.list({ address })
    expect(events.map((e) => e.event_type)).toEqual(expect.arrayContaining(['agent.killed', 'agent.resumed']))
    expect((await operator.events.list({ event_type: 'agent.killed', limit: 500 })).events.every((e) => e.event_type === 'agent.killed')).toBe(
      true,
    )
    await expect(operator.agents.kill('agent://acme/prod/never-seen')).rejects.toBeInstanceOf(NotFoundError)
    await expect(operator.agents.kill(address, { reason: 'x', extra: 1 } as never)).rejects.toBeInstanceOf(UnprocessableEntityError)
  })

  it('quarantines one instance: its inbox ends with AgentKilledError (quarantined), its sibling takes its work; resume', async () => {
    const { address, agent: podA } = await newAgent('pod-a')
    const podB = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, address), address, instanceId: 'pod-b' })
    const killed: KilledEvent[] = []
    podA.onKilled((event) => killed.push(event))
    const inboxA = podA.listen({ leaseSeconds: 300 })
    const sent = await ops.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 1 } })
    const first = await next(inboxA)
    expect(first.intent_id).toBe(sent.intent_id)
    const inboxB = podB.listen({ leaseSeconds: 300 })
    const quarantine = await operator.agents.killInstance(address, 'pod-a', { reason: 'bad pod' })
    expect(quarantine).toMatchObject({ ok: true, instance_id: 'pod-a', quarantined: true, changed: true, requeued: 1, reason: 'bad pod' })
    // The sibling receives what pod-a held; pod-a's inbox ends with a quarantine error.
    const moved = await next(inboxB)
    expect(moved).toMatchObject({ intent_id: sent.intent_id, delivery_attempt: 2 })
    const ended = await next(inboxA).catch((e: unknown) => e)
    expect(ended).toBeInstanceOf(AgentKilledError)
    expect(ended).toMatchObject({ status: 403, code: 'agent_killed', quarantined: true, instanceId: 'pod-a' })
    await waitFor(() => killed.length > 0, 5_000, 'onKilled of pod-a')
    // pod-a's ack, resolve and sends (which carry its x-instance-id) are refused; pod-b works.
    await expect(podA.ack(sent.intent_id)).rejects.toMatchObject({ quarantined: true })
    await expect(podA.send({ to_agent: OPS, intent_type: 'job.v1' })).rejects.toBeInstanceOf(AgentKilledError)
    await podB.resolve(sent.intent_id, { status: 'COMPLETED' })
    const { instances } = await operator.agents.instances(address)
    expect(instances.find((i) => i.instance_id === 'pod-a')).toMatchObject({ quarantined: true, quarantine_reason: 'bad pod' })
    expect((await operator.agents.killInstance(address, 'pod-a')).changed).toBe(false)
    const resumed = await operator.agents.resumeInstance(address, 'pod-a', { reason: 'replaced' })
    expect(resumed).toMatchObject({ ok: true, quarantined: false, changed: true, resumed_at: expect.any(String) })
    expect((await operator.agents.resumeInstance(address, 'pod-a')).changed).toBe(false)
    await podA.send({ to_agent: OPS, intent_type: 'job.v1' })
    const { entries } = await operator.audit.list({ action_prefix: 'instance.', target: address })
    expect(entries.map((e) => e.action)).toEqual(['instance.kill', 'instance.resume'])
    await expect(operator.agents.killInstance('agent://acme/prod/never-seen', 'x')).rejects.toBeInstanceOf(NotFoundError)
    const asAgent = new Operator({ baseURL: gw.url, apiKey: await agentKey(gw, address) })
    await expect(asAgent.agents.killInstance(address, 'pod-b')).rejects.toBeInstanceOf(PermissionDeniedError)
    podA.close()
    podB.close()
  })

  it('an agent key may not kill', async () => {
    const { address } = await newAgent()
    const asAgent = new Operator({ baseURL: gw.url, apiKey: await agentKey(gw, 'agent://acme/prod/rogue') })
    await expect(asAgent.agents.kill(address)).rejects.toBeInstanceOf(PermissionDeniedError)
  })

  it('heartbeats report health; a killed agent hears "killed" and onKilled fires once', async (ctx) => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/heartbeat'))) return ctx.skip('heartbeat is not served yet')
    const { address, agent } = await newAgent('hb-1')
    const beat = await agent.heartbeat({ metrics: { intents_total: 3, intents_succeeded: 3, intents_failed: 0, avg_latency_ms: 5, cost_usd: null } })
    expect(beat).toMatchObject({ ok: true, address, instance_id: 'hb-1', next_heartbeat_s: expect.any(Number) })
    expect(beat.health_status).not.toBe('killed')
    const detail = await operator.agents.retrieve(address)
    expect(detail.agent.instances).toEqual([expect.objectContaining({ instance_id: 'hb-1', last_heartbeat_at: expect.any(String) })])

    const events: KilledEvent[] = []
    agent.onKilled((event) => events.push(event))
    await operator.agents.kill(address, { reason: 'budget' })
    const errors: unknown[] = []
    agent.startHeartbeat({ intervalMs: 20, onError: (e) => errors.push(e) })
    await waitFor(() => events.length > 0, 5_000, 'onKilled')
    await new Promise((resolve) => setTimeout(resolve, 100)) // several more beats, still "killed"
    agent.stopHeartbeat()
    expect(errors).toEqual([])
    expect(events).toEqual([{ source: 'heartbeat', message: expect.stringContaining(address), requestId: undefined }])
    expect(agent.killed).toBe(true)

    await operator.agents.resume(address)
    expect((await agent.heartbeat()).health_status).not.toBe('killed')
    expect(agent.killed).toBe(false)
  })

  it('discovers the address from a heartbeat', async (ctx) => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/heartbeat'))) return ctx.skip('heartbeat is not served yet')
    const address = 'agent://acme/prod/anonymous'
    const agent = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, address) })
    expect(() => agent.listen()).toThrow(/needs the agent address/)
    await agent.heartbeat()
    expect(agent.address).toBe(address)
    const inbox = agent.listen()
    const pending = next(inbox)
    await ops.send({ to_agent: address, intent_type: 'hello.v1' })
    expect((await pending).from_agent).toBe(OPS)
    await inbox.return()
  })

  it('a 403 agent_killed fires onKilled for the killed agent only', async (ctx) => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/agents/addr_none/kill', {}))) return ctx.skip('kill is not served yet')
    const { address, agent } = await newAgent()
    const opsEvents: KilledEvent[] = []
    const off = ops.onKilled((event) => opsEvents.push(event))
    const events: KilledEvent[] = []
    agent.onKilled((event) => events.push(event))
    await operator.agents.kill(address)
    const refused = await ops.send({ to_agent: address, intent_type: 'job.v1' }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(AgentKilledError)
    expect((refused as AgentKilledError).address).toBe(address)
    expect(opsEvents).toEqual([])
    const own = await agent.send({ to_agent: OPS, intent_type: 'job.v1' }).catch((e: unknown) => e)
    expect(own).toBeInstanceOf(AgentKilledError)
    expect(events).toEqual([expect.objectContaining({ source: 'request', error: own })])
    off()
    await operator.agents.resume(address)
    await agent.send({ to_agent: OPS, intent_type: 'job.v1' })
    expect(agent.killed).toBe(false)
  })

  it('creates, reads, updates, evaluates and deletes policies', async (ctx) => {
    if (!(await hasRoute(gw, 'GET', '/v1/policies/pol_none'))) return ctx.skip('policies are not served yet')
    const { address, agent } = await newAgent()
    const created = await operator.policies.create(address, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.**'] })
    expect(created.policy).toMatchObject({ kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.**'], enabled: true, version: 1 })
    const id = created.policy.policy_id
    expect((await operator.policies.retrieve(id)).policy.policy_id).toBe(id)
    expect((await operator.policies.list(address)).policies.map((p) => p.policy_id)).toEqual([id])

    const denied = await operator.policies.evaluate({ from_agent: address, to_agent: OPS, intent_type: 'deploy.service.v1' })
    expect(denied).toMatchObject({ ok: true, decision: 'deny', policy_id: id })
    const allowed = await operator.policies.evaluate({ from_agent: address, to_agent: OPS, intent_type: 'report.v1' })
    expect(allowed).toMatchObject({ decision: 'allow', policy_id: null })
    await expect(agent.send({ to_agent: OPS, intent_type: 'deploy.service.v1' })).rejects.toMatchObject({ status: 403, code: 'policy_denied' })

    const body: ActionPolicyBody = { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.*.v2'] }
    const updated = await operator.policies.update(id, body, { version: 1 })
    expect(updated.policy).toMatchObject({ version: 2, patterns: ['deploy.*.v2'] })
    await expect(operator.policies.update(id, body, { version: 1 })).rejects.toBeInstanceOf(ConflictError)
    await expect(operator.policies.create(address, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['Bad Glob'] })).rejects.toMatchObject({
      status: 422,
      code: 'schema_invalid',
    })

    await expect(operator.policies.delete(id, { version: 1 })).rejects.toBeInstanceOf(ConflictError)
    expect(await operator.policies.delete(id, { version: 2 })).toEqual({ ok: true, deleted: id })
    await expect(operator.policies.retrieve(id)).rejects.toBeInstanceOf(NotFoundError)
    const actions = (await operator.audit.list({ target: id })).entries.map((e) => e.action)
    expect(actions).toEqual(['policy.create', 'policy.update', 'policy.delete'])
  })

  it('whoami names the key', async () => {
    expect(await operator.whoami()).toMatchObject({ ok: true, role: 'admin', agent: null })
  })

  it('monitor mode and default policies: would-be decisions in evaluate, defaults in effective policies', async () => {
    const { address, agent } = await newAgent()
    const watched = await operator.policies.create(address, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['deploy.**'], enforcement: 'monitor' })
    expect(watched.policy.enforcement).toBe('monitor')
    await agent.send({ to_agent: OPS, intent_type: 'deploy.service.v1' }) // not blocked
    const ev = await operator.policies.evaluate({ from_agent: address, to_agent: OPS, intent_type: 'deploy.service.v1' })
    expect(ev).toMatchObject({ decision: 'allow', decided_by: null })
    expect(ev.monitored).toEqual([expect.objectContaining({ policy_id: watched.policy.policy_id, would: 'deny', source: 'agent' })])
    const events = await operator.events.list({ event_type: 'policy.would_deny', address })
    expect(events.events).toHaveLength(1)

    const set = await operator.policies.replaceDefaults([{ kind: 'rate', direction: 'send', max_per_day: 1000, on_breach: 'block' }])
    expect(set.changed).toBe(true)
    expect(set.policies[0]).toMatchObject({ default: true, address_id: null, kind: 'rate' })
    expect((await operator.policies.defaults()).policies.map((p) => p.policy_id)).toEqual([set.policies[0]?.policy_id])
    const listed = await operator.policies.list(address)
    expect(listed.effective.map((p) => p.policy_id)).toEqual([watched.policy.policy_id, set.policies[0]?.policy_id])
    expect((await operator.agents.retrieve(address)).agent.effective_policies).toHaveLength(2)
    expect((await operator.policies.replaceDefaults([])).policies).toEqual([])
  })

  it('surfaces a rate limit as RateLimitError with retryAfterSeconds', async (ctx) => {
    if (!(await hasRoute(gw, 'GET', '/v1/policies/pol_none'))) return ctx.skip('policies are not served yet')
    const { address, agent } = await newAgent()
    await operator.policies.create(address, { kind: 'rate', direction: 'send', max_per_hour: 1, on_breach: 'block' })
    await agent.send({ to_agent: OPS, intent_type: 'job.v1' })
    const error = await agent.send({ to_agent: OPS, intent_type: 'job.v1' }, { maxRetries: 0 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(RateLimitError)
    expect(error).toMatchObject({ status: 429, code: 'rate_limited' })
    const retryAfter = (error as RateLimitError).retryAfterSeconds ?? -1
    expect(retryAfter).toBeGreaterThan(0)
    expect(retryAfter).toBeLessThanOrEqual(3600)
  })

  it('streams mesh events live', async (ctx) => {
    if (!(await hasRoute(gw, 'GET', '/v1/mesh/events/stream'))) return ctx.skip('the event stream is not served yet')
    const { address } = await newAgent()
    const controller = new AbortController()
    const live = operator.events.stream({}, { signal: controller.signal })
    const first = next(live)
    const { address: probe } = await newAgent()
    await waitFor(async () => {
      // The stream starts "from now": make events until one arrives after the connection opened.
      await operator.agents.kill(probe)
      await operator.agents.resume(probe)
      return Promise.race([first.then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 50))])
    })
    expect((await first).address).toBe(probe)
    await operator.agents.kill(address, { reason: 'live' })
    let seen: MeshEvent | undefined
    while (seen?.event_type !== 'agent.killed') seen = await next(live)
    expect(seen).toMatchObject({ address, event_id: expect.stringMatching(/^evt_/) })
    controller.abort()
    expect(await live.next()).toEqual({ done: true, value: undefined })

    const replay = operator.events.stream({ after: (await first).event_id })
    const replayed: MeshEvent[] = []
    while (replayed.at(-1)?.event_type !== 'agent.killed') replayed.push(await next(replay))
    expect(replayed.at(-1)?.event_id).toBe(seen.event_id)
    await replay.return()
  })
})
