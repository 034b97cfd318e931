/**
 * Versioned schema migrations for the PostgreSQL engine; `schema_migrations` records the
 * applied versions. The steps mirror the SQLite engine's (same tables, same columns), with
 * times as bigint milliseconds so both engines behave alike. Additions of this engine:
 * `store_heads` (the rows whose lock serializes audit appends and mesh event numbering).
 */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  /* 1: agents, keys, intents, delivery */ `
  CREATE TABLE agents (
    address_id   text PRIMARY KEY,
    address      text NOT NULL UNIQUE,
    display_name text,
    metadata     text,
    created_at   bigint NOT NULL,
    killed_at    bigint,
    kill_reason  text
  );
  CREATE TABLE address_seq (
    address_id text PRIMARY KEY REFERENCES agents(address_id),
    last_seq   bigint NOT NULL
  );
  CREATE TABLE api_keys (
    key_id     text PRIMARY KEY,
    role       text NOT NULL CHECK (role IN ('admin','operator','viewer','agent')),
    name       text,
    key_hash   text NOT NULL UNIQUE,
    address_id text REFERENCES agents(address_id),
    created_at bigint NOT NULL,
    revoked_at bigint
  );
  CREATE TABLE intents (
    seqno                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intent_id             text NOT NULL UNIQUE,
    intent_type           text NOT NULL,
    from_address_id       text NOT NULL REFERENCES agents(address_id),
    to_address_id         text NOT NULL REFERENCES agents(address_id),
    from_agent            text NOT NULL,
    to_agent              text NOT NULL,
    payload               text NOT NULL,
    correlation_id        text,
    reply_to              text,
    deadline_at           bigint,
    max_delivery_attempts integer NOT NULL,
    status                text NOT NULL,
    delivery_state        text NOT NULL,
    delivery_attempt      integer NOT NULL DEFAULT 0,
    delivery_seq          bigint,
    lease_instance        text,
    lease_expires_at      bigint,
    lease_ms              bigint,
    available_at          bigint NOT NULL,
    created_at            bigint NOT NULL,
    updated_at            bigint NOT NULL,
    result                text,
    error                 text,
    cost_usd              double precision,
    trace_id              text,
    last_event_seq        integer NOT NULL DEFAULT 0
  );
  CREATE INDEX intents_queue ON intents (to_address_id, available_at, seqno) WHERE delivery_state = 'queued';
  CREATE INDEX intents_leased ON intents (to_address_id, lease_instance, delivery_seq) WHERE delivery_state = 'leased';
  CREATE INDEX intents_lease_expiry ON intents (lease_expires_at) WHERE delivery_state = 'leased';
  CREATE INDEX intents_from ON intents (from_address_id, seqno);
  CREATE INDEX intents_to ON intents (to_address_id, seqno);
  CREATE INDEX intents_done ON intents (updated_at) WHERE delivery_state = 'done';
  CREATE INDEX intents_deadline ON intents (deadline_at) WHERE deadline_at IS NOT NULL AND delivery_state <> 'done';
  CREATE TABLE intent_events (
    intent_id  text NOT NULL,
    seq        integer NOT NULL,
    event_type text NOT NULL,
    status     text NOT NULL,
    actor      text NOT NULL,
    at         bigint NOT NULL,
    details    text,
    PRIMARY KEY (intent_id, seq)
  );
  CREATE TABLE idempotency_keys (
    from_address_id text NOT NULL,
    idem_key        text NOT NULL,
    request_hash    text NOT NULL,
    intent_id       text NOT NULL,
    created_at      bigint NOT NULL,
    PRIMARY KEY (from_address_id, idem_key)
  );
  CREATE INDEX idempotency_age ON idempotency_keys (created_at);
  `,
  /* 2: kill switch, audit trail, mesh events */ `
  ALTER TABLE agents ADD COLUMN kill_actor text;
  ALTER TABLE agents ADD COLUMN resumed_at bigint;
  ALTER TABLE intents ADD COLUMN kill_dropped integer NOT NULL DEFAULT 0;
  CREATE INDEX intents_held_to ON intents (to_address_id, seqno) WHERE delivery_state = 'held';
  CREATE INDEX intents_held_from ON intents (from_address_id, seqno) WHERE delivery_state = 'held';
  CREATE INDEX intents_undelivered_from ON intents (from_address_id, seqno) WHERE delivery_state = 'queued' AND delivery_attempt = 0;
  CREATE TABLE audit_log (
    seq       bigint PRIMARY KEY,
    at        text NOT NULL,
    actor     text NOT NULL,
    action    text NOT NULL,
    target    text NOT NULL,
    reason    text,
    before    text,
    after     text,
    prev_hash text NOT NULL,
    hash      text NOT NULL
  );
  CREATE INDEX audit_target ON audit_log (target, seq);
  CREATE TABLE mesh_events (
    seqno      bigint PRIMARY KEY,
    address_id text,
    address    text,
    event_type text NOT NULL,
    details    text,
    actor_id   text NOT NULL,
    created_at bigint NOT NULL
  );
  CREATE INDEX mesh_events_address ON mesh_events (address, seqno);
  CREATE INDEX mesh_events_type ON mesh_events (event_type, seqno);
  -- The audit chain head and the mesh event counter. A transaction that appends to either
  -- locks both rows (one statement, fixed order) and keeps them until it commits, so audit
  -- entries chain without gaps and mesh event numbers are commit-ordered (live streams
  -- read "seqno > cursor" and must never see a smaller number commit later).
  CREATE TABLE store_heads (
    name text PRIMARY KEY,
    seq  bigint NOT NULL,
    hash text
  );
  INSERT INTO store_heads (name, seq, hash) VALUES ('audit', 0, NULL), ('mesh', 0, NULL);
  `,
  /* 3: policies, per-agent counters, budget alerts */ `
  ALTER TABLE agents ADD COLUMN policy_version integer NOT NULL DEFAULT 0;
  ALTER TABLE agents ADD COLUMN auto_kill_policy_id text;
  ALTER TABLE agents ADD COLUMN enforcement_baseline text;
  CREATE TABLE policies (
    seqno      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_id  text NOT NULL UNIQUE,
    address_id text NOT NULL REFERENCES agents(address_id),
    kind       text NOT NULL,
    spec       text NOT NULL,
    enabled    integer NOT NULL,
    version    integer NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
  );
  CREATE INDEX policies_agent ON policies (address_id, seqno);
  CREATE TABLE counters_day (
    address_id text NOT NULL,
    day        text NOT NULL,
    sent       bigint NOT NULL DEFAULT 0,
    received   bigint NOT NULL DEFAULT 0,
    cost_usd   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, day)
  );
  CREATE TABLE counters_hour (
    address_id text NOT NULL,
    hour       text NOT NULL,
    sent       bigint NOT NULL DEFAULT 0,
    received   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, hour)
  );
  CREATE TABLE budget_alerts (
    policy_id text NOT NULL,
    day       text NOT NULL,
    percent   integer NOT NULL,
    at        bigint NOT NULL,
    PRIMARY KEY (policy_id, day, percent)
  );
  `,
  /* 4: heartbeats, instances, health, webhooks and the alert outbox */ `
  ALTER TABLE agents ADD COLUMN health_status text NOT NULL DEFAULT 'unknown';
  ALTER TABLE agents ADD COLUMN last_heartbeat_at bigint;
  CREATE INDEX agents_health ON agents (health_status);
  CREATE TABLE agent_instances (
    address_id        text NOT NULL,
    instance_id       text NOT NULL,
    first_seen_at     bigint NOT NULL,
    last_heartbeat_at bigint NOT NULL,
    PRIMARY KEY (address_id, instance_id)
  );
  CREATE INDEX agent_instances_seen ON agent_instances (last_heartbeat_at);
  CREATE TABLE heartbeat_metrics (
    address_id  text NOT NULL,
    minute      bigint NOT NULL,
    total       bigint NOT NULL DEFAULT 0,
    succeeded   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0,
    latency_sum double precision NOT NULL DEFAULT 0,
    latency_n   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, minute)
  );
  ALTER TABLE counters_day ADD COLUMN reported_total bigint NOT NULL DEFAULT 0;
  ALTER TABLE counters_day ADD COLUMN reported_succeeded bigint NOT NULL DEFAULT 0;
  ALTER TABLE counters_day ADD COLUMN reported_failed bigint NOT NULL DEFAULT 0;
  CREATE TABLE webhooks (
    webhook_id  text PRIMARY KEY,
    url         text NOT NULL,
    event_types text,
    secret      text NOT NULL,
    created_at  bigint NOT NULL,
    deleted_at  bigint
  );
  CREATE TABLE alert_outbox (
    alert_id        text PRIMARY KEY,
    webhook_id      text NOT NULL,
    type            text NOT NULL,
    body            text NOT NULL,
    created_at      bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    delivered_at    bigint,
    gave_up_at      bigint
  );
  CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
  CREATE INDEX alert_outbox_recent ON alert_outbox (created_at);
  CREATE TABLE policy_breaches (
    policy_id  text NOT NULL,
    window_key text NOT NULL,
    at         bigint NOT NULL,
    PRIMARY KEY (policy_id, window_key)
  );
  `,
  `
  ALTER TABLE agents ADD COLUMN registered_at bigint;
  UPDATE agents SET registered_at = created_at;
  `,
  // Fleet controls: agents carry labels (JSON object); a kill by selector stands until resumed
  // and kills agents that first appear under it.
  `
  ALTER TABLE agents ADD COLUMN labels text;
  CREATE TABLE fleet_kills (
    fleet_kill_id text PRIMARY KEY,
    selector      text NOT NULL,
    reason        text,
    actor         text NOT NULL,
    created_at    bigint NOT NULL,
    ended_at      bigint,
    ended_by      text
  );
  CREATE INDEX fleet_kills_standing ON fleet_kills (created_at) WHERE ended_at IS NULL;
  `,
  // Default policies: applied to every agent with no enabled policy of the same kind.
  `
  CREATE TABLE default_policies (
    policy_id  text PRIMARY KEY,
    position   integer NOT NULL,
    kind       text NOT NULL,
    spec       text NOT NULL,
    enabled    integer NOT NULL,
    version    integer NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
  );
  `,
  // Quarantined instances (see the SQLite migration): a row exists while the quarantine stands.
  `
  CREATE TABLE instance_quarantines (
    address_id     text NOT NULL,
    instance_id    text NOT NULL,
    quarantined_at bigint NOT NULL,
    actor          text NOT NULL,
    reason         text,
    PRIMARY KEY (address_id, instance_id)
  );
  `,
  // Cost by hour (the per-agent cost chart), counted with the day's cost.
  `
  ALTER TABLE counters_hour ADD COLUMN cost_usd double precision NOT NULL DEFAULT 0;
  `,
  // Egress calls (see the SQLite migration).
  `
  CREATE TABLE egress_calls (
    seqno          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id        text NOT NULL UNIQUE,
    address_id     text NOT NULL,
    upstream       text NOT NULL,
    endpoint       text NOT NULL,
    model          text NOT NULL,
    day            text NOT NULL,
    reserved_micro bigint NOT NULL,
    cost_micro     bigint,
    state          text NOT NULL,
    outcome        text,
    usage          text,
    status         integer,
    started_at     bigint NOT NULL,
    deadline_at    bigint NOT NULL,
    settled_at     bigint
  );
  CREATE INDEX egress_calls_open ON egress_calls (address_id, day) WHERE state = 'open';
  CREATE INDEX egress_calls_deadline ON egress_calls (deadline_at) WHERE state = 'open';
  CREATE INDEX egress_calls_agent ON egress_calls (address_id, seqno);
  `,
  // Egress kinds (MCP, HTTP tools) and egress calls counted for `rate` policies (see the SQLite migration).
  `
  ALTER TABLE egress_calls ADD COLUMN kind text NOT NULL DEFAULT 'llm';
  ALTER TABLE egress_calls ADD COLUMN tool text;
  ALTER TABLE counters_day ADD COLUMN egress bigint NOT NULL DEFAULT 0;
  ALTER TABLE counters_hour ADD COLUMN egress bigint NOT NULL DEFAULT 0;
  `,
  // Sent/received of agents without rate or cost policies, by hour, one row per backend that
  // counted (shard = pg_backend_pid()): a backend runs one transaction at a time, so no two
  // concurrent accepts ever wait on the same counter row. Views sum these with counters_day /
  // counters_hour; purge folds finished hours into those tables.
  `
  CREATE TABLE counter_shards (
    address_id text NOT NULL,
    hour       text NOT NULL,
    shard      integer NOT NULL,
    sent       bigint NOT NULL DEFAULT 0,
    received   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (address_id, hour, shard)
  );
  CREATE INDEX counter_shards_hour ON counter_shards (hour);
  `,
  // No foreign keys from intents (and address_seq) to agents: their checks took FOR KEY SHARE on
  // both agent rows of every intent insert (and of a recipient's first claim), which writes a row
  // lock (a multixact once two overlap) into the hottest rows of the database. Agent rows are
  // never deleted, and every insert names agents it has just read or created in the same
  // transaction.
  `
  ALTER TABLE intents DROP CONSTRAINT IF EXISTS intents_from_address_id_fkey;
  ALTER TABLE intents DROP CONSTRAINT IF EXISTS intents_to_address_id_fkey;
  ALTER TABLE address_seq DROP CONSTRAINT IF EXISTS address_seq_address_id_fkey;
  `,
]
