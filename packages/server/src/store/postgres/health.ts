/** PostgreSQL engine, heartbeats, instances and health. */
import { GatewayError } from '../../core/errors.js'
import type { AgentRow, HealthStatus, HealthSweepInput, HeartbeatInput, InstanceRow, MetricsWindow } from '../store.js'
import { gateById } from './agents.js'
import { applyCost } from './counters.js'
import { queueMeshEvent } from './audit.js'
import { type PgDb, type Tx, windowOf } from './tx.js'

export async function listSilentAgents(db: PgDb, before: number, limit: number): Promise<AgentRow[]> {
  return db.read<AgentRow>(
    `SELECT * FROM agents WHERE killed_at IS NULL AND last_heartbeat_at IS NOT NULL AND last_heartbeat_at < $1
     ORDER BY last_heartbeat_at LIMIT $2`,
    [before, limit],
  )
}

export async function heartbeat(db: PgDb, input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
  return db.tx(async (tx) => {
    // Locked for update from the start: the heartbeat writes the row (and a cost ceiling may kill).
    await gateById(db, tx, input.address_id, true)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    await tx.run(
      `INSERT INTO agent_instances (address_id, instance_id, first_seen_at, last_heartbeat_at) VALUES ($1, $2, $3, $3)
       ON CONFLICT (address_id, instance_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at`,
      [input.address_id, input.instance_id, input.now],
    )
    await tx.run('UPDATE agents SET last_heartbeat_at = $1 WHERE address_id = $2', [input.now, input.address_id])
    const m = input.metrics
    if (m) {
      const minute = Math.floor(input.now / 60_000)
      const latencyN = m.avg_latency_ms === null ? 0 : m.intents_total > 0 ? m.intents_total : 1
      await tx.run(
        `INSERT INTO heartbeat_metrics (address_id, minute, total, succeeded, failed, latency_sum, latency_n)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (address_id, minute) DO UPDATE SET total = heartbeat_metrics.total + excluded.total,
           succeeded = heartbeat_metrics.succeeded + excluded.succeeded, failed = heartbeat_metrics.failed + excluded.failed,
           latency_sum = heartbeat_metrics.latency_sum + excluded.latency_sum,
           latency_n = heartbeat_metrics.latency_n + excluded.latency_n`,
        [
          input.address_id,
          minute,
          m.intents_total,
          m.intents_succeeded,
          m.intents_failed,
          m.avg_latency_ms === null ? 0 : m.avg_latency_ms * latencyN,
          latencyN,
        ],
      )
      const { day } = windowOf(input.now)
      await tx.run(
        `INSERT INTO counters_day (address_id, day, reported_total, reported_succeeded, reported_failed) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (address_id, day) DO UPDATE SET reported_total = counters_day.reported_total + excluded.reported_total,
           reported_succeeded = counters_day.reported_succeeded + excluded.reported_succeeded,
           reported_failed = counters_day.reported_failed + excluded.reported_failed`,
        [input.address_id, day, m.intents_total, m.intents_succeeded, m.intents_failed],
      )
      if (m.cost_usd > 0) await applyCost(db, tx, agent, m.cost_usd, input.now, input.cost_rule, true)
    }
    const current = (await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [input.address_id])) as AgentRow
    const status = input.keeps_health(current, input.metrics)
      ? current.health_status
      : await reassess(db, tx, current, input.now, input.window_start, input.health, input.transition)
    return { agent: { ...current, health_status: status, last_heartbeat_at: input.now }, health_status: status }
  })
}

/** Recomputes an agent's health with core's rule and records a transition. */
export async function reassess(
  db: PgDb,
  tx: Tx,
  agent: AgentRow,
  now: number,
  windowStart: number,
  health: HeartbeatInput['health'],
  transition: HeartbeatInput['transition'],
): Promise<HealthStatus> {
  const instances = await tx.rows<InstanceRow>('SELECT * FROM agent_instances WHERE address_id = $1 ORDER BY instance_id', [
    agent.address_id,
  ])
  const window = await sumMetricsWindow(db, (sql, params) => tx.rows(sql, params), agent.address_id, windowStart)
  const next = health({ agent, instances, window, now })
  const previous: HealthStatus = agent.killed_at !== null ? 'killed' : agent.health_status
  if (next !== agent.health_status && next !== 'killed') {
    await tx.run('UPDATE agents SET health_status = $1 WHERE address_id = $2', [next, agent.address_id])
  }
  if (next !== previous) queueMeshEvent(db, tx, transition(agent, previous, next))
  return next
}

