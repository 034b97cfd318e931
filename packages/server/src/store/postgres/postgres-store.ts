import { randomUUID } from 'node:crypto'
import pg from 'pg'
import type { PoolClient } from 'pg'
import { GatewayError } from '../../core/errors.js'
import { newAddressId, randomBase62 } from '../../core/ids.js'
import { standingKillRule } from '../../core/fleet/fleet-service.js'
import type { Change } from '../change-feed.js'
import { agentOrderBy, containsPattern, sortsByCounters } from '../agent-page.js'
import type {
  AgentPageQuery,
  HourCounters,
  AcceptDecision,
  AcceptIntentInput,
  AcceptIntentResult,
  AgentCounters,
  AgentRow,
  AgentSelection,
  AgentUpdateInput,
  AlertMapper,
  AlertRow,
  AuditDraft,
  AuditHasher,
  AuditQuery,
  AuditRow,
  ClaimInput,
  ClaimResult,
  CostRule,
  Delivery,
  ExpireLeasesResult,
  FleetKillInput,
  FleetKillResult,
  FleetKillRow,
  FleetResumeInput,
  FleetResumeResult,
  HealthStatus,
  HealthSweepInput,
  HeartbeatInput,
  HoldInput,
  InstanceRow,
  InstanceQuarantineRow,
  LiftQuarantineInput,
  QuarantineInput,
  QuarantineResult,
  IntentEventRow,
  IntentListQuery,
  IntentRow,
  IntentStatus,
  IntentUpdateInput,
  IntentUpdateResult,
  KeyRow,
  KillInput,
  MeshEventDraft,
  MeshEventQuery,
  MeshEventRow,
  MetricsWindow,
  NewIntent,
  Parties,
  PolicyKind,
  PolicyRow,
  PolicyWrite,
  ResumeInput,
  Role,
  Store,
  WebhookRow,
} from '../store.js'
import { DEFAULT_POLICY_OWNER, type DefaultPoliciesWrite, type EgressAdmitInput, type EgressCallRow, type EgressSettleInput } from '../store.js'
import { DatabaseClock } from './postgres-clock.js'
import { FEED_CHANNEL, PostgresFeed, encodeChanges } from './postgres-feed.js'
import { isConnectionError, isRetryableConflict, toStoreError } from './postgres-errors.js'
import { POSTGRES_MIGRATIONS } from './postgres-migrations.js'

export interface PostgresStoreConfig {
  /** `postgres://user:password@host:port/database` (any libpq-style URL node-postgres accepts). */
  url: string
  /** Chain hash of audit entries (core's rule). */
  hashAudit: AuditHasher
  /** Which mesh events become webhook alerts (core's rule). */
  alertFor: AlertMapper
  /** Pooled connections per replica (default 20). */
  poolSize?: number | undefined
  /** Giving up on opening a connection (default 5 s) → `store_unavailable`. */
  connectionTimeoutMs?: number | undefined
  /** Giving up on one statement (default 15 s) → `store_unavailable`. */
  queryTimeoutMs?: number | undefined
  log?: ((level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void) | undefined
}

/** `pg_advisory_xact_lock` keys (first argument: this class; second: the resource). */
const LOCK_CLASS = 0x43504b54 // "CPKT"
const LOCK_MIGRATIONS = 1
const LOCK_KEYS = 2
const LOCK_CLAIM = 3
/**
 * Fleet kills against agent creation: a kill by selector takes it exclusively, every
 * transaction that creates (or relabels) an agent row takes it shared — always before any
 * agent gate, so the two orders never cross. A new agent therefore either committed before
 * the fleet kill read the agents (and is killed by it) or sees the fleet kill row.
 */
const LOCK_FLEET = 4
/** Second key: hashtext(address). */
const LOCK_AGENT = LOCK_CLASS + 16

/**
 * PostgreSQL ends a transaction of ours that sits idle this long (`idle_in_transaction_session_timeout`,
 * set per transaction so that poolers see no session state). A replica frozen between two
 * statements — SIGSTOP, a paused VM or container, a CPU throttled between requests — would
 * otherwise keep its row locks for as long as it is frozen, and a kill, which must update the
 * agent row those locks share, would wait on every other replica with it (DESIGN §2.1). Our
 * transactions are idle for milliseconds; the frozen one fails (its client gets 503, nothing
 * was acknowledged) and the kill goes through.
 */
export const IDLE_IN_TRANSACTION_MS = 2_000
/**
 * A statement of a data transaction (accept, claim, resolve, heartbeat) gives up waiting for a
 * row lock after this long, and the transaction is run again. A frozen replica's transactions
 * queue on each other's counter rows; without this, each one in the queue would start its own
 * IDLE_IN_TRANSACTION_MS only when the one before it had been ended, and a kill would wait for
 * the whole queue. With it they all give up at once, and a kill waits at most about
 * LOCK_TIMEOUT_MS + IDLE_IN_TRANSACTION_MS. It is far above healthy waits: 300 concurrent sends
 * to one recipient queue for up to ~2 s on its counter rows on a busy 2-core machine.
 * Kills and resumes (the control pool) wait as long as it takes: they are what must get through.
 */
export const LOCK_TIMEOUT_MS = 5_000
const BEGIN_CONTROL = `BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${IDLE_IN_TRANSACTION_MS}`
const BEGIN = `${BEGIN_CONTROL}; SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`

/** Transactions that fail on a serialization conflict or deadlock are run again, this often. */
const MAX_ATTEMPTS = 5

const TERMINAL = new Set<IntentStatus>(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'])

/** bigint (int8) and numeric (sums) as JS numbers: times are ms, counts are small. */
const parseNumber = (value: string): number => Number(value)
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 || oid === 1700 ? parseNumber : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
}

/**
 * Thrown inside a transaction that turns out to need an agent row it only share-locked
 * (a cost ceiling with on_breach: kill); the transaction is rolled back and run again with
 * that row locked for update from the start, so no lock is ever upgraded.
 */
class NeedsRowLock extends Error {}

/** One transaction on one pooled client, with what it will publish at commit. */
class Tx {
  readonly changes: Change[] = []
  /**
   * Audit entries and mesh events are written at the end of the transaction, just before
   * COMMIT, under the `store_heads` row lock: that lock is the last one any transaction
   * takes, so a transaction holding it never waits for another lock.
   */
  readonly audits: AuditDraft[] = []
  readonly meshEvents: MeshEventDraft[] = []
  /** The fleet lock is held (shared) by this transaction: it may create agent rows. */
  fleetLocked = false

  constructor(
    readonly client: PoolClient,
    /** Lock the resolving agent's row for update (see NeedsRowLock). */
    readonly lockForCost: boolean,
  ) {}

  async rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.client.query(sql, params)).rows as T[]
  }

  async one<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.client.query(sql, params)).rows[0] as T | undefined
  }

  async run(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.client.query(sql, params)).rowCount ?? 0
  }
}

type Holdable = { intent_id: string; delivery_state: string; lease_instance: string | null; status: string }

const AGENT_INSERT = `INSERT INTO agents (address_id, address, display_name, metadata, created_at, killed_at, kill_reason, kill_actor, resumed_at, registered_at, labels)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (address) DO NOTHING`
/** The agents' own policies, then the defaults (core picks the effective ones per agent). */
const EFFECTIVE_POLICIES = `SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at FROM (
    SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at, 0 AS src, seqno AS ord
    FROM policies WHERE address_id = ANY($1::text[])
    UNION ALL
    SELECT policy_id, '${DEFAULT_POLICY_OWNER}', kind, spec, enabled, version, created_at, updated_at, 1, position FROM default_policies
  ) p ORDER BY src, ord`
const DEFAULT_POLICIES = `SELECT policy_id, '${DEFAULT_POLICY_OWNER}' AS address_id, kind, spec, enabled, version, created_at, updated_at
  FROM default_policies ORDER BY position`
const AGENTS_BY_PREFIX = 'SELECT * FROM agents WHERE substr(address, 1, $1) = $2 ORDER BY address'
const KEY_SELECT = 'SELECT k.*, a.address FROM api_keys k LEFT JOIN agents a ON a.address_id = k.address_id'
const INSERT_EVENTS = `INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
  SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[])`
const HOLD = `UPDATE intents SET delivery_state = 'held', lease_instance = NULL, lease_expires_at = NULL,
    kill_dropped = kill_dropped + CASE WHEN delivery_state = 'leased' THEN 1 ELSE 0 END,
    updated_at = $2, last_event_seq = last_event_seq + 1
  WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq, status`
const KILL = `UPDATE agents SET killed_at = $2, kill_reason = $3, kill_actor = $4
  WHERE address_id = $1 AND killed_at IS NULL RETURNING *`

/** Events to insert in one statement (column arrays for unnest). */
class EventBatch {
  readonly #cols: [string[], number[], string[], string[], string[], number[], (string | null)[]] = [[], [], [], [], [], [], []]

  add(e: IntentEventRow): void {
    const c = this.#cols
    c[0].push(e.intent_id)
    c[1].push(e.seq)
    c[2].push(e.event_type)
    c[3].push(e.status)
    c[4].push(e.actor)
    c[5].push(e.at)
    c[6].push(e.details)
  }

  async write(tx: Tx): Promise<void> {
    if (this.#cols[0].length > 0) await tx.run(INSERT_EVENTS, this.#cols)
  }
}

const windowOf = (now: number): { day: string; hour: string } => {
  const at = new Date(now).toISOString()
  return { day: at.slice(0, 10), hour: at.slice(0, 13) }
}

/**
 * The PostgreSQL engine: same semantics as the SQLite engine, for any number of replicas.
 *
 * Locking (DESIGN §2.1, §2.6, §11). Every transaction takes its locks in one global order, so
 * it never upgrades a lock and never deadlocks with another: the per-agent gate first (a fair
 * advisory lock, see `#gate`), then agent rows (accepts, deliveries, resolves and holds
 * `FOR SHARE`, in address_id order; kill, resume, policy writes and heartbeats
 * `FOR NO KEY UPDATE`), then intent rows (`FOR UPDATE`, or `SKIP LOCKED` when claiming or
 * sweeping), then counter rows (day rows, then hour rows, each in address_id order), and
 * last the `store_heads` rows (audit chain and mesh event numbering), written just before
 * COMMIT. A kill therefore waits for every in-flight accept, delivery and resolve of the
 * agent, and every one that starts later sees it. Serialization failures and deadlocks
 * (which the order above avoids, but a reply_to completion can still meet) run the
 * transaction again; a cost ceiling that kills reruns it with the agent row locked for
 * update from the start (NeedsRowLock).
 */
export class PostgresStore implements Store {
  readonly engine = 'postgres' as const
  readonly feed: PostgresFeed
  readonly clock: DatabaseClock
  readonly #pool: pg.Pool
  /** Kills and resumes get their own connections: a pool saturated by sends must not delay them. */
  readonly #controlPool: pg.Pool
  readonly #config: Readonly<PostgresStoreConfig>
  readonly #origin = randomUUID()
  #closed = false

  private constructor(config: PostgresStoreConfig) {
    this.#config = Object.freeze({ ...config })
    const clientConfig = {
      connectionString: config.url,
      types: TYPES,
      connectionTimeoutMillis: config.connectionTimeoutMs ?? 5_000,
      query_timeout: config.queryTimeoutMs ?? 15_000,
      keepAlive: true,
      application_name: 'chokepoint',
    }
    this.#pool = new pg.Pool({ ...clientConfig, max: config.poolSize ?? 20, idleTimeoutMillis: 30_000 })
    this.#controlPool = new pg.Pool({ ...clientConfig, max: 2, idleTimeoutMillis: 30_000, application_name: 'chokepoint-control' })
    for (const pool of [this.#pool, this.#controlPool]) {
      // An idle client whose connection dies emits here; without a handler the process would crash.
      pool.on('error', (error) => config.log?.('warn', 'postgres: idle connection failed', { error: String(error) }))
      // A checked-out client whose connection dies between two queries (e.g. the server shuts
      // down) emits 'error' too, and the pool does not listen then: without this handler the
      // process would crash. Its next query fails (→ 503) and #tx discards the client.
      pool.on('connect', (client) => {
        client.on('error', (error) => config.log?.('warn', 'postgres: connection failed', { error: String(error) }))
      })
    }
    this.clock = new DatabaseClock({
      readDatabaseMs: async () =>
        (await this.#readOne<{ ms: number }>('SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS ms'))?.ms ?? Date.now(),
      log: config.log,
    })
    this.feed = new PostgresFeed({
      origin: this.#origin,
      newClient: () => new pg.Client({ ...clientConfig, application_name: 'chokepoint-feed' }),
      query: (sql, params) => this.#read(sql, params),
      log: config.log,
    })
  }

  /** Connects, runs the migrations (safe when several replicas start at once) and starts LISTEN. */
  static async open(config: PostgresStoreConfig): Promise<PostgresStore> {
    const store = new PostgresStore(config)
    try {
      await store.#migrate()
      await store.clock.start()
      await store.feed.start()
    } catch (error) {
      await store.close()
      throw toStoreError(error)
    }
    return store
  }

  async #migrate(): Promise<void> {
    const client = await this.#pool.connect()
    try {
      await client.query(BEGIN_CONTROL)
      await client.query('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_MIGRATIONS])
      await client.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)')
      const { rows } = await client.query<{ v: number }>('SELECT coalesce(max(version), 0) AS v FROM schema_migrations')
      const current = rows[0]?.v ?? 0
      if (current > POSTGRES_MIGRATIONS.length) {
        throw new Error(
          `the database schema (version ${current}) is newer than this gateway supports (${POSTGRES_MIGRATIONS.length}); upgrade chokepoint`,
        )
      }
      for (let version = current; version < POSTGRES_MIGRATIONS.length; version += 1) {
        await client.query(POSTGRES_MIGRATIONS[version] as string)
        await client.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [version + 1, Date.now()])
      }
      await client.query('COMMIT')
      client.release()
    } catch (error) {
      await client.query('ROLLBACK').then(
        () => client.release(),
        () => client.release(true),
      )
      throw error
    }
  }

