/**
 * The store contract (DESIGN §3: one suite, every engine). The same cases run against the
 * SQLite and the PostgreSQL engine: directly against the `Store` interface (with core's own
 * decision callbacks), and through the HTTP API for the guarantees that need concurrency
 * (§2.1 kill, §2.6 policies, §2.7 audit). On PostgreSQL the concurrency cases run across two
 * gateway replicas sharing one database, and the change feed is checked across replicas,
 * with the LISTEN connection cut and with the database down (§2.8 fail closed).
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../src/index.js'
import { auditHash, GENESIS_HASH } from '../src/core/audit/audit-chain.js'
import { blankAgent } from '../src/core/agents/agent-row.js'
import { GatewayError } from '../src/core/errors.js'
import { newAddressId, newIntentId } from '../src/core/ids.js'
import { killRecord, liftRecord, quarantineRecord } from '../src/core/kill-switch/kill-switch-service.js'
import { acceptRule, deliveryRule, settleRule } from '../src/core/kill-switch/rules.js'
import type { Change } from '../src/store/change-feed.js'
import { encodeChanges, PostgresFeed } from '../src/store/postgres/postgres-feed.js'
import type {
  AgentRow,
  AuditDraft,
  IntentChange,
  MeshEventDraft,
  NewIntent,
  Parties,
  PolicyRow,
  ResumeInput,
  Store,
} from '../src/store/store.js'
import { DEFAULT_POLICY_OWNER } from '../src/store/store.js'
import {
  agentKey,
  api,
  openSseStream,
  pollUntil,
  sharedPostgres,
  startTestGateway,
  testEngines,
  type Engine,
  type SseConnection,
  type TestGateway,
} from './harness.js'

const ENGINES = testEngines('store-contract.test.ts')
const ADMIN_KEY = `cp_${'Contract0Admin0Key0'.repeat(3).slice(0, 43)}`
const MIN = 60_000
const enc = encodeURIComponent

const intentOf = (from: string, to: string, extra: Partial<NewIntent> = {}): NewIntent => ({
  intent_id: newIntentId(),
  intent_type: 'contract.test.v1',
  from_agent: from,
  to_agent: to,
  payload: JSON.stringify({ n: 1 }),
  correlation_id: null,
  reply_to: null,
  deadline_at: null,
  max_delivery_attempts: 3,
  trace_id: null,
  ...extra,
})

const noMismatch = (): never => {
  throw new GatewayError('conflict', 'idempotency mismatch')
}

const draft = (action: string, target: string, at: number, extra: Partial<AuditDraft> = {}): AuditDraft => ({
  at: new Date(at).toISOString(),
  actor: 'key:contract',
  action,
  target,
  reason: null,
  before: null,
  after: { n: 1 },
  ...extra,
})

const meshDraft = (agent: AgentRow | null, type: string, at: number): MeshEventDraft => ({
  address_id: agent?.address_id ?? null,
  address: agent?.address ?? null,
  event_type: type,
  details: { test: true },
  actor_id: 'key:contract',
  created_at: at,
})

const resumeRecord: ResumeInput['record'] = (before, after, redelivering) => ({
  audit: draft('agent.resume', after.address, after.resumed_at ?? 0, { after: { redelivering } }),
  event: meshDraft(after, 'agent.resumed', after.resumed_at ?? 0),
})

/** Recomputes the audit chain the way GET /v1/audit/verify does. */
async function chainValid(store: Store): Promise<boolean> {
  let prev = GENESIS_HASH
  let seq = 0
  for (;;) {
    const rows = await store.listAudit({ after_seq: seq, limit: 500, action_prefix: null, target: null })
    for (const row of rows) {
      if (row.seq !== seq + 1 || row.prev_hash !== prev) return false
      const entry = {
        seq: row.seq,
        at: row.at,
        actor: row.actor,
        action: row.action,
        target: row.target,
        reason: row.reason,
        before: row.before === null ? null : JSON.parse(row.before),
        after: row.after === null ? null : JSON.parse(row.after),
      }
      if (auditHash(prev, entry) !== row.hash) return false
      prev = row.hash
      seq = row.seq
    }
    if (rows.length < 500) return true
  }
}

