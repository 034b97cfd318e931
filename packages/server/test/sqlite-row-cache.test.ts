/**
 * The SQLite store caches agent rows (and quarantine lookups) for its hot paths. A cached row
 * must never let a killed agent's send, claim or resolve through: every write to `agents` empties
 * the cache before it runs, inside the same write queue, and a rolled-back write empties it
 * again. These cases race sends, claims and resolves against kills in one group-commit batch
 * (writes apply in arrival order), with the rows already cached, and check the store's own
 * statement counts to show the cache was in use.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GatewayError } from '../src/core/errors.js'
import { killRecord } from '../src/core/kill-switch/kill-switch-service.js'
import { acceptRule, deliveryRule, settleRule } from '../src/core/kill-switch/rules.js'
import type { AgentRow, NewIntent, Parties, Store } from '../src/store/store.js'
import { startTestGateway, storeIntent, type TestGateway } from './harness.js'

const intentOf = (from: string, to: string): NewIntent => storeIntent('cache.test.v1', from, to, 3)

const noMismatch = (): never => {
  throw new GatewayError('conflict', 'idempotency mismatch')
}

type Outcome = 'ok' | string
const outcome = (p: Promise<unknown>): Promise<Outcome> =>
  p.then(
    () => 'ok',
    (error: unknown) => (error instanceof GatewayError ? error.code : String(error)),
  )

describe('SQLite row cache: kills are never missed', () => {
  let gw: TestGateway
  let store: Store
  let n = 0
  const addr = (name: string): string => `agent://cache/${name}-${++n}`
  const T0 = Date.now()

  beforeAll(async () => {
    gw = await startTestGateway({ engine: 'sqlite', env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
    store = gw.gateway.store
  })
  afterAll(async () => {
    await gw?.close()
  })

  const reads = (name: string): number => store.stats?.().by_statement[name] ?? 0
  const accept = (intent: NewIntent, decide: (p: Parties) => void = acceptRule) =>
    store.acceptIntent({ intent, actor: 'key:cache', now: T0, idempotency: null, decide, onIdempotencyMismatch: noMismatch })
  const kill = (agent: AgentRow) =>
    store.killAgent({
      address_id: agent.address_id,
      now: T0,
      actor: 'key:cache',
      reason: 'cache test',
      policy_id: null,
      record: killRecord({ kind: 'key', key_id: 'cache' }, T0, 'cache test', false),
    })
  const claim = (agent: AgentRow, instance: string) =>
    store.claimDeliveries({
      address_id: agent.address_id,
      instance_id: instance,
      max_in_flight: 1_000,
      lease_ms: 60_000,
      max_batch: 64,
      now: T0,
      decide: deliveryRule,
    })
  const resolve = (intentId: string) =>
    store.updateIntent({
      intent_id: intentId,
      now: T0,
      actor: 'key:cache',
      instance_id: 'i-1',
      decide: ({ recipient, quarantine }) => {
        settleRule(recipient, quarantine)
        return { status: 'COMPLETED', delivery_state: 'done', lease_expires_at: null, event_type: 'intent.completed', event_details: null }
      },
    })

  it('counts its statements and reads a hot agent row from the cache', async () => {
    const from = addr('warm-from')
    const to = addr('warm-to')
    await accept(intentOf(from, to))
    const before = reads('agentByAddress')
    for (let i = 0; i < 20; i += 1) await accept(intentOf(from, to))
    // 20 sends × 2 parties read from the database would be 40 reads; the first send after the
    // rows were inserted (an insert empties the cache) reads both once.
    expect(reads('agentByAddress') - before).toBeLessThanOrEqual(2)
    expect(store.stats?.().statements).toBeGreaterThan(0)
  })

  it('sends racing a kill of their sender: every send after the kill is refused, with the row cached', async () => {
    for (let round = 0; round < 5; round += 1) {
      const from = addr('sender')
      const to = addr('recipient')
      await accept(intentOf(from, to)) // both rows now cached
      const sender = (await store.getAgentByAddress(from)) as AgentRow
      const readsBefore = reads('agentByAddress')
      // One event-loop turn: one batch, applied in this order.
      const early = Array.from({ length: 10 + round }, () => outcome(accept(intentOf(from, to))))
      const killed = kill(sender)
      const late = Array.from({ length: 10 }, () => outcome(accept(intentOf(from, to))))
      expect(await Promise.all(early)).toEqual(early.map(() => 'ok'))
      expect((await killed).changed).toBe(true)
      expect(await Promise.all(late)).toEqual(late.map(() => 'agent_killed'))
      // The sends before the kill were served from the cache (2 × (10 + round) rows otherwise):
      // the recipient read once, and both rows once more after the kill emptied the cache.
      expect(reads('agentByAddress') - readsBefore).toBeLessThanOrEqual(3)
      expect((await store.getAgentByAddress(from))?.killed_at).toBe(T0)
    }
  })

  it('claims and resolves racing a kill of the recipient are refused after it', async () => {
    const from = addr('producer')
    const to = addr('worker')
    const ids: string[] = []
    for (let i = 0; i < 6; i += 1) ids.push((await accept(intentOf(from, to))).intent.intent_id)
    const worker = (await store.getAgentByAddress(to)) as AgentRow
    const first = await claim(worker, 'i-1')
    expect(first.deliveries).toHaveLength(6)
    await resolve(ids[0] as string) // the worker's row is cached now
    const readsBefore = reads('agentById')
    const early = [outcome(resolve(ids[1] as string)), outcome(claim(worker, 'i-2'))]
    const killed = kill(worker)
    const late = [
      outcome(resolve(ids[2] as string)),
      outcome(claim(worker, 'i-1')),
      outcome(resolve(ids[3] as string)),
      outcome(claim(worker, 'i-3')),
    ]
    expect(await Promise.all(early)).toEqual(['ok', 'ok'])
    expect((await killed).changed).toBe(true)
    expect(await Promise.all(late)).toEqual(['agent_killed', 'agent_killed', 'agent_killed', 'agent_killed'])
    expect(reads('agentById') - readsBefore).toBeLessThanOrEqual(3)
    expect((await store.getIntent(ids[2] as string))?.status).toBe('DELIVERED')
  })

  it('a fleet kill (another statement writing agents) is seen by the sends queued behind it', async () => {
    const from = addr('fleet-sender')
    const to = addr('fleet-recipient')
    await accept(intentOf(from, to))
    const early = outcome(accept(intentOf(from, to)))
    const fleet = store.killFleet({
      selection: { prefix: from, matches: (a) => a.address === from },
      fleet_kill: { fleet_kill_id: `fk_${n}`, selector: JSON.stringify({ address: from }), reason: null, actor: 'key:cache', created_at: T0, ended_at: null, ended_by: null },
      now: T0,
      guard: () => {},
      record: (before, after) => killRecord({ kind: 'key', key_id: 'cache' }, T0, null, false)(before, after),
      summary: () => ({ at: new Date(T0).toISOString(), actor: 'key:cache', action: 'fleet.kill', target: from, reason: null, before: null, after: null }),
    })
    const late = outcome(accept(intentOf(from, to)))
    expect(await early).toBe('ok')
    expect((await fleet).killed).toHaveLength(1)
    expect(await late).toBe('agent_killed')
  })

  it('a rolled-back write does not leave its rows in the cache', async () => {
    const self = addr('phantom')
    // Sending to itself: the row is inserted, then read back (cached) as the recipient, then
    // the decision refuses and the write rolls back.
    const refused = await outcome(
      accept(intentOf(self, self), () => {
        throw new GatewayError('forbidden', 'refused by the test')
      }),
    )
    expect(refused).toBe('forbidden')
    expect(await store.getAgentByAddress(self)).toBeUndefined()
  })
})
