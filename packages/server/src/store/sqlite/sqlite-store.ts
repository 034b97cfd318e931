import { mkdirSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import type { Database as Db, Statement } from 'better-sqlite3'
import { GatewayError } from '../../core/errors.js'
import { LocalFeed, type Change } from '../change-feed.js'
import type {
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
  ExpireLeasesResult,
  IntentEventRow,
  IntentListQuery,
  IntentRow,
  IntentUpdateInput,
  IntentUpdateResult,
  KeyRow,
  Role,
  Store,
  StoreStats,
} from '../store.js'
import type { DefaultPoliciesWrite, EgressAdmitInput, EgressCallRow, EgressSettleInput } from '../store.js'
import { SQLITE_MIGRATIONS } from './sqlite-migrations.js'
import { StatementCounter } from './statement-stats.js'
import type { SqliteContext } from './context.js'
import { prepare, type Stmts } from './statements.js'
import * as keysSql from './keys.js'
import * as agentsSql from './agents.js'
import * as intentsSql from './intents.js'
import * as deliverySql from './delivery.js'
import * as killSql from './kill.js'
import * as auditSql from './audit.js'
import * as countersSql from './counters.js'
import * as policiesSql from './policies.js'
import * as egressSql from './egress.js'
import * as healthSql from './health.js'
import * as alertsSql from './alerts.js'

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

/** Statements that write a table whose rows the store caches (see SqliteStore#watch). */
const WRITES_CACHED = /\b(?:UPDATE(?:\s+OR\s+\w+)?|INTO|DELETE\s+FROM)\s+(?:agents|instance_quarantines)\b/i
/** Cached rows per cache before it is emptied (a bound, not an eviction policy). */
const CACHE_LIMIT = 10_000

export class SqliteStore implements Store {
  readonly engine = 'sqlite' as const
  readonly feed = new LocalFeed()
  readonly #db: Db
  readonly #q: Stmts
  readonly #hashAudit: AuditHasher
  readonly #alertFor: AlertMapper
  readonly #counter = new StatementCounter()
  readonly #ctx: SqliteContext

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
    const ctx: SqliteContext = {
      db: this.#db,
      q: this.#q,
      hashAudit: this.#hashAudit,
      alertFor: this.#alertFor,
      heartbeatBatchMs: this.#heartbeatBatchMs,
      write: (fn, lingerMs) => this.#write(fn, lingerMs),
      savepoint: (fn) => this.#savepoint(fn),
      adhoc: (sql) => this.#adhoc(sql),
      agentById: (id) => this.#agentById(id),
      agentByAddress: (address) => this.#agentByAddress(address),
      quarantine: (addressId, instanceId) => this.#quarantine(addressId, instanceId),
      select: (...args) => agentsSql.select(ctx, ...args),
      appeared: (...args) => agentsSql.appeared(ctx, ...args),
      applyStanding: (...args) => agentsSql.applyStanding(ctx, ...args),
      ensureAgent: (...args) => agentsSql.ensureAgent(ctx, ...args),
      accept: (...args) => intentsSql.accept(ctx, ...args),
      recordKill: (...args) => killSql.recordKill(ctx, ...args),
      resumeOne: (...args) => killSql.resumeOne(ctx, ...args),
      audit: (...args) => auditSql.audit(ctx, ...args),
      meshEvent: (...args) => auditSql.meshEvent(ctx, ...args),
      counters: (...args) => countersSql.counters(ctx, ...args),
      applyCost: (...args) => countersSql.applyCost(ctx, ...args),
      reassess: (...args) => healthSql.reassess(ctx, ...args),
    }
    this.#ctx = ctx
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
    return keysSql.insertKey(this.#ctx, key, now, audit)
  }

  async findKeyByHash(keyHash: string): Promise<KeyRow | undefined> {
    return keysSql.findKeyByHash(this.#ctx, keyHash)
  }

  async getKey(keyId: string): Promise<KeyRow | undefined> {
    return keysSql.getKey(this.#ctx, keyId)
  }

  async listKeys(): Promise<KeyRow[]> {
    return keysSql.listKeys(this.#ctx)
  }

  async revokeKey(
    keyId: string,
    now: number,
    guard: (key: KeyRow, otherAdmins: number) => void,
    audit: (key: KeyRow) => AuditDraft,
  ): Promise<KeyRow> {
    return keysSql.revokeKey(this.#ctx, keyId, now, guard, audit)
  }

  async ensureAdminKey(key: KeyRow): Promise<'created' | 'existing'> {
    return keysSql.ensureAdminKey(this.#ctx, key)
  }

  async createFirstAdminKey(key: KeyRow, audit: AuditDraft): Promise<boolean> {
    return keysSql.createFirstAdminKey(this.#ctx, key, audit)
  }

  async countActiveKeys(role: Role): Promise<number> {
    return keysSql.countActiveKeys(this.#ctx, role)
  }

  // ---- agents ----
  async getAgentById(addressId: string): Promise<AgentRow | undefined> {
    return agentsSql.getAgentById(this.#ctx, addressId)
  }

  async getAgentByAddress(address: string): Promise<AgentRow | undefined> {
    return agentsSql.getAgentByAddress(this.#ctx, address)
  }

  async registerAgent(agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
    return agentsSql.registerAgent(this.#ctx, agent, event)
  }

  async selectAgents(selection: AgentSelection): Promise<AgentRow[]> {
    return agentsSql.selectAgents(this.#ctx, selection)
  }

  async updateAgent(input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return agentsSql.updateAgent(this.#ctx, input)
  }

  async listAgents(limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
    return agentsSql.listAgents(this.#ctx, limit, health)
  }

  async listAgentsPage(query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
    return agentsSql.listAgentsPage(this.#ctx, query)
  }

  // ---- intents ----
  async acceptIntent(input: AcceptIntentInput): Promise<AcceptIntentResult> {
    return intentsSql.acceptIntent(this.#ctx, input)
  }

  async getIntent(intentId: string): Promise<IntentRow | undefined> {
    return intentsSql.getIntent(this.#ctx, intentId)
  }

  async listIntentEvents(intentId: string, since: number, limit: number): Promise<IntentEventRow[]> {
    return intentsSql.listIntentEvents(this.#ctx, intentId, since, limit)
  }

  async listIntents(query: IntentListQuery): Promise<IntentRow[]> {
    return intentsSql.listIntents(this.#ctx, query)
  }

  async claimDeliveries(input: ClaimInput): Promise<ClaimResult> {
    return deliverySql.claimDeliveries(this.#ctx, input)
  }

  async leasedDeliveries(addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]> {
    return deliverySql.leasedDeliveries(this.#ctx, addressId, instanceId, since, now)
  }

  async updateIntent(input: IntentUpdateInput): Promise<IntentUpdateResult> {
    return intentsSql.updateIntent(this.#ctx, input)
  }

  async expireLeases(now: number, limit: number): Promise<ExpireLeasesResult> {
    return deliverySql.expireLeases(this.#ctx, now, limit)
  }

  async timeOutIntents(now: number, limit: number): Promise<number> {
    return intentsSql.timeOutIntents(this.#ctx, now, limit)
  }

  async purge(before: number, idempotencyBefore: number, limit: number): Promise<number> {
    return intentsSql.purge(this.#ctx, before, idempotencyBefore, limit)
  }

  // ---- kill switch ----
  async killAgent(input: KillInput): Promise<{ agent: AgentRow; changed: boolean }> {
    return killSql.killAgent(this.#ctx, input)
  }

  async holdBacklog(input: HoldInput): Promise<{ held: number; canceled: number }> {
    return killSql.holdBacklog(this.#ctx, input)
  }

  async resumeAgent(input: ResumeInput): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
    return killSql.resumeAgent(this.#ctx, input)
  }

  async quarantineInstance(input: QuarantineInput): Promise<QuarantineResult> {
    return killSql.quarantineInstance(this.#ctx, input)
  }

  async liftQuarantine(input: LiftQuarantineInput): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null }> {
    return killSql.liftQuarantine(this.#ctx, input)
  }

  async getQuarantine(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | undefined> {
    return killSql.getQuarantine(this.#ctx, addressId, instanceId)
  }

  async listQuarantines(addressId: string): Promise<InstanceQuarantineRow[]> {
    return killSql.listQuarantines(this.#ctx, addressId)
  }

  async killFleet(input: FleetKillInput): Promise<FleetKillResult> {
    return killSql.killFleet(this.#ctx, input)
  }

  async resumeFleet(input: FleetResumeInput): Promise<FleetResumeResult> {
    return killSql.resumeFleet(this.#ctx, input)
  }

  async listFleetKills(standing: boolean, limit: number): Promise<FleetKillRow[]> {
    return killSql.listFleetKills(this.#ctx, standing, limit)
  }

  async appendAudit(draft: AuditDraft): Promise<AuditRow> {
    return auditSql.appendAudit(this.#ctx, draft)
  }

  async listAudit(query: AuditQuery): Promise<AuditRow[]> {
    return auditSql.listAudit(this.#ctx, query)
  }

  async appendMeshEvent(draft: MeshEventDraft): Promise<MeshEventRow> {
    return auditSql.appendMeshEvent(this.#ctx, draft)
  }

  async listMeshEvents(query: MeshEventQuery): Promise<MeshEventRow[]> {
    return auditSql.listMeshEvents(this.#ctx, query)
  }

  async meshEventsAfter(afterSeqno: number, limit: number): Promise<MeshEventRow[]> {
    return auditSql.meshEventsAfter(this.#ctx, afterSeqno, limit)
  }

  async listPolicies(addressId: string): Promise<PolicyRow[]> {
    return policiesSql.listPolicies(this.#ctx, addressId)
  }

  // ---- egress ----
  async admitEgress(input: EgressAdmitInput): Promise<EgressCallRow> {
    return egressSql.admitEgress(this.#ctx, input)
  }

  async settleEgress(input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
    return egressSql.settleEgress(this.#ctx, input)
  }

  async overdueEgressCalls(now: number, limit: number): Promise<EgressCallRow[]> {
    return egressSql.overdueEgressCalls(this.#ctx, now, limit)
  }

  async listEgressCalls(addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
    return egressSql.listEgressCalls(this.#ctx, addressId, limit, before)
  }

  async listDefaultPolicies(): Promise<PolicyRow[]> {
    return policiesSql.listDefaultPolicies(this.#ctx)
  }

  async listPoliciesOf(addressIds: readonly string[]): Promise<PolicyRow[]> {
    return policiesSql.listPoliciesOf(this.#ctx, addressIds)
  }

  async replaceDefaultPolicies(input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }> {
    return policiesSql.replaceDefaultPolicies(this.#ctx, input)
  }

  async listSilentAgents(before: number, limit: number): Promise<AgentRow[]> {
    return healthSql.listSilentAgents(this.#ctx, before, limit)
  }

  async listEnabledPolicies(kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
    return policiesSql.listEnabledPolicies(this.#ctx, kind, limit)
  }

  async getPolicy(policyId: string): Promise<PolicyRow | undefined> {
    return policiesSql.getPolicy(this.#ctx, policyId)
  }

  async writePolicy(input: PolicyWrite): Promise<PolicyRow | null> {
    return policiesSql.writePolicy(this.#ctx, input)
  }

  async getCounters(addressId: string, now: number): Promise<AgentCounters> {
    return countersSql.getCounters(this.#ctx, addressId, now)
  }

  async sumCounters(fromDay: string, toDay: string, addressIds: readonly string[]) {
    return countersSql.sumCounters(this.#ctx, fromDay, toDay, addressIds)
  }

  async fleetTotals(fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
    return countersSql.fleetTotals(this.#ctx, fromDay, toDay)
  }

  async listHourCounters(addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
    return countersSql.listHourCounters(this.#ctx, addressId, fromHour, toHour)
  }

  async recordBreach(policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
    return countersSql.recordBreach(this.#ctx, policyId, windowKey, event)
  }

  // ---- heartbeats and health ----
  async heartbeat(input: HeartbeatInput): Promise<{ agent: AgentRow; health_status: HealthStatus }> {
    return healthSql.heartbeat(this.#ctx, input)
  }

  async sweepHealth(input: HealthSweepInput): Promise<number> {
    return healthSql.sweepHealth(this.#ctx, input)
  }

  async listInstances(addressId: string): Promise<InstanceRow[]> {
    return healthSql.listInstances(this.#ctx, addressId)
  }

  async instanceCounts(freshSince: number, addressIds: readonly string[]) {
    return healthSql.instanceCounts(this.#ctx, freshSince, addressIds)
  }

  async metricsWindow(addressId: string, windowStart: number): Promise<MetricsWindow> {
    return healthSql.metricsWindow(this.#ctx, addressId, windowStart)
  }

  async countAgentsByHealth(): Promise<Record<string, number>> {
    return healthSql.countAgentsByHealth(this.#ctx)
  }

  // ---- webhooks and the alert outbox ----
  async createWebhook(row: WebhookRow, audit: AuditDraft): Promise<WebhookRow> {
    return alertsSql.createWebhook(this.#ctx, row, audit)
  }

  async listWebhooks(): Promise<WebhookRow[]> {
    return alertsSql.listWebhooks(this.#ctx)
  }

  async deleteWebhook(webhookId: string, now: number, audit: (row: WebhookRow) => AuditDraft): Promise<WebhookRow> {
    return alertsSql.deleteWebhook(this.#ctx, webhookId, now, audit)
  }

  async claimAlerts(now: number, leaseMs: number, limit: number) {
    return alertsSql.claimAlerts(this.#ctx, now, leaseMs, limit)
  }

  async recordAlertAttempt(
    alertId: string,
    result: { now: number; status: number | null; error: string | null; delivered: boolean; next_attempt_at: number | null },
  ): Promise<void> {
    return alertsSql.recordAlertAttempt(this.#ctx, alertId, result)
  }

  async listAlerts(limit: number, webhookId: string | null): Promise<AlertRow[]> {
    return alertsSql.listAlerts(this.#ctx, limit, webhookId)
  }

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
