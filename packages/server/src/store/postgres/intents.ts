/** PostgreSQL engine, intents: accept and resolve (alone or group-committed), time-outs and purge. */
import { GatewayError } from '../../core/errors.js'
import {
  type AcceptDecision,
  type AcceptIntentInput,
  type AcceptIntentResult,
  type AgentCounters,
  type AgentRow,
  DEFAULT_POLICY_OWNER,
  type InstanceQuarantineRow,
  type IntentEventRow,
  type IntentListQuery,
  type IntentRow,
  type IntentUpdateInput,
  type IntentUpdateResult,
  type NewIntent,
  type Parties,
  type PolicyRow,
} from '../store.js'
import { isConnectionError, isRetryableConflict, isStalePlan } from './postgres-errors.js'
import { EFFECTIVE_POLICIES, ensureAgents, fleetShared, gate } from './agents.js'
import { applyCost, countersForDecision, countsCounters, foldShards, shardUpsert, zeroCounters } from './counters.js'
import { readQuarantine } from './kill.js'
import { queueMeshEvent } from './audit.js'
import { EventBatch, type Pending, type PgDb, type Tx, windowOf } from './tx.js'

/**
 * Accepts are group-committed (see acceptBatch), except those with an idempotency key: claiming
 * the key makes a concurrent request with the same key wait for this transaction, which a batch
 * would make wait for all of its accepts.
 */
export async function acceptIntent(db: PgDb, input: AcceptIntentInput): Promise<AcceptIntentResult> {
  const { from_agent: from, to_agent: to } = input.intent
  // A first send between agents this replica has not seen yet may create their rows, which a
  // refused accept must not leave behind: alone, as must an accept with an idempotency key.
  if (input.idempotency || !db.known.has(from) || !db.known.has(to) || db.policied.has(from) || db.policied.has(to)) {
    return acceptOne(db, input)
  }
  return db.accepts.submit(input)
}

