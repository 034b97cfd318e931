/** SQLite engine: per-agent counters and the cost rule. Functions of SqliteStore's context, run inside its write queue where they write. */
import type { Change } from '../change-feed.js'
import type { HourCounters, AgentCounters, CostRule, PolicyRow, MeshEventDraft, AgentRow } from '../store.js'
import type { SqliteContext } from './context.js'

import { thresholdEvent, zeroCounters } from '../rows.js'
export { zeroCounters }

// ---- policies and counters ----
export function counters(ctx: SqliteContext, addressId: string, now: number): AgentCounters {
  const { day, hour } = zeroCounters(now)
  const d = ctx.q.dayRow.get(addressId, day) as { sent: number; received: number; egress: number; cost_usd: number } | undefined
  const h = ctx.q.hourRow.get(addressId, hour) as { sent: number; received: number; egress: number } | undefined
  return {
    day,
    hour,
    sent_hour: h?.sent ?? 0,
    sent_day: d?.sent ?? 0,
    received_hour: h?.received ?? 0,
    received_day: d?.received ?? 0,
    egress_hour: h?.egress ?? 0,
    egress_day: d?.egress ?? 0,
    cost_day: d?.cost_usd ?? 0,
  }
}

/** Counts reported cost for an agent and applies core's budget rule, in the caller's transaction. */
export function applyCost(ctx: SqliteContext, agent: AgentRow, amount: number, now: number, rule: CostRule, changes: Change[]): void {
  const before = ctx.counters(agent.address_id, now)
  ctx.q.countDay.run({ address_id: agent.address_id, day: before.day, sent: 0, received: 0, cost: amount })
  ctx.q.costHour.run(agent.address_id, before.hour, amount)
  const policies = agent.policy_version === 0 ? [] : (ctx.q.effectivePolicies.all(agent.address_id) as PolicyRow[])
  if (policies.length === 0) return
  const outcome = rule({
    agent,
    policies,
    counters: { ...before, cost_day: before.cost_day + amount },
    cost_before: before.cost_day,
    now,
  })
  for (const t of outcome.thresholds) {
    if (ctx.q.budgetAlert.run(t.policy_id, before.day, t.percent, now).changes === 1) {
      ctx.meshEvent(
        thresholdEvent(agent, t, now),
        changes,
      )
    }
  }
  if (outcome.kill) {
    const actor = `policy:${outcome.kill.policy_id}`
    const after = ctx.q.killAgent.get({ address_id: agent.address_id, now, reason: outcome.kill.reason, actor }) as
      | AgentRow
      | undefined
    if (after) {
      ctx.recordKill(agent, after, { policy_id: outcome.kill.policy_id, record: outcome.kill.record }, changes)
    }
  }
}

export async function getCounters(ctx: SqliteContext, addressId: string, now: number): Promise<AgentCounters> {
  return ctx.counters(addressId, now)
}

export async function sumCounters(ctx: SqliteContext, fromDay: string, toDay: string, addressIds: readonly string[]) {
  const rows = ctx.q.sumCounters.all(JSON.stringify(addressIds), fromDay, toDay) as { address_id: string; sent: number; received: number; cost_usd: number }[]
  return new Map(rows.map((r) => [r.address_id, { sent: r.sent, received: r.received, cost_usd: r.cost_usd }]))
}

export async function fleetTotals(ctx: SqliteContext, fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
  const row = ctx.db
    .prepare('SELECT coalesce(sum(sent), 0) AS sent, coalesce(sum(cost_usd), 0) AS cost_usd FROM counters_day WHERE day BETWEEN ? AND ?')
    .get(fromDay, toDay) as { sent: number; cost_usd: number }
  return row
}

export async function listHourCounters(ctx: SqliteContext, addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
  return ctx.q.hourCounters.all(addressId, fromHour, toHour) as HourCounters[]
}

export async function recordBreach(ctx: SqliteContext, policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
  return ctx.write((changes) => {
    if (ctx.q.insertBreach.run(policyId, windowKey, event.created_at).changes === 0) return false
    ctx.meshEvent(event, changes)
    return true
  })
}
