/**
 * The store interface. Two engines implement it: `sqlite/` (embedded default, one replica)
 * and `postgres/` (any number of replicas). Methods are coarse, one per use case, because a
 * better-sqlite3 transaction cannot span an `await`: each method loads the rows it needs,
 * calls the pure core decision it is handed (the kill rule lives in core, once), and writes,
 * all in one transaction. Stores persist; they never decide.
 */
import type { ChangeFeed } from './change-feed.js'
import type { Clock } from '../core/clock.js'

export type Role = 'admin' | 'operator' | 'viewer' | 'agent'

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

export type DeliveryState = 'queued' | 'leased' | 'held' | 'done'

export interface AgentRow {
  address_id: string
  address: string
  display_name: string | null
  /** JSON text or null. */
  metadata: string | null
  created_at: number
  killed_at: number | null
  kill_reason: string | null
  /** Who killed it: `key:<id>` or `policy:<id>`. */
  kill_actor: string | null
  resumed_at: number | null
  /** Bumped by every change to the agent's policies; keys the compiled-policy cache. */
  policy_version: number
  /** The policy whose breach auto-killed the agent (cleared on resume). */
  auto_kill_policy_id: string | null
  /** JSON `EnforcementBaseline` set on resume after an auto-kill, or null. */
  enforcement_baseline: string | null
  /** The last health core computed (heartbeat or sweeper); `killed` is derived from killed_at. */
  health_status: HealthStatus
  last_heartbeat_at: number | null
  /**
   * When the agent was first registered, bound to a key or seen sending; null while it exists only
   * because intents were sent to it (a possibly mistyped recipient).
   */
  registered_at: number | null
  /** JSON object of string labels (`{"team": "payments"}`), or null for none. */
  labels: string | null
}

/** A kill by selector: stands (kills agents that first appear under it) until resumed. */
export interface FleetKillRow {
  fleet_kill_id: string
  /** Canonical JSON of the selector (`{"address": …, "labels": {…}}`). */
  selector: string
  reason: string | null
  actor: string
  created_at: number
  ended_at: number | null
  ended_by: string | null
}

/**
 * Core's rule for an agent row that appears (first send, registration, agent key) or whose
 * labels change while fleet kills stand: the kill to apply, or null. Stores call it inside the
 * transaction that writes the row, after reading the standing fleet kills in it.
 */
export type StandingKillRule = (agent: AgentRow, standing: readonly FleetKillRow[], now: number) => StandingKill | null

export interface StandingKill {
  fleet_kill_id: string
  actor: string
  reason: string | null
  record: KillInput['record']
}

/** Agents by selector: core's matcher, and the literal address prefix every match starts with. */
export interface AgentSelection {
  /** Rows whose address does not start with this are not read (`agent://acme/` for `agent://acme/**`). */
  prefix: string
  matches: (agent: AgentRow) => boolean
}

export interface FleetKillInput {
  selection: AgentSelection
  fleet_kill: FleetKillRow
  now: number
  /** See KillInput.clock. */
  clock?: () => number
  /** Sees the matching rows before anything is written (confirm_all); throws to refuse. */
  guard: (matching: readonly AgentRow[]) => void
  record: (before: AgentRow, after: AgentRow) => { audit: AuditDraft; event: MeshEventDraft }
  /** The fleet kill's own audit entry, once the agents are known. */
  summary: (killed: readonly AgentRow[], alreadyKilled: readonly AgentRow[]) => AuditDraft
}

export interface FleetKillResult {
  killed: AgentRow[]
  already_killed: AgentRow[]
}

export interface FleetResumeInput {
  selection: AgentSelection
  now: number
  actor: string
  rate_per_second: number
  guard: (matching: readonly AgentRow[]) => void
  /** Standing fleet kills this resume ends. */
  ends: (fleetKill: FleetKillRow) => boolean
  record: ResumeInput['record']
  summary: (resumed: readonly { agent: AgentRow; redelivering: number }[], ended: readonly FleetKillRow[]) => AuditDraft
}

export interface FleetResumeResult {
  resumed: { agent: AgentRow; redelivering: number }[]
  ended: FleetKillRow[]
}

/** What PATCH /v1/mesh/agents/{id} may change; core builds it from the current row. */
export interface AgentPatch {
  display_name: string | null
  labels: string | null
  metadata: string | null
}

