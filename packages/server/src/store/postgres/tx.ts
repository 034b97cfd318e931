/** PostgreSQL engine, what every concern shares: the transaction handle, the lock keys, the event batch and the group commit. */
import { createHash } from 'node:crypto'
import type pg from 'pg'
import type { PoolClient } from 'pg'
import type { Change } from '../change-feed.js'
import type {
  AcceptIntentInput,
  AcceptIntentResult,
  AuditDraft,
  IntentEventRow,
  IntentUpdateInput,
  IntentUpdateResult,
  MeshEventDraft,
} from '../store.js'
import type { DatabaseClock } from './postgres-clock.js'
import type { PostgresStoreConfig } from './postgres-store.js'

/** `pg_advisory_xact_lock` keys (first argument: this class; second: the resource). */
export const LOCK_CLASS = 0x43504b54 // "CPKT"
export const LOCK_MIGRATIONS = 1
export const LOCK_KEYS = 2
export const LOCK_CLAIM = 3
/**
 * Fleet kills against agent creation: a kill by selector takes it exclusively, every
 * transaction that creates (or relabels) an agent row takes it shared — always before any
 * agent gate, so the two orders never cross. A new agent therefore either committed before
 * the fleet kill read the agents (and is killed by it) or sees the fleet kill row.
 */
export const LOCK_FLEET = 4
/** Second key: hashtext(address). */
export const LOCK_AGENT = LOCK_CLASS + 16
/** Counter shards are folded by one replica at a time (purge). */
export const LOCK_FOLD = 5

/**
 * Thrown inside a transaction that turns out to need to write an agent row it did not lock
 * (a cost ceiling with on_breach: kill); the transaction is rolled back and run again with
 * that row locked for update from the start, so no lock is ever upgraded.
 */
export class NeedsRowLock extends Error {}

/** One transaction on one pooled client, with what it will publish at commit. */
export class Tx {
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

  /** The BEGIN (and its SET LOCALs) not sent yet: it goes with the first statement. */
  #begin: string | null

  /** Lock statements not sent yet (see `lock`): they go with the next statement. */
  #locks: { sql: string; params: unknown[] }[] = []

  constructor(
    readonly client: PoolClient,
    /** Lock the resolving agent's row for update (see NeedsRowLock). */
    readonly lockForCost: boolean,
    /** Run statements as named prepared statements (see `prepared`). */
    readonly named: boolean,
    begin: string,
  ) {
    this.#begin = begin
  }

  /** Whether the transaction was opened (a transaction that ran no statement has nothing to commit). */
  get begun(): boolean {
    return this.#begin === null
  }

  async rows<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    return (await this.#query(sql, params)).rows as T[]
  }

  async one<T>(sql: string, params: unknown[] = []): Promise<T | undefined> {
    return (await this.#query(sql, params)).rows[0] as T | undefined
  }

  async run(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.#query(sql, params)).rowCount ?? 0
  }

  /**
   * A statement that only takes locks (an agent's gate), run before the next statement of this
   * transaction and sent with it in the same round trip. It is still a statement of its own:
   * the next one takes its snapshot after the locks are held (READ COMMITTED takes a new
   * snapshot per statement, also within one simple query), so it sees every write committed
   * by the lock's previous holder.
   */
  lock(sql: string, params: unknown[]): void {
    this.#locks.push({ sql, params })
  }

  /** Sends the locks still waiting for a next statement (before COMMIT). */
  async flush(): Promise<void> {
    const last = this.#locks.pop()
    if (last) await this.#query(last.sql, last.params)
  }

  /**
   * Sends what is pending (the BEGIN, locks) together with this statement in one simple query,
   * parameters written in as literals — one round trip for all of them; when a parameter cannot
   * be written so (see inlineParams), each goes on its own.
   */
  async #query(sql: string, params: unknown[]): Promise<pg.QueryResult> {
    const begin = this.#begin
    const locks = this.#locks
    if (begin === null && locks.length === 0) return this.client.query(prepared(sql, params, this.named))
    this.#begin = null
    this.#locks = []
    const escape = (s: string) => this.client.escapeLiteral(s)
    const texts = [...locks, { sql, params }].map((st) => inlineParams(st.sql, st.params, escape))
    if (texts.every((t) => t !== null) && texts.reduce((n, t) => n + (t as string).length, 0) <= MAX_INLINE_CHARS) {
      const all = (begin === null ? texts : [begin, ...texts]).join('; ')
      const results = (await this.client.query(all)) as unknown as pg.QueryResult | pg.QueryResult[]
      return Array.isArray(results) ? (results[results.length - 1] as pg.QueryResult) : results
    }
    if (begin !== null) await this.client.query(begin)
    for (const st of locks) await this.client.query(prepared(st.sql, st.params, this.named))
    return this.client.query(prepared(sql, params, this.named))
  }
}

