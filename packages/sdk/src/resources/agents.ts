import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import { path } from '../internal/path.js'
import type { HealthStatus, JsonObject, MeshAgent, MeshAgentDetail, MeshEvent } from '../types.js'

/**
 * Agents of the mesh. Methods that take `addressOrId` accept an `addr_…` id or an
 * `agent://org/workspace/name` address (sent percent-encoded).
 */
export class Agents extends APIResource {
  /** Lists agents with health, instances and the period's intents and cost. */
  list(params: AgentListParams = {}, options?: RequestOptions): Promise<AgentListResponse> {
    return this._client.get('/v1/mesh/agents', { ...params }, options)
  }

  /** One agent with its instances, policies and recent events. */
  retrieve(addressOrId: string, options?: RequestOptions): Promise<AgentRetrieveResponse> {
    return this._client.get(path`/v1/mesh/agents/${addressOrId}`, undefined, options)
  }

  /** Registers an agent by address before it connects (409 if it exists). */
  register(params: AgentRegisterParams, options?: RequestOptions): Promise<AgentRegisterResponse> {
    return this._client.post('/v1/mesh/agents', params, options)
  }

  /**
   * Kills an agent: from the 200 on, the gateway refuses all its traffic on every replica and
   * closes its streams. Killing a killed agent is a no-op.
   */
  kill(addressOrId: string, params: AgentKillParams = {}, options?: RequestOptions): Promise<AgentKillResponse> {
    return this._client.post(path`/v1/mesh/agents/${addressOrId}/kill`, params, options)
  }

  /** Resumes a killed agent; held intents are delivered again, oldest first, paced. */
  resume(addressOrId: string, params: AgentResumeParams = {}, options?: RequestOptions): Promise<AgentResumeResponse> {
    return this._client.post(path`/v1/mesh/agents/${addressOrId}/resume`, params, options)
  }

  /** Changes the display name, metadata or labels (labels are merged; a key set to null is removed). */
  update(addressOrId: string, params: AgentUpdateParams, options?: RequestOptions): Promise<AgentRegisterResponse> {
    return this._client.patch(path`/v1/mesh/agents/${addressOrId}`, params, options)
  }

  /**
   * Kills every agent a selector matches, in one transaction (`dry_run` only lists them). The
   * fleet kill stands until resumed: agents that appear under it start killed.
   */
  killSelector(params: FleetKillParams, options?: RequestOptions): Promise<FleetKillResponse> {
    return this._client.post('/v1/mesh/kill', params, options)
  }

  /** Resumes every killed agent a selector matches and ends the fleet kills with that selector. */
  resumeSelector(params: FleetResumeParams, options?: RequestOptions): Promise<FleetResumeResponse> {
    return this._client.post('/v1/mesh/resume', params, options)
  }

  /** Fleet kills, newest first (`standing: true`: only those not resumed). */
  fleetKills(params: { standing?: boolean; limit?: number } = {}, options?: RequestOptions): Promise<FleetKillListResponse> {
    const query: Record<string, string | number> = {}
    if (params.standing !== undefined) query['standing'] = String(params.standing)
    if (params.limit !== undefined) query['limit'] = params.limit
    return this._client.get('/v1/mesh/fleet-kills', query, options)
  }
}

export interface AgentUpdateParams {
  display_name?: string | null | undefined
  metadata?: JsonObject | null | undefined
  labels?: Record<string, string | null> | undefined
}

/** `address`: glob over the three segments (`*` one, `**` one or more); `labels`: all must match. */
export interface FleetSelector {
  address?: string | undefined
  labels?: Record<string, string> | undefined
}

export interface FleetKillParams {
  selector: FleetSelector
  reason?: string | undefined
  dry_run?: boolean | undefined
  /** Required when the selector matches every agent. */
  confirm_all?: boolean | undefined
  cancel_pending?: boolean | undefined
}

export interface FleetResumeParams {
  selector: FleetSelector
  reason?: string | undefined
  dry_run?: boolean | undefined
  confirm_all?: boolean | undefined
}

export interface FleetAgentRef {
  address_id: string
  address: string
}

export interface FleetKillResponse {
  ok: true
  /** Killed by this call (with a dry run: would be), with the held-intent count. */
  killed: (FleetAgentRef & { held_intents?: number })[]
  already_killed: FleetAgentRef[]
  /** Null for a dry run. */
  fleet_kill_id: string | null
  dry_run?: true
  requires_confirm_all?: boolean
}

export interface FleetResumeResponse {
  ok: true
  resumed: (FleetAgentRef & { redelivering?: number })[]
  ended_fleet_kills: string[]
  dry_run?: true
  requires_confirm_all?: boolean
}

export interface FleetKill {
  fleet_kill_id: string
  selector: FleetSelector
  reason: string | null
  actor: string
  created_at: string
  ended_at: string | null
  ended_by: string | null
  standing: boolean
}

export interface FleetKillListResponse {
  ok: true
  fleet_kills: FleetKill[]
}

export interface AgentListParams {
  /** 1–500, default 100. */
  limit?: number | undefined
  health?: HealthStatus | undefined
  /** Period of `intents_period` / `cost_period` (UTC). Default `day`. */
  window?: 'day' | 'week' | 'month' | undefined
}

export interface AgentListResponse {
  ok: true
  agents: MeshAgent[]
  summary: { total: number; healthy: number; degraded: number; unreachable: number; killed: number; unknown: number }
}

export interface AgentRetrieveResponse {
  ok: true
  agent: MeshAgentDetail
  events: MeshEvent[]
}

export interface AgentRegisterParams {
  /** `agent://org/workspace/name`. */
  address: string
  display_name?: string | undefined
  metadata?: JsonObject | undefined
  labels?: Record<string, string> | undefined
}

export interface AgentRegisterResponse {
  ok: true
  agent: MeshAgent
}

export interface AgentKillParams {
  reason?: string | undefined
  /** Cancel the agent's undelivered outbound intents instead of holding them. */
  cancel_pending?: boolean | undefined
}

export interface AgentKillResponse {
  ok: true
  address_id: string
  address: string
  health_status: 'killed'
  killed_at: string
  kill_reason?: string | null
  /** How many intents were held. */
  held_intents: number
}

export interface AgentResumeParams {
  reason?: string | undefined
}

export interface AgentResumeResponse {
  ok: true
  address_id: string
  address: string
  health_status: HealthStatus
  /** Null when the agent was not killed (resuming a live agent is a no-op). */
  resumed_at: string | null
  /** How many held intents are being delivered again. */
  redelivering: number
}