export async function sumMetricsWindow(
  db: PgDb,
  query: <R>(sql: string, params: unknown[]) => Promise<R[]>,
  addressId: string,
  windowStart: number,
): Promise<MetricsWindow> {
  const [row] = await query<MetricsWindow>(
    `SELECT coalesce(sum(total), 0)::bigint AS total, coalesce(sum(succeeded), 0)::bigint AS succeeded,
       coalesce(sum(failed), 0)::bigint AS failed, coalesce(sum(latency_sum), 0)::float8 AS latency_sum,
       coalesce(sum(latency_n), 0)::bigint AS latency_n
     FROM heartbeat_metrics WHERE address_id = $1 AND minute >= $2`,
    [addressId, Math.floor(windowStart / 60_000)],
  )
  return row ?? { total: 0, succeeded: 0, failed: 0, latency_sum: 0, latency_n: 0 }
}

export async function sweepHealth(db: PgDb, input: HealthSweepInput): Promise<number> {
  return db.tx(async (tx) => {
    // Forget long-silent instances first, so the health computed below sees the same list the views show.
    // Except those of an agent still shown live whose last beat is stale: the staleness pass
    // must see them first (it then marks the agent unreachable).
    await tx.run(
      `DELETE FROM agent_instances i WHERE i.last_heartbeat_at < $1
         AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.address_id = i.address_id AND a.killed_at IS NULL
           AND a.health_status IN ('healthy', 'degraded') AND a.last_heartbeat_at < $2)`,
      [input.forget_before, input.stale_before],
    )
    // Live agents shown healthy/degraded with an instance that went quiet (an agent whose last
    // beat is stale has only such instances), found through the instances' time index. Every
    // replica sweeps; SKIP LOCKED gives each stale agent to one of them.
    const candidates = await tx.rows<AgentRow>(
      `SELECT a.* FROM agents a
       WHERE a.address_id IN (SELECT i.address_id FROM agent_instances i WHERE i.last_heartbeat_at < $1)
         AND a.killed_at IS NULL AND a.health_status IN ('healthy', 'degraded')
       ORDER BY a.address_id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`,
      [input.stale_before, input.limit],
    )
    let transitions = 0
    for (const agent of candidates) {
      const next = await reassess(db, tx, agent, input.now, input.window_start, input.health, input.transition)
      if (next !== agent.health_status) transitions += 1
    }
    if (input.purge_metrics_before !== null) {
      await tx.run('DELETE FROM heartbeat_metrics WHERE minute < $1', [input.purge_metrics_before])
    }
    return transitions
  })
}

export async function listInstances(db: PgDb, addressId: string): Promise<InstanceRow[]> {
  return db.read<InstanceRow>('SELECT * FROM agent_instances WHERE address_id = $1 ORDER BY instance_id', [addressId])
}

export async function instanceCounts(db: PgDb, freshSince: number, addressIds: readonly string[]) {
  const rows = await db.read<{ address_id: string; total: number; fresh: number }>(
    `SELECT address_id, count(*) AS total, sum(CASE WHEN last_heartbeat_at >= $1 THEN 1 ELSE 0 END)::bigint AS fresh
     FROM agent_instances WHERE address_id = ANY($2::text[]) GROUP BY address_id`,
    [freshSince, addressIds],
  )
  return new Map(rows.map((r) => [r.address_id, { total: r.total, fresh: r.fresh }]))
}

export async function metricsWindow(db: PgDb, addressId: string, windowStart: number): Promise<MetricsWindow> {
  return sumMetricsWindow(db, (sql, params) => db.read(sql, params), addressId, windowStart)
}

export async function countAgentsByHealth(db: PgDb): Promise<Record<string, number>> {
  const rows = await db.read<{ health: string; n: number }>(
    `SELECT CASE WHEN killed_at IS NOT NULL THEN 'killed' ELSE health_status END AS health, count(*) AS n
     FROM agents GROUP BY 1`,
  )
  return Object.fromEntries(rows.map((r) => [r.health, r.n]))
}
