import { DEFAULT_POLICY_OWNER, type PolicyKind, type PolicyRow } from '../../store/store.js'

export type Direction = 'send' | 'receive'
/** What a `rate` policy counts: intents sent, intents received, or egress calls (LLM, MCP, HTTP). */
export type RateDirection = Direction | 'egress'
export type OnBreach = 'block' | 'kill'
export type Enforcement = 'enforce' | 'monitor'

/** Every kind may run in monitor mode: decide nothing, record what it would have decided. */
interface Mode {
  enforcement?: Enforcement | undefined
}

export interface ActionSpec extends Mode {
  kind: 'action'
  direction: Direction
  mode: 'allowlist' | 'denylist'
  patterns: string[]
}

export interface RateSpec extends Mode {
  kind: 'rate'
  direction: RateDirection
  max_per_hour?: number | undefined
  max_per_day?: number | undefined
  on_breach: OnBreach
}

export interface CostSpec extends Mode {
  kind: 'cost'
  max_cost_per_day_usd: number
  on_breach: OnBreach
  alert_at_percent: number[]
}

/** Dead-man switch: no instance has beaten for `silent_after_seconds` → kill or alert. */
export interface DeadmanSpec extends Mode {
  kind: 'deadman'
  silent_after_seconds: number
  on_trigger: 'kill' | 'alert'
}

/**
 * Which egress tools an agent may call: `<upstream>/<tool>` for MCP `tools/call`,
 * `<upstream>/<METHOD> <path>` for HTTP upstreams (core/policies/tool-glob.ts).
 */
export interface ToolSpec extends Mode {
  kind: 'tool'
  mode: 'allowlist' | 'denylist'
  patterns: string[]
}

export type PolicySpec = ActionSpec | RateSpec | CostSpec | DeadmanSpec | ToolSpec

export const DEFAULT_ALERT_PERCENTS = [50, 80, 100]

/** A default policy's rows carry this `address_id` (they belong to no agent). */
export const DEFAULT_OWNER = DEFAULT_POLICY_OWNER

/** The spec stored in a row (kind is a column; the rest is JSON). */
export function specOf(row: PolicyRow): PolicySpec {
  return { ...(JSON.parse(row.spec) as object), kind: row.kind } as PolicySpec
}

/** Serializes the kind-specific fields only. */
export function specText(spec: PolicySpec): string {
  const { kind: _kind, ...rest } = spec
  return JSON.stringify(rest)
}

/**
 * `{ok, policy: {policy_id, address_id, kind, …, enforcement, enabled, version, created_at,
 * updated_at}}` (DESIGN §10). A default policy has `address_id: null` and `default: true`.
 */
export function policyView(row: PolicyRow): Record<string, unknown> {
  const { kind: _kind, enforcement, ...spec } = specOf(row)
  const isDefault = row.address_id === DEFAULT_OWNER
  return {
    policy_id: row.policy_id,
    address_id: isDefault ? null : row.address_id,
    ...(isDefault ? { default: true } : {}),
    kind: row.kind as PolicyKind,
    ...spec,
    enforcement: enforcement ?? 'enforce',
    enabled: row.enabled === 1,
    version: row.version,
    created_at: new Date(row.created_at).toISOString(),
    updated_at: new Date(row.updated_at).toISOString(),
  }
}
