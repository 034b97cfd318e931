import { zeroCounters } from '../../store/rows.js'
import type { AgentCounters, EgressCallRow, EgressKind, PolicyRow, Store } from '../../store/store.js'
import type { Principal } from '../auth/principal.js'
import type { Clock } from '../clock.js'
import { GatewayError, forbidden, notFound } from '../errors.js'
import { randomBase62 } from '../ids.js'
import { egressRule } from '../kill-switch/rules.js'
import type { KillSwitchService } from '../kill-switch/kill-switch-service.js'
import type { Metrics } from '../metrics.js'
import { handleBreach } from '../policies/breach.js'
import { costRule, noFindings } from '../policies/cost-rule.js'
import { countWould, wouldEvents } from '../policies/monitor.js'
import { PolicyBreach, type PolicyEngine, type WouldDecision } from '../policies/policy-engine.js'
import { usd, type PriceEntry } from './pricing.js'

/** An LLM provider (`--egress-config`), with its key read from the environment. */
export interface LlmUpstream {
  id: string
  kind: 'openai' | 'anthropic'
  base_url: string
  api_key: string
  models: Map<string, PriceEntry>
  /** Longest a call may take; the gateway aborts it then, and settles it at its reservation. */
  timeout_ms: number
  /** `anthropic-version` sent to an anthropic upstream. */
  anthropic_version: string
}

/** A Streamable-HTTP MCP server; `headers` are the credentials injected upstream. */
export interface McpUpstream {
  id: string
  kind: 'mcp'
  url: string
  headers: Record<string, string>
  cost_per_call_micro: number
  timeout_ms: number
}

/** A generic HTTP API (deploy, email, …) agents call through `/egress/{upstream}/…`. */
export interface HttpUpstream {
  id: string
  kind: 'http'
  base_url: string
  headers: Record<string, string>
  cost_per_call_micro: number
  timeout_ms: number
}

/** A configured upstream (`--egress-config`), told apart by `kind`. */
export type EgressUpstream = LlmUpstream | McpUpstream | HttpUpstream

/** The upstream type of a kind. */
export type UpstreamOf<K extends EgressUpstream['kind']> = K extends 'mcp' ? McpUpstream : K extends 'http' ? HttpUpstream : LlmUpstream

/** One call to admit: what it goes to, and its worst-case cost. */
export interface EgressCall {
  kind: EgressKind
  upstream: string
  endpoint: string
  /** The priced model of an LLM call; null for MCP and HTTP calls. */
  model: string | null
  /** What `tool` policies decide on: `<upstream>/<tool>` (MCP) or `<upstream>/<METHOD> <path>` (HTTP). */
  tool: string | null
  reserved_micro: number
  timeout_ms: number
}

/** How long after its deadline an open call is settled by the sweeper (its replica may be gone). */
const SWEEP_GRACE_MS = 5_000

const newCallId = (): string => `egc_${randomBase62(20)}`



/**
 * Egress: agents' calls to LLM providers through the gateway, under the kill switch and exact
 * cost ceilings. Each call is admitted in one store transaction (kill check, ceiling check with
 * its worst-case cost reserved) and settled in one (real usage, else the reservation). In-flight
 * calls of an agent are aborted when it is killed, on every replica (the change feed).
 */