export interface AgentUpdateInput {
  address_id: string
  now: number
  /** The new values from the current row; null when nothing changes. */
  build: (current: AgentRow) => AgentPatch | null
  record: (before: AgentRow, after: AgentRow) => { audit: AuditDraft; event: MeshEventDraft }
}

export type HealthStatus = 'unknown' | 'healthy' | 'degraded' | 'unreachable' | 'killed'

/**
 * A quarantined instance of an agent (DESIGN §1: instances are named by `x-instance-id`). The row
 * exists while the quarantine stands; it may name an instance never seen (a pod known to be bad).
 */
export interface InstanceQuarantineRow {
  address_id: string
  instance_id: string
  quarantined_at: number
  /** `key:<id>` of the operator. */
  actor: string
  reason: string | null
}

export interface QuarantineInput {
  address_id: string
  instance_id: string
  now: number
  actor: string
  reason: string | null
  /** The audit entry and mesh event, once the quarantine row and the requeued count are known. */
  record: (agent: AgentRow, quarantine: InstanceQuarantineRow, requeued: number) => { audit: AuditDraft; event: MeshEventDraft }
}

export interface QuarantineResult {
  agent: AgentRow
  quarantine: InstanceQuarantineRow
  /** False when the instance was already quarantined (a no-op: no audit, original row). */
  changed: boolean
  /** Intents leased to the instance that went back to the queue (available at once). */
  requeued: number
}

export interface LiftQuarantineInput {
  address_id: string
  instance_id: string
  now: number
  actor: string
  reason: string | null
  record: (agent: AgentRow, lifted: InstanceQuarantineRow) => { audit: AuditDraft; event: MeshEventDraft }
}

export interface InstanceRow {
  address_id: string
  instance_id: string
  first_seen_at: number
  last_heartbeat_at: number
}

/** Heartbeat-reported deltas summed over the health window. */
export interface MetricsWindow {
  total: number
  succeeded: number
  failed: number
  latency_sum: number
  latency_n: number
}

export interface HeartbeatMetrics {
  intents_total: number
  intents_succeeded: number
  intents_failed: number
  avg_latency_ms: number | null
  cost_usd: number
}

/** Core's health rule (core/health): one place computes every status. */
export type HealthRule = (ctx: { agent: AgentRow; instances: InstanceRow[]; window: MetricsWindow; now: number }) => HealthStatus

export interface HeartbeatInput {
  address_id: string
  instance_id: string
  now: number
  metrics: HeartbeatMetrics | null
  /** Start of the error-rate window (minute buckets at or after it count). */
  window_start: number
  health: HealthRule
  cost_rule: CostRule
  /** Mesh event for a health transition (from → to). */
  transition: (agent: AgentRow, from: HealthStatus, to: HealthStatus) => MeshEventDraft
  /** Core's shortcut: true when this beat cannot change the agent's health (no re-evaluation needed). */
  keeps_health: (agent: AgentRow, metrics: HeartbeatMetrics | null) => boolean
}

export interface HealthSweepInput {
  now: number
  /** Instances not seen since this time are stale. */
  stale_before: number
  /** Instances not seen since this time leave the instance list. */
  forget_before: number
  window_start: number
  health: HealthRule
  transition: (agent: AgentRow, from: HealthStatus, to: HealthStatus) => MeshEventDraft
  limit: number
  /** Drop reported metrics of minutes before this one (null: not this pass). */
  purge_metrics_before: number | null
}

export interface WebhookRow {
  webhook_id: string
  url: string
  /** JSON array of alert types, or null for all. */
  event_types: string | null
  secret: string
  created_at: number
  deleted_at: number | null
}

export interface AlertRow {
  alert_id: string
  webhook_id: string
  type: string
  body: string
  created_at: number
  next_attempt_at: number
  attempts: number
  last_status: number | null
  last_error: string | null
  delivered_at: number | null
  gave_up_at: number | null
}

/** Turns a mesh event into an alert (type and JSON body), or null when it alerts no one. */
export type AlertMapper = (event: MeshEventDraft, alertId: string) => { type: string; body: string } | null

export type PolicyKind = 'action' | 'rate' | 'cost' | 'deadman' | 'tool'