/** Longest statements sent inline with BEGIN and locks (longer ones pay the extra round trips). */
const MAX_INLINE_CHARS = 8_192

/**
 * `sql` with `$n` replaced by `params[n-1]` as SQL literals, or null when a value has no safe
 * literal form here (anything but null, booleans, finite numbers, strings without NUL — the
 * simple protocol sends the query as a C string — and flat arrays of those) or the result is long.
 * Every value is written as a quoted literal of the text node-postgres would bind (numbers as
 * their decimal text, arrays in PostgreSQL's array syntax), so PostgreSQL types it from the
 * context exactly as it types a bound parameter; quoting goes through the connection's
 * `escapeLiteral`.
 */
export function inlineParams(sql: string, params: readonly unknown[], escape: (s: string) => string): string | null {
  const text = (v: unknown): string | null => {
    if (typeof v === 'boolean') return v ? 'true' : 'false'
    if (typeof v === 'number') return Number.isFinite(v) ? String(v) : null
    if (typeof v === 'bigint') return v.toString()
    if (typeof v === 'string') return v.includes('\0') ? null : v
    return null
  }
  const literal = (v: unknown): string | null => {
    if (v === null || v === undefined) return 'NULL'
    if (Array.isArray(v)) {
      const items: string[] = []
      for (const x of v) {
        if (x === null || x === undefined) items.push('NULL')
        else {
          const t = text(x)
          if (t === null) return null
          items.push(`"${t.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`)
        }
      }
      return escape(`{${items.join(',')}}`)
    }
    const t = text(v)
    return t === null ? null : escape(t)
  }
  const values: string[] = []
  for (const p of params) {
    const l = literal(p)
    if (l === null) return null
    values.push(l)
  }
  let unknownRef = false
  const out = sql.replace(/\$(\d+)/g, (_, n: string) => {
    const v = values[Number(n) - 1]
    if (v === undefined) unknownRef = true
    return v ?? ''
  })
  return unknownRef || out.length > MAX_INLINE_CHARS ? null : out
}

/** Distinct statement texts given a name; any beyond run unnamed (parsed each time). */
const MAX_PREPARED = 256
const statementNames = new Map<string, string>()

/**
 * A statement as a named prepared statement: node-postgres parses it once per connection and
 * then only binds and executes it, so PostgreSQL skips parse, analysis and rewrite on every
 * later run (the CTEs of the hot path cost more to parse than to run). Names come from a
 * hash of the text, so one text has one name on every connection and in every replica.
 * A connection whose prepared statement went stale (a migration changed a table under it, or a
 * pooler moved the session) is discarded and the statement run again (see isStalePlan).
 * `named: false` (CHOKEPOINT_PG_PREPARED_STATEMENTS=0, for poolers without prepared-statement
 * support) sends every statement unnamed.
 */
export function prepared(text: string, values: unknown[], named = true): { name?: string; text: string; values: unknown[] } {
  if (!named) return { text, values }
  let name = statementNames.get(text)
  if (name === undefined) {
    if (statementNames.size >= MAX_PREPARED) return { text, values }
    name = `cp_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`
    statementNames.set(text, name)
  }
  return { name, text, values }
}

