/**
 * Copies a SQLite deployment into an empty PostgreSQL database (`chokepoint migrate-store`).
 *
 * Every table of the SQLite schema is copied verbatim — API key hashes, intents with their
 * events and delivery state, idempotency keys, policies, counters, the audit log (so its hash
 * chain stays valid), mesh events, instances, webhooks, the alert outbox, delivery counters —
 * and PostgreSQL's own bookkeeping is set to continue where SQLite stopped: the audit chain
 * head and the mesh event counter (`store_heads`) and the identity sequences of `intents` and
 * `policies`.
 *
 * Safety: the SQLite data directory is locked for the duration (a running gateway holding it
 * is refused; none can start meanwhile) and read in one read transaction; the target is
 * migrated through `PostgresStore.open` (same schema version as this gateway), must be empty,
 * and is written in ONE transaction that first locks every table, so a failure leaves it
 * empty and a gateway started on it meanwhile waits. Before COMMIT every table's row count and
 * an order-independent digest of its rows are compared with the source, and the copied audit
 * chain is verified; any difference rolls everything back.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import pg from 'pg'
import { GENESIS_HASH, auditHash } from '../core/audit/audit-chain.js'
import { alertFor } from '../core/alerts/alerts.js'
import { lockDataDir } from '../data-dir-lock.js'
import { POSTGRES_MIGRATIONS } from './postgres/postgres-migrations.js'
import { PostgresStore } from './postgres/postgres-store.js'
import { SQLITE_MIGRATIONS } from './sqlite/sqlite-migrations.js'

/**
 * Every table of the SQLite schema, in an order that satisfies the foreign keys (agents
 * first). A table the source has and this list lacks stops the copy (schema_mismatch).
 */
export const MIGRATED_TABLES = [
  'agents',
  'address_seq',
  'api_keys',
  'intents',
  'intent_events',
  'idempotency_keys',
  'policies',
  'counters_day',
  'counters_hour',
  'budget_alerts',
  'policy_breaches',
  'audit_log',
  'mesh_events',
  'agent_instances',
  'heartbeat_metrics',
  'webhooks',
  'alert_outbox',
  'fleet_kills',
  'default_policies',
  'instance_quarantines',
  'egress_calls',
] as const

/** Tables whose key is a PostgreSQL identity column, and the SQLite AUTOINCREMENT it continues. */
const IDENTITY_COLUMNS: Record<string, string> = { intents: 'seqno', policies: 'seqno', egress_calls: 'seqno' }

export type MigrateStoreErrorCode =
  | 'source_missing'
  | 'source_locked'
  | 'schema_mismatch'
  | 'target_unreachable'
  | 'target_not_empty'
  | 'copy_failed'
  | 'verify_failed'

/** A refusal or failure of the copy, with a message meant for the operator. */
export class MigrateStoreError extends Error {
  constructor(
    readonly code: MigrateStoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'MigrateStoreError'
  }
}

export interface MigrateStoreProgress {
  table: string
  /** Rows of this table copied so far. */
  copied: number
  /** Rows of this table in the source. */
  total: number
  /** True once the table is complete. */
  done: boolean
}

export interface MigrateStoreOptions {
  /** The SQLite data directory (holds chokepoint.db) of a stopped gateway. */
  dataDir: string
  /** The PostgreSQL database URL; the database must exist and be empty. */
  databaseUrl: string
  /** Rows per INSERT statement (default 500; fewer for wide tables, PostgreSQL takes ≤ 65535 parameters). */
  batchRows?: number | undefined
  onProgress?: ((progress: MigrateStoreProgress) => void) | undefined
}

export interface MigrateStoreSummary {
  tables: { table: string; rows: number }[]
  total_rows: number
  schema_version: number
  /** The copied audit trail as PostgreSQL now holds it (verified before COMMIT). */
  audit: { entries: number; head_seq: number; head_hash: string | null; valid: boolean; first_broken_seq: number | null }
  /** Where PostgreSQL continues numbering. */
  continues: { mesh_event_seqno: number; intent_seqno: number; policy_seqno: number }
  duration_ms: number
}

