import type { AgentRow, PolicyRow, Store } from '../../store/store.js'
import type { Clock } from '../clock.js'
import type { KillSwitchService } from '../kill-switch/kill-switch-service.js'
import type { Metrics } from '../metrics.js'
import { countWould, wouldEvent } from './monitor.js'
import { specOf, DEFAULT_OWNER, type DeadmanSpec } from './policy-spec.js'

/** Dead-man policies read per pass (one agent each); more wait for the next pass. */
const SWEEP_LIMIT = 5_000
/** Default dead-man policies look for silent agents at most this often (periods are ≥ 10 s). */
const DEFAULT_SCAN_MS = 5_000

/**
 * Since when the agent counts as silent for a dead-man policy: its last heartbeat, but never
 * before the policy was last changed or the agent was last resumed (a resume gives it a full
 * period again, so a resumed agent is not killed again at once).
 */
export function silentSince(agent: AgentRow, policy: PolicyRow): number {
  return Math.max(agent.last_heartbeat_at ?? 0, agent.resumed_at ?? 0, policy.updated_at)
}

/** True when the dead-man policy has fired for this agent row at `now`. */
export function deadmanDue(agent: AgentRow, policy: PolicyRow, now: number): boolean {
  const spec = specOf(policy) as DeadmanSpec
  return agent.killed_at === null && now - silentSince(agent, policy) >= spec.silent_after_seconds * 1000
}

/**
 * The dead-man switch (a sweeper task on every replica). The decision is taken again inside
 * the kill's transaction on the locked agent row (`guard`), so whichever replica gets there
 * first kills it, the others find it killed (or beating again, or resumed) and do nothing:
 * one kill per silence. `on_trigger: alert` records one `agent.deadman` event (and alert)
 * per silence instead.
 */
export class DeadmanService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #killSwitch: KillSwitchService

  readonly #metrics: Metrics | undefined

  constructor(store: Store, clock: Clock, killSwitch: KillSwitchService, metrics?: Metrics) {
    this.#metrics = metrics
    this.#store = store
    this.#clock = clock
    this.#killSwitch = killSwitch
  }

  /** When the default dead-man policies last scanned for silent agents. */
  #defaultsScannedAt = -Infinity

  async sweep(): Promise<number> {
    const now = this.#clock.now()
    let fired = 0
    const own = await this.#store.listEnabledPolicies('deadman', SWEEP_LIMIT)
    for (const policy of own) {
      const agent = await this.#store.getAgentById(policy.address_id)
      if (agent && (await this.#fire(agent, policy, now))) fired += 1
    }
    // A default dead-man policy watches every agent that has beaten at least once and has no
    // enabled dead-man policy of its own (one that never beat is not yet deployed: not silent).
    // Its periods are ≥ 10 s, so scanning every few seconds is enough.
    if (now - this.#defaultsScannedAt < DEFAULT_SCAN_MS) return fired
    this.#defaultsScannedAt = now
    const hasOwn = new Set(own.map((p) => p.address_id))
    const complete = own.length < SWEEP_LIMIT
    for (const policy of await this.#store.listDefaultPolicies()) {
      if (policy.kind !== 'deadman' || policy.enabled !== 1) continue
      const spec = specOf(policy) as DeadmanSpec
      for (const agent of await this.#store.listSilentAgents(now - spec.silent_after_seconds * 1000, SWEEP_LIMIT)) {
        if (hasOwn.has(agent.address_id) || !deadmanDue(agent, policy, now)) continue
        if (!complete && (await this.#store.listPolicies(agent.address_id)).some((p) => p.kind === 'deadman' && p.enabled === 1)) continue
        if (await this.#fire(agent, policy, now)) fired += 1
      }
    }
    return fired
  }

  /** Kills (or alerts on, or in monitor mode records) one silent agent; true when it fired now. */
  async #fire(agent: AgentRow, policy: PolicyRow, now: number): Promise<boolean> {
    if (!deadmanDue(agent, policy, now)) return false
    const spec = specOf(policy) as DeadmanSpec
    const silentS = Math.floor((now - silentSince(agent, policy)) / 1000)
    const label = policy.address_id === DEFAULT_OWNER ? 'default policy' : 'policy'
    const reason = `dead-man switch: no heartbeat from any instance for ${silentS} s (limit ${spec.silent_after_seconds} s, ${label} ${policy.policy_id})`
    // Once per agent and silence (a default policy watches many agents).
    const windowKey = `deadman:${agent.address_id}:${silentSince(agent, policy)}`
    if (spec.on_trigger === 'kill' && spec.enforcement === 'monitor') {
      // Monitor mode: the kill it would have made, once per silence, and nothing else.
      const event = wouldEvent(agent, { policy_id: policy.policy_id, would: 'kill', reason }, now, { silent_s: silentS })
      if (!(await this.#store.recordBreach(policy.policy_id, windowKey, event))) return false
      countWould(this.#metrics, [{ policy_id: policy.policy_id, would: 'kill' }])
      return true
    }
    if (spec.on_trigger === 'kill') {
      const { changed } = await this.#killSwitch.killAgent({ kind: 'policy', policy_id: policy.policy_id }, agent.address_id, {
        reason,
        guard: (fresh) => deadmanDue(fresh, policy, this.#clock.now()),
      })
      return changed
    }
    return this.#store.recordBreach(policy.policy_id, windowKey, {
      address_id: agent.address_id,
      address: agent.address,
      event_type: 'agent.deadman',
      details: { policy_id: policy.policy_id, silent_s: silentS, silent_after_seconds: spec.silent_after_seconds, reason },
      actor_id: `policy:${policy.policy_id}`,
      created_at: now,
    })
  }
}
