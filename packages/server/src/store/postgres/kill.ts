/** PostgreSQL engine, the kill switch: kills, holds, resumes, fleet kills and instance quarantines. */
import { GatewayError } from '../../core/errors.js'
import type {
  AgentCounters,
  AgentRow,
  AgentSelection,
  AuditDraft,
  FleetKillInput,
  FleetKillResult,
  FleetKillRow,
  FleetResumeInput,
  FleetResumeResult,
  HoldInput,
  InstanceQuarantineRow,
  IntentStatus,
  KillInput,
  LiftQuarantineInput,
  QuarantineInput,
  QuarantineResult,
  ResumeInput,
} from '../store.js'
import { AGENTS_BY_PREFIX, gateById } from './agents.js'
import { readCounters } from './counters.js'
import { queueAudit, queueMeshEvent } from './audit.js'
import { EventBatch, LOCK_AGENT, LOCK_CLASS, LOCK_FLEET, type PgDb, type Tx } from './tx.js'

export type Holdable = { intent_id: string; delivery_state: string; lease_instance: string | null; status: string }

export const HOLD = `UPDATE intents SET delivery_state = 'held', lease_instance = NULL, lease_expires_at = NULL,
    kill_dropped = kill_dropped + CASE WHEN delivery_state = 'leased' THEN 1 ELSE 0 END,
    updated_at = $2, last_event_seq = last_event_seq + 1
  WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq, status`

export const KILL = `UPDATE agents SET killed_at = $2, kill_reason = $3, kill_actor = $4
  WHERE address_id = $1 AND killed_at IS NULL RETURNING *`

/** The audit entry and mesh event carry the same effective time as the agent row. */
export function atKillTime(record: KillInput['record'], now: number, killedAt: number): KillInput['record'] {
  if (killedAt === now) return record
  return (b, a) => {
    const r = record(b, a)
    return { audit: { ...r.audit, at: new Date(killedAt).toISOString() }, event: { ...r.event, created_at: killedAt } }
  }
}

export async function killAgent(db: PgDb, input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
  return db.tx(async (tx) => {
    // Waits for every in-flight accept, delivery and resolve of the agent (their shared gates).
    const waitStart = performance.now()
    await gateById(db, tx, input.address_id, true)
    // The kill takes effect once they are done: the clock is read again now, so killed_at is
    // not before the creation or delivery time of anything committed ahead of it, including
    // transactions that began after `input.now` was read while this one waited for a pooled
    // connection (the SQLite engine reads the clock right before its synchronous transaction).
    // Without a clock, the wait is added to `input.now`.
    const killedAt =
      input.clock === undefined
        ? input.now + Math.floor(performance.now() - waitStart)
        : Math.max(input.now, input.clock())
    const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    if (input.guard && !input.guard(before)) return { agent: before, changed: false }
    const after = await tx.one<AgentRow>(KILL, [input.address_id, killedAt, input.reason, input.actor])
    if (!after) return { agent: before, changed: false }
    const record = atKillTime(input.record, input.now, killedAt)
    return { agent: await recordKill(db, tx, before, after, { ...input, record }), changed: true }
  }, db.controlPool)
}

export async function readQuarantine(db: PgDb, tx: Tx, addressId: string, instanceId: string): Promise<InstanceQuarantineRow | null> {
  return (
    (await tx.one<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2', [
      addressId,
      instanceId,
    ])) ?? null
  )
}

/**
 * Like a kill, a quarantine takes the agent's gate exclusively: it waits for every in-flight
 * claim, ack, resolve and send of the agent (shared gate), so the leases it takes
 * back include any claim that committed before it, and every one that starts later reads the
 * quarantine row.
 */
