import type { AgentCounters, AgentRow, CostContext, CostOutcome, EnforcementBaseline, Parties, PolicyRow } from '../../store/store.js'
import { GatewayError } from '../errors.js'
import { compileGlob } from './glob.js'
import { specOf, DEFAULT_ALERT_PERCENTS, type CostSpec, type Direction, type RateSpec } from './policy-spec.js'

type Compiled =
  | { id: string; seqOrder: number; kind: 'action'; direction: Direction; allow: boolean; match: (t: string) => boolean }
  | { id: string; seqOrder: number; kind: 'rate'; spec: RateSpec }
  | { id: string; seqOrder: number; kind: 'cost'; spec: CostSpec }
  /** Decides nothing about intents: the sweeper acts on it (core/policies/deadman.ts). */
  | { id: string; seqOrder: number; kind: 'deadman' }

export type DecisionKind = 'allow' | 'deny' | 'rate_limited' | 'budget_exceeded'

export interface PolicyDecision {
  decision: DecisionKind
  policy_id: string | null
  /** The agent that owns the deciding policy (the one an auto-kill stops). */
  owner: AgentRow | null
  reason: string
  on_breach: 'block' | 'kill' | null
  limit?: number
  /** Seconds until the window resets. */
  reset_s?: number
  window?: 'hour' | 'day'
}

const HOUR_MS = 3_600_000
const DAY_MS = 86_400_000

/**
 * Policy decisions (DESIGN §2.6, §6). Policies are compiled once per agent `policy_version`
 * (read in the same transaction), so a stale cache can never decide: a new version misses it.
 */
export class PolicyEngine {
  readonly #cache = new Map<string, { version: number; compiled: Compiled[] }>()

  /** Drops an agent's compiled policies (on `policy.changed` from the change feed). */
  invalidate(addressId: string): void {
    this.#cache.delete(addressId)
  }