type Row = Record<string, unknown>

const quoteIdent = (name: string): string => `"${name.replace(/"/g, '""')}"`

/** A value as text for the digest: integers, reals and int8 strings all meet as decimal text. */
const digestValue = (value: unknown): string | null => {
  if (value === null || value === undefined) return null
  if (typeof value === 'bigint') return value.toString()
  if (typeof value === 'number') return String(value)
  if (typeof value === 'string') return value
  if (Buffer.isBuffer(value)) return `\\x${value.toString('hex')}`
  return String(value)
}

/** An order-independent digest of a table (sum of per-row hashes mod 2^64), so collations do not matter. */
class TableDigest {
  #sum = 0n
  #rows = 0

  constructor(readonly columns: readonly string[]) {}

  add(row: Row): void {
    const hash = createHash('sha256')
      .update(JSON.stringify(this.columns.map((c) => digestValue(row[c]))))
      .digest()
    this.#sum = (this.#sum + hash.readBigUInt64BE(0)) & 0xffffffffffffffffn
    this.#rows += 1
  }

  get rows(): number {
    return this.#rows
  }

  get value(): string {
    return `${this.#rows}:${this.#sum.toString(16)}`
  }
}

/** Checks an audit chain entry by entry (the gateway's rule, GET /v1/audit/verify). */
class ChainCheck {
  entries = 0
  headSeq = 0
  headHash: string | null = null
  firstBroken: number | null = null

  add(row: Row): void {
    this.entries += 1
    const seq = Number(row['seq'])
    const prev = this.headHash ?? GENESIS_HASH
    if (this.firstBroken === null) {
      let ok = seq === this.headSeq + 1 && row['prev_hash'] === prev
      if (ok) {
        try {
          const text = (v: unknown): unknown => (v === null || v === undefined ? null : (JSON.parse(String(v)) as unknown))
          ok =
            auditHash(prev, {
              seq,
              at: String(row['at']),
              actor: String(row['actor']),
              action: String(row['action']),
              target: String(row['target']),
              reason: row['reason'] === null || row['reason'] === undefined ? null : String(row['reason']),
              before: text(row['before']),
              after: text(row['after']),
            }) === row['hash']
        } catch {
          ok = false
        }
      }
      if (!ok) this.firstBroken = this.headSeq + 1
    }
    this.headSeq = seq
    this.headHash = String(row['hash'])
  }
}

/** Whether a process with this pid exists (EPERM: it exists, owned by someone else). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** A database URL without its password, for messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return 'postgres://…'
  }
}

/** Opens the source: checks the directory, the gateway lock and the schema version. */
function openSource(dataDir: string): { db: Database.Database; unlock: () => void } {
  const file = join(dataDir, 'chokepoint.db')
  if (!existsSync(file)) {
    throw new MigrateStoreError('source_missing', `no Chokepoint SQLite data in ${dataDir} (${file} does not exist)`)
  }
  const lockFile = join(dataDir, 'chokepoint.lock')
  if (existsSync(lockFile)) {
    const pid = Number(readFileSync(lockFile, 'utf8').trim())
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
      throw new MigrateStoreError(
        'source_locked',
        `a gateway (pid ${pid}) is serving ${dataDir}; stop it first: migrate-store copies a stopped deployment`,
      )
    }
  }
  let unlock: () => void
  try {
    // Held until the copy ends, so no gateway can start on the directory meanwhile.
    unlock = lockDataDir(dataDir)
  } catch (error) {
    throw new MigrateStoreError('source_locked', (error as Error).message, { cause: error })
  }
  try {
    const db = new Database(file, { fileMustExist: true })
    db.defaultSafeIntegers(true)
    const version = Number(db.pragma('user_version', { simple: true }))
    if (version !== SQLITE_MIGRATIONS.length) {
      db.close()
      throw new MigrateStoreError(
        'schema_mismatch',
        version < SQLITE_MIGRATIONS.length
          ? `the SQLite data is at schema version ${version}, this chokepoint's is ${SQLITE_MIGRATIONS.length}: start it once with this version (chokepoint serve --data ${dataDir}), stop it, then migrate`
          : `the SQLite data (schema version ${version}) is newer than this chokepoint (${SQLITE_MIGRATIONS.length}); upgrade chokepoint`,
      )
    }
    return { db, unlock }
  } catch (error) {
    unlock()
    if (error instanceof MigrateStoreError) throw error
    throw new MigrateStoreError('source_missing', `cannot open ${file}: ${(error as Error).message}`, { cause: error })
  }
}