export async function quarantineInstance(db: PgDb, input: QuarantineInput): Promise<QuarantineResult> {
  return db.tx(async (tx) => {
    await gateById(db, tx, input.address_id, true)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const inserted = await tx.one<InstanceQuarantineRow>(
      `INSERT INTO instance_quarantines (address_id, instance_id, quarantined_at, actor, reason)
       VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING *`,
      [input.address_id, input.instance_id, input.now, input.actor, input.reason],
    )
    if (!inserted) {
      const existing = (await readQuarantine(db, tx, input.address_id, input.instance_id)) as InstanceQuarantineRow
      return { agent, quarantine: existing, changed: false, requeued: 0 }
    }
    // Its leases back to the queue, due now; the dropped lease is not a delivery attempt.
    const requeued = await tx.rows<{ intent_id: string }>(
      `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
         kill_dropped = kill_dropped + 1, available_at = $3, updated_at = $3
       WHERE to_address_id = $1 AND delivery_state = 'leased' AND lease_instance = $2 RETURNING intent_id`,
      [input.address_id, input.instance_id, input.now],
    )
    const { audit, event } = input.record(agent, inserted, requeued.length)
    queueAudit(db, tx, audit)
    queueMeshEvent(db, tx, event)
    // NOTIFYed in this order: every replica cuts the instance's streams before it wakes a sibling.
    tx.changes.push({ type: 'instance.quarantined', address_id: input.address_id, instance_id: input.instance_id })
    if (requeued.length > 0) tx.changes.push({ type: 'intent.available', address_id: input.address_id })
    return { agent, quarantine: inserted, changed: true, requeued: requeued.length }
  }, db.controlPool)
}

export async function liftQuarantine(db: PgDb, input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
  return db.tx(async (tx) => {
    await gateById(db, tx, input.address_id, true)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const lifted = await tx.one<InstanceQuarantineRow>(
      'DELETE FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2 RETURNING *',
      [input.address_id, input.instance_id],
    )
    if (!lifted) return { agent, changed: false, lifted: null }
    const { audit, event } = input.record(agent, lifted)
    queueAudit(db, tx, audit)
    queueMeshEvent(db, tx, event)
    return { agent, changed: true, lifted }
  }, db.controlPool)
}

export async function getQuarantine(db: PgDb, addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
  return db.readOne<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2', [
    addressId,
    instanceId,
  ])
}

export async function listQuarantines(db: PgDb, addressId: string): Promise<InstanceQuarantineRow[]> {
  return db.read<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 ORDER BY instance_id', [
    addressId,
  ])
}

/** The rest of a kill's transaction once the agent row flipped: audit, event, notification. */
export async function recordKill(db: PgDb, tx: Tx, before: AgentRow, after: AgentRow, input: Pick<KillInput, 'policy_id' | 'record'>): Promise<AgentRow> {
  if (input.policy_id !== null) {
    await tx.run('UPDATE agents SET auto_kill_policy_id = $1 WHERE address_id = $2', [input.policy_id, after.address_id])
  }
  const { audit, event } = input.record(before, after)
  queueAudit(db, tx, audit)
  queueMeshEvent(db, tx, event)
  tx.changes.push({ type: 'agent.killed', address_id: after.address_id })
  return { ...after, auto_kill_policy_id: input.policy_id ?? after.auto_kill_policy_id }
}

export async function holdBacklog(db: PgDb, input: HoldInput): Promise<{ held: number; canceled: number }> {
  // On the control pool, like the kill it completes: a pool saturated by sends must not delay it.
  return db.tx(async (tx) => {
    // Gated shared: a resume in between either commits first (nothing to hold) or waits.
    await gateById(db, tx, input.address_id, false)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [input.address_id])
    if (!agent || agent.killed_at === null) return { held: 0, canceled: 0 }
    const details = JSON.stringify({ reason: input.reason, killed_agent: agent.address })
    const events = new EventBatch()
    // Its inbound backlog (queued or leased to it) and its own undelivered output, locked in
    // one statement in seqno order, so two agents killed at once cannot deadlock here.
    const rows = await tx.rows<Holdable & { to_address_id: string }>(
      `SELECT intent_id, delivery_state, lease_instance, last_event_seq, status, to_address_id FROM intents
       WHERE intent_id IN (
         (SELECT intent_id FROM intents WHERE to_address_id = $1 AND delivery_state = 'queued' ORDER BY seqno LIMIT $2)
         UNION ALL
         (SELECT intent_id FROM intents WHERE to_address_id = $1 AND delivery_state = 'leased' ORDER BY seqno LIMIT $2)
         UNION ALL
         (SELECT intent_id FROM intents WHERE from_address_id = $1 AND delivery_state = 'queued' AND delivery_attempt = 0
          ORDER BY seqno LIMIT $2))
         -- Rechecked on the newest row version after waiting for a lock.
         AND ((to_address_id = $1 AND delivery_state IN ('queued', 'leased'))
           OR (from_address_id = $1 AND delivery_state = 'queued' AND delivery_attempt = 0))
       ORDER BY seqno FOR UPDATE`,
      [input.address_id, input.limit],
    )
    const inbound = rows.filter((r) => r.to_address_id === input.address_id).slice(0, input.limit)
    const outbound = rows.filter((r) => r.to_address_id !== input.address_id).slice(0, input.limit - inbound.length)
    const heldIn = await tx.rows<{ intent_id: string; last_event_seq: number; status: IntentStatus }>(HOLD, [
      inbound.map((r) => r.intent_id),
      input.now,
    ])
    for (const r of heldIn) {
      events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: input.actor, at: input.now, details })
      tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
    }
    let held = heldIn.length
    let canceled = 0
    const outIds = outbound.map((r) => r.intent_id)
    if (input.cancel_pending) {
      const error = JSON.stringify({ code: 'canceled', message: 'canceled by the kill of its sender', reason: input.reason })
      const rows = await tx.rows<{ intent_id: string; last_event_seq: number }>(
        `UPDATE intents SET status = 'CANCELED', delivery_state = 'done', updated_at = $2,
           error = $3, last_event_seq = last_event_seq + 1
         WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq`,
        [outIds, input.now, error],
      )
      for (const r of rows) {
        events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.canceled', status: 'CANCELED', actor: input.actor, at: input.now, details })
        tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
      }
      canceled = rows.length
    } else {
      const rows = await tx.rows<{ intent_id: string; last_event_seq: number; status: IntentStatus }>(HOLD, [outIds, input.now])
      for (const r of rows) {
        events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: input.actor, at: input.now, details })
        tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
      }
      held += rows.length
    }
    await events.write(tx)
    return { held, canceled }
  }, db.controlPool)
}

