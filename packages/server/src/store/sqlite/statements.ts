/** Every prepared statement of the SQLite engine, by name (counted by StatementCounter). */
import type { Database as Db, Statement } from 'better-sqlite3'
import { DEFAULT_POLICY_OWNER } from '../store.js'

/** A prepared statement; an interface so that the declaration of `prepare` can name it. */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface Stmt extends Statement<unknown[], unknown> {}
export type Stmts = ReturnType<typeof prepare>

export function prepare(db: Db) {
  const s = (sql: string): Stmt => db.prepare(sql)
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