/**
 * The `address_id` of a default policy's row: defaults belong to no agent. The policy rows the
 * accepting transaction reads for an agent are its own followed by the defaults (core picks
 * the effective ones); an agent's `policy_version` is non-zero while any default exists.
 */
export const DEFAULT_POLICY_OWNER = '*'

/** What an egress call goes to: an LLM provider, an MCP server or a generic HTTP API. */
export type EgressKind = 'llm' | 'mcp' | 'http'

/** One metered call of an agent to an upstream, from admission to settlement. */
export interface EgressCallRow {
  call_id: string
  address_id: string
  upstream: string
  kind: EgressKind
  endpoint: string
  /** The LLM model; '' for MCP and HTTP calls. */
  model: string
  /** `<upstream>/<tool>` (MCP) or `<upstream>/<METHOD> <path>` (HTTP); null for LLM calls. */
  tool: string | null
  /** UTC day of admission: its reservation and its cost count for that day. */
  day: string
  /** Worst-case cost held while the call is open, micro-USD. */
  reserved_micro: number
  /** What was charged, micro-USD; null while open. */
  cost_micro: number | null
  state: 'open' | 'settled'
  /** How the charge was decided: `usage`, `reservation` (usage unknown) or `refused` (0). */
  outcome: string | null
  /** JSON of the reported token usage, or null. */
  usage: string | null
  status: number | null
  started_at: number
  /** Past this, any replica's sweeper settles the call at its reservation. */
  deadline_at: number
  settled_at: number | null
}

/** What the admission transaction read, for core to decide on (kill, cost ceiling). */
export interface EgressAdmitContext {
  agent: AgentRow
  /** Own and default policy rows (as Parties). */
  policies: PolicyRow[]
  counters: AgentCounters
  /** Sum of the agent's open reservations for the call's day, micro-USD. */
  reserved_micro: number
}

export interface EgressAdmitInput {
  call: EgressCallRow
  now: number
  /** Runs on the rows read (locked) in the transaction; throws to refuse. */
  decide: (ctx: EgressAdmitContext) => void
}

export interface EgressSettleInput {
  call_id: string
  now: number
  cost_micro: number
  outcome: 'usage' | 'reservation' | 'refused'
  usage: string | null
  status: number | null
  /** Core's rule for the charged cost (thresholds, auto-kill), as for resolve costs. */
  cost_rule: CostRule
}

/** Replaces the default policy set in one transaction (audited; every agent's version bumps). */
export interface DefaultPoliciesWrite {
  now: number
  /** The new set from the current one (core keeps ids of unchanged entries); null: no change. */
  build: (current: readonly PolicyRow[]) => PolicyRow[] | null
  record: (before: readonly PolicyRow[], after: readonly PolicyRow[]) => { audit: AuditDraft; event: MeshEventDraft }
}

export interface PolicyRow {
  policy_id: string
  address_id: string
  kind: PolicyKind
  /** JSON of the kind's flat fields (direction, mode, patterns, limits, on_breach, …). */
  spec: string
  enabled: number
  version: number
  created_at: number
  updated_at: number
}

/** An agent's counts in the current UTC hour and day (DESIGN §11: counter rows). */
export interface AgentCounters {
  /** `YYYY-MM-DD` (UTC). */
  day: string
  /** `YYYY-MM-DDTHH` (UTC). */
  hour: string
  sent_hour: number
  sent_day: number
  received_hour: number
  received_day: number
  /** Egress calls admitted (LLM, MCP, HTTP), for `rate` policies with `direction: "egress"`. */
  egress_hour: number
  egress_day: number
  cost_day: number
}

/** The counts at the moment of a resume after an auto-kill: the fired policy counts from here. */
export interface EnforcementBaseline extends AgentCounters {
  policy_id: string
}

export interface KeyRow {
  key_id: string
  role: Role
  name: string | null
  /** SHA-256 hex of the key; the key itself is never stored. */
  key_hash: string
  address_id: string | null
  address: string | null
  created_at: number
  revoked_at: number | null
}

