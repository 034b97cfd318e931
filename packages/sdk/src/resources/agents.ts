import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import { path } from '../internal/path.js'
import type { AgentInstance, HealthStatus, JsonObject, MeshAgent, MeshAgentDetail, MeshAgentListed, MeshEvent } from '../types.js'

/**
 * Agents of the mesh. Methods that take `addressOrId` accept an `addr_…` id or an
 * `agent://org/workspace/name` address (sent percent-encoded).
 */
export class Agents extends APIResource {
  /**
   * Lists agents with health, instances, the period's intents and cost, and the cost ceiling:
   * searched (`q`), sorted over every match (`sort`, `order`) and paged (`offset`; the next page
   * starts at `next_offset`, null at the end).
   */
  list(params: AgentListParams = {}, options?: RequestOptions): Promise<AgentListResponse> {
    return this._client.get('/v1/mesh/agents', { ...params }, options)
  }

  /** An agent's cost and intents per UTC hour, oldest first, ending with the current hour (`hours` 1–168, default 24). */
  costByHour(addressOrId: string, params: AgentCostParams = {}, options?: RequestOptions): Promise<AgentCostResponse> {
    return this._client.get(path`/v1/mesh/agents/${addressOrId}/cost`, { ...params }, options)
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

  /**
   * Quarantines one instance of an agent (kill of one instance): from the 200 on, on every
   * replica, its streams are cut and it can no longer receive, ack or resolve, nor send with its
   * `x-instance-id`; its leased intents go to its sibling instances at once. The instance need
   * not have been seen yet. Sends without `x-instance-id` cannot be attributed and are not
   * refused (kill the agent to stop them all). Repeating it is a no-op (`changed: false`).
   */
  killInstance(
    addressOrId: string,
    instanceId: string,
    params: InstanceControlParams = {},
    options?: RequestOptions,
  ): Promise<InstanceKillResponse> {
    return this._client.post(path`/v1/mesh/agents/${addressOrId}/instances/${instanceId}/kill`, params, options)
  }

  /** Lifts an instance's quarantine; resuming an instance that is not quarantined is a no-op. */
  resumeInstance(
    addressOrId: string,
    instanceId: string,
    params: InstanceControlParams = {},
    options?: RequestOptions,
  ): Promise<InstanceResumeResponse> {
    return this._client.post(path`/v1/mesh/agents/${addressOrId}/instances/${instanceId}/resume`, params, options)
  }

  /** An agent's instances with health and quarantine flag (quarantined ones never seen included). */
  instances(addressOrId: string, options?: RequestOptions): Promise<AgentInstancesResponse> {
    return this._client.get(path`/v1/mesh/agents/${addressOrId}/instances`, undefined, options)
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
  /** 0–1,000,000, default 0: where the page starts in the sorted matches. */
  offset?: number | undefined
  health?: HealthStatus | undefined
  /** Period of `intents_period` / `cost_period` (UTC), and of the `cost` / `intents` sorts. Default `day`. */
  window?: 'day' | 'week' | 'month' | undefined
  /** Case-insensitive substring of the address or the display name (1–200 characters; no wildcards). */
  q?: string | undefined
  /** Default `registered` (registration order). Ties are ordered by address. */
  sort?: AgentSort | undefined
  /** Default `asc` for `registered`, `desc` for the others; agents that never beat come last in `last_heartbeat` `desc`. */
  order?: 'asc' | 'desc' | undefined
}

export type AgentSort = 'registered' | 'cost' | 'intents' | 'last_heartbeat'

export interface AgentListResponse {
  ok: true
  agents: MeshAgentListed[]
  /** Over every agent, whatever the filters. */
  summary: {
    total: number
    healthy: number
    degraded: number
    unreachable: number
    killed: number
    unknown: number
    /** The whole fleet over the window: intents sent (each counted once) and cost in USD. */
    intents_period: number
    cost_period: number
  }
  /** Agents matching `health` and `q`. */
  total: number
  /** The `offset` of the next page; null at the end. */
  next_offset: number | null
}

export interface AgentCostParams {
  /** 1–168, default 24. */
  hours?: number | undefined
}

export interface AgentCostHour {
  /** `YYYY-MM-DDTHH` (UTC). */
  hour: string
  cost_usd: number
  /** Accepted intents the agent sent / received in that hour. */
  sent: number
  received: number
}

export interface AgentCostResponse {
  ok: true
  address_id: string
  /** Oldest first, one per hour, ending with the current hour; hours without activity are zeros. */
  hours: AgentCostHour[]
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

export interface InstanceControlParams {
  reason?: string | undefined
}

export interface InstanceKillResponse {
  ok: true
  address_id: string
  address: string
  instance_id: string
  quarantined: true
  /** When the quarantine began (the original time on a repeat). */
  quarantined_at: string
  reason: string | null
  /** False when the instance was already quarantined (no-op). */
  changed: boolean
  /** Intents leased to the instance that went back to the queue for its siblings. */
  requeued: number
}

export interface InstanceResumeResponse {
  ok: true
  address_id: string
  address: string
  instance_id: string
  quarantined: false
  changed: boolean
  /** Null when the instance was not quarantined (no-op). */
  resumed_at: string | null
}

export interface AgentInstancesResponse {
  ok: true
  address_id: string
  address: string
  instances: AgentInstance[]
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
