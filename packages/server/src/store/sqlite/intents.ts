/**
 * SQLite engine: intents: accept, read, update (ack/resolve), time-outs, retention. Functions of
 * SqliteStore's context, run inside its write queue where they write.
 */
import { GatewayError } from '../../core/errors.js'
import type { Change } from '../change-feed.js'
import type {
  AcceptDecision,
  AcceptIntentInput,
  PolicyRow,
  AcceptIntentResult,
  AgentRow,
  IntentEventRow,
  IntentListQuery,
  IntentRow,
  IntentUpdateInput,
  IntentUpdateResult,
  NewIntent,
  Parties,
} from '../store.js'
import type { SqliteContext } from './context.js'
import { zeroCounters } from './counters.js'

// ---- intents ----
export async function acceptIntent(ctx: SqliteContext, input: AcceptIntentInput): Promise<AcceptIntentResult> {
  return ctx.write((changes) => {
    const { intent, now } = input
    if (input.idempotency) {
      const from = ctx.agentByAddress(intent.from_agent)
      const prior = from
        ? (ctx.q.idemGet.get(from.address_id, input.idempotency.key) as
            | { request_hash: string; intent_id: string }
            | undefined)
        : undefined
      if (prior) {
        if (prior.request_hash !== input.idempotency.request_hash) input.onIdempotencyMismatch()
        const original = ctx.q.intentById.get(prior.intent_id) as IntentRow | undefined
        if (original) return { intent: original, replayed: true }
      }
    }
    const row = ctx.accept(intent, input.actor, now, input.decide, changes, input.from_instance ?? null)
    if (input.idempotency) {
      ctx.q.idemPut.run(row.from_address_id, input.idempotency.key, input.idempotency.request_hash, row.intent_id, now)
    }
    return { intent: row, replayed: false }
  })
}

/** Reads both agent rows, lets core decide, writes the intent and its first two events. */
export function accept(
  ctx: SqliteContext,
  intent: NewIntent,
  actor: string,
  now: number,
  decide: AcceptDecision,
  changes: Change[],
  fromInstance: string | null = null,
): IntentRow {
  const from = ctx.ensureAgent(intent.from_agent, now, true, changes)
  const to = ctx.ensureAgent(intent.to_agent, now, false, changes)
  const parties: Parties = {
    from,
    to,
    from_quarantine: fromInstance === null ? null : ctx.quarantine(from.address_id, fromInstance),
    from_policies: from.policy_version === 0 ? [] : (ctx.q.effectivePolicies.all(from.address_id) as PolicyRow[]),
    to_policies: to.policy_version === 0 ? [] : (ctx.q.effectivePolicies.all(to.address_id) as PolicyRow[]),
    // Counters are read only for a party that may have policies: without any, nothing reads them.
    from_counters: from.policy_version === 0 ? zeroCounters(now) : ctx.counters(from.address_id, now),
    to_counters: to.policy_version === 0 ? zeroCounters(now) : ctx.counters(to.address_id, now),
  }
  for (const event of decide(parties) ?? []) ctx.meshEvent(event, changes)
  // Counted in the accepting transaction: the single writer makes read-decide-increment atomic.
  const day = parties.from_counters.day
  const hour = parties.from_counters.hour
  ctx.q.countAcceptDay.run({ from: from.address_id, to: to.address_id, day })
  ctx.q.countAcceptHour.run({ from: from.address_id, to: to.address_id, hour })
  const row = ctx.q.insertIntent.get({
    ...intent,
    from_address_id: parties.from.address_id,
    to_address_id: parties.to.address_id,
    now,
  }) as IntentRow
  ctx.q.insertEvent.run(intent.intent_id, 1, 'intent.created', 'SUBMITTED', actor, now, null)
  ctx.q.insertEvent.run(intent.intent_id, 2, 'intent.submitted', 'SUBMITTED', actor, now, null)
  changes.push({ type: 'intent.available', address_id: parties.to.address_id })
  return row
}

export async function getIntent(ctx: SqliteContext, intentId: string): Promise<IntentRow | undefined> {
  return ctx.q.intentById.get(intentId) as IntentRow | undefined
}

export async function listIntentEvents(ctx: SqliteContext, intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
  return ctx.q.eventsSince.all(intentId, since, limit) as IntentEventRow[]
}

