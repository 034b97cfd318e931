/**
 * Policies hold under concurrency (DESIGN §2.6): rate limits are enforced by the accepting
 * transaction, so many concurrent sends never exceed a limit by even one intent, and the
 * store's own record agrees with the answers given. Three rounds of each scenario.
 *
 * The gateway runs on a ManualClock fixed at 10:20 UTC so no hour boundary falls inside a round.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { agentKey, api, startTestGateway, testEngines, type ApiResponse, type Engine, type TestGateway } from './harness.js'

/** Every scenario runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('policy-race.test.ts')

const today = new Date()
const START = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate(), 10, 20, 0)
const LIMIT = 100
const ATTEMPTS = 300
const ROUNDS = [1, 2, 3]
const enc = encodeURIComponent

let gw: TestGateway

/** Each block starts its own gateway on `engine` (the helpers below use the current one). */
function useGateway(engine: Engine): void {
  beforeAll(async () => {
    gw = await startTestGateway({ engine, clock: new ManualClock(START) })
  })
  afterAll(async () => {
    await gw?.close()
  })
}

const admin = (method: string, path: string, body?: unknown) => api(gw.url, gw.adminKey, method, path, body)

async function policy(address: string, body: Record<string, unknown>): Promise<string> {
  const res = await admin('POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
  if (res.status !== 200) throw new Error(`policy: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.policy.policy_id as string
}

/** Every intent the store holds for `address` in `direction` (paged). */
async function storedIntents(address: string, direction: 'sent' | 'received'): Promise<string[]> {
  const ids: string[] = []
  let after: string | null = null
  for (;;) {
    const q = `/v1/intents?agent=${enc(address)}&direction=${direction}&limit=500${after ? `&after=${after}` : ''}`
    const res = await admin('GET', q)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    ids.push(...res.body.intents.map((i: { intent_id: string }) => i.intent_id))
    after = res.body.next_after
    if (!after) return ids
  }
}

function send(key: string, to: string, i: number): Promise<ApiResponse<any>> {
  return api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'race.send.v1', to_agent: to, payload: { i } })
}

/** Status → count, and the codes of the non-200 answers. */
function tally(results: ApiResponse<any>[]) {
  const statuses: Record<number, number> = {}
  const codes: Record<string, number> = {}
  for (const r of results) {
    statuses[r.status] = (statuses[r.status] ?? 0) + 1
    if (r.status !== 200) codes[r.body.error?.code ?? 'none'] = (codes[r.body.error?.code ?? 'none'] ?? 0) + 1
  }
  return { statuses, codes }
}

/** Starts all sends at once (one tick) and waits for every answer. */
async function burst(jobs: (() => Promise<ApiResponse<any>>)[]): Promise<ApiResponse<any>[]> {
  return Promise.all(jobs.map((job) => job()))
}

describe.each(ENGINES)(`a send limit of ${LIMIT}/hour under ${ATTEMPTS} concurrent sends (%s)`, (engine) => {
  useGateway(engine)
  for (const round of ROUNDS) {
    it(`round ${round}: exactly ${LIMIT} accepted, ${ATTEMPTS - LIMIT} rejected 429, and the store agrees`, async () => {
      const S = `agent://acme/race/sender-${round}`
      const R = `agent://acme/race/sink-${round}`
      // Four keys of the same sender, as replicas of one agent would hold.
      const keys = await Promise.all([0, 1, 2, 3].map(() => agentKey(gw, S)))
      await agentKey(gw, R)
      const policyId = await policy(S, { kind: 'rate', direction: 'send', max_per_hour: LIMIT, on_breach: 'block' })

      const results = await burst(Array.from({ length: ATTEMPTS }, (_, i) => () => send(keys[i % keys.length] as string, R, i)))
      const { statuses, codes } = tally(results)
      expect(statuses).toEqual({ 200: LIMIT, 429: ATTEMPTS - LIMIT })
      expect(codes).toEqual({ rate_limited: ATTEMPTS - LIMIT })
      for (const r of results.filter((x) => x.status === 429)) {
        expect(r.body.error.details.policy_id).toBe(policyId)
        expect(r.headers.get('retry-after')).toBe('2400')
      }
      const accepted = new Set(results.filter((r) => r.status === 200).map((r) => r.body.intent_id as string))
      expect(accepted.size).toBe(LIMIT)

      const sent = await storedIntents(S, 'sent')
      expect(sent).toHaveLength(LIMIT)
      expect(new Set(sent)).toEqual(accepted)
      expect(await storedIntents(R, 'received')).toHaveLength(LIMIT)
      const agent = await admin('GET', `/v1/mesh/agents/${enc(S)}`)
      expect(agent.body.agent.intents_period).toBe(LIMIT)
      const evaluated = await admin('POST', '/v1/policies/evaluate', { from_agent: S, to_agent: R, intent_type: 'race.send.v1' })
      expect(evaluated.body).toMatchObject({ decision: 'rate_limited', policy_id: policyId })
    })
  }
})

