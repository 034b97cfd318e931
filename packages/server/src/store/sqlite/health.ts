/** SQLite engine: heartbeats, instances and health. Functions of SqliteStore's context, run inside its write queue where they write. */
import { GatewayError } from '../../core/errors.js'
import type { Change } from '../change-feed.js'
import type { HealthStatus, HealthSweepInput, HeartbeatInput, InstanceRow, MetricsWindow, AgentRow } from '../store.js'
import type { SqliteContext } from './context.js'

export async function listSilentAgents(ctx: SqliteContext, before: number, limit: number): Promise<AgentRow[]> {
  return ctx.db
    .prepare('SELECT * FROM agents WHERE killed_at IS NULL AND last_heartbeat_at IS NOT NULL AND last_heartbeat_at < ? ORDER BY last_heartbeat_at LIMIT ?')
    .all(before, limit) as AgentRow[]
}

// ---- heartbeats and health ----
export async function heartbeat(ctx: SqliteContext, input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
  return ctx.write((changes) => {
    const agent = ctx.agentById(input.address_id)
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    ctx.q.upsertInstance.run(input.address_id, input.instance_id, input.now, input.now)
    ctx.q.setHeartbeat.run(input.now, input.address_id)
    const m = input.metrics
    if (m) {
      const minute = Math.floor(input.now / 60_000)
      const latencyN = m.avg_latency_ms === null ? 0 : m.intents_total > 0 ? m.intents_total : 1
      ctx.q.addMetrics.run({
        address_id: input.address_id,
        minute,
        total: m.intents_total,
        succeeded: m.intents_succeeded,
        failed: m.intents_failed,
        latency_sum: m.avg_latency_ms === null ? 0 : m.avg_latency_ms * latencyN,
        latency_n: latencyN,
      })
      const day = new Date(input.now).toISOString().slice(0, 10)
      // Cost under a policy goes through core's budget rule (thresholds, auto-kill); without
      // policies there is nothing to decide and it is counted with the reported intents.
      const ruled = m.cost_usd > 0 && agent.policy_version !== 0
      ctx.q.reportDay.run(input.address_id, day, m.intents_total, m.intents_succeeded, m.intents_failed, ruled ? 0 : m.cost_usd)
      if (ruled) ctx.applyCost(agent, m.cost_usd, input.now, input.cost_rule, changes)
      else if (m.cost_usd > 0) ctx.q.costHour.run(input.address_id, new Date(input.now).toISOString().slice(0, 13), m.cost_usd)
    }
    // Only the budget rule can have changed the agent row (an auto-kill).
    const current =
      agent.policy_version === 0 ? { ...agent, last_heartbeat_at: input.now } : (ctx.agentById(input.address_id) as AgentRow)
    const status = input.keeps_health(current, m)
      ? current.health_status
      : ctx.reassess(current, input.now, input.window_start, input.health, input.transition, changes)
    return { agent: { ...current, health_status: status, last_heartbeat_at: input.now }, health_status: status }
  }, ctx.heartbeatBatchMs)
}

/** Recomputes an agent's health with core's rule and records a transition. */
export function reassess(
  ctx: SqliteContext,
  agent: AgentRow,
  now: number,
  windowStart: number,
  health: HeartbeatInput['health'],
  transition: HeartbeatInput['transition'],
  changes: Change[],
): HealthStatus {
  const instances = ctx.q.instancesOf.all(agent.address_id) as InstanceRow[]
  const window = ctx.q.metricsWindow.get(agent.address_id, Math.floor(windowStart / 60_000)) as MetricsWindow
  const next = health({ agent, instances, window, now })
  const previous: HealthStatus = agent.killed_at !== null ? 'killed' : agent.health_status
  if (next !== agent.health_status && next !== 'killed') ctx.q.setHealth.run(next, agent.address_id)
  if (next !== previous) ctx.meshEvent(transition(agent, previous, next), changes)
  return next
}

export async function sweepHealth(ctx: SqliteContext, input: HealthSweepInput): Promise<number> {
  return ctx.write((changes) => {
    // Forget long-silent instances first, so the health computed below sees the same list the views show.
    ctx.q.forgetInstances.run({ forget: input.forget_before, stale: input.stale_before })
    const candidates = ctx.q.staleCandidates.all({ before: input.stale_before, limit: input.limit }) as AgentRow[]
    let transitions = 0
    for (const agent of candidates) {
      const next = ctx.reassess(agent, input.now, input.window_start, input.health, input.transition, changes)
      if (next !== agent.health_status) transitions += 1
    }
    if (input.purge_metrics_before !== null) ctx.q.purgeMetrics.run(input.purge_metrics_before)
    return transitions
  })
}

export async function listInstances(ctx: SqliteContext, addressId: string): Promise<InstanceRow[]> {
  return ctx.q.instancesOf.all(addressId) as InstanceRow[]
}

export async function instanceCounts(ctx: SqliteContext, freshSince: number, addressIds: readonly string[]) {
  const rows = ctx.q.instanceCounts.all(freshSince, JSON.stringify(addressIds)) as { address_id: string; total: number; fresh: number }[]
  return new Map(rows.map((r) => [r.address_id, { total: r.total, fresh: r.fresh }]))
}

export async function metricsWindow(ctx: SqliteContext, addressId: string, windowStart: number): Promise<MetricsWindow> {
  return ctx.q.metricsWindow.get(addressId, Math.floor(windowStart / 60_000)) as MetricsWindow
}

export async function countAgentsByHealth(ctx: SqliteContext): Promise<Record<string, number>> {
  const rows = ctx.q.countByHealth.all() as { health: string; n: number }[]
  return Object.fromEntries(rows.map((r) => [r.health, r.n]))
}