describe.each(ENGINES)('store contract, direct (%s)', (engine: Engine) => {
  let gw: TestGateway
  let store: Store
  let n = 0
  const addr = (name: string): string => `agent://contract/${engine}/${name}-${++n}`
  const T0 = Date.now()

  beforeAll(async () => {
    // The sweeper stays out of the way: these cases move time themselves.
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' } })
    store = gw.gateway.store
  })
  afterAll(async () => {
    await gw?.close()
  })

  const accept = (intent: NewIntent, now = T0, decide: (p: Parties) => void = acceptRule) =>
    store.acceptIntent({ intent, actor: 'key:contract', now, idempotency: null, decide, onIdempotencyMismatch: noMismatch })

  const claim = (addressId: string, instance: string, now = T0, extra: { max_in_flight?: number; lease_ms?: number } = {}) =>
    store.claimDeliveries({
      address_id: addressId,
      instance_id: instance,
      max_in_flight: extra.max_in_flight ?? 32,
      lease_ms: extra.lease_ms ?? 10 * MIN,
      max_batch: 64,
      now,
      decide: deliveryRule,
    })

  const kill = (agent: AgentRow, now: number, policyId: string | null = null) =>
    store.killAgent({
      address_id: agent.address_id,
      now,
      actor: 'key:contract',
      reason: 'contract',
      policy_id: policyId,
      record: killRecord(policyId === null ? { kind: 'key', key_id: 'contract' } : { kind: 'policy', policy_id: policyId }, now, 'contract', false),
    })

  const settle = (intentId: string, now: number, change: (i: { status: string }) => IntentChange, cost_rule?: Parameters<Store['updateIntent']>[0]['cost_rule']) =>
    store.updateIntent({
      intent_id: intentId,
      now,
      actor: 'key:contract',
      ...(cost_rule ? { cost_rule } : {}),
      decide: ({ intent, recipient }) => {
        settleRule(recipient)
        return change(intent)
      },
    })

  it('names its engine and answers ping', async () => {
    expect(store.engine).toBe(engine)
    await expect(store.ping()).resolves.toBeUndefined()
  })

  it('accept: registers both agents, writes the intent with events 1-2, counts sent and received', async () => {
    const from = addr('from')
    const to = addr('to')
    const seen: Parties[] = []
    const { intent, replayed } = await accept(intentOf(from, to), T0, (p) => {
      acceptRule(p)
      seen.push(p)
    })
    expect(replayed).toBe(false)
    expect(intent).toMatchObject({ status: 'SUBMITTED', delivery_state: 'queued', delivery_attempt: 0, last_event_seq: 2, created_at: T0 })
    expect(typeof intent.created_at).toBe('number')
    const p = seen[0] as Parties
    expect(p.from.address).toBe(from)
    expect(p.to.address).toBe(to)
    expect(p.from.address_id).toMatch(/^addr_/)
    expect(p.from_policies).toEqual([])
    expect(p.from_counters).toMatchObject({ sent_day: 0, sent_hour: 0, received_day: 0 })
    const events = await store.listIntentEvents(intent.intent_id, 0, 10)
    expect(events.map((e) => [e.seq, e.event_type, e.status])).toEqual([
      [1, 'intent.created', 'SUBMITTED'],
      [2, 'intent.submitted', 'SUBMITTED'],
    ])
    expect(await store.getCounters(p.from.address_id, T0)).toMatchObject({ sent_day: 1, sent_hour: 1, received_day: 0 })
    expect(await store.getCounters(p.to.address_id, T0)).toMatchObject({ sent_day: 0, received_day: 1, received_hour: 1 })
    const day = new Date(T0).toISOString().slice(0, 10)
    const sums = await store.sumCounters(day, day, [p.from.address_id])
    expect(sums.get(p.from.address_id)).toEqual({ sent: 1, received: 0, cost_usd: 0 })
    // Only the agents asked for.
    expect(sums.has(p.to.address_id)).toBe(false)
    expect(await store.getAgentByAddress(to)).toMatchObject({ address: to, killed_at: null, policy_version: 0 })
    expect(await store.listIntents({ address_id: p.from.address_id, direction: 'sent', status: null, limit: 10, after: null })).toHaveLength(1)
  })

  it('accept: a self-send counts both ways on one agent; a rejecting decide stores nothing', async () => {
    const self = addr('self')
    const { intent } = await accept(intentOf(self, self))
    expect(await store.getCounters(intent.from_address_id, T0)).toMatchObject({ sent_day: 1, received_day: 1 })
    const other = addr('never')
    const rejected = intentOf(self, other)
    await expect(
      accept(rejected, T0, () => {
        throw new GatewayError('policy_denied', 'no')
      }),
    ).rejects.toMatchObject({ code: 'policy_denied' })
    expect(await store.getIntent(rejected.intent_id)).toBeUndefined()
    expect(await store.getAgentByAddress(other)).toBeUndefined()
    expect(await store.getCounters(intent.from_address_id, T0)).toMatchObject({ sent_day: 1, received_day: 1 })
  })

  it('idempotency: the same key and hash replays the original; another hash is a mismatch', async () => {
    const from = addr('idem')
    const first = intentOf(from, addr('idem-to'))
    const idem = { key: 'k-1', request_hash: 'h-1' }
    const base = { actor: 'key:contract', now: T0, decide: acceptRule, onIdempotencyMismatch: noMismatch }
    const a = await store.acceptIntent({ ...base, intent: first, idempotency: idem })
    const b = await store.acceptIntent({ ...base, intent: intentOf(from, first.to_agent), idempotency: idem })
    expect(b).toMatchObject({ replayed: true, intent: { intent_id: a.intent.intent_id } })
    await expect(
      store.acceptIntent({ ...base, intent: intentOf(from, first.to_agent), idempotency: { key: 'k-1', request_hash: 'h-2' } }),
    ).rejects.toMatchObject({ code: 'conflict' })
    // Concurrent first uses of one key: one intent, the others replay it.
    const racers = await Promise.all(
      Array.from({ length: 8 }, () =>
        store.acceptIntent({ ...base, intent: intentOf(from, first.to_agent), idempotency: { key: 'k-race', request_hash: 'h' } }),
      ),
    )
    expect(new Set(racers.map((r) => r.intent.intent_id)).size).toBe(1)
    expect(racers.filter((r) => !r.replayed)).toHaveLength(1)
  })

  it('claim: per-address seqs increase across instances; max_in_flight; since re-sends the leased', async () => {
    const to = addr('inbox')
    const ids: string[] = []
    for (let i = 0; i < 6; i += 1) ids.push((await accept(intentOf(addr('s'), to), T0 + i)).intent.intent_id)
    const agent = (await store.getAgentByAddress(to)) as AgentRow
    const c1 = await claim(agent.address_id, 'i-1', T0 + 10, { max_in_flight: 2 })
    expect(c1.deliveries.map((d) => d.intent.intent_id)).toEqual(ids.slice(0, 2))
    expect(c1.deliveries.map((d) => d.seq)).toEqual([1, 2])
    expect(c1.has_room).toBe(false)
    expect(c1.deliveries[0]?.intent).toMatchObject({ status: 'DELIVERED', delivery_state: 'leased', delivery_attempt: 1, lease_instance: 'i-1' })
    expect(c1.deliveries[0]?.event_type).toBe('intent.delivered')
    expect((await claim(agent.address_id, 'i-1', T0 + 11, { max_in_flight: 2 })).deliveries).toEqual([])
    const c2 = await claim(agent.address_id, 'i-2', T0 + 12)
    expect(c2.deliveries.map((d) => d.seq)).toEqual([3, 4, 5, 6])
    expect(c2.next_due_at).toBeNull()
    const resend = await store.leasedDeliveries(agent.address_id, 'i-2', 4, T0 + 13)
    expect(resend.map((r) => r.delivery_seq)).toEqual([5, 6])
    const events = await store.listIntentEvents(ids[0] as string, 2, 10)
    expect(events.map((e) => e.event_type)).toEqual(['intent.delivered'])
    // Competing consumers: concurrent claims never hand one intent out twice.
    const to2 = addr('compete')
    for (let i = 0; i < 40; i += 1) await accept(intentOf(addr('s'), to2), T0)
    const a2 = (await store.getAgentByAddress(to2)) as AgentRow
    const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => claim(a2.address_id, `c-${i}`, T0 + 1, { max_in_flight: 8 })))
    const seqs = claims.flatMap((c) => c.deliveries.map((d) => d.seq))
    const got = claims.flatMap((c) => c.deliveries.map((d) => d.intent.intent_id))
    expect(new Set(got).size).toBe(got.length)
    expect(new Set(seqs).size).toBe(seqs.length)
    expect(got.length).toBeGreaterThan(0)
  })

  it('leases: an expired lease is requeued and redelivered with attempt 2 and a new seq; out of attempts → FAILED', async () => {
    const to = addr('expire')
    const { intent } = await accept(intentOf(addr('s'), to, { max_delivery_attempts: 2 }))
    const first = await claim(intent.to_address_id, 'x', T0, { lease_ms: MIN })
    expect(first.deliveries).toHaveLength(1)
    expect(await store.expireLeases(T0 + MIN - 1, 100)).toEqual({ requeued: 0, failed: 0 })
    expect(await store.expireLeases(T0 + MIN, 100)).toMatchObject({ requeued: 1 })
    const again = await claim(intent.to_address_id, 'y', T0 + MIN + 1, { lease_ms: MIN })
    expect(again.deliveries[0]).toMatchObject({ event_type: 'intent.redelivered', intent: { delivery_attempt: 2 } })
    expect(again.deliveries[0]?.seq).toBeGreaterThan(first.deliveries[0]?.seq as number)
    expect(await store.expireLeases(T0 + 2 * MIN + 1, 100)).toMatchObject({ failed: 1 })
    const failed = await store.getIntent(intent.intent_id)
    expect(failed).toMatchObject({ status: 'FAILED', delivery_state: 'done' })
    const types = (await store.listIntentEvents(intent.intent_id, 0, 20)).map((e) => e.event_type)
    expect(types).toEqual(['intent.created', 'intent.submitted', 'intent.delivered', 'intent.redelivered', 'intent.delivery_failed'])
  })

  it('ack and resolve: events, slot freed, a second terminal change refused; a rejected follow-up keeps the resolve', async () => {
    const from = addr('asker')
    const to = addr('worker')
    const replyTo = addr('reply')
    const { intent } = await accept(intentOf(from, to, { reply_to: replyTo }))
    await claim(intent.to_address_id, 'w', T0)
    // The reply_to agent is killed: the completion will be refused, the resolve stands.
    const sink = (await accept(intentOf(addr('s'), replyTo))).intent.to_address_id
    await kill((await store.getAgentById(sink)) as AgentRow, T0 + 2)
    const changes: Change[] = []
    const off = store.feed.subscribe((c) => changes.push(c))
    const acked = await settle(intent.intent_id, T0 + 1, () => ({
      status: 'ACKNOWLEDGED',
      delivery_state: 'leased',
      lease_expires_at: T0 + 5 * MIN,
      event_type: 'intent.acknowledged',
      event_details: { instance_id: 'w' },
    }))
    expect(acked.event).toMatchObject({ seq: 4, event_type: 'intent.acknowledged' })
    expect(acked.intent).toMatchObject({ status: 'ACKNOWLEDGED', lease_instance: 'w', lease_expires_at: T0 + 5 * MIN })
    const resolved = await settle(intent.intent_id, T0 + 3, () => ({
      status: 'COMPLETED',
      delivery_state: 'done',
      lease_expires_at: null,
      event_type: 'intent.completed',
      event_details: null,
      result: JSON.stringify({ ok: true }),
      follow_up: { intent: intentOf(to, replyTo, { intent_type: 'intent.completion.v1' }), decide: acceptRule },
    }))
    off()
    expect(resolved.intent).toMatchObject({ status: 'COMPLETED', delivery_state: 'done', lease_instance: null, result: '{"ok":true}' })
    expect(resolved.follow_up).toMatchObject({ accepted: false, error: { code: 'agent_killed' } })
    expect(changes).toContainEqual({ type: 'slot.freed', address_id: intent.to_address_id, instance_id: 'w' })
    expect(changes).toContainEqual({ type: 'intent.event', intent_id: intent.intent_id })
    expect(changes.filter((c) => c.type === 'intent.available' && c.address_id === sink)).toEqual([])
    await expect(
      settle(intent.intent_id, T0 + 4, (i) => {
        if (i.status === 'COMPLETED') throw new GatewayError('conflict', 'already resolved')
        throw new Error('unreachable')
      }),
    ).rejects.toMatchObject({ code: 'conflict' })
    await expect(settle('00000000-0000-4000-8000-000000000000', T0, () => ({}) as IntentChange)).rejects.toMatchObject({ code: 'not_found' })
  })

  it('kill: flips once with audit and mesh event; claim, accept and settle refused; backlog held in both directions', async () => {
    const victim = addr('victim')
    const peer = addr('peer')
    const leased = (await accept(intentOf(peer, victim))).intent
    const inbound = (await accept(intentOf(peer, victim))).intent
    expect((await claim(leased.to_address_id, 'v', T0, { max_in_flight: 1 })).deliveries.map((d) => d.intent.intent_id)).toEqual([
      leased.intent_id,
    ])
    const outbound = (await accept(intentOf(victim, peer))).intent
    const delivered = (await accept(intentOf(victim, peer))).intent
    // Peer takes the older outbound one: once delivered, it is the peer's to finish.
    const peerClaim = await claim(delivered.to_address_id, 'p', T0, { max_in_flight: 1 })
    expect(peerClaim.deliveries.map((d) => d.intent.intent_id)).toEqual([outbound.intent_id])
    const agent = (await store.getAgentByAddress(victim)) as AgentRow
    const auditBefore = (await store.listAudit({ after_seq: 0, limit: 500, action_prefix: 'agent.kill', target: victim })).length
    const changes: Change[] = []
    const off = store.feed.subscribe((c) => changes.push(c))
    const killed = await kill(agent, T0 + 10)
    off()
    expect(killed.changed).toBe(true)
    expect(killed.agent).toMatchObject({ kill_reason: 'contract', kill_actor: 'key:contract' })
    expect(killed.agent.killed_at).toBeGreaterThanOrEqual(T0 + 10)
    expect(changes).toContainEqual({ type: 'agent.killed', address_id: agent.address_id })
    const again = await kill(agent, T0 + 20)
    expect(again.changed).toBe(false)
    expect(again.agent.killed_at).toBe(killed.agent.killed_at)
    const audits = await store.listAudit({ after_seq: 0, limit: 500, action_prefix: 'agent.kill', target: victim })
    expect(audits.length - auditBefore).toBe(1)
    const events = await store.listMeshEvents({ limit: 5, event_type: 'agent.killed', address: victim, before_seqno: null })
    expect(events).toHaveLength(1)
    await expect(claim(agent.address_id, 'v', T0 + 11)).rejects.toMatchObject({ code: 'agent_killed' })
    await expect(accept(intentOf(peer, victim), T0 + 11)).rejects.toMatchObject({ code: 'agent_killed' })
    await expect(accept(intentOf(victim, peer), T0 + 11)).rejects.toMatchObject({ code: 'agent_killed' })
    // The undelivered outbound intent is not handed to the peer (sender filter).
    expect((await claim(delivered.to_address_id, 'p2', T0 + 11)).deliveries).toEqual([])
    const held = await store.holdBacklog({ address_id: agent.address_id, now: T0 + 12, actor: 'key:contract', reason: 'r', cancel_pending: false, limit: 500 })
    expect(held).toEqual({ held: 3, canceled: 0 })
    for (const i of [inbound, leased, delivered]) {
      expect(await store.getIntent(i.intent_id), i.intent_id).toMatchObject({ delivery_state: 'held', lease_instance: null })
    }
    expect(await store.getIntent(outbound.intent_id)).toMatchObject({ delivery_state: 'leased', lease_instance: 'p' })
    expect(await store.getIntent(leased.intent_id)).toMatchObject({ status: 'DELIVERED', kill_dropped: 1 })
    expect(await store.holdBacklog({ address_id: agent.address_id, now: T0 + 13, actor: 'key:contract', reason: 'r', cancel_pending: false, limit: 500 })).toEqual({ held: 0, canceled: 0 })
    await expect(
      store.killAgent({ address_id: newAddressId(), now: T0, actor: 'x', reason: null, policy_id: null, record: killRecord({ kind: 'key', key_id: 'x' }, T0, null, false) }),
    ).rejects.toMatchObject({ code: 'not_found' })
  })

  it('quarantine: requeues only that instance’s leases (due now, not an attempt); its claim, settle and sends refused; siblings unaffected; lift', async () => {
    const worker = addr('pods')
    const peer = addr('pods-peer')
    const [x, y, z] = [(await accept(intentOf(peer, worker))).intent, (await accept(intentOf(peer, worker))).intent, (await accept(intentOf(peer, worker))).intent]
    const id = x.to_address_id
    expect((await claim(id, 'a', T0, { max_in_flight: 2 })).deliveries.map((d) => d.intent.intent_id)).toEqual([x.intent_id, y.intent_id])
    expect((await claim(id, 'b', T0)).deliveries.map((d) => d.intent.intent_id)).toEqual([z.intent_id])
    const actor = { kind: 'key' as const, key_id: 'contract' }
    const changes: Change[] = []
    const off = store.feed.subscribe((c) => changes.push(c))
    const q = await store.quarantineInstance({ address_id: id, instance_id: 'a', now: T0 + 50, actor: 'key:contract', reason: 'bad pod', record: quarantineRecord(actor, T0 + 50, 'bad pod') })
    off()
    expect(q).toMatchObject({ changed: true, requeued: 2, quarantine: { address_id: id, instance_id: 'a', quarantined_at: T0 + 50, actor: 'key:contract', reason: 'bad pod' } })
    expect(changes).toContainEqual({ type: 'instance.quarantined', address_id: id, instance_id: 'a' })
    expect(changes).toContainEqual({ type: 'intent.available', address_id: id })
    for (const i of [x, y]) {
      expect(await store.getIntent(i.intent_id)).toMatchObject({ delivery_state: 'queued', lease_instance: null, lease_expires_at: null, available_at: T0 + 50, kill_dropped: 1, delivery_attempt: 1 })
    }
    expect(await store.getIntent(z.intent_id)).toMatchObject({ delivery_state: 'leased', lease_instance: 'b' })
    expect(await store.getAgentById(id)).toMatchObject({ killed_at: null })
    // The quarantined instance is refused in each transaction; its sibling takes the work.
    await expect(claim(id, 'a', T0 + 51)).rejects.toMatchObject({ code: 'agent_killed', details: { instance_id: 'a', quarantined: true } })
    const settleAs = (intentId: string, instance: string) =>
      store.updateIntent({
        intent_id: intentId,
        now: T0 + 52,
        actor: 'key:contract',
        instance_id: instance,
        decide: ({ recipient, quarantine }) => {
          settleRule(recipient, quarantine)
          return { status: 'COMPLETED', delivery_state: 'done', lease_expires_at: null, event_type: 'intent.completed', event_details: null }
        },
      })
    await expect(settleAs(z.intent_id, 'a')).rejects.toMatchObject({ code: 'agent_killed', details: { quarantined: true } })
    const sendAs = (instance: string | null) =>
      store.acceptIntent({ intent: intentOf(worker, peer), actor: 'key:contract', now: T0 + 52, idempotency: null, from_instance: instance, decide: acceptRule, onIdempotencyMismatch: noMismatch })
    await expect(sendAs('a')).rejects.toMatchObject({ code: 'agent_killed', details: { quarantined: true } })
    expect((await sendAs('b')).replayed).toBe(false)
    expect((await sendAs(null)).replayed).toBe(false)
    const moved = await claim(id, 'b', T0 + 52)
    expect(moved.deliveries.map((d) => [d.intent.intent_id, d.event_type, d.intent.delivery_attempt])).toEqual([
      [x.intent_id, 'intent.redelivered', 2],
      [y.intent_id, 'intent.redelivered', 2],
    ])
    expect((await settleAs(z.intent_id, 'b')).intent.status).toBe('COMPLETED')
    // A repeat is a no-op; an instance never seen can be quarantined; lift.
    const again = await store.quarantineInstance({ address_id: id, instance_id: 'a', now: T0 + 60, actor: 'key:other', reason: 'again', record: quarantineRecord(actor, T0 + 60, 'again') })
    expect(again).toMatchObject({ changed: false, requeued: 0, quarantine: { quarantined_at: T0 + 50, reason: 'bad pod' } })
    await store.quarantineInstance({ address_id: id, instance_id: 'never-seen', now: T0 + 61, actor: 'key:contract', reason: null, record: quarantineRecord(actor, T0 + 61, null) })
    expect((await store.listQuarantines(id)).map((r) => r.instance_id)).toEqual(['a', 'never-seen'])
    const audits = await store.listAudit({ after_seq: 0, limit: 500, action_prefix: 'instance.', target: worker })
    expect(audits.map((e) => e.action)).toEqual(['instance.kill', 'instance.kill'])
    const lifted = await store.liftQuarantine({ address_id: id, instance_id: 'a', now: T0 + 70, actor: 'key:contract', reason: 'fixed', record: liftRecord(actor, T0 + 70, 'fixed') })
    expect(lifted).toMatchObject({ changed: true, lifted: { instance_id: 'a' } })
    expect(await store.getQuarantine(id, 'a')).toBeUndefined()
    expect((await store.liftQuarantine({ address_id: id, instance_id: 'a', now: T0 + 71, actor: 'key:contract', reason: null, record: liftRecord(actor, T0 + 71, null) })).changed).toBe(false)
    expect((await claim(id, 'a', T0 + 72)).has_room).toBe(true)
    expect((await sendAs('a')).replayed).toBe(false)
    await expect(
      store.quarantineInstance({ address_id: newAddressId(), instance_id: 'a', now: T0, actor: 'x', reason: null, record: quarantineRecord(actor, T0, null) }),
    ).rejects.toMatchObject({ code: 'not_found' })
  })

  it('kill with cancel_pending cancels the undelivered outbound, with intent.canceled', async () => {
    const victim = addr('canceler')
    const out = (await accept(intentOf(victim, addr('peer')))).intent
    const agent = (await store.getAgentByAddress(victim)) as AgentRow
    await kill(agent, T0 + 1)
    const r = await store.holdBacklog({ address_id: agent.address_id, now: T0 + 2, actor: 'key:contract', reason: 'why', cancel_pending: true, limit: 500 })
    expect(r).toEqual({ held: 0, canceled: 1 })
    expect(await store.getIntent(out.intent_id)).toMatchObject({ status: 'CANCELED', delivery_state: 'done' })
    const last = (await store.listIntentEvents(out.intent_id, 2, 5)).map((e) => e.event_type)
    expect(last).toEqual(['intent.canceled'])
  })

  it('resume: releases held work oldest first, paced by available_at; claims see next_due_at; a baseline after an auto-kill', async () => {
    const victim = addr('resumed')
    const ids: string[] = []
    for (let i = 0; i < 5; i += 1) ids.push((await accept(intentOf(addr('s'), victim), T0 + i)).intent.intent_id)
    const agent = (await store.getAgentByAddress(victim)) as AgentRow
    await kill(agent, T0 + 10, 'pol_contract')
    expect((await store.getAgentById(agent.address_id))?.auto_kill_policy_id).toBe('pol_contract')
    await store.holdBacklog({ address_id: agent.address_id, now: T0 + 11, actor: 'a', reason: null, cancel_pending: false, limit: 500 })
    const changes: Change[] = []
    const off = store.feed.subscribe((c) => changes.push(c))
    const resumed = await store.resumeAgent({ address_id: agent.address_id, now: T0 + 100, actor: 'key:contract', reason: 'fixed', rate_per_second: 10, record: resumeRecord })
    off()
    expect(resumed).toMatchObject({ changed: true, redelivering: 5, agent: { killed_at: null, resumed_at: T0 + 100, health_status: 'unknown' } })
    expect(changes).toContainEqual({ type: 'agent.resumed', address_id: agent.address_id })
    expect(changes).toContainEqual({ type: 'intent.available', address_id: agent.address_id })
    const after = (await store.getAgentById(agent.address_id)) as AgentRow
    expect(after.auto_kill_policy_id).toBeNull()
    expect(JSON.parse(after.enforcement_baseline as string)).toMatchObject({ policy_id: 'pol_contract', received_day: 5 })
    const rows = await Promise.all(ids.map((id) => store.getIntent(id)))
    expect(rows.map((r) => r?.available_at)).toEqual([0, 100, 200, 300, 400].map((d) => T0 + 100 + d))
    const c = await claim(agent.address_id, 'r', T0 + 250)
    expect(c.deliveries.map((d) => d.intent.intent_id)).toEqual(ids.slice(0, 2))
    expect(c.next_due_at).toBe(T0 + 300)
    const idle = await claim(agent.address_id, 'r', T0 + 260)
    expect(idle).toMatchObject({ deliveries: [], has_room: true, next_due_at: T0 + 300 })
    expect(await store.resumeAgent({ address_id: agent.address_id, now: T0 + 200, actor: 'k', reason: null, rate_per_second: 10, record: resumeRecord })).toMatchObject({ changed: false, redelivering: 0 })
  })

  it('policies: create, update with a version check, delete; each bumps policy_version, audits and notifies', async () => {
    const owner = addr('owner')
    await accept(intentOf(owner, addr('x')))
    const agent = (await store.getAgentByAddress(owner)) as AgentRow
    const row: PolicyRow = {
      policy_id: `pol_${engine}_${n}`,
      address_id: agent.address_id,
      kind: 'rate',
      spec: JSON.stringify({ direction: 'send', max_per_hour: 5, on_breach: 'block' }),
      enabled: 1,
      version: 1,
      created_at: T0,
      updated_at: T0,
    }
    const record = (before: PolicyRow | undefined, after: PolicyRow | null, a: AgentRow) => ({
      audit: draft(before ? (after ? 'policy.update' : 'policy.delete') : 'policy.create', row.policy_id, T0),
      event: meshDraft(a, 'policy.changed', T0),
    })
    const changes: Change[] = []
    const off = store.feed.subscribe((c) => changes.push(c))
    await store.writePolicy({ op: 'create', policy_id: row.policy_id, now: T0, expected_version: null, build: () => row, record })
    expect(changes).toContainEqual({ type: 'policy.changed', address_id: agent.address_id })
    off()
    expect((await store.getAgentById(agent.address_id))?.policy_version).toBe(1)
    expect(await store.listPolicies(agent.address_id)).toMatchObject([{ policy_id: row.policy_id, enabled: 1, version: 1 }])
    await expect(
      store.writePolicy({ op: 'update', policy_id: row.policy_id, now: T0, expected_version: 7, build: (c) => ({ ...(c as PolicyRow), version: 2 }), record }),
    ).rejects.toMatchObject({ code: 'conflict', details: { current_version: 1 } })
    await store.writePolicy({
      op: 'update',
      policy_id: row.policy_id,
      now: T0 + 1,
      expected_version: 1,
      build: (c) => ({ ...(c as PolicyRow), enabled: 0, version: 2, updated_at: T0 + 1 }),
      record,
    })
    expect(await store.getPolicy(row.policy_id)).toMatchObject({ enabled: 0, version: 2, updated_at: T0 + 1 })
    // Accepts read the policies (and their owner's policy_version) in the same transaction.
    const seen: Parties[] = []
    await accept(intentOf(owner, addr('y')), T0, (p) => {
      seen.push(p)
    })
    expect(seen[0]?.from_policies.map((p) => p.policy_id)).toEqual([row.policy_id])
    expect(seen[0]?.from.policy_version).toBe(2)
    await store.writePolicy({ op: 'delete', policy_id: row.policy_id, now: T0 + 2, expected_version: 2, build: () => null, record })
    expect(await store.getPolicy(row.policy_id)).toBeUndefined()
    expect((await store.getAgentById(agent.address_id))?.policy_version).toBe(3)
    await expect(
      store.writePolicy({ op: 'delete', policy_id: row.policy_id, now: T0, expected_version: null, build: () => null, record }),
    ).rejects.toMatchObject({ code: 'not_found' })
    expect(await chainValid(store)).toBe(true)
  })

  it('default policies: replace bumps every agent, accepts read them after the own rows, new agents start at version 1', async () => {
    const old = addr('before-defaults')
    await accept(intentOf(old, addr('z')))
    const versionBefore = ((await store.getAgentByAddress(old)) as AgentRow).policy_version
    const row: PolicyRow = {
      policy_id: `pol_dflt_${engine}_${n}`,
      address_id: DEFAULT_POLICY_OWNER,
      kind: 'action',
      spec: JSON.stringify({ direction: 'send', mode: 'denylist', patterns: ['x.*'] }),
      enabled: 1,
      version: 1,
      created_at: T0,
      updated_at: T0,
    }
    const record = () => ({ audit: draft('policy.defaults_replace', 'policy-defaults', T0), event: meshDraft(null, 'policy.defaults_changed', T0) })
    const unchanged = await store.replaceDefaultPolicies({ now: T0, build: () => null, record })
    expect(unchanged.changed).toBe(false)
    const replaced = await store.replaceDefaultPolicies({ now: T0, build: () => [row], record })
    expect(replaced).toMatchObject({ changed: true, policies: [{ policy_id: row.policy_id, address_id: DEFAULT_POLICY_OWNER, kind: 'action' }] })
    expect(await store.listDefaultPolicies()).toHaveLength(1)
    expect(((await store.getAgentByAddress(old)) as AgentRow).policy_version).toBe(versionBefore + 1)
    // A new agent (first send) starts with the defaults; its own rows come first, then the defaults.
    const seen: Parties[] = []
    const fresh = addr('after-defaults')
    await accept(intentOf(fresh, addr('z')), T0, (p) => {
      seen.push(p)
    })
    expect(seen[0]?.from.policy_version).toBe(1)
    expect(seen[0]?.from_policies.map((p) => [p.policy_id, p.address_id])).toEqual([[row.policy_id, DEFAULT_POLICY_OWNER]])
    expect(await store.listPolicies(seen[0]?.from.address_id as string)).toEqual([])
    await store.replaceDefaultPolicies({ now: T0, build: () => [], record })
    expect(await store.listDefaultPolicies()).toEqual([])
    expect(await chainValid(store)).toBe(true)
  })

  it('audit: appends chain with the core hash, text kept as written; filters escape LIKE wildcards', async () => {
    const target = addr('audited')
    const before = { z: 1, a: [2, { y: 'é', b: null }] }
    const row = await store.appendAudit(draft('x_y.test', target, T0, { before, reason: 'why' }))
    expect(row.before).toBe(JSON.stringify(before))
    expect(row.hash).toBe(auditHash(row.prev_hash, { ...draft('x_y.test', target, T0, { before, reason: 'why' }), seq: row.seq }))
    await store.appendAudit(draft('xzy.test', target, T0))
    const byPrefix = await store.listAudit({ after_seq: 0, limit: 500, action_prefix: 'x_y', target: null })
    expect(byPrefix.map((r) => r.action)).toEqual(['x_y.test'])
    const byTarget = await store.listAudit({ after_seq: 0, limit: 500, action_prefix: null, target })
    expect(byTarget).toHaveLength(2)
    expect(byTarget[1]?.prev_hash).toBe(byTarget[0]?.hash)
    // Concurrent appends still form one chain without gaps.
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.appendAudit(draft('concurrent.test', `${target}-${i}`, T0 + i))))
    expect(await chainValid(store)).toBe(true)
  })

  it('mesh events: numbered in commit order, newest first, after a cursor', async () => {
    const agent = (await store.getAgentByAddress((await accept(intentOf(addr('mesh'), addr('x')))).intent.from_agent)) as AgentRow
    const rows = await Promise.all(Array.from({ length: 10 }, (_, i) => store.appendMeshEvent(meshDraft(agent, 'contract.event', T0 + i))))
    const seqnos = rows.map((r) => r.seqno).sort((a, b) => a - b)
    for (let i = 1; i < seqnos.length; i += 1) expect(seqnos[i]).toBe((seqnos[i - 1] as number) + 1)
    expect(JSON.parse(rows[0]?.details as string)).toEqual({ test: true })
    const newest = await store.listMeshEvents({ limit: 3, event_type: 'contract.event', address: agent.address, before_seqno: null })
    expect(newest.map((r) => r.seqno)).toEqual(seqnos.slice(-3).reverse())
    const older = await store.listMeshEvents({ limit: 100, event_type: null, address: agent.address, before_seqno: seqnos[5] as number })
    expect(older.map((r) => r.seqno)).toEqual(seqnos.slice(0, 5).reverse())
    const after = await store.meshEventsAfter(seqnos[7] as number, 10)
    expect(after.map((r) => r.seqno)).toEqual(seqnos.slice(8))
  })

  it('deadlines and purge: past-deadline work times out; old terminal intents and stale idempotency keys go', async () => {
    const to = addr('late')
    const { intent } = await accept(intentOf(addr('s'), to, { deadline_at: T0 + MIN }))
    expect((await claim(intent.to_address_id, 'd', T0 + MIN)).deliveries).toEqual([])
    expect(await store.timeOutIntents(T0 + MIN, 100)).toBeGreaterThanOrEqual(1)
    expect(await store.getIntent(intent.intent_id)).toMatchObject({ status: 'TIMED_OUT', delivery_state: 'done' })
    expect((await store.listIntentEvents(intent.intent_id, 2, 5)).map((e) => e.event_type)).toEqual(['intent.timed_out'])
    const purged = await store.purge(Date.now() + 10 * MIN, 0, 10_000)
    expect(purged).toBeGreaterThanOrEqual(1)
    expect(await store.getIntent(intent.intent_id)).toBeUndefined()
    expect(await store.listIntentEvents(intent.intent_id, 0, 5)).toEqual([])
  })

  it('keys: an agent key registers its agent; revoke is guarded and audited; the bootstrap key upsert is idempotent', async () => {
    const address = addr('keyed')
    const key = {
      key_id: `key_${engine}${n}`,
      role: 'agent' as const,
      name: 'k',
      key_hash: `${'a'.repeat(56)}${String(n).padStart(8, '0')}`,
      address,
      created_at: T0,
      revoked_at: null,
    }
    const row = await store.insertKey(key, T0, (r) => draft('key.create', r.key_id, T0))
    expect(row.address_id).toMatch(/^addr_/)
    expect(await store.findKeyByHash(key.key_hash)).toMatchObject({ key_id: key.key_id, address, role: 'agent' })
    expect((await store.listKeys()).some((k) => k.key_id === key.key_id)).toBe(true)
    await expect(
      store.revokeKey(key.key_id, T0 + 1, () => {
        throw new GatewayError('conflict', 'guarded')
      }, (k) => draft('key.revoke', k.key_id, T0)),
    ).rejects.toMatchObject({ code: 'conflict' })
    const revoked = await store.revokeKey(key.key_id, T0 + 1, (_k, others) => expect(others).toBeGreaterThanOrEqual(1), (k) => draft('key.revoke', k.key_id, T0))
    expect(revoked.revoked_at).toBe(T0 + 1)
    expect(await store.getKey(key.key_id)).toMatchObject({ revoked_at: T0 + 1 })
    const admin = { ...key, key_id: `key_adm_${n}`, role: 'admin' as const, address: null, address_id: null, key_hash: 'b'.repeat(64) }
    const results = await Promise.all([1, 2, 3].map(() => store.ensureAdminKey(admin)))
    expect(results.filter((r) => r === 'created')).toHaveLength(1)
    expect(await store.ensureAdminKey(admin)).toBe('existing')
    expect(await store.countActiveKeys('admin')).toBeGreaterThanOrEqual(2)
    expect(await chainValid(store)).toBe(true)
  })

  it('agents: register once with its event, list with health filters', async () => {
    const address = addr('registered')
    const row = blankAgent(address, newAddressId(), T0)
    expect(await store.registerAgent(row, meshDraft(row, 'agent.registered', T0))).toEqual(row)
    expect(await store.registerAgent({ ...row, address_id: newAddressId() }, meshDraft(row, 'agent.registered', T0))).toBeUndefined()
    expect(await store.listMeshEvents({ limit: 5, event_type: 'agent.registered', address, before_seqno: null })).toHaveLength(1)
    const unknown = await store.listAgents(10_000, 'unknown')
    expect(unknown.some((a) => a.address === address)).toBe(true)
    expect((await store.listAgents(10_000, 'killed')).every((a) => a.killed_at !== null)).toBe(true)
    expect((await store.listAgents(10_000, null)).length).toBeGreaterThanOrEqual(unknown.length)
    const counts = await store.countAgentsByHealth()
    expect(counts['unknown']).toBeGreaterThanOrEqual(1)
    expect(counts['killed']).toBeGreaterThanOrEqual(1)
  })

  it('heartbeats: instances, metrics, cost, health transitions; the sweep reassesses stale agents', async () => {
    const address = addr('beating')
    await accept(intentOf(address, addr('x')))
    const agent = (await store.getAgentByAddress(address)) as AgentRow
    const transitions: string[] = []
    const base = {
      address_id: agent.address_id,
      window_start: T0 - 5 * MIN,
      health: ({ instances, now }: { instances: { last_heartbeat_at: number }[]; now: number }) =>
        instances.some((i) => now - i.last_heartbeat_at < MIN) ? ('healthy' as const) : ('unreachable' as const),
      cost_rule: () => ({ thresholds: [], kill: null }),
      // Always re-evaluate here: this contract checks the store's reassessment itself.
      keeps_health: () => false,
      transition: (a: AgentRow, from: string, to: string) => {
        transitions.push(`${from}→${to}`)
        return { ...meshDraft(a, 'agent.health_changed', T0), details: { from, to } }
      },
    }
    const hb = await store.heartbeat({
      ...base,
      instance_id: 'i-1',
      now: T0,
      metrics: { intents_total: 10, intents_succeeded: 9, intents_failed: 1, avg_latency_ms: 20, cost_usd: 0.25 },
    })
    expect(hb.health_status).toBe('healthy')
    expect(hb.agent.last_heartbeat_at).toBe(T0)
    await store.heartbeat({ ...base, instance_id: 'i-2', now: T0 + 1, metrics: null })
    expect((await store.listInstances(agent.address_id)).map((i) => i.instance_id)).toEqual(['i-1', 'i-2'])
    expect(await store.metricsWindow(agent.address_id, T0 - MIN)).toEqual({ total: 10, succeeded: 9, failed: 1, latency_sum: 200, latency_n: 10 })
    expect((await store.getCounters(agent.address_id, T0)).cost_day).toBeCloseTo(0.25)
    expect((await store.instanceCounts(T0, [agent.address_id])).get(agent.address_id)).toEqual({ total: 2, fresh: 2 })
    // Both instances are past the forget time too (the gateway was down long): the pass still
    // sees them, so the agent becomes unreachable (not unknown); the next pass forgets them.
    const sweep = (purge: number | null) =>
      store.sweepHealth({
        now: T0 + 2 * MIN,
        stale_before: T0 + MIN,
        forget_before: T0 + MIN,
        window_start: T0 - 5 * MIN,
        health: base.health,
        transition: base.transition,
        limit: 10_000,
        purge_metrics_before: purge,
      })
    expect(await sweep(null)).toBeGreaterThanOrEqual(1)
    expect(transitions).toEqual(['unknown→healthy', 'healthy→unreachable'])
    expect((await store.getAgentById(agent.address_id))?.health_status).toBe('unreachable')
    expect(await store.listInstances(agent.address_id)).toHaveLength(2)
    expect(await sweep(Math.floor(T0 / MIN) + 1)).toBe(0)
    expect(await store.listInstances(agent.address_id)).toHaveLength(0)
    expect((await store.getAgentById(agent.address_id))?.health_status).toBe('unreachable')
    expect(await store.metricsWindow(agent.address_id, T0 - MIN)).toEqual({ total: 0, succeeded: 0, failed: 0, latency_sum: 0, latency_n: 0 })
  })

  it('webhooks: mesh events queue alerts in the same transaction; claims lease them; attempts are recorded', async () => {
    const hook = { webhook_id: `wh_${engine}_${n}`, url: 'http://127.0.0.1:9/hook', event_types: JSON.stringify(['agent.killed']), secret: 's', created_at: T0, deleted_at: null }
    await store.createWebhook(hook, draft('webhook.create', hook.webhook_id, T0))
    expect((await store.listWebhooks()).map((w) => w.webhook_id)).toContain(hook.webhook_id)
    const victim = addr('alerting')
    await accept(intentOf(addr('s'), victim))
    await kill((await store.getAgentByAddress(victim)) as AgentRow, T0)
    const queued = await store.listAlerts(100, hook.webhook_id)
    expect(queued).toHaveLength(1)
    expect(queued[0]).toMatchObject({ type: 'agent.killed', attempts: 0, delivered_at: null })
    const now = Date.now() + 10 * MIN
    const [first, second] = await Promise.all([store.claimAlerts(now, MIN, 10), store.claimAlerts(now, MIN, 10)])
    const claimed = [...(first ?? []), ...(second ?? [])].filter((a) => a.webhook_id === hook.webhook_id)
    expect(claimed).toHaveLength(1)
    expect(claimed[0]).toMatchObject({ url: hook.url, secret: 's' })
    expect((await store.claimAlerts(now, MIN, 10)).filter((a) => a.webhook_id === hook.webhook_id)).toEqual([])
    const alertId = claimed[0]?.alert_id as string
    await store.recordAlertAttempt(alertId, { now, status: 500, error: 'HTTP 500', delivered: false, next_attempt_at: now + 5 })
    await store.recordAlertAttempt(alertId, { now: now + 5, status: 200, error: null, delivered: true, next_attempt_at: null })
    expect((await store.listAlerts(100, hook.webhook_id))[0]).toMatchObject({ attempts: 2, last_status: 200, delivered_at: now + 5, gave_up_at: null })
    await store.deleteWebhook(hook.webhook_id, T0, (w) => draft('webhook.delete', w.webhook_id, T0))
    await expect(store.deleteWebhook(hook.webhook_id, T0, (w) => draft('webhook.delete', w.webhook_id, T0))).rejects.toMatchObject({ code: 'not_found' })
    expect(await store.recordBreach('pol_b', 'hour:1', meshDraft(null, 'policy.breached', T0))).toBe(true)
    expect(await store.recordBreach('pol_b', 'hour:1', meshDraft(null, 'policy.breached', T0))).toBe(false)
  })
})

