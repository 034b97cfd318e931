import type { AgentRow, AgentSort, HealthStatus, PolicyRow, Store } from '../../store/store.js'
import type { Clock } from '../clock.js'
import { GatewayError, conflict, notFound } from '../errors.js'
import { isAddress, isAddressId, newAddressId } from '../ids.js'
import { blankAgent } from './agent-row.js'
import { canonicalLabels, parseLabels } from '../fleet/selector.js'
import { iso } from '../clock.js'
import { effectiveRows } from '../policies/policy-engine.js'
import { DEFAULT_OWNER, specOf } from '../policies/policy-spec.js'

/** What a table row needs beyond the agent row (one list call, no request per row). */
export interface AgentStats {
  intents_period: number
  cost_period: number
  instances_total: number
  instances_healthy: number
  /** The daily cost ceiling that applies (smallest effective enabled cost policy), null for none; absent when not computed. */
  cost_ceiling_usd?: number | null
}

const NO_STATS: AgentStats = { intents_period: 0, cost_period: 0, instances_total: 0, instances_healthy: 0 }

const HOUR_MS = 3_600_000

/** `MeshAgent` (DESIGN §5c). Health is the last status core computed; killed overrides it. */
export function agentView(agent: AgentRow, stats: AgentStats = NO_STATS): Record<string, unknown> {
  const view: Record<string, unknown> = {
    address_id: agent.address_id,
    address: agent.address,
    // Always a string: typed clients declare it so; unnamed agents show their last segment.
    display_name: agent.display_name ?? agent.address.slice(agent.address.lastIndexOf('/') + 1),
    health_status: agent.killed_at !== null ? 'killed' : agent.health_status,
    last_heartbeat_at: agent.last_heartbeat_at === null ? null : new Date(agent.last_heartbeat_at).toISOString(),
    created_at: new Date(agent.created_at).toISOString(),
    intents_period: stats.intents_period,
    cost_period: Math.round(stats.cost_period * 1e6) / 1e6,
    metadata: agent.metadata === null ? null : (JSON.parse(agent.metadata) as unknown),
    labels: parseLabels(agent.labels),
    instances_total: stats.instances_total,
    instances_healthy: stats.instances_healthy,
  }
  if (stats.cost_ceiling_usd !== undefined) view['cost_ceiling_usd'] = stats.cost_ceiling_usd
  if (agent.killed_at !== null) {
    view['killed_at'] = new Date(agent.killed_at).toISOString()
    view['kill_reason'] = agent.kill_reason
    // Who: `key:<key_id>` or `policy:<policy_id>` (the same actor the audit entry names).
    view['killed_by'] = agent.kill_actor
  }
  return view
}

const MAX_AGENT_LABELS = 32

/** Stored labels: sorted JSON, or null for none. */
function labelsJson(labels: Record<string, string>): string | null {
  return Object.keys(labels).length === 0 ? null : JSON.stringify(canonicalLabels(labels))
}

export type StatsWindow = 'day' | 'week' | 'month'

/** First and last UTC day (`YYYY-MM-DD`) of the window containing `now` (ISO week from Monday). */
export function windowDays(window: StatsWindow, now: number): [string, string] {
  const today = new Date(now)
  const end = today.toISOString().slice(0, 10)
  if (window === 'day') return [end, end]
  if (window === 'month') return [`${end.slice(0, 8)}01`, end]
  const dow = (today.getUTCDay() + 6) % 7 // Monday = 0
  return [new Date(now - dow * 86_400_000).toISOString().slice(0, 10), end]
}

/** The smallest `max_cost_per_day_usd` of an agent's effective enabled cost policies (own, else defaults), or null. */
export function costCeiling(rows: readonly PolicyRow[]): number | null {
  let ceiling: number | null = null
  for (const row of effectiveRows(rows)) {
    const spec = specOf(row)
    if (spec.kind === 'cost' && (ceiling === null || spec.max_cost_per_day_usd < ceiling)) ceiling = spec.max_cost_per_day_usd
  }
  return ceiling
}

export interface AgentPageParams {
  limit: number
  offset: number
  health: HealthStatus | null
  search: string | null
  sort: AgentSort
  /** Default: `asc` for `registered`, `desc` for the others. */
  order: 'asc' | 'desc' | null
  window: StatsWindow
}

/** One hour of an agent's cost chart. */
export interface HourCost {
  /** `YYYY-MM-DDTHH` (UTC). */
  hour: string
  cost_usd: number
  sent: number
  received: number
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