/** One accept in its own transaction. */
export async function acceptOne(db: PgDb, input: AcceptIntentInput): Promise<AcceptIntentResult> {
  return db.tx(async (tx) => {
    const { intent, now } = input
    if (!db.known.has(intent.from_agent) || !db.known.has(intent.to_agent)) await fleetShared(db, tx)
    await gate(db, tx, [intent.from_agent, intent.to_agent])
    const agents = await ensureAgents(db, tx, [intent.from_agent, intent.to_agent], now, [intent.from_agent])
    const from = agents.get(intent.from_agent) as AgentRow
    const to = agents.get(intent.to_agent) as AgentRow
    if (input.idempotency) {
      // Claiming the key first makes a concurrent request with the same key wait for this
      // transaction, then replay its intent (or take the key over if this one rolled back).
      const claimed = await tx.run(
        `INSERT INTO idempotency_keys (from_address_id, idem_key, request_hash, intent_id, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
        [from.address_id, input.idempotency.key, input.idempotency.request_hash, intent.intent_id, now],
      )
      if (claimed === 0) {
        const prior = await tx.one<{ request_hash: string; intent_id: string }>(
          'SELECT request_hash, intent_id FROM idempotency_keys WHERE from_address_id = $1 AND idem_key = $2',
          [from.address_id, input.idempotency.key],
        )
        if (prior) {
          if (prior.request_hash !== input.idempotency.request_hash) input.onIdempotencyMismatch()
          const original = await tx.one<IntentRow>('SELECT * FROM intents WHERE intent_id = $1', [prior.intent_id])
          if (original) return { intent: original, replayed: true }
        }
        // The original intent was purged: the key now names the new one.
        await tx.run(
          `UPDATE idempotency_keys SET request_hash = $3, intent_id = $4, created_at = $5
           WHERE from_address_id = $1 AND idem_key = $2`,
          [from.address_id, input.idempotency.key, input.idempotency.request_hash, intent.intent_id, now],
        )
      }
    }
    // Read after the shared gate: a quarantine of the sending instance either committed before
    // (seen here) or waits for this transaction (its exclusive gate).
    const fromInstance = input.from_instance ?? null
    const fromQuarantine = fromInstance === null ? null : await readQuarantine(db, tx, from.address_id, fromInstance)
    const row = await acceptLocked(db, tx, from, to, intent, input.actor, now, input.decide, fromQuarantine)
    return { intent: row, replayed: false }
  })
}

/** With both agents gated: policies, counters, core's decision, then the writes. */
export async function acceptLocked(
  db: PgDb,
  tx: Tx,
  from: AgentRow,
  to: AgentRow,
  intent: NewIntent,
  actor: string,
  now: number,
  decide: AcceptDecision,
  fromQuarantine: InstanceQuarantineRow | null = null,
): Promise<IntentRow> {
  const withPolicies = [from, to].filter((a) => a.policy_version !== 0).map((a) => a.address_id)
  const policies =
    withPolicies.length === 0
      ? []
      : await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [withPolicies])
  const fromPolicies =
    from.policy_version === 0 ? [] : policies.filter((p) => p.address_id === from.address_id || p.address_id === DEFAULT_POLICY_OWNER)
  const toPolicies = to.policy_version === 0 ? [] : policies.filter((p) => p.address_id === to.address_id || p.address_id === DEFAULT_POLICY_OWNER)
  // Only a party with a rate or cost policy is decided on its counters: those are locked and
  // read exactly, and incremented under the lock; the others are counted without any lock.
  const counted = new Set<string>()
  if (fromPolicies.some(countsCounters)) counted.add(from.address_id)
  if (toPolicies.some(countsCounters)) counted.add(to.address_id)
  const counters = counted.size === 0 ? new Map<string, AgentCounters>() : await countersForDecision(db, tx, [...counted], [...counted], now)
  const parties: Parties = {
    from,
    to,
    from_quarantine: fromQuarantine,
    from_policies: fromPolicies,
    to_policies: toPolicies,
    from_counters: counters.get(from.address_id) ?? zeroCounters(now),
    to_counters: counters.get(to.address_id) ?? zeroCounters(now),
  }
  for (const event of decide(parties) ?? []) queueMeshEvent(db, tx, event)
  const delta = new Map<string, { sent: number; received: number }>()
  const bump = (id: string, sent: number, received: number): void => {
    const d = delta.get(id) ?? { sent: 0, received: 0 }
    delta.set(id, { sent: d.sent + sent, received: d.received + received })
  }
  bump(from.address_id, 1, 0)
  bump(to.address_id, 0, 1)
  const { day, hour } = windowOf(now)
  const locked = [...delta.keys()].filter((id) => counted.has(id)).sort()
  const sharded = [...delta.keys()].filter((id) => !counted.has(id)).sort()
  const col = (ids: string[], k: 'sent' | 'received'): number[] => ids.map((id) => delta.get(id)?.[k] ?? 0)
  // The intent, its first two events and the unlocked counts in one statement.
  const row = (await tx.one<IntentRow>(
    `WITH i AS (
       INSERT INTO intents (intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id,
         reply_to, deadline_at, max_delivery_attempts, status, delivery_state, available_at, created_at, updated_at, trace_id, last_event_seq)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'SUBMITTED', 'queued', $12, $12, $12, $13, 2) RETURNING *),
     e AS (
       INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
       VALUES ($1, 1, 'intent.created', 'SUBMITTED', $14, $12, NULL), ($1, 2, 'intent.submitted', 'SUBMITTED', $14, $12, NULL)),
     c AS (${shardUpsert(15)})
     SELECT * FROM i`,
    [
      intent.intent_id,
      intent.intent_type,
      from.address_id,
      to.address_id,
      intent.from_agent,
      intent.to_agent,
      intent.payload,
      intent.correlation_id,
      intent.reply_to,
      intent.deadline_at,
      intent.max_delivery_attempts,
      now,
      intent.trace_id,
      actor,
      sharded,
      hour,
      col(sharded, 'sent'),
      col(sharded, 'received'),
    ],
  )) as IntentRow
  if (locked.length > 0) {
    // Counted last (day rows, then hour rows, by address_id: the order every counter writer
    // uses), under the locks #countersForDecision took.
    const sent = col(locked, 'sent')
    const received = col(locked, 'received')
    await tx.run(
      `INSERT INTO counters_day (address_id, day, sent, received)
       SELECT a, $2::text, s, r FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS v(a, s, r)
       ON CONFLICT (address_id, day) DO UPDATE SET sent = counters_day.sent + excluded.sent,
         received = counters_day.received + excluded.received`,
      [locked, day, sent, received],
    )
    await tx.run(
      `INSERT INTO counters_hour (address_id, hour, sent, received)
       SELECT a, $2::text, s, r FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS v(a, s, r)
       ON CONFLICT (address_id, hour) DO UPDATE SET sent = counters_hour.sent + excluded.sent,
         received = counters_hour.received + excluded.received`,
      [locked, hour, sent, received],
    )
  }
  tx.changes.push({ type: 'intent.available', address_id: to.address_id })
  return row
}

export async function getIntent(db: PgDb, intentId: string): Promise<IntentRow | undefined> {
  return db.readOne<IntentRow>('SELECT * FROM intents WHERE intent_id = $1', [intentId])
}

export async function listIntentEvents(db: PgDb, intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
  return db.read<IntentEventRow>(
    'SELECT * FROM intent_events WHERE intent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
    [intentId, since, limit],
  )
}

export async function listIntents(db: PgDb, query: IntentListQuery): Promise<IntentRow[]> {
  const where: string[] = []
  const params: unknown[] = [query.address_id]
  if (query.direction === 'sent') where.push('from_address_id = $1')
  else if (query.direction === 'received') where.push('to_address_id = $1')
  else where.push('(from_address_id = $1 OR to_address_id = $1)')
  if (query.status) {
    params.push(query.status)
    where.push(`status = $${params.length}`)
  }
  if (query.after) {
    params.push(query.after)
    where.push(`seqno < coalesce((SELECT seqno FROM intents WHERE intent_id = $${params.length}), 0)`)
  }
  params.push(query.limit)
  return db.read<IntentRow>(
    `SELECT * FROM intents WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT $${params.length}`,
    params,
  )
}

/** Acks and resolves are group-committed (see updateBatch). */
export async function updateIntent(db: PgDb, input: IntentUpdateInput): Promise<IntentUpdateResult> {
  return db.updates.submit(input)
}

/** One ack or resolve in its own transaction. */
export async function updateOne(db: PgDb, input: IntentUpdateInput): Promise<IntentUpdateResult> {
  return db.tx(async (tx) => {
    const ids = await tx.one<{ from_address_id: string; to_address_id: string; from_agent: string; to_agent: string; reply_to: string | null }>(
      'SELECT from_address_id, to_address_id, from_agent, to_agent, reply_to FROM intents WHERE intent_id = $1',
      [input.intent_id],
    )
    if (!ids) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
    // A completion may send to reply_to, which may be a new agent (fleet lock before gates).
    if (ids.reply_to !== null && !db.known.has(ids.reply_to)) await fleetShared(db, tx)
    await gate(db, tx, [ids.from_agent, ids.to_agent], new Set(tx.lockForCost ? [ids.to_agent] : []))
    // In one statement after the gate: the intent row locked (after the agent rows in the
    // global lock order: those are not locked here, the gate orders their writers), both
    // agent rows and the resolving instance's quarantine, all as of after the gate.
    type Read = IntentRow & { _sender: AgentRow | null; _recipient: AgentRow | null; _quarantine: InstanceQuarantineRow | null }
    const read = await tx.one<Read>(
      `SELECT i.*, (SELECT row_to_json(a) FROM agents a WHERE a.address_id = i.from_address_id) AS _sender,
         (SELECT row_to_json(a) FROM agents a WHERE a.address_id = i.to_address_id) AS _recipient,
         (SELECT row_to_json(q) FROM instance_quarantines q WHERE q.address_id = i.to_address_id AND q.instance_id = $2) AS _quarantine
       FROM intents i WHERE i.intent_id = $1 FOR UPDATE OF i`,
      [input.intent_id, input.instance_id ?? null],
    )
    if (!read) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
    const { _sender: sender, _quarantine: quarantine, ...intent } = read
    let recipient = read._recipient as AgentRow
    // The recipient's row is locked, for update, only on the rerun after a cost ceiling asked to kill it.
    if (tx.lockForCost) {
      recipient = (await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [intent.to_address_id])) ?? recipient
    }
    delete (intent as Partial<Read>)._recipient
    const change = input.decide({ intent, recipient, sender: sender as AgentRow, quarantine })
    // The update, its event (numbered from the row) and the row as it is now, in one statement.
    const withEvent = change.event_type ? 1 : 0
    const details = change.event_details ? JSON.stringify(change.event_details) : null
    const written = (await tx.one<IntentRow>(
      `WITH u AS (
         UPDATE intents SET status = $2, delivery_state = $3, lease_expires_at = $4,
           lease_instance = CASE WHEN $3 = 'leased' THEN lease_instance ELSE NULL END,
           result = coalesce($5, result), error = coalesce($6, error), cost_usd = coalesce($7, cost_usd),
           updated_at = $8, last_event_seq = last_event_seq + $9
         WHERE intent_id = $1 RETURNING *),
       e AS (
         INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
         SELECT intent_id, last_event_seq, $10, $2, $11, $8, $12 FROM u WHERE $9 = 1)
       SELECT * FROM u`,
      [
        intent.intent_id,
        change.status,
        change.delivery_state,
        change.lease_expires_at,
        change.result ?? null,
        change.error ?? null,
        change.cost_usd ?? null,
        input.now,
        withEvent,
        change.event_type ?? null,
        input.actor,
        details,
      ],
    )) as IntentRow
    let event: IntentEventRow | null = null
    if (change.event_type) {
      event = {
        intent_id: intent.intent_id,
        seq: written.last_event_seq,
        event_type: change.event_type,
        status: change.status,
        actor: input.actor,
        at: input.now,
        details,
      }
      tx.changes.push({ type: 'intent.event', intent_id: intent.intent_id })
    }
    if (intent.delivery_state === 'leased' && change.delivery_state !== 'leased' && intent.lease_instance) {
      tx.changes.push({ type: 'slot.freed', address_id: intent.to_address_id, instance_id: intent.lease_instance })
    }
    if (change.cost_usd && change.cost_usd > 0 && input.cost_rule) {
      await applyCost(db, tx, recipient, change.cost_usd, input.now, input.cost_rule, tx.lockForCost)
    }
    let followUp: IntentUpdateResult['follow_up'] = null
    if (change.follow_up) {
      const { intent: next, decide } = change.follow_up
      // A rejected follow-up (e.g. reply_to agent killed) must not undo the resolve: savepoint.
      const mark = tx.changes.length
      await tx.run('SAVEPOINT follow_up')
      try {
        await gate(db, tx, [next.from_agent, next.to_agent])
        const parties = await ensureAgents(db, tx, [next.from_agent, next.to_agent], input.now)
        const row = await acceptLocked(db, 
          tx,
          parties.get(next.from_agent) as AgentRow,
          parties.get(next.to_agent) as AgentRow,
          next,
          input.actor,
          input.now,
          decide,
        )
        await tx.run('RELEASE SAVEPOINT follow_up')
        followUp = { accepted: true, intent: row }
      } catch (error) {
        // The database failing is the whole transaction's failure, not the follow-up's.
        if (isConnectionError(error) || isRetryableConflict(error) || isStalePlan(error)) throw error
        await tx.run('ROLLBACK TO SAVEPOINT follow_up')
        tx.changes.length = mark
        followUp = { accepted: false, error }
      }
    }
    return { intent: written, event, follow_up: followUp }
  })
}

export async function bumpEventSeq(db: PgDb, tx: Tx, intentId: string): Promise<number> {
  const row = await tx.one<{ last_event_seq: number }>(
    'UPDATE intents SET last_event_seq = last_event_seq + 1 WHERE intent_id = $1 RETURNING last_event_seq',
    [intentId],
  )
  return (row as { last_event_seq: number }).last_event_seq
}

export async function timeOutIntents(db: PgDb, now: number, limit: number): Promise<number> {
  return db.tx(async (tx) => {
    type Due = { intent_id: string; to_address_id: string; lease_instance: string | null; delivery_state: string }
    const rows = await tx.rows<Due>(
      `SELECT intent_id, to_address_id, lease_instance, delivery_state FROM intents
       WHERE deadline_at IS NOT NULL AND deadline_at <= $1 AND delivery_state <> 'done'
       ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
      [now, limit],
    )
    if (rows.length === 0) return 0
    const updated = await tx.rows<{ intent_id: string; last_event_seq: number }>(
      `UPDATE intents SET status = 'TIMED_OUT', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
         updated_at = $2, last_event_seq = last_event_seq + 1 WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq`,
      [rows.map((r) => r.intent_id), now],
    )
    const events = new EventBatch()
    for (const u of updated) {
      events.add({ intent_id: u.intent_id, seq: u.last_event_seq, event_type: 'intent.timed_out', status: 'TIMED_OUT', actor: 'system', at: now, details: null })
    }
    await events.write(tx)
    for (const row of rows) {
      tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
      if (row.delivery_state === 'leased' && row.lease_instance) {
        tx.changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
      }
    }
    return rows.length
  })
}

