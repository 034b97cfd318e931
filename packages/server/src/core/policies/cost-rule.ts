import type { CostRule } from '../../store/store.js'
import { killRecord } from '../kill-switch/kill-switch-service.js'
import type { PolicyEngine } from './policy-engine.js'

/** What a reported cost set off, for the caller to finish once the transaction committed. */
export interface CostFindings {
  /** The enforced ceiling that killed the agent in the transaction (hold its backlog next). */
  kill: { address_id: string; policy_id: string; reason: string } | null
  /** Monitored ceilings that would have killed it (recorded, nothing enforced). */
  would_kill: { policy_id: string; reason: string }[]
}

/**
 * Core's rule for reported cost (resolve `cost_usd`, heartbeat metrics), one for both: the
 * engine's outcome, with the kill to write in the same transaction when an enforced ceiling
 * with `on_breach: kill` is reached. `findings` is filled in on every run of the rule.
 */
export function costRule(engine: PolicyEngine, now: number, findings: CostFindings): CostRule {
  return (ctx) => {
    const outcome = engine.costOutcome(ctx)
    findings.would_kill = outcome.would_kill
    const kill = outcome.kill
    findings.kill = kill ? { address_id: ctx.agent.address_id, ...kill } : null
    if (!kill) return { thresholds: outcome.thresholds, kill: null }
    const actor = { kind: 'policy' as const, policy_id: kill.policy_id }
    return { thresholds: outcome.thresholds, kill: { ...kill, record: killRecord(actor, now, kill.reason, false) } }
  }
}

export const noFindings = (): CostFindings => ({ kill: null, would_kill: [] })