export interface IntentRow {
  intent_id: string
  intent_type: string
  from_address_id: string
  to_address_id: string
  from_agent: string
  to_agent: string
  /** JSON text. */
  payload: string
  correlation_id: string | null
  reply_to: string | null
  deadline_at: number | null
  max_delivery_attempts: number
  status: IntentStatus
  delivery_state: DeliveryState
  delivery_attempt: number
  delivery_seq: number | null
  lease_instance: string | null
  lease_expires_at: number | null
  lease_ms: number | null
  available_at: number
  created_at: number
  updated_at: number
  /** JSON text or null. */
  result: string | null
  /** JSON text or null. */
  error: string | null
  cost_usd: number | null
  trace_id: string | null
  last_event_seq: number
  /** Leases dropped by a kill: they do not count toward `max_delivery_attempts`. */
  kill_dropped: number
}

export interface IntentEventRow {
  intent_id: string
  seq: number
  event_type: string
  status: IntentStatus
  actor: string
  at: number
  /** JSON text or null. */
  details: string | null
}

/** A new intent as core builds it; the store fills in ids of agent rows. */
export interface NewIntent {
  intent_id: string
  intent_type: string
  from_agent: string
  to_agent: string
  payload: string
  correlation_id: string | null
  reply_to: string | null
  deadline_at: number | null
  max_delivery_attempts: number
  trace_id: string | null
}

/**
 * What the accepting transaction read: both agent rows, their policies and their counters.
 * Core decides on exactly this snapshot; the store then writes the intent and the increments.
 */
export interface Parties {
  from: AgentRow
  to: AgentRow
  /** The quarantine of the sending instance (`x-instance-id` of the send), read in the transaction. */
  from_quarantine: InstanceQuarantineRow | null
  from_policies: PolicyRow[]
  to_policies: PolicyRow[]
  /**
   * Exact (read under the locks that serialize the agent's accepts) for a party with a rate or
   * cost policy, the only ones decided on counters; an engine may give zeros for the others
   * (SQLite: a party whose policy_version is 0).
   */
  from_counters: AgentCounters
  to_counters: AgentCounters
}

/** See AcceptIntentInput.decide. */
export type AcceptDecision = (parties: Parties) => MeshEventDraft[] | void

export interface AcceptIntentInput {
  intent: NewIntent
  /** Events written with the intent (core decides which). */
  actor: string
  now: number
  idempotency: { key: string; request_hash: string } | null
  /**
   * The sending instance when the request named one (`x-instance-id`); its quarantine row is read
   * in the transaction into `Parties.from_quarantine`. Null: the send is not attributed to one.
   */
  from_instance?: string | null
  /**
   * Core's decision, run inside the transaction on the freshly read agent rows; throws to
   * reject. Returns mesh events to write with the intent (monitored policies' would-be decisions).
   */
  decide: AcceptDecision
  /** Called for an idempotent replay whose stored hash differs; throws. */
  onIdempotencyMismatch: () => never
}

export interface AcceptIntentResult {
  intent: IntentRow
  replayed: boolean
}

export interface ClaimInput {
  address_id: string
  instance_id: string
  max_in_flight: number
  lease_ms: number
  max_batch: number
  now: number
  /**
   * Core's delivery rule on the recipient row and the claiming instance's quarantine (read in
   * the same transaction); throws to refuse delivery.
   */
  decide: (recipient: AgentRow, quarantine: InstanceQuarantineRow | null) => void
}

export interface Delivery {
  intent: IntentRow
  seq: number
  event_type: 'intent.delivered' | 'intent.redelivered'
}

export interface ClaimResult {
  deliveries: Delivery[]
  /** False when this instance already holds `max_in_flight` leases. */
  has_room: boolean
  /** When nothing is due now: the earliest time a queued intent becomes due (paced redelivery). */
  next_due_at: number | null
}

export interface CostContext {
  agent: AgentRow
  policies: PolicyRow[]
  /** Counters after adding the cost. */
  counters: AgentCounters
  cost_before: number
  now: number
}

export interface CostOutcome {
  /** Budget thresholds crossed; the store records each once per policy and day. */
  thresholds: { policy_id: string; percent: number; details: Record<string, unknown> }[]
  /** Auto-kill in the same transaction (cost ceiling with on_breach: kill). */
  kill: { policy_id: string; reason: string; record: KillInput['record'] } | null
}

/** Core's rule for reported cost (resolve `cost_usd`, heartbeat metrics). */
export type CostRule = (ctx: CostContext) => CostOutcome

