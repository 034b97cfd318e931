/** Versioned schema migrations for the SQLite engine; `PRAGMA user_version` records the last applied. */
export const SQLITE_MIGRATIONS: readonly string[] = [
  /* 1: agents, keys, intents, delivery */ `
  CREATE TABLE agents (
    address_id   TEXT PRIMARY KEY,
    address      TEXT NOT NULL UNIQUE,
    display_name TEXT,
    metadata     TEXT,
    created_at   INTEGER NOT NULL,
    killed_at    INTEGER,
    kill_reason  TEXT
  );
  CREATE TABLE address_seq (
    address_id TEXT PRIMARY KEY REFERENCES agents(address_id),
    last_seq   INTEGER NOT NULL
  );
  CREATE TABLE api_keys (
    key_id     TEXT PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('admin','operator','viewer','agent')),
    name       TEXT,
    key_hash   TEXT NOT NULL UNIQUE,
    address_id TEXT REFERENCES agents(address_id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
  );
  CREATE TABLE intents (
    seqno                 INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_id             TEXT NOT NULL UNIQUE,
    intent_type           TEXT NOT NULL,
    from_address_id       TEXT NOT NULL REFERENCES agents(address_id),
    to_address_id         TEXT NOT NULL REFERENCES agents(address_id),
    from_agent            TEXT NOT NULL,
    to_agent              TEXT NOT NULL,
    payload               TEXT NOT NULL,
    correlation_id        TEXT,
    reply_to              TEXT,
    deadline_at           INTEGER,
    max_delivery_attempts INTEGER NOT NULL,
    status                TEXT NOT NULL,
    delivery_state        TEXT NOT NULL,
    delivery_attempt      INTEGER NOT NULL DEFAULT 0,
    delivery_seq          INTEGER,
    lease_instance        TEXT,
    lease_expires_at      INTEGER,
    lease_ms              INTEGER,
    available_at          INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    result                TEXT,
    error                 TEXT,
    cost_usd              REAL,
    trace_id              TEXT,
    last_event_seq        INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX intents_queue ON intents (to_address_id, available_at, seqno) WHERE delivery_state = 'queued';
  CREATE INDEX intents_leased ON intents (to_address_id, lease_instance, delivery_seq) WHERE delivery_state = 'leased';
  CREATE INDEX intents_lease_expiry ON intents (lease_expires_at) WHERE delivery_state = 'leased';
  CREATE INDEX intents_from ON intents (from_address_id, seqno);
  CREATE INDEX intents_to ON intents (to_address_id, seqno);
  CREATE INDEX intents_done ON intents (updated_at) WHERE delivery_state = 'done';
  CREATE INDEX intents_deadline ON intents (deadline_at) WHERE deadline_at IS NOT NULL AND delivery_state <> 'done';
  CREATE TABLE intent_events (
    intent_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    status     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    details    TEXT,
    PRIMARY KEY (intent_id, seq)
  ) WITHOUT ROWID;
  CREATE TABLE idempotency_keys (
    from_address_id TEXT NOT NULL,
    idem_key        TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    intent_id       TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (from_address_id, idem_key)
  ) WITHOUT ROWID;
  CREATE INDEX idempotency_age ON idempotency_keys (created_at);
  `,  /* 2: kill switch, audit trail, mesh events */ `
  ALTER TABLE agents ADD COLUMN kill_actor TEXT;
  ALTER TABLE agents ADD COLUMN resumed_at INTEGER;
  ALTER TABLE intents ADD COLUMN kill_dropped INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX intents_held_to ON intents (to_address_id, seqno) WHERE delivery_state = 'held';
  CREATE INDEX intents_held_from ON intents (from_address_id, seqno) WHERE delivery_state = 'held';
  CREATE INDEX intents_undelivered_from ON intents (from_address_id, seqno) WHERE delivery_state = 'queued' AND delivery_attempt = 0;
  CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    reason    TEXT,
    before    TEXT,
    after     TEXT,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
  );
  CREATE INDEX audit_target ON audit_log (target, seq);
  CREATE TABLE mesh_events (
    seqno      INTEGER PRIMARY KEY AUTOINCREMENT,
    address_id TEXT,
    address    TEXT,
    event_type TEXT NOT NULL,
    details    TEXT,
    actor_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX mesh_events_address ON mesh_events (address, seqno);
  CREATE INDEX mesh_events_type ON mesh_events (event_type, seqno);
  `,  /* 3: policies, per-agent counters, budget alerts */ `
  ALTER TABLE agents ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE agents ADD COLUMN auto_kill_policy_id TEXT;
  ALTER TABLE agents ADD COLUMN enforcement_baseline TEXT;
  CREATE TABLE policies (
    seqno      INTEGER PRIMARY KEY AUTOINCREMENT,
    policy_id  TEXT NOT NULL UNIQUE,
    address_id TEXT NOT NULL REFERENCES agents(address_id),
    kind       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX policies_agent ON policies (address_id, seqno);
  CREATE TABLE counters_day (
    address_id TEXT NOT NULL,
    day        TEXT NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0,
    received   INTEGER NOT NULL DEFAULT 0,
    cost_usd   REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, day)
  ) WITHOUT ROWID;
  CREATE TABLE counters_hour (
    address_id TEXT NOT NULL,
    hour       TEXT NOT NULL,
    sent       INTEGER NOT NULL DEFAULT 0,
    received   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, hour)
  ) WITHOUT ROWID;
  CREATE TABLE budget_alerts (
    policy_id TEXT NOT NULL,
    day       TEXT NOT NULL,
    percent   INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    PRIMARY KEY (policy_id, day, percent)
  ) WITHOUT ROWID;
  `,  /* 4: heartbeats, instances, health, webhooks and the alert outbox */ `
  ALTER TABLE agents ADD COLUMN health_status TEXT NOT NULL DEFAULT 'unknown';
  ALTER TABLE agents ADD COLUMN last_heartbeat_at INTEGER;
  CREATE INDEX agents_health ON agents (health_status);
  CREATE TABLE agent_instances (
    address_id        TEXT NOT NULL,
    instance_id       TEXT NOT NULL,
    first_seen_at     INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    PRIMARY KEY (address_id, instance_id)
  ) WITHOUT ROWID;
  CREATE INDEX agent_instances_seen ON agent_instances (last_heartbeat_at);
  CREATE TABLE heartbeat_metrics (
    address_id  TEXT NOT NULL,
    minute      INTEGER NOT NULL,
    total       INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    latency_sum REAL NOT NULL DEFAULT 0,
    latency_n   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, minute)
  ) WITHOUT ROWID;
  ALTER TABLE counters_day ADD COLUMN reported_total INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE counters_day ADD COLUMN reported_succeeded INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE counters_day ADD COLUMN reported_failed INTEGER NOT NULL DEFAULT 0;
  CREATE TABLE webhooks (
    webhook_id  TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    event_types TEXT,
    secret      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
  );
  CREATE TABLE alert_outbox (
    alert_id        TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    type            TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    INTEGER,
    gave_up_at      INTEGER
  );
  CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
  CREATE INDEX alert_outbox_recent ON alert_outbox (created_at);
  CREATE TABLE policy_breaches (
    policy_id  TEXT NOT NULL,
    window_key TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (policy_id, window_key)
  ) WITHOUT ROWID;
  `,
  // Agents that exist only as the recipient of intents (never registered, bound to a key or seen
  // sending) have no registered_at: sends to them carry a warning, or 404 in strict mode.
  `
  ALTER TABLE agents ADD COLUMN registered_at INTEGER;
  UPDATE agents SET registered_at = created_at;
  `,
  // Fleet controls: agents carry labels (JSON object); a kill by selector stands until resumed
  // and kills agents that first appear under it.
  `
  ALTER TABLE agents ADD COLUMN labels TEXT;
  CREATE TABLE fleet_kills (
    fleet_kill_id TEXT PRIMARY KEY,
    selector      TEXT NOT NULL,
    reason        TEXT,
    actor         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    ended_at      INTEGER,
    ended_by      TEXT
  );
  CREATE INDEX fleet_kills_standing ON fleet_kills (created_at) WHERE ended_at IS NULL;
  `,
  // Default policies: applied to every agent with no enabled policy of the same kind.
  `
  CREATE TABLE default_policies (
    policy_id  TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    enabled    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  `,
  // Quarantined instances: one instance of an agent refused (stream, delivery, ack, resolve and
  // sends naming it) while its siblings keep working. A row exists while the quarantine stands;
  // resume deletes it (the audit log keeps the history).
  `
  CREATE TABLE instance_quarantines (
    address_id     TEXT NOT NULL,
    instance_id    TEXT NOT NULL,
    quarantined_at INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    reason         TEXT,
    PRIMARY KEY (address_id, instance_id)
  ) WITHOUT ROWID;
  `,
  // Cost by hour (the per-agent cost chart), counted with the day's cost.
  `
  ALTER TABLE counters_hour ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
  `,
  // Egress: each metered call of an agent to an upstream (LLM), from admission (reservation)
  // to settlement (charge). Open reservations count against the agent's cost ceiling.
  `
  CREATE TABLE egress_calls (
    seqno          INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id        TEXT NOT NULL UNIQUE,
    address_id     TEXT NOT NULL,
    upstream       TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    model          TEXT NOT NULL,
    day            TEXT NOT NULL,
    reserved_micro INTEGER NOT NULL,
    cost_micro     INTEGER,
    state          TEXT NOT NULL,
    outcome        TEXT,
    usage          TEXT,
    status         INTEGER,
    started_at     INTEGER NOT NULL,
    deadline_at    INTEGER NOT NULL,
    settled_at     INTEGER
  );
  CREATE INDEX egress_calls_open ON egress_calls (address_id, day) WHERE state = 'open';
  CREATE INDEX egress_calls_deadline ON egress_calls (deadline_at) WHERE state = 'open';
  CREATE INDEX egress_calls_agent ON egress_calls (address_id, seqno);
  `,
  // Egress to MCP servers and HTTP APIs: a call's kind and its tool name (`<upstream>/<tool>`,
  // `<upstream>/<METHOD> <path>`), what tool policies decide on. Admitted egress calls are
  // counted with the intents, for `rate` policies with `direction: "egress"`.
  `
  ALTER TABLE egress_calls ADD COLUMN kind TEXT NOT NULL DEFAULT 'llm';
  ALTER TABLE egress_calls ADD COLUMN tool TEXT;
  ALTER TABLE counters_day ADD COLUMN egress INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE counters_hour ADD COLUMN egress INTEGER NOT NULL DEFAULT 0;
  `,
  // Nothing here: PostgreSQL's migration 12 adds counter_shards (lock-free counts across
  // replicas); SQLite has one writer and counts in counters_day/counters_hour. Keeps both engines
  // at the same schema version (migrate-store requires it).
  `
  SELECT 1;
  `,
  // Nothing here: PostgreSQL's migration 13 drops the intents → agents foreign keys (their checks
  // lock both agent rows of every insert). SQLite's checks take no lock (one writer) and stay.
  `
  SELECT 1;
  `,
]
