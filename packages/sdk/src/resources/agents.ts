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
