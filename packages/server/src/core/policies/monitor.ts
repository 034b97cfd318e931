import type { AgentRow, MeshEventDraft, Store } from '../../store/store.js'
import type { Metrics } from '../metrics.js'
import type { WouldDecision } from './policy-engine.js'

/**
 * Monitor mode (`enforcement: monitor`): a monitored policy never blocks or kills; each decision
 * it would have made becomes a `policy.would_deny` / `policy.would_kill` mesh event and a count
 * in `chokepoint_policy_would_total{policy_id,decision}`.
 */
export function wouldEvents(monitored: readonly WouldDecision[], subject: Record<string, unknown>, now: number): MeshEventDraft[] {
  return monitored.map((w) => wouldEvent(w.owner, w, now, { ...subject, decision: w.decision }))
}

/** One would-be decision as a mesh event on the policy's owner. */
export function wouldEvent(
  owner: AgentRow,
  w: { policy_id: string; would: 'deny' | 'kill'; reason: string; source?: string },
  now: number,
  extra: Record<string, unknown> = {},
): MeshEventDraft {
  return {
    address_id: owner.address_id,
    address: owner.address,
    event_type: `policy.would_${w.would}`,
    details: { policy_id: w.policy_id, enforcement: 'monitor', source: w.source ?? 'agent', reason: w.reason, ...extra },
    actor_id: `policy:${w.policy_id}`,
    created_at: now,
  }
}

/** Counts would-be decisions once they are recorded. */
export function countWould(metrics: Metrics | undefined, decisions: readonly { policy_id: string; would: 'deny' | 'kill' }[]): void {
  if (!metrics) return
  for (const d of decisions) metrics.policyWould.inc({ policy_id: d.policy_id, decision: d.would })
}

/**
 * A monitored cost ceiling with `on_breach: kill` that a reported cost crossed: one
 * `policy.would_kill` per policy and UTC day (the enforced ceiling would have killed once).
 */
export async function recordWouldKills(
  store: Store,
  metrics: Metrics | undefined,
  agent: AgentRow,
  wouldKill: readonly { policy_id: string; reason: string }[],
  now: number,
): Promise<void> {
  for (const w of wouldKill) {
    const day = new Date(now).toISOString().slice(0, 10)
    const recorded = await store.recordBreach(w.policy_id, `would_kill:${day}`, wouldEvent(agent, { ...w, would: 'kill' }, now, { decision: 'budget_exceeded' }))
    if (recorded) countWould(metrics, [{ policy_id: w.policy_id, would: 'kill' }])
  }
}