describe.each(ENGINES)('store contract, through HTTP under concurrency (%s)', (engine: Engine) => {
  // Two replicas on one database for PostgreSQL; one gateway is the whole system for SQLite.
  let a: TestGateway
  let b: TestGateway
  const replicas = (): TestGateway[] => (engine === 'postgres' ? [a, b] : [a])

  beforeAll(async () => {
    // One clock for both replicas, fixed at 10:20 UTC, so no hour boundary falls inside a burst.
    const today = new Date()
    const clock = new ManualClock(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate(), 10, 20))
    const env = { CHOKEPOINT_ADMIN_KEY: ADMIN_KEY }
    a = await startTestGateway({ engine, env, clock })
    b = engine === 'postgres' ? await startTestGateway({ databaseUrl: a.databaseUrl as string, env, clock }) : a
  })
  afterAll(async () => {
    if (b !== a) await b?.close()
    await a?.close()
  })

  it('300 concurrent sends against a limit of 100 (across the replicas) accept exactly 100', async () => {
    const S = `agent://contract/${engine}/limited`
    const R = `agent://contract/${engine}/limited-sink`
    const key = await agentKey(a, S)
    const policy = await api(a.url, ADMIN_KEY, 'POST', `/v1/mesh/agents/${enc(S)}/policies`, {
      kind: 'rate',
      direction: 'send',
      max_per_hour: 100,
      on_breach: 'block',
    })
    expect(policy.status, JSON.stringify(policy.body)).toBe(200)
    const gws = replicas()
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        api((gws[i % gws.length] as TestGateway).url, key, 'POST', '/v1/intents', { intent_type: 'limit.v1', to_agent: R, payload: { i } }),
      ),
    )
    const statuses = results.map((r) => r.status)
    expect(statuses.filter((s) => s === 200).length).toBe(100)
    expect(statuses.filter((s) => s === 429).length).toBe(200)
    const sent = await api(a.url, ADMIN_KEY, 'GET', `/v1/intents?agent=${enc(S)}&direction=sent&limit=500`)
    expect(sent.body.intents).toHaveLength(100)
  })

  it('concurrent kills of one agent from every replica: one kill, one audit entry; the chain verifies', async () => {
    const V = `agent://contract/${engine}/double-kill`
    await agentKey(a, V)
    const kills = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        api((replicas()[i % replicas().length] as TestGateway).url, ADMIN_KEY, 'POST', `/v1/mesh/agents/${enc(V)}/kill`, { reason: `k${i}` }),
      ),
    )
    expect(kills.map((k) => k.status)).toEqual(Array(10).fill(200))
    expect(new Set(kills.map((k) => k.body.killed_at)).size).toBe(1)
    const audit = await api(a.url, ADMIN_KEY, 'GET', `/v1/audit/events?action_prefix=agent.kill&target=${enc(V)}`)
    expect(audit.body.entries).toHaveLength(1)
    await Promise.all(
      Array.from({ length: 10 }, (_, i) => api((replicas()[i % replicas().length] as TestGateway).url, ADMIN_KEY, 'POST', '/v1/keys', { role: 'viewer' })),
    )
    const verify = await api(b.url, ADMIN_KEY, 'GET', '/v1/audit/verify')
    expect(verify.body).toMatchObject({ ok: true, valid: true, first_broken_seq: null })
  })

  it('a kill on one replica cuts the agent’s stream on every replica within 1 s', async () => {
    const V = `agent://contract/${engine}/streamer`
    const vKey = await agentKey(a, V)
    const conn = await openSseStream(b.url, vKey, `/v1/agents/${V.slice('agent://'.length)}/intents/stream`, { 'x-instance-id': 'one' })
    expect(conn.status).toBe(200)
    const start = performance.now()
    const kill = await api(a.url, ADMIN_KEY, 'POST', `/v1/mesh/agents/${enc(V)}/kill`, {})
    expect(kill.status).toBe(200)
    await conn.waitFor((f) => f.some((x) => x.event === 'agent.killed'), 2_000, 'agent.killed')
    await conn.done
    expect(performance.now() - start).toBeLessThan(1_000)
  })
})

