import { canonicalJson } from '../canonical-json.js'
import { sha256Hex } from '../ids.js'

/** The hashed fields of an audit entry (DESIGN §2.7, §11). */
export interface AuditEntryBody {
  seq: number
  /** Exact ISO string with milliseconds, stored as given. */
  at: string
  actor: string
  action: string
  target: string
  reason: string | null
  before: unknown
  after: unknown
}

export const GENESIS_HASH = '0'.repeat(64)

/** `hash = sha256_hex(prev_hash + JCS({seq, at, actor, action, target, reason, before, after}))`. */
export function auditHash(prevHash: string, entry: AuditEntryBody): string {
  return sha256Hex(
    prevHash +
      canonicalJson({
        seq: entry.seq,
        at: entry.at,
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        reason: entry.reason,
        before: entry.before ?? null,
        after: entry.after ?? null,
      }),
  )
}

/** The audit vocabulary (DESIGN §10). */
export const AUDIT_ACTIONS = [
  'agent.kill',
  'agent.auto_kill',
  'agent.resume',
  'policy.create',
  'policy.update',
  'policy.delete',
  'key.create',
  'key.revoke',
  'webhook.create',
  'webhook.delete',
  'auth.denied',
] as const

export type AuditAction = (typeof AUDIT_ACTIONS)[number]