export async function resumeAgent(db: PgDb, input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
  return db.tx(async (tx) => {
    await gateById(db, tx, input.address_id, true)
    const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const resumed = await resumeOne(db, tx, before, input)
    if (resumed === null) return { agent: before, changed: false, redelivering: 0 }
    queueAudit(db, tx, resumed.audit)
    return { agent: resumed.agent, redelivering: resumed.redelivering, changed: true }
  }, db.controlPool)
}

/** Clears one gated agent's kill and releases its held work (paced); null when it was not killed. */
export async function resumeOne(
  db: PgDb,
  tx: Tx,
  before: AgentRow,
  input: Pick<ResumeInput, 'now' | 'rate_per_second' | 'record'>,
): Promise<{ agent: AgentRow; redelivering: number; audit: AuditDraft } | null> {
  {
    const after = await tx.one<AgentRow>(
      `UPDATE agents SET killed_at = NULL, kill_reason = NULL, kill_actor = NULL, resumed_at = $2, health_status = 'unknown'
       WHERE address_id = $1 AND killed_at IS NOT NULL RETURNING *`,
      [before.address_id, input.now],
    )
    if (!after) return null
    if (before.auto_kill_policy_id !== null) {
      // The policy that fired counts from here on, so the same window does not re-kill at once.
      const counters = (await readCounters(db, (sql, params) => tx.rows(sql, params), [before.address_id], input.now)).get(
        before.address_id,
      ) as AgentCounters
      const baseline = { policy_id: before.auto_kill_policy_id, ...counters }
      await tx.run('UPDATE agents SET enforcement_baseline = $1, auto_kill_policy_id = NULL WHERE address_id = $2', [
        JSON.stringify(baseline),
        before.address_id,
      ])
    }
    const rows = await tx.rows<{ intent_id: string; to_address_id: string }>(
      `SELECT i.intent_id, i.to_address_id FROM intents i
         JOIN agents t ON t.address_id = i.to_address_id
         JOIN agents f ON f.address_id = i.from_address_id
       WHERE i.delivery_state = 'held' AND (i.to_address_id = $1 OR i.from_address_id = $1)
         AND t.killed_at IS NULL AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
       ORDER BY i.seqno FOR UPDATE OF i`,
      [before.address_id],
    )
    // Paced in the store (available_at), so every replica honours the same budget.
    const spacing = 1000 / input.rate_per_second
    if (rows.length > 0) {
      await tx.run(
        `UPDATE intents i SET delivery_state = 'queued', available_at = v.at, updated_at = $3
         FROM unnest($1::text[], $2::bigint[]) AS v(intent_id, at) WHERE i.intent_id = v.intent_id`,
        [rows.map((r) => r.intent_id), rows.map((_r, i) => input.now + Math.floor(i * spacing)), input.now],
      )
    }
    const { audit, event } = input.record(before, after, rows.length)
    queueMeshEvent(db, tx, event)
    tx.changes.push({ type: 'agent.resumed', address_id: before.address_id })
    for (const id of new Set(rows.map((r) => r.to_address_id))) tx.changes.push({ type: 'intent.available', address_id: id })
    return { agent: after, redelivering: rows.length, audit }
  }
}

