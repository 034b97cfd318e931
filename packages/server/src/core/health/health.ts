import type { AgentRow, HealthStatus, HeartbeatMetrics, InstanceRow, MetricsWindow } from '../../store/store.js'

export interface HealthOptions {
  /** An instance is stale when its last heartbeat is older than this (default 90 s). */
  staleAfterMs: number
  /** Error rate at or above which an agent is degraded (default 20 %). */
  errorRateThreshold: number
  /** Error rates are judged only with at least this many reported intents (default 10). */
  minSample: number
}

export const DEFAULT_HEALTH: HealthOptions = { staleAfterMs: 90_000, errorRateThreshold: 0.2, minSample: 10 }

/** The window of reported metrics that error rates are computed over (DESIGN §11: 5 minutes). */
export const ERROR_RATE_WINDOW_MS = 5 * 60_000

/** One instance's health: healthy while it beats within `staleAfterMs`, else unreachable. */
export function instanceHealth(instance: InstanceRow, now: number, o: HealthOptions): 'healthy' | 'unreachable' {
  return now - instance.last_heartbeat_at <= o.staleAfterMs ? 'healthy' : 'unreachable'
}

/**
 * An agent's health (DESIGN §7), the one place it is computed: `killed` overrides all;
 * `unknown` before any heartbeat (and after a resume until the next one); `unreachable` when
 * no instance beat within `staleAfterMs`; `degraded` when some instances are stale or the
 * reported error rate is ≥ 20 % (with ≥ 10 intents); otherwise `healthy`.
 */
export function agentHealth(
  agent: AgentRow,
  instances: readonly InstanceRow[],
  window: MetricsWindow,
  now: number,
  o: HealthOptions = DEFAULT_HEALTH,
): HealthStatus {
  if (agent.killed_at !== null) return 'killed'
  if (agent.last_heartbeat_at === null || instances.length === 0) return 'unknown'
  if (agent.resumed_at !== null && agent.last_heartbeat_at < agent.resumed_at) return 'unknown'
  const fresh = instances.filter((i) => instanceHealth(i, now, o) === 'healthy').length
  if (fresh === 0) return 'unreachable'
  const judged = window.total >= o.minSample
  const errorRate = judged ? window.failed / window.total : 0
  if (fresh < instances.length || errorRate >= o.errorRateThreshold) return 'degraded'
  return 'healthy'
}

/**
 * A beat that reports no intents cannot worsen a healthy agent: its instance is fresh and the
 * error-rate window is unchanged. (Staleness of other instances is the sweeper's to find.)
 * Such a beat skips re-evaluation, which keeps the common beat to a few statements. A beat with
 * intents is always re-evaluated: even successes can bring an unjudged window to ≥ 10 intents.
 */
export function beatKeepsHealth(agent: AgentRow, metrics: HeartbeatMetrics | null): boolean {
  return agent.killed_at === null && agent.health_status === 'healthy' && (metrics === null || metrics.intents_total === 0)
}
