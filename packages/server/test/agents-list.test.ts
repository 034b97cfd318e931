/**
 * The agents table and the per-agent cost chart (DESIGN §5c, extended): `GET /v1/mesh/agents`
 * with search (`q`), sort over every match (`sort`, `order`), paging (`offset`, `total`,
 * `next_offset`) and each agent's cost ceiling; `GET /v1/mesh/agents/{id}/cost` with the cost
 * and intents of each UTC hour, from resolve and heartbeat costs, zero-filled. A manual clock
 * places the costs in known hours.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('agents-list.test.ts')
const enc = encodeURIComponent
const SECOND = 1_000
const HOUR = 3_600_000

function expect422(res: { status: number; body: any; headers: Headers }, field: string): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status: 422,
    body: { ok: false, error: { code: 'schema_invalid', message: expect.any(String), request_id: expect.any(String), details: { field } } },
  })
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

describe.each(ENGINES)('agents list: search, sort, paging, cost ceiling (%s)', (engine) => {
  const clock = new ManualClock(Date.parse('2026-05-04T09:00:00.000Z'))
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
  })
  afterAll(async () => {
    await gw?.close()
  })
  const list = async (query: string) => {
    const res = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents?${query}`)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body as { ok: true; agents: any[]; summary: Record<string, number>; total: number; next_offset: number | null }
  }
  const register = async (address: string, display_name?: string) => {
    const res = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address, ...(display_name ? { display_name } : {}) })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
  }

  it('q matches the address or the display name, case-insensitively, with % and _ taken literally', async () => {
    await register('agent://srch/prod/a_b', 'Billing Bot')
    await register('agent://srch/prod/axb', '100% Done')
    await register('agent://srch/prod/plain', '100 done')
    const addresses = async (q: string) => (await list(`q=${enc(q)}&limit=500`)).agents.map((a) => a.address).sort()

    expect(await addresses('srch/')).toEqual(['agent://srch/prod/a_b', 'agent://srch/prod/axb', 'agent://srch/prod/plain'])
    expect(await addresses('SRCH/PROD/A')).toEqual(['agent://srch/prod/a_b', 'agent://srch/prod/axb'])
    expect(await addresses('billing')).toEqual(['agent://srch/prod/a_b'])
    expect(await addresses('bOT')).toEqual(['agent://srch/prod/a_b'])
    // `_` and `%` are not wildcards: a_b does not match axb, 100% does not match "100 done".
    expect(await addresses('a_b')).toEqual(['agent://srch/prod/a_b'])
    expect(await addresses('100%')).toEqual(['agent://srch/prod/axb'])
    expect(await addresses('%')).toEqual(['agent://srch/prod/axb'])
    expect(await addresses('\\')).toEqual([])
    expect(await addresses('nothing-like-this')).toEqual([])

    // total counts the matches; the summary stays over the whole fleet.
    const page = await list('q=srch/prod&limit=1')
    expect(page.total).toBe(3)
    expect(page.agents).toHaveLength(1)
    expect(page.next_offset).toBe(1)
    expect(page.summary.total).toBeGreaterThanOrEqual(3)
    // q combines with the health filter.
    expect((await list('q=srch/prod&health=healthy')).total).toBe(0)
    expect((await list('q=srch/prod&health=unknown')).total).toBe(3)
  })

  it('sort by cost, intents and last_heartbeat runs over every match: pages concatenated are in order', async () => {
    const N = 30
    const sender = 'agent://pager-src/prod/sender'
    const senderKey = await agentKey(gw, sender)
    const data: { address: string; cost: number; intents: number; beat: number | null }[] = []
    for (let i = 0; i < N; i++) {
      const address = `agent://pager/prod/agent-${String(i).padStart(2, '0')}`
      const key = await agentKey(gw, address)
      // Costs repeat (ties broken by address); a fifth of the agents never beat.
      const cost = ((i * 7) % 10) * 0.25
      const beats = i % 5 !== 3
      const beat = beats ? clock.now() + ((i * 11) % N) * SECOND : null
      data.push({ address, cost: beats ? cost : 0, intents: i % 4, beat })
      for (let k = 0; k < i % 4; k++) {
        const sent = await api(gw.url, senderKey, 'POST', '/v1/intents', { intent_type: 'work.item', to_agent: address, payload: {} })
        expect(sent.status, JSON.stringify(sent.body)).toBe(200)
      }
      if (beat !== null) {
        const at = clock.now()
        clock.set(beat)
        const res = await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', { metrics: { intents_total: 1, cost_usd: cost } }, { 'x-instance-id': 'i-1' })
        expect(res.status, JSON.stringify(res.body)).toBe(200)
        clock.set(at)
      }
    }
    clock.advance(N * SECOND)
    const byAddress = (a: { address: string }, b: { address: string }) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0)
    const all = async (query: string) => {
      const seen: any[] = []
      let offset: number | null = 0
      const offsets: (number | null)[] = []
      while (offset !== null) {
        const page = await list(`q=agent://pager/&limit=10&offset=${offset}&${query}`)
        expect(page.total).toBe(N)
        expect(page.agents.length).toBeLessThanOrEqual(10)
        seen.push(...page.agents)
        offset = page.next_offset
        offsets.push(offset)
      }
      expect(offsets).toEqual([10, 20, null])
      return seen
    }

    const costDesc = [...data].sort((a, b) => b.cost - a.cost || byAddress(a, b)).map((d) => d.address)
    const costAsc = [...data].sort((a, b) => a.cost - b.cost || byAddress(a, b)).map((d) => d.address)
    const intentsDesc = [...data].sort((a, b) => b.intents - a.intents || byAddress(a, b)).map((d) => d.address)
    const beatDesc = [...data]
      .sort((a, b) => (a.beat === null ? 1 : 0) - (b.beat === null ? 1 : 0) || (b.beat ?? 0) - (a.beat ?? 0) || byAddress(a, b))
      .map((d) => d.address)
    const beatAsc = [...data]
      .sort((a, b) => (a.beat === null ? 0 : 1) - (b.beat === null ? 0 : 1) || (a.beat ?? 0) - (b.beat ?? 0) || byAddress(a, b))
      .map((d) => d.address)

    const byCost = await all('sort=cost')
    expect(byCost.map((a) => a.address)).toEqual(costDesc)
    expect(byCost.map((a) => a.cost_period)).toEqual([...data].map((d) => d.cost).sort((a, b) => b - a))
    expect((await all('sort=cost&order=asc')).map((a) => a.address)).toEqual(costAsc)
    const byIntents = await all('sort=intents&window=week')
    expect(byIntents.map((a) => a.address)).toEqual(intentsDesc)
    expect(byIntents.map((a) => a.intents_period)).toEqual([...data].map((d) => d.intents).sort((a, b) => b - a))
    const byBeat = await all('sort=last_heartbeat')
    expect(byBeat.map((a) => a.address)).toEqual(beatDesc)
    expect(byBeat.slice(-6).every((a) => a.last_heartbeat_at === null)).toBe(true)
    expect((await all('sort=last_heartbeat&order=asc')).map((a) => a.address)).toEqual(beatAsc)
    // registered (the default): created order, ties by address; desc reverses the time only.
    const registered = data.map((d) => d.address)
    expect((await all('')).map((a) => a.address)).toEqual(registered)
    expect((await all('sort=registered&order=asc')).map((a) => a.address)).toEqual(registered)
    expect((await all('sort=registered&order=desc')).map((a) => a.address)).toEqual(registered) // one created_at: address order

    // Past the end: an empty page, no next offset, the total still counted.
    const past = await list('q=agent://pager/&offset=30')
    expect(past).toMatchObject({ agents: [], total: N, next_offset: null })
    const last = await list('q=agent://pager/&offset=25&limit=10')
    expect(last.agents).toHaveLength(5)
    expect(last.next_offset).toBeNull()
  })

  it('bad parameters are 422 naming the field', async () => {
    const get = (query: string) => api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents?${query}`)
    expect422(await get('q='), 'q')
    expect422(await get(`q=${'x'.repeat(201)}`), 'q')
    expect((await get(`q=${'x'.repeat(200)}`)).status).toBe(200)
    expect422(await get('sort=name'), 'sort')
    expect422(await get('order=up'), 'order')
    expect422(await get('offset=-1'), 'offset')
    expect422(await get('offset=1000001'), 'offset')
    expect422(await get('offset=ten'), 'offset')
    expect((await get('offset=1000000')).body).toMatchObject({ ok: true, agents: [], next_offset: null })
    const agent = 'agent://badq/prod/one'
    await register(agent)
    const cost = (query: string) => api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(agent)}/cost?${query}`)
    expect422(await cost('hours=0'), 'hours')
    expect422(await cost('hours=169'), 'hours')
    expect422(await cost('hours=1.5'), 'hours')
    expect422(await cost('hours=abc'), 'hours')
    expect((await cost('hours=168')).body.hours).toHaveLength(168)
    const unknown = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc('agent://badq/prod/nobody')}/cost`)
    expect(unknown.status).toBe(404)
    expect(unknown.body.error.code).toBe('not_found')
    expect422(await api(gw.url, gw.adminKey, 'GET', '/v1/mesh/agents/not-an-agent/cost'), 'address_id')
  })

  it('cost_ceiling_usd: the smallest own enabled cost policy, else the smallest default, else null', async () => {
    const own = 'agent://ceil/prod/own'
    const ownDisabled = 'agent://ceil/prod/disabled'
    const rateOnly = 'agent://ceil/prod/rate-only'
    const bare = 'agent://ceil/prod/bare'
    for (const a of [own, ownDisabled, rateOnly, bare]) await register(a)
    const policy = async (address: string, body: Record<string, unknown>) => {
      const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
    }
    await policy(own, { kind: 'cost', max_cost_per_day_usd: 50, on_breach: 'block' })
    await policy(own, { kind: 'cost', max_cost_per_day_usd: 20, on_breach: 'block' })
    await policy(own, { kind: 'cost', max_cost_per_day_usd: 5, on_breach: 'block', enabled: false })
    await policy(ownDisabled, { kind: 'cost', max_cost_per_day_usd: 7, on_breach: 'block', enabled: false })
    await policy(rateOnly, { kind: 'rate', direction: 'send', max_per_hour: 100, on_breach: 'block' })
    const ceilings = async () =>
      Object.fromEntries((await list('q=ceil/prod&limit=500')).agents.map((a) => [a.address, a.cost_ceiling_usd]))
    const shown = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent

    expect(await ceilings()).toEqual({ [own]: 20, [ownDisabled]: null, [rateOnly]: null, [bare]: null })
    expect((await shown(own)).cost_ceiling_usd).toBe(20)
    expect((await shown(bare)).cost_ceiling_usd).toBeNull()

    const defaults = await api(gw.url, gw.adminKey, 'PUT', '/v1/policies/defaults', {
      policies: [
        { kind: 'cost', max_cost_per_day_usd: 100, on_breach: 'block' },
        { kind: 'cost', max_cost_per_day_usd: 80, on_breach: 'block' },
        { kind: 'cost', max_cost_per_day_usd: 1, on_breach: 'block', enabled: false },
      ],
    })
    expect(defaults.status, JSON.stringify(defaults.body)).toBe(200)
    try {
      // Own enabled cost policies replace the defaults; a disabled own policy does not.
      expect(await ceilings()).toEqual({ [own]: 20, [ownDisabled]: 80, [rateOnly]: 80, [bare]: 80 })
      expect((await shown(bare)).cost_ceiling_usd).toBe(80)
    } finally {
      expect((await api(gw.url, gw.adminKey, 'PUT', '/v1/policies/defaults', { policies: [] })).status).toBe(200)
    }
    expect((await ceilings())[bare]).toBeNull()
  })
})

describe.each(ENGINES)('cost by hour (%s)', (engine) => {
  const start = Date.parse('2026-05-04T10:15:00.000Z')
  const clock = new ManualClock(start)
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock, env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
  })
  afterAll(async () => {
    await gw?.close()
  })
  const hours = async (address: string, query = '') => {
    const res = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}/cost${query}`)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body as { ok: true; address_id: string; hours: { hour: string; cost_usd: number; sent: number; received: number }[] }
  }
  const beat = async (key: string, cost: number) => {
    const res = await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', { metrics: { intents_total: 1, cost_usd: cost } }, { 'x-instance-id': 'i-1' })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
  }

  it('resolve and heartbeat costs land in their UTC hour; other hours are zeros; the list is oldest first', async () => {
    const worker = 'agent://chart/prod/worker' // no policies
    const capped = 'agent://chart/prod/capped' // under a cost policy: the budget rule counts its cost
    const client = 'agent://chart/prod/client'
    const workerKey = await agentKey(gw, worker)
    const cappedKey = await agentKey(gw, capped)
    const clientKey = await agentKey(gw, client)
    const pol = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(capped)}/policies`, {
      kind: 'cost',
      max_cost_per_day_usd: 1000,
      on_breach: 'block',
    })
    expect(pol.status).toBe(200)

    // 10:xx — the worker resolves an intent with a cost and reports heartbeat cost.
    for (const [to, key] of [
      [worker, workerKey],
      [capped, cappedKey],
    ] as const) {
      const sent = await api(gw.url, clientKey, 'POST', '/v1/intents', { intent_type: 'work.item', to_agent: to, payload: {} })
      expect(sent.status).toBe(200)
      const resolved = await api(gw.url, key, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED', cost_usd: 1.25 })
      expect(resolved.status, JSON.stringify(resolved.body)).toBe(200)
      await beat(key, 0.5)
    }
    // 12:xx — heartbeat cost only.
    clock.set(start + 2 * HOUR - 10 * 60_000)
    await beat(workerKey, 2)
    await beat(cappedKey, 2)
    clock.advance(5 * 60_000) // 12:10

    for (const address of [worker, capped]) {
      const body = await hours(address, '?hours=4')
      expect(Object.keys(body).sort()).toEqual(['address_id', 'hours', 'ok'])
      expect(body.address_id).toMatch(/^addr_/)
      expect(body.hours).toEqual([
        { hour: '2026-05-04T09', cost_usd: 0, sent: 0, received: 0 },
        { hour: '2026-05-04T10', cost_usd: 1.75, sent: 0, received: 1 },
        { hour: '2026-05-04T11', cost_usd: 0, sent: 0, received: 0 },
        { hour: '2026-05-04T12', cost_usd: 2, sent: 0, received: 0 },
      ])
      // The day's cost in the list is the sum of the hours.
      const listed = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents?q=${enc(address)}`)).body.agents[0]
      expect(listed.cost_period).toBe(3.75)
    }
    const sender = await hours(client, '?hours=3')
    expect(sender.hours.map((h) => [h.hour, h.sent, h.cost_usd])).toEqual([
      ['2026-05-04T10', 2, 0],
      ['2026-05-04T11', 0, 0],
      ['2026-05-04T12', 0, 0],
    ])

    // Default: the last 24 hours, ending with the current one (crossing midnight backwards).
    const day = await hours(worker)
    expect(day.hours).toHaveLength(24)
    expect(day.hours[0]?.hour).toBe('2026-05-03T13')
    expect(day.hours[23]).toEqual({ hour: '2026-05-04T12', cost_usd: 2, sent: 0, received: 0 })
    expect(day.hours.reduce((sum, h) => sum + h.cost_usd, 0)).toBe(3.75)
    // By addr_… id too.
    expect((await hours(day.address_id, '?hours=1')).hours).toEqual([{ hour: '2026-05-04T12', cost_usd: 2, sent: 0, received: 0 }])
  })
})
