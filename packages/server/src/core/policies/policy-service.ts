import type { AgentRow, PolicyRow, Store } from '../../store/store.js'
import type { AgentService } from '../agents/agent-service.js'
import { blankAgent } from '../agents/agent-row.js'
import { iso, type Clock } from '../clock.js'
import { GatewayError, notFound } from '../errors.js'
import { isAddress, randomBase62 } from '../ids.js'
import { effectiveRows, type PolicyEngine } from './policy-engine.js'
import { policyView, specOf, specText, DEFAULT_ALERT_PERCENTS, DEFAULT_OWNER, type PolicySpec } from './policy-spec.js'

export type PolicyInput = PolicySpec extends infer S
  ? S extends PolicySpec
    ? Omit<S, 'alert_at_percent'> & { alert_at_percent?: number[] | undefined; enabled?: boolean | undefined; version?: number | undefined }
    : never
  : never

const newPolicyId = (): string => `pol_${randomBase62(20)}`

function normalize(input: PolicyInput): PolicySpec {
  const { enabled: _e, version: _v, ...spec } = input as PolicyInput & Record<string, unknown>
  // Canonical form: enforcement is stored only when it is not the default.
  if (spec['enforcement'] === 'enforce') delete spec['enforcement']
  if (spec.kind === 'cost') {
    const percents = [...new Set((spec as { alert_at_percent?: number[] }).alert_at_percent ?? DEFAULT_ALERT_PERCENTS)]
    return { ...(spec as PolicySpec & { kind: 'cost' }), alert_at_percent: percents.sort((a, b) => a - b) }
  }
  if (spec.kind === 'rate' && spec.max_per_hour === undefined && spec.max_per_day === undefined) {
    throw new GatewayError('schema_invalid', 'a rate policy needs max_per_hour or max_per_day', {
      details: { field: 'max_per_hour' },
    })
  }
  return spec as PolicySpec
}

