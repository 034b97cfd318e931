/**
 * SQLite engine: the kill switch: kills, held backlogs, resumes, fleet kills, instance quarantines.
 * Functions of SqliteStore's context, run inside its write queue where they write.
 */
import { GatewayError } from '../../core/errors.js'
import type { Change } from '../change-feed.js'
import type {
  FleetKillInput,
  FleetKillResult,
  FleetKillRow,
  FleetResumeInput,
  FleetResumeResult,
  InstanceQuarantineRow,
  LiftQuarantineInput,
  QuarantineInput,
  QuarantineResult,
  AuditDraft,
  HoldInput,
  KillInput,
  ResumeInput,
  AgentRow,
} from '../store.js'
import type { SqliteContext } from './context.js'

// ---- kill switch ----
export async function killAgent(ctx: SqliteContext, input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
  return ctx.write((changes) => {
    const before = ctx.agentById(input.address_id)
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    if (input.guard && !input.guard(before)) return { agent: before, changed: false }
    const after = ctx.q.killAgent.get({
      address_id: input.address_id,
      now: input.now,
      reason: input.reason,
      actor: input.actor,
    }) as AgentRow | undefined
    if (!after) return { agent: before, changed: false }
    return { agent: ctx.recordKill(before, after, input, changes), changed: true }
  })
}

/** The rest of a kill's transaction once the agent row flipped: audit, event, notification. */
export function recordKill(
  ctx: SqliteContext,
  before: AgentRow,
  after: AgentRow,
  input: Pick<KillInput, 'policy_id' | 'record'>,
  changes: Change[],
): AgentRow {
  if (input.policy_id !== null) ctx.q.markAutoKill.run(input.policy_id, after.address_id)
  const { audit, event } = input.record(before, after)
  ctx.audit(audit)
  ctx.meshEvent(event, changes)
  changes.push({ type: 'agent.killed', address_id: after.address_id })
  return { ...after, auto_kill_policy_id: input.policy_id ?? after.auto_kill_policy_id }
}

export async function holdBacklog(ctx: SqliteContext, input: HoldInput): Promise<{ held: number; canceled: number }> {
  return ctx.write((changes) => {
    const agent = ctx.agentById(input.address_id)
    // Resumed in between: nothing to hold any more.
    if (!agent || agent.killed_at === null) return { held: 0, canceled: 0 }
    let held = 0
    let canceled = 0
    const details = JSON.stringify({ reason: input.reason, killed_agent: agent.address })
    type Holdable = { intent_id: string; delivery_state: string; lease_instance: string | null; status: string }
    const inbound = ctx.q.holdableTo.all({ id: input.address_id, limit: input.limit }) as Holdable[]
    for (const row of inbound) {
      const r = ctx.q.hold.get({ intent_id: row.intent_id, now: input.now }) as { last_event_seq: number; status: string }
      ctx.q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, input.actor, input.now, details)
      changes.push({ type: 'intent.event', intent_id: row.intent_id })
      held += 1
    }
    const outbound = ctx.q.holdableFrom.all(input.address_id, input.limit - inbound.length) as Holdable[]
    for (const row of outbound) {
      if (input.cancel_pending) {
        const error = JSON.stringify({ code: 'canceled', message: 'canceled by the kill of its sender', reason: input.reason })
        const r = ctx.q.cancelHeld.get({ intent_id: row.intent_id, now: input.now, error }) as { last_event_seq: number }
        ctx.q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.canceled', 'CANCELED', input.actor, input.now, details)
        canceled += 1
      } else {
        const r = ctx.q.hold.get({ intent_id: row.intent_id, now: input.now }) as { last_event_seq: number; status: string }
        ctx.q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, input.actor, input.now, details)
        held += 1
      }
      changes.push({ type: 'intent.event', intent_id: row.intent_id })
    }
    return { held, canceled }
  })
}

export async function resumeAgent(
  ctx: SqliteContext,
  input: ResumeInput,
): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
  return ctx.write((changes) => {
    const before = ctx.agentById(input.address_id)
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const resumed = ctx.resumeOne(before, input, changes)
    if (resumed === null) return { agent: before, changed: false, redelivering: 0 }
    ctx.audit(resumed.audit)
    return { agent: resumed.agent, redelivering: resumed.redelivering, changed: true }
  })
}

/** Clears one agent's kill and releases its held work (paced); null when it was not killed. */
export function resumeOne(
  ctx: SqliteContext,
  before: AgentRow,
  input: Pick<ResumeInput, 'now' | 'rate_per_second' | 'record'>,
  changes: Change[],
): { agent: AgentRow; redelivering: number; audit: AuditDraft } | null {
  {
    const after = ctx.q.resumeAgent.get({ address_id: before.address_id, now: input.now }) as AgentRow | undefined
    if (!after) return null
    if (before.auto_kill_policy_id !== null) {
      // The policy that fired counts from here on, so the same window does not re-kill at once.
      const baseline = { policy_id: before.auto_kill_policy_id, ...ctx.counters(before.address_id, input.now) }
      ctx.q.setBaseline.run(JSON.stringify(baseline), before.address_id)
    }
    const rows = ctx.q.releasable.all({ id: before.address_id }) as { intent_id: string; to_address_id: string }[]
    // Paced in the store (available_at), so every replica honours the same budget.
    const spacing = 1000 / input.rate_per_second
    const recipients = new Set<string>()
    rows.forEach((row, i) => {
      ctx.q.release.run({ intent_id: row.intent_id, at: input.now + Math.floor(i * spacing), now: input.now })
      recipients.add(row.to_address_id)
    })
    const { audit, event } = input.record(before, after, rows.length)
    ctx.meshEvent(event, changes)
    changes.push({ type: 'agent.resumed', address_id: before.address_id })
    for (const id of recipients) changes.push({ type: 'intent.available', address_id: id })
    return { agent: after, redelivering: rows.length, audit }
  }
}