export class EgressService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #engine: PolicyEngine
  readonly #killSwitch: KillSwitchService
  readonly #metrics: Metrics | undefined
  readonly #upstreams: Map<string, EgressUpstream>
  readonly #inFlight = new Map<string, Set<(reason: string) => void>>()
  /** Kills seen on the change feed, per agent: a call admitted before one and tracked after is aborted. */
  readonly #kills = new Map<string, number>()
  readonly #killsAtAdmission = new WeakMap<EgressCallRow, number>()

  constructor(
    deps: { store: Store; clock: Clock; engine: PolicyEngine; killSwitch: KillSwitchService; metrics?: Metrics },
    upstreams: readonly EgressUpstream[],
  ) {
    this.#store = deps.store
    this.#clock = deps.clock
    this.#engine = deps.engine
    this.#killSwitch = deps.killSwitch
    this.#metrics = deps.metrics
    this.#upstreams = new Map(upstreams.map((u) => [u.id, u]))
    deps.store.feed.subscribe((change) => {
      if (change.type !== 'agent.killed') return
      this.#kills.set(change.address_id, (this.#kills.get(change.address_id) ?? 0) + 1)
      this.#abortAll(change.address_id, 'the agent was killed')
    })
  }

  get configured(): boolean {
    return this.#upstreams.size > 0
  }

  /**
   * The upstream of a route, for an agent key: 404 for an unknown one or one of a kind the route
   * does not serve (like any unknown route: never a blind pass-through).
   */
  upstream<K extends EgressUpstream['kind']>(principal: Principal, id: string, kinds: readonly K[]): UpstreamOf<K> {
    if (principal.role !== 'agent' || principal.address_id === null) throw forbidden('egress routes take an agent key')
    const upstream = this.#upstreams.get(id)
    if (!upstream) throw notFound(`upstream ${id} (not in --egress-config)`)
    if (!(kinds as readonly string[]).includes(upstream.kind)) throw notFound(`this route on upstream ${id} (a ${upstream.kind} upstream)`)
    return upstream as UpstreamOf<K>
  }

  /** The model's price; an unpriced model is refused (fail closed: no unmetered spend). */
  price(upstream: LlmUpstream, model: unknown): { model: string; price: PriceEntry } {
    if (typeof model !== 'string' || model === '') {
      throw new GatewayError('schema_invalid', 'the request needs a "model"', { details: { field: 'model' } })
    }
    const price = upstream.models.get(model)
    if (!price) {
      throw new GatewayError('model_not_priced', `model ${model.slice(0, 200)} has no price in the egress config of upstream ${upstream.id}; it cannot be metered, so it is refused`, {
        details: { field: 'model', upstream: upstream.id, model: model.slice(0, 200) },
      })
    }
    return { model, price }
  }

  /**
   * Admits a call in one store transaction: kill check, `tool` policies, egress `rate` policies,
   * then every enforced cost ceiling of the agent must hold with this call's worst case reserved
   * on top of what is spent and reserved today (near the ceiling a call that might not fit is
   * refused: overshoot is never allowed). A breach with `on_breach: kill` kills the agent.
   */
  async admit(principal: Principal, call: EgressCall): Promise<EgressCallRow> {
    const now = this.#clock.now()
    const row: EgressCallRow = {
      call_id: newCallId(),
      address_id: principal.address_id as string,
      upstream: call.upstream,
      kind: call.kind,
      endpoint: call.endpoint,
      model: call.model ?? '',
      tool: call.tool,
      day: new Date(now).toISOString().slice(0, 10),
      reserved_micro: call.reserved_micro,
      cost_micro: null,
      state: 'open',
      outcome: null,
      usage: null,
      status: null,
      started_at: now,
      deadline_at: now + call.timeout_ms,
      settled_at: null,
    }
    const subject = { upstream: call.upstream, ...(call.tool === null ? {} : { tool: call.tool }) }
    const killsBefore = this.#kills.get(row.address_id) ?? 0
    let monitored: WouldDecision[] = []
    try {
      const admitted = await this.#store.admitEgress({
        call: row,
        now,
        decide: ({ agent, policies, counters, reserved_micro }) => {
          egressRule(agent)
          monitored = this.#engine.enforceEgress(agent, policies, counters, call.tool, now)
          this.#checkCeilings(agent, policies, counters, reserved_micro, call.reserved_micro, now)
        },
      })
      this.#killsAtAdmission.set(admitted, killsBefore)
      this.#metrics?.egressRequests.inc({ kind: call.kind, result: 'admitted' })
      this.#metrics?.egressReserved.inc(usd(call.reserved_micro))
      // Would-be decisions of monitored policies, recorded once the call is admitted.
      for (const event of wouldEvents(monitored, subject, now)) await this.#store.appendMeshEvent(event)
      countWould(this.#metrics, monitored)
      return admitted
    } catch (error) {
      this.#metrics?.egressRequests.inc({ kind: call.kind, result: error instanceof GatewayError ? error.code : 'error' })
      if (error instanceof PolicyBreach) await handleBreach({ store: this.#store, killSwitch: this.#killSwitch, metrics: this.#metrics }, error, now, subject)
      throw error
    }
  }

  /**
   * Whether the agent's enforced `tool` policies refuse a tool (`<upstream>/<name>`): for hiding
   * denied tools from an MCP `tools/list`. Not a decision on a call: `admit` decides those.
   */
  async toolDenial(principal: Principal, tool: string): Promise<{ policy_id: string } | null> {
    const addressId = principal.address_id as string
    const agent = await this.#store.getAgentById(addressId)
    if (!agent || agent.policy_version === 0) return null
    const [own, defaults] = await Promise.all([this.#store.listPolicies(addressId), this.#store.listDefaultPolicies()])
    const d = this.#engine.decideEgress(agent, [...own, ...defaults], zeroCounters(0), tool, this.#clock.now()) // tool policies only: no counts
    return d.decision === 'deny' && d.policy_id !== null ? { policy_id: d.policy_id } : null
  }

  #checkCeilings(
    agent: Parameters<PolicyEngine['compiled']>[0],
    policies: PolicyRow[],
    counters: AgentCounters,
    reserved: number,
    reservation: number,
    now: number,
  ): void {
    const ceiling = this.#engine.egressCeiling(agent, policies, counters)
    if (ceiling === null) return
    const spent = Math.round(counters.cost_day * 1_000_000) - ceiling.offset_micro
    if (spent + reserved + reservation <= ceiling.max_micro) return
    const resetS = Math.ceil((86_400_000 - (now % 86_400_000)) / 1000)
    throw new GatewayError(
      'budget_exceeded',
      `${agent.address}: this call may cost up to $${usd(reservation)}; with $${usd(spent)} spent and $${usd(reserved)} reserved today it could pass the ceiling of $${usd(ceiling.max_micro)} (${ceiling.label})`,
      {
        extra: { policy_id: ceiling.policy_id, retry_after_s: Math.min(3600, resetS) },
        details: { policy_id: ceiling.policy_id, spent_usd: usd(spent), reserved_usd: usd(reserved), call_worst_case_usd: usd(reservation), max_cost_per_day_usd: usd(ceiling.max_micro) },
        headers: { 'retry-after': String(Math.min(3600, resetS)), 'x-should-retry': 'false' },
      },
    )
  }

  /** Settles a call once: usage → its cost; unknown → the reservation; refused before a body → 0. */
  async settle(call: EgressCallRow, result: { outcome: 'usage' | 'reservation' | 'refused'; cost_micro: number; usage: unknown; status: number | null }): Promise<void> {
    const now = this.#clock.now()
    const found = noFindings()
    const { changed } = await this.#store.settleEgress({
      call_id: call.call_id,
      now,
      cost_micro: result.cost_micro,
      outcome: result.outcome,
      usage: result.usage === null || result.usage === undefined ? null : JSON.stringify(result.usage),
      status: result.status,
      cost_rule: costRule(this.#engine, call.started_at, found),
    })
    if (!changed) return
    this.#metrics?.egressReserved.dec(usd(call.reserved_micro))
    this.#metrics?.egressCost.inc(usd(result.cost_micro))
    if (result.outcome === 'usage' && result.cost_micro > call.reserved_micro) this.#metrics?.egressUnderestimates.inc()
    const k = found.kill
    if (k) await this.#killSwitch.hold(k.address_id, { kind: 'policy', policy_id: k.policy_id }, k.reason)
  }

  /**
   * Registers an in-flight call's abort; returns its unregister. A kill calls every abort. Given
   * the admitted `call`, a kill the change feed delivered between its admission and this
   * registration aborts it at once (the kill may have committed right after the admission).
   */
  track(addressId: string, abort: (reason: string) => void, call?: EgressCallRow): () => void {
    let set = this.#inFlight.get(addressId)
    if (!set) this.#inFlight.set(addressId, (set = new Set()))
    set.add(abort)
    const before = call === undefined ? undefined : this.#killsAtAdmission.get(call)
    if (before !== undefined && (this.#kills.get(addressId) ?? 0) !== before) queueMicrotask(() => abort('the agent was killed'))
    return () => {
      set.delete(abort)
      if (set.size === 0 && this.#inFlight.get(addressId) === set) this.#inFlight.delete(addressId)
    }
  }

  #abortAll(addressId: string, reason: string): void {
    for (const abort of [...(this.#inFlight.get(addressId) ?? [])]) abort(reason)
  }

  /** Sweeper task: settles open calls whose replica or client is gone, at their reservation. */
  async sweep(): Promise<number> {
    const now = this.#clock.now()
    let settled = 0
    for (const call of await this.#store.overdueEgressCalls(now - SWEEP_GRACE_MS, 500)) {
      await this.settle(call, { outcome: 'reservation', cost_micro: call.reserved_micro, usage: null, status: null })
      settled += 1
    }
    return settled
  }

  async list(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
    return this.#store.listEgressCalls(addressId, limit, before)
  }
}

/** `{call_id, agent, upstream, model, state, reserved_usd, cost_usd, …}` for GET /v1/egress/calls. */
export function egressCallView(row: EgressCallRow): Record<string, unknown> {
  return {
    call_id: row.call_id,
    address_id: row.address_id,
    upstream: row.upstream,
    kind: row.kind,
    endpoint: row.endpoint,
    model: row.model === '' ? null : row.model,
    tool: row.tool,
    state: row.state,
    outcome: row.outcome,
    reserved_usd: usd(row.reserved_micro),
    cost_usd: row.cost_micro === null ? null : usd(row.cost_micro),
    usage: row.usage === null ? null : (JSON.parse(row.usage) as unknown),
    status: row.status,
    started_at: new Date(row.started_at).toISOString(),
    deadline_at: new Date(row.deadline_at).toISOString(),
    settled_at: row.settled_at === null ? null : new Date(row.settled_at).toISOString(),
  }
}
