/** Row shapes both engines build the same way. */
import { GatewayError } from '../core/errors.js'
import type { AgentCounters, AgentRow, AuditDraft, AuditRow, CostOutcome, MeshEventDraft, PolicyRow, PolicyWrite } from './store.js'

/** The UTC day and hour of `now` with every count zero (a party nothing is decided on). */
export function zeroCounters(now: number): AgentCounters {
  const at = new Date(now).toISOString()
  return { day: at.slice(0, 10), hour: at.slice(0, 13), sent_hour: 0, sent_day: 0, received_hour: 0, received_day: 0, egress_hour: 0, egress_day: 0, cost_day: 0 }
}

/** The audit entry `seq` of a draft, chained to `prevHash` (DESIGN §2.7). */
export function auditRow(draft: AuditDraft, seq: number, prevHash: string, hashAudit: (prevHash: string, entry: AuditDraft & { seq: number }) => string): AuditRow {
  return {
    seq,
    at: draft.at,
    actor: draft.actor,
    action: draft.action,
    target: draft.target,
    reason: draft.reason,
    before: draft.before === undefined || draft.before === null ? null : JSON.stringify(draft.before),
    after: draft.after === undefined || draft.after === null ? null : JSON.stringify(draft.after),
    prev_hash: prevHash,
    hash: hashAudit(prevHash, { ...draft, seq }),
  }
}

/** An update or delete of a policy needs it to exist, at the version the caller read (`If-Match`). */
export function assertPolicyVersion(current: PolicyRow | undefined, input: PolicyWrite): void {
  if (input.op === 'create') return
  if (!current) throw new GatewayError('not_found', `policy ${input.policy_id} not found`)
  if (input.expected_version !== null && current.version !== input.expected_version) {
    throw new GatewayError('conflict', `policy ${input.policy_id} is at version ${current.version}, not ${input.expected_version}`, {
      details: { current_version: current.version },
    })
  }
}

/** The `budget.threshold` mesh event of a cost threshold crossed (once per policy, day and percent). */
export function thresholdEvent(agent: AgentRow, t: CostOutcome['thresholds'][number], now: number): MeshEventDraft {
  return { address_id: agent.address_id, address: agent.address, event_type: 'budget.threshold', details: t.details, actor_id: `policy:${t.policy_id}`, created_at: now }
}