export const INSERT_EVENTS = `INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
  SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[])`

/** Events to insert in one statement (column arrays for unnest). */
export class EventBatch {
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

export const windowOf = (now: number): { day: string; hour: string } => {
  const at = new Date(now).toISOString()
  return { day: at.slice(0, 10), hour: at.slice(0, 13) }
}

/** What the concerns use of the engine: its transactions, reads and configuration. */
export interface PgDb {
  /** One transaction (see PostgresStore#tx); `pool`: the control pool for kills and resumes. */
  tx<T>(fn: (tx: Tx) => Promise<T>, pool?: pg.Pool): Promise<T>
  /** One statement outside a transaction. */
  read<T>(sql: string, params?: unknown[]): Promise<T[]>
  readOne<T>(sql: string, params?: unknown[]): Promise<T | undefined>
  readonly controlPool: pg.Pool
  readonly config: Readonly<PostgresStoreConfig>
  readonly clock: DatabaseClock
  /** Addresses known to have a row (rows are never deleted): sends between them skip the fleet lock. */
  readonly known: Set<string>
  /**
   * Addresses seen with policies (policy_version ≠ 0, which never returns to 0): their accepts
   * skip the group commit (see acceptBatch).
   */
  readonly policied: Set<string>
  /** Accepts waiting for their group commit (see acceptBatch). */
  readonly accepts: GroupCommit<AcceptIntentInput, AcceptIntentResult>
  /** Acks and resolves waiting for their group commit (see updateBatch). */
  readonly updates: GroupCommit<IntentUpdateInput, IntentUpdateResult>
}

/** One caller waiting in a group commit. */
export interface Pending<I, O> {
  readonly input: I
  resolve(value: O): void
  reject(error: unknown): void
}

/**
 * Group commit: calls that arrive while the previous batches are running (or in the same
 * event-loop turn) are handed to `run` together, up to `maxBatch` at a time, at most
 * `maxInFlight` batches at once. `run` answers every caller of its batch — only after its
 * commit; a batch that throws rejects the callers it did not answer.
 */
export class GroupCommit<I, O> {
  readonly #run: (batch: Pending<I, O>[]) => Promise<void>
  readonly #maxBatch: number
  readonly #maxInFlight: number
  #queue: Pending<I, O>[] = []
  #inFlight = 0
  #scheduled = false

  constructor(run: (batch: Pending<I, O>[]) => Promise<void>, options: { maxBatch?: number; maxInFlight?: number } = {}) {
    this.#run = run
    this.#maxBatch = options.maxBatch ?? 64
    this.#maxInFlight = options.maxInFlight ?? 2
  }

  submit(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ input, resolve, reject })
      this.#schedule()
    })
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#maxInFlight || this.#queue.length === 0) return
    this.#scheduled = true
    // The end of this event-loop turn: whatever arrived in it shares the batch.
    setImmediate(() => {
      this.#scheduled = false
      while (this.#inFlight < this.#maxInFlight && this.#queue.length > 0) this.#start(this.#queue.splice(0, this.#maxBatch))
    })
  }

  #start(batch: Pending<I, O>[]): void {
    this.#inFlight += 1
    let settled = false
    const answered = new Set<Pending<I, O>>()
    const guarded = batch.map((p) => ({
      input: p.input,
      resolve: (value: O) => {
        answered.add(p)
        p.resolve(value)
      },
      reject: (error: unknown) => {
        answered.add(p)
        p.reject(error)
      },
    }))
    this.#run(guarded)
      .catch((error: unknown) => {
        for (const p of batch) if (!answered.has(p)) p.reject(error)
      })
      .finally(() => {
        if (!settled) {
          settled = true
          this.#inFlight -= 1
          this.#schedule()
        }
      })
  }
}
