/** Row shapes both engines build the same way. */
import type { AgentCounters, AuditDraft, AuditRow } from './store.js'

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