/** Runs the schema migrations on the target through the gateway's own engine. */
async function migrateTarget(databaseUrl: string): Promise<void> {
  let store: PostgresStore
  try {
    store = await PostgresStore.open({ url: databaseUrl, hashAudit: auditHash, alertFor, poolSize: 2 })
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause ?? error
    throw new MigrateStoreError(
      'target_unreachable',
      `cannot open the PostgreSQL database ${redactDatabaseUrl(databaseUrl)}: ${(cause as Error).message ?? String(cause)}`,
      { cause: error },
    )
  }
  await store.close()
}

/**
 * Copies the SQLite deployment in `dataDir` into the empty PostgreSQL database at
 * `databaseUrl`. Throws MigrateStoreError on every refusal (nothing written) and failure
 * (everything rolled back).
 */
export async function migrateStore(options: MigrateStoreOptions): Promise<MigrateStoreSummary> {
  const started = performance.now()
  if (SQLITE_MIGRATIONS.length !== POSTGRES_MIGRATIONS.length) {
    throw new MigrateStoreError(
      'schema_mismatch',
      `this chokepoint's engines disagree on the schema version (SQLite ${SQLITE_MIGRATIONS.length}, PostgreSQL ${POSTGRES_MIGRATIONS.length})`,
    )
  }
  const { db, unlock } = openSource(options.dataDir)
  const client = new pg.Client({ connectionString: options.databaseUrl, application_name: 'chokepoint-migrate-store' })
  let connected = false
  try {
    await migrateTarget(options.databaseUrl)
    try {
      await client.connect()
      connected = true
    } catch (error) {
      throw new MigrateStoreError('target_unreachable', `cannot connect to ${redactDatabaseUrl(options.databaseUrl)}: ${(error as Error).message}`, {
        cause: error,
      })
    }
    // One consistent snapshot of the source (the directory lock keeps gateways out anyway).
    db.exec('BEGIN')
    const summary = await copyAll(db, client, options)
    db.exec('COMMIT')
    return { ...summary, duration_ms: Math.round(performance.now() - started) }
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK')
    db.close()
    if (connected) await client.end().catch(() => undefined)
    unlock()
  }
}