/** PostgreSQL only: the feed and the pool when connections fail. */
describe.each(ENGINES.filter((e) => e === 'postgres'))('replicas when PostgreSQL connections fail (%s)', (engine: Engine) => {
  let a: TestGateway
  let b: TestGateway
  const streams: SseConnection[] = []

  beforeAll(async () => {
    a = await startTestGateway({ engine, env: { CHOKEPOINT_ADMIN_KEY: ADMIN_KEY } })
    b = await startTestGateway({ databaseUrl: a.databaseUrl as string, env: { CHOKEPOINT_ADMIN_KEY: ADMIN_KEY } })
  })
  afterAll(async () => {
    for (const s of streams) s.close()
    await b?.close()
    await a?.close()
  })

  async function openVictimStream(name: string): Promise<{ address: string; conn: SseConnection }> {
    const address = `agent://contract/outage/${name}`
    const key = await agentKey(a, address)
    const conn = await openSseStream(b.url, key, `/v1/agents/${address.slice('agent://'.length)}/intents/stream`, { 'x-instance-id': 'one' })
    expect(conn.status).toBe(200)
    streams.push(conn)
    return { address, conn }
  }

  it('several replicas starting at once on an empty database all start (migrations and bootstrap are locked)', async () => {
    const url = await (await sharedPostgres())!.createDatabase()
    const started = await Promise.all([1, 2, 3].map(() => startTestGateway({ databaseUrl: url, env: { CHOKEPOINT_ADMIN_KEY: ADMIN_KEY } })))
    try {
      for (const gw of started) expect((await api(gw.url, ADMIN_KEY, 'GET', '/v1/keys')).status).toBe(200)
      const keys = await api(started[0]!.url, ADMIN_KEY, 'GET', '/v1/keys')
      expect(keys.body.keys.filter((k: { role: string }) => k.role === 'admin')).toHaveLength(1)
    } finally {
      await Promise.all(started.map((gw) => gw.close()))
    }
  })

  it('with the LISTEN connections cut, a kill on A still closes the stream on B within 1 s', async () => {
    const { address, conn } = await openVictimStream('listen-cut')
    const cluster = (await sharedPostgres())!
    const admin = new pg.Client({ connectionString: cluster.url })
    await admin.connect()
    try {
      const cut = await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chokepoint-feed' AND datname = $1`,
        [new URL(a.databaseUrl as string).pathname.slice(1)],
      )
      expect(cut.rowCount).toBe(2)
    } finally {
      await admin.end()
    }
    const start = performance.now()
    const kill = await api(a.url, ADMIN_KEY, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, {})
    expect(kill.status).toBe(200)
    await conn.waitFor((f) => f.some((x) => x.event === 'agent.killed'), 2_000, 'agent.killed')
    expect(performance.now() - start).toBeLessThan(1_000)
  })

  it('with the database down: 503 store_unavailable, nothing accepted; afterwards it recovers and the feed works again', async () => {
    const { address, conn } = await openVictimStream('outage')
    const sender = await agentKey(a, 'agent://contract/outage/sender')
    const cluster = (await sharedPostgres())!
    await cluster.halt()
    try {
      const health = await api(a.url, null, 'GET', '/health')
      expect([health.status, health.body.error?.code]).toEqual([503, 'store_unavailable'])
      const send = await api(b.url, sender, 'POST', '/v1/intents', { intent_type: 'outage.v1', to_agent: address, payload: {} })
      expect([send.status, send.body.error?.code]).toEqual([503, 'store_unavailable'])
    } finally {
      await cluster.start()
    }
    await pollUntil(async () => (await api(a.url, null, 'GET', '/health')).status === 200, { timeoutMs: 10_000, what: 'health back' })
    await pollUntil(async () => (await api(b.url, null, 'GET', '/health')).status === 200, { timeoutMs: 10_000, what: 'health back on B' })
    const sent = await api(b.url, sender, 'POST', '/v1/intents', { intent_type: 'outage.v1', to_agent: address, payload: {} })
    expect(sent.status, JSON.stringify(sent.body)).toBe(200)
    // The stream on B either survived or ended with an error frame; either way a fresh one on B
    // must be cut by a kill on A once the feed is back.
    const fresh = conn.ended ? (await openVictimStream('outage-2')) : { address, conn }
    const kill = await api(a.url, ADMIN_KEY, 'POST', `/v1/mesh/agents/${enc(fresh.address)}/kill`, {})
    expect(kill.status).toBe(200)
    await fresh.conn.waitFor((f) => f.some((x) => x.event === 'agent.killed'), 2_000, 'agent.killed after the outage')
  })
})

