import type { AgentRow, Store } from '../../store/store.js'
import type { Clock } from '../clock.js'
import { GatewayError, conflict, notFound } from '../errors.js'
import { isAddress, isAddressId, newAddressId } from '../ids.js'

/** The health an agent shows before heartbeats exist: killed overrides everything. */
export function healthOf(agent: AgentRow): 'killed' | 'unknown' {
  return agent.killed_at !== null ? 'killed' : 'unknown'
}

export function agentView(agent: AgentRow): Record<string, unknown> {
  const view: Record<string, unknown> = {
    address_id: agent.address_id,
    address: agent.address,
    display_name: agent.display_name,
    health_status: healthOf(agent),
    last_heartbeat_at: null,
    created_at: new Date(agent.created_at).toISOString(),
    intents_period: 0,
    cost_period: 0,
    metadata: agent.metadata === null ? null : (JSON.parse(agent.metadata) as unknown),
    instances_total: 0,
    instances_healthy: 0,
  }
  if (agent.killed_at !== null) {
    view['killed_at'] = new Date(agent.killed_at).toISOString()
    view['kill_reason'] = agent.kill_reason
  }
  return view
}

/** Agents: lookup by `addr_…` id or address, registration, listing. */
export class AgentService {
  readonly #store: Store
  readonly #clock: Clock

  constructor(store: Store, clock: Clock) {
    this.#store = store
    this.#clock = clock
  }

  /** A path's `{address_id}`: `addr_…`, or an (already decoded) `agent://` address. Never registers. */
  async resolve(ref: string): Promise<AgentRow> {
    let agent: AgentRow | undefined
    if (isAddressId(ref)) agent = await this.#store.getAgentById(ref)
    else if (isAddress(ref)) agent = await this.#store.getAgentByAddress(ref)
    else {
      throw new GatewayError('schema_invalid', 'expected an address_id (addr_…) or an agent:// address', {
        details: { field: 'address_id' },
      })
    }
    if (!agent) throw notFound(`agent ${ref}`)
    return agent
  }

  async register(input: {
    address: string
    display_name?: string | undefined
    metadata?: Record<string, unknown> | undefined
  }): Promise<AgentRow> {
    const row: AgentRow = {
      address_id: newAddressId(),
      address: input.address,
      display_name: input.display_name ?? null,
      metadata: input.metadata === undefined ? null : JSON.stringify(input.metadata),
      created_at: this.#clock.now(),
      killed_at: null,
      kill_reason: null,
      kill_actor: null,
      resumed_at: null,
      policy_version: 0,
      auto_kill_policy_id: null,
      enforcement_baseline: null,
    }
    const created = await this.#store.registerAgent(row)
    if (!created) throw conflict(`agent ${input.address} is already registered`)
    return created
  }

  list(limit: number): Promise<AgentRow[]> {
    return this.#store.listAgents(limit)
  }
}