  async register(actor: string, input: {
    address: string
    display_name?: string | undefined
    metadata?: Record<string, unknown> | undefined
    labels?: Record<string, string> | undefined
  }): Promise<AgentRow> {
    const row: AgentRow = {
      ...blankAgent(input.address, newAddressId(), this.#clock.now()),
      display_name: input.display_name ?? null,
      metadata: input.metadata === undefined ? null : JSON.stringify(input.metadata),
      labels: labelsJson(input.labels ?? {}),
    }
    const created = await this.#store.registerAgent(row, {
      address_id: row.address_id,
      address: row.address,
      event_type: 'agent.registered',
      details: { display_name: row.display_name, labels: input.labels ?? {} },
      actor_id: actor,
      created_at: row.created_at,
    })
    if (!created) throw conflict(`agent ${input.address} is already registered`)
    return created
  }

  /**
   * PATCH: `display_name` and `metadata` are replaced (null clears them); `labels` is merged
   * (RFC 7386: a key set to null is removed). Audited as `agent.update`. An agent relabelled
   * into the selector of a standing fleet kill is killed in the same transaction.
   */
  async update(
    actor: string,
    ref: string,
    patch: {
      display_name?: string | null | undefined
      metadata?: Record<string, unknown> | null | undefined
      labels?: Record<string, string | null> | undefined
    },
  ): Promise<AgentRow> {
    const target = await this.resolve(ref)
    const now = this.#clock.now()
    const { agent } = await this.#store.updateAgent({
      address_id: target.address_id,
      now,
      build: (current) => {
        const next = {
          display_name: patch.display_name === undefined ? current.display_name : patch.display_name,
          metadata: patch.metadata === undefined ? current.metadata : patch.metadata === null ? null : JSON.stringify(patch.metadata),
          labels: current.labels,
        }
        if (patch.labels !== undefined) {
          const merged: Record<string, string> = { ...parseLabels(current.labels) }
          for (const [k, v] of Object.entries(patch.labels)) {
            if (v === null) delete merged[k]
            else merged[k] = v
          }
          if (Object.keys(merged).length > MAX_AGENT_LABELS) {
            throw new GatewayError('schema_invalid', `an agent has at most ${MAX_AGENT_LABELS} labels`, { details: { field: 'labels' } })
          }
          next.labels = labelsJson(merged)
        }
        const same = next.display_name === current.display_name && next.metadata === current.metadata && next.labels === current.labels
        return same ? null : next
      },
      record: (before, after) => {
        const state = (a: AgentRow) => ({
          display_name: a.display_name,
          labels: parseLabels(a.labels),
          metadata: a.metadata === null ? null : (JSON.parse(a.metadata) as unknown),
        })
        return {
          audit: { at: iso(now), actor, action: 'agent.update', target: after.address, reason: null, before: state(before), after: state(after) },
          event: {
            address_id: after.address_id,
            address: after.address,
            event_type: 'agent.updated',
            details: state(after),
            actor_id: actor,
            created_at: now,
          },
        }
      },
    })
    return agent
  }

  list(limit: number, health: HealthStatus | null = null): Promise<AgentRow[]> {
    return this.#store.listAgents(limit, health)
  }

  /**
   * A page of agents sorted over every agent that matches (the store sorts in SQL; cost and
   * intents over the window), the number of matches, and the offset of the next page.
   */
  async page(params: AgentPageParams): Promise<{ agents: AgentRow[]; total: number; next_offset: number | null }> {
    const [from_day, to_day] = windowDays(params.window, this.#clock.now())
    const { agents, total } = await this.#store.listAgentsPage({
      limit: params.limit,
      offset: params.offset,
      health: params.health,
      search: params.search,
      sort: params.sort,
      order: params.order ?? (params.sort === 'registered' ? 'asc' : 'desc'),
      from_day,
      to_day,
    })
    const end = params.offset + agents.length
    return { agents, total, next_offset: agents.length > 0 && end < total ? end : null }
  }

  /** An agent's cost and intents per UTC hour, oldest first, ending with the current hour; hours without counts are zeros. */
  async costByHour(agent: AgentRow, hours: number): Promise<HourCost[]> {
    const current = Math.floor(this.#clock.now() / HOUR_MS) * HOUR_MS
    const keys = Array.from({ length: hours }, (_, i) => new Date(current - (hours - 1 - i) * HOUR_MS).toISOString().slice(0, 13))
    const rows = await this.#store.listHourCounters(agent.address_id, keys[0] as string, keys[keys.length - 1] as string)
    const byHour = new Map(rows.map((r) => [r.hour, r]))
    return keys.map((hour) => {
      const row = byHour.get(hour)
      return { hour, cost_usd: row ? Math.round(row.cost_usd * 1e6) / 1e6 : 0, sent: row?.sent ?? 0, received: row?.received ?? 0 }
    })
  }

  /**
   * Stats of the given agents for a window: accepted intents sent or received, reported cost,
   * instances, cost ceiling. A fixed number of reads, whatever the number of agents.
   */
  /** The fleet's intents sent and cost over the window. */
  async fleetTotals(window: StatsWindow): Promise<{ sent: number; cost_usd: number }> {
    const [from, to] = windowDays(window, this.#clock.now())
    return this.#store.fleetTotals(from, to)
  }

  async stats(agents: readonly AgentRow[], window: StatsWindow, staleAfterMs: number): Promise<(agent: AgentRow) => AgentStats> {
    const now = this.#clock.now()
    const [from, to] = windowDays(window, now)
    const ids = agents.map((a) => a.address_id)
    const [sums, instances, policies] = await Promise.all([
      this.#store.sumCounters(from, to, ids),
      this.#store.instanceCounts(now - staleAfterMs, ids),
      this.#store.listPoliciesOf(ids),
    ])
    const defaults: PolicyRow[] = []
    const own = new Map<string, PolicyRow[]>()
    for (const row of policies) {
      if (row.address_id === DEFAULT_OWNER) defaults.push(row)
      else own.set(row.address_id, [...(own.get(row.address_id) ?? []), row])
    }
    const defaultCeiling = costCeiling(defaults)
    return (agent) => {
      const sum = sums.get(agent.address_id)
      const inst = instances.get(agent.address_id)
      const mine = own.get(agent.address_id)
      return {
        intents_period: sum ? sum.sent + sum.received : 0,
        cost_period: sum?.cost_usd ?? 0,
        instances_total: inst?.total ?? 0,
        instances_healthy: agent.killed_at !== null ? 0 : (inst?.fresh ?? 0),
        cost_ceiling_usd: mine === undefined ? defaultCeiling : costCeiling([...mine, ...defaults]),
      }
    }
  }
}