export interface IntentUpdateInput {
  intent_id: string
  now: number
  actor: string
  /** Applied when the change carries a cost: counts it for the recipient and checks its budget. */
  cost_rule?: CostRule
  /**
   * The recipient instance acting (`x-instance-id` of an agent key's ack or resolve), or null;
   * its quarantine row is read in the transaction and handed to `decide`.
   */
  instance_id?: string | null
  /**
   * Core's decision on the current rows (intent, recipient, sender, the acting instance's
   * quarantine). Returns the change to write, or throws to reject. Runs inside the transaction.
   */
  decide: (ctx: {
    intent: IntentRow
    recipient: AgentRow
    sender: AgentRow
    quarantine: InstanceQuarantineRow | null
  }) => IntentChange
}

/** What core decided to write for an ack or resolve. */
export interface IntentChange {
  status: IntentStatus
  delivery_state: DeliveryState
  lease_expires_at: number | null
  event_type: string | null
  event_details: Record<string, unknown> | null
  result?: string | null
  error?: string | null
  cost_usd?: number | null
  /** An intent to accept in the same transaction (reply_to completion), under `decide`. */
  follow_up?: { intent: NewIntent; decide: AcceptDecision } | undefined
}

export interface IntentUpdateResult {
  intent: IntentRow
  event: IntentEventRow | null
  follow_up: { accepted: true; intent: IntentRow } | { accepted: false; error: unknown } | null
}

export interface ExpireLeasesResult {
  requeued: number
  failed: number
}

export interface IntentListQuery {
  address_id: string
  direction: 'sent' | 'received' | 'both'
  status: IntentStatus | null
  limit: number
  /** Paging cursor: rows created strictly before this intent (newest first). */
  after: string | null
}

/** An audit entry before the store numbers and chains it (DESIGN §2.7). */
export interface AuditDraft {
  /** Exact ISO string with milliseconds. */
  at: string
  actor: string
  action: string
  target: string
  reason: string | null
  before: unknown
  after: unknown
}

export interface AuditRow {
  seq: number
  at: string
  actor: string
  action: string
  target: string
  reason: string | null
  /** JSON text or null, stored as written (key order kept). */
  before: string | null
  after: string | null
  prev_hash: string
  hash: string
}

/** Computes an entry's chain hash; core supplies it (audit/audit-chain.ts). */
export type AuditHasher = (prevHash: string, entry: AuditDraft & { seq: number }) => string

export interface MeshEventDraft {
  address_id: string | null
  address: string | null
  event_type: string
  details: Record<string, unknown> | null
  actor_id: string
  created_at: number
}

export interface MeshEventRow {
  seqno: number
  address_id: string | null
  address: string | null
  event_type: string
  /** JSON text or null. */
  details: string | null
  actor_id: string
  created_at: number
}

export interface KillInput {
  address_id: string
  now: number
  actor: string
  reason: string | null
  /** Set for an auto-kill: the policy that fired (recorded on the agent for the resume baseline). */
  policy_id: string | null
  /**
   * The clock, for an engine that must wait for in-flight transactions before the kill takes
   * effect (PostgreSQL): it reads the time again once they are done, so `killed_at` is not
   * before anything they committed.
   */
  clock?: () => number
  /**
   * Rechecked on the agent row read (locked) in the kill's transaction: false → no kill. The
   * dead-man switch decides on fresh rows, so a heartbeat or resume that won the race stands.
   */
  guard?: (before: AgentRow) => boolean
  /** Builds the audit entry and mesh event from the agent row before the kill. */
  record: (before: AgentRow, after: AgentRow) => { audit: AuditDraft; event: MeshEventDraft }
}

export interface HoldInput {
  address_id: string
  now: number
  actor: string
  reason: string | null
  /** Cancel the agent's undelivered outbound intents instead of holding them. */
  cancel_pending: boolean
  limit: number
}

export interface ResumeInput {
  address_id: string
  now: number
  actor: string
  reason: string | null
  /** Held intents are released oldest first at this many per second. */
  rate_per_second: number
  record: (before: AgentRow, after: AgentRow, redelivering: number) => { audit: AuditDraft; event: MeshEventDraft }
}