async function copyAll(
  db: Database.Database,
  client: pg.Client,
  options: MigrateStoreOptions,
): Promise<Omit<MigrateStoreSummary, 'duration_ms'>> {
  const sourceTables = (
    db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[]
  ).map((r) => r.name)
  const unknown = sourceTables.filter((t) => !(MIGRATED_TABLES as readonly string[]).includes(t))
  const absent = MIGRATED_TABLES.filter((t) => !sourceTables.includes(t))
  if (unknown.length > 0 || absent.length > 0) {
    throw new MigrateStoreError(
      'schema_mismatch',
      `the SQLite schema has tables this copy does not know (${unknown.join(', ') || 'none'}) or lacks (${absent.join(', ') || 'none'})`,
    )
  }
  const sequences = new Map<string, number>()
  const hasSeqTable = db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").get() !== undefined
  if (hasSeqTable) {
    for (const r of db.prepare('SELECT name, seq FROM sqlite_sequence').all() as { name: string; seq: bigint }[]) {
      sequences.set(r.name, Number(r.seq))
    }
  }

  let committed = false
  await client.query('BEGIN')
  try {
    // Every table locked first: a gateway started on this database meanwhile waits for COMMIT.
    await client.query(`LOCK TABLE ${[...MIGRATED_TABLES, 'store_heads'].map(quoteIdent).join(', ')} IN ACCESS EXCLUSIVE MODE`)
    const version = Number((await client.query<{ v: number }>('SELECT coalesce(max(version), 0) AS v FROM schema_migrations')).rows[0]?.v)
    if (version !== POSTGRES_MIGRATIONS.length) {
      throw new MigrateStoreError('schema_mismatch', `the PostgreSQL schema is at version ${version}, expected ${POSTGRES_MIGRATIONS.length}`)
    }
    const counts = await client.query<{ t: string; n: string }>(
      MIGRATED_TABLES.map((t) => `SELECT '${t}' AS t, count(*) AS n FROM ${quoteIdent(t)}`).join(' UNION ALL '),
    )
    const heads = await client.query<{ name: string; seq: string }>('SELECT name, seq FROM store_heads')
    const nonEmpty = counts.rows.filter((r) => Number(r.n) > 0).map((r) => `${r.t}: ${r.n} rows`)
    for (const h of heads.rows) if (Number(h.seq) > 0) nonEmpty.push(`store_heads.${h.name} at ${h.seq}`)
    if (nonEmpty.length > 0) {
      throw new MigrateStoreError(
        'target_not_empty',
        `the target database is not empty (${nonEmpty.slice(0, 6).join(', ')}${nonEmpty.length > 6 ? ', …' : ''}); ` +
          'migrate-store only copies into an empty database: create a new one (e.g. createdb chokepoint) and never start a gateway on it before the copy',
      )
    }

    const tables: { table: string; rows: number }[] = []
    const chain = new ChainCheck()
    const maxSeq: Record<string, number> = {}
    for (const table of MIGRATED_TABLES) {
      const columns = (db.prepare(`PRAGMA table_info(${quoteIdent(table)})`).all() as { name: string }[]).map((c) => c.name)
      const target = await client.query<{ column_name: string; udt_name: string }>(
        `SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`,
        [table],
      )
      const types = new Map(target.rows.map((r) => [r.column_name, r.udt_name]))
      const missing = columns.filter((c) => !types.has(c))
      const extra = [...types.keys()].filter((c) => !columns.includes(c))
      if (missing.length > 0 || extra.length > 0) {
        throw new MigrateStoreError(
          'schema_mismatch',
          `table ${table} differs between the engines (only in SQLite: ${missing.join(', ') || 'none'}; only in PostgreSQL: ${extra.join(', ') || 'none'})`,
        )
      }
      const total = Number((db.prepare(`SELECT count(*) AS n FROM ${quoteIdent(table)}`).get() as { n: bigint }).n)
      const digest = new TableDigest(columns)
      const identity = IDENTITY_COLUMNS[table]
      const batch = Math.max(1, Math.min(options.batchRows ?? 500, Math.floor(60_000 / columns.length)))
      const insertSql = (n: number): string => {
        const values: string[] = []
        for (let r = 0; r < n; r += 1) {
          values.push(`(${columns.map((c, i) => `$${r * columns.length + i + 1}::${types.get(c)}`).join(', ')})`)
        }
        return (
          `INSERT INTO ${quoteIdent(table)} (${columns.map(quoteIdent).join(', ')})` +
          `${identity ? ' OVERRIDING SYSTEM VALUE' : ''} VALUES ${values.join(', ')}`
        )
      }
      let copied = 0
      const iterator = db.prepare(`SELECT * FROM ${quoteIdent(table)}`).iterate() as IterableIterator<Row>
      try {
        for (let exhausted = false; !exhausted; ) {
          const rows: Row[] = []
          while (rows.length < batch) {
            const next = iterator.next()
            if (next.done) {
              exhausted = true
              break
            }
            rows.push(next.value)
          }
          if (rows.length === 0) break
          const params: unknown[] = []
          for (const row of rows) {
            digest.add(row)
            if (table === 'audit_log') chain.add(row)
            if (identity) maxSeq[table] = Math.max(maxSeq[table] ?? 0, Number(row[identity]))
            if (table === 'mesh_events') maxSeq[table] = Math.max(maxSeq[table] ?? 0, Number(row['seqno']))
            for (const c of columns) {
              const v = row[c]
              params.push(typeof v === 'bigint' ? v.toString() : v)
            }
          }
          try {
            await client.query(insertSql(rows.length), params)
          } catch (error) {
            throw new MigrateStoreError('copy_failed', `copying ${table} failed after ${copied} rows: ${(error as Error).message}`, { cause: error })
          }
          copied += rows.length
          options.onProgress?.({ table, copied, total, done: false })
        }
      } finally {
        iterator.return?.()
      }
      // Read back what PostgreSQL holds and compare with the source.
      const back = await digestTarget(client, table, columns)
      if (back !== digest.value) {
        throw new MigrateStoreError('verify_failed', `table ${table}: the copy differs from the source (source ${digest.value}, copy ${back})`)
      }
      options.onProgress?.({ table, copied, total: copied, done: true })
      tables.push({ table, rows: copied })
    }

    // PostgreSQL's bookkeeping continues where SQLite stopped.
    const meshSeq = Math.max(sequences.get('mesh_events') ?? 0, maxSeq['mesh_events'] ?? 0)
    await client.query(`UPDATE store_heads SET seq = $1, hash = $2 WHERE name = 'audit'`, [chain.headSeq, chain.headHash])
    await client.query(`UPDATE store_heads SET seq = $1 WHERE name = 'mesh'`, [meshSeq])
    const next: Record<string, number> = {}
    for (const [table, column] of Object.entries(IDENTITY_COLUMNS)) {
      const last = Math.max(sequences.get(table) ?? 0, maxSeq[table] ?? 0)
      const seqName = `pg_get_serial_sequence('${table}', '${column}')`
      if (last > 0) await client.query(`SELECT setval(${seqName}, $1, true)`, [last])
      next[table] = last + 1
    }

    // The audit chain as PostgreSQL holds it, checked the way GET /v1/audit/verify checks it.
    const copiedChain = await chainOfTarget(client)
    if (copiedChain.entries !== chain.entries || copiedChain.firstBroken !== chain.firstBroken || copiedChain.headHash !== chain.headHash) {
      throw new MigrateStoreError(
        'verify_failed',
        `the copied audit trail differs from the source (source: ${chain.entries} entries, head ${chain.headHash}; copy: ${copiedChain.entries}, head ${copiedChain.headHash})`,
      )
    }
    await client.query('COMMIT')
    committed = true
    return {
      tables,
      total_rows: tables.reduce((n, t) => n + t.rows, 0),
      schema_version: version,
      audit: {
        entries: chain.entries,
        head_seq: chain.headSeq,
        head_hash: chain.headHash,
        valid: chain.firstBroken === null,
        first_broken_seq: chain.firstBroken,
      },
      continues: { mesh_event_seqno: meshSeq + 1, intent_seqno: next['intents'] ?? 1, policy_seqno: next['policies'] ?? 1 },
    }
  } finally {
    if (!committed) await client.query('ROLLBACK').catch(() => undefined)
  }
}

const FETCH_ROWS = 2000

/** The digest of a target table, read through a cursor inside the copy's transaction. */
async function digestTarget(client: pg.Client, table: string, columns: readonly string[]): Promise<string> {
  const digest = new TableDigest(columns)
  await client.query(`DECLARE migrate_digest NO SCROLL CURSOR FOR SELECT ${columns.map(quoteIdent).join(', ')} FROM ${quoteIdent(table)}`)
  try {
    for (;;) {
      const { rows } = await client.query<Row>(`FETCH ${FETCH_ROWS} FROM migrate_digest`)
      for (const row of rows) digest.add(row)
      if (rows.length < FETCH_ROWS) break
    }
  } finally {
    await client.query('CLOSE migrate_digest')
  }
  return digest.value
}

async function chainOfTarget(client: pg.Client): Promise<ChainCheck> {
  const chain = new ChainCheck()
  let after = 0
  for (;;) {
    const { rows } = await client.query<Row>('SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [after, FETCH_ROWS])
    for (const row of rows) chain.add(row)
    if (rows.length < FETCH_ROWS) return chain
    after = Number(rows[rows.length - 1]?.['seq'])
  }
}
