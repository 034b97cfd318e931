import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import type { AuditEntry } from '../types.js'

/** The append-only, hash-chained audit log. */
export class Audit extends APIResource {
  /** Entries in `seq` order; page with `after_seq: next_after_seq`. */
  list(params: AuditListParams = {}, options?: RequestOptions): Promise<AuditListResponse> {
    return this._client.get('/v1/audit/events', { ...params }, options)
  }

  /** Recomputes the hash chain; `first_broken_seq` names the first entry that does not match. */
  verify(options?: RequestOptions): Promise<AuditVerifyResponse> {
    return this._client.get('/v1/audit/verify', undefined, options)
  }
}

export interface AuditListParams {
  limit?: number | undefined
  after_seq?: number | undefined
  /** e.g. `agent.` for kills, auto-kills and resumes. */
  action_prefix?: string | undefined
  /** An agent address, `key_id`, `policy_id` or `webhook_id`. */
  target?: string | undefined
}

export interface AuditListResponse {
  ok: true
  entries: AuditEntry[]
  next_after_seq: number | null
}

export interface AuditVerifyResponse {
  ok: true
  /** How many entries were checked. */
  entries: number
  valid: boolean
  first_broken_seq: number | null
}
