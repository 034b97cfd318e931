import type { Database as Db, Statement } from 'better-sqlite3'
import type { AgentRow, AlertMapper, AuditHasher, InstanceQuarantineRow } from '../store.js'
import type { Change } from '../change-feed.js'
import type { Stmts } from './statements.js'
import type * as agentsSql from './agents.js'
import type * as auditSql from './audit.js'
import type * as countersSql from './counters.js'
import type * as healthSql from './health.js'
import type * as intentsSql from './intents.js'
import type * as killSql from './kill.js'

/** A function of a concern file with its context bound (the first parameter). */
type Bound<F> = F extends (ctx: SqliteContext, ...args: infer A) => infer R ? (...args: A) => R : never

/**
 * What the per-concern files of the SQLite engine share: the connection and its statements, the
 * write queue and savepoints of SqliteStore, its row caches, and the helpers that several
 * concerns call inside a write (audit entries, mesh events, counters, kills, agent rows).
 */
export interface SqliteContext {
  readonly db: Db
  readonly q: Stmts
  readonly hashAudit: AuditHasher
  readonly alertFor: AlertMapper
  readonly heartbeatBatchMs: number
  write<T>(fn: (changes: Change[]) => T, lingerMs?: number): Promise<T>
  savepoint<T>(fn: () => T): T
  adhoc(sql: string): Statement
  agentById(addressId: string): AgentRow | undefined
  agentByAddress(address: string): AgentRow | undefined
  quarantine(addressId: string, instanceId: string): InstanceQuarantineRow | null
  select: Bound<typeof agentsSql.select>
  appeared: Bound<typeof agentsSql.appeared>
  applyStanding: Bound<typeof agentsSql.applyStanding>
  ensureAgent: Bound<typeof agentsSql.ensureAgent>
  accept: Bound<typeof intentsSql.accept>
  recordKill: Bound<typeof killSql.recordKill>
  resumeOne: Bound<typeof killSql.resumeOne>
  audit: Bound<typeof auditSql.audit>
  meshEvent: Bound<typeof auditSql.meshEvent>
  counters: Bound<typeof countersSql.counters>
  applyCost: Bound<typeof countersSql.applyCost>
  reassess: Bound<typeof healthSql.reassess>
}