  /**
   * Runs `fn` in one transaction on one pooled client (BEGIN … COMMIT); NOTIFYs its changes
   * inside it (delivered to every replica at commit) and publishes them locally after commit.
   */
  async #tx<T>(fn: (tx: Tx) => Promise<T>, pool: pg.Pool = this.#pool): Promise<T> {
    let lockForCost = false
    for (let attempt = 1; ; attempt += 1) {
      let client: PoolClient
      try {
        client = await pool.connect()
      } catch (error) {
        throw toStoreError(error)
      }
      const tx = new Tx(client, lockForCost)
      try {
        await client.query(pool === this.#controlPool ? BEGIN_CONTROL : BEGIN)
        const result = await fn(tx)
        await this.#writeControl(tx)
        const changes = dedupe(tx.changes)
        if (changes.length > 0) {
          await client.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [
            FEED_CHANNEL,
            encodeChanges(this.#origin, changes),
          ])
        }
        await client.query('COMMIT')
        client.release()
        for (const change of changes) this.feed.publish(change)
        return result
      } catch (error) {
        if (isConnectionError(error)) client.release(true)
        else {
          await client.query('ROLLBACK').then(
            () => client.release(),
            () => client.release(true),
          )
        }
        if (error instanceof NeedsRowLock && !lockForCost) {
          lockForCost = true
          continue
        }
        if (isRetryableConflict(error) && attempt < MAX_ATTEMPTS) {
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * attempt))
          continue
        }
        throw toStoreError(error)
      }
    }
  }

  /** One statement outside a transaction (reads). */
  async #read<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    try {
      return (await this.#pool.query(sql, params)).rows as T[]
    } catch (error) {
      throw toStoreError(error)
    }
  }

  async #readOne<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.#read<T>(sql, params))[0]
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.clock.stop()
    await this.feed.close()
    await this.#pool.end().catch(() => undefined)
    await this.#controlPool.end().catch(() => undefined)
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new GatewayError('store_unavailable', 'the store is closed')
    await this.#read('SELECT 1')
  }

  // ---- keys ----
  async insertKey(key: Omit<KeyRow, 'address_id'>, now: number, audit: (row: KeyRow) => AuditDraft): Promise<KeyRow> {
    return this.#tx(async (tx) => {
      if (key.address !== null) await this.#fleetShared(tx)
      const agent = key.address === null ? null : (await this.#ensureAgents(tx, [key.address], now, false, [key.address])).get(key.address)
      const row: KeyRow = { ...key, address_id: agent?.address_id ?? null }
      await tx.run(
        `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [row.key_id, row.role, row.name, row.key_hash, row.address_id, row.created_at, row.revoked_at],
      )
      this.#audit(tx, audit(row))
      return row
    })
  }

  async findKeyByHash(keyHash: string): Promise<KeyRow | undefined> {
    return this.#readOne<KeyRow>(`${KEY_SELECT} WHERE k.key_hash = $1`, [keyHash])
  }

  async getKey(keyId: string): Promise<KeyRow | undefined> {
    return this.#readOne<KeyRow>(`${KEY_SELECT} WHERE k.key_id = $1`, [keyId])
  }

  async listKeys(): Promise<KeyRow[]> {
    return this.#read<KeyRow>(`${KEY_SELECT} ORDER BY k.created_at, k.key_id`)
  }

  async revokeKey(
    keyId: string,
    now: number,
    guard: (key: KeyRow, otherAdmins: number) => void,
    audit: (key: KeyRow) => AuditDraft,
  ): Promise<KeyRow> {
    return this.#tx(async (tx) => {
      // Revocations are serialized, so two replicas cannot both revoke "one of two" last admins.
      await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
      const key = await tx.one<KeyRow>(`${KEY_SELECT} WHERE k.key_id = $1`, [keyId])
      if (!key) throw new GatewayError('not_found', `key ${keyId} not found`)
      const admins = await this.#countActive(tx, 'admin')
      const others = key.role === 'admin' && key.revoked_at === null ? admins - 1 : admins
      guard(key, others)
      if (key.revoked_at === null) {
        await tx.run('UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL', [now, keyId])
        tx.changes.push({ type: 'key.revoked', key_id: keyId })
        const revoked = { ...key, revoked_at: now }
        this.#audit(tx, audit(revoked))
        return revoked
      }
      return key
    })
  }

  async ensureAdminKey(key: KeyRow): Promise<'created' | 'existing'> {
    return this.#tx(async (tx) => {
      await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
      const existing = await tx.one<KeyRow>(`${KEY_SELECT} WHERE k.key_hash = $1`, [key.key_hash])
      await tx.run(
        `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, NULL)
         ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL, role = 'admin'`,
        [key.key_id, key.role, key.name, key.key_hash, key.address_id, key.created_at],
      )
      return existing ? 'existing' : 'created'
    })
  }

  async createFirstAdminKey(key: KeyRow, audit: AuditDraft): Promise<boolean> {
    return this.#tx(async (tx) => {
      await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_KEYS])
      if ((await this.#countActive(tx, 'admin')) > 0) return false
      await tx.run(
        `INSERT INTO api_keys (key_id, role, name, key_hash, address_id, created_at, revoked_at)
         VALUES ($1, 'admin', $2, $3, NULL, $4, NULL)`,
        [key.key_id, key.name, key.key_hash, key.created_at],
      )
      this.#audit(tx, audit)
      return true
    })
  }

  async countActiveKeys(role: Role): Promise<number> {
    const row = await this.#readOne<{ n: number }>('SELECT count(*) AS n FROM api_keys WHERE role = $1 AND revoked_at IS NULL', [role])
    return row?.n ?? 0
  }

  async #countActive(tx: Tx, role: Role): Promise<number> {
    return (await tx.one<{ n: number }>('SELECT count(*) AS n FROM api_keys WHERE role = $1 AND revoked_at IS NULL', [role]))?.n ?? 0
  }

  // ---- agents ----
  async getAgentById(addressId: string): Promise<AgentRow | undefined> {
    return this.#readOne<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [addressId])
  }

  async getAgentByAddress(address: string): Promise<AgentRow | undefined> {
    return this.#readOne<AgentRow>('SELECT * FROM agents WHERE address = $1', [address])
  }

  async registerAgent(agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
    return this.#tx(async (tx) => {
      await this.#fleetShared(tx)
      await this.#gate(tx, [agent.address], new Set([agent.address]))
      const inserted = await tx.run(AGENT_INSERT, [
        agent.address_id,
        agent.address,
        agent.display_name,
        agent.metadata,
        agent.created_at,
        agent.killed_at,
        agent.kill_reason,
        agent.kill_actor,
        agent.resumed_at,
        agent.registered_at,
        agent.labels,
      ])
      // A row that exists only as a recipient of intents is registered now (keeping its id).
      const row =
        inserted === 1
          ? agent
          : await tx.one<AgentRow>(
              `UPDATE agents SET registered_at = $2, display_name = $3, metadata = $4, labels = $5
               WHERE address = $1 AND registered_at IS NULL RETURNING *`,
              [agent.address, agent.registered_at, agent.display_name, agent.metadata, agent.labels],
            )
      if (row === undefined) return undefined
      this.#meshEvent(tx, { ...event, address_id: row.address_id })
      return this.#appeared(tx, row, agent.created_at)
    })
  }

  /** Addresses known to have a row (rows are never deleted): sends between them skip the fleet lock. */
  readonly #known = new Set<string>()

  #remember(addresses: readonly string[]): void {
    if (this.#known.size > 200_000) this.#known.clear()
    for (const a of addresses) this.#known.add(a)
  }

  async #fleetShared(tx: Tx): Promise<void> {
    if (tx.fleetLocked) return
    await tx.run('SELECT pg_advisory_xact_lock_shared($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
    tx.fleetLocked = true
  }

  /**
   * An agent row that was just written: it takes the default policies (policy_version 1) and any
   * standing fleet kill. The caller holds the fleet lock shared, so the default set cannot
   * change between this read and the commit.
   */
  async #appeared(tx: Tx, row: AgentRow, now: number): Promise<AgentRow> {
    await this.#fleetShared(tx)
    const adopted = await tx.one<AgentRow>(
      `UPDATE agents SET policy_version = 1
       WHERE address_id = $1 AND policy_version = 0 AND EXISTS (SELECT 1 FROM default_policies) RETURNING *`,
      [row.address_id],
    )
    return this.#applyStanding(tx, adopted ?? row, now)
  }

  /** A new or relabelled agent under a standing fleet kill is killed in the same transaction. */
  async #applyStanding(tx: Tx, row: AgentRow, now: number): Promise<AgentRow> {
    if (row.killed_at !== null) return row
    await this.#fleetShared(tx)
    const standing = await tx.rows<FleetKillRow>('SELECT * FROM fleet_kills WHERE ended_at IS NULL ORDER BY created_at, fleet_kill_id')
    if (standing.length === 0) return row
    const kill = standingKillRule(row, standing, now)
    if (kill === null) return row
    const after = (await tx.one<AgentRow>(KILL, [row.address_id, now, kill.reason, kill.actor])) as AgentRow
    return this.#recordKill(tx, row, after, { policy_id: null, record: kill.record })
  }

  async selectAgents(selection: AgentSelection): Promise<AgentRow[]> {
    return (await this.#read<AgentRow>(AGENTS_BY_PREFIX, [selection.prefix.length, selection.prefix])).filter(selection.matches)
  }

  async updateAgent(input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return this.#tx(async (tx) => {
      await this.#fleetShared(tx)
      await this.#gateById(tx, input.address_id, true)
      const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const patch = input.build(before)
      if (patch === null) return { agent: before, changed: false }
      const after = (await tx.one<AgentRow>(
        'UPDATE agents SET display_name = $2, labels = $3, metadata = $4 WHERE address_id = $1 RETURNING *',
        [before.address_id, patch.display_name, patch.labels, patch.metadata],
      )) as AgentRow
      const { audit, event } = input.record(before, after)
      this.#audit(tx, audit)
      this.#meshEvent(tx, event)
      return { agent: after.labels === before.labels ? after : await this.#applyStanding(tx, after, input.now), changed: true }
    })
  }

  async listAgents(limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
    if (health === null) return this.#read<AgentRow>('SELECT * FROM agents ORDER BY created_at, address LIMIT $1', [limit])
    if (health === 'killed') {
      return this.#read<AgentRow>('SELECT * FROM agents WHERE killed_at IS NOT NULL ORDER BY created_at, address LIMIT $1', [limit])
    }
    return this.#read<AgentRow>(
      'SELECT * FROM agents WHERE killed_at IS NULL AND health_status = $1 ORDER BY created_at, address LIMIT $2',
      [health, limit],
    )
  }

  async listAgentsPage(query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
    const where: string[] = []
    const params: unknown[] = []
    if (query.health === 'killed') where.push('a.killed_at IS NOT NULL')
    else if (query.health !== null) {
      params.push(query.health)
      where.push(`a.killed_at IS NULL AND a.health_status = $${params.length}`)
    }
    if (query.search !== null) {
      params.push(containsPattern(query.search))
      where.push(`(a.address ILIKE $${params.length} ESCAPE '\\' OR a.display_name ILIKE $${params.length} ESCAPE '\\')`)
    }
    const filter = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`
    const page = [...params]
    let join = ''
    if (sortsByCounters(query)) {
      page.push(query.from_day, query.to_day)
      join = `LEFT JOIN (SELECT address_id, sum(sent) + sum(received) AS intents, sum(cost_usd) AS cost FROM counters_day
          WHERE day >= $${page.length - 1} AND day <= $${page.length} GROUP BY address_id) c ON c.address_id = a.address_id`
    }
    page.push(query.limit, query.offset)
    const [agents, counted] = await Promise.all([
      this.#read<AgentRow>(
        `SELECT a.* FROM agents a ${join} ${filter} ORDER BY ${agentOrderBy(query)} LIMIT $${page.length - 1} OFFSET $${page.length}`,
        page,
      ),
      this.#readOne<{ n: number }>(`SELECT count(*) AS n FROM agents a ${filter}`, params),
    ])
    return { agents, total: (counted as { n: number }).n }
  }

  /**
   * The fair gate in front of agent rows. PostgreSQL grants a row's FOR SHARE to a newcomer
   * while an UPDATE of that row is already waiting, so under steady traffic a kill could wait
   * forever. Every transaction that locks agent rows therefore first takes a transaction
   * advisory lock per agent (keyed by address) in the same mode — shared for accepts,
   * deliveries, resolves and holds, exclusive for kill, resume, policy writes and heartbeats —
   * always in address order. Advisory locks are queued fairly: once a kill asks, later
   * accepts wait behind it, and it runs as soon as the in-flight ones commit.
   */
  async #gate(tx: Tx, addresses: string[], exclusive: ReadonlySet<string> = new Set()): Promise<void> {
    const sorted = [...new Set(addresses)].sort()
    if (exclusive.size === 0) {
      await tx.run('SELECT pg_advisory_xact_lock_shared($1::int, hashtext(a)) FROM unnest($2::text[]) AS a', [LOCK_AGENT, sorted])
      return
    }
    for (const address of sorted) {
      const fn = exclusive.has(address) ? 'pg_advisory_xact_lock' : 'pg_advisory_xact_lock_shared'
      await tx.run(`SELECT ${fn}($1::int, hashtext($2))`, [LOCK_AGENT, address])
    }
  }

  /** `#gate` for one agent known by address_id (nothing is locked when it does not exist). */
  async #gateById(tx: Tx, addressId: string, exclusive: boolean): Promise<void> {
    const fn = exclusive ? 'pg_advisory_xact_lock' : 'pg_advisory_xact_lock_shared'
    await tx.run(`SELECT ${fn}($1::int, hashtext(address)) FROM agents WHERE address_id = $2`, [LOCK_AGENT, addressId])
  }

  /**
   * Registers the addresses that are new (in address order, so concurrent first sends
   * between two new agents cannot deadlock) and returns the rows, `FOR SHARE` in address_id
   * order when `share` is set: a concurrent kill's UPDATE waits for this transaction, and a
   * kill that committed first is seen.
   */
  async #ensureAgents(
    tx: Tx,
    addresses: string[],
    now: number,
    share: boolean,
    register: readonly string[] = [],
  ): Promise<Map<string, AgentRow>> {
    const unique = [...new Set(addresses)].sort()
    const select = `SELECT * FROM agents WHERE address = ANY($1::text[]) ORDER BY address_id${share ? ' FOR SHARE' : ''}`
    const found = new Map((await tx.rows<AgentRow>(select, [unique])).map((r) => [r.address, r]))
    // A recipient alone is not registered; a sender or a key's agent is (once).
    const unmarked = register.filter((a) => found.get(a)?.registered_at === null)
    if (unmarked.length > 0) {
      await tx.run('UPDATE agents SET registered_at = $2 WHERE address = ANY($1::text[]) AND registered_at IS NULL', [unmarked, now])
      for (const a of unmarked) found.set(a, { ...(found.get(a) as AgentRow), registered_at: now })
    }
    const missing = unique.filter((a) => !found.has(a))
    this.#remember([...found.keys()])
    if (missing.length === 0) return found
    // Callers take the fleet lock before their gates when an address is not known to exist;
    // this is the safety net for a caller that did not (its order could deadlock, then retry).
    await this.#fleetShared(tx)
    // New rows are invisible to others until commit; a concurrent insert of the same address
    // waits for this transaction and then does nothing.
    const inserted = new Set(
      (
        await tx.rows<{ address: string }>(
          `INSERT INTO agents (address_id, address, created_at, registered_at)
           SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) ON CONFLICT (address) DO NOTHING
           RETURNING address`,
          [missing.map(() => newAddressId()), missing, missing.map(() => now), missing.map((a) => (register.includes(a) ? now : null))],
        )
      ).map((r) => r.address),
    )
    for (const row of await tx.rows<AgentRow>(select, [missing])) {
      found.set(row.address, inserted.has(row.address) ? await this.#appeared(tx, row, now) : row)
    }
    // A concurrent send inserted one of them first, as a mere recipient.
    const late = register.filter((a) => found.get(a)?.registered_at === null)
    if (late.length > 0) {
      await tx.run('UPDATE agents SET registered_at = $2 WHERE address = ANY($1::text[]) AND registered_at IS NULL', [late, now])
      for (const a of late) found.set(a, { ...(found.get(a) as AgentRow), registered_at: now })
    }
    return found
  }

  // ---- intents ----
  async acceptIntent(input: AcceptIntentInput): Promise<AcceptIntentResult> {
    return this.#tx(async (tx) => {
      const { intent, now } = input
      if (!this.#known.has(intent.from_agent) || !this.#known.has(intent.to_agent)) await this.#fleetShared(tx)
      await this.#gate(tx, [intent.from_agent, intent.to_agent])
      const agents = await this.#ensureAgents(tx, [intent.from_agent, intent.to_agent], now, true, [intent.from_agent])
      const from = agents.get(intent.from_agent) as AgentRow
      const to = agents.get(intent.to_agent) as AgentRow
      if (input.idempotency) {
        // Claiming the key first makes a concurrent request with the same key wait for this
        // transaction, then replay its intent (or take the key over if this one rolled back).
        const claimed = await tx.run(
          `INSERT INTO idempotency_keys (from_address_id, idem_key, request_hash, intent_id, created_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
          [from.address_id, input.idempotency.key, input.idempotency.request_hash, intent.intent_id, now],
        )
        if (claimed === 0) {
          const prior = await tx.one<{ request_hash: string; intent_id: string }>(
            'SELECT request_hash, intent_id FROM idempotency_keys WHERE from_address_id = $1 AND idem_key = $2',
            [from.address_id, input.idempotency.key],
          )
          if (prior) {
            if (prior.request_hash !== input.idempotency.request_hash) input.onIdempotencyMismatch()
            const original = await tx.one<IntentRow>('SELECT * FROM intents WHERE intent_id = $1', [prior.intent_id])
            if (original) return { intent: original, replayed: true }
          }
          // The original intent was purged: the key now names the new one.
          await tx.run(
            `UPDATE idempotency_keys SET request_hash = $3, intent_id = $4, created_at = $5
             WHERE from_address_id = $1 AND idem_key = $2`,
            [from.address_id, input.idempotency.key, input.idempotency.request_hash, intent.intent_id, now],
          )
        }
      }
      // Read after the shared gate: a quarantine of the sending instance either committed before
      // (seen here) or waits for this transaction (its exclusive gate).
      const fromInstance = input.from_instance ?? null
      const fromQuarantine = fromInstance === null ? null : await this.#quarantine(tx, from.address_id, fromInstance)
      const row = await this.#acceptLocked(tx, from, to, intent, input.actor, now, input.decide, fromQuarantine)
      return { intent: row, replayed: false }
    })
  }

  /** With both agent rows share-locked: policies, counters, core's decision, then the writes. */
  async #acceptLocked(
    tx: Tx,
    from: AgentRow,
    to: AgentRow,
    intent: NewIntent,
    actor: string,
    now: number,
    decide: AcceptDecision,
    fromQuarantine: InstanceQuarantineRow | null = null,
  ): Promise<IntentRow> {
    const withPolicies = [from, to].filter((a) => a.policy_version !== 0).map((a) => a.address_id)
    const policies =
      withPolicies.length === 0
        ? []
        : await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [withPolicies])
    const { day, hour } = windowOf(now)
    const counters = await this.#countersForDecision(tx, [from.address_id, to.address_id], withPolicies, now)
    const parties: Parties = {
      from,
      to,
      from_quarantine: fromQuarantine,
      from_policies: from.policy_version === 0 ? [] : policies.filter((p) => p.address_id === from.address_id || p.address_id === DEFAULT_POLICY_OWNER),
      to_policies: to.policy_version === 0 ? [] : policies.filter((p) => p.address_id === to.address_id || p.address_id === DEFAULT_POLICY_OWNER),
      from_counters: counters.get(from.address_id) as AgentCounters,
      to_counters: counters.get(to.address_id) as AgentCounters,
    }
    for (const event of decide(parties) ?? []) this.#meshEvent(tx, event)
    const delta = new Map<string, { sent: number; received: number }>()
    const bump = (id: string, sent: number, received: number): void => {
      const d = delta.get(id) ?? { sent: 0, received: 0 }
      delta.set(id, { sent: d.sent + sent, received: d.received + received })
    }
    bump(from.address_id, 1, 0)
    bump(to.address_id, 0, 1)
    const ids = [...delta.keys()].sort()
    const sent = ids.map((id) => delta.get(id)?.sent ?? 0)
    const received = ids.map((id) => delta.get(id)?.received ?? 0)
    const row = (await tx.one<IntentRow>(
      `INSERT INTO intents (intent_id, intent_type, from_address_id, to_address_id, from_agent, to_agent, payload, correlation_id,
         reply_to, deadline_at, max_delivery_attempts, status, delivery_state, available_at, created_at, updated_at, trace_id, last_event_seq)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'SUBMITTED', 'queued', $12, $12, $12, $13, 2) RETURNING *`,
      [
        intent.intent_id,
        intent.intent_type,
        from.address_id,
        to.address_id,
        intent.from_agent,
        intent.to_agent,
        intent.payload,
        intent.correlation_id,
        intent.reply_to,
        intent.deadline_at,
        intent.max_delivery_attempts,
        now,
        intent.trace_id,
      ],
    )) as IntentRow
    const events = new EventBatch()
    events.add({ intent_id: intent.intent_id, seq: 1, event_type: 'intent.created', status: 'SUBMITTED', actor, at: now, details: null })
    events.add({ intent_id: intent.intent_id, seq: 2, event_type: 'intent.submitted', status: 'SUBMITTED', actor, at: now, details: null })
    await events.write(tx)
    // Counted last (day rows, then hour rows, by address_id: the order every counter writer
    // uses), so a shared recipient's counter rows stay locked only for the final statements.
    await tx.run(
      `INSERT INTO counters_day (address_id, day, sent, received)
       SELECT a, $2::text, s, r FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS v(a, s, r)
       ON CONFLICT (address_id, day) DO UPDATE SET sent = counters_day.sent + excluded.sent,
         received = counters_day.received + excluded.received`,
      [ids, day, sent, received],
    )
    await tx.run(
      `INSERT INTO counters_hour (address_id, hour, sent, received)
       SELECT a, $2::text, s, r FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS v(a, s, r)
       ON CONFLICT (address_id, hour) DO UPDATE SET sent = counters_hour.sent + excluded.sent,
         received = counters_hour.received + excluded.received`,
      [ids, hour, sent, received],
    )
    tx.changes.push({ type: 'intent.available', address_id: to.address_id })
    return row
  }

  /**
   * The counters core decides on. Policies hold under concurrency (DESIGN §2.6) because,
   * for every party with policies, its hour and day counter rows are created if missing and
   * locked `FOR UPDATE` before they are read, and stay locked until this transaction has
   * written its increment and committed: concurrent accepts involving that agent, on any
   * replica, read-decide-increment one after the other, so 300 concurrent sends against a
   * limit of 100 accept exactly 100. A single conditional `UPDATE … WHERE sent < limit`
   * cannot express core's decision (several policies, both windows, both parties, resume
   * baselines), which is an opaque callback; the row lock keeps that decision in core. The
   * rows of parties without policies are read without locks (nothing is decided on them)
   * and incremented by upserts. A policy write bumps the agent's policy_version under a row
   * lock that conflicts with this transaction's FOR SHARE, so the two never interleave.
   */
  async #countersForDecision(tx: Tx, addressIds: string[], lockIds: string[], now: number): Promise<Map<string, AgentCounters>> {
    const { day, hour } = windowOf(now)
    const locked = [...new Set(lockIds)].sort()
    if (locked.length > 0) {
      await tx.run(
        'INSERT INTO counters_day (address_id, day) SELECT unnest($1::text[]), $2::text ON CONFLICT DO NOTHING',
        [locked, day],
      )
      await tx.run(
        'INSERT INTO counters_hour (address_id, hour) SELECT unnest($1::text[]), $2::text ON CONFLICT DO NOTHING',
        [locked, hour],
      )
      await tx.run(
        'SELECT 1 FROM counters_day WHERE address_id = ANY($1::text[]) AND day = $2 ORDER BY address_id FOR UPDATE',
        [locked, day],
      )
      await tx.run(
        'SELECT 1 FROM counters_hour WHERE address_id = ANY($1::text[]) AND hour = $2 ORDER BY address_id FOR UPDATE',
        [locked, hour],
      )
    }
    return this.#readCounters((sql, params) => tx.rows(sql, params), [...new Set(addressIds)], now)
  }

  async #readCounters(
    query: <R>(sql: string, params: unknown[]) => Promise<R[]>,
    addressIds: string[],
    now: number,
  ): Promise<Map<string, AgentCounters>> {
    const { day, hour } = windowOf(now)
    type Row = { id: string; sd: number | null; rd: number | null; ed: number | null; cd: number | null; sh: number | null; rh: number | null; eh: number | null }
    const rows = await query<Row>(
      `SELECT a.id, d.sent AS sd, d.received AS rd, d.egress AS ed, d.cost_usd AS cd, h.sent AS sh, h.received AS rh, h.egress AS eh
       FROM unnest($1::text[]) AS a(id)
       LEFT JOIN counters_day d ON d.address_id = a.id AND d.day = $2
       LEFT JOIN counters_hour h ON h.address_id = a.id AND h.hour = $3`,
      [addressIds, day, hour],
    )
    return new Map(
      rows.map((r) => [
        r.id,
        {
          day,
          hour,
          sent_hour: r.sh ?? 0,
          sent_day: r.sd ?? 0,
          received_hour: r.rh ?? 0,
          received_day: r.rd ?? 0,
          egress_hour: Number(r.eh ?? 0),
          egress_day: Number(r.ed ?? 0),
          cost_day: r.cd ?? 0,
        },
      ]),
    )
  }

  async getIntent(intentId: string): Promise<IntentRow | undefined> {
    return this.#readOne<IntentRow>('SELECT * FROM intents WHERE intent_id = $1', [intentId])
  }

  async listIntentEvents(intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
    return this.#read<IntentEventRow>(
      'SELECT * FROM intent_events WHERE intent_id = $1 AND seq > $2 ORDER BY seq LIMIT $3',
      [intentId, since, limit],
    )
  }

  async listIntents(query: IntentListQuery): Promise<IntentRow[]> {
    const where: string[] = []
    const params: unknown[] = [query.address_id]
    if (query.direction === 'sent') where.push('from_address_id = $1')
    else if (query.direction === 'received') where.push('to_address_id = $1')
    else where.push('(from_address_id = $1 OR to_address_id = $1)')
    if (query.status) {
      params.push(query.status)
      where.push(`status = $${params.length}`)
    }
    if (query.after) {
      params.push(query.after)
      where.push(`seqno < coalesce((SELECT seqno FROM intents WHERE intent_id = $${params.length}), 0)`)
    }
    params.push(query.limit)
    return this.#read<IntentRow>(
      `SELECT * FROM intents WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT $${params.length}`,
      params,
    )
  }

  async claimDeliveries(input: ClaimInput): Promise<ClaimResult> {
    return this.#tx(async (tx) => {
      await this.#gateById(tx, input.address_id, false)
      const recipient = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR SHARE', [input.address_id])
      if (!recipient) throw new GatewayError('not_found', 'agent not found')
      // Its own statement after the gate and the row lock: a quarantine that committed while this
      // transaction waited is seen; one that starts now waits for this transaction (and then
      // requeues whatever this claim leases).
      input.decide(recipient, await this.#quarantine(tx, input.address_id, input.instance_id))
      // One claim at a time per (address, instance), so max_in_flight holds across replicas.
      await tx.run('SELECT pg_advisory_xact_lock($1::int, hashtext($2))', [LOCK_CLASS + LOCK_CLAIM, `${input.address_id}\n${input.instance_id}`])
      const inFlight =
        (
          await tx.one<{ n: number }>(
            `SELECT count(*) AS n FROM intents WHERE to_address_id = $1 AND delivery_state = 'leased' AND lease_instance = $2`,
            [input.address_id, input.instance_id],
          )
        )?.n ?? 0
      const room = Math.min(input.max_in_flight - inFlight, input.max_batch)
      if (room <= 0) return { deliveries: [], has_room: false, next_due_at: null }
      // Competing consumers skip each other's rows. The sender filter is the store half of
      // core's delivery rule; the sender rows are share-locked so a concurrent kill of a
      // sender is either seen here or waits for this transaction.
      const candidates = await tx.rows<IntentRow>(
        `SELECT i.* FROM intents i JOIN agents f ON f.address_id = i.from_address_id
         WHERE i.to_address_id = $1 AND i.delivery_state = 'queued' AND i.available_at <= $2
           AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
           AND (i.deadline_at IS NULL OR i.deadline_at > $2)
         ORDER BY i.available_at, i.seqno LIMIT $3
         FOR UPDATE OF i SKIP LOCKED FOR SHARE OF f`,
        [input.address_id, input.now, room],
      )
      if (candidates.length === 0) return { deliveries: [], has_room: true, next_due_at: await this.#nextDue(tx, input) }
      // Per-address seqs from a counter row, locked until commit: commit-ordered (DESIGN §11).
      const last = (
        (await tx.one<{ last_seq: number }>(
          `INSERT INTO address_seq (address_id, last_seq) VALUES ($1, $2)
           ON CONFLICT (address_id) DO UPDATE SET last_seq = address_seq.last_seq + excluded.last_seq RETURNING last_seq`,
          [input.address_id, candidates.length],
        )) as { last_seq: number }
      ).last_seq
      const first = last - candidates.length + 1
      const seqs = candidates.map((_c, i) => first + i)
      const leased = await tx.rows<IntentRow>(
        `UPDATE intents i SET status = 'DELIVERED', delivery_state = 'leased', delivery_attempt = i.delivery_attempt + 1,
           delivery_seq = v.seq, lease_instance = $3, lease_expires_at = $4, lease_ms = $5,
           updated_at = $6, last_event_seq = i.last_event_seq + 1
         FROM unnest($1::text[], $2::bigint[]) AS v(intent_id, seq)
         WHERE i.intent_id = v.intent_id RETURNING i.*`,
        [candidates.map((c) => c.intent_id), seqs, input.instance_id, input.now + input.lease_ms, input.lease_ms, input.now],
      )
      leased.sort((a, b) => (a.delivery_seq ?? 0) - (b.delivery_seq ?? 0))
      const events = new EventBatch()
      const deliveries: Delivery[] = []
      for (const row of leased) {
        const seq = row.delivery_seq as number
        const eventType = row.delivery_attempt > 1 ? 'intent.redelivered' : 'intent.delivered'
        events.add({
          intent_id: row.intent_id,
          seq: row.last_event_seq,
          event_type: eventType,
          status: 'DELIVERED',
          actor: 'system',
          at: input.now,
          details: JSON.stringify({ instance_id: input.instance_id, delivery_seq: seq, delivery_attempt: row.delivery_attempt }),
        })
        tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
        deliveries.push({ intent: row, seq, event_type: eventType })
      }
      await events.write(tx)
      const hasRoom = inFlight + deliveries.length < input.max_in_flight
      // During a paced resume more held work becomes due later: tell the stream when.
      return { deliveries, has_room: hasRoom, next_due_at: hasRoom ? await this.#nextDue(tx, input) : null }
    })
  }

  async #nextDue(tx: Tx, input: ClaimInput): Promise<number | null> {
    const due = await tx.one<{ at: number | null }>(
      `SELECT min(available_at) AS at FROM intents WHERE to_address_id = $1 AND delivery_state = 'queued' AND available_at > $2`,
      [input.address_id, input.now],
    )
    return due?.at ?? null
  }

  async leasedDeliveries(addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]> {
    return this.#read<IntentRow>(
      `SELECT * FROM intents WHERE to_address_id = $1 AND lease_instance = $2 AND delivery_state = 'leased'
         AND delivery_seq > $3 AND lease_expires_at > $4 ORDER BY delivery_seq`,
      [addressId, instanceId, since, now],
    )
  }

  async updateIntent(input: IntentUpdateInput): Promise<IntentUpdateResult> {
    return this.#tx(async (tx) => {
      const ids = await tx.one<{ from_address_id: string; to_address_id: string; from_agent: string; to_agent: string; reply_to: string | null }>(
        'SELECT from_address_id, to_address_id, from_agent, to_agent, reply_to FROM intents WHERE intent_id = $1',
        [input.intent_id],
      )
      if (!ids) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
      // A completion may send to reply_to, which may be a new agent (fleet lock before gates).
      if (ids.reply_to !== null && !this.#known.has(ids.reply_to)) await this.#fleetShared(tx)
      await this.#gate(tx, [ids.from_agent, ids.to_agent], new Set(tx.lockForCost ? [ids.to_agent] : []))
      // Agent rows before the intent row (the global lock order). The recipient's row is
      // locked for update only on the rerun after a cost ceiling asked to kill it.
      const agents = new Map<string, AgentRow>()
      for (const id of [...new Set([ids.from_address_id, ids.to_address_id])].sort()) {
        const mode = tx.lockForCost && id === ids.to_address_id ? 'FOR NO KEY UPDATE' : 'FOR SHARE'
        const row = await tx.one<AgentRow>(`SELECT * FROM agents WHERE address_id = $1 ${mode}`, [id])
        if (row) agents.set(id, row)
      }
      const intent = await tx.one<IntentRow>('SELECT * FROM intents WHERE intent_id = $1 FOR UPDATE', [input.intent_id])
      if (!intent) throw new GatewayError('not_found', `intent ${input.intent_id} not found`)
      const recipient = agents.get(intent.to_address_id) as AgentRow
      const sender = agents.get(intent.from_address_id) as AgentRow
      const instanceId = input.instance_id ?? null
      const quarantine = instanceId === null ? null : await this.#quarantine(tx, intent.to_address_id, instanceId)
      const change = input.decide({ intent, recipient, sender, quarantine })
      await tx.run(
        `UPDATE intents SET status = $2, delivery_state = $3, lease_expires_at = $4,
           lease_instance = CASE WHEN $3 = 'leased' THEN lease_instance ELSE NULL END,
           result = coalesce($5, result), error = coalesce($6, error), cost_usd = coalesce($7, cost_usd),
           updated_at = $8
         WHERE intent_id = $1`,
        [
          intent.intent_id,
          change.status,
          change.delivery_state,
          change.lease_expires_at,
          change.result ?? null,
          change.error ?? null,
          change.cost_usd ?? null,
          input.now,
        ],
      )
      let event: IntentEventRow | null = null
      if (change.event_type) {
        const seq = await this.#bumpEventSeq(tx, intent.intent_id)
        event = {
          intent_id: intent.intent_id,
          seq,
          event_type: change.event_type,
          status: change.status,
          actor: input.actor,
          at: input.now,
          details: change.event_details ? JSON.stringify(change.event_details) : null,
        }
        const batch = new EventBatch()
        batch.add(event)
        await batch.write(tx)
        tx.changes.push({ type: 'intent.event', intent_id: intent.intent_id })
      }
      if (intent.delivery_state === 'leased' && change.delivery_state !== 'leased' && intent.lease_instance) {
        tx.changes.push({ type: 'slot.freed', address_id: intent.to_address_id, instance_id: intent.lease_instance })
      }
      if (change.cost_usd && change.cost_usd > 0 && input.cost_rule) {
        await this.#applyCost(tx, recipient, change.cost_usd, input.now, input.cost_rule, tx.lockForCost)
      }
      let followUp: IntentUpdateResult['follow_up'] = null
      if (change.follow_up) {
        const { intent: next, decide } = change.follow_up
        // A rejected follow-up (e.g. reply_to agent killed) must not undo the resolve: savepoint.
        const mark = tx.changes.length
        await tx.run('SAVEPOINT follow_up')
        try {
          await this.#gate(tx, [next.from_agent, next.to_agent])
          const parties = await this.#ensureAgents(tx, [next.from_agent, next.to_agent], input.now, true)
          const row = await this.#acceptLocked(
            tx,
            parties.get(next.from_agent) as AgentRow,
            parties.get(next.to_agent) as AgentRow,
            next,
            input.actor,
            input.now,
            decide,
          )
          await tx.run('RELEASE SAVEPOINT follow_up')
          followUp = { accepted: true, intent: row }
        } catch (error) {
          // The database failing is the whole transaction's failure, not the follow-up's.
          if (isConnectionError(error) || isRetryableConflict(error)) throw error
          await tx.run('ROLLBACK TO SAVEPOINT follow_up')
          tx.changes.length = mark
          followUp = { accepted: false, error }
        }
      }
      const updated = (await tx.one<IntentRow>('SELECT * FROM intents WHERE intent_id = $1', [intent.intent_id])) as IntentRow
      return { intent: updated, event, follow_up: followUp }
    })
  }

  async #bumpEventSeq(tx: Tx, intentId: string): Promise<number> {
    const row = await tx.one<{ last_event_seq: number }>(
      'UPDATE intents SET last_event_seq = last_event_seq + 1 WHERE intent_id = $1 RETURNING last_event_seq',
      [intentId],
    )
    return (row as { last_event_seq: number }).last_event_seq
  }

  async expireLeases(now: number, limit: number): Promise<ExpireLeasesResult> {
    return this.#tx(async (tx) => {
      // Every replica sweeps; SKIP LOCKED hands each expired lease to one of them.
      const rows = await tx.rows<IntentRow>(
        `SELECT * FROM intents WHERE delivery_state = 'leased' AND lease_expires_at <= $1
         ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [now, limit],
      )
      let requeued = 0
      let failed = 0
      const events = new EventBatch()
      for (const row of rows) {
        if (TERMINAL.has(row.status)) continue
        if (row.delivery_attempt - row.kill_dropped >= row.max_delivery_attempts) {
          const seq = await this.#bumpEventSeq(tx, row.intent_id)
          const error = JSON.stringify({
            code: 'delivery_failed',
            message: `not resolved after ${row.delivery_attempt} delivery attempts`,
          })
          await tx.run(
            `UPDATE intents SET status = 'FAILED', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
               error = $2, updated_at = $3 WHERE intent_id = $1`,
            [row.intent_id, error, now],
          )
          events.add({ intent_id: row.intent_id, seq, event_type: 'intent.delivery_failed', status: 'FAILED', actor: 'system', at: now, details: error })
          failed += 1
        } else if (await this.#isKilled(tx, row.to_address_id)) {
          // The recipient was killed meanwhile: the work is held for its resume, not requeued.
          const [r] = await tx.rows<{ last_event_seq: number; status: IntentStatus }>(HOLD, [[row.intent_id], now])
          if (r) events.add({ intent_id: row.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: 'system', at: now, details: null })
        } else {
          // Back in the queue; the next delivery records `intent.redelivered` with a new seq.
          await tx.run(
            `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
               available_at = $2, updated_at = $2 WHERE intent_id = $1`,
            [row.intent_id, now],
          )
          tx.changes.push({ type: 'intent.available', address_id: row.to_address_id })
          requeued += 1
        }
        tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
        if (row.lease_instance) {
          tx.changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
        }
      }
      await events.write(tx)
      return { requeued, failed }
    })
  }

  async #isKilled(tx: Tx, addressId: string): Promise<boolean> {
    const row = await tx.one<{ killed_at: number | null }>('SELECT killed_at FROM agents WHERE address_id = $1', [addressId])
    return (row?.killed_at ?? null) !== null
  }

  async timeOutIntents(now: number, limit: number): Promise<number> {
    return this.#tx(async (tx) => {
      type Due = { intent_id: string; to_address_id: string; lease_instance: string | null; delivery_state: string }
      const rows = await tx.rows<Due>(
        `SELECT intent_id, to_address_id, lease_instance, delivery_state FROM intents
         WHERE deadline_at IS NOT NULL AND deadline_at <= $1 AND delivery_state <> 'done'
         ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [now, limit],
      )
      if (rows.length === 0) return 0
      const updated = await tx.rows<{ intent_id: string; last_event_seq: number }>(
        `UPDATE intents SET status = 'TIMED_OUT', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
           updated_at = $2, last_event_seq = last_event_seq + 1 WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq`,
        [rows.map((r) => r.intent_id), now],
      )
      const events = new EventBatch()
      for (const u of updated) {
        events.add({ intent_id: u.intent_id, seq: u.last_event_seq, event_type: 'intent.timed_out', status: 'TIMED_OUT', actor: 'system', at: now, details: null })
      }
      await events.write(tx)
      for (const row of rows) {
        tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
        if (row.delivery_state === 'leased' && row.lease_instance) {
          tx.changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
        }
      }
      return rows.length
    })
  }

  async purge(before: number, idempotencyBefore: number, limit: number): Promise<number> {
    return this.#tx(async (tx) => {
      const ids = await tx.rows<{ intent_id: string }>(
        `DELETE FROM intents WHERE seqno IN (
           SELECT seqno FROM intents WHERE delivery_state = 'done' AND updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING intent_id`,
        [before, limit],
      )
      if (ids.length > 0) {
        await tx.run('DELETE FROM intent_events WHERE intent_id = ANY($1::text[])', [ids.map((r) => r.intent_id)])
      }
      await tx.run('DELETE FROM idempotency_keys WHERE created_at < $1', [idempotencyBefore])
      return ids.length
    })
  }

  // ---- kill switch ----
  async killAgent(input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return this.#tx(async (tx) => {
      // Waits for every in-flight accept, delivery and resolve of the agent (gate, FOR SHARE).
      const waitStart = performance.now()
      await this.#gateById(tx, input.address_id, true)
      // The kill takes effect once they are done: the clock is read again now, so killed_at is
      // not before the creation or delivery time of anything committed ahead of it, including
      // transactions that began after `input.now` was read while this one waited for a pooled
      // connection (the SQLite engine reads the clock right before its synchronous transaction).
      // Without a clock, the wait is added to `input.now`.
      const killedAt =
        input.clock === undefined
          ? input.now + Math.floor(performance.now() - waitStart)
          : Math.max(input.now, input.clock())
      const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      if (input.guard && !input.guard(before)) return { agent: before, changed: false }
      const after = await tx.one<AgentRow>(KILL, [input.address_id, killedAt, input.reason, input.actor])
      if (!after) return { agent: before, changed: false }
      const record = atKillTime(input.record, input.now, killedAt)
      return { agent: await this.#recordKill(tx, before, after, { ...input, record }), changed: true }
    }, this.#controlPool)
  }

  async #quarantine(tx: Tx, addressId: string, instanceId: string): Promise<InstanceQuarantineRow | null> {
    return (
      (await tx.one<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2', [
        addressId,
        instanceId,
      ])) ?? null
    )
  }

  /**
   * Like a kill, a quarantine takes the agent's gate exclusively: it waits for every in-flight
   * claim, ack, resolve and send of the agent (shared gate, FOR SHARE), so the leases it takes
   * back include any claim that committed before it, and every one that starts later reads the
   * quarantine row.
   */
  async quarantineInstance(input: QuarantineInput): Promise<QuarantineResult> {
    return this.#tx(async (tx) => {
      await this.#gateById(tx, input.address_id, true)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const inserted = await tx.one<InstanceQuarantineRow>(
        `INSERT INTO instance_quarantines (address_id, instance_id, quarantined_at, actor, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING *`,
        [input.address_id, input.instance_id, input.now, input.actor, input.reason],
      )
      if (!inserted) {
        const existing = (await this.#quarantine(tx, input.address_id, input.instance_id)) as InstanceQuarantineRow
        return { agent, quarantine: existing, changed: false, requeued: 0 }
      }
      // Its leases back to the queue, due now; the dropped lease is not a delivery attempt.
      const requeued = await tx.rows<{ intent_id: string }>(
        `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
           kill_dropped = kill_dropped + 1, available_at = $3, updated_at = $3
         WHERE to_address_id = $1 AND delivery_state = 'leased' AND lease_instance = $2 RETURNING intent_id`,
        [input.address_id, input.instance_id, input.now],
      )
      const { audit, event } = input.record(agent, inserted, requeued.length)
      this.#audit(tx, audit)
      this.#meshEvent(tx, event)
      // NOTIFYed in this order: every replica cuts the instance's streams before it wakes a sibling.
      tx.changes.push({ type: 'instance.quarantined', address_id: input.address_id, instance_id: input.instance_id })
      if (requeued.length > 0) tx.changes.push({ type: 'intent.available', address_id: input.address_id })
      return { agent, quarantine: inserted, changed: true, requeued: requeued.length }
    }, this.#controlPool)
  }

  async liftQuarantine(input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
    return this.#tx(async (tx) => {
      await this.#gateById(tx, input.address_id, true)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const lifted = await tx.one<InstanceQuarantineRow>(
        'DELETE FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2 RETURNING *',
        [input.address_id, input.instance_id],
      )
      if (!lifted) return { agent, changed: false, lifted: null }
      const { audit, event } = input.record(agent, lifted)
      this.#audit(tx, audit)
      this.#meshEvent(tx, event)
      return { agent, changed: true, lifted }
    }, this.#controlPool)
  }

  async getQuarantine(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
    return this.#readOne<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 AND instance_id = $2', [
      addressId,
      instanceId,
    ])
  }

  async listQuarantines(addressId: string): Promise<InstanceQuarantineRow[]> {
    return this.#read<InstanceQuarantineRow>('SELECT * FROM instance_quarantines WHERE address_id = $1 ORDER BY instance_id', [
      addressId,
    ])
  }

  /** The rest of a kill's transaction once the agent row flipped: audit, event, notification. */
  async #recordKill(tx: Tx, before: AgentRow, after: AgentRow, input: Pick<KillInput, 'policy_id' | 'record'>): Promise<AgentRow> {
    if (input.policy_id !== null) {
      await tx.run('UPDATE agents SET auto_kill_policy_id = $1 WHERE address_id = $2', [input.policy_id, after.address_id])
    }
    const { audit, event } = input.record(before, after)
    this.#audit(tx, audit)
    this.#meshEvent(tx, event)
    tx.changes.push({ type: 'agent.killed', address_id: after.address_id })
    return { ...after, auto_kill_policy_id: input.policy_id ?? after.auto_kill_policy_id }
  }

  async holdBacklog(input: HoldInput): Promise<{ held: number; canceled: number }> {
    return this.#tx(async (tx) => {
      // Share-locked: a resume in between either commits first (nothing to hold) or waits.
      await this.#gateById(tx, input.address_id, false)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR SHARE', [input.address_id])
      if (!agent || agent.killed_at === null) return { held: 0, canceled: 0 }
      const details = JSON.stringify({ reason: input.reason, killed_agent: agent.address })
      const events = new EventBatch()
      // Its inbound backlog (queued or leased to it) and its own undelivered output, locked in
      // one statement in seqno order, so two agents killed at once cannot deadlock here.
      const rows = await tx.rows<Holdable & { to_address_id: string }>(
        `SELECT intent_id, delivery_state, lease_instance, last_event_seq, status, to_address_id FROM intents
         WHERE intent_id IN (
           (SELECT intent_id FROM intents WHERE to_address_id = $1 AND delivery_state = 'queued' ORDER BY seqno LIMIT $2)
           UNION ALL
           (SELECT intent_id FROM intents WHERE to_address_id = $1 AND delivery_state = 'leased' ORDER BY seqno LIMIT $2)
           UNION ALL
           (SELECT intent_id FROM intents WHERE from_address_id = $1 AND delivery_state = 'queued' AND delivery_attempt = 0
            ORDER BY seqno LIMIT $2))
           -- Rechecked on the newest row version after waiting for a lock.
           AND ((to_address_id = $1 AND delivery_state IN ('queued', 'leased'))
             OR (from_address_id = $1 AND delivery_state = 'queued' AND delivery_attempt = 0))
         ORDER BY seqno FOR UPDATE`,
        [input.address_id, input.limit],
      )
      const inbound = rows.filter((r) => r.to_address_id === input.address_id).slice(0, input.limit)
      const outbound = rows.filter((r) => r.to_address_id !== input.address_id).slice(0, input.limit - inbound.length)
      const heldIn = await tx.rows<{ intent_id: string; last_event_seq: number; status: IntentStatus }>(HOLD, [
        inbound.map((r) => r.intent_id),
        input.now,
      ])
      for (const r of heldIn) {
        events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: input.actor, at: input.now, details })
        tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
      }
      let held = heldIn.length
      let canceled = 0
      const outIds = outbound.map((r) => r.intent_id)
      if (input.cancel_pending) {
        const error = JSON.stringify({ code: 'canceled', message: 'canceled by the kill of its sender', reason: input.reason })
        const rows = await tx.rows<{ intent_id: string; last_event_seq: number }>(
          `UPDATE intents SET status = 'CANCELED', delivery_state = 'done', updated_at = $2,
             error = $3, last_event_seq = last_event_seq + 1
           WHERE intent_id = ANY($1::text[]) RETURNING intent_id, last_event_seq`,
          [outIds, input.now, error],
        )
        for (const r of rows) {
          events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.canceled', status: 'CANCELED', actor: input.actor, at: input.now, details })
          tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
        }
        canceled = rows.length
      } else {
        const rows = await tx.rows<{ intent_id: string; last_event_seq: number; status: IntentStatus }>(HOLD, [outIds, input.now])
        for (const r of rows) {
          events.add({ intent_id: r.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: input.actor, at: input.now, details })
          tx.changes.push({ type: 'intent.event', intent_id: r.intent_id })
        }
        held += rows.length
      }
      await events.write(tx)
      return { held, canceled }
    })
  }

  async resumeAgent(input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
    return this.#tx(async (tx) => {
      await this.#gateById(tx, input.address_id, true)
      const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      const resumed = await this.#resumeOne(tx, before, input)
      if (resumed === null) return { agent: before, changed: false, redelivering: 0 }
      this.#audit(tx, resumed.audit)
      return { agent: resumed.agent, redelivering: resumed.redelivering, changed: true }
    }, this.#controlPool)
  }

  /** Clears one gated agent's kill and releases its held work (paced); null when it was not killed. */
  async #resumeOne(
    tx: Tx,
    before: AgentRow,
    input: Pick<ResumeInput, 'now' | 'rate_per_second' | 'record'>,
  ): Promise<{ agent: AgentRow; redelivering: number; audit: AuditDraft } | null> {
    {
      const after = await tx.one<AgentRow>(
        `UPDATE agents SET killed_at = NULL, kill_reason = NULL, kill_actor = NULL, resumed_at = $2, health_status = 'unknown'
         WHERE address_id = $1 AND killed_at IS NOT NULL RETURNING *`,
        [before.address_id, input.now],
      )
      if (!after) return null
      if (before.auto_kill_policy_id !== null) {
        // The policy that fired counts from here on, so the same window does not re-kill at once.
        const counters = (await this.#readCounters((sql, params) => tx.rows(sql, params), [before.address_id], input.now)).get(
          before.address_id,
        ) as AgentCounters
        const baseline = { policy_id: before.auto_kill_policy_id, ...counters }
        await tx.run('UPDATE agents SET enforcement_baseline = $1, auto_kill_policy_id = NULL WHERE address_id = $2', [
          JSON.stringify(baseline),
          before.address_id,
        ])
      }
      const rows = await tx.rows<{ intent_id: string; to_address_id: string }>(
        `SELECT i.intent_id, i.to_address_id FROM intents i
           JOIN agents t ON t.address_id = i.to_address_id
           JOIN agents f ON f.address_id = i.from_address_id
         WHERE i.delivery_state = 'held' AND (i.to_address_id = $1 OR i.from_address_id = $1)
           AND t.killed_at IS NULL AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
         ORDER BY i.seqno FOR UPDATE OF i`,
        [before.address_id],
      )
      // Paced in the store (available_at), so every replica honours the same budget.
      const spacing = 1000 / input.rate_per_second
      if (rows.length > 0) {
        await tx.run(
          `UPDATE intents i SET delivery_state = 'queued', available_at = v.at, updated_at = $3
           FROM unnest($1::text[], $2::bigint[]) AS v(intent_id, at) WHERE i.intent_id = v.intent_id`,
          [rows.map((r) => r.intent_id), rows.map((_r, i) => input.now + Math.floor(i * spacing)), input.now],
        )
      }
      const { audit, event } = input.record(before, after, rows.length)
      this.#meshEvent(tx, event)
      tx.changes.push({ type: 'agent.resumed', address_id: before.address_id })
      for (const id of new Set(rows.map((r) => r.to_address_id))) tx.changes.push({ type: 'intent.available', address_id: id })
      return { agent: after, redelivering: rows.length, audit }
    }
  }

  /**
   * The selection's agents, gated exclusively in address order and re-read locked, under the
   * exclusive fleet lock (taken first: no agent appears or is relabelled meanwhile).
   */
  async #lockSelection(tx: Tx, selection: AgentSelection): Promise<AgentRow[]> {
    await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
    const candidates = (await tx.rows<AgentRow>(AGENTS_BY_PREFIX, [selection.prefix.length, selection.prefix])).filter(selection.matches)
    if (candidates.length === 0) return []
    const addresses = candidates.map((a) => a.address)
    await tx.run('SELECT pg_advisory_xact_lock($1::int, hashtext(a)) FROM unnest($2::text[]) AS a', [LOCK_AGENT, addresses])
    return tx.rows<AgentRow>('SELECT * FROM agents WHERE address = ANY($1::text[]) ORDER BY address FOR NO KEY UPDATE', [addresses])
  }

  async killFleet(input: FleetKillInput): Promise<FleetKillResult> {
    return this.#tx(async (tx) => {
      const matching = await this.#lockSelection(tx, input.selection)
      input.guard(matching)
      // As for one kill: effective once the in-flight transactions of these agents are done.
      const killedAt = input.clock === undefined ? input.now : Math.max(input.now, input.clock())
      const fk = input.fleet_kill
      const live = matching.filter((a) => a.killed_at === null)
      const flipped = await tx.rows<AgentRow>(
        `UPDATE agents SET killed_at = $2, kill_reason = $3, kill_actor = $4
         WHERE address_id = ANY($1::text[]) AND killed_at IS NULL RETURNING *`,
        [live.map((a) => a.address_id), killedAt, fk.reason, fk.actor],
      )
      const byId = new Map(flipped.map((a) => [a.address_id, a]))
      await tx.run(
        `INSERT INTO fleet_kills (fleet_kill_id, selector, reason, actor, created_at, ended_at, ended_by)
         VALUES ($1, $2, $3, $4, $5, NULL, NULL)`,
        [fk.fleet_kill_id, fk.selector, fk.reason, fk.actor, killedAt],
      )
      const killedRows = live.filter((a) => byId.has(a.address_id)).map((a) => byId.get(a.address_id) as AgentRow)
      const already = matching.filter((a) => !byId.has(a.address_id))
      this.#audit(tx, { ...input.summary(killedRows, already), at: new Date(killedAt).toISOString() })
      const record = atKillTime(input.record, input.now, killedAt)
      const killed: AgentRow[] = []
      for (const before of live) {
        const after = byId.get(before.address_id)
        if (after) killed.push(await this.#recordKill(tx, before, after, { policy_id: null, record }))
      }
      return { killed, already_killed: already }
    }, this.#controlPool)
  }

  async resumeFleet(input: FleetResumeInput): Promise<FleetResumeResult> {
    return this.#tx(async (tx) => {
      const matching = await this.#lockSelection(tx, input.selection)
      input.guard(matching)
      const standing = await tx.rows<FleetKillRow>('SELECT * FROM fleet_kills WHERE ended_at IS NULL ORDER BY created_at, fleet_kill_id')
      const ended = await tx.rows<FleetKillRow>(
        'UPDATE fleet_kills SET ended_at = $2, ended_by = $3 WHERE fleet_kill_id = ANY($1::text[]) AND ended_at IS NULL RETURNING *',
        [standing.filter(input.ends).map((fk) => fk.fleet_kill_id), input.now, input.actor],
      )
      const resumed: { agent: AgentRow; redelivering: number; audit: AuditDraft }[] = []
      for (const before of matching) {
        if (before.killed_at === null) continue
        const r = await this.#resumeOne(tx, before, input)
        if (r) resumed.push(r)
      }
      this.#audit(tx, input.summary(resumed, ended))
      for (const r of resumed) this.#audit(tx, r.audit)
      return { resumed: resumed.map(({ agent, redelivering }) => ({ agent, redelivering })), ended }
    }, this.#controlPool)
  }

  async listFleetKills(standing: boolean, limit: number): Promise<FleetKillRow[]> {
    return this.#read<FleetKillRow>(
      `SELECT * FROM fleet_kills ${standing ? 'WHERE ended_at IS NULL' : ''} ORDER BY created_at DESC, fleet_kill_id LIMIT $1`,
      [limit],
    )
  }

  // ---- audit and mesh events ----
  /** Queues an audit entry; it is chained and written at the end of the transaction. */
  #audit(tx: Tx, draft: AuditDraft): void {
    tx.audits.push(draft)
  }

  /** Queues a mesh event (and its alerts); written at the end of the transaction. */
  #meshEvent(tx: Tx, draft: MeshEventDraft): void {
    tx.meshEvents.push(draft)
  }

  /**
   * Writes the transaction's audit entries and mesh events. The `store_heads` rows (audit
   * chain head, mesh event counter) are locked in one statement and kept until COMMIT, so
   * appends are serialized across replicas (DESIGN §11): the chain has no forks and mesh
   * event numbers are commit-ordered (live streams read `seqno > cursor`).
   */
  async #writeControl(tx: Tx): Promise<{ audit: AuditRow[]; mesh: MeshEventRow[] }> {
    const out = { audit: [] as AuditRow[], mesh: [] as MeshEventRow[] }
    if (tx.audits.length === 0 && tx.meshEvents.length === 0) return out
    const heads = await tx.rows<{ name: string; seq: number; hash: string | null }>(
      `SELECT name, seq, hash FROM store_heads WHERE name IN ('audit', 'mesh') ORDER BY name FOR UPDATE`,
    )
    const auditHead = heads.find((r) => r.name === 'audit')
    let seq = auditHead?.seq ?? 0
    let prevHash = auditHead?.hash ?? '0'.repeat(64)
    for (const draft of tx.audits.splice(0)) {
      seq += 1
      const row: AuditRow = {
        seq,
        at: draft.at,
        actor: draft.actor,
        action: draft.action,
        target: draft.target,
        reason: draft.reason,
        before: draft.before === undefined || draft.before === null ? null : JSON.stringify(draft.before),
        after: draft.after === undefined || draft.after === null ? null : JSON.stringify(draft.after),
        prev_hash: prevHash,
        hash: this.#config.hashAudit(prevHash, { ...draft, seq }),
      }
      await tx.run(
        `INSERT INTO audit_log (seq, at, actor, action, target, reason, before, after, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
        [row.seq, row.at, row.actor, row.action, row.target, row.reason, row.before, row.after, row.prev_hash, row.hash],
      )
      prevHash = row.hash
      out.audit.push(row)
    }
    if (out.audit.length > 0) await tx.run(`UPDATE store_heads SET seq = $1, hash = $2 WHERE name = 'audit'`, [seq, prevHash])
    let seqno = heads.find((r) => r.name === 'mesh')?.seq ?? 0
    const drafts = tx.meshEvents.splice(0)
    const hooks = drafts.length === 0 ? [] : await tx.rows<WebhookRow>('SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at')
    for (const draft of drafts) {
      seqno += 1
      const row = (await tx.one<MeshEventRow>(
        `INSERT INTO mesh_events (seqno, address_id, address, event_type, details, actor_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *`,
        [
          seqno,
          draft.address_id,
          draft.address,
          draft.event_type,
          draft.details === null ? null : JSON.stringify(draft.details),
          draft.actor_id,
          draft.created_at,
        ],
      )) as MeshEventRow
      tx.changes.push({ type: 'mesh.event', seqno })
      out.mesh.push(row)
      // Its alert, in the outbox of every matching webhook (same rule as the SQLite engine).
      for (const hook of hooks) {
        const alertId = `alt_${randomBase62(20)}`
        const alert = this.#config.alertFor(draft, alertId)
        if (!alert) break
        const types = hook.event_types === null ? null : (JSON.parse(hook.event_types) as string[])
        if (types && !types.includes(alert.type)) continue
        await tx.run(
          `INSERT INTO alert_outbox (alert_id, webhook_id, type, body, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5)`,
          [alertId, hook.webhook_id, alert.type, alert.body, draft.created_at],
        )
        tx.changes.push({ type: 'alert.queued' })
      }
    }
    if (out.mesh.length > 0) await tx.run(`UPDATE store_heads SET seq = $1 WHERE name = 'mesh'`, [seqno])
    return out
  }

  async appendAudit(draft: AuditDraft): Promise<AuditRow> {
    return this.#tx(async (tx) => {
      this.#audit(tx, draft)
      return (await this.#writeControl(tx)).audit[0] as AuditRow
    })
  }

  async listAudit(query: AuditQuery): Promise<AuditRow[]> {
    const where = ['seq > $1']
    const params: unknown[] = [query.after_seq]
    if (query.action_prefix !== null) {
      params.push(`${query.action_prefix.replace(/[\\%_]/g, (c) => `\\${c}`)}%`)
      where.push(`action LIKE $${params.length} ESCAPE '\\'`)
    }
    if (query.target !== null) {
      params.push(query.target)
      where.push(`target = $${params.length}`)
    }
    params.push(query.limit)
    return this.#read<AuditRow>(`SELECT * FROM audit_log WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${params.length}`, params)
  }

  async appendMeshEvent(draft: MeshEventDraft): Promise<MeshEventRow> {
    return this.#tx(async (tx) => {
      this.#meshEvent(tx, draft)
      return (await this.#writeControl(tx)).mesh[0] as MeshEventRow
    })
  }

  async listMeshEvents(query: MeshEventQuery): Promise<MeshEventRow[]> {
    const where: string[] = ['true']
    const params: unknown[] = []
    if (query.event_type !== null) {
      params.push(query.event_type)
      where.push(`event_type = $${params.length}`)
    }
    if (query.address !== null) {
      params.push(query.address)
      where.push(`address = $${params.length}`)
    }
    if (query.before_seqno !== null) {
      params.push(query.before_seqno)
      where.push(`seqno < $${params.length}`)
    }
    params.push(query.limit)
    return this.#read<MeshEventRow>(
      `SELECT * FROM mesh_events WHERE ${where.join(' AND ')} ORDER BY seqno DESC LIMIT $${params.length}`,
      params,
    )
  }

  async meshEventsAfter(afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
    return this.#read<MeshEventRow>('SELECT * FROM mesh_events WHERE seqno > $1 ORDER BY seqno LIMIT $2', [afterSeqno, limit])
  }

  // ---- policies and counters ----
  /**
   * Counts reported cost for an agent and applies core's budget rule, in the caller's
   * transaction. `rowLocked`: the caller holds the agent row for update, so a kill may flip
   * it; otherwise a kill asks for the transaction to be rerun with that lock (NeedsRowLock).
   */
  async #applyCost(tx: Tx, agent: AgentRow, amount: number, now: number, rule: CostRule, rowLocked: boolean): Promise<void> {
    const { day, hour } = windowOf(now)
    // The upsert's row lock makes read-add atomic: `before` is exactly what this amount follows.
    const added = (await tx.one<{ cost_usd: number }>(
      `INSERT INTO counters_day (address_id, day, cost_usd) VALUES ($1, $2, $3)
       ON CONFLICT (address_id, day) DO UPDATE SET cost_usd = counters_day.cost_usd + excluded.cost_usd RETURNING cost_usd`,
      [agent.address_id, day, amount],
    )) as { cost_usd: number }
    // Also by hour (the per-hour chart): after the day row, the order every counter writer uses.
    await tx.run(
      `INSERT INTO counters_hour (address_id, hour, cost_usd) VALUES ($1, $2, $3)
       ON CONFLICT (address_id, hour) DO UPDATE SET cost_usd = counters_hour.cost_usd + excluded.cost_usd`,
      [agent.address_id, hour, amount],
    )
    if (agent.policy_version === 0) return
    const policies = await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [[agent.address_id]])
    if (policies.length === 0) return
    const counters = (await this.#readCounters((sql, params) => tx.rows(sql, params), [agent.address_id], now)).get(
      agent.address_id,
    ) as AgentCounters
    const outcome = rule({
      agent,
      policies,
      counters: { ...counters, cost_day: added.cost_usd },
      cost_before: added.cost_usd - amount,
      now,
    })
    if (outcome.kill && agent.killed_at === null && !rowLocked) throw new NeedsRowLock('cost ceiling kill needs the agent row')
    for (const t of outcome.thresholds) {
      const inserted = await tx.run(
        'INSERT INTO budget_alerts (policy_id, day, percent, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
        [t.policy_id, day, t.percent, now],
      )
      if (inserted === 1) {
        this.#meshEvent(tx, {
          address_id: agent.address_id,
          address: agent.address,
          event_type: 'budget.threshold',
          details: t.details,
          actor_id: `policy:${t.policy_id}`,
          created_at: now,
        })
      }
    }
    if (outcome.kill) {
      const actor = `policy:${outcome.kill.policy_id}`
      const after = await tx.one<AgentRow>(KILL, [agent.address_id, now, outcome.kill.reason, actor])
      if (after) {
        await this.#recordKill(tx, agent, after, { policy_id: outcome.kill.policy_id, record: outcome.kill.record })
      }
    }
  }

  async listPolicies(addressId: string): Promise<PolicyRow[]> {
    return this.#read<PolicyRow>('SELECT * FROM policies WHERE address_id = $1 ORDER BY seqno', [addressId])
  }

  // ---- egress ----
  async admitEgress(input: EgressAdmitInput): Promise<EgressCallRow> {
    return this.#tx(async (tx) => {
      const { call } = input
      // The kill ordering of every other transaction: gate shared, agent row FOR SHARE.
      await this.#gateById(tx, call.address_id, false)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR SHARE', [call.address_id])
      if (!agent) throw new GatewayError('not_found', 'agent not found')
      const id = agent.address_id
      const withPolicies = agent.policy_version !== 0
      const policies = withPolicies ? await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [[id]]) : []
      // With policies, the agent's counter rows are locked before anything is read: admissions
      // and settlements of this agent, on any replica, read-decide-write one after the other.
      const counters = (await this.#countersForDecision(tx, [id], policies.length > 0 ? [id] : [], input.now)).get(id) as AgentCounters
      const reserved =
        policies.length === 0
          ? 0
          : ((await tx.one<{ n: number }>(
              "SELECT coalesce(sum(reserved_micro), 0)::bigint AS n FROM egress_calls WHERE address_id = $1 AND day = $2 AND state = 'open'",
              [id, call.day],
            ))?.n ?? 0)
      input.decide({ agent, policies, counters, reserved_micro: Number(reserved) })
      const { day, hour } = windowOf(input.now)
      // One statement: the call's row and its count for egress `rate` policies.
      await tx.run(
        `WITH c AS (
           INSERT INTO egress_calls (call_id, address_id, upstream, kind, endpoint, model, tool, day, reserved_micro, cost_micro, state, outcome, usage, status, started_at, deadline_at, settled_at)
           VALUES ($1, $2, $3, $10, $4, $5, $11, $6, $7, NULL, 'open', NULL, NULL, NULL, $8, $9, NULL)
         ), d AS (
           INSERT INTO counters_day (address_id, day, egress) VALUES ($2, $12, 1)
           ON CONFLICT (address_id, day) DO UPDATE SET egress = counters_day.egress + 1
         )
         INSERT INTO counters_hour (address_id, hour, egress) VALUES ($2, $13, 1)
         ON CONFLICT (address_id, hour) DO UPDATE SET egress = counters_hour.egress + 1`,
        [call.call_id, id, call.upstream, call.endpoint, call.model, call.day, call.reserved_micro, call.started_at, call.deadline_at, call.kind, call.tool, day, hour],
      )
      return call
    })
  }

  async settleEgress(input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
    return this.#tx(async (tx) => {
      const open = await tx.one<EgressCallRow>("SELECT * FROM egress_calls WHERE call_id = $1 AND state = 'open'", [input.call_id])
      if (!open) return { call: await tx.one<EgressCallRow>('SELECT * FROM egress_calls WHERE call_id = $1', [input.call_id]), changed: false }
      // Lock order of a resolve with cost: gate, agent row, then the counters (in #applyCost).
      await this.#gateById(tx, open.address_id, tx.lockForCost)
      const agent = await tx.one<AgentRow>(
        `SELECT * FROM agents WHERE address_id = $1 ${tx.lockForCost ? 'FOR NO KEY UPDATE' : 'FOR SHARE'}`,
        [open.address_id],
      )
      const call = await tx.one<EgressCallRow>(
        `UPDATE egress_calls SET state = 'settled', cost_micro = $2, outcome = $3, usage = $4, status = $5, settled_at = $6
         WHERE call_id = $1 AND state = 'open' RETURNING *`,
        [input.call_id, input.cost_micro, input.outcome, input.usage, input.status, input.now],
      )
      if (!call) return { call: await tx.one<EgressCallRow>('SELECT * FROM egress_calls WHERE call_id = $1', [input.call_id]), changed: false }
      // Charged to the day it was reserved on, so that day's `spent + reserved` never grows.
      if (input.cost_micro > 0 && agent) {
        await this.#applyCost(tx, agent, input.cost_micro / 1_000_000, call.started_at, input.cost_rule, tx.lockForCost)
      }
      return { call, changed: true }
    })
  }

  async overdueEgressCalls(now: number, limit: number): Promise<EgressCallRow[]> {
    return this.#read<EgressCallRow>("SELECT * FROM egress_calls WHERE state = 'open' AND deadline_at < $1 ORDER BY deadline_at LIMIT $2", [now, limit])
  }

  async listEgressCalls(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
    return this.#read<EgressCallRow>(
      `SELECT * FROM egress_calls
       WHERE ($1::text IS NULL OR address_id = $1)
         AND ($2::text IS NULL OR seqno < coalesce((SELECT seqno FROM egress_calls WHERE call_id = $2), 0))
       ORDER BY seqno DESC LIMIT $3`,
      [addressId, before, limit],
    )
  }

  async listDefaultPolicies(): Promise<PolicyRow[]> {
    return this.#read<PolicyRow>(DEFAULT_POLICIES)
  }

  async listPoliciesOf(addressIds: readonly string[]): Promise<PolicyRow[]> {
    return this.#read<PolicyRow>(EFFECTIVE_POLICIES, [addressIds])
  }

  async replaceDefaultPolicies(input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }> {
    return this.#tx(async (tx) => {
      // Exclusive fleet lock: no agent is being created meanwhile (they hold it shared), so each
      // new agent sees either the old set or this one committed, never neither.
      await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
      tx.fleetLocked = true
      const before = await tx.rows<PolicyRow>(`${DEFAULT_POLICIES} FOR UPDATE`)
      const after = input.build(before)
      if (after === null) return { policies: before, changed: false }
      await tx.run('DELETE FROM default_policies')
      if (after.length > 0) {
        await tx.run(
          `INSERT INTO default_policies (policy_id, position, kind, spec, enabled, version, created_at, updated_at)
           SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::bigint[], $8::bigint[])`,
          [
            after.map((r) => r.policy_id),
            after.map((_, i) => i),
            after.map((r) => r.kind),
            after.map((r) => r.spec),
            after.map((r) => r.enabled),
            after.map((r) => r.version),
            after.map((r) => r.created_at),
            after.map((r) => r.updated_at),
          ],
        )
      }
      // Row locks in address_id order (the order multi-agent writers use) wait for in-flight
      // accepts that read the old version under FOR SHARE.
      await tx.run(
        `UPDATE agents SET policy_version = policy_version + 1
         WHERE address_id IN (SELECT address_id FROM agents ORDER BY address_id FOR NO KEY UPDATE)`,
      )
      const { audit, event } = input.record(before, after)
      this.#audit(tx, audit)
      this.#meshEvent(tx, event)
      return { policies: await tx.rows<PolicyRow>(DEFAULT_POLICIES), changed: true }
    })
  }

  async listSilentAgents(before: number, limit: number): Promise<AgentRow[]> {
    return this.#read<AgentRow>(
      `SELECT * FROM agents WHERE killed_at IS NULL AND last_heartbeat_at IS NOT NULL AND last_heartbeat_at < $1
       ORDER BY last_heartbeat_at LIMIT $2`,
      [before, limit],
    )
  }

  async listEnabledPolicies(kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
    return this.#read<PolicyRow>('SELECT * FROM policies WHERE kind = $1 AND enabled = 1 ORDER BY seqno LIMIT $2', [kind, limit])
  }

  async getPolicy(policyId: string): Promise<PolicyRow | undefined> {
    return this.#readOne<PolicyRow>('SELECT * FROM policies WHERE policy_id = $1', [policyId])
  }

  async writePolicy(input: PolicyWrite): Promise<PolicyRow | null> {
    return this.#tx(async (tx) => {
      const current = await tx.one<PolicyRow>('SELECT * FROM policies WHERE policy_id = $1 FOR UPDATE', [input.policy_id])
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
      // Waits for in-flight accepts that read the old policy_version (gate, FOR SHARE).
      if (addressId !== undefined) await this.#gateById(tx, addressId, true)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [addressId])
      if (!agent) throw new GatewayError('not_found', `agent ${addressId} not found`)
      if (input.op === 'create' && next) {
        await tx.run(
          `INSERT INTO policies (policy_id, address_id, kind, spec, enabled, version, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
          [next.policy_id, next.address_id, next.kind, next.spec, next.enabled, next.version, next.created_at, next.updated_at],
        )
      } else if (input.op === 'update' && next) {
        await tx.run('UPDATE policies SET spec = $2, enabled = $3, version = $4, updated_at = $5 WHERE policy_id = $1', [
          next.policy_id,
          next.spec,
          next.enabled,
          next.version,
          next.updated_at,
        ])
      } else {
        await tx.run('DELETE FROM policies WHERE policy_id = $1', [input.policy_id])
      }
      await tx.run('UPDATE agents SET policy_version = policy_version + 1 WHERE address_id = $1', [agent.address_id])
      const { audit, event } = input.record(current, next, agent)
      this.#audit(tx, audit)
      this.#meshEvent(tx, event)
      tx.changes.push({ type: 'policy.changed', address_id: agent.address_id })
      return next
    })
  }

  async getCounters(addressId: string, now: number): Promise<AgentCounters> {
    const counters = await this.#readCounters((sql, params) => this.#read(sql, params), [addressId], now)
    return counters.get(addressId) as AgentCounters
  }

  async fleetTotals(fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
    const row = await this.#readOne<{ sent: number; cost_usd: number }>(
      'SELECT coalesce(sum(sent), 0)::bigint AS sent, coalesce(sum(cost_usd), 0)::double precision AS cost_usd FROM counters_day WHERE day BETWEEN $1 AND $2',
      [fromDay, toDay],
    )
    return { sent: Number(row?.sent ?? 0), cost_usd: Number(row?.cost_usd ?? 0) }
  }

  async sumCounters(fromDay: string, toDay: string, addressIds: readonly string[]) {
    const rows = await this.#read<{ address_id: string; sent: number; received: number; cost_usd: number }>(
      `SELECT address_id, sum(sent)::bigint AS sent, sum(received)::bigint AS received, sum(cost_usd) AS cost_usd
       FROM counters_day WHERE address_id = ANY($3::text[]) AND day >= $1 AND day <= $2 GROUP BY address_id`,
      [fromDay, toDay, addressIds],
    )
    return new Map(rows.map((r) => [r.address_id, { sent: r.sent, received: r.received, cost_usd: r.cost_usd }]))
  }

  async listHourCounters(addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
    return this.#read<HourCounters>(
      'SELECT hour, sent, received, cost_usd FROM counters_hour WHERE address_id = $1 AND hour >= $2 AND hour <= $3 ORDER BY hour',
      [addressId, fromHour, toHour],
    )
  }

  async recordBreach(policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
    return this.#tx(async (tx) => {
      const inserted = await tx.run(
        'INSERT INTO policy_breaches (policy_id, window_key, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
        [policyId, windowKey, event.created_at],
      )
      if (inserted === 0) return false
      this.#meshEvent(tx, event)
      return true
    })
  }

  // ---- heartbeats and health ----
  async heartbeat(input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
    return this.#tx(async (tx) => {
      // Locked for update from the start: the heartbeat writes the row (and a cost ceiling may kill).
      await this.#gateById(tx, input.address_id, true)
      const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
      if (!agent) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
      await tx.run(
        `INSERT INTO agent_instances (address_id, instance_id, first_seen_at, last_heartbeat_at) VALUES ($1, $2, $3, $3)
         ON CONFLICT (address_id, instance_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at`,
        [input.address_id, input.instance_id, input.now],
      )
      await tx.run('UPDATE agents SET last_heartbeat_at = $1 WHERE address_id = $2', [input.now, input.address_id])
      const m = input.metrics
      if (m) {
        const minute = Math.floor(input.now / 60_000)
        const latencyN = m.avg_latency_ms === null ? 0 : m.intents_total > 0 ? m.intents_total : 1
        await tx.run(
          `INSERT INTO heartbeat_metrics (address_id, minute, total, succeeded, failed, latency_sum, latency_n)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (address_id, minute) DO UPDATE SET total = heartbeat_metrics.total + excluded.total,
             succeeded = heartbeat_metrics.succeeded + excluded.succeeded, failed = heartbeat_metrics.failed + excluded.failed,
             latency_sum = heartbeat_metrics.latency_sum + excluded.latency_sum,
             latency_n = heartbeat_metrics.latency_n + excluded.latency_n`,
          [
            input.address_id,
            minute,
            m.intents_total,
            m.intents_succeeded,
            m.intents_failed,
            m.avg_latency_ms === null ? 0 : m.avg_latency_ms * latencyN,
            latencyN,
          ],
        )
        const { day } = windowOf(input.now)
        await tx.run(
          `INSERT INTO counters_day (address_id, day, reported_total, reported_succeeded, reported_failed) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (address_id, day) DO UPDATE SET reported_total = counters_day.reported_total + excluded.reported_total,
             reported_succeeded = counters_day.reported_succeeded + excluded.reported_succeeded,
             reported_failed = counters_day.reported_failed + excluded.reported_failed`,
          [input.address_id, day, m.intents_total, m.intents_succeeded, m.intents_failed],
        )
        if (m.cost_usd > 0) await this.#applyCost(tx, agent, m.cost_usd, input.now, input.cost_rule, true)
      }
      const current = (await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [input.address_id])) as AgentRow
      const status = input.keeps_health(current, input.metrics)
        ? current.health_status
        : await this.#reassess(tx, current, input.now, input.window_start, input.health, input.transition)
      return { agent: { ...current, health_status: status, last_heartbeat_at: input.now }, health_status: status }
    })
  }

  /** Recomputes an agent's health with core's rule and records a transition. */
  async #reassess(
    tx: Tx,
    agent: AgentRow,
    now: number,
    windowStart: number,
    health: HeartbeatInput['health'],
    transition: HeartbeatInput['transition'],
  ): Promise<HealthStatus> {
    const instances = await tx.rows<InstanceRow>('SELECT * FROM agent_instances WHERE address_id = $1 ORDER BY instance_id', [
      agent.address_id,
    ])
    const window = await this.#metricsWindow((sql, params) => tx.rows(sql, params), agent.address_id, windowStart)
    const next = health({ agent, instances, window, now })
    const previous: HealthStatus = agent.killed_at !== null ? 'killed' : agent.health_status
    if (next !== agent.health_status && next !== 'killed') {
      await tx.run('UPDATE agents SET health_status = $1 WHERE address_id = $2', [next, agent.address_id])
    }
    if (next !== previous) this.#meshEvent(tx, transition(agent, previous, next))
    return next
  }

  async #metricsWindow(
    query: <R>(sql: string, params: unknown[]) => Promise<R[]>,
    addressId: string,
    windowStart: number,
  ): Promise<MetricsWindow> {
    const [row] = await query<MetricsWindow>(
      `SELECT coalesce(sum(total), 0)::bigint AS total, coalesce(sum(succeeded), 0)::bigint AS succeeded,
         coalesce(sum(failed), 0)::bigint AS failed, coalesce(sum(latency_sum), 0)::float8 AS latency_sum,
         coalesce(sum(latency_n), 0)::bigint AS latency_n
       FROM heartbeat_metrics WHERE address_id = $1 AND minute >= $2`,
      [addressId, Math.floor(windowStart / 60_000)],
    )
    return row ?? { total: 0, succeeded: 0, failed: 0, latency_sum: 0, latency_n: 0 }
  }

  async sweepHealth(input: HealthSweepInput): Promise<number> {
    return this.#tx(async (tx) => {
      // Forget long-silent instances first, so the health computed below sees the same list the views show.
      // Except those of an agent still shown live whose last beat is stale: the staleness pass
      // must see them first (it then marks the agent unreachable).
      await tx.run(
        `DELETE FROM agent_instances i WHERE i.last_heartbeat_at < $1
           AND NOT EXISTS (SELECT 1 FROM agents a WHERE a.address_id = i.address_id AND a.killed_at IS NULL
             AND a.health_status IN ('healthy', 'degraded') AND a.last_heartbeat_at < $2)`,
        [input.forget_before, input.stale_before],
      )
      // Live agents shown healthy/degraded with an instance that went quiet (an agent whose last
      // beat is stale has only such instances), found through the instances' time index. Every
      // replica sweeps; SKIP LOCKED gives each stale agent to one of them.
      const candidates = await tx.rows<AgentRow>(
        `SELECT a.* FROM agents a
         WHERE a.address_id IN (SELECT i.address_id FROM agent_instances i WHERE i.last_heartbeat_at < $1)
           AND a.killed_at IS NULL AND a.health_status IN ('healthy', 'degraded')
         ORDER BY a.address_id LIMIT $2 FOR NO KEY UPDATE SKIP LOCKED`,
        [input.stale_before, input.limit],
      )
      let transitions = 0
      for (const agent of candidates) {
        const next = await this.#reassess(tx, agent, input.now, input.window_start, input.health, input.transition)
        if (next !== agent.health_status) transitions += 1
      }
      if (input.purge_metrics_before !== null) {
        await tx.run('DELETE FROM heartbeat_metrics WHERE minute < $1', [input.purge_metrics_before])
      }
      return transitions
    })
  }

  async listInstances(addressId: string): Promise<InstanceRow[]> {
    return this.#read<InstanceRow>('SELECT * FROM agent_instances WHERE address_id = $1 ORDER BY instance_id', [addressId])
  }

  async instanceCounts(freshSince: number, addressIds: readonly string[]) {
    const rows = await this.#read<{ address_id: string; total: number; fresh: number }>(
      `SELECT address_id, count(*) AS total, sum(CASE WHEN last_heartbeat_at >= $1 THEN 1 ELSE 0 END)::bigint AS fresh
       FROM agent_instances WHERE address_id = ANY($2::text[]) GROUP BY address_id`,
      [freshSince, addressIds],
    )
    return new Map(rows.map((r) => [r.address_id, { total: r.total, fresh: r.fresh }]))
  }

  async metricsWindow(addressId: string, windowStart: number): Promise<MetricsWindow> {
    return this.#metricsWindow((sql, params) => this.#read(sql, params), addressId, windowStart)
  }

  async countAgentsByHealth(): Promise<Record<string, number>> {
    const rows = await this.#read<{ health: string; n: number }>(
      `SELECT CASE WHEN killed_at IS NOT NULL THEN 'killed' ELSE health_status END AS health, count(*) AS n
       FROM agents GROUP BY 1`,
    )
    return Object.fromEntries(rows.map((r) => [r.health, r.n]))
  }

  // ---- webhooks and the alert outbox ----
  async createWebhook(row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
    return this.#tx(async (tx) => {
      await tx.run(
        `INSERT INTO webhooks (webhook_id, url, event_types, secret, created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, NULL)`,
        [row.webhook_id, row.url, row.event_types, row.secret, row.created_at],
      )
      this.#audit(tx, audit)
      return row
    })
  }

  async listWebhooks(): Promise<WebhookRow[]> {
    return this.#read<WebhookRow>('SELECT * FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at')
  }

  async deleteWebhook(webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow> {
    return this.#tx(async (tx) => {
      const row = await tx.one<WebhookRow>('SELECT * FROM webhooks WHERE webhook_id = $1 FOR UPDATE', [webhookId])
      if (!row || row.deleted_at !== null) throw new GatewayError('not_found', `webhook ${webhookId} not found`)
      await tx.run('UPDATE webhooks SET deleted_at = $1 WHERE webhook_id = $2 AND deleted_at IS NULL', [now, webhookId])
      this.#audit(tx, audit(row))
      return { ...row, deleted_at: now }
    })
  }

  async claimAlerts(now: number, leaseMs: number, limit: number) {
    return this.#tx(async (tx) => {
      // Replicas share the outbox: SKIP LOCKED plus the lease keep one alert with one sender.
      const rows = await tx.rows<AlertRow & { url: string; secret: string }>(
        `SELECT o.*, w.url, w.secret FROM alert_outbox o JOIN webhooks w ON w.webhook_id = o.webhook_id
         WHERE o.delivered_at IS NULL AND o.gave_up_at IS NULL AND o.next_attempt_at <= $1
         ORDER BY o.next_attempt_at LIMIT $2 FOR UPDATE OF o SKIP LOCKED`,
        [now, limit],
      )
      if (rows.length > 0) {
        await tx.run('UPDATE alert_outbox SET next_attempt_at = $1 WHERE alert_id = ANY($2::text[])', [
          now + leaseMs,
          rows.map((r) => r.alert_id),
        ])
      }
      return rows
    })
  }

  async recordAlertAttempt(
    alertId: string,
    result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
  ): Promise<void> {
    await this.#tx((tx) =>
      tx.run(
        `UPDATE alert_outbox SET attempts = attempts + 1, last_status = $2, last_error = $3,
           delivered_at = CASE WHEN $4::boolean THEN $5::bigint ELSE NULL END,
           gave_up_at = CASE WHEN NOT $4::boolean AND $6::bigint IS NULL THEN $5::bigint ELSE NULL END,
           next_attempt_at = coalesce($6::bigint, next_attempt_at)
         WHERE alert_id = $1`,
        [alertId, result.status, result.error, result.delivered, result.now, result.next_attempt_at],
      ),
    )
  }

  async listAlerts(limit: number, webhookId: string | null): Promise<AlertRow[]> {
    return webhookId === null
      ? this.#read<AlertRow>('SELECT * FROM alert_outbox ORDER BY created_at DESC, alert_id LIMIT $1', [limit])
      : this.#read<AlertRow>('SELECT * FROM alert_outbox WHERE webhook_id = $1 ORDER BY created_at DESC, alert_id LIMIT $2', [
          webhookId,
          limit,
        ])
  }
}

/** A transaction's changes without repeats, in first-seen order. */
/** The audit entry and mesh event carry the same effective time as the agent row. */
function atKillTime(record: KillInput['record'], now: number, killedAt: number): KillInput['record'] {
  if (killedAt === now) return record
  return (b, a) => {
    const r = record(b, a)
    return { audit: { ...r.audit, at: new Date(killedAt).toISOString() }, event: { ...r.event, created_at: killedAt } }
  }
}

function dedupe(changes: Change[]): Change[] {
  const seen = new Set<string>()
  const out: Change[] = []
  for (const change of changes) {
    const key = JSON.stringify(change)
    if (seen.has(key)) continue
    seen.add(key)
    out.push(change)
  }
  return out
}
