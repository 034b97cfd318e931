import { mkdirSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { Database as Db, Statement } from 'better-sqlite3'
import { GatewayError } from '../../core/errors.js'
import { standingKillRule } from '../../core/fleet/fleet-service.js'
import { LocalFeed, type Change } from '../change-feed.js'
import { agentOrderBy, containsPattern, sortsByCounters } from '../agent-page.js'
import type {
  AcceptDecision,
  AcceptIntentInput,
  AgentPageQuery,
  AgentSelection,
  HourCounters,
  AgentUpdateInput,
  FleetKillInput,
  FleetKillResult,
  FleetKillRow,
  FleetResumeInput,
  FleetResumeResult,
  AlertMapper,
  AlertRow,
  HealthStatus,
  HealthSweepInput,
  HeartbeatInput,
  InstanceRow,
  InstanceQuarantineRow,
  LiftQuarantineInput,
  QuarantineInput,
  QuarantineResult,
  MetricsWindow,
  WebhookRow,
  AgentCounters,
  CostRule,
  PolicyKind,
  PolicyRow,
  PolicyWrite,
  AuditDraft,
  AuditHasher,
  AuditQuery,
  AuditRow,
  HoldInput,
  KillInput,
  MeshEventDraft,
  MeshEventQuery,
  MeshEventRow,
  ResumeInput,
  AcceptIntentResult,
  AgentRow,
  ClaimInput,
  ClaimResult,
  Delivery,
  ExpireLeasesResult,
  IntentEventRow,
  IntentListQuery,
  IntentRow,
  IntentStatus,
  IntentUpdateInput,
  IntentUpdateResult,
  KeyRow,
  NewIntent,
  Parties,
  Role,
  Store,
  StoreStats,
} from '../store.js'
import { DEFAULT_POLICY_OWNER, type DefaultPoliciesWrite, type EgressAdmitInput, type EgressCallRow, type EgressSettleInput } from '../store.js'
import { SQLITE_MIGRATIONS } from './sqlite-migrations.js'
import { StatementCounter } from './statement-stats.js'
import { newAddressId, randomBase62 } from '../../core/ids.js'
import { blankAgent } from '../../core/agents/agent-row.js'

export interface SqliteStoreConfig {
  /** Directory holding `chokepoint.db`; `:memory:` for an in-memory database. */
  dataDir: string
  /** `normal` survives a process crash (kill -9); `full` also survives power loss. */
  durability: 'normal' | 'full'
  /** Chain hash of audit entries (core's rule). */
  hashAudit: AuditHasher
  /** Which mesh events become webhook alerts (core's rule). */
  alertFor: AlertMapper
  /** A heartbeat may wait this long for other writes to share its commit (0: commit at once). */
  heartbeatBatchMs?: number
}

type Stmts = ReturnType<typeof prepare>

function prepare(db: Db) {
  const s = (sql: string): Statement => db.prepare(sql)
  return {
    agentById: s('SELECT * FROM agents WHERE address_id = ?'),
    agentByAddress: s('SELECT * FROM agents WHERE address = ?'),
    insertAgent: s(
      `INSERT INTO agents (address_id, address, display_name, metadata, created_at, killed_at, kill_reason, kill_actor, resumed_at, registered_at, labels)
       VALUES (@address_id, @address, @display_name, @metadata, @created_at, @killed_at, @kill_reason, @kill_actor, @resumed_at, @registered_at, @labels)
       ON CONFLICT (address) DO NOTHING`,
    ),
    agentsByPrefix: s('SELECT * FROM agents WHERE substr(address, 1, ?) = ? ORDER BY address'),
    updateAgent: s(
      'UPDATE agents SET display_name = @display_name, labels = @labels, metadata = @metadata WHERE address_id = @address_id RETURNING *',
    ),
    insertFleetKill: s(
      `INSERT INTO fleet_kills (fleet_kill_id, selector, reason, actor, created_at, ended_at, ended_by)
       VALUES (@fleet_kill_id, @selector, @reason, @actor, @created_at, @ended_at, @ended_by)`,
    ),
    standingFleetKills: s('SELECT * FROM fleet_kills WHERE ended_at IS NULL ORDER BY created_at, fleet_kill_id'),
    listFleetKills: s('SELECT * FROM fleet_kills ORDER BY created_at DESC, fleet_kill_id LIMIT ?'),
    endFleetKill: s('UPDATE fleet_kills SET ended_at = ?, ended_by = ? WHERE fleet_kill_id = ? AND ended_at IS NULL RETURNING *'),
    markRegistered: s('UPDATE agents SET registered_at = ? WHERE address_id = ? AND registered_at IS NULL'),
    claimUnregistered: s(
      `UPDATE agents SET registered_at = @registered_at, display_name = @display_name, metadata = @metadata, labels = @labels
       WHERE address = @address AND registered_at IS NULL RETURNING *`,
    ),
    killAgent: s(
      `UPDATE agents SET killed_at = @now, kill_reason = @reason, kill_actor = @actor
       WHERE address_id = @address_id AND killed_at IS NULL RETURNING *`,
    ),
    resumeAgent: s(
      `UPDATE agents SET killed_at = NULL, kill_reason = NULL, kill_actor = NULL, resumed_at = @now, health_status = 'unknown'
       WHERE address_id = @address_id AND killed_at IS NOT NULL RETURNING *`,
    ),
    // Backlog of a killed agent: queued or leased work addressed to it...
    holdableTo: s(
      // Two halves so each uses its partial index (queued / leased): a kill never walks the
      // agent's finished intents, however long its history.
      `SELECT * FROM (
         SELECT intent_id, delivery_state, lease_instance, last_event_seq, status, seqno FROM intents INDEXED BY intents_queue
         WHERE to_address_id = @id AND delivery_state = 'queued'
         UNION ALL
         SELECT intent_id, delivery_state, lease_instance, last_event_seq, status, seqno FROM intents INDEXED BY intents_leased
         WHERE to_address_id = @id AND delivery_state = 'leased'
       ) ORDER BY seqno LIMIT @limit`,
    ),
    // ...and its own output that no one has received yet.
    holdableFrom: s(
      `SELECT intent_id, delivery_state, lease_instance, last_event_seq, status, to_address_id FROM intents
       WHERE from_address_id = ? AND delivery_state = 'queued' AND delivery_attempt = 0 ORDER BY seqno LIMIT ?`,
    ),
    hold: s(
      `UPDATE intents SET delivery_state = 'held', lease_instance = NULL, lease_expires_at = NULL,
         kill_dropped = kill_dropped + CASE WHEN delivery_state = 'leased' THEN 1 ELSE 0 END,
         updated_at = @now, last_event_seq = last_event_seq + 1
       WHERE intent_id = @intent_id RETURNING last_event_seq, status`,
    ),
    cancelHeld: s(
      `UPDATE intents SET status = 'CANCELED', delivery_state = 'done', updated_at = @now,
         error = @error, last_event_seq = last_event_seq + 1
       WHERE intent_id = @intent_id RETURNING last_event_seq`,
    ),
    // On resume: held work in both directions, oldest first, whose other party is live.
    releasable: s(
      `SELECT i.intent_id, i.to_address_id FROM intents i
         JOIN agents t ON t.address_id = i.to_address_id
         JOIN agents f ON f.address_id = i.from_address_id
       WHERE i.delivery_state = 'held' AND (i.to_address_id = @id OR i.from_address_id = @id)
         AND t.killed_at IS NULL AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
       ORDER BY i.seqno`,
    ),
    release: s(`UPDATE intents SET delivery_state = 'queued', available_at = @at, updated_at = @now WHERE intent_id = @intent_id`),
    policiesOf: s('SELECT * FROM policies WHERE address_id = ? ORDER BY seqno'),
    // The agent's own policies, then the defaults (core picks the effective ones).
    effectivePolicies: s(
      `SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at FROM (
         SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at, 0 AS src, seqno AS ord
         FROM policies WHERE address_id = ?
         UNION ALL
         SELECT policy_id, '${DEFAULT_POLICY_OWNER}', kind, spec, enabled, version, created_at, updated_at, 1, position FROM default_policies
       ) ORDER BY src, ord`,
    ),
    policiesOfMany: s(
      `SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at FROM (
         SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at, 0 AS src, seqno AS ord
         FROM policies WHERE address_id IN (SELECT value FROM json_each(?))
         UNION ALL
         SELECT policy_id, '${DEFAULT_POLICY_OWNER}', kind, spec, enabled, version, created_at, updated_at, 1, position FROM default_policies
       ) ORDER BY src, ord`,
    ),
    egressReserved: s("SELECT coalesce(sum(reserved_micro), 0) AS n FROM egress_calls WHERE address_id = ? AND day = ? AND state = 'open'"),
    egressInsert: s(
      `INSERT INTO egress_calls (call_id, address_id, upstream, kind, endpoint, model, tool, day, reserved_micro, cost_micro, state, outcome, usage, status, started_at, deadline_at, settled_at)
       VALUES (@call_id, @address_id, @upstream, @kind, @endpoint, @model, @tool, @day, @reserved_micro, @cost_micro, @state, @outcome, @usage, @status, @started_at, @deadline_at, @settled_at)`,
    ),
    egressSettle: s(
      `UPDATE egress_calls SET state = 'settled', cost_micro = ?, outcome = ?, usage = ?, status = ?, settled_at = ?
       WHERE call_id = ? AND state = 'open' RETURNING *`,
    ),
    egressById: s('SELECT * FROM egress_calls WHERE call_id = ?'),
    egressOverdue: s("SELECT * FROM egress_calls WHERE state = 'open' AND deadline_at < ? ORDER BY deadline_at LIMIT ?"),
    defaultPolicies: s(
      `SELECT policy_id, '${DEFAULT_POLICY_OWNER}' AS address_id, kind, spec, enabled, version, created_at, updated_at
       FROM default_policies ORDER BY position`,
    ),
    insertDefaultPolicy: s(
      `INSERT INTO default_policies (policy_id, position, kind, spec, enabled, version, created_at, updated_at)
       VALUES (@policy_id, @position, @kind, @spec, @enabled, @version, @created_at, @updated_at)`,
    ),
    // A new agent while defaults exist starts with policy_version 1: it has effective policies.
    adoptDefaults: s(
      `UPDATE agents SET policy_version = 1
       WHERE address_id = ? AND policy_version = 0 AND EXISTS (SELECT 1 FROM default_policies) RETURNING *`,
    ),
    policyById: s('SELECT * FROM policies WHERE policy_id = ?'),
    insertPolicy: s(
      `INSERT INTO policies (policy_id, address_id, kind, spec, enabled, version, created_at, updated_at)
       VALUES (@policy_id, @address_id, @kind, @spec, @enabled, @version, @created_at, @updated_at)`,
    ),
    updatePolicy: s(
      `UPDATE policies SET spec = @spec, enabled = @enabled, version = @version, updated_at = @updated_at
       WHERE policy_id = @policy_id`,
    ),
    deletePolicy: s('DELETE FROM policies WHERE policy_id = ?'),
    bumpPolicyVersion: s('UPDATE agents SET policy_version = policy_version + 1 WHERE address_id = ?'),
    dayRow: s('SELECT sent, received, egress, cost_usd FROM counters_day WHERE address_id = ? AND day = ?'),
    hourRow: s('SELECT sent, received, egress FROM counters_hour WHERE address_id = ? AND hour = ?'),
    countDay: s(
      `INSERT INTO counters_day (address_id, day, sent, received, cost_usd) VALUES (@address_id, @day, @sent, @received, @cost)
       ON CONFLICT (address_id, day) DO UPDATE SET sent = sent + excluded.sent, received = received + excluded.received,
         cost_usd = cost_usd + excluded.cost_usd`,
    ),
    countHour: s(
      `INSERT INTO counters_hour (address_id, hour, sent, received) VALUES (@address_id, @hour, @sent, @received)
       ON CONFLICT (address_id, hour) DO UPDATE SET sent = sent + excluded.sent, received = received + excluded.received`,
    ),
    // One accept's counts: sent for the sender, received for the recipient (one row when they are the same).
    countAcceptDay: s(
      `INSERT INTO counters_day (address_id, day, sent, received) VALUES (@from, @day, 1, 0), (@to, @day, 0, 1)
       ON CONFLICT (address_id, day) DO UPDATE SET sent = sent + excluded.sent, received = received + excluded.received`,
    ),
    countAcceptHour: s(
      `INSERT INTO counters_hour (address_id, hour, sent, received) VALUES (@from, @hour, 1, 0), (@to, @hour, 0, 1)
       ON CONFLICT (address_id, hour) DO UPDATE SET sent = sent + excluded.sent, received = received + excluded.received`,
    ),
    // One admitted egress call, counted for `rate` policies with `direction: "egress"`.
    countEgressDay: s(
      `INSERT INTO counters_day (address_id, day, egress) VALUES (?, ?, 1)
       ON CONFLICT (address_id, day) DO UPDATE SET egress = egress + 1`,
    ),
    countEgressHour: s(
      `INSERT INTO counters_hour (address_id, hour, egress) VALUES (?, ?, 1)
       ON CONFLICT (address_id, hour) DO UPDATE SET egress = egress + 1`,
    ),
    // Cost counted for an agent, also by hour (the per-hour chart).
    costHour: s(
      `INSERT INTO counters_hour (address_id, hour, cost_usd) VALUES (?, ?, ?)
       ON CONFLICT (address_id, hour) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd`,
    ),
    hourCounters: s(
      'SELECT hour, sent, received, cost_usd FROM counters_hour WHERE address_id = ? AND hour >= ? AND hour <= ? ORDER BY hour',
    ),
    sumCounters: s(
      `SELECT address_id, sum(sent) AS sent, sum(received) AS received, sum(cost_usd) AS cost_usd
       FROM counters_day WHERE address_id IN (SELECT value FROM json_each(?)) AND day >= ? AND day <= ? GROUP BY address_id`,
    ),
    budgetAlert: s('INSERT INTO budget_alerts (policy_id, day, percent, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING'),
    markAutoKill: s('UPDATE agents SET auto_kill_policy_id = ? WHERE address_id = ?'),
    setBaseline: s('UPDATE agents SET enforcement_baseline = ?, auto_kill_policy_id = NULL WHERE address_id = ?'),
    upsertInstance: s(
      `INSERT INTO agent_instances (address_id, instance_id, first_seen_at, last_heartbeat_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (address_id, instance_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at`,
    ),
    instancesOf: s('SELECT * FROM agent_instances WHERE address_id = ? ORDER BY instance_id'),
    // Long-silent instances leave the list, except those of an agent still shown live whose last
    // beat is stale: the staleness pass must see them first (it then marks the agent unreachable).
    forgetInstances: s(
      `DELETE FROM agent_instances WHERE last_heartbeat_at < @forget
         AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.address_id = agent_instances.address_id AND a.killed_at IS NULL
           AND a.health_status IN ('healthy', 'degraded') AND a.last_heartbeat_at < @stale)`,
    ),
    instanceCounts: s(
      `SELECT address_id, count(*) AS total, sum(CASE WHEN last_heartbeat_at >= ? THEN 1 ELSE 0 END) AS fresh
       FROM agent_instances WHERE address_id IN (SELECT value FROM json_each(?)) GROUP BY address_id`,
    ),
    setHeartbeat: s('UPDATE agents SET last_heartbeat_at = ? WHERE address_id = ?'),
    setHealth: s('UPDATE agents SET health_status = ? WHERE address_id = ?'),
    addMetrics: s(
      `INSERT INTO heartbeat_metrics (address_id, minute, total, succeeded, failed, latency_sum, latency_n)
       VALUES (@address_id, @minute, @total, @succeeded, @failed, @latency_sum, @latency_n)
       ON CONFLICT (address_id, minute) DO UPDATE SET total = total + excluded.total, succeeded = succeeded + excluded.succeeded,
         failed = failed + excluded.failed, latency_sum = latency_sum + excluded.latency_sum, latency_n = latency_n + excluded.latency_n`,
    ),
    // Reported intents and, for an agent without policies, its reported cost: one upsert.
    reportDay: s(
      `INSERT INTO counters_day (address_id, day, reported_total, reported_succeeded, reported_failed, cost_usd) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (address_id, day) DO UPDATE SET reported_total = reported_total + excluded.reported_total,
         reported_succeeded = reported_succeeded + excluded.reported_succeeded, reported_failed = reported_failed + excluded.reported_failed,
         cost_usd = cost_usd + excluded.cost_usd`,
    ),
    metricsWindow: s(
      `SELECT coalesce(sum(total), 0) AS total, coalesce(sum(succeeded), 0) AS succeeded, coalesce(sum(failed), 0) AS failed,
         coalesce(sum(latency_sum), 0) AS latency_sum, coalesce(sum(latency_n), 0) AS latency_n
       FROM heartbeat_metrics WHERE address_id = ? AND minute >= ?`,
    ),
    purgeMetrics: s('DELETE FROM heartbeat_metrics WHERE minute < ?'),
    // Live agents shown healthy/degraded with an instance that went quiet (an agent whose last
    // beat is stale has only such instances). Driven by the instances' time index, so a pass
    // reads what is going stale, not every live agent of the fleet (the unary + keeps the planner
    // off the health index, which would visit them all).
    staleCandidates: s(
      `SELECT a.* FROM agents a
       WHERE a.address_id IN (SELECT i.address_id FROM agent_instances i WHERE i.last_heartbeat_at < @before)
         AND a.killed_at IS NULL AND +a.health_status IN ('healthy', 'degraded')
       LIMIT @limit`,
    ),
    countByHealth: s(
      `SELECT CASE WHEN killed_at IS NOT NULL THEN 'killed' ELSE health_status END AS health, count(*) AS n
       FROM agents GROUP BY 1`,
    ),
    insertBreach: s('INSERT INTO policy_breaches (policy_id, window_key, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING'),
    activeWebhooks: s('SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at'),
    webhookById: s('SELECT * FROM webhooks WHERE webhook_id = ?'),
    insertWebhook: s(
      `INSERT INTO webhooks (webhook_id, url, event_types, secret, created_at, deleted_at)
       VALUES (@webhook_id, @url, @event_types, @secret, @created_at, NULL)`,
    ),
    deleteWebhook: s('UPDATE webhooks SET deleted_at = ? WHERE webhook_id = ? AND deleted_at IS NULL'),
    insertAlert: s(
      `INSERT INTO alert_outbox (alert_id, webhook_id, type, body, created_at, next_attempt_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    dueAlerts: s(
      `SELECT o.*, w.url, w.secret FROM alert_outbox o JOIN webhooks w ON w.webhook_id = o.webhook_id
       WHERE o.delivered_at IS NULL AND o.gave_up_at IS NULL AND o.next_attempt_at <= ? ORDER BY o.next_attempt_at LIMIT ?`,
    ),
    leaseAlert: s('UPDATE alert_outbox SET next_attempt_at = ? WHERE alert_id = ?'),
    alertAttempt: s(
      `UPDATE alert_outbox SET attempts = attempts + 1, last_status = @status, last_error = @error,
         delivered_at = CASE WHEN @delivered = 1 THEN @now ELSE NULL END,
         gave_up_at = CASE WHEN @delivered = 0 AND @next IS NULL THEN @now ELSE NULL END,
         next_attempt_at = coalesce(@next, next_attempt_at)
       WHERE alert_id = @alert_id`,
    ),
    auditHead: s('SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1'),
    insertAudit: s(
      `INSERT INTO audit_log (seq, at, actor, action, target, reason, before, after, prev_hash, hash)
       VALUES (@seq, @at, @actor, @action, @target, @reason, @before, @after, @prev_hash, @hash)`,
    ),
    insertMeshEvent: s(
      `INSERT INTO mesh_events (address_id, address, event_type, details, actor_id, created_at)
       VALUES (@address_id, @address, @event_type, @details, @actor_id, @created_at) RETURNING *`,
    ),
    meshAfter: s('SELECT * FROM mesh_events WHERE seqno > ? ORDER BY seqno LIMIT ?'),
    listAgents: s('SELECT * FROM agents ORDER BY created_at, address LIMIT ?'),
    listAgentsKilled: s('SELECT * FROM agents WHERE killed_at IS NOT NULL ORDER BY created_at, address LIMIT ?'),
    listAgentsByHealth: s(
      'SELECT * FROM agents WHERE killed_at IS NULL AND health_status = ? ORDER BY created_at, address LIMIT ?',
    ),
    keyByHash: s(
      `SELECT k.*, a.address FROM api_keys k LEFT JOIN agents a ON a.address_id = k.address_id WHERE k.key_hash = ?`,
    ),
    keyById: s(
      `SELECT k.*, a.address FROM api_keys k LEFT JOIN agents a ON a.address_id = k.address_id WHERE k.key_id = ?`,
    ),
    listKeys: s(
      `SELECT k.*, a.address FROM api_keys k LEFT JOIN agents a ON a.address_id = k.address_id ORDER BY k.created_at, k.key_id`,
    ),
    insertKey: s(
      `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
       VALUES (@key_id, @role, @name, @key_hash, @address_id, @created_at, @revoked_at)`,
    ),
    insertKeyIfNew: s(
      `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
       VALUES (@key_id, @role, @name, @key_hash, @address_id, @created_at, NULL)
       ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, role = 'admin'`,
    ),
    revokeKey: s('UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL'),
    countActive: s('SELECT count(*) AS n FROM api_keys WHERE role = ? AND revoked_at IS NULL'),
    intentById: s('SELECT * FROM intents WHERE intent_id = ?'),
    insertIntent: s(
      `INSERT INTO intents (intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id, reply_to,
         deadline_at, max_delivery_attempts, status, delivery_state, available_at, created_at, updated_at, trace_id, last_event_seq)
       VALUES (@intent_id, @intent_type, @from_address_id, @to_address_id, @from_agent, @to_agent, @payload, @correlation_id, @reply_to,
         @deadline_at, @max_delivery_attempts, 'SUBMITTED', 'queued', @now, @now, @now, @trace_id, 2) RETURNING *`,
    ),
    insertEvent: s(
      `INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    bumpEventSeq: s('UPDATE intents SET last_event_seq = last_event_seq + 1 WHERE intent_id = ? RETURNING last_event_seq'),
    eventsSince: s('SELECT * FROM intent_events WHERE intent_id = ? AND seq > ? ORDER BY seq LIMIT ?'),
    idemGet: s('SELECT request_hash, intent_id FROM idempotency_keys WHERE from_address_id = ? AND idem_key = ?'),
    // Upsert: a key whose intent was purged (retention) now names the new intent.
    idemPut: s(
      `INSERT INTO idempotency_keys (from_address_id, idem_key, request_hash, intent_id, created_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (from_address_id, idem_key) DO UPDATE SET request_hash = excluded.request_hash,
         intent_id = excluded.intent_id, created_at = excluded.created_at`,
    ),
    inFlight: s(
      `SELECT count(*) AS n FROM intents WHERE to_address_id = ? AND delivery_state = 'leased' AND lease_instance = ?`,
    ),
    // The sender filter is the store half of core's delivery rule (kill-switch/rules.ts):
    // a killed sender's never-delivered output is not handed to anyone.
    queued: s(
      // Due and not yet due alike, in due order: the claim takes the due ones and learns from the
      // first one not due yet when to look again (no second query for it).
      `SELECT i.* FROM intents i JOIN agents f ON f.address_id = i.from_address_id
       WHERE i.to_address_id = @address_id AND i.delivery_state = 'queued'
         AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
         AND (i.deadline_at IS NULL OR i.deadline_at > @now)
       ORDER BY i.available_at, i.seqno LIMIT 64`,
    ),
    nextSeq: s(
      `INSERT INTO address_seq (address_id, last_seq) VALUES (?, ?)
       ON CONFLICT (address_id) DO UPDATE SET last_seq = last_seq + excluded.last_seq RETURNING last_seq`,
    ),
    lease: s(
      `UPDATE intents SET status = 'DELIVERED', delivery_state = 'leased', delivery_attempt = delivery_attempt + 1,
         delivery_seq = @seq, lease_instance = @instance, lease_expires_at = @expires, lease_ms = @lease_ms,
         updated_at = @now, last_event_seq = last_event_seq + 1
       WHERE intent_id = @intent_id RETURNING *`,
    ),
    leasedSince: s(
      `SELECT * FROM intents WHERE to_address_id = ? AND lease_instance = ? AND delivery_state = 'leased'
         AND delivery_seq > ? AND lease_expires_at > ? ORDER BY delivery_seq`,
    ),
    updateIntent: s(
      `UPDATE intents SET status = @status, delivery_state = @delivery_state, lease_expires_at = @lease_expires_at,
         lease_instance = CASE WHEN @delivery_state = 'leased' THEN lease_instance ELSE NULL END,
         result = coalesce(@result, result), error = coalesce(@error, error), cost_usd = coalesce(@cost_usd, cost_usd),
         updated_at = @now, last_event_seq = last_event_seq + @event
       WHERE intent_id = @intent_id RETURNING *`,
    ),
    expired: s(
      `SELECT * FROM intents WHERE delivery_state = 'leased' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?`,
    ),
    requeue: s(
      `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
         available_at = @now, updated_at = @now WHERE intent_id = @intent_id`,
    ),
    failExpired: s(
      `UPDATE intents SET status = 'FAILED', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
         error = @error, updated_at = @now WHERE intent_id = @intent_id`,
    ),
    pastDeadline: s(
      `SELECT intent_id, to_address_id, lease_instance, delivery_state FROM intents
       WHERE deadline_at IS NOT NULL AND deadline_at <= ? AND delivery_state <> 'done' ORDER BY deadline_at LIMIT ?`,
    ),
    timeOut: s(
      `UPDATE intents SET status = 'TIMED_OUT', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
         updated_at = @now, last_event_seq = last_event_seq + 1 WHERE intent_id = @intent_id RETURNING last_event_seq`,
    ),
    purgeIntents: s(
      `DELETE FROM intents WHERE seqno IN (SELECT seqno FROM intents WHERE delivery_state = 'done' AND updated_at < ? LIMIT ?)
       RETURNING intent_id`,
    ),
    purgeEvents: s('DELETE FROM intent_events WHERE intent_id = ?'),
    purgeIdem: s('DELETE FROM idempotency_keys WHERE created_at < ?'),
    quarantineOf: s('SELECT * FROM instance_quarantines WHERE address_id = ? AND instance_id = ?'),
    quarantinesOf: s('SELECT * FROM instance_quarantines WHERE address_id = ? ORDER BY instance_id'),
    insertQuarantine: s(
      `INSERT INTO instance_quarantines (address_id, instance_id, quarantined_at, actor, reason)
       VALUES (@address_id, @instance_id, @quarantined_at, @actor, @reason) ON CONFLICT DO NOTHING RETURNING *`,
    ),
    deleteQuarantine: s('DELETE FROM instance_quarantines WHERE address_id = ? AND instance_id = ? RETURNING *'),
    // A quarantine takes the instance's leases back: queued and due now, the dropped lease not
    // counted as a delivery attempt (like a kill's, kill_dropped).
    requeueInstance: s(
      `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
         kill_dropped = kill_dropped + 1, available_at = @now, updated_at = @now
       WHERE to_address_id = @address_id AND delivery_state = 'leased' AND lease_instance = @instance_id
       RETURNING intent_id`,
    ),
  }
}

/** The current UTC day and hour with every count zero (a party without policies: nothing reads them). */
function zeroCounters(now: number): AgentCounters {
  const at = new Date(now).toISOString()
  return {
    day: at.slice(0, 10),
    hour: at.slice(0, 13),
    sent_hour: 0,
    sent_day: 0,
    received_hour: 0,
    received_day: 0,
    egress_hour: 0,
    egress_day: 0,
    cost_day: 0,
  }
}

/** Statements that write a table whose rows the store caches (see SqliteStore#watch). */
const WRITES_CACHED = /\b(?:UPDATE(?:\s+OR\s+\w+)?|INTO|DELETE\s+FROM)\s+(?:agents|instance_quarantines)\b/i
/** Cached rows per cache before it is emptied (a bound, not an eviction policy). */
const CACHE_LIMIT = 10_000

const TERMINAL = new Set<IntentStatus>(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'])

export class SqliteStore implements Store {
  readonly engine = 'sqlite' as const
  readonly feed = new LocalFeed()
  readonly #db: Db
  readonly #q: Stmts
  readonly #hashAudit: AuditHasher
  readonly #alertFor: AlertMapper
  readonly #counter = new StatementCounter()

  constructor(config: SqliteStoreConfig) {
    let file = ':memory:'
    if (config.dataDir !== ':memory:') {
      mkdirSync(config.dataDir, { recursive: true, mode: 0o700 })
      chmodSync(config.dataDir, 0o700)
      file = join(config.dataDir, 'chokepoint.db')
    }
    this.#db = new Database(file)
    this.#db.pragma('journal_mode = WAL')
    this.#db.pragma(`synchronous = ${config.durability === 'full' ? 'FULL' : 'NORMAL'}`)
    this.#db.pragma('foreign_keys = ON')
    this.#db.pragma('busy_timeout = 5000')
    // Keep a fleet's hot rows in memory (up to 64 MiB) instead of re-reading evicted pages, and
    // checkpoint every ~40 MB of WAL instead of ~4 MB: a checkpoint writes each page once however
    // often it changed, so rows updated again and again (heartbeats, counters) cost fewer writes.
    this.#db.pragma('cache_size = -65536')
    this.#db.pragma('wal_autocheckpoint = 10000')
    migrate(this.#db)
    this.#q = this.#counter.wrapAll(prepare(this.#db))
    for (const stmt of Object.values(this.#q)) this.#watch(stmt)
    this.#hashAudit = config.hashAudit
    this.#alertFor = config.alertFor
    this.#heartbeatBatchMs = config.heartbeatBatchMs ?? 0
  }

  readonly #heartbeatBatchMs: number

  /**
   * Runs `fn` as one write transaction and publishes its `changes` after the commit.
   *
   * Group commit: writes that arrive in the same event-loop turn share one SQLite transaction,
   * each inside its own savepoint, so one failing (rejected) write rolls back alone. Every
   * caller is answered only after the shared COMMIT, so nothing is acknowledged before it is
   * durable, and writes apply in arrival order (a kill ahead of an accept is seen by it).
   * A write given `lingerMs` (heartbeats) may wait that long for others to share its commit;
   * any write that is due now takes the waiting ones along.
   */
  #write<T>(fn: (changes: Change[]) => T, lingerMs = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#pending.push({ fn, resolve: resolve as (value: unknown) => void, reject })
      if (lingerMs <= 0) {
        // Due now: at the end of this event-loop turn, with whatever is waiting.
        if (!this.#flushSoon) {
          this.#flushSoon = true
          setImmediate(() => this.#flush())
        }
      } else if (!this.#flushSoon && this.#lingerTimer === null) {
        // May wait for company (heartbeats): more writes share the commit.
        this.#lingerTimer = setTimeout(() => this.#flush(), lingerMs)
      }
    })
  }

  #flushSoon = false
  #lingerTimer: NodeJS.Timeout | null = null

  readonly #pending: { fn: (changes: Change[]) => unknown; resolve: (value: unknown) => void; reject: (error: unknown) => void }[] =
    []

  #flush(): void {
    this.#flushSoon = false
    if (this.#lingerTimer !== null) clearTimeout(this.#lingerTimer)
    this.#lingerTimer = null
    const batch = this.#pending.splice(0)
    if (batch.length === 0) return
    const outcomes: ({ ok: true; value: unknown; changes: Change[] } | { ok: false; error: unknown })[] = []
    // BEGIN IMMEDIATE and COMMIT (each write's SAVEPOINT and RELEASE: #savepoint).
    this.#counter.transactionStatements += 2
    try {
      this.#db
        .transaction(() => {
          for (const op of batch) {
            const changes: Change[] = []
            try {
              const value = this.#savepoint(() => op.fn(changes))
              outcomes.push({ ok: true, value, changes })
            } catch (error) {
              outcomes.push({ ok: false, error })
            }
          }
        })
        .immediate()
    } catch (error) {
      // Nothing of the batch was committed: rows cached during it may be gone.
      this.#dropCaches()
      const failure = this.#db.open ? error : new GatewayError('store_unavailable', 'the store is closed', { cause: error })
      for (const op of batch) op.reject(failure)
      return
    }
    const changes: Change[] = []
    batch.forEach((op, i) => {
      const outcome = outcomes[i]
      if (!outcome) return op.reject(new Error('lost write outcome'))
      if (!outcome.ok) return op.reject(outcome.error)
      changes.push(...outcome.changes)
      op.resolve(outcome.value)
    })
    // After the commit, in commit order. (A stream whose claim shares a batch with a kill
    // writes its claimed frames before the kill frame: see InboxStream.killed.)
    for (const change of changes) this.feed.publish(change)
  }

  /** A statement built per call (dynamic filters), counted by the first words of its SQL. */
  #adhoc(sql: string): Statement {
    return this.#watch(this.#counter.wrap(this.#db.prepare(sql), `adhoc: ${sql.replace(/\s+/g, ' ').trim().slice(0, 48)}`))
  }

  // ---- cached rows: agents and instance quarantines ----
  //
  // The hot paths read the same agent rows (and the absence of a quarantine) on every accept,
  // claim and resolve. This process is the database's only writer, and every statement that
  // writes `agents` or `instance_quarantines` empties both caches before it runs (#watch), so a
  // row read from the cache is the row SQLite would return at that point of the write queue:
  // a kill committed ahead of a send is seen by it, whichever statement wrote it. A write that
  // rolls back (a rejected write's savepoint, a failed commit) empties them again, since rows
  // read after its writes may not survive it. Cached rows are frozen: nobody edits them in place.

  readonly #agentsById = new Map<string, AgentRow>()
  readonly #agentsByAddress = new Map<string, AgentRow>()
  readonly #quarantines = new Map<string, InstanceQuarantineRow | null>()
  /** Bumped by every statement that writes a cached table (see #watch). */
  #cachedWrites = 0

  #agentById(addressId: string): AgentRow | undefined {
    const hit = this.#agentsById.get(addressId)
    if (hit) return hit
    return this.#remember(this.#q.agentById.get(addressId) as AgentRow | undefined)
  }

  #agentByAddress(address: string): AgentRow | undefined {
    const hit = this.#agentsByAddress.get(address)
    if (hit) return hit
    return this.#remember(this.#q.agentByAddress.get(address) as AgentRow | undefined)
  }

  #remember(row: AgentRow | undefined): AgentRow | undefined {
    if (!row) return row
    if (this.#agentsById.size >= CACHE_LIMIT) this.#dropCaches()
    Object.freeze(row)
    this.#agentsById.set(row.address_id, row)
    this.#agentsByAddress.set(row.address, row)
    return row
  }

  #quarantine(addressId: string, instanceId: string): InstanceQuarantineRow | null {
    const key = `${addressId}\n${instanceId}`
    const hit = this.#quarantines.get(key)
    if (hit !== undefined) return hit
    const row = (this.#q.quarantineOf.get(addressId, instanceId) as InstanceQuarantineRow | undefined) ?? null
    if (this.#quarantines.size >= CACHE_LIMIT) this.#quarantines.clear()
    this.#quarantines.set(key, row === null ? null : Object.freeze(row))
    return row
  }

  #dropCaches(): void {
    this.#agentsById.clear()
    this.#agentsByAddress.clear()
    this.#quarantines.clear()
  }

  /** A statement that writes a cached table empties the caches each time before it runs. */
  #watch<S extends Statement>(stmt: S): S {
    if (!WRITES_CACHED.test(stmt.source)) return stmt
    const target = stmt as unknown as Record<'run' | 'get' | 'all' | 'iterate', (...args: unknown[]) => unknown>
    for (const method of ['run', 'get', 'all', 'iterate'] as const) {
      const original = target[method]
      target[method] = (...args: unknown[]) => {
        this.#cachedWrites += 1
        this.#dropCaches()
        return original.apply(stmt, args)
      }
    }
    return stmt
  }

  /** Runs `fn` in a savepoint; if it rolls back after writing a cached table, the caches go. */
  #savepoint<T>(fn: () => T): T {
    const writes = this.#cachedWrites
    this.#counter.transactionStatements += 2
    try {
      return this.#db.transaction(fn)()
    } catch (error) {
      if (this.#cachedWrites !== writes) this.#dropCaches()
      throw error
    }
  }

  stats(): StoreStats {
    return this.#counter.snapshot()
  }

  async close(): Promise<void> {
    this.#flush()
    if (this.#db.open) this.#db.close()
  }

  async ping(): Promise<void> {
    if (!this.#db.open) throw new GatewayError('store_unavailable', 'the store is closed')
  }

  // ---- keys ----
  async insertKey(key: Omit<KeyRow, 'address_id'>, now: number, audit: (row: KeyRow) => AuditDraft): Promise<KeyRow> {
    return this.#write((changes) => {
      const agent = key.address === null ? null : this.#ensureAgent(key.address, now, true, changes)
      const row: KeyRow = { ...key, address_id: agent?.address_id ?? null }
      this.#q.insertKey.run(stripAddress(row))
      this.#audit(audit(row))
      return row
    })
  }

  async findKeyByHash(keyHash: string): Promise<KeyRow | undefined> {
    return this.#q.keyByHash.get(keyHash) as KeyRow | undefined
  }

  async getKey(keyId: string): Promise<KeyRow | undefined> {
    return this.#q.keyById.get(keyId) as KeyRow | undefined
  }

  async listKeys(): Promise<KeyRow[]> {
    return this.#q.listKeys.all() as KeyRow[]
  }

  async revokeKey(
    keyId: string,
    now: number,
    guard: (key: KeyRow, otherAdmins: number) => void,
    audit: (key: KeyRow) => AuditDraft,
  ): Promise<KeyRow> {
    return this.#write((changes) => {
      const key = this.#q.keyById.get(keyId) as KeyRow | undefined
      if (!key) throw new GatewayError('not_found', `key ${keyId} not found`)
      const admins = (this.#q.countActive.get('admin') as { n: number }).n
      const others = key.role === 'admin' && key.revoked_at === null ? admins - 1 : admins
      guard(key, others)
      if (key.revoked_at === null) {
        this.#q.revokeKey.run(now, keyId)
        changes.push({ type: 'key.revoked', key_id: keyId })
        const revoked = { ...key, revoked_at: now }
        this.#audit(audit(revoked))
        return revoked
      }
      return key
    })
  }

  async ensureAdminKey(key: KeyRow): Promise<'created' | 'existing'> {
    return this.#write(() => {
      const existing = this.#q.keyByHash.get(key.key_hash) as KeyRow | undefined
      this.#q.insertKeyIfNew.run(stripAddress(key))
      return existing ? 'existing' : 'created'
    })
  }

  async createFirstAdminKey(key: KeyRow, audit: AuditDraft): Promise<boolean> {
    return this.#write(() => {
      if ((this.#q.countActive.get('admin') as { n: number }).n > 0) return false
      this.#q.insertKey.run(stripAddress(key))
      this.#audit(audit)
      return true
    })
  }

  async countActiveKeys(role: Role): Promise<number> {
    return (this.#q.countActive.get(role) as { n: number }).n
  }

  // ---- agents ----
  async getAgentById(addressId: string): Promise<AgentRow | undefined> {
    return this.#agentById(addressId)
  }

  async getAgentByAddress(address: string): Promise<AgentRow | undefined> {
    return this.#agentByAddress(address)
  }

  async registerAgent(agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
    return this.#write((changes) => {
      // A row that exists only as a recipient of intents is registered now (keeping its id).
      const row = this.#q.insertAgent.run(agent).changes === 1 ? agent : (this.#q.claimUnregistered.get(agent) as AgentRow | undefined)
      if (row === undefined) return undefined
      this.#meshEvent({ ...event, address_id: row.address_id }, changes)
      return this.#appeared(row, agent.created_at, changes)
    })
  }

  async selectAgents(selection: AgentSelection): Promise<AgentRow[]> {
    return this.#select(selection)
  }

  #select(selection: AgentSelection): AgentRow[] {
    const rows = this.#q.agentsByPrefix.all(selection.prefix.length, selection.prefix) as AgentRow[]
    return rows.filter(selection.matches)
  }

  /** A new or relabelled agent under a standing fleet kill is killed in the same transaction. */
  /** An agent row that was just written: it takes the default policies and any standing fleet kill. */
  #appeared(row: AgentRow, now: number, changes: Change[]): AgentRow {
    const adopted = (this.#q.adoptDefaults.get(row.address_id) as AgentRow | undefined) ?? row
    return this.#applyStanding(adopted, now, changes)
  }

  #applyStanding(row: AgentRow, now: number, changes: Change[]): AgentRow {
    if (row.killed_at !== null) return row
    const standing = this.#q.standingFleetKills.all() as FleetKillRow[]
    if (standing.length === 0) return row
    const kill = standingKillRule(row, standing, now)
    if (kill === null) return row
    const after = this.#q.killAgent.get({ address_id: row.address_id, now, reason: kill.reason, actor: kill.actor }) as AgentRow
    return this.#recordKill(row, after, { policy_id: null, record: kill.record }, changes)
  }

  async updateAgent(input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return this.#write((changes) => {
      const before = this.#agentById(input.address_id)
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const patch = input.build(before)
      if (patch === null) return { agent: before, changed: false }
      const after = this.#q.updateAgent.get({ ...patch, address_id: before.address_id }) as AgentRow
      const { audit, event } = input.record(before, after)
      this.#audit(audit)
      this.#meshEvent(event, changes)
      return { agent: after.labels === before.labels ? after : this.#applyStanding(after, input.now, changes), changed: true }
    })
  }

  async listAgents(limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
    if (health === null) return this.#q.listAgents.all(limit) as AgentRow[]
    if (health === 'killed') return this.#q.listAgentsKilled.all(limit) as AgentRow[]
    return this.#q.listAgentsByHealth.all(health, limit) as AgentRow[]
  }

  async listAgentsPage(query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
    const where: string[] = []
    const params: unknown[] = []
    if (query.health === 'killed') where.push('a.killed_at IS NOT NULL')
    else if (query.health !== null) {
      where.push('a.killed_at IS NULL AND a.health_status = ?')
      params.push(query.health)
    }
    if (query.search !== null) {
      // LIKE is case-insensitive (ASCII) in SQLite.
      where.push("(a.address LIKE ? ESCAPE '\\' OR a.display_name LIKE ? ESCAPE '\\')")
      const pattern = containsPattern(query.search)
      params.push(pattern, pattern)
    }
    const filter = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`
    const total = (this.#adhoc(`SELECT count(*) AS n FROM agents a ${filter}`).get(...params) as { n: number }).n
    const join = sortsByCounters(query)
      ? `LEFT JOIN (SELECT address_id, sum(sent) + sum(received) AS intents, sum(cost_usd) AS cost FROM counters_day
           WHERE day >= ? AND day <= ? GROUP BY address_id) c ON c.address_id = a.address_id`
      : ''
    const agents = this.#db
      .prepare(`SELECT a.* FROM agents a ${join} ${filter} ORDER BY ${agentOrderBy(query)} LIMIT ? OFFSET ?`)
      .all(...(join === '' ? [] : [query.from_day, query.to_day]), ...params, query.limit, query.offset) as AgentRow[]
    return { agents, total }
  }

  /** The agent row, created if missing; `register` marks it registered (a recipient alone is not). */
  #ensureAgent(address: string, now: number, register: boolean, changes: Change[]): AgentRow {
    const existing = this.#agentByAddress(address)
    if (existing) {
      if (!register || existing.registered_at !== null) return existing
      this.#q.markRegistered.run(now, existing.address_id)
      return { ...existing, registered_at: now }
    }
    const row = { ...blankAgent(address, newAddressId(), now), registered_at: register ? now : null }
    this.#q.insertAgent.run(row)
    return this.#appeared(row, now, changes)
  }

  // ---- intents ----
  async acceptIntent(input: AcceptIntentInput): Promise<AcceptIntentResult> {
    return this.#write((changes) => {
      const { intent, now } = input
      if (input.idempotency) {
        const from = this.#agentByAddress(intent.from_agent)
        const prior = from
          ? (this.#q.idemGet.get(from.address_id, input.idempotency.key) as
              | { request_hash: string; intent_id: string }
              | undefined)
          : undefined
        if (prior) {
          if (prior.request_hash !== input.idempotency.request_hash) input.onIdempotencyMismatch()
          const original = this.#q.intentById.get(prior.intent_id) as IntentRow | undefined
          if (original) return { intent: original, replayed: true }
        }
      }
      const row = this.#accept(intent, input.actor, now, input.decide, changes, input.from_instance ?? null)
      if (input.idempotency) {
        this.#q.idemPut.run(row.from_address_id, input.idempotency.key, input.idempotency.request_hash, row.intent_id, now)
      }
      return { intent: row, replayed: false }
    })
  }

  /** Reads both agent rows, lets core decide, writes the intent and its first two events. */
  #accept(
    intent: NewIntent,
    actor: string,
    now: number,
    decide: AcceptDecision,
    changes: Change[],
    fromInstance: string | null = null,
  ): IntentRow {
    const from = this.#ensureAgent(intent.from_agent, now, true, changes)
    const to = this.#ensureAgent(intent.to_agent, now, false, changes)
    const parties: Parties = {
      from,
      to,
      from_quarantine: fromInstance === null ? null : this.#quarantine(from.address_id, fromInstance),
      from_policies: from.policy_version === 0 ? [] : (this.#q.effectivePolicies.all(from.address_id) as PolicyRow[]),
      to_policies: to.policy_version === 0 ? [] : (this.#q.effectivePolicies.all(to.address_id) as PolicyRow[]),
      // Counters are read only for a party that may have policies: without any, nothing reads them.
      from_counters: from.policy_version === 0 ? zeroCounters(now) : this.#counters(from.address_id, now),
      to_counters: to.policy_version === 0 ? zeroCounters(now) : this.#counters(to.address_id, now),
    }
    for (const event of decide(parties) ?? []) this.#meshEvent(event, changes)
    // Counted in the accepting transaction: the single writer makes read-decide-increment atomic.
    const day = parties.from_counters.day
    const hour = parties.from_counters.hour
    this.#q.countAcceptDay.run({ from: from.address_id, to: to.address_id, day })
    this.#q.countAcceptHour.run({ from: from.address_id, to: to.address_id, hour })
    const row = this.#q.insertIntent.get({
      ...intent,
      from_address_id: parties.from.address_id,
      to_address_id: parties.to.address_id,
      now,
    }) as IntentRow
    this.#q.insertEvent.run(intent.intent_id, 1, 'intent.created', 'SUBMITTED', actor, now, null)
    this.#q.insertEvent.run(intent.intent_id, 2, 'intent.submitted', 'SUBMITTED', actor, now, null)
    changes.push({ type: 'intent.available', address_id: parties.to.address_id })
    return row
  }

  async getIntent(intentId: string): Promise<IntentRow | undefined> {
    return this.#q.intentById.get(intentId) as IntentRow | undefined
  }

  async listIntentEvents(intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
    return this.#q.eventsSince.all(intentId, since, limit) as IntentEventRow[]
  }

  async listIntents(query: IntentListQuery): Promise<IntentRow[]> {
    const where: string[] = []
    const params: unknown[] = []
    if (query.direction === 'sent') where.push('from_address_id = ?')
    else if (query.direction === 'received') where.push('to_address_id = ?')
    else where.push('(from_address_id = ? OR to_address_id = ?)')
    params.push(query.address_id)
    if (query.direction === 'both') params.push(query.address_id)
    if (query.status) {
      where.push('status = ?')
      params.push(query.status)
    }
    if (query.after) {
      where.push('seqno < coalesce((SELECT seqno FROM intents WHERE intent_id = ?), 0)')
      params.push(query.after)
    }
    params.push(query.limit)
    const sql = `SELECT * FROM intents WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT ?`
    return this.#adhoc(sql).all(...params) as IntentRow[]
  }

  async claimDeliveries(input: ClaimInput): Promise<ClaimResult> {
    return this.#write((changes) => {
      const recipient = this.#agentById(input.address_id)
      if (!recipient) throw new GatewayError('not_found', 'agent not found')
      input.decide(recipient, this.#quarantine(input.address_id, input.instance_id))
      const inFlight = (this.#q.inFlight.get(input.address_id, input.instance_id) as { n: number }).n
      const room = Math.min(input.max_in_flight - inFlight, input.max_batch)
      if (room <= 0) return { deliveries: [], has_room: false, next_due_at: null }
      // A literal LIMIT: a bound one makes SQLite re-prepare this hot statement on every run.
      const candidates: IntentRow[] = []
      let due: number | null = null
      for (const row of this.#q.queued.iterate({ address_id: input.address_id, now: input.now }) as IterableIterator<IntentRow>) {
        if (row.available_at > input.now) {
          // During a paced resume more held work becomes due later: tell the stream when.
          due = row.available_at
          break
        }
        candidates.push(row)
        if (candidates.length >= room) break
      }
      if (candidates.length === 0) return { deliveries: [], has_room: true, next_due_at: due }
      const last = (this.#q.nextSeq.get(input.address_id, candidates.length) as { last_seq: number }).last_seq
      let seq = last - candidates.length
      const deliveries: Delivery[] = []
      for (const candidate of candidates) {
        seq += 1
        const leased = this.#q.lease.get({
          intent_id: candidate.intent_id,
          seq,
          instance: input.instance_id,
          expires: input.now + input.lease_ms,
          lease_ms: input.lease_ms,
          now: input.now,
        }) as IntentRow
        const eventType = leased.delivery_attempt > 1 ? 'intent.redelivered' : 'intent.delivered'
        this.#q.insertEvent.run(
          leased.intent_id,
          leased.last_event_seq,
          eventType,
          'DELIVERED',
          'system',
          input.now,
          JSON.stringify({ instance_id: input.instance_id, delivery_seq: seq, delivery_attempt: leased.delivery_attempt }),
        )
        changes.push({ type: 'intent.event', intent_id: leased.intent_id })
        deliveries.push({ intent: leased, seq, event_type: eventType })
      }
      const hasRoom = inFlight + deliveries.length < input.max_in_flight
      return { deliveries, has_room: hasRoom, next_due_at: hasRoom ? due : null }
    })
  }

  async leasedDeliveries(addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]> {
    return this.#q.leasedSince.all(addressId, instanceId, since, now) as IntentRow[]
  }

  async updateIntent(input: IntentUpdateInput): Promise<IntentUpdateResult> {
    return this.#write((changes) => {
      const intent = this.#q.intentById.get(input.intent_id) as IntentRow | undefined
      if (!intent) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
      const recipient = this.#agentById(intent.to_address_id) as AgentRow
      const sender = this.#agentById(intent.from_address_id) as AgentRow
      const instanceId = input.instance_id ?? null
      const quarantine = instanceId === null ? null : this.#quarantine(intent.to_address_id, instanceId)
      const change = input.decide({ intent, recipient, sender, quarantine })
      // The row as written (and its new event seq), instead of reading it again.
      const updated = this.#q.updateIntent.get({
        event: change.event_type ? 1 : 0,
        intent_id: intent.intent_id,
        status: change.status,
        delivery_state: change.delivery_state,
        lease_expires_at: change.lease_expires_at,
        result: change.result ?? null,
        error: change.error ?? null,
        cost_usd: change.cost_usd ?? null,
        now: input.now,
      }) as IntentRow
      let event: IntentEventRow | null = null
      if (change.event_type) {
        const seq = updated.last_event_seq
        event = {
          intent_id: intent.intent_id,
          seq,
          event_type: change.event_type,
          status: change.status,
          actor: input.actor,
          at: input.now,
          details: change.event_details ? JSON.stringify(change.event_details) : null,
        }
        this.#q.insertEvent.run(event.intent_id, seq, event.event_type, event.status, event.actor, event.at, event.details)
        changes.push({ type: 'intent.event', intent_id: intent.intent_id })
      }
      if (intent.delivery_state === 'leased' && change.delivery_state !== 'leased' && intent.lease_instance) {
        changes.push({ type: 'slot.freed', address_id: intent.to_address_id, instance_id: intent.lease_instance })
      }
      if (change.cost_usd && change.cost_usd > 0 && input.cost_rule) {
        this.#applyCost(recipient, change.cost_usd, input.now, input.cost_rule, changes)
      }
      let followUp: IntentUpdateResult['follow_up'] = null
      if (change.follow_up) {
        const { intent: next, decide } = change.follow_up
        // A rejected follow-up (e.g. reply_to agent killed) must not undo the resolve: savepoint.
        try {
          const row = this.#savepoint(() => this.#accept(next, input.actor, input.now, decide, changes))
          followUp = { accepted: true, intent: row }
        } catch (error) {
          followUp = { accepted: false, error }
        }
      }
      return { intent: updated, event, follow_up: followUp }
    })
  }

  async expireLeases(now: number, limit: number): Promise<ExpireLeasesResult> {
    return this.#write((changes) => {
      const rows = this.#q.expired.all(now, limit) as IntentRow[]
      let requeued = 0
      let failed = 0
      for (const row of rows) {
        if (TERMINAL.has(row.status)) continue
        if (row.delivery_attempt - row.kill_dropped >= row.max_delivery_attempts) {
          const seq = (this.#q.bumpEventSeq.get(row.intent_id) as { last_event_seq: number }).last_event_seq
          const error = JSON.stringify({
            code: 'delivery_failed',
            message: `not resolved after ${row.delivery_attempt} delivery attempts`,
          })
          this.#q.failExpired.run({ intent_id: row.intent_id, error, now })
          this.#q.insertEvent.run(row.intent_id, seq, 'intent.delivery_failed', 'FAILED', 'system', now, error)
          failed += 1
        } else if ((this.#agentById(row.to_address_id) as AgentRow).killed_at !== null) {
          // The recipient was killed meanwhile: the work is held for its resume, not requeued.
          const r = this.#q.hold.get({ intent_id: row.intent_id, now }) as { last_event_seq: number; status: string }
          this.#q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, 'system', now, null)
        } else {
          // Back in the queue; the next delivery records `intent.redelivered` with a new seq.
          this.#q.requeue.run({ intent_id: row.intent_id, now })
          changes.push({ type: 'intent.available', address_id: row.to_address_id })
          requeued += 1
        }
        changes.push({ type: 'intent.event', intent_id: row.intent_id })
        if (row.lease_instance) {
          changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
        }
      }
      return { requeued, failed }
    })
  }

  async timeOutIntents(now: number, limit: number): Promise<number> {
    return this.#write((changes) => {
      type Due = { intent_id: string; to_address_id: string; lease_instance: string | null; delivery_state: string }
      const rows = this.#q.pastDeadline.all(now, limit) as Due[]
      for (const row of rows) {
        const { last_event_seq } = this.#q.timeOut.get({ intent_id: row.intent_id, now }) as { last_event_seq: number }
        this.#q.insertEvent.run(row.intent_id, last_event_seq, 'intent.timed_out', 'TIMED_OUT', 'system', now, null)
        changes.push({ type: 'intent.event', intent_id: row.intent_id })
        if (row.delivery_state === 'leased' && row.lease_instance) {
          changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
        }
      }
      return rows.length
    })
  }

  async purge(before: number, idempotencyBefore: number, limit: number): Promise<number> {
    return this.#write(() => {
      const ids = this.#q.purgeIntents.all(before, limit) as { intent_id: string }[]
      for (const { intent_id } of ids) this.#q.purgeEvents.run(intent_id)
      this.#q.purgeIdem.run(idempotencyBefore)
      return ids.length
    })
  }
  // ---- kill switch ----
  async killAgent(input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return this.#write((changes) => {
      const before = this.#agentById(input.address_id)
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      if (input.guard && !input.guard(before)) return { agent: before, changed: false }
      const after = this.#q.killAgent.get({
        address_id: input.address_id,
        now: input.now,
        reason: input.reason,
        actor: input.actor,
      }) as AgentRow | undefined
      if (!after) return { agent: before, changed: false }
      return { agent: this.#recordKill(before, after, input, changes), changed: true }
    })
  }

  /** The rest of a kill's transaction once the agent row flipped: audit, event, notification. */
  #recordKill(before: AgentRow, after: AgentRow, input: Pick<KillInput, 'policy_id' | 'record'>, changes: Change[]): AgentRow {
    if (input.policy_id !== null) this.#q.markAutoKill.run(input.policy_id, after.address_id)
    const { audit, event } = input.record(before, after)
    this.#audit(audit)
    this.#meshEvent(event, changes)
    changes.push({ type: 'agent.killed', address_id: after.address_id })
    return { ...after, auto_kill_policy_id: input.policy_id ?? after.auto_kill_policy_id }
  }

  async holdBacklog(input: HoldInput): Promise<{ held: number; canceled: number }> {
    return this.#write((changes) => {
      const agent = this.#agentById(input.address_id)
      // Resumed in between: nothing to hold any more.
      if (!agent || agent.killed_at === null) return { held: 0, canceled: 0 }
      let held = 0
      let canceled = 0
      const details = JSON.stringify({ reason: input.reason, killed_agent: agent.address })
      type Holdable = { intent_id: string; delivery_state: string; lease_instance: string | null; status: string }
      const inbound = this.#q.holdableTo.all({ id: input.address_id, limit: input.limit }) as Holdable[]
      for (const row of inbound) {
        const r = this.#q.hold.get({ intent_id: row.intent_id, now: input.now }) as { last_event_seq: number; status: string }
        this.#q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, input.actor, input.now, details)
        changes.push({ type: 'intent.event', intent_id: row.intent_id })
        held += 1
      }
      const outbound = this.#q.holdableFrom.all(input.address_id, input.limit - inbound.length) as Holdable[]
      for (const row of outbound) {
        if (input.cancel_pending) {
          const error = JSON.stringify({ code: 'canceled', message: 'canceled by the kill of its sender', reason: input.reason })
          const r = this.#q.cancelHeld.get({ intent_id: row.intent_id, now: input.now, error }) as { last_event_seq: number }
          this.#q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.canceled', 'CANCELED', input.actor, input.now, details)
          canceled += 1
        } else {
          const r = this.#q.hold.get({ intent_id: row.intent_id, now: input.now }) as { last_event_seq: number; status: string }
          this.#q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, input.actor, input.now, details)
          held += 1
        }
        changes.push({ type: 'intent.event', intent_id: row.intent_id })
      }
      return { held, canceled }
    })
  }

  async resumeAgent(input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
    return this.#write((changes) => {
      const before = this.#agentById(input.address_id)
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const resumed = this.#resumeOne(before, input, changes)
      if (resumed === null) return { agent: before, changed: false, redelivering: 0 }
      this.#audit(resumed.audit)
      return { agent: resumed.agent, redelivering: resumed.redelivering, changed: true }
    })
  }

  /** Clears one agent's kill and releases its held work (paced); null when it was not killed. */
  #resumeOne(
    before: AgentRow,
    input: Pick<ResumeInput, 'now' | 'rate_per_second' | 'record'>,
    changes: Change[],
  ): { agent: AgentRow; redelivering: number; audit: AuditDraft } | null {
    {
      const after = this.#q.resumeAgent.get({ address_id: before.address_id, now: input.now }) as AgentRow | undefined
      if (!after) return null
      if (before.auto_kill_policy_id !== null) {
        // The policy that fired counts from here on, so the same window does not re-kill at once.
        const baseline = { policy_id: before.auto_kill_policy_id, ...this.#counters(before.address_id, input.now) }
        this.#q.setBaseline.run(JSON.stringify(baseline), before.address_id)
      }
      const rows = this.#q.releasable.all({ id: before.address_id }) as { intent_id: string; to_address_id: string }[]
      // Paced in the store (available_at), so every replica honours the same budget.
      const spacing = 1000 / input.rate_per_second
      const recipients = new Set<string>()
      rows.forEach((row, i) => {
        this.#q.release.run({ intent_id: row.intent_id, at: input.now + Math.floor(i * spacing), now: input.now })
        recipients.add(row.to_address_id)
      })
      const { audit, event } = input.record(before, after, rows.length)
      this.#meshEvent(event, changes)
      changes.push({ type: 'agent.resumed', address_id: before.address_id })
      for (const id of recipients) changes.push({ type: 'intent.available', address_id: id })
      return { agent: after, redelivering: rows.length, audit }
    }
  }

  async quarantineInstance(input: QuarantineInput): Promise<QuarantineResult> {
    return this.#write((changes) => {
      const agent = this.#agentById(input.address_id)
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const inserted = this.#q.insertQuarantine.get({
        address_id: input.address_id,
        instance_id: input.instance_id,
        quarantined_at: input.now,
        actor: input.actor,
        reason: input.reason,
      }) as InstanceQuarantineRow | undefined
      if (!inserted) {
        const existing = this.#quarantine(input.address_id, input.instance_id) as InstanceQuarantineRow
        return { agent, quarantine: existing, changed: false, requeued: 0 }
      }
      const requeued = this.#q.requeueInstance.all({
        address_id: input.address_id,
        instance_id: input.instance_id,
        now: input.now,
      }) as { intent_id: string }[]
      const { audit, event } = input.record(agent, inserted, requeued.length)
      this.#audit(audit)
      this.#meshEvent(event, changes)
      // Published in this order after the commit: the instance's streams are cut first, so the
      // wake-up of intent.available goes to a sibling.
      changes.push({ type: 'instance.quarantined', address_id: input.address_id, instance_id: input.instance_id })
      if (requeued.length > 0) changes.push({ type: 'intent.available', address_id: input.address_id })
      return { agent, quarantine: inserted, changed: true, requeued: requeued.length }
    })
  }

  async liftQuarantine(input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
    return this.#write((changes) => {
      const agent = this.#agentById(input.address_id)
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const lifted = this.#q.deleteQuarantine.get(input.address_id, input.instance_id) as InstanceQuarantineRow | undefined
      if (!lifted) return { agent, changed: false, lifted: null }
      const { audit, event } = input.record(agent, lifted)
      this.#audit(audit)
      this.#meshEvent(event, changes)
      return { agent, changed: true, lifted }
    })
  }

  async getQuarantine(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
    return this.#quarantine(addressId, instanceId) ?? undefined
  }

  async listQuarantines(addressId: string): Promise<InstanceQuarantineRow[]> {
    return this.#q.quarantinesOf.all(addressId) as InstanceQuarantineRow[]
  }

  async killFleet(input: FleetKillInput): Promise<FleetKillResult> {
    return this.#write((changes) => {
      const matching = this.#select(input.selection)
      input.guard(matching)
      const fk = input.fleet_kill
      const flipped: [AgentRow, AgentRow][] = []
      const already: AgentRow[] = []
      for (const before of matching) {
        const after = this.#q.killAgent.get({ address_id: before.address_id, now: input.now, reason: fk.reason, actor: fk.actor }) as
          | AgentRow
          | undefined
        if (after) flipped.push([before, after])
        else already.push(before)
      }
      this.#q.insertFleetKill.run(fk)
      this.#audit(input.summary(flipped.map(([, a]) => a), already))
      const killed = flipped.map(([b, a]) => this.#recordKill(b, a, { policy_id: null, record: input.record }, changes))
      return { killed, already_killed: already }
    })
  }

  async resumeFleet(input: FleetResumeInput): Promise<FleetResumeResult> {
    return this.#write((changes) => {
      const matching = this.#select(input.selection)
      input.guard(matching)
      const ended = (this.#q.standingFleetKills.all() as FleetKillRow[])
        .filter(input.ends)
        .map((fk) => this.#q.endFleetKill.get(input.now, input.actor, fk.fleet_kill_id) as FleetKillRow)
      const killed = matching.filter((a) => a.killed_at !== null)
      // The summary entry first, then one per agent (as a fleet kill writes them).
      const resumed = killed.flatMap((before) => this.#resumeOne(before, input, changes) ?? [])
      this.#audit(input.summary(resumed, ended))
      for (const r of resumed) this.#audit(r.audit)
      return { resumed: resumed.map(({ agent, redelivering }) => ({ agent, redelivering })), ended }
    })
  }

  async listFleetKills(standing: boolean, limit: number): Promise<FleetKillRow[]> {
    if (standing) return (this.#q.standingFleetKills.all() as FleetKillRow[]).reverse().slice(0, limit)
    return this.#q.listFleetKills.all(limit) as FleetKillRow[]
  }

  // ---- audit and mesh events ----
  /** Appends one chained entry; callers are inside a write transaction (the single writer serializes appends). */
  #audit(draft: AuditDraft): AuditRow {
    const head = this.#q.auditHead.get() as { seq: number; hash: string } | undefined
    const seq = (head?.seq ?? 0) + 1
    const prev_hash = head?.hash ?? '0'.repeat(64)
    const row: AuditRow = {
      seq,
      at: draft.at,
      actor: draft.actor,
      action: draft.action,
      target: draft.target,
      reason: draft.reason,
      before: draft.before === undefined || draft.before === null ? null : JSON.stringify(draft.before),
      after: draft.after === undefined || draft.after === null ? null : JSON.stringify(draft.after),
      prev_hash,
      hash: this.#hashAudit(prev_hash, { ...draft, seq }),
    }
    this.#q.insertAudit.run(row)
    return row
  }

  /** A mesh event and, in the same transaction, its alert in the outbox of every matching webhook. */
  #meshEvent(draft: MeshEventDraft, changes: Change[]): MeshEventRow {
    const row = this.#q.insertMeshEvent.get({
      ...draft,
      details: draft.details === null ? null : JSON.stringify(draft.details),
    }) as MeshEventRow
    changes.push({ type: 'mesh.event', seqno: row.seqno })
    for (const hook of this.#q.activeWebhooks.all() as WebhookRow[]) {
      const alertId = `alt_${randomBase62(20)}`
      const alert = this.#alertFor(draft, alertId)
      if (!alert) break
      const types = hook.event_types === null ? null : (JSON.parse(hook.event_types) as string[])
      if (types && !types.includes(alert.type)) continue
      this.#q.insertAlert.run(alertId, hook.webhook_id, alert.type, alert.body, draft.created_at, draft.created_at)
      changes.push({ type: 'alert.queued' })
    }
    return row
  }

  async appendAudit(draft: AuditDraft): Promise<AuditRow> {
    return this.#write(() => this.#audit(draft))
  }

  async listAudit(query: AuditQuery): Promise<AuditRow[]> {
    const where = ['seq > ?']
    const params: unknown[] = [query.after_seq]
    if (query.action_prefix !== null) {
      where.push("action LIKE ? ESCAPE '\\'")
      params.push(`${query.action_prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
    }
    if (query.target !== null) {
      where.push('target = ?')
      params.push(query.target)
    }
    params.push(query.limit)
    return this.#adhoc(`SELECT * FROM audit_log WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...params) as AuditRow[]
  }

  async appendMeshEvent(draft: MeshEventDraft): Promise<MeshEventRow> {
    return this.#write((changes) => this.#meshEvent(draft, changes))
  }

  async listMeshEvents(query: MeshEventQuery): Promise<MeshEventRow[]> {
    const where: string[] = ['1 = 1']
    const params: unknown[] = []
    if (query.event_type !== null) {
      where.push('event_type = ?')
      params.push(query.event_type)
    }
    if (query.address !== null) {
      where.push('address = ?')
      params.push(query.address)
    }
    if (query.before_seqno !== null) {
      where.push('seqno < ?')
      params.push(query.before_seqno)
    }
    params.push(query.limit)
    return this.#db
      .prepare(`SELECT * FROM mesh_events WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT ?`)
      .all(...params) as MeshEventRow[]
  }

  async meshEventsAfter(afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
    return this.#q.meshAfter.all(afterSeqno, limit) as MeshEventRow[]
  }

  // ---- policies and counters ----
  #counters(addressId: string, now: number): AgentCounters {
    const { day, hour } = zeroCounters(now)
    const d = this.#q.dayRow.get(addressId, day) as { sent: number; received: number; egress: number; cost_usd: number } | undefined
    const h = this.#q.hourRow.get(addressId, hour) as { sent: number; received: number; egress: number } | undefined
    return {
      day,
      hour,
      sent_hour: h?.sent ?? 0,
      sent_day: d?.sent ?? 0,
      received_hour: h?.received ?? 0,
      received_day: d?.received ?? 0,
      egress_hour: h?.egress ?? 0,
      egress_day: d?.egress ?? 0,
      cost_day: d?.cost_usd ?? 0,
    }
  }

  /** Counts reported cost for an agent and applies core's budget rule, in the caller's transaction. */
  #applyCost(agent: AgentRow, amount: number, now: number, rule: CostRule, changes: Change[]): void {
    const before = this.#counters(agent.address_id, now)
    this.#q.countDay.run({ address_id: agent.address_id, day: before.day, sent: 0, received: 0, cost: amount })
    this.#q.costHour.run(agent.address_id, before.hour, amount)
    const policies = agent.policy_version === 0 ? [] : (this.#q.effectivePolicies.all(agent.address_id) as PolicyRow[])
    if (policies.length === 0) return
    const outcome = rule({
      agent,
      policies,
      counters: { ...before, cost_day: before.cost_day + amount },
      cost_before: before.cost_day,
      now,
    })
    for (const t of outcome.thresholds) {
      if (this.#q.budgetAlert.run(t.policy_id, before.day, t.percent, now).changes === 1) {
        this.#meshEvent(
          {
            address_id: agent.address_id,
            address: agent.address,
            event_type: 'budget.threshold',
            details: t.details,
            actor_id: `policy:${t.policy_id}`,
            created_at: now,
          },
          changes,
        )
      }
    }
    if (outcome.kill) {
      const actor = `policy:${outcome.kill.policy_id}`
      const after = this.#q.killAgent.get({ address_id: agent.address_id, now, reason: outcome.kill.reason, actor }) as
        | AgentRow
        | undefined
      if (after) {
        this.#recordKill(agent, after, { policy_id: outcome.kill.policy_id, record: outcome.kill.record }, changes)
      }
    }
  }

  async listPolicies(addressId: string): Promise<PolicyRow[]> {
    return this.#q.policiesOf.all(addressId) as PolicyRow[]
  }

  // ---- egress ----
  async admitEgress(input: EgressAdmitInput): Promise<EgressCallRow> {
    return this.#write(() => {
      const { call } = input
      const agent = this.#agentById(call.address_id)
      if (!agent) throw new GatewayError('not_found', 'agent not found')
      const policies = agent.policy_version === 0 ? [] : (this.#q.effectivePolicies.all(agent.address_id) as PolicyRow[])
      const reserved =
        policies.length === 0
          ? 0
          : (this.#q.egressReserved.get(call.address_id, call.day) as { n: number }).n
      // The single writer makes read (spent + reserved) → decide → reserve atomic.
      input.decide({ agent, policies, counters: this.#counters(agent.address_id, input.now), reserved_micro: reserved })
      this.#q.egressInsert.run(call)
      const at = new Date(input.now).toISOString()
      this.#q.countEgressDay.run(call.address_id, at.slice(0, 10))
      this.#q.countEgressHour.run(call.address_id, at.slice(0, 13))
      return call
    })
  }

  async settleEgress(input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
    return this.#write((changes) => {
      const call = this.#q.egressSettle.get(input.cost_micro, input.outcome, input.usage, input.status, input.now, input.call_id) as
        | EgressCallRow
        | undefined
      if (!call) return { call: this.#q.egressById.get(input.call_id) as EgressCallRow | undefined, changed: false }
      // Charged to the day it was reserved on, so that day's `spent + reserved` never grows.
      if (input.cost_micro > 0) {
        const agent = this.#agentById(call.address_id) as AgentRow
        this.#applyCost(agent, input.cost_micro / 1_000_000, call.started_at, input.cost_rule, changes)
      }
      return { call, changed: true }
    })
  }

  async overdueEgressCalls(now: number, limit: number): Promise<EgressCallRow[]> {
    return this.#q.egressOverdue.all(now, limit) as EgressCallRow[]
  }

  async listEgressCalls(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
    const where: string[] = []
    const params: unknown[] = []
    if (addressId !== null) {
      where.push('address_id = ?')
      params.push(addressId)
    }
    if (before !== null) {
      where.push('seqno < coalesce((SELECT seqno FROM egress_calls WHERE call_id = ?), 0)')
      params.push(before)
    }
    params.push(limit)
    const sql = `SELECT * FROM egress_calls ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seqno DESC LIMIT ?`
    return (this.#adhoc(sql).all(...params) as (EgressCallRow & { seqno?: number })[]).map(({ seqno: _s, ...row }) => row)
  }

  async listDefaultPolicies(): Promise<PolicyRow[]> {
    return this.#q.defaultPolicies.all() as PolicyRow[]
  }

  async listPoliciesOf(addressIds: readonly string[]): Promise<PolicyRow[]> {
    return this.#q.policiesOfMany.all(JSON.stringify(addressIds)) as PolicyRow[]
  }

  async replaceDefaultPolicies(input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }> {
    return this.#write((changes) => {
      const before = this.#q.defaultPolicies.all() as PolicyRow[]
      const after = input.build(before)
      if (after === null) return { policies: before, changed: false }
      this.#adhoc('DELETE FROM default_policies').run()
      after.forEach((row, position) => this.#q.insertDefaultPolicy.run({ ...row, position }))
      // Every compiled policy set includes the defaults: each agent's version moves on.
      this.#adhoc('UPDATE agents SET policy_version = policy_version + 1').run()
      const { audit, event } = input.record(before, after)
      this.#audit(audit)
      this.#meshEvent(event, changes)
      return { policies: this.#q.defaultPolicies.all() as PolicyRow[], changed: true }
    })
  }

  async listSilentAgents(before: number, limit: number): Promise<AgentRow[]> {
    return this.#db
      .prepare('SELECT * FROM agents WHERE killed_at IS NULL AND last_heartbeat_at IS NOT NULL AND last_heartbeat_at < ? ORDER BY last_heartbeat_at LIMIT ?')
      .all(before, limit) as AgentRow[]
  }

  async listEnabledPolicies(kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
    return this.#adhoc('SELECT * FROM policies WHERE kind = ? AND enabled = 1 ORDER BY seqno LIMIT ?').all(kind, limit) as PolicyRow[]
  }

  async getPolicy(policyId: string): Promise<PolicyRow | undefined> {
    return this.#q.policyById.get(policyId) as PolicyRow | undefined
  }

  async writePolicy(input: PolicyWrite): Promise<PolicyRow | null> {
    return this.#write((changes) => {
      const current = this.#q.policyById.get(input.policy_id) as PolicyRow | undefined
      if (input.op !== 'create') {
        if (!current) throw new GatewayError('not_found', `policy ${input.policy_id} not found`)
        if (input.expected_version !== null && current.version !== input.expected_version) {
          throw new GatewayError('conflict', `policy ${input.policy_id} is at version ${current.version}, not ${input.expected_version}`, {
            details: { current_version: current.version },
          })
        }
      }
      const next = input.build(current)
      const addressId = next?.address_id ?? current?.address_id
      const agent = addressId === undefined ? undefined : this.#agentById(addressId)
      if (!agent) throw new GatewayError('not_found', `agent ${addressId} not found`)
      if (input.op === 'create' && next) this.#q.insertPolicy.run(next)
      else if (input.op === 'update' && next) this.#q.updatePolicy.run(next)
      else this.#q.deletePolicy.run(input.policy_id)
      this.#q.bumpPolicyVersion.run(agent.address_id)
      const { audit, event } = input.record(current, next, agent)
      this.#audit(audit)
      this.#meshEvent(event, changes)
      changes.push({ type: 'policy.changed', address_id: agent.address_id })
      return next
    })
  }

  async getCounters(addressId: string, now: number): Promise<AgentCounters> {
    return this.#counters(addressId, now)
  }

  async sumCounters(fromDay: string, toDay: string, addressIds: readonly string[]) {
    const rows = this.#q.sumCounters.all(JSON.stringify(addressIds), fromDay, toDay) as { address_id: string; sent: number; received: number; cost_usd: number }[]
    return new Map(rows.map((r) => [r.address_id, { sent: r.sent, received: r.received, cost_usd: r.cost_usd }]))
  }

  async fleetTotals(fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
    const row = this.#db
      .prepare('SELECT coalesce(sum(sent), 0) AS sent, coalesce(sum(cost_usd), 0) AS cost_usd FROM counters_day WHERE day BETWEEN ? AND ?')
      .get(fromDay, toDay) as { sent: number; cost_usd: number }
    return row
  }

  async listHourCounters(addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
    return this.#q.hourCounters.all(addressId, fromHour, toHour) as HourCounters[]
  }

  async recordBreach(policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
    return this.#write((changes) => {
      if (this.#q.insertBreach.run(policyId, windowKey, event.created_at).changes === 0) return false
      this.#meshEvent(event, changes)
      return true
    })
  }

  // ---- heartbeats and health ----
  async heartbeat(input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
    return this.#write((changes) => {
      const agent = this.#agentById(input.address_id)
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      this.#q.upsertInstance.run(input.address_id, input.instance_id, input.now, input.now)
      this.#q.setHeartbeat.run(input.now, input.address_id)
      const m = input.metrics
      if (m) {
        const minute = Math.floor(input.now / 60_000)
        const latencyN = m.avg_latency_ms === null ? 0 : m.intents_total > 0 ? m.intents_total : 1
        this.#q.addMetrics.run({
          address_id: input.address_id,
          minute,
          total: m.intents_total,
          succeeded: m.intents_succeeded,
          failed: m.intents_failed,
          latency_sum: m.avg_latency_ms === null ? 0 : m.avg_latency_ms * latencyN,
          latency_n: latencyN,
        })
        const day = new Date(input.now).toISOString().slice(0, 10)
        // Cost under a policy goes through core's budget rule (thresholds, auto-kill); without
        // policies there is nothing to decide and it is counted with the reported intents.
        const ruled = m.cost_usd > 0 && agent.policy_version !== 0
        this.#q.reportDay.run(input.address_id, day, m.intents_total, m.intents_succeeded, m.intents_failed, ruled ? 0 : m.cost_usd)
        if (ruled) this.#applyCost(agent, m.cost_usd, input.now, input.cost_rule, changes)
        else if (m.cost_usd > 0) this.#q.costHour.run(input.address_id, new Date(input.now).toISOString().slice(0, 13), m.cost_usd)
      }
      // Only the budget rule can have changed the agent row (an auto-kill).
      const current =
        agent.policy_version === 0 ? { ...agent, last_heartbeat_at: input.now } : (this.#agentById(input.address_id) as AgentRow)
      const status = input.keeps_health(current, m)
        ? current.health_status
        : this.#reassess(current, input.now, input.window_start, input.health, input.transition, changes)
      return { agent: { ...current, health_status: status, last_heartbeat_at: input.now }, health_status: status }
    }, this.#heartbeatBatchMs)
  }

  /** Recomputes an agent's health with core's rule and records a transition. */
  #reassess(
    agent: AgentRow,
    now: number,
    windowStart: number,
    health: HeartbeatInput['health'],
    transition: HeartbeatInput['transition'],
    changes: Change[],
  ): HealthStatus {
    const instances = this.#q.instancesOf.all(agent.address_id) as InstanceRow[]
    const window = this.#q.metricsWindow.get(agent.address_id, Math.floor(windowStart / 60_000)) as MetricsWindow
    const next = health({ agent, instances, window, now })
    const previous: HealthStatus = agent.killed_at !== null ? 'killed' : agent.health_status
    if (next !== agent.health_status && next !== 'killed') this.#q.setHealth.run(next, agent.address_id)
    if (next !== previous) this.#meshEvent(transition(agent, previous, next), changes)
    return next
  }

  async sweepHealth(input: HealthSweepInput): Promise<number> {
    return this.#write((changes) => {
      // Forget long-silent instances first, so the health computed below sees the same list the views show.
      this.#q.forgetInstances.run({ forget: input.forget_before, stale: input.stale_before })
      const candidates = this.#q.staleCandidates.all({ before: input.stale_before, limit: input.limit }) as AgentRow[]
      let transitions = 0
      for (const agent of candidates) {
        const next = this.#reassess(agent, input.now, input.window_start, input.health, input.transition, changes)
        if (next !== agent.health_status) transitions += 1
      }
      if (input.purge_metrics_before !== null) this.#q.purgeMetrics.run(input.purge_metrics_before)
      return transitions
    })
  }

  async listInstances(addressId: string): Promise<InstanceRow[]> {
    return this.#q.instancesOf.all(addressId) as InstanceRow[]
  }

  async instanceCounts(freshSince: number, addressIds: readonly string[]) {
    const rows = this.#q.instanceCounts.all(freshSince, JSON.stringify(addressIds)) as { address_id: string; total: number; fresh: number }[]
    return new Map(rows.map((r) => [r.address_id, { total: r.total, fresh: r.fresh }]))
  }

  async metricsWindow(addressId: string, windowStart: number): Promise<MetricsWindow> {
    return this.#q.metricsWindow.get(addressId, Math.floor(windowStart / 60_000)) as MetricsWindow
  }

  async countAgentsByHealth(): Promise<Record<string, number>> {
    const rows = this.#q.countByHealth.all() as { health: string; n: number }[]
    return Object.fromEntries(rows.map((r) => [r.health, r.n]))
  }

  // ---- webhooks and the alert outbox ----
  async createWebhook(row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
    return this.#write(() => {
      this.#q.insertWebhook.run(row)
      this.#audit(audit)
      return row
    })
  }

  async listWebhooks(): Promise<WebhookRow[]> {
    return this.#q.activeWebhooks.all() as WebhookRow[]
  }

  async deleteWebhook(webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow> {
    return this.#write(() => {
      const row = this.#q.webhookById.get(webhookId) as WebhookRow | undefined
      if (!row || row.deleted_at !== null) throw new GatewayError('not_found', `webhook ${webhookId} not found`)
      this.#q.deleteWebhook.run(now, webhookId)
      this.#audit(audit(row))
      return { ...row, deleted_at: now }
    })
  }

  async claimAlerts(now: number, leaseMs: number, limit: number) {
    return this.#write(() => {
      const rows = this.#q.dueAlerts.all(now, limit) as (AlertRow & { url: string; secret: string })[]
      for (const row of rows) this.#q.leaseAlert.run(now + leaseMs, row.alert_id)
      return rows
    })
  }

  async recordAlertAttempt(
    alertId: string,
    result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
  ): Promise<void> {
    await this.#write(() =>
      this.#q.alertAttempt.run({
        alert_id: alertId,
        now: result.now,
        status: result.status,
        error: result.error,
        delivered: result.delivered ? 1 : 0,
        next: result.next_attempt_at,
      }),
    )
  }

  async listAlerts(limit: number, webhookId: string | null): Promise<AlertRow[]> {
    const sql = webhookId === null
      ? 'SELECT * FROM alert_outbox ORDER BY created_at DESC, alert_id LIMIT ?'
      : 'SELECT * FROM alert_outbox WHERE webhook_id = ? ORDER BY created_at DESC, alert_id LIMIT ?'
    const args = webhookId === null ? [limit] : [webhookId, limit]
    return this.#adhoc(sql).all(...args) as AlertRow[]
  }
}

function stripAddress(key: KeyRow): Omit<KeyRow, 'address'> {
  const { address: _address, ...rest } = key
  return rest
}

function migrate(db: Db): void {
  const current = db.pragma('user_version', { simple: true }) as number
  if (current > SQLITE_MIGRATIONS.length) {
    throw new Error(
      `the database schema (version ${current}) is newer than this gateway supports (${SQLITE_MIGRATIONS.length}); upgrade chokepoint`,
    )
  }
  for (let version = current; version < SQLITE_MIGRATIONS.length; version += 1) {
    db.transaction(() => {
      db.exec(SQLITE_MIGRATIONS[version] as string)
      db.pragma(`user_version = ${version + 1}`)
    }).immediate()
  }
}