export async function listIntents(ctx: SqliteContext, query: IntentListQuery): Promise<IntentRow[]> {
  const where: string[] = []
  const params: unknown[] = []
  if (query.direction === 'sent') where.push('from_address_id = ?')
  else if (query.direction === 'received') where.push('to_address_id = ?')
  else where.push('(from_address_id = ? OR to_address_id = ?)')
  params.push(query.address_id)
  if (query.direction === 'both') params.push(query.address_id)
  if (query.status) {
    where.push('status = ?')
    params.push(query.status)
  }
  if (query.after) {
    where.push('seqno < coalesce((SELECT seqno FROM intents WHERE intent_id = ?), 0)')
    params.push(query.after)
  }
  params.push(query.limit)
  const sql = `SELECT * FROM intents WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT ?`
  return ctx.adhoc(sql).all(...params) as IntentRow[]
}

export async function updateIntent(ctx: SqliteContext, input: IntentUpdateInput): Promise<IntentUpdateResult> {
  return ctx.write((changes) => {
    const intent = ctx.q.intentById.get(input.intent_id) as IntentRow | undefined
    if (!intent) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
    const recipient = ctx.agentById(intent.to_address_id) as AgentRow
    const sender = ctx.agentById(intent.from_address_id) as AgentRow
    const instanceId = input.instance_id ?? null
    const quarantine = instanceId === null ? null : ctx.quarantine(intent.to_address_id, instanceId)
    const change = input.decide({ intent, recipient, sender, quarantine })
    // The row as written (and its new event seq), instead of reading it again.
    const updated = ctx.q.updateIntent.get({
      event: change.event_type ? 1 : 0,
      intent_id: intent.intent_id,
      status: change.status,
      delivery_state: change.delivery_state,
      lease_expires_at: change.lease_expires_at,
      result: change.result ?? null,
      error: change.error ?? null,
      cost_usd: change.cost_usd ?? null,
      now: input.now,
    }) as IntentRow
    let event: IntentEventRow | null = null
    if (change.event_type) {
      const seq = updated.last_event_seq
      event = {
        intent_id: intent.intent_id,
        seq,
        event_type: change.event_type,
        status: change.status,
        actor: input.actor,
        at: input.now,
        details: change.event_details ? JSON.stringify(change.event_details) : null,
      }
      ctx.q.insertEvent.run(event.intent_id, seq, event.event_type, event.status, event.actor, event.at, event.details)
      changes.push({ type: 'intent.event', intent_id: intent.intent_id })
    }
    if (intent.delivery_state === 'leased' && change.delivery_state !== 'leased' && intent.lease_instance) {
      changes.push({ type: 'slot.freed', address_id: intent.to_address_id, instance_id: intent.lease_instance })
    }
    if (change.cost_usd && change.cost_usd > 0 && input.cost_rule) {
      ctx.applyCost(recipient, change.cost_usd, input.now, input.cost_rule, changes)
    }
    let followUp: IntentUpdateResult['follow_up'] = null
    if (change.follow_up) {
      const { intent: next, decide } = change.follow_up
      // A rejected follow-up (e.g. reply_to agent killed) must not undo the resolve: savepoint.
      try {
        const row = ctx.savepoint(() => ctx.accept(next, input.actor, input.now, decide, changes))
        followUp = { accepted: true, intent: row }
      } catch (error) {
        followUp = { accepted: false, error }
      }
    }
    return { intent: updated, event, follow_up: followUp }
  })
}

export async function timeOutIntents(ctx: SqliteContext, now: number, limit: number): Promise<number> {
  return ctx.write((changes) => {
    type Due = { intent_id: string; to_address_id: string; lease_instance: string | null; delivery_state: string }
    const rows = ctx.q.pastDeadline.all(now, limit) as Due[]
    for (const row of rows) {
      const { last_event_seq } = ctx.q.timeOut.get({ intent_id: row.intent_id, now }) as { last_event_seq: number }
      ctx.q.insertEvent.run(row.intent_id, last_event_seq, 'intent.timed_out', 'TIMED_OUT', 'system', now, null)
      changes.push({ type: 'intent.event', intent_id: row.intent_id })
      if (row.delivery_state === 'leased' && row.lease_instance) {
        changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
      }
    }
    return rows.length
  })
}

export async function purge(ctx: SqliteContext, before: number, idempotencyBefore: number, limit: number): Promise<number> {
  return ctx.write(() => {
    const ids = ctx.q.purgeIntents.all(before, limit) as { intent_id: string }[]
    for (const { intent_id } of ids) ctx.q.purgeEvents.run(intent_id)
    ctx.q.purgeIdem.run(idempotencyBefore)
    return ids.length
  })
}