export async function quarantineInstance(ctx: SqliteContext, input: QuarantineInput): Promise<QuarantineResult> {
  return ctx.write((changes) => {
    const agent = ctx.agentById(input.address_id)
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const inserted = ctx.q.insertQuarantine.get({
      address_id: input.address_id,
      instance_id: input.instance_id,
      quarantined_at: input.now,
      actor: input.actor,
      reason: input.reason,
    }) as InstanceQuarantineRow | undefined
    if (!inserted) {
      const existing = ctx.quarantine(input.address_id, input.instance_id) as InstanceQuarantineRow
      return { agent, quarantine: existing, changed: false, requeued: 0 }
    }
    const requeued = ctx.q.requeueInstance.all({
      address_id: input.address_id,
      instance_id: input.instance_id,
      now: input.now,
    }) as { intent_id: string }[]
    const { audit, event } = input.record(agent, inserted, requeued.length)
    ctx.audit(audit)
    ctx.meshEvent(event, changes)
    // Published in this order after the commit: the instance's streams are cut first, so the
    // wake-up of intent.available goes to a sibling.
    changes.push({ type: 'instance.quarantined', address_id: input.address_id, instance_id: input.instance_id })
    if (requeued.length > 0) changes.push({ type: 'intent.available', address_id: input.address_id })
    return { agent, quarantine: inserted, changed: true, requeued: requeued.length }
  })
}

export async function liftQuarantine(
  ctx: SqliteContext,
  input: LiftQuarantineInput,
): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
  return ctx.write((changes) => {
    const agent = ctx.agentById(input.address_id)
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const lifted = ctx.q.deleteQuarantine.get(input.address_id, input.instance_id) as InstanceQuarantineRow | undefined
    if (!lifted) return { agent, changed: false, lifted: null }
    const { audit, event } = input.record(agent, lifted)
    ctx.audit(audit)
    ctx.meshEvent(event, changes)
    return { agent, changed: true, lifted }
  })
}

export async function getQuarantine(ctx: SqliteContext, addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
  return ctx.quarantine(addressId, instanceId) ?? undefined
}

export async function listQuarantines(ctx: SqliteContext, addressId: string): Promise<InstanceQuarantineRow[]> {
  return ctx.q.quarantinesOf.all(addressId) as InstanceQuarantineRow[]
}

export async function killFleet(ctx: SqliteContext, input: FleetKillInput): Promise<FleetKillResult> {
  return ctx.write((changes) => {
    const matching = ctx.select(input.selection)
    input.guard(matching)
    const fk = input.fleet_kill
    const flipped: [AgentRow, AgentRow][] = []
    const already: AgentRow[] = []
    for (const before of matching) {
      const after = ctx.q.killAgent.get({ address_id: before.address_id, now: input.now, reason: fk.reason, actor: fk.actor }) as
        | AgentRow
        | undefined
      if (after) flipped.push([before, after])
      else already.push(before)
    }
    ctx.q.insertFleetKill.run(fk)
    ctx.audit(input.summary(flipped.map(([, a]) => a), already))
    const killed = flipped.map(([b, a]) => ctx.recordKill(b, a, { policy_id: null, record: input.record }, changes))
    return { killed, already_killed: already }
  })
}

export async function resumeFleet(ctx: SqliteContext, input: FleetResumeInput): Promise<FleetResumeResult> {
  return ctx.write((changes) => {
    const matching = ctx.select(input.selection)
    input.guard(matching)
    const ended = (ctx.q.standingFleetKills.all() as FleetKillRow[])
      .filter(input.ends)
      .map((fk) => ctx.q.endFleetKill.get(input.now, input.actor, fk.fleet_kill_id) as FleetKillRow)
    const killed = matching.filter((a) => a.killed_at !== null)
    // The summary entry first, then one per agent (as a fleet kill writes them).
    const resumed = killed.flatMap((before) => ctx.resumeOne(before, input, changes) ?? [])
    ctx.audit(input.summary(resumed, ended))
    for (const r of resumed) ctx.audit(r.audit)
    return { resumed: resumed.map(({ agent, redelivering }) => ({ agent, redelivering })), ended }
  })
}

export async function listFleetKills(ctx: SqliteContext, standing: boolean, limit: number): Promise<FleetKillRow[]> {
  if (standing) return (ctx.q.standingFleetKills.all() as FleetKillRow[]).reverse().slice(0, limit)
  return ctx.q.listFleetKills.all(limit) as FleetKillRow[]
}