  /** Compiled policies of an agent for the rows read in the transaction. */
  compiled(agent: AgentRow, rows: readonly PolicyRow[]): Compiled[] {
    if (agent.policy_version === 0) return []
    const hit = this.#cache.get(agent.address_id)
    if (hit && hit.version === agent.policy_version) return hit.compiled
    const compiled = rows.filter((r) => r.enabled === 1).map(compile)
    if (this.#cache.size > 100_000) this.#cache.clear()
    this.#cache.set(agent.address_id, { version: agent.policy_version, compiled })
    return compiled
  }

  /** The decision for one intent on the snapshot the accepting transaction read. */
  decide(ctx: Parties, intentType: string, now: number): PolicyDecision {
    const from = this.compiled(ctx.from, ctx.from_policies)
    const to = this.compiled(ctx.to, ctx.to_policies)
    if (from.length === 0 && to.length === 0) return ALLOW
    const sides = [
      { agent: ctx.from, policies: from, direction: 'send' as const, counters: ctx.from_counters },
      { agent: ctx.to, policies: to, direction: 'receive' as const, counters: ctx.to_counters },
    ]
    // Precedence (DESIGN §11): policy_denied before 429; within a class the oldest policy is named.
    const ordered = sides
      .flatMap((side) => side.policies.map((p) => ({ side, p })))
      .sort((a, b) => a.p.seqOrder - b.p.seqOrder)
    for (const { side, p } of ordered) {
      if (p.kind !== 'action' || p.direction !== side.direction) continue
      if (p.match(intentType) !== p.allow) {
        return {
          decision: 'deny',
          policy_id: p.id,
          owner: side.agent,
          on_breach: null,
          reason: `${intentType} is ${p.allow ? 'not in the allowlist' : 'in the denylist'} of policy ${p.id} (${side.direction} by ${side.agent.address})`,
        }
      }
    }
    for (const { side, p } of ordered) {
      if (p.kind === 'rate' && p.spec.direction === side.direction) {
        const breach = rateBreach(p.id, p.spec, side.agent, side.counters, side.direction, now)
        if (breach) return { ...breach, owner: side.agent }
      }
      if (p.kind === 'cost' && side.direction === 'send') {
        const cost = side.counters.cost_day - (baselineOf(side.agent, p.id, side.counters)?.cost_day_offset ?? 0)
        if (cost >= p.spec.max_cost_per_day_usd) {
          return {
            decision: 'budget_exceeded',
            policy_id: p.id,
            owner: side.agent,
            on_breach: p.spec.on_breach,
            reason: `${side.agent.address} spent $${round(cost)} today; the ceiling of policy ${p.id} is $${p.spec.max_cost_per_day_usd}`,
            limit: p.spec.max_cost_per_day_usd,
            reset_s: Math.ceil((DAY_MS - (now % DAY_MS)) / 1000),
            window: 'day',
          }
        }
      }
    }
    return ALLOW
  }

  /** Throws the error of a non-allow decision; `autoKill` is set when the owner must be killed. */
  enforce(ctx: Parties, intentType: string, now: number): void {
    const d = this.decide(ctx, intentType, now)
    if (d.decision === 'allow') return
    throw decisionError(d)
  }

  /** Core's cost rule for resolve and heartbeat costs (DESIGN §6, §11). */
  costOutcome(ctx: CostContext): Omit<CostOutcome, 'kill'> & { kill: { policy_id: string; reason: string } | null } {
    const thresholds: CostOutcome['thresholds'] = []
    let kill: { policy_id: string; reason: string } | null = null
    for (const p of this.compiled(ctx.agent, ctx.policies)) {
      if (p.kind !== 'cost') continue
      const max = p.spec.max_cost_per_day_usd
      const offset = baselineOf(ctx.agent, p.id, ctx.counters)?.cost_day_offset ?? 0
      const cost = ctx.counters.cost_day - offset
      for (const percent of p.spec.alert_at_percent) {
        if (cost >= (max * percent) / 100) {
          thresholds.push({
            policy_id: p.id,
            percent,
            details: { policy_id: p.id, percent, cost_usd: round(cost), max_cost_per_day_usd: max, day: ctx.counters.day },
          })
        }
      }
      if (!kill && p.spec.on_breach === 'kill' && cost >= max && ctx.agent.killed_at === null) {
        kill = { policy_id: p.id, reason: `cost ceiling reached: $${round(cost)} of $${max} today (policy ${p.id})` }
      }
    }
    return { thresholds, kill }
  }
}

const ALLOW: PolicyDecision = { decision: 'allow', policy_id: null, owner: null, on_breach: null, reason: 'allowed' }

const round = (n: number): number => Math.round(n * 1e6) / 1e6

function compile(row: PolicyRow, index: number): Compiled {
  const spec = specOf(row)
  const seqOrder = row.created_at * 1000 + index
  if (spec.kind === 'action') {
    const matchers = spec.patterns.map(compileGlob)
    return {
      id: row.policy_id,
      seqOrder,
      kind: 'action',
      direction: spec.direction,
      allow: spec.mode === 'allowlist',
      match: (t) => matchers.some((m) => m(t)),
    }
  }
  if (spec.kind === 'rate') return { id: row.policy_id, seqOrder, kind: 'rate', spec }
  if (spec.kind === 'deadman') return { id: row.policy_id, seqOrder, kind: 'deadman' }
  return { id: row.policy_id, seqOrder, kind: 'cost', spec: { ...spec, alert_at_percent: spec.alert_at_percent ?? DEFAULT_ALERT_PERCENTS } }
}

/** The resume baseline of the policy that auto-killed the agent, as offsets for this window. */
function baselineOf(agent: AgentRow, policyId: string, counters: AgentCounters) {
  if (agent.enforcement_baseline === null) return undefined
  const b = JSON.parse(agent.enforcement_baseline) as EnforcementBaseline
  if (b.policy_id !== policyId) return undefined
  return {
    hour_sent: b.hour === counters.hour ? b.sent_hour : 0,
    hour_received: b.hour === counters.hour ? b.received_hour : 0,
    day_sent: b.day === counters.day ? b.sent_day : 0,
    day_received: b.day === counters.day ? b.received_day : 0,
    cost_day_offset: b.day === counters.day ? b.cost_day : 0,
  }
}

function rateBreach(
  id: string,
  spec: RateSpec,
  agent: AgentRow,
  counters: AgentCounters,
  direction: Direction,
  now: number,
): Omit<PolicyDecision, 'owner'> | null {
  const base = baselineOf(agent, id, counters)
  const send = direction === 'send'
  const hourBase = (send ? base?.hour_sent : base?.hour_received) ?? 0
  const dayBase = (send ? base?.day_sent : base?.day_received) ?? 0
  const hourCount = (send ? counters.sent_hour : counters.received_hour) - hourBase
  const dayCount = (send ? counters.sent_day : counters.received_day) - dayBase
  const windows: { limit: number | undefined; count: number; label: string; ms: number }[] = [
    { limit: spec.max_per_hour, count: hourCount, label: 'hour', ms: HOUR_MS },
    { limit: spec.max_per_day, count: dayCount, label: 'day', ms: DAY_MS },
  ]
  for (const w of windows) {
    if (w.limit !== undefined && w.count + 1 > w.limit) {
      return {
        decision: 'rate_limited',
        policy_id: id,
        on_breach: spec.on_breach,
        reason: `${agent.address} reached ${w.limit} intents ${send ? 'sent' : 'received'} per ${w.label} (policy ${id})`,
        limit: w.limit,
        reset_s: Math.ceil((w.ms - (now % w.ms)) / 1000),
        window: w.label as 'hour' | 'day',
      }
    }
  }
  return null
}

/** An error carrying what an auto-kill needs, thrown out of the accepting transaction. */
export class PolicyBreach extends GatewayError {
  constructor(
    readonly decision: PolicyDecision,
    code: 'policy_denied' | 'rate_limited' | 'budget_exceeded',
    message: string,
    options: ConstructorParameters<typeof GatewayError>[2],
  ) {
    super(code, message, options)
  }

  /** The agent to kill (the policy's owner) when the policy says `on_breach: kill`. */
  get autoKill(): { address_id: string; policy_id: string } | null {
    const d = this.decision
    return d.on_breach === 'kill' && d.owner && d.policy_id ? { address_id: d.owner.address_id, policy_id: d.policy_id } : null
  }
}

function decisionError(d: PolicyDecision): PolicyBreach {
  if (d.decision === 'deny') {
    return new PolicyBreach(d, 'policy_denied', d.reason, {
      extra: { policy_id: d.policy_id },
      details: { policy_id: d.policy_id },
    })
  }
  const retryAfter = Math.min(3600, Math.max(1, d.reset_s ?? 1))
  const autoKilled = d.on_breach === 'kill'
  return new PolicyBreach(d, d.decision === 'rate_limited' ? 'rate_limited' : 'budget_exceeded', d.reason, {
    extra: { policy_id: d.policy_id, retry_after_s: retryAfter },
    details: { policy_id: d.policy_id, ...(autoKilled ? { auto_killed: true } : {}) },
    headers: {
      'retry-after': String(retryAfter),
      'x-ratelimit-limit': String(d.limit ?? 0),
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': String(d.reset_s ?? retryAfter),
    },
  })
}
