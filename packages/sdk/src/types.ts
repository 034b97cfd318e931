/**
 * Wire objects of the gateway (DESIGN §5), with its field names. Request parameters live
 * next to the methods that take them.
 */

/** Any JSON object. */
export type JsonObject = Record<string, unknown>

/** The AXME intent lifecycle (DESIGN §5a). `IN_PROGRESS` and `WAITING` are reserved. */
export type IntentStatus =
  | 'SUBMITTED'
  | 'DELIVERED'
  | 'ACKNOWLEDGED'
  | 'IN_PROGRESS'
  | 'WAITING'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELED'
  | 'TIMED_OUT'

/** The statuses a resolve may set. */
export type ResolveStatus = 'COMPLETED' | 'FAILED' | 'CANCELED'

/** Where an intent is in delivery, beside its `status` (DESIGN §11). */
export type DeliveryState = 'queued' | 'leased' | 'held' | 'done'

export type HealthStatus = 'healthy' | 'degraded' | 'unreachable' | 'killed' | 'unknown'

export type Role = 'admin' | 'operator' | 'viewer' | 'agent'

/** An intent as `GET /v1/intents/{id}` shows it. */
export interface IntentView {
  intent_id: string
  intent_type: string
  correlation_id: string | null
  from_agent: string
  to_agent: string
  payload: JsonObject
  status: IntentStatus
  delivery_state: DeliveryState
  created_at: string
  updated_at: string
  delivery_attempt: number
  max_delivery_attempts?: number
  lease_expires_at?: string | null
  reply_to?: string | null
  deadline_at?: string | null
  trace_id?: string | null
  result?: unknown
  error?: unknown
  cost_usd?: number
}

/** One entry of an intent's event log; `seq` ascends from 1. */
export interface IntentEvent {
  intent_id: string
  seq: number
  event_type: string
  status: IntentStatus
  actor: string
  at: string
  details: JsonObject | null
}

/**
 * One intent handed to this instance: the `data` of an inbox `intent.delivered` frame. It is
 * leased until `lease_expires_at`; `ack` extends the lease, `resolve` finishes it, otherwise it
 * is delivered again (with a new `seq` and `delivery_attempt + 1`).
 */
export interface Delivery {
  intent_id: string
  /** Per-address, strictly increasing delivery number; the stream's resume point. */
  seq: number
  event_type: 'intent.delivered'
  status: IntentStatus
  intent_type: string
  from_agent: string
  to_agent?: string
  correlation_id?: string | null
  reply_to?: string | null
  payload: JsonObject
  /** 1 for the first delivery, more for redeliveries after an expired lease. */
  delivery_attempt: number
  lease_expires_at: string | null
  created_at?: string
  trace_id?: string | null
}

/** Parameters of a new intent (`POST /v1/intents`). */
export interface IntentCreateParams {
  /** Lowercase dotted name, e.g. `deploy.service.v1`. */
  intent_type: string
  /** Recipient address, `agent://org/workspace/name`. */
  to_agent: string
  payload?: JsonObject | undefined
  correlation_id?: string | undefined
  /** Agent address that receives the outcome as an `intent.completion.v1` intent. */
  reply_to?: string | undefined
  /** ISO-8601 time after which the intent times out. */
  deadline_at?: string | undefined
  max_delivery_attempts?: number | undefined
}

/** `POST /v1/intents` answer. */
export interface IntentCreateResponse {
  ok: true
  intent_id: string
  status: IntentStatus
  created_at: string
  /**
   * Present when the intent was accepted but something looks wrong, e.g.
   * `recipient_unregistered`: the address was never registered, bound to a key or seen sending
   * (a typo?). The intent is queued all the same.
   */
  warnings?: { code: 'recipient_unregistered' | (string & {}); message: string }[]
}

export interface IntentResponse {
  ok: true
  intent: IntentView
}

export interface IntentEventsResponse {
  ok: true
  events: IntentEvent[]
}

export interface IntentEventsParams {
  /** Only events with `seq > since`. */
  since?: number | undefined
}

/** Body of `POST /v1/intents/{id}/resolve`. */
export interface IntentResolveParams {
  status: ResolveStatus
  result?: unknown
  error?: unknown
  reason?: string | undefined
  cost_usd?: number | undefined
}

/** Whether the outcome was sent to `reply_to`. */
export interface CompletionDelivery {
  delivered: boolean
  reason?: string
  reply_to?: string
  intent_id?: string
}

export interface IntentResolveResponse {
  ok: true
  intent: IntentView
  event: IntentEvent | null
  completion_delivery: CompletionDelivery
}

/** One instance of an agent, as heartbeats report it. */
export interface AgentInstance {
  instance_id: string
  health_status: HealthStatus
  /** Null for a quarantined instance never seen (no heartbeat yet). */
  last_heartbeat_at: string | null
  first_seen_at?: string | null
  /** True while the instance is quarantined (`agents.killInstance`). */
  quarantined?: boolean
  quarantined_at?: string
  quarantine_reason?: string | null
}

