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

  /** The default policy set: applies to every agent with no enabled policy of the same kind. */
  defaults(options?: RequestOptions): Promise<DefaultPoliciesResponse> {
    return this._client.get('/v1/policies/defaults', undefined, options)
  }

  /**
   * Replaces the default set whole (`[]` removes it). Entries equal to current ones keep their
   * ids. A 409 when this gateway reads its defaults from a `--policy-defaults` file.
   */
  replaceDefaults(policies: PolicyBody[], options?: RequestOptions): Promise<DefaultPoliciesReplaceResponse> {
    return this._client.put('/v1/policies/defaults', { policies }, options)
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
  /** The agent's own policies. */
  policies: Policy[]
  /** What applies: its own enabled policies plus the defaults of kinds it has none of. */
  effective: Policy[]
}

export interface DefaultPoliciesResponse {
  ok: true
  policies: Policy[]
  /** The `--policy-defaults` file the set comes from on this gateway, or null (set by the API). */
  managed_by: string | null
}

export interface DefaultPoliciesReplaceResponse {
  ok: true
  policies: Policy[]
  /** False when the new set equals the current one. */
  changed: boolean
}

/** What a monitored policy would have done to the evaluated send. */
export interface MonitoredDecision {
  policy_id: string
  source: 'agent' | 'default'
  would: 'deny' | 'kill'
  decision: 'deny' | 'rate_limited' | 'budget_exceeded'
  /** The agent whose policy it is. */
  agent: string
  reason: string
}

export interface PolicyDeleteResponse {
  ok: true
  /** The deleted policy's id. */
  deleted: string
}

/** A send (`from_agent`, `to_agent`, `intent_type`) or an egress call of an agent (`agent`, `egress`). */
export type PolicyEvaluateParams =
  | { from_agent: string; to_agent: string; intent_type: string }
  | {
      agent: string
      /** `tool`: the MCP tool name, or `<METHOD> <path>` of an HTTP upstream; `worst_case_usd`: checked against the ceiling. */
      egress: { upstream: string; tool?: string; worst_case_usd?: number }
    }

/** The decision a send would get now. */
export interface PolicyEvaluateResponse {
  ok: true
  decision: 'allow' | 'deny' | 'rate_limited' | 'budget_exceeded'
  /** The deciding policy; null when everything allows (or an agent is killed). */
  policy_id: string | null
  /** `agent` (its own policy) or `default` (the default set); null when allowed. */
  decided_by: 'agent' | 'default' | null
  reason: string
  /** Monitored policies that would have refused this send (they decided nothing). */
  monitored: MonitoredDecision[]
  /** True when the decision is a denial because an agent is killed. */
  killed?: boolean
  on_breach?: 'block' | 'kill'
  /** The counters the decision read (sent/received/cost of the current windows). */
  counters?: Record<string, unknown>
}
