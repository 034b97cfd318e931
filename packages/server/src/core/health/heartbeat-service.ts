import type { AgentRow, HealthRule, HealthStatus, HeartbeatMetrics, MeshEventDraft, Store } from '../../store/store.js'
import type { Principal } from '../auth/principal.js'
import type { Clock } from '../clock.js'
import { forbidden } from '../errors.js'
import type { KillSwitchService } from '../kill-switch/kill-switch-service.js'
import type { Metrics } from '../metrics.js'
import { costRule, noFindings } from '../policies/cost-rule.js'
import { recordWouldKills } from '../policies/monitor.js'
import type { PolicyEngine } from '../policies/policy-engine.js'
import { ERROR_RATE_WINDOW_MS, agentHealth, beatKeepsHealth, type HealthOptions } from './health.js'

export interface HeartbeatOptions extends HealthOptions {
  /** Recommended interval answered to agents (`next_heartbeat_s`). */
  intervalS: number
  /** Instances silent this long leave the instance list. */
  forgetAfterMs: number
}

const transition = (now: number) => (agent: AgentRow, from: HealthStatus, to: HealthStatus): MeshEventDraft => ({
  address_id: agent.address_id,
  address: agent.address,
  event_type: 'agent.health_changed',
  details: { from, to },
  actor_id: 'system',
  created_at: now,
})

/** Heartbeats (DESIGN §5c, §7) and the sweeper's staleness pass. */
export class HeartbeatService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #policies: PolicyEngine
  readonly #killSwitch: KillSwitchService
  readonly #metrics: Metrics | undefined
  readonly options: HeartbeatOptions
  readonly #health: HealthRule

  constructor(
    deps: { store: Store; clock: Clock; policies: PolicyEngine; killSwitch: KillSwitchService; metrics?: Metrics },
    options: HeartbeatOptions,
  ) {
    this.#metrics = deps.metrics
    this.#store = deps.store
    this.#clock = deps.clock
    this.#policies = deps.policies
    this.#killSwitch = deps.killSwitch
    this.options = options
    this.#health = ({ agent, instances, window, now }) => agentHealth(agent, instances, window, now, options)
  }

  /** Records a beat (also for a killed agent, which learns it is killed from the answer). */
  async beat(principal: Principal, instanceId: string, metrics: HeartbeatMetrics | null) {
    if (principal.role !== 'agent' || principal.address_id === null) throw forbidden('heartbeats need an agent key')
    const now = this.#clock.now()
    const found = noFindings()
    const { agent, health_status } = await this.#store.heartbeat({
      address_id: principal.address_id,
      instance_id: instanceId,
      now,
      metrics,
      window_start: now - ERROR_RATE_WINDOW_MS,
      health: this.#health,
      transition: transition(now),
      keeps_health: beatKeepsHealth,
      cost_rule: costRule(this.#policies, now, found),
    })
    const k = found.kill
    if (k) await this.#killSwitch.hold(agent.address_id, { kind: 'policy', policy_id: k.policy_id }, k.reason)
    if (found.would_kill.length > 0) await recordWouldKills(this.#store, this.#metrics, agent, found.would_kill, now)
    return { agent, health_status: k ? ('killed' as const) : health_status }
  }

  /** The minute before which reported metrics were last dropped (they are kept by the minute). */
  #purgedBefore = -1

  /** Marks agents whose instances went silent, without anyone asking (sweeper). */
  async sweep(): Promise<number> {
    const now = this.#clock.now()
    // Metrics older than the error-rate window, plus an hour for the views, are dropped once
    // a minute: the purge reads the whole table, the staleness pass only what is going stale.
    const purgeBefore = Math.floor((now - ERROR_RATE_WINDOW_MS) / 60_000) - 60
    const purge = purgeBefore > this.#purgedBefore ? purgeBefore : null
    const transitions = await this.#store.sweepHealth({
      now,
      stale_before: now - this.options.staleAfterMs,
      forget_before: now - this.options.forgetAfterMs,
      window_start: now - ERROR_RATE_WINDOW_MS,
      health: this.#health,
      transition: transition(now),
      limit: 500,
      purge_metrics_before: purge,
    })
    if (purge !== null) this.#purgedBefore = purge
    return transitions
  }

  /**
   * Instances with their health, for the agent detail view, each with its quarantine flag;
   * quarantined instances never seen (no heartbeat yet) are listed too, with health `unknown`.
   */
  async instances(agent: AgentRow) {
    const now = this.#clock.now()
    const [rows, quarantines] = await Promise.all([
      this.#store.listInstances(agent.address_id),
      this.#store.listQuarantines(agent.address_id),
    ])
    const byId = new Map(quarantines.map((q) => [q.instance_id, q]))
    const quarantine = (id: string) => {
      const q = byId.get(id)
      return q === undefined
        ? { quarantined: false }
        : { quarantined: true, quarantined_at: new Date(q.quarantined_at).toISOString(), quarantine_reason: q.reason }
    }
    const seen = rows.map((i) => ({
      instance_id: i.instance_id,
      health_status:
        agent.killed_at !== null
          ? 'killed'
          : now - i.last_heartbeat_at <= this.options.staleAfterMs
            ? 'healthy'
            : 'unreachable',
      last_heartbeat_at: new Date(i.last_heartbeat_at).toISOString() as string | null,
      first_seen_at: new Date(i.first_seen_at).toISOString() as string | null,
      ...quarantine(i.instance_id),
    }))
    const seenIds = new Set(rows.map((i) => i.instance_id))
    const unseen = quarantines
      .filter((q) => !seenIds.has(q.instance_id))
      .map((q) => ({
        instance_id: q.instance_id,
        health_status: agent.killed_at !== null ? 'killed' : 'unknown',
        last_heartbeat_at: null,
        first_seen_at: null,
        ...quarantine(q.instance_id),
      }))
    return [...seen, ...unseen].sort((a, b) => (a.instance_id < b.instance_id ? -1 : a.instance_id > b.instance_id ? 1 : 0))
  }
}
