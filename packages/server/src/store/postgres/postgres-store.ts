import pg from 'pg'
import { randomUUID } from 'node:crypto'
import type { PoolClient } from 'pg'
import { GatewayError } from '../../core/errors.js'
import type { Change } from '../change-feed.js'
import type {
  AcceptIntentInput,
  AcceptIntentResult,
  AgentCounters,
  AgentPageQuery,
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
  DefaultPoliciesWrite,
  EgressAdmitInput,
  EgressCallRow,
  EgressSettleInput,
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
  HourCounters,
  InstanceQuarantineRow,
  InstanceRow,
  IntentEventRow,
  IntentListQuery,
  IntentRow,
  IntentUpdateInput,
  IntentUpdateResult,
  KeyRow,
  KillInput,
  LiftQuarantineInput,
  MeshEventDraft,
  MeshEventQuery,
  MeshEventRow,
  MetricsWindow,
  PolicyKind,
  PolicyRow,
  PolicyWrite,
  QuarantineInput,
  QuarantineResult,
  ResumeInput,
  Role,
  Store,
  WebhookRow,
} from '../store.js'
import { DatabaseClock } from './postgres-clock.js'
import { FEED_CHANNEL, Notifier, PostgresFeed, encodeChanges } from './postgres-feed.js'
import { changesResultType, isConnectionError, isRetryableConflict, isStalePlan, toStoreError } from './postgres-errors.js'
import { POSTGRES_MIGRATIONS } from './postgres-migrations.js'
import { GroupCommit, LOCK_CLASS, LOCK_MIGRATIONS, NeedsRowLock, type PgDb, prepared, Tx } from './tx.js'
import * as agents from './agents.js'
import * as alerts from './alerts.js'
import * as audit from './audit.js'
import * as counters from './counters.js'
import * as delivery from './delivery.js'
import * as egress from './egress.js'
import * as health from './health.js'
import * as intents from './intents.js'
import * as keys from './keys.js'
import * as kill from './kill.js'
import * as policies from './policies.js'

export interface PostgresStoreConfig {
  /** `postgres://user:password@host:port/database` (any libpq-style URL node-postgres accepts). */
  url: string
  /** Chain hash of audit entries (core's rule). */
  hashAudit: AuditHasher
  /** Which mesh events become webhook alerts (core's rule). */
  alertFor: AlertMapper
  /** Pooled connections per replica (default 20). */
  poolSize?: number | undefined
  /** Named prepared statements (default true); false for poolers that cannot carry them. */
  preparedStatements?: boolean | undefined
  /** Giving up on opening a connection (default 5 s) → `store_unavailable`. */
  connectionTimeoutMs?: number | undefined
  /** Giving up on one statement (default 15 s) → `store_unavailable`. */
  queryTimeoutMs?: number | undefined
  log?: ((level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void) | undefined
}

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

/**
 * Change types that only wake readers up (they re-read the store). A transaction whose changes
 * are all of these announces them after COMMIT through the batched Notifier; any other change
 * (a kill, a quarantine, a revoked key, a policy change) is NOTIFYed inside its transaction,
 * delivered to every replica at the commit itself.
 */
const WAKE_ONLY = new Set<Change['type']>(['intent.available', 'intent.event', 'slot.freed', 'mesh.event', 'alert.queued'])

/** bigint (int8) and numeric (sums) as JS numbers: times are ms, counts are small. */
const parseNumber = (value: string): number => Number(value)
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20 || oid === 1700 ? parseNumber : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
}