export interface AuditQuery {
  after_seq: number
  limit: number
  action_prefix: string | null
  target: string | null
}

export interface MeshEventQuery {
  limit: number
  event_type: string | null
  address: string | null
  /** Newest first, strictly older than this seqno. */
  before_seqno: number | null
}

/** Statements a store ran since it opened: the cost of its work in round trips to the engine. */
export interface StoreStats {
  /** Executions of prepared statements (each run/get/all/iterate). */
  statements: number
  /** BEGIN/COMMIT and SAVEPOINT/RELEASE (or ROLLBACK) issued around the writes. */
  transaction_statements: number
  /** Executions by statement name (ad-hoc statements by the first words of their SQL). */
  by_statement: Record<string, number>
}

export interface Store {
  readonly engine: 'sqlite' | 'postgres'
  /** Change notifications, delivered to every replica on the same store. */
  readonly feed: ChangeFeed
  /**
   * The time every replica on this store agrees on (PostgreSQL: the database's clock, see
   * DatabaseClock); absent for a store only one process serves, which uses the system clock.
   */
  readonly clock?: Clock
  close(): Promise<void>
  /** Throws GatewayError('store_unavailable') if the store cannot be reached. */
  ping(): Promise<void>
  /** Statement counts since the store opened (engines that count them: SQLite). */
  stats?(): StoreStats

  // ---- keys ----
  /** Inserts a key; for an agent key, registers the agent (if new) in the same transaction. */
  insertKey(key: Omit<KeyRow, 'address_id'>, now: number, audit: (row: KeyRow) => AuditDraft): Promise<KeyRow>
  findKeyByHash(keyHash: string): Promise<KeyRow | undefined>
  listKeys(): Promise<KeyRow[]>
  getKey(keyId: string): Promise<KeyRow | undefined>
  /** Revokes a key; `guard` sees the key and the number of other active admin keys and may throw. */
  revokeKey(
    keyId: string,
    now: number,
    guard: (key: KeyRow, otherActiveAdmins: number) => void,
    audit: (key: KeyRow) => AuditDraft,
  ): Promise<KeyRow>
  /** Upserts the bootstrap admin key by hash (idempotent, safe under concurrent starts). */
  ensureAdminKey(key: KeyRow): Promise<'created' | 'existing'>
  /**
   * First start without a configured key: inserts `key` only if no active admin key exists,
   * serialized so replicas starting at once create one key between them. True if inserted.
   */
  createFirstAdminKey(key: KeyRow, audit: AuditDraft): Promise<boolean>
  countActiveKeys(role: Role): Promise<number>