export async function purge(db: PgDb, before: number, idempotencyBefore: number, limit: number): Promise<number> {
  return db.tx(async (tx) => {
    const ids = await tx.rows<{ intent_id: string }>(
      `DELETE FROM intents WHERE seqno IN (
         SELECT seqno FROM intents WHERE delivery_state = 'done' AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING intent_id`,
      [before, limit],
    )
    if (ids.length > 0) {
      await tx.run('DELETE FROM intent_events WHERE intent_id = ANY($1::text[])', [ids.map((r) => r.intent_id)])
    }
    await tx.run('DELETE FROM idempotency_keys WHERE created_at < $1', [idempotencyBefore])
    await foldShards(db, tx, limit)
    return ids.length
  })
}

/**
 * Group commit of accepts (as the SQLite engine does): the accepts that arrived together share
 * one transaction and a handful of statements — every party's gate (shared, in address order,
 * one statement), their rows and the sending instances' quarantines read after the gates, core's
 * decision per accept, then one statement for all the intents, their events and their counts.
 * Every caller is answered after the commit: an accepted intent is never acknowledged before it
 * is durable. A refused accept (its decision threw) is answered with its error and written
 * nothing; the others are unaffected.
 *
 * The kill ordering is the single accept's: a kill of any party waits, at its exclusive gate,
 * for the whole batch to commit, and a batch that takes its gates after a kill committed reads
 * the killed row and refuses that party's intents. So no intent of a batch that commits after a
 * kill returned is accepted from or to the killed agent, and none answered before is lost.
 *
 * An accept with a party that has policies (policy_version ≠ 0) runs alone afterwards (acceptOne):
 * its counters are locked for its decision, which a batch should not hold for the others.
 */