/**
 * The selection's agents, gated exclusively in address order and re-read locked, under the
 * exclusive fleet lock (taken first: no agent appears or is relabelled meanwhile).
 */
export async function lockSelection(db: PgDb, tx: Tx, selection: AgentSelection): Promise<AgentRow[]> {
  await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
  const candidates = (await tx.rows<AgentRow>(AGENTS_BY_PREFIX, [selection.prefix.length, selection.prefix])).filter(selection.matches)
  if (candidates.length === 0) return []
  const addresses = candidates.map((a) => a.address)
  await tx.run('SELECT pg_advisory_xact_lock($1::int, hashtext(a)) FROM unnest($2::text[]) AS a', [LOCK_AGENT, addresses])
  return tx.rows<AgentRow>('SELECT * FROM agents WHERE address = ANY($1::text[]) ORDER BY address FOR NO KEY UPDATE', [addresses])
}

export async function killFleet(db: PgDb, input: FleetKillInput): Promise<FleetKillResult> {
  return db.tx(async (tx) => {
    const matching = await lockSelection(db, tx, input.selection)
    input.guard(matching)
    // As for one kill: effective once the in-flight transactions of these agents are done.
    const killedAt = input.clock === undefined ? input.now : Math.max(input.now, input.clock())
    const fk = input.fleet_kill
    const live = matching.filter((a) => a.killed_at === null)
    const flipped = await tx.rows<AgentRow>(
      `UPDATE agents SET killed_at = $2, kill_reason = $3, kill_actor = $4
       WHERE address_id = ANY($1::text[]) AND killed_at IS NULL RETURNING *`,
      [live.map((a) => a.address_id), killedAt, fk.reason, fk.actor],
    )
    const byId = new Map(flipped.map((a) => [a.address_id, a]))
    await tx.run(
      `INSERT INTO fleet_kills (fleet_kill_id, selector, reason, actor, created_at, ended_at, ended_by)
       VALUES ($1, $2, $3, $4, $5, NULL, NULL)`,
      [fk.fleet_kill_id, fk.selector, fk.reason, fk.actor, killedAt],
    )
    const killedRows = live.filter((a) => byId.has(a.address_id)).map((a) => byId.get(a.address_id) as AgentRow)
    const already = matching.filter((a) => !byId.has(a.address_id))
    queueAudit(db, tx, { ...input.summary(killedRows, already), at: new Date(killedAt).toISOString() })
    const record = atKillTime(input.record, input.now, killedAt)
    const killed: AgentRow[] = []
    for (const before of live) {
      const after = byId.get(before.address_id)
      if (after) killed.push(await recordKill(db, tx, before, after, { policy_id: null, record }))
    }
    return { killed, already_killed: already }
  }, db.controlPool)
}

export async function resumeFleet(db: PgDb, input: FleetResumeInput): Promise<FleetResumeResult> {
  return db.tx(async (tx) => {
    const matching = await lockSelection(db, tx, input.selection)
    input.guard(matching)
    const standing = await tx.rows<FleetKillRow>('SELECT * FROM fleet_kills WHERE ended_at IS NULL ORDER BY created_at, fleet_kill_id')
    const ended = await tx.rows<FleetKillRow>(
      'UPDATE fleet_kills SET ended_at = $2, ended_by = $3 WHERE fleet_kill_id = ANY($1::text[]) AND ended_at IS NULL RETURNING *',
      [standing.filter(input.ends).map((fk) => fk.fleet_kill_id), input.now, input.actor],
    )
    const resumed: { agent: AgentRow; redelivering: number; audit: AuditDraft }[] = []
    for (const before of matching) {
      if (before.killed_at === null) continue
      const r = await resumeOne(db, tx, before, input)
      if (r) resumed.push(r)
    }
    queueAudit(db, tx, input.summary(resumed, ended))
    for (const r of resumed) queueAudit(db, tx, r.audit)
    return { resumed: resumed.map(({ agent, redelivering }) => ({ agent, redelivering })), ended }
  }, db.controlPool)
}

export async function listFleetKills(db: PgDb, standing: boolean, limit: number): Promise<FleetKillRow[]> {
  return db.read<FleetKillRow>(
    `SELECT * FROM fleet_kills ${standing ? 'WHERE ended_at IS NULL' : ''} ORDER BY created_at DESC, fleet_kill_id LIMIT $1`,
    [limit],
  )
}
