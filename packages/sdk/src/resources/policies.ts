import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import { path } from '../internal/path.js'
import type { Policy, PolicyBody } from '../types.js'

/** Per-agent policies: action allow/deny lists, rate limits, cost ceilings (DESIGN §6). */
export class Policies extends APIResource {
  /** An agent's policies (`addressOrId`: `addr_…` or `agent://…`). */
  list(addressOrId: string, options?: RequestOptions): Promise<PolicyListResponse> {
    return this._client.get(path`/v1/mesh/agents/${addressOrId}/policies`, undefined, options)
  }

  /** Adds a policy to an agent; it applies from the next intent on. */
  create(addressOrId: string, body: PolicyBody, options?: RequestOptions): Promise<PolicyResponse> {
    return this._client.post(path`/v1/mesh/agents/${addressOrId}/policies`, body, options)
  }

  /** One policy, with its current `version`. */
  retrieve(policyId: string, options?: RequestOptions): Promise<PolicyResponse> {
    return this._client.get(path`/v1/policies/${policyId}`, undefined, options)
  }

  /**
   * Replaces a policy whole. `version` is the version you read (sent as `If-Match`); a stale one
   * is a 409. `kind` cannot change.
   */
  update(policyId: string, body: PolicyBody, params: { version: number }, options?: RequestOptions): Promise<PolicyResponse> {
    const headers = { 'If-Match': String(params.version), ...options?.headers }
    return this._client.put(path`/v1/policies/${policyId}`, body, { ...options, headers })
  }

  /** Deletes a policy; with `version`, only if it is still that version (409 otherwise). */
  delete(policyId: string, params: { version?: number | undefined } = {}, options?: RequestOptions): Promise<PolicyDeleteResponse> {
    const headers = { ...(params.version === undefined ? {} : { 'If-Match': String(params.version) }), ...options?.headers }
    return this._client.delete(path`/v1/policies/${policyId}`, { ...options, headers })
  }

  /** Dry run: the decision the policies would take for this intent, and which policy decided. */
  evaluate(params: PolicyEvaluateParams, options?: RequestOptions): Promise<PolicyEvaluateResponse> {
    return this._client.post('/v1/policies/evaluate', params, options)
  }
}

export interface PolicyResponse {
  ok: true
  policy: Policy
}

export interface PolicyListResponse {
  ok: true
  policies: Policy[]
}

export interface PolicyDeleteResponse {
  ok: true
  /** The deleted policy's id. */
  deleted: string
}

export interface PolicyEvaluateParams {
  from_agent: string
  to_agent: string
  intent_type: string
}

/** The decision a send would get now. */
export interface PolicyEvaluateResponse {
  ok: true
  decision: 'allow' | 'deny' | 'rate_limited' | 'budget_exceeded'
  /** The deciding policy; null when everything allows (or an agent is killed). */
  policy_id: string | null
  reason: string
  /** True when the decision is a denial because an agent is killed. */
  killed?: boolean
  on_breach?: 'block' | 'kill'
  /** The counters the decision read (sent/received/cost of the current windows). */
  counters?: Record<string, unknown>
}