export async function acceptBatch(db: PgDb, batch: Pending<AcceptIntentInput, AcceptIntentResult>[]): Promise<void> {
  type Outcome = { ok: true; row: IntentRow } | { ok: false; error: unknown } | { ok: 'alone' }
  const outcomes = await db.tx(async (tx) => {
    const out = new Map<Pending<AcceptIntentInput, AcceptIntentResult>, Outcome>()
    const addresses = batch.flatMap((p) => [p.input.intent.from_agent, p.input.intent.to_agent])
    // Every address is known to have a row (acceptIntent): no fleet lock, nothing created.
    await gate(db, tx, addresses)
    const agents = await ensureAgents(db, tx, addresses, Math.min(...batch.map((p) => p.input.now)))
    const instances = batch.filter((p) => (p.input.from_instance ?? null) !== null)
    const quarantines = new Map<string, InstanceQuarantineRow>()
    if (instances.length > 0) {
      const rows = await tx.rows<InstanceQuarantineRow>(
        `SELECT q.* FROM instance_quarantines q JOIN unnest($1::text[], $2::text[]) AS v(a, i) ON q.address_id = v.a AND q.instance_id = v.i`,
        [instances.map((p) => (agents.get(p.input.intent.from_agent) as AgentRow).address_id), instances.map((p) => p.input.from_instance as string)],
      )
      for (const q of rows) quarantines.set(`${q.address_id}\n${q.instance_id}`, q)
    }
    const accepted: Pending<AcceptIntentInput, AcceptIntentResult>[] = []
    for (const p of batch) {
      const { intent } = p.input
      const from = agents.get(intent.from_agent) as AgentRow
      const to = agents.get(intent.to_agent) as AgentRow
      // A sender's first send registers it (acceptOne), which a refused accept must undo.
      if (from.registered_at === null) {
        out.set(p, { ok: 'alone' })
        continue
      }
      if (from.policy_version !== 0 || to.policy_version !== 0) {
        if (db.policied.size > 200_000) db.policied.clear()
        for (const a of [from, to]) if (a.policy_version !== 0) db.policied.add(a.address)
        out.set(p, { ok: 'alone' })
        continue
      }
      const instance = p.input.from_instance ?? null
      const parties: Parties = {
        from,
        to,
        from_quarantine: instance === null ? null : (quarantines.get(`${from.address_id}\n${instance}`) ?? null),
        from_policies: [],
        to_policies: [],
        from_counters: zeroCounters(p.input.now),
        to_counters: zeroCounters(p.input.now),
      }
      try {
        for (const event of p.input.decide(parties) ?? []) queueMeshEvent(db, tx, event)
        accepted.push(p)
      } catch (error) {
        out.set(p, { ok: false, error })
      }
    }
    if (accepted.length === 0) return out
    // Counts by (agent, hour): one upsert may not touch a row twice.
    const counts = new Map<string, { a: string; h: string; s: number; r: number }>()
    const count = (a: string, h: string, s: number, r: number): void => {
      const key = `${a}\n${h}`
      const c = counts.get(key) ?? { a, h, s: 0, r: 0 }
      c.s += s
      c.r += r
      counts.set(key, c)
    }
    for (const p of accepted) {
      const { hour } = windowOf(p.input.now)
      count((agents.get(p.input.intent.from_agent) as AgentRow).address_id, hour, 1, 0)
      count((agents.get(p.input.intent.to_agent) as AgentRow).address_id, hour, 0, 1)
    }
    const c = [...counts.values()].sort((x, y) => (x.a === y.a ? (x.h < y.h ? -1 : 1) : x.a < y.a ? -1 : 1))
    const col = <T>(f: (p: Pending<AcceptIntentInput, AcceptIntentResult>) => T): T[] => accepted.map(f)
    const rows = await tx.rows<IntentRow>(
      `WITH v AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
           $10::bigint[], $11::int[], $12::bigint[], $13::text[], $14::text[]) WITH ORDINALITY
         AS v(intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id, reply_to,
           deadline_at, max_delivery_attempts, at, trace_id, actor, k)),
       i AS (
         INSERT INTO intents (intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id,
           reply_to, deadline_at, max_delivery_attempts, status, delivery_state, available_at, created_at, updated_at, trace_id, last_event_seq)
         SELECT intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id, reply_to,
           deadline_at, max_delivery_attempts, 'SUBMITTED', 'queued', at, at, at, trace_id, 2 FROM v ORDER BY k RETURNING *),
       e AS (
         INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
         SELECT intent_id, 1, 'intent.created', 'SUBMITTED', actor, at, NULL FROM v
         UNION ALL SELECT intent_id, 2, 'intent.submitted', 'SUBMITTED', actor, at, NULL FROM v),
       c AS (
         INSERT INTO counter_shards (address_id, hour, shard, sent, received)
         SELECT a, h, pg_backend_pid(), s, r FROM unnest($15::text[], $16::text[], $17::bigint[], $18::bigint[]) AS c(a, h, s, r)
         ON CONFLICT (address_id, hour, shard) DO UPDATE SET sent = counter_shards.sent + excluded.sent,
           received = counter_shards.received + excluded.received)
       SELECT * FROM i`,
      [
        col((p) => p.input.intent.intent_id),
        col((p) => p.input.intent.intent_type),
        col((p) => (agents.get(p.input.intent.from_agent) as AgentRow).address_id),
        col((p) => (agents.get(p.input.intent.to_agent) as AgentRow).address_id),
        col((p) => p.input.intent.from_agent),
        col((p) => p.input.intent.to_agent),
        col((p) => p.input.intent.payload),
        col((p) => p.input.intent.correlation_id),
        col((p) => p.input.intent.reply_to),
        col((p) => p.input.intent.deadline_at),
        col((p) => p.input.intent.max_delivery_attempts),
        col((p) => p.input.now),
        col((p) => p.input.intent.trace_id),
        col((p) => p.input.actor),
        c.map((x) => x.a),
        c.map((x) => x.h),
        c.map((x) => x.s),
        c.map((x) => x.r),
      ],
    )
    const byId = new Map(rows.map((r) => [r.intent_id, r]))
    for (const p of accepted) {
      out.set(p, { ok: true, row: byId.get(p.input.intent.intent_id) as IntentRow })
      tx.changes.push({ type: 'intent.available', address_id: (agents.get(p.input.intent.to_agent) as AgentRow).address_id })
    }
    return out
  })
  // Committed: answer everyone (in arrival order); the accepts with policies run alone now.
  for (const p of batch) {
    const o = outcomes.get(p)
    if (!o) p.reject(new Error('accept lost from its batch'))
    else if (o.ok === true) p.resolve({ intent: o.row, replayed: false })
    else if (o.ok === false) p.reject(o.error)
    else void acceptOne(db, p.input).then(p.resolve, p.reject)
  }
}

