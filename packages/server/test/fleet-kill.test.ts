/**
 * Fleet controls: agent labels, kill and resume by selector (address glob + labels) in one
 * call, and the standing fleet kill that an agent appearing later falls under.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('fleet-kill.test.ts')
const enc = encodeURIComponent

const send = (gw: TestGateway, key: string, to: string) =>
  api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'fleet.test.v1', to_agent: to, payload: {} })

describe.each(ENGINES)('fleet controls (%s)', (engine) => {
  let gw: TestGateway
  let op: string
  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    op = (await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'operator', name: 'op' })).body.key
  })
  afterAll(async () => {
    await gw?.close()
  })

  const register = async (address: string, labels?: Record<string, string>) => {
    const res = await api(gw.url, op, 'POST', '/v1/mesh/agents', { address, ...(labels ? { labels } : {}) })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body.agent
  }
  const health = async (address: string) =>
    (await api(gw.url, op, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent?.health_status as string | undefined

  describe('labels', () => {
    it('are set at registration, merged by PATCH (null removes a key), shown on MeshAgent and audited', async () => {
      const a = await register('agent://lab/prod/one', { team: 'payments', tier: 'gold' })
      expect(a.labels).toEqual({ team: 'payments', tier: 'gold' })
      expect(a.display_name).toBe('one')
      const patched = await api(gw.url, op, 'PATCH', `/v1/mesh/agents/${enc(a.address)}`, {
        labels: { tier: null, region: 'eu' },
        display_name: 'One',
      })
      expect(patched.status, JSON.stringify(patched.body)).toBe(200)
      expect(patched.body.agent.labels).toEqual({ region: 'eu', team: 'payments' })
      expect(patched.body.agent.display_name).toBe('One')
      const listed = (await api(gw.url, op, 'GET', '/v1/mesh/agents?limit=500')).body.agents.find((x: any) => x.address === a.address)
      expect(listed.labels).toEqual({ region: 'eu', team: 'payments' })
      const audit = (await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?action_prefix=agent.update&limit=500')).body.entries
      const entry = audit.find((e: any) => e.target === a.address)
      expect(entry.before.labels).toEqual({ team: 'payments', tier: 'gold' })
      expect(entry.after.labels).toEqual({ region: 'eu', team: 'payments' })
      // A PATCH that changes nothing is a no-op: no second entry.
      await api(gw.url, op, 'PATCH', `/v1/mesh/agents/${a.address_id}`, { labels: { region: 'eu' } })
      const again = (await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?action_prefix=agent.update&limit=500')).body.entries
      expect(again.filter((e: any) => e.target === a.address)).toHaveLength(1)
    })

    it('refuse bad keys, values and bodies with 422; unknown agents with 404; viewers with 403', async () => {
      const viewer = (await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer' })).body.key
      await register('agent://lab/prod/two')
      for (const body of [{ labels: { 'bad key': 'x' } }, { labels: { team: 5 } }, { labels: { k: 'v'.repeat(257) } }, { nope: 1 }]) {
        const res = await api(gw.url, op, 'PATCH', `/v1/mesh/agents/${enc('agent://lab/prod/two')}`, body)
        expect(res.status, JSON.stringify(body)).toBe(422)
        expect(res.body.error.code).toBe('schema_invalid')
      }
      const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))
      expect((await api(gw.url, op, 'POST', '/v1/mesh/agents', { address: 'agent://lab/prod/three', labels: many })).status).toBe(422)
      expect((await api(gw.url, op, 'PATCH', `/v1/mesh/agents/${enc('agent://lab/prod/none')}`, { labels: { a: 'b' } })).status).toBe(404)
      expect((await api(gw.url, viewer, 'PATCH', `/v1/mesh/agents/${enc('agent://lab/prod/two')}`, { labels: { a: 'b' } })).status).toBe(403)
    })
  })

  describe('kill and resume by selector', () => {
    const prod = ['a', 'b', 'c', 'd', 'e', 'f'].map((n) => `agent://acme/prod/${n}`)
    const payments = new Set(prod.slice(0, 3))
    const outside = ['agent://acme/dev/a', 'agent://other/prod/a']
    const sink = 'agent://acme/sinks/sink'
    const keys = new Map<string, string>()
    beforeAll(async () => {
      for (const address of [...prod, ...outside]) {
        await register(address, payments.has(address) ? { team: 'payments' } : { team: 'search' })
        keys.set(address, await agentKey(gw, address))
      }
      await register(sink)
    })

    it('validates selectors: globs that can never match an address are 422, a selector matching everything needs confirm_all', async () => {
      for (const address of ['agent://acme/pr*', 'agent://acme/prod', 'acme/prod/*', 'agent://acme//x', 'agent://a/b/c/d']) {
        const res = await api(gw.url, op, 'POST', '/v1/mesh/kill', { selector: { address } })
        expect(res.status, address).toBe(422)
      }
      for (const selector of [{}, { address: 'agent://**' }]) {
        const res = await api(gw.url, op, 'POST', '/v1/mesh/kill', { selector, reason: 'all' })
        expect(res.status).toBe(400)
        expect(res.body.error).toMatchObject({ code: 'invalid_request', details: { field: 'confirm_all' } })
        const dry = await api(gw.url, op, 'POST', '/v1/mesh/kill', { selector, dry_run: true })
        expect(dry.body).toMatchObject({ ok: true, dry_run: true, requires_confirm_all: true })
      }
      expect(await health(prod[0]!)).not.toBe('killed')
    })

    it('dry run lists what would be killed and kills nothing', async () => {
      const res = await api(gw.url, op, 'POST', '/v1/mesh/kill', {
        selector: { address: 'agent://acme/prod/*', labels: { team: 'payments' } },
        dry_run: true,
      })
      expect(res.status).toBe(200)
      expect(res.body.killed.map((a: any) => a.address).sort()).toEqual([...payments].sort())
      expect(res.body.fleet_kill_id).toBeNull()
      for (const address of payments) expect(await health(address)).not.toBe('killed')
      expect((await send(gw, keys.get(prod[0]!)!, sink)).status).toBe(200)
    })

    it('kills exactly the matching agents in one call, holds their work, audits one entry plus one per agent; others keep working', async () => {
      // Two intents queued to a victim: held by the kill.
      const victim = prod[1]!
      for (let i = 0; i < 2; i += 1) expect((await send(gw, keys.get(prod[4]!)!, victim)).status).toBe(200)
      const res = await api(gw.url, op, 'POST', '/v1/mesh/kill', {
        selector: { address: 'agent://acme/prod/*', labels: { team: 'payments' } },
        reason: 'bad release 4.2',
      })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      expect(res.body.fleet_kill_id).toMatch(/^fk_/)
      const killed = new Map(res.body.killed.map((k: any) => [k.address, k]))
      expect([...killed.keys()].sort()).toEqual([...payments].sort())
      expect((killed.get(victim) as any).held_intents).toBe(2)
      for (const address of payments) {
        expect(await health(address)).toBe('killed')
        const refused = await send(gw, keys.get(address)!, sink)
        expect(refused.status).toBe(403)
        expect(refused.body.error.code).toBe('agent_killed')
      }
      for (const address of [...prod.slice(3), ...outside]) {
        expect(await health(address)).not.toBe('killed')
        expect((await send(gw, keys.get(address)!, sink)).status).toBe(200)
      }
      const audit = (await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')).body.entries as any[]
      const fleetEntry = audit.find((e) => e.action === 'fleet.kill' && e.after.fleet_kill_id === res.body.fleet_kill_id)
      expect(fleetEntry).toMatchObject({ target: 'agent://acme/prod/* {team=payments}', reason: 'bad release 4.2' })
      expect(fleetEntry.after.killed_count).toBe(3)
      const perAgent = audit.filter((e) => e.action === 'agent.kill' && e.after?.fleet_kill_id === res.body.fleet_kill_id)
      expect(perAgent.map((e) => e.target).sort()).toEqual([...payments].sort())
      expect(perAgent.every((e) => e.seq > fleetEntry.seq)).toBe(true)
      const verify = await api(gw.url, gw.adminKey, 'GET', '/v1/audit/verify')
      expect(verify.body.valid).toBe(true)
      const events = (await api(gw.url, op, 'GET', '/v1/mesh/events?event_type=agent.killed&limit=500')).body.events as any[]
      expect(events.filter((e) => e.details?.fleet_kill_id === res.body.fleet_kill_id)).toHaveLength(3)
      // Killing them again: nothing new, all listed as already killed (a second standing record).
      const again = await api(gw.url, op, 'POST', '/v1/mesh/kill', {
        selector: { labels: { team: 'payments' }, address: 'agent://acme/prod/*' },
      })
      expect(again.body.killed).toEqual([])
      expect(again.body.already_killed.map((a: any) => a.address).sort()).toEqual([...payments].sort())
    })

    it('a fleet kill stands: agents that first appear under it (registration, agent key, first send, as recipient) start killed', async () => {
      const empty = await api(gw.url, op, 'POST', '/v1/mesh/kill', { selector: { address: 'agent://acme/staging/*' }, reason: 'freeze' })
      expect(empty.status).toBe(200)
      expect(empty.body.killed).toEqual([])
      const standing = (await api(gw.url, op, 'GET', '/v1/mesh/fleet-kills?standing=true')).body.fleet_kills as any[]
      expect(standing.map((f) => f.fleet_kill_id)).toContain(empty.body.fleet_kill_id)

      const registered = await register('agent://acme/staging/new')
      expect(registered.health_status).toBe('killed')
      expect(registered.kill_reason).toBe('freeze')
      const key = await agentKey(gw, 'agent://acme/staging/keyed')
      const refused = await send(gw, key, sink)
      expect(refused.status).toBe(403)
      expect(refused.body.error.code).toBe('agent_killed')
      // A new recipient under it: refused, not queued to a killed agent.
      const toNew = await send(gw, keys.get(prod[4]!)!, 'agent://acme/staging/recipient')
      expect(toNew.status).toBe(403)
      expect(toNew.body.error.code).toBe('agent_killed')
      // Outside the selector: unaffected.
      expect((await register('agent://acme/qa/new')).health_status).not.toBe('killed')
      const events = (await api(gw.url, op, 'GET', `/v1/mesh/events?address=${enc('agent://acme/staging/new')}`)).body.events as any[]
      expect(events.find((e) => e.event_type === 'agent.killed').details).toMatchObject({
        fleet_kill_id: empty.body.fleet_kill_id,
        standing: true,
      })
    })

    it('an agent relabelled into a standing label selector is killed', async () => {
      const fk = await api(gw.url, op, 'POST', '/v1/mesh/kill', { selector: { labels: { quarantine: 'yes' } }, reason: 'quarantine' })
      expect(fk.status).toBe(200)
      const address = prod[5]!
      expect(await health(address)).not.toBe('killed')
      const patched = await api(gw.url, op, 'PATCH', `/v1/mesh/agents/${enc(address)}`, { labels: { quarantine: 'yes' } })
      expect(patched.body.agent.health_status).toBe('killed')
      expect((await send(gw, keys.get(address)!, sink)).status).toBe(403)
      const res = await api(gw.url, op, 'POST', '/v1/mesh/resume', { selector: { labels: { quarantine: 'yes' } } })
      expect(res.body.resumed.map((r: any) => r.address)).toEqual([address])
      expect(res.body.ended_fleet_kills).toEqual([fk.body.fleet_kill_id])
    })

    it('resume by selector brings the agents back with their held work and ends the fleet kill; agents appearing afterwards are live', async () => {
      const dry = await api(gw.url, op, 'POST', '/v1/mesh/resume', {
        selector: { address: 'agent://acme/prod/*', labels: { team: 'payments' } },
        dry_run: true,
      })
      expect(dry.body.resumed.map((a: any) => a.address).sort()).toEqual([...payments].sort())
      expect(await health(prod[0]!)).toBe('killed')
      const res = await api(gw.url, op, 'POST', '/v1/mesh/resume', {
        selector: { labels: { team: 'payments' }, address: 'agent://acme/prod/*' },
        reason: 'fixed in 4.3',
      })
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      const resumed = new Map(res.body.resumed.map((r: any) => [r.address, r]))
      expect([...resumed.keys()].sort()).toEqual([...payments].sort())
      expect((resumed.get(prod[1]!) as any).redelivering).toBe(2)
      // Both records with this selector (labels in any order) end.
      expect(res.body.ended_fleet_kills).toHaveLength(2)
      for (const address of payments) expect((await send(gw, keys.get(address)!, sink)).status).toBe(200)
      const audit = (await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?action_prefix=fleet.resume')).body.entries as any[]
      expect(audit.at(-1).after.resumed_count).toBe(3)
      // Still standing: the staging freeze. A single resume under it works; the freeze stays.
      expect((await api(gw.url, op, 'POST', `/v1/mesh/agents/${enc('agent://acme/staging/new')}/resume`, {})).status).toBe(200)
      expect(await health('agent://acme/staging/new')).not.toBe('killed')
      expect((await register('agent://acme/staging/later')).health_status).toBe('killed')
      const end = await api(gw.url, op, 'POST', '/v1/mesh/resume', { selector: { address: 'agent://acme/staging/*' } })
      expect(end.body.ended_fleet_kills).toHaveLength(1)
      expect((await register('agent://acme/staging/after')).health_status).not.toBe('killed')
      const all = (await api(gw.url, op, 'GET', '/v1/mesh/fleet-kills')).body.fleet_kills as any[]
      expect(all.filter((f) => f.standing).map((f) => f.selector)).toEqual([])
    })
  })
})