  // ---- agents ----
  getAgentById(addressId: string): Promise<AgentRow | undefined>
  getAgentByAddress(address: string): Promise<AgentRow | undefined>
  /** Registers a new agent; returns undefined when the address already exists. */
  registerAgent(agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined>
  /** Agents in registration order; `health` filters on the shown status (killed overrides). */
  listAgents(limit: number, health: HealthStatus | null): Promise<AgentRow[]>
  /**
   * One page of agents filtered by health and search text, sorted in SQL over every match
   * (ties by address), with the number of matches.
   */
  listAgentsPage(query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }>
  /** Every agent the selection matches, in address order (read outside a transaction: dry runs). */
  selectAgents(selection: AgentSelection): Promise<AgentRow[]>
  /** Changes an agent's name, labels or metadata, audited; a standing fleet kill may apply. */
  updateAgent(input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }>

  // ---- intents ----
  acceptIntent(input: AcceptIntentInput): Promise<AcceptIntentResult>
  getIntent(intentId: string): Promise<IntentRow | undefined>
  listIntentEvents(intentId: string, since: number, limit: number): Promise<IntentEventRow[]>
  listIntents(query: IntentListQuery): Promise<IntentRow[]>
  /** Leases queued intents to one instance, giving each a new per-address delivery seq. */
  claimDeliveries(input: ClaimInput): Promise<ClaimResult>
  /** Deliveries still leased to (address, instance) with seq > since, unextended, in seq order. */
  leasedDeliveries(addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]>
  updateIntent(input: IntentUpdateInput): Promise<IntentUpdateResult>
  /** Requeues expired leases; intents out of attempts become FAILED. */
  expireLeases(now: number, limit: number): Promise<ExpireLeasesResult>
  /** Non-terminal intents whose `deadline_at` passed become TIMED_OUT; returns how many. */
  timeOutIntents(now: number, limit: number): Promise<number>
  /** Deletes terminal intents (and their events) older than `before`, and stale idempotency keys. */
  purge(before: number, idempotencyBefore: number, limit: number): Promise<number>

  // ---- kill switch ----
  /**
   * Flips the agent row to killed and writes the audit entry, mesh event and change
   * notification in one transaction. `changed` is false when it was already killed (no-op).
   */
  killAgent(input: KillInput): Promise<{ agent: AgentRow; changed: boolean }>
  /** One batch of marking a killed agent's backlog held (or canceled); returns rows touched. */
  holdBacklog(input: HoldInput): Promise<{ held: number; canceled: number }>
  /** Clears the kill and releases held intents (paced), with audit and mesh event. */
  resumeAgent(input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }>
  /**
   * Kills every live agent the selection matches and records the standing fleet kill, in one
   * transaction: from its commit on, each of them is refused on every replica, and agents that
   * first appear under it start killed. Holding their backlogs follows (holdBacklog).
   */
  killFleet(input: FleetKillInput): Promise<FleetKillResult>
  /** Resumes every killed agent the selection matches and ends the fleet kills `ends` picks. */
  resumeFleet(input: FleetResumeInput): Promise<FleetResumeResult>
  /** Fleet kills, newest first; `standing` keeps only those not ended. */
  listFleetKills(standing: boolean, limit: number): Promise<FleetKillRow[]>
  /**
   * Quarantines one instance of an agent in one transaction: writes the quarantine row, returns
   * the intents leased to that instance to the queue (available now; the dropped lease does not
   * count as a delivery attempt), audits, and notifies every replica (`instance.quarantined`,
   * which cuts its streams, and `intent.available`, which wakes its siblings). From the commit
   * on, every claim, ack, resolve and send naming that instance is refused on every replica.
   */
  quarantineInstance(input: QuarantineInput): Promise<QuarantineResult>
  /** Lifts a quarantine (deletes the row), audited; `changed` is false when there was none. */
  liftQuarantine(input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }>
  getQuarantine(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined>
  /** An agent's standing quarantines, by instance_id. */
  listQuarantines(addressId: string): Promise<InstanceQuarantineRow[]>

  // ---- audit and mesh events ----
  appendAudit(draft: AuditDraft): Promise<AuditRow>
  listAudit(query: AuditQuery): Promise<AuditRow[]>
  appendMeshEvent(draft: MeshEventDraft): Promise<MeshEventRow>
  listMeshEvents(query: MeshEventQuery): Promise<MeshEventRow[]>
  /** Oldest first, strictly after `afterSeqno` (for live streams). */
  meshEventsAfter(afterSeqno: number, limit: number): Promise<MeshEventRow[]>

  // ---- policies and counters ----
  /** An agent's own policies (not the defaults), oldest first. */
  listPolicies(addressId: string): Promise<PolicyRow[]>
  /** The default policy set, in order (rows carry `address_id` DEFAULT_POLICY_OWNER). */
  listDefaultPolicies(): Promise<PolicyRow[]>
  /** The given agents' own policies, then the default set, in one read (core picks the effective ones per agent). */
  listPoliciesOf(addressIds: readonly string[]): Promise<PolicyRow[]>
  /**
   * Replaces the default set. Serialized with the creation of agents (PostgreSQL: the fleet
   * lock), so an agent appearing meanwhile is created under the old set or the new one, and
   * every agent's policy_version is bumped (row locks wait for in-flight accepts).
   */
  replaceDefaultPolicies(input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }>
  /** Live agents that have beaten at least once but not since `before` (default dead-man sweep). */
  listSilentAgents(before: number, limit: number): Promise<AgentRow[]>
  getPolicy(policyId: string): Promise<PolicyRow | undefined>
  /** Enabled policies of one kind over all agents (the dead-man sweep), oldest first. */
  listEnabledPolicies(kind: PolicyKind, limit: number): Promise<PolicyRow[]>
  /** Writes a policy change, bumps the agent's policy_version, audits, emits `policy.changed`. */
  writePolicy(input: PolicyWrite): Promise<PolicyRow | null>
  getCounters(addressId: string, now: number): Promise<AgentCounters>
  /** Records a rate/budget breach once per policy and window, with its mesh event; false if already recorded. */
  recordBreach(policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean>

  // ---- egress ----
  /**
   * Admits one egress call: reads the agent row (the kill check), its policies, counters and
   * open reservations, lets core decide, and writes the open call, in one transaction that
   * serializes with the agent's other admissions and settlements (PostgreSQL: the counter row
   * lock), so `spent + reserved ≤ ceiling` holds after every commit.
   */
  admitEgress(input: EgressAdmitInput): Promise<EgressCallRow>
  /** Settles an open call once (a second settle is a no-op: `changed: false`) and charges its cost. */
  settleEgress(input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }>
  /** Open calls past their deadline (a replica died, a client vanished), oldest first. */
  overdueEgressCalls(now: number, limit: number): Promise<EgressCallRow[]>
  /** Calls newest first; `address_id` null: all agents; `before`: a call_id cursor. */
  listEgressCalls(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]>

  // ---- heartbeats and health ----
  heartbeat(input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }>
  /** Re-evaluates agents with stale instances; forgets long-gone instances. Returns transitions. */
  sweepHealth(input: HealthSweepInput): Promise<number>
  listInstances(addressId: string): Promise<InstanceRow[]>
  /** Instance counts per agent: total and fresh (seen at or after `freshSince`). */
  instanceCounts(freshSince: number, addressIds: readonly string[]): Promise<Map<string, { total: number; fresh: number }>>
  metricsWindow(addressId: string, windowStart: number): Promise<MetricsWindow>
  countAgentsByHealth(): Promise<Record<string, number>>

  // ---- webhooks and the alert outbox ----
  createWebhook(row: WebhookRow, audit: AuditDraft): Promise<WebhookRow>
  listWebhooks(): Promise<WebhookRow[]>
  deleteWebhook(webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow>
  /** Due alerts, claimed for `leaseMs` so concurrent senders (replicas) do not send the same one at once. */
  claimAlerts(now: number, leaseMs: number, limit: number): Promise<(AlertRow & { url: string; secret: string })[]>
  recordAlertAttempt(
    alertId: string,
    result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
  ): Promise<void>
  listAlerts(limit: number, webhookId: string | null): Promise<AlertRow[]>
  /** Counter rows summed over [fromDay, toDay] (inclusive, `YYYY-MM-DD`), for the given agents. */
  sumCounters(
    fromDay: string,
    toDay: string,
    addressIds: readonly string[],
  ): Promise<Map<string, { sent: number; received: number; cost_usd: number }>>
  /** The whole fleet's intents sent and cost over [fromDay, toDay] (the console's summary cards). */
  fleetTotals(fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }>
  /** One agent's hour counter rows in [fromHour, toHour] (inclusive, `YYYY-MM-DDTHH`), oldest first; hours without a row are absent. */
  listHourCounters(addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]>
}

/** An hour counter row: accepted intents sent and received, and cost counted for the agent. */
export interface HourCounters {
  /** `YYYY-MM-DDTHH` (UTC). */
  hour: string
  sent: number
  received: number
  cost_usd: number
}

export type AgentSort = 'registered' | 'cost' | 'intents' | 'last_heartbeat'

export interface AgentPageQuery {
  limit: number
  offset: number
  /** Filters on the shown status (killed overrides). */
  health: HealthStatus | null
  /** Case-insensitive substring of the address or the display name; matched literally (no wildcards). */
  search: string | null
  sort: AgentSort
  order: 'asc' | 'desc'
  /** The counter days (`YYYY-MM-DD`, inclusive) that `cost` and `intents` sort over. */
  from_day: string
  to_day: string
}

export interface PolicyWrite {
  op: 'create' | 'update' | 'delete'
  policy_id: string
  now: number
  /** For update/delete: the version the caller saw (If-Match); mismatch → `conflict`. */
  expected_version: number | null
  /** The new row (create/update); built by core from the current row (update). */
  build: (current: PolicyRow | undefined) => PolicyRow | null
  record: (before: PolicyRow | undefined, after: PolicyRow | null, agent: AgentRow) => {
    audit: AuditDraft
    event: MeshEventDraft
  }
}