/**
 * Group commit of acks and resolves: those that arrived together share one transaction — the
 * intents' parties read once, every party's gate (shared, in address order, one statement), the
 * intent rows locked in seqno order (the order holds and resumes lock them) with their agents
 * and the acting instances' quarantines, core's decision per change, then one statement for
 * every update and its event. Callers are answered after the commit; a refused change (its
 * decision threw) writes nothing and does not affect the others. A change that needs more —
 * a reply_to follow-up, a cost to count (locks, maybe a kill) — runs alone afterwards (updateOne),
 * deciding again on the rows it reads then.
 */
export async function updateBatch(db: PgDb, batch: Pending<IntentUpdateInput, IntentUpdateResult>[]): Promise<void> {
  type Item = Pending<IntentUpdateInput, IntentUpdateResult>
  type Outcome = { ok: true; result: IntentUpdateResult } | { ok: false; error: unknown } | { ok: 'alone' }
  // One intent changed twice in a batch: the later one alone, after.
  const seen = new Set<string>()
  const first: Item[] = []
  const again: Item[] = []
  for (const p of batch) {
    if (seen.has(p.input.intent_id)) again.push(p)
    else {
      seen.add(p.input.intent_id)
      first.push(p)
    }
  }
  const outcomes = await db.tx(async (tx) => {
    const out = new Map<Item, Outcome>()
    type Ids = { intent_id: string; from_agent: string; to_agent: string; reply_to: string | null }
    const ids = new Map(
      (
        await tx.rows<Ids>('SELECT intent_id, from_agent, to_agent, reply_to FROM intents WHERE intent_id = ANY($1::text[])', [
          first.map((p) => p.input.intent_id),
        ])
      ).map((r) => [r.intent_id, r]),
    )
    const mine: Item[] = []
    for (const p of first) {
      const r = ids.get(p.input.intent_id)
      if (!r) out.set(p, { ok: false, error: new GatewayError('not_found', `intent ${p.input.intent_id} not found`) })
      else if (r.reply_to !== null) out.set(p, { ok: 'alone' })
      else mine.push(p)
    }
    if (mine.length === 0) return out
    await gate(db, tx, mine.flatMap((p) => [(ids.get(p.input.intent_id) as Ids).from_agent, (ids.get(p.input.intent_id) as Ids).to_agent]))
    type Read = IntentRow & { _sender: AgentRow | null; _recipient: AgentRow | null; _quarantine: InstanceQuarantineRow | null }
    const reads = await tx.rows<Read>(
      `SELECT i.*, (SELECT row_to_json(a) FROM agents a WHERE a.address_id = i.from_address_id) AS _sender,
         (SELECT row_to_json(a) FROM agents a WHERE a.address_id = i.to_address_id) AS _recipient,
         (SELECT row_to_json(q) FROM instance_quarantines q WHERE q.address_id = i.to_address_id AND q.instance_id = v.instance_id) AS _quarantine
       FROM intents i JOIN unnest($1::text[], $2::text[]) AS v(intent_id, instance_id) ON v.intent_id = i.intent_id
       ORDER BY i.seqno FOR UPDATE OF i`,
      [mine.map((p) => p.input.intent_id), mine.map((p) => p.input.instance_id ?? null)],
    )
    const byId = new Map(reads.map((r) => [r.intent_id, r]))
    type Write = { p: Item; intent: IntentRow; change: ReturnType<IntentUpdateInput['decide']>; details: string | null }
    const writes: Write[] = []
    for (const p of mine) {
      const read = byId.get(p.input.intent_id)
      if (!read) {
        out.set(p, { ok: false, error: new GatewayError('not_found', `intent ${p.input.intent_id} not found`) })
        continue
      }
      const { _sender: sender, _recipient: recipient, _quarantine: quarantine, ...intent } = read
      try {
        const change = p.input.decide({ intent, recipient: recipient as AgentRow, sender: sender as AgentRow, quarantine })
        if (change.follow_up || (change.cost_usd && change.cost_usd > 0 && p.input.cost_rule)) {
          out.set(p, { ok: 'alone' })
          continue
        }
        writes.push({ p, intent, change, details: change.event_details ? JSON.stringify(change.event_details) : null })
      } catch (error) {
        out.set(p, { ok: false, error })
      }
    }
    if (writes.length === 0) return out
    const col = <T>(f: (w: Write) => T): T[] => writes.map(f)
    const rows = await tx.rows<IntentRow>(
      `WITH v AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::float8[], $8::bigint[],
           $9::int[], $10::text[], $11::text[], $12::text[])
         AS v(intent_id, status, delivery_state, lease_expires_at, result, error, cost_usd, at, ev, event_type, actor, details)),
       u AS (
         UPDATE intents i SET status = v.status, delivery_state = v.delivery_state, lease_expires_at = v.lease_expires_at,
           lease_instance = CASE WHEN v.delivery_state = 'leased' THEN i.lease_instance ELSE NULL END,
           result = coalesce(v.result, i.result), error = coalesce(v.error, i.error), cost_usd = coalesce(v.cost_usd, i.cost_usd),
           updated_at = v.at, last_event_seq = i.last_event_seq + v.ev
         FROM v WHERE i.intent_id = v.intent_id RETURNING i.*),
       e AS (
         INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
         SELECT u.intent_id, u.last_event_seq, v.event_type, u.status, v.actor, v.at, v.details FROM u JOIN v USING (intent_id) WHERE v.ev = 1)
       SELECT * FROM u`,
      [
        col((w) => w.intent.intent_id),
        col((w) => w.change.status),
        col((w) => w.change.delivery_state),
        col((w) => w.change.lease_expires_at),
        col((w) => w.change.result ?? null),
        col((w) => w.change.error ?? null),
        col((w) => w.change.cost_usd ?? null),
        col((w) => w.p.input.now),
        col((w) => (w.change.event_type ? 1 : 0)),
        col((w) => w.change.event_type ?? null),
        col((w) => w.p.input.actor),
        col((w) => w.details),
      ],
    )
    const written = new Map(rows.map((r) => [r.intent_id, r]))
    for (const w of writes) {
      const row = written.get(w.intent.intent_id) as IntentRow
      let event: IntentEventRow | null = null
      if (w.change.event_type) {
        event = {
          intent_id: row.intent_id,
          seq: row.last_event_seq,
          event_type: w.change.event_type,
          status: w.change.status,
          actor: w.p.input.actor,
          at: w.p.input.now,
          details: w.details,
        }
        tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
      }
      if (w.intent.delivery_state === 'leased' && w.change.delivery_state !== 'leased' && w.intent.lease_instance) {
        tx.changes.push({ type: 'slot.freed', address_id: w.intent.to_address_id, instance_id: w.intent.lease_instance })
      }
      out.set(w.p, { ok: true, result: { intent: row, event, follow_up: null } })
    }
    return out
  })
  for (const p of first) {
    const o = outcomes.get(p)
    if (!o) p.reject(new Error('change lost from its batch'))
    else if (o.ok === true) p.resolve(o.result)
    else if (o.ok === false) p.reject(o.error)
    else void updateOne(db, p.input).then(p.resolve, p.reject)
  }
  for (const p of again) void updateOne(db, p.input).then(p.resolve, p.reject)
}