describe('the PostgreSQL change feed without its LISTEN connection (no database needed)', () => {
  it('polls the kill state every 250 ms and publishes agent.killed for newly killed agents', async () => {
    let killed: { address_id: string; killed_at: number }[] = [{ address_id: 'addr_old', killed_at: 1 }]
    const feed = new PostgresFeed({
      origin: 'test',
      // Every LISTEN connection attempt fails: the feed stays down and polls.
      newClient: () => new pg.Client({ host: '127.0.0.1', port: 9, connectionTimeoutMillis: 50 }),
      query: async <R,>(sql: string) => (sql.includes('killed_at IS NOT NULL') ? (killed as R[]) : []),
    })
    const seen: Change[] = []
    feed.subscribe((c) => seen.push(c))
    await feed.start()
    try {
      expect(feed.listening).toBe(false)
      // The first poll republishes every killed agent: a kill may have committed unseen.
      await pollUntil(() => seen.some((c) => c.type === 'agent.killed' && c.address_id === 'addr_old'), { timeoutMs: 1_000 })
      const at = performance.now()
      killed = [...killed, { address_id: 'addr_new', killed_at: 2 }]
      await pollUntil(() => seen.some((c) => c.type === 'agent.killed' && c.address_id === 'addr_new'), { timeoutMs: 1_000 })
      expect(performance.now() - at).toBeLessThan(600)
      const before = seen.length
      await new Promise((resolve) => setTimeout(resolve, 600))
      expect(seen.slice(before)).toEqual([])
    } finally {
      await feed.close()
    }
  })

  it('polls instance quarantines too and publishes instance.quarantined for new ones', async () => {
    let quarantines: { address_id: string; instance_id: string; quarantined_at: number }[] = []
    const feed = new PostgresFeed({
      origin: 'test',
      newClient: () => new pg.Client({ host: '127.0.0.1', port: 9, connectionTimeoutMillis: 50 }),
      query: async <R,>(sql: string) => (sql.includes('instance_quarantines') ? (quarantines as R[]) : []),
    })
    const seen: Change[] = []
    feed.subscribe((c) => seen.push(c))
    await feed.start()
    try {
      const at = performance.now()
      quarantines = [{ address_id: 'addr_q', instance_id: 'pod-1', quarantined_at: 5 }]
      await pollUntil(() => seen.some((c) => c.type === 'instance.quarantined' && c.instance_id === 'pod-1'), { timeoutMs: 1_000 })
      expect(performance.now() - at).toBeLessThan(600)
      const before = seen.length
      await new Promise((resolve) => setTimeout(resolve, 600))
      expect(seen.slice(before)).toEqual([])
    } finally {
      await feed.close()
    }
  })

  it('splits a large transaction into NOTIFY payloads under 8000 bytes', () => {
    const changes: Change[] = Array.from({ length: 2_000 }, (_, i) => ({ type: 'intent.event', intent_id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}` }))
    const payloads = encodeChanges('origin', changes)
    expect(payloads.length).toBeGreaterThan(1)
    for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThan(8_000)
    expect(payloads.flatMap((p) => JSON.parse(p).c)).toEqual(changes)
  })
})