/** An agent as the mesh list shows it (DESIGN §5c). */
export interface MeshAgent {
  address_id: string
  address: string
  /** The registered name, else the address's last segment: always a string. */
  display_name: string
  /** Labels (`{team: "payments"}`); `{}` when none. Selectors of fleet kills match them. */
  labels: Record<string, string>
  health_status: HealthStatus
  last_heartbeat_at: string | null
  created_at: string
  intents_period: number
  cost_period: number
  metadata: JsonObject | null
  instances_total: number
  instances_healthy: number
  /**
   * The daily cost ceiling that applies: the smallest `max_cost_per_day_usd` of the agent's
   * enabled cost policies, else of the enabled default ones; null when none. In list and
   * retrieve answers (register and update answers do not compute it).
   */
  cost_ceiling_usd?: number | null
  killed_at?: string
  kill_reason?: string | null
  /** Who killed it: `key:<key_id>` or `policy:<policy_id>`. */
  killed_by?: string | null
}

/** A row of `GET /v1/mesh/agents`: always carries the cost ceiling (`$18.60 of $50.00 today`). */
export interface MeshAgentListed extends MeshAgent {
  cost_ceiling_usd: number | null
}

/** One agent with its instances and policies (`GET /v1/mesh/agents/{id}`). */
export interface MeshAgentDetail extends MeshAgentListed {
  instances: AgentInstance[]
  /** Its own policies. */
  policies: Policy[]
  /** What applies to it: its own enabled policies plus the defaults of kinds it has none of. */
  effective_policies: Policy[]
}

/** An operator-facing event (`agent.killed`, `policy.breached`, …). */
export interface MeshEvent {
  event_id: string
  address: string
  event_type: string
  details: JsonObject | null
  actor_id: string | null
  created_at: string
}

/** An API key as listings show it (never the key itself). */
export interface KeyView {
  key_id: string
  role: Role
  name: string | null
  /** The address an agent key is bound to. */
  agent: string | null
  address_id?: string | null
  created_at?: string
  revoked_at?: string | null
}

/**
 * `enforce` (default) blocks and kills; `monitor` never does: each decision the policy would
 * have made becomes a `policy.would_deny` / `policy.would_kill` mesh event and a count in
 * `chokepoint_policy_would_total`, so a limit can be watched for a day before it is switched on.
 */
export type Enforcement = 'enforce' | 'monitor'

/** `kind: "action"`: which intent types an agent may send or receive. */
export interface ActionPolicyBody {
  kind: 'action'
  direction: 'send' | 'receive'
  mode: 'allowlist' | 'denylist'
  /** Globs over dotted names: `*` one segment, `**` one or more. */
  patterns: string[]
  enabled?: boolean | undefined
  enforcement?: Enforcement | undefined
}

/** `kind: "rate"`: intents (sent or received) or egress calls (LLM, MCP, HTTP) per UTC hour/day. */
export interface RatePolicyBody {
  kind: 'rate'
  direction: 'send' | 'receive' | 'egress'
  max_per_hour?: number | undefined
  max_per_day?: number | undefined
  on_breach: 'block' | 'kill'
  enabled?: boolean | undefined
  enforcement?: Enforcement | undefined
}

/** `kind: "cost"`: USD per UTC day. */
export interface CostPolicyBody {
  kind: 'cost'
  max_cost_per_day_usd: number
  on_breach: 'block' | 'kill'
  alert_at_percent?: number[] | undefined
  enabled?: boolean | undefined
  enforcement?: Enforcement | undefined
}

/**
 * `kind: "deadman"`: when no instance has beaten for `silent_after_seconds` (counted from the
 * last heartbeat, the last resume or the policy's last change), kill the agent or alert once.
 */
export interface DeadmanPolicyBody {
  kind: 'deadman'
  silent_after_seconds: number
  on_trigger: 'kill' | 'alert'
  enabled?: boolean | undefined
  enforcement?: Enforcement | undefined
}

/**
 * `kind: "tool"`: which MCP tools and HTTP endpoints an agent may call through the gateway, over
 * `<upstream>/<tool>` and `<upstream>/<METHOD> <path>`; `*` = any run without `/`, `**` = any run.
 */
export interface ToolPolicyBody {
  kind: 'tool'
  mode: 'allowlist' | 'denylist'
  patterns: string[]
  enabled?: boolean | undefined
  enforcement?: Enforcement | undefined
}

/** A policy body, flat (DESIGN §10). */
export type PolicyBody = ActionPolicyBody | RatePolicyBody | CostPolicyBody | DeadmanPolicyBody | ToolPolicyBody

/** Fields every stored policy has. */
export interface PolicyMeta {
  policy_id: string
  /** The owning agent; null for a default policy. */
  address_id: string | null
  /** True for a policy of the default set (`GET /v1/policies/defaults`). */
  default?: true
  enforcement: Enforcement
  enabled: boolean
  /** Increments on every change; send it back as `If-Match` to update. */
  version: number
  created_at: string
  updated_at: string
}

/** A stored policy. */
export type Policy = PolicyBody & PolicyMeta

/** One entry of the hash-chained audit log (DESIGN §2.7). */
export interface AuditEntry {
  seq: number
  at: string
  /** `key:<key_id>`, `policy:<policy_id>` or `system`. */
  actor: string
  /** e.g. `agent.kill`, `policy.update`, `key.create`, `auth.denied`. */
  action: string
  target: string | null
  reason: string | null
  before: unknown
  after: unknown
  prev_hash: string
  hash: string
}