describe.each(ENGINES)(`a receive limit of ${LIMIT}/hour under ${ATTEMPTS} concurrent sends from 10 senders (%s)`, (engine) => {
  useGateway(engine)
  for (const round of ROUNDS) {
    it(`round ${round}: exactly ${LIMIT} received, and each sender's stored count matches its 200s`, async () => {
      const R = `agent://acme/race/inbox-${round}`
      await agentKey(gw, R)
      const senders = Array.from({ length: 10 }, (_, i) => `agent://acme/race/s${i}-r${round}`)
      const keys = await Promise.all(senders.map((s) => agentKey(gw, s)))
      const policyId = await policy(R, { kind: 'rate', direction: 'receive', max_per_hour: LIMIT, on_breach: 'block' })

      const owner = (i: number): number => i % senders.length
      const results = await burst(Array.from({ length: ATTEMPTS }, (_, i) => () => send(keys[owner(i)] as string, R, i)))
      const { statuses, codes } = tally(results)
      expect(statuses).toEqual({ 200: LIMIT, 429: ATTEMPTS - LIMIT })
      expect(codes).toEqual({ rate_limited: ATTEMPTS - LIMIT })
      for (const r of results.filter((x) => x.status === 429)) expect(r.body.error.details.policy_id).toBe(policyId)

      const received = await storedIntents(R, 'received')
      expect(received).toHaveLength(LIMIT)
      expect(new Set(received)).toEqual(new Set(results.filter((r) => r.status === 200).map((r) => r.body.intent_id)))
      let total = 0
      for (const [s, address] of senders.entries()) {
        const oks = results.filter((r, i) => owner(i) === s && r.status === 200).length
        const stored = await storedIntents(address, 'sent')
        expect(stored, address).toHaveLength(oks)
        total += stored.length
      }
      expect(total).toBe(LIMIT)
    })
  }
})

describe.each(ENGINES)('limits on both sides at once, and on_breach: kill under concurrency (%s)', (engine) => {
  useGateway(engine)
  it(`a sender limit of ${LIMIT} and a recipient limit of 50, hit together: neither is exceeded`, async () => {
    const S = 'agent://acme/race/both-sender'
    const R = 'agent://acme/race/both-narrow'
    const W = 'agent://acme/race/both-wide'
    const keys = await Promise.all([0, 1].map(() => agentKey(gw, S)))
    await agentKey(gw, R)
    await agentKey(gw, W)
    await policy(S, { kind: 'rate', direction: 'send', max_per_hour: LIMIT, on_breach: 'block' })
    await policy(R, { kind: 'rate', direction: 'receive', max_per_hour: 50, on_breach: 'block' })
    const results = await burst(
      Array.from({ length: ATTEMPTS }, (_, i) => () => send(keys[i % 2] as string, i % 3 === 0 ? R : W, i)),
    )
    const { statuses } = tally(results)
    expect(statuses[200]).toBe(LIMIT) // 200 sends to W alone would fill S's limit
    expect(statuses[429]).toBe(ATTEMPTS - LIMIT)
    const toR = (await storedIntents(R, 'received')).length
    const toW = (await storedIntents(W, 'received')).length
    expect(toR).toBeLessThanOrEqual(50)
    expect(toR + toW).toBe(LIMIT)
    expect(await storedIntents(S, 'sent')).toHaveLength(LIMIT)
    expect(results.filter((r, i) => i % 3 === 0 && r.status === 200)).toHaveLength(toR)
  })

  for (const round of ROUNDS) {
    it(`round ${round}: on_breach: kill — ${LIMIT} accepted, the rest refused, one auto-kill`, async () => {
      const S = `agent://acme/race/rogue-${round}`
      const R = `agent://acme/race/victim-${round}`
      const keys = await Promise.all([0, 1, 2, 3].map(() => agentKey(gw, S)))
      await agentKey(gw, R)
      const policyId = await policy(S, { kind: 'rate', direction: 'send', max_per_hour: LIMIT, on_breach: 'kill' })
      const results = await burst(Array.from({ length: ATTEMPTS }, (_, i) => () => send(keys[i % 4] as string, R, i)))
      const { statuses, codes } = tally(results)
      expect(statuses[200]).toBe(LIMIT)
      // Sends decided before the kill committed are the breaching ones (429, auto_killed);
      // the others see the killed agent (403). Nothing else.
      expect((statuses[429] ?? 0) + (statuses[403] ?? 0)).toBe(ATTEMPTS - LIMIT)
      expect(Object.keys(codes).sort()).toEqual((statuses[403] ? ['agent_killed', 'rate_limited'] : ['rate_limited']))
      const breaches = results.filter((r) => r.status === 429)
      expect(breaches.length).toBeGreaterThanOrEqual(1)
      for (const r of breaches) expect(r.body.error.details).toMatchObject({ policy_id: policyId, auto_killed: true })
      expect(await storedIntents(S, 'sent')).toHaveLength(LIMIT)
      const audit = await admin('GET', `/v1/audit/events?action_prefix=agent.auto_kill&target=${enc(S)}`)
      expect(audit.body.entries).toHaveLength(1)
      expect(audit.body.entries[0].actor).toBe(`policy:${policyId}`)
      // Once the burst is answered, every new send is refused as killed.
      const after = await send(keys[0] as string, R, -1)
      expect(after.status).toBe(403)
      expect(after.body.error.code).toBe('agent_killed')
    })
  }
})