/**
 * The PostgreSQL engine: same semantics as the SQLite engine, for any number of replicas.
 *
 * Locking (DESIGN §2.1, §2.6, §11). Every transaction takes its locks in one global order, so
 * it never upgrades a lock and never deadlocks with another: the per-agent gate first (a fair
 * advisory lock, see `#gate`), then agent rows (only their writers lock them: kill, resume,
 * policy writes and heartbeats `FOR NO KEY UPDATE`), then intent rows (`FOR UPDATE`, or
 * `SKIP LOCKED` when claiming or sweeping), then counter rows (day rows, then hour rows, each
 * in address_id order), and last the `store_heads` rows (audit chain and mesh event
 * numbering), written just before COMMIT. The gate alone orders reads of an agent row against
 * its writers: every transaction that changes what an accept, delivery or resolve decides on
 * (killed_at, policy_version, the quarantines) holds that agent's gate exclusively, and every
 * accept, delivery and resolve holds it shared and reads the row in a statement after taking
 * it. A kill therefore waits for every in-flight accept, delivery and resolve of the agent,
 * and every one that starts later sees it — without a share lock on the row, which would
 * write its header (or a multixact) on every read. Serialization failures and deadlocks
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

  readonly #notifier: Notifier
  /** What the per-concern modules use of this engine (pools, reads, configuration). */
  readonly #db: PgDb

  #closed = false

  readonly #named: boolean

  /**
   * Bumped when a prepared statement went stale (a migration changed a table under it): every
   * connection opened before is retired when next checked out, since all of them may hold it.
   */
  #planGeneration = 0

  readonly #born = new WeakMap<pg.ClientBase, number>()

  private constructor(config: PostgresStoreConfig) {
    this.#config = Object.freeze({ ...config })
    this.#named = config.preparedStatements ?? true
    const clientConfig = {
      connectionString: config.url,
      types: TYPES,
      connectionTimeoutMillis: config.connectionTimeoutMs ?? 5_000,
      query_timeout: config.queryTimeoutMs ?? 15_000,
      keepAlive: true,
      // Probes every 10 s on an idle connection: the control pool's connections stay open for
      // months between kills, and a NAT or load balancer drops flows it has not seen for minutes.
      keepAliveInitialDelayMillis: 10_000,
      application_name: 'chokepoint',
    }
    this.#pool = new pg.Pool({ ...clientConfig, max: config.poolSize ?? 20, idleTimeoutMillis: 30_000 })
    // Kept open (min = max): kills are rare, and one that first had to open a connection
    // (TCP, authentication, a new backend) was the slowest kill of every benchmark run.
    this.#controlPool = new pg.Pool({ ...clientConfig, max: 2, min: 2, idleTimeoutMillis: 30_000, application_name: 'chokepoint-control' })
    for (const pool of [this.#pool, this.#controlPool]) {
      // An idle client whose connection dies emits here; without a handler the process would crash.
      pool.on('error', (error) => config.log?.('warn', 'postgres: idle connection failed', { error: String(error) }))
      // A checked-out client whose connection dies between two queries (e.g. the server shuts
      // down) emits 'error' too, and the pool does not listen then: without this handler the
      // process would crash. Its next query fails (→ 503) and #tx discards the client.
      pool.on('connect', (client) => {
        client.on('error', (error) => config.log?.('warn', 'postgres: connection failed', { error: String(error) }))
        this.#born.set(client, this.#planGeneration)
      })
    }
    this.clock = new DatabaseClock({
      readDatabaseMs: async () =>
        (await this.#readOne<{ ms: number }>('SELECT extract(epoch FROM clock_timestamp())::float8 * 1000 AS ms'))?.ms ?? Date.now(),
      log: config.log,
    })
    this.#notifier = new Notifier({
      origin: this.#origin,
      newClient: () =>
        new pg.Client({ ...clientConfig, application_name: 'chokepoint-notify', options: '-c synchronous_commit=off' }),
      log: config.log,
    })
    this.feed = new PostgresFeed({
      origin: this.#origin,
      newClient: () => new pg.Client({ ...clientConfig, application_name: 'chokepoint-feed' }),
      query: (sql, params) => this.#read(sql, params),
      log: config.log,
    })
    this.#db = {
      tx: (fn, pool) => this.#tx(fn, pool),
      read: (sql, params) => this.#read(sql, params),
      readOne: (sql, params) => this.#readOne(sql, params),
      controlPool: this.#controlPool,
      config: this.#config,
      clock: this.clock,
      known: new Set<string>(),
      policied: new Set<string>(),
      accepts: new GroupCommit((batch) => intents.acceptBatch(this.#db, batch)),
      updates: new GroupCommit((batch) => intents.updateBatch(this.#db, batch)),
    }
  }

  /** Connects, runs the migrations (safe when several replicas start at once) and starts LISTEN. */
  static async open(config: PostgresStoreConfig): Promise<PostgresStore> {
    const store = new PostgresStore(config)
    try {
      await store.#migrate()
      await store.#warmControlPool()
      await store.clock.start()
      await store.feed.start()
    } catch (error) {
      await store.close()
      throw toStoreError(error)
    }
    return store
  }

  /** Opens the control pool's connections now, so that the first kill does not wait for one. */
  async #warmControlPool(): Promise<void> {
    const clients = await Promise.all([this.#controlPool.connect(), this.#controlPool.connect()])
    for (const client of clients) client.release()
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
        client = await this.#connect(pool)
      } catch (error) {
        throw toStoreError(error)
      }
      const tx = new Tx(client, lockForCost, this.#named, pool === this.#controlPool ? BEGIN_CONTROL : BEGIN)
      try {
        const result = await fn(tx)
        await audit.writeControl(this.#db, tx)
        const changes = dedupe(tx.changes)
        const wakeOnly = changes.every((c) => WAKE_ONLY.has(c.type))
        if (changes.length > 0 && !wakeOnly) {
          await tx.run('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [FEED_CHANNEL, encodeChanges(this.#origin, changes)])
        }
        await tx.flush()
        if (tx.begun) await client.query('COMMIT')
        client.release()
        for (const change of changes) this.feed.publish(change)
        if (wakeOnly) this.#notifier.push(changes)
        return result
      } catch (error) {
        if (isStalePlan(error)) this.#retirePlans(client, error)
        else if (isConnectionError(error)) client.release(true)
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
        if (isStalePlan(error) && attempt < MAX_ATTEMPTS) continue
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
    for (let attempt = 1; ; attempt += 1) {
      let client: PoolClient
      try {
        client = await this.#connect(this.#pool)
      } catch (error) {
        throw toStoreError(error)
      }
      try {
        const rows = (await client.query(prepared(sql, params, this.#named))).rows as T[]
        client.release()
        return rows
      } catch (error) {
        if (isStalePlan(error)) {
          this.#retirePlans(client, error)
          if (attempt < MAX_ATTEMPTS) continue
        } else client.release(isConnectionError(error))
        throw toStoreError(error)
      }
    }
  }

  /** A pooled client whose prepared statements are not stale (see #planGeneration). */
  async #connect(pool: pg.Pool): Promise<PoolClient> {
    for (;;) {
      const client = await pool.connect()
      if ((this.#born.get(client) ?? 0) >= this.#planGeneration) return client
      client.release(true)
    }
  }

  /** `client` ran a stale prepared statement: it and every connection opened before it are retired. */
  #retirePlans(client: PoolClient, error: unknown): void {
    // Only a schema change makes every connection's statements stale; a statement missing on
    // one connection (a pooler moved it to another backend) is that connection's alone.
    if (changesResultType(error) && (this.#born.get(client) ?? 0) >= this.#planGeneration) {
      this.#planGeneration += 1
      this.#config.log?.('info', 'postgres: the schema changed under prepared statements; reconnecting', {})
    }
    client.release(true)
  }

  async #readOne<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.#read<T>(sql, params))[0]
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.clock.stop()
    await this.#notifier.close()
    await this.feed.close()
    await this.#pool.end().catch(() => undefined)
    await this.#controlPool.end().catch(() => undefined)
  }

  async ping(): Promise<void> {
    if (this.#closed) throw new GatewayError('store_unavailable', 'the store is closed')
    await this.#read('SELECT 1')
  }

  async insertKey(key: Omit<KeyRow, 'address_id'>, now: number, audit: (row: KeyRow) => AuditDraft): Promise<KeyRow> {
    return keys.insertKey(this.#db, key, now, audit)
  }

  async findKeyByHash(keyHash: string): Promise<KeyRow | undefined> {
    return keys.findKeyByHash(this.#db, keyHash)
  }

  async getKey(keyId: string): Promise<KeyRow | undefined> {
    return keys.getKey(this.#db, keyId)
  }

  async listKeys(): Promise<KeyRow[]> {
    return keys.listKeys(this.#db)
  }

  async revokeKey(
    keyId: string,
    now: number,
    guard: (key: KeyRow, otherAdmins: number) => void,
    audit: (key: KeyRow) => AuditDraft,
  ): Promise<KeyRow> {
    return keys.revokeKey(this.#db, keyId, now, guard, audit)
  }

  async ensureAdminKey(key: KeyRow): Promise<'created' | 'existing'> {
    return keys.ensureAdminKey(this.#db, key)
  }

  async createFirstAdminKey(key: KeyRow, audit: AuditDraft): Promise<boolean> {
    return keys.createFirstAdminKey(this.#db, key, audit)
  }

  async countActiveKeys(role: Role): Promise<number> {
    return keys.countActiveKeys(this.#db, role)
  }

  async getAgentById(addressId: string): Promise<AgentRow | undefined> {
    return agents.getAgentById(this.#db, addressId)
  }

  async getAgentByAddress(address: string): Promise<AgentRow | undefined> {
    return agents.getAgentByAddress(this.#db, address)
  }

  async registerAgent(agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
    return agents.registerAgent(this.#db, agent, event)
  }

  async selectAgents(selection: AgentSelection): Promise<AgentRow[]> {
    return agents.selectAgents(this.#db, selection)
  }

  async updateAgent(input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return agents.updateAgent(this.#db, input)
  }

  async listAgents(limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
    return agents.listAgents(this.#db, limit, health)
  }

  async listAgentsPage(query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
    return agents.listAgentsPage(this.#db, query)
  }

  async acceptIntent(input: AcceptIntentInput): Promise<AcceptIntentResult> {
    return intents.acceptIntent(this.#db, input)
  }

  async getIntent(intentId: string): Promise<IntentRow | undefined> {
    return intents.getIntent(this.#db, intentId)
  }

  async listIntentEvents(intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
    return intents.listIntentEvents(this.#db, intentId, since, limit)
  }

  async listIntents(query: IntentListQuery): Promise<IntentRow[]> {
    return intents.listIntents(this.#db, query)
  }

  async claimDeliveries(input: ClaimInput): Promise<ClaimResult> {
    return delivery.claimDeliveries(this.#db, input)
  }

  async leasedDeliveries(addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]> {
    return delivery.leasedDeliveries(this.#db, addressId, instanceId, since, now)
  }

  async updateIntent(input: IntentUpdateInput): Promise<IntentUpdateResult> {
    return intents.updateIntent(this.#db, input)
  }

  async expireLeases(now: number, limit: number): Promise<ExpireLeasesResult> {
    return delivery.expireLeases(this.#db, now, limit)
  }

  async timeOutIntents(now: number, limit: number): Promise<number> {
    return intents.timeOutIntents(this.#db, now, limit)
  }

  async purge(before: number, idempotencyBefore: number, limit: number): Promise<number> {
    return intents.purge(this.#db, before, idempotencyBefore, limit)
  }

  async killAgent(input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return kill.killAgent(this.#db, input)
  }

  async quarantineInstance(input: QuarantineInput): Promise<QuarantineResult> {
    return kill.quarantineInstance(this.#db, input)
  }

  async liftQuarantine(input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
    return kill.liftQuarantine(this.#db, input)
  }

  async getQuarantine(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
    return kill.getQuarantine(this.#db, addressId, instanceId)
  }

  async listQuarantines(addressId: string): Promise<InstanceQuarantineRow[]> {
    return kill.listQuarantines(this.#db, addressId)
  }

  async holdBacklog(input: HoldInput): Promise<{ held: number; canceled: number }> {
    return kill.holdBacklog(this.#db, input)
  }

  async resumeAgent(input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
    return kill.resumeAgent(this.#db, input)
  }

  async killFleet(input: FleetKillInput): Promise<FleetKillResult> {
    return kill.killFleet(this.#db, input)
  }

  async resumeFleet(input: FleetResumeInput): Promise<FleetResumeResult> {
    return kill.resumeFleet(this.#db, input)
  }

  async listFleetKills(standing: boolean, limit: number): Promise<FleetKillRow[]> {
    return kill.listFleetKills(this.#db, standing, limit)
  }

  async appendAudit(draft: AuditDraft): Promise<AuditRow> {
    return audit.appendAudit(this.#db, draft)
  }

  async listAudit(query: AuditQuery): Promise<AuditRow[]> {
    return audit.listAudit(this.#db, query)
  }

  async appendMeshEvent(draft: MeshEventDraft): Promise<MeshEventRow> {
    return audit.appendMeshEvent(this.#db, draft)
  }

  async listMeshEvents(query: MeshEventQuery): Promise<MeshEventRow[]> {
    return audit.listMeshEvents(this.#db, query)
  }

  async meshEventsAfter(afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
    return audit.meshEventsAfter(this.#db, afterSeqno, limit)
  }

  async listPolicies(addressId: string): Promise<PolicyRow[]> {
    return policies.listPolicies(this.#db, addressId)
  }

  async admitEgress(input: EgressAdmitInput): Promise<EgressCallRow> {
    return egress.admitEgress(this.#db, input)
  }

  async settleEgress(input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
    return egress.settleEgress(this.#db, input)
  }

  async overdueEgressCalls(now: number, limit: number): Promise<EgressCallRow[]> {
    return egress.overdueEgressCalls(this.#db, now, limit)
  }

  async listEgressCalls(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
    return egress.listEgressCalls(this.#db, addressId, limit, before)
  }

  async listDefaultPolicies(): Promise<PolicyRow[]> {
    return policies.listDefaultPolicies(this.#db)
  }

  async listPoliciesOf(addressIds: readonly string[]): Promise<PolicyRow[]> {
    return policies.listPoliciesOf(this.#db, addressIds)
  }

  async replaceDefaultPolicies(input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }> {
    return policies.replaceDefaultPolicies(this.#db, input)
  }

  async listSilentAgents(before: number, limit: number): Promise<AgentRow[]> {
    return health.listSilentAgents(this.#db, before, limit)
  }

  async listEnabledPolicies(kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
    return policies.listEnabledPolicies(this.#db, kind, limit)
  }

  async getPolicy(policyId: string): Promise<PolicyRow | undefined> {
    return policies.getPolicy(this.#db, policyId)
  }

  async writePolicy(input: PolicyWrite): Promise<PolicyRow | null> {
    return policies.writePolicy(this.#db, input)
  }

  async getCounters(addressId: string, now: number): Promise<AgentCounters> {
    return counters.getCounters(this.#db, addressId, now)
  }

  async fleetTotals(fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
    return counters.fleetTotals(this.#db, fromDay, toDay)
  }

  async sumCounters(fromDay: string, toDay: string, addressIds: readonly string[]) {
    return counters.sumCounters(this.#db, fromDay, toDay, addressIds)
  }

  async listHourCounters(addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
    return counters.listHourCounters(this.#db, addressId, fromHour, toHour)
  }

  async recordBreach(policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
    return policies.recordBreach(this.#db, policyId, windowKey, event)
  }

  async heartbeat(input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
    return health.heartbeat(this.#db, input)
  }

  async sweepHealth(input: HealthSweepInput): Promise<number> {
    return health.sweepHealth(this.#db, input)
  }

  async listInstances(addressId: string): Promise<InstanceRow[]> {
    return health.listInstances(this.#db, addressId)
  }

  async instanceCounts(freshSince: number, addressIds: readonly string[]) {
    return health.instanceCounts(this.#db, freshSince, addressIds)
  }

  async metricsWindow(addressId: string, windowStart: number): Promise<MetricsWindow> {
    return health.metricsWindow(this.#db, addressId, windowStart)
  }

  async countAgentsByHealth(): Promise<Record<string, number>> {
    return health.countAgentsByHealth(this.#db)
  }

  async createWebhook(row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
    return alerts.createWebhook(this.#db, row, audit)
  }

  async listWebhooks(): Promise<WebhookRow[]> {
    return alerts.listWebhooks(this.#db)
  }

  async deleteWebhook(webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow> {
    return alerts.deleteWebhook(this.#db, webhookId, now, audit)
  }

  async claimAlerts(now: number, leaseMs: number, limit: number) {
    return alerts.claimAlerts(this.#db, now, leaseMs, limit)
  }

  async recordAlertAttempt(
    alertId: string,
    result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
  ): Promise<void> {
    return alerts.recordAlertAttempt(this.#db, alertId, result)
  }

  async listAlerts(limit: number, webhookId: string | null): Promise<AlertRow[]> {
    return alerts.listAlerts(this.#db, limit, webhookId)
  }
}

/** A transaction's changes without repeats, in first-seen order. */
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
