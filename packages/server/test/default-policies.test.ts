/**
 * Default policies: a default set (`PUT /v1/policies/defaults`, or a `--policy-defaults` file
 * read at start) applies to every agent that has no enabled policy of the same kind — agents
 * that existed before, and agents that first appear later — is shown in the agent's effective
 * policies, and is named by evaluate ("decided by default policy …"). On PostgreSQL, agents
 * created while the set is replaced get it too.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('default-policies.test.ts')
const enc = encodeURIComponent
const RATE = { kind: 'rate', direction: 'send', max_per_hour: 2, on_breach: 'block' }
const DENY_DROP = { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['db.drop.*'] }

describe.each(ENGINES)('default policies (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-06-01T09:00:00.000Z'))
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
  })
  afterAll(async () => {
    await gw?.close()
  })
  const send = (key: string, to: string, type = 'work.item') => api(gw.url, key, 'POST', '/v1/intents', { intent_type: type, to_agent: to, payload: {} })
  const put = (policies: unknown[]) => api(gw.url, gw.adminKey, 'PUT', '/v1/policies/defaults', { policies })
  const evaluate = async (from: string, to: string, type = 'work.item') =>
    (await api(gw.url, gw.adminKey, 'POST', '/v1/policies/evaluate', { from_agent: from, to_agent: to, intent_type: type })).body

  it('apply to agents that existed before and to agents that first appear later; an own policy of the kind replaces the default', async () => {
    const before = 'agent://dflt/prod/old-timer'
    const sink = 'agent://dflt/prod/sink'
    const beforeKey = await agentKey(gw, before)
    await agentKey(gw, sink)
    expect((await send(beforeKey, sink)).status).toBe(200) // no defaults yet: one sent this hour

    const res = await put([RATE, DENY_DROP])
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.changed).toBe(true)
    const [rate, deny] = res.body.policies
    expect(rate).toMatchObject({ kind: 'rate', address_id: null, default: true, enforcement: 'enforce', max_per_hour: 2 })
    const listed = await api(gw.url, gw.adminKey, 'GET', '/v1/policies/defaults')
    expect(listed.body.policies.map((p: any) => p.policy_id)).toEqual([rate.policy_id, deny.policy_id])
    expect((await api(gw.url, gw.adminKey, 'GET', `/v1/policies/${rate.policy_id}`)).body.policy).toMatchObject({ default: true, kind: 'rate' })

    // An agent that existed before: limited from the next send on.
    expect([(await send(beforeKey, sink)).status, (await send(beforeKey, sink)).status]).toEqual([200, 429])
    // An agent that first appears later (agent key): limited, and the reason names the default.
    const later = 'agent://dflt/prod/newcomer'
    const laterKey = await agentKey(gw, later)
    expect((await send(laterKey, sink)).status).toBe(200)
    expect((await send(laterKey, sink)).status).toBe(200)
    const limited = await send(laterKey, sink)
    expect(limited.status).toBe(429)
    expect(limited.body.error.policy_id).toBe(rate.policy_id)
    expect(limited.body.error.message).toMatch(new RegExp(`default policy ${rate.policy_id}`))
    const denied = await send(laterKey, sink, 'db.drop.users')
    expect(denied.status).toBe(403)
    expect(denied.body.error.code).toBe('policy_denied')

    // Evaluate names the default, also for an address never seen (its first send would create it).
    const ev = await evaluate(later, sink, 'db.drop.users')
    expect(ev).toMatchObject({ decision: 'deny', policy_id: deny.policy_id, decided_by: 'default' })
    expect(ev.reason).toMatch(/default policy/)
    expect(await evaluate('agent://dflt/prod/never-seen', sink, 'db.drop.x')).toMatchObject({ decision: 'deny', decided_by: 'default' })

    // Effective policies: the list and the agent view show the defaults that apply.
    const own = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(later)}/policies`)
    expect(own.body.policies).toEqual([])
    expect(own.body.effective.map((p: any) => p.policy_id)).toEqual([rate.policy_id, deny.policy_id])
    const detail = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(later)}`)
    expect(detail.body.agent.effective_policies).toHaveLength(2)

    // An own rate policy replaces the default rate; the default action policy still applies.
    const special = 'agent://dflt/prod/batch'
    const specialKey = await agentKey(gw, special)
    const ownRate = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(special)}/policies`, { ...RATE, max_per_hour: 5 })
    expect(ownRate.status).toBe(200)
    const statuses: number[] = []
    for (let i = 0; i < 6; i++) statuses.push((await send(specialKey, sink)).status)
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429])
    expect((await send(specialKey, sink, 'db.drop.x')).status).toBe(403)
    const eff = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(special)}/policies`)).body.effective
    expect(eff.map((p: any) => p.policy_id)).toEqual([ownRate.body.policy.policy_id, deny.policy_id])
    // A disabled own policy does not count: the default applies again.
    const disabled = await api(gw.url, gw.adminKey, 'PUT', `/v1/policies/${ownRate.body.policy.policy_id}`, { ...RATE, max_per_hour: 5, enabled: false }, { 'if-match': '1' })
    expect(disabled.status).toBe(200)
    expect((await send(specialKey, sink)).status).toBe(429)
    expect((await evaluate(special, sink)).decided_by).toBe('default')
  })

  it('replacing with the same set changes nothing (same ids); every replace is audited; an empty set lifts them', async () => {
    const current = (await api(gw.url, gw.adminKey, 'GET', '/v1/policies/defaults')).body.policies
    const again = await put([RATE, DENY_DROP])
    expect(again.body.changed).toBe(false)
    expect(again.body.policies.map((p: any) => p.policy_id)).toEqual(current.map((p: any) => p.policy_id))
    // Changing one entry keeps the other's id.
    const changed = await put([{ ...RATE, max_per_hour: 3 }, DENY_DROP])
    expect(changed.body.changed).toBe(true)
    expect(changed.body.policies[1].policy_id).toBe(current[1].policy_id)
    expect(changed.body.policies[0].policy_id).not.toBe(current[0].policy_id)
    const audit = ((await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')).body.entries as any[]).filter(
      (e) => e.action === 'policy.defaults_replace',
    )
    expect(audit).toHaveLength(2)
    expect(audit[1].before.map((p: any) => p.max_per_hour ?? null)).toEqual([2, null])
    expect(audit[1].after.map((p: any) => p.max_per_hour ?? null)).toEqual([3, null])
    const events = (await api(gw.url, gw.adminKey, 'GET', '/v1/mesh/events?event_type=policy.defaults_changed')).body.events
    expect(events.length).toBeGreaterThanOrEqual(2)

    expect((await put([])).body.changed).toBe(true)
    const free = 'agent://dflt/prod/free'
    const freeKey = await agentKey(gw, free)
    for (let i = 0; i < 4; i++) expect((await send(freeKey, 'agent://dflt/prod/sink', 'db.drop.x')).status).toBe(200)
  })

  it('refuses a bad set with 422 naming the field, and viewers may not replace it', async () => {
    const bad = await put([{ kind: 'rate', direction: 'send', on_breach: 'block', max_per_hour: -1 }])
    expect(bad.status).toBe(422)
    expect(JSON.stringify(bad.body.error)).toMatch(/max_per_hour/)
    const noLimit = await put([{ kind: 'rate', direction: 'send', on_breach: 'block' }])
    expect(noLimit.status).toBe(422)
    const tooMany = await put(Array.from({ length: 65 }, () => DENY_DROP))
    expect(tooMany.status).toBe(422)
    const viewer = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer', name: 'dflt-viewer' })
    const refused = await api(gw.url, viewer.body.key, 'PUT', '/v1/policies/defaults', { policies: [] })
    expect(refused.status).toBe(403)
    expect((await api(gw.url, viewer.body.key, 'GET', '/v1/policies/defaults')).status).toBe(200)
  })

  it('a default dead-man switch kills an agent that went silent, not one that never beat, and not one with its own dead-man policy', async () => {
    const beating = 'agent://dflt/dm/went-silent'
    const never = 'agent://dflt/dm/never-beat'
    const ownDm = 'agent://dflt/dm/own-policy'
    const beatingKey = await agentKey(gw, beating)
    await agentKey(gw, never)
    const ownKey = await agentKey(gw, ownDm)
    await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(ownDm)}/policies`, { kind: 'deadman', silent_after_seconds: 3600, on_trigger: 'kill' })
    const res = await put([{ kind: 'deadman', silent_after_seconds: 60, on_trigger: 'kill' }])
    const dm = res.body.policies[0]
    for (const key of [beatingKey, ownKey]) {
      expect((await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'pod-1' })).status).toBe(200)
    }
    clock.advance(61_000)
    await gw.gateway.sweeper.tick()
    await gw.gateway.sweeper.tick()
    const view = async (a: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(a)}`)).body.agent
    const killed = await view(beating)
    expect(killed.health_status).toBe('killed')
    expect(killed.kill_reason).toMatch(new RegExp(`default policy ${dm.policy_id}`))
    expect((await view(never)).health_status).not.toBe('killed')
    expect((await view(ownDm)).health_status).not.toBe('killed')
    const autoKills = ((await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')).body.entries as any[]).filter(
      (e) => e.action === 'agent.auto_kill' && e.target === beating,
    )
    expect(autoKills).toHaveLength(1)
    expect(autoKills[0].actor).toBe(`policy:${dm.policy_id}`)
    await put([])
  })

  it.runIf(engine === 'postgres')('agents created while the set is replaced get it (3 replicas, 60 new agents racing the PUT)', async () => {
    const replicas = await Promise.all(
      [1, 2].map(() => startTestGateway({ engine, clock, databaseUrl: gw.databaseUrl as string, env: { CHOKEPOINT_ADMIN_KEY: gw.adminKey, CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })),
    )
    try {
      const urls = [gw.url, ...replicas.map((r) => r.url)]
      const sink = 'agent://dflt/race/sink'
      await agentKey(gw, sink)
      // Staff-key sends from 60 never-seen addresses create them, spread over the replicas, while the PUT runs.
      const creations = Array.from({ length: 60 }, (_, i) =>
        api(urls[i % 3] as string, gw.adminKey, 'POST', '/v1/intents', {
          intent_type: 'work.item',
          to_agent: sink,
          from_agent: `agent://dflt/race/a${i}`,
          payload: {},
        }),
      )
      const replaced = api(urls[1] as string, gw.adminKey, 'PUT', '/v1/policies/defaults', { policies: [DENY_DROP] })
      const results = await Promise.all([...creations, replaced])
      expect(results.at(-1)?.status).toBe(200)
      for (const r of results.slice(0, -1)) expect(r.status, JSON.stringify(r.body)).toBe(200)
      // Every one of them, on every replica, is now refused a denied type: none slipped through.
      const refusals = await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          api(urls[(i + 1) % 3] as string, gw.adminKey, 'POST', '/v1/intents', {
            intent_type: 'db.drop.all',
            to_agent: sink,
            from_agent: `agent://dflt/race/a${i}`,
            payload: {},
          }),
        ),
      )
      const codes = refusals.map((r) => r.body.error?.code ?? 'accepted')
      expect(codes.filter((c) => c !== 'policy_denied')).toEqual([])
      await api(gw.url, gw.adminKey, 'PUT', '/v1/policies/defaults', { policies: [] })
    } finally {
      await Promise.all(replicas.map((r) => r.close()))
    }
  })
})

describe('default policies from a --policy-defaults file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-defaults-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('are applied at start, unchanged by a restart with the same file, and read-only through the API', async () => {
    const file = join(dir, 'defaults.json')
    writeFileSync(file, JSON.stringify({ policies: [RATE, { ...DENY_DROP, enforcement: 'monitor' }] }))
    const dataDir = mkdtempSync(join(dir, 'data-'))
    const first = await startTestGateway({ dataDir, env: { CHOKEPOINT_POLICY_DEFAULTS: file } })
    let ids: string[]
    try {
      const listed = await api(first.url, first.adminKey, 'GET', '/v1/policies/defaults')
      expect(listed.body.managed_by).toBe(file)
      expect(listed.body.policies.map((p: any) => [p.kind, p.enforcement])).toEqual([
        ['rate', 'enforce'],
        ['action', 'monitor'],
      ])
      ids = listed.body.policies.map((p: any) => p.policy_id)
      const refused = await api(first.url, first.adminKey, 'PUT', '/v1/policies/defaults', { policies: [] })
      expect(refused.status).toBe(409)
      expect(refused.body.error.message).toMatch(/--policy-defaults/)
      const audit = (await api(first.url, first.adminKey, 'GET', '/v1/audit/events?limit=100')).body.entries as any[]
      expect(audit.find((e) => e.action === 'policy.defaults_replace')?.actor).toBe('config:defaults.json')
    } finally {
      await first.close()
    }
    const second = await startTestGateway({ dataDir, env: { CHOKEPOINT_POLICY_DEFAULTS: file, CHOKEPOINT_ADMIN_KEY: first.adminKey } })
    try {
      const listed = await api(second.url, first.adminKey, 'GET', '/v1/policies/defaults')
      expect(listed.body.policies.map((p: any) => p.policy_id)).toEqual(ids)
      const audit = (await api(second.url, first.adminKey, 'GET', '/v1/audit/events?limit=100')).body.entries as any[]
      expect(audit.filter((e) => e.action === 'policy.defaults_replace')).toHaveLength(1)
    } finally {
      await second.close()
      rmSync(dataDir, { recursive: true, force: true })
    }
  })

  it('a bad file stops the start, naming the file and the field', async () => {
    const cases: [string, RegExp][] = [
      [JSON.stringify({ policies: [{ ...RATE, max_per_hour: 'ten' }] }), /policies\.0\.max_per_hour/],
      [JSON.stringify({ policies: [{ kind: 'rate', direction: 'send', on_breach: 'block' }] }), /max_per_hour/],
      ['{"policies": [', /is not JSON/],
      [JSON.stringify([RATE]), /expected \{"policies"/],
    ]
    for (const [text, message] of cases) {
      const file = join(dir, 'bad.json')
      writeFileSync(file, text)
      await expect(startTestGateway({ env: { CHOKEPOINT_POLICY_DEFAULTS: file } })).rejects.toThrow(message)
    }
    await expect(startTestGateway({ env: { CHOKEPOINT_POLICY_DEFAULTS: join(dir, 'missing.json') } })).rejects.toThrow(/cannot read .*ENOENT/)
  })
})