/** Policies: versioned CRUD (audited, `policy.changed`), and the dry-run evaluation. */
export class PolicyService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #agents: AgentService
  readonly #engine: PolicyEngine
  /** The file the default set comes from on this replica (`--policy-defaults`); the API may not change it. */
  managedBy: string | null = null

  constructor(store: Store, clock: Clock, agents: AgentService, engine: PolicyEngine) {
    this.#store = store
    this.#clock = clock
    this.#agents = agents
    this.#engine = engine
  }

  /** An agent's own policies, and its effective ones (own + the defaults that apply to it). */
  async list(ref: string): Promise<{ agent: AgentRow; policies: PolicyRow[]; effective: PolicyRow[] }> {
    const agent = await this.#agents.resolve(ref)
    const [policies, defaults] = await Promise.all([this.#store.listPolicies(agent.address_id), this.#store.listDefaultPolicies()])
    return { agent, policies, effective: effectiveRows([...policies, ...defaults]) }
  }

  /** The default policy set (DESIGN §6 extension): applies to agents with no policy of a kind. */
  async defaults(): Promise<PolicyRow[]> {
    return this.#store.listDefaultPolicies()
  }

  /**
   * Replaces the default set whole (API or the config file at start). An entry equal to a
   * current one keeps its id, version and creation time, so re-applying the same file changes
   * nothing and metrics and reasons keep naming the same policy.
   */
  async replaceDefaults(
    actor: string,
    inputs: readonly PolicyInput[],
    via: 'api' | 'config' = 'config',
  ): Promise<{ policies: PolicyRow[]; changed: boolean }> {
    if (via === 'api' && this.managedBy !== null) {
      throw new GatewayError('conflict', `the default policies of this gateway come from ${this.managedBy} (--policy-defaults): edit the file and restart`, {
        details: { managed_by: this.managedBy },
      })
    }
    const specs = inputs.map((input) => ({ spec: normalize(input), enabled: input.enabled === false ? 0 : 1 }))
    const now = this.#clock.now()
    return this.#store.replaceDefaultPolicies({
      now,
      build: (current) => {
        const unused = [...current]
        const next = specs.map(({ spec, enabled }): PolicyRow => {
          const text = specText(spec)
          const i = unused.findIndex((r) => r.kind === spec.kind && r.spec === text && r.enabled === enabled)
          if (i >= 0) return unused.splice(i, 1)[0] as PolicyRow
          return {
            policy_id: newPolicyId(),
            address_id: DEFAULT_OWNER,
            kind: spec.kind,
            spec: text,
            enabled,
            version: 1,
            created_at: now,
            updated_at: now,
          }
        })
        const same = next.length === current.length && next.every((r, i) => r.policy_id === current[i]?.policy_id)
        return same ? null : next
      },
      record: (before, after) => ({
        audit: {
          at: iso(now),
          actor,
          action: 'policy.defaults_replace',
          target: 'policy-defaults',
          reason: null,
          before: before.map(policyView),
          after: after.map(policyView),
        },
        event: {
          address_id: null,
          address: null,
          event_type: 'policy.defaults_changed',
          details: { policy_ids: after.map((r) => r.policy_id), count: after.length },
          actor_id: actor,
          created_at: now,
        },
      }),
    })
  }

  /** One policy: an agent's, or one of the default set. */
  async retrieve(policyId: string): Promise<PolicyRow> {
    const row = (await this.#store.getPolicy(policyId)) ?? (await this.#store.listDefaultPolicies()).find((p) => p.policy_id === policyId)
    if (!row) throw notFound(`policy ${policyId}`)
    return row
  }

  async create(actor: string, ref: string, input: PolicyInput): Promise<PolicyRow> {
    const agent = await this.#agents.resolve(ref)
    const spec = normalize(input)
    const now = this.#clock.now()
    const policyId = newPolicyId()
    const row = await this.#store.writePolicy({
      op: 'create',
      policy_id: policyId,
      now,
      expected_version: null,
      build: () => ({
        policy_id: policyId,
        address_id: agent.address_id,
        kind: spec.kind,
        spec: specText(spec),
        enabled: input.enabled === false ? 0 : 1,
        version: 1,
        created_at: now,
        updated_at: now,
      }),
      record: (before, after, owner) => this.#record('policy.create', actor, now, before, after, owner),
    })
    return row as PolicyRow
  }

  /** PUT: replaces the policy whole; `kind` cannot change; needs the current version. */
  async update(actor: string, policyId: string, input: PolicyInput, version: number | null): Promise<PolicyRow> {
    if (version !== null && input.version !== undefined && version !== input.version) {
      throw new GatewayError('invalid_request', `If-Match says version ${version} but the body says ${input.version}`)
    }
    const expected = version ?? input.version ?? null
    if (expected === null) {
      throw new GatewayError('conflict', 'send If-Match: <version> (or "version" in the body) to update a policy', {
        details: { field: 'If-Match' },
      })
    }
    const spec = normalize(input)
    const now = this.#clock.now()
    const row = await this.#store.writePolicy({
      op: 'update',
      policy_id: policyId,
      now,
      expected_version: expected,
      build: (current) => {
        const cur = current as PolicyRow
        if (cur.kind !== spec.kind) {
          throw new GatewayError('schema_invalid', `kind cannot change (this policy is ${cur.kind}); create a new policy`, {
            details: { field: 'kind' },
          })
        }
        return {
          ...cur,
          spec: specText(spec),
          enabled: input.enabled === false ? 0 : 1,
          version: cur.version + 1,
          updated_at: now,
        }
      },
      record: (before, after, owner) => this.#record('policy.update', actor, now, before, after, owner),
    })
    return row as PolicyRow
  }

  async delete(actor: string, policyId: string, version: number | null): Promise<void> {
    const now = this.#clock.now()
    await this.#store.writePolicy({
      op: 'delete',
      policy_id: policyId,
      now,
      expected_version: version,
      build: () => null,
      record: (before, after, owner) => this.#record('policy.delete', actor, now, before, after, owner),
    })
  }

  /** Dry run (DESIGN §6): the decision the next send would get, with no side effect. */
  async evaluate(input: { from_agent: string; to_agent: string; intent_type: string }) {
    const now = this.#clock.now()
    const [from, to] = await Promise.all([this.#snapshot(input.from_agent, now), this.#snapshot(input.to_agent, now)])
    const counters = {
      from: pickCounters(from.counters, 'send'),
      to: pickCounters(to.counters, 'receive'),
    }
    for (const side of [from, to]) {
      if (side.agent.killed_at !== null) {
        return {
          decision: 'deny' as const,
          policy_id: null,
          decided_by: null,
          reason: `${side.agent.address} is killed (agent_killed)`,
          killed: true,
          monitored: [],
          counters,
        }
      }
    }
    const d = this.#engine.decide(
      {
        from: from.agent,
        to: to.agent,
        from_quarantine: null,
        from_policies: from.policies,
        to_policies: to.policies,
        from_counters: from.counters,
        to_counters: to.counters,
      },
      input.intent_type,
      now,
    )
    return {
      decision: d.decision,
      policy_id: d.policy_id,
      /** `agent` (its own policy) or `default` (the default set); null when allowed. */
      decided_by: d.source,
      reason: d.reason,
      ...(d.on_breach ? { on_breach: d.on_breach } : {}),
      // Monitored policies decide nothing; this is what each would have done to this send.
      monitored: d.monitored.map((w) => ({
        policy_id: w.policy_id,
        source: w.source,
        would: w.would,
        decision: w.decision,
        agent: w.owner.address,
        reason: w.reason,
      })),
      counters,
    }
  }

  /**
   * Dry run for an egress call of an agent (no side effects): the kill, `tool` policies over
   * `<upstream>/<tool>`, egress `rate` policies, and — given the call's worst case — the cost
   * ceiling with today's spend and open reservations, as admission would decide it now.
   */
  async evaluateEgress(input: { agent: string; egress: { upstream: string; tool?: string | undefined; worst_case_usd?: number | undefined } }) {
    const now = this.#clock.now()
    const side = await this.#snapshot(input.agent, now, 'agent')
    const tool = input.egress.tool === undefined ? null : `${input.egress.upstream}/${input.egress.tool}`
    const realId = side.agent.address_id.replace(/#evaluate$/, '')
    const day = new Date(now).toISOString().slice(0, 10)
    const open = realId === '' ? [] : (await this.#store.listEgressCalls(realId, 500, null)).filter((c) => c.state === 'open' && c.day === day)
    const reservedMicro = open.reduce((sum, c) => sum + c.reserved_micro, 0)
    const counters = {
      egress_this_hour: side.counters.egress_hour,
      egress_today: side.counters.egress_day,
      cost_today_usd: side.counters.cost_day,
      reserved_usd: reservedMicro / 1_000_000,
    }
    const base = { tool, counters }
    if (side.agent.killed_at !== null) {
      return { ...base, decision: 'deny' as const, policy_id: null, decided_by: null, reason: `${side.agent.address} is killed (agent_killed)`, killed: true, monitored: [] }
    }
    const d = this.#engine.decideEgress(side.agent, side.policies, side.counters, tool, now)
    const monitored = d.monitored.map((w) => ({ policy_id: w.policy_id, source: w.source, would: w.would, decision: w.decision, agent: w.owner.address, reason: w.reason }))
    if (d.decision !== 'allow') {
      return { ...base, decision: d.decision, policy_id: d.policy_id, decided_by: d.source, reason: d.reason, ...(d.on_breach ? { on_breach: d.on_breach } : {}), monitored }
    }
    const worst = Math.round((input.egress.worst_case_usd ?? 0) * 1_000_000)
    const ceiling = this.#engine.egressCeiling(side.agent, side.policies, side.counters)
    if (ceiling !== null) {
      const spent = Math.round(side.counters.cost_day * 1_000_000) - ceiling.offset_micro
      if (spent + reservedMicro + worst > ceiling.max_micro) {
        return {
          ...base,
          decision: 'budget_exceeded' as const,
          policy_id: ceiling.policy_id,
          decided_by: ceiling.label.startsWith('default') ? ('default' as const) : ('agent' as const),
          reason: `a call that may cost $${worst / 1_000_000} could pass the ceiling of $${ceiling.max_micro / 1_000_000} (${ceiling.label}): $${spent / 1_000_000} spent and $${reservedMicro / 1_000_000} reserved today`,
          monitored,
        }
      }
    }
    return { ...base, decision: 'allow' as const, policy_id: null, decided_by: null, reason: 'allowed', monitored }
  }

  async #snapshot(address: string, now: number, field = 'from_agent') {
    if (!isAddress(address)) throw new GatewayError('schema_invalid', 'not an agent address', { details: { field } })
    const defaults = await this.#store.listDefaultPolicies()
    // A never-seen address would be created with the defaults by the send itself.
    const agent = (await this.#store.getAgentByAddress(address)) ?? { ...blankAgent(address, '', 0), policy_version: defaults.length > 0 ? 1 : 0 }
    const known = agent.policy_version !== 0
    return {
      // Not the cached compilation: a dry run compiles what it read.
      agent: { ...agent, address_id: `${agent.address_id}#evaluate` },
      policies: known ? [...(agent.address_id === '' ? [] : await this.#store.listPolicies(agent.address_id)), ...defaults] : [],
      counters: await this.#store.getCounters(agent.address_id, now),
    }
  }

  #record(action: string, actor: string, now: number, before: PolicyRow | undefined, after: PolicyRow | null, owner: AgentRow) {
    const target = (after ?? before)?.policy_id as string
    return {
      audit: {
        at: iso(now),
        actor,
        action,
        target,
        reason: null,
        before: before ? { agent: owner.address, ...policyView(before) } : null,
        after: after ? { agent: owner.address, ...policyView(after) } : null,
      },
      event: {
        address_id: owner.address_id,
        address: owner.address,
        event_type: 'policy.changed',
        details: { policy_id: target, op: action.slice('policy.'.length), version: after?.version ?? before?.version ?? null },
        actor_id: actor,
        created_at: now,
      },
    }
  }
}

function pickCounters(c: { hour: string; day: string; sent_hour: number; sent_day: number; received_hour: number; received_day: number; cost_day: number }, dir: 'send' | 'receive') {
  return dir === 'send'
    ? { sent_this_hour: c.sent_hour, sent_today: c.sent_day, cost_today_usd: c.cost_day }
    : { received_this_hour: c.received_hour, received_today: c.received_day }
}

export { specOf }
