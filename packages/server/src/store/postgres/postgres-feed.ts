import type pg from 'pg'
import { LocalFeed, type Change, type ChangeFeed, type ChangeListener } from '../change-feed.js'

/** The NOTIFY channel every replica LISTENs on. */
export const FEED_CHANNEL = 'chokepoint'

/** NOTIFY payloads must stay below 8000 bytes; leave room for the envelope. */
const MAX_PAYLOAD_BYTES = 7_500
/** The kill state is polled this often while LISTEN is down… */
const POLL_INTERVAL_MS = 250
/**
 * …and this often while it is up. A LISTEN connection can stall without an error (its backend
 * or its network path frozen); until the probe notices, NOTIFYs do not arrive, and this poll
 * still cuts a killed agent's streams on this replica within DESIGN §2.1's 1 s bound.
 */
const LISTENING_POLL_INTERVAL_MS = 500
const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5_000
/** The LISTEN connection is probed this often, so a silently dead socket is noticed. */
const PROBE_INTERVAL_MS = 1_000
const PROBE_TIMEOUT_MS = 2_000

/** One NOTIFY payload: the committing replica (`o`) and the changes of one transaction (`c`). */
interface Envelope {
  o: string
  c: Change[]
}

/**
 * Splits a transaction's changes into NOTIFY payloads below the size limit. The origin lets
 * the committing replica skip its own notifications: it publishes locally right after COMMIT.
 */
export function encodeChanges(origin: string, changes: readonly Change[]): string[] {
  const payloads: string[] = []
  let batch: string[] = []
  let size = 0
  const head = `{"o":${JSON.stringify(origin)},"c":[`
  const flush = (): void => {
    if (batch.length > 0) payloads.push(`${head}${batch.join(',')}]}`)
    batch = []
    size = Buffer.byteLength(head) + 2
  }
  flush()
  for (const change of changes) {
    const text = JSON.stringify(change)
    const bytes = Buffer.byteLength(text) + 1
    if (size + bytes > MAX_PAYLOAD_BYTES) flush()
    batch.push(text)
    size += bytes
  }
  flush()
  return payloads
}

function decodeChanges(payload: string | undefined): Envelope | null {
  if (payload === undefined) return null
  try {
    const parsed = JSON.parse(payload) as Partial<Envelope>
    if (typeof parsed.o !== 'string' || !Array.isArray(parsed.c)) return null
    return { o: parsed.o, c: parsed.c.filter((c): c is Change => typeof (c as { type?: unknown })?.type === 'string') }
  } catch {
    return null
  }
}

export interface PostgresFeedOptions {
  /** This replica's id; notifications it sent itself are skipped (already published locally). */
  origin: string
  /** A new, unconnected client for the dedicated LISTEN connection. */
  newClient: () => pg.Client
  /** Runs a read on the pool (the resync and the kill-state poll). */
  query: <R>(sql: string, params?: unknown[]) => Promise<R[]>
  log?: ((level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void) | undefined
}

/**
 * The PostgreSQL change feed. Committing transactions `pg_notify` their changes (delivered to
 * every replica at commit) and publish them locally at once; a dedicated client LISTENs and
 * republishes other replicas' changes. The feed only speeds things up, but a kill must still
 * cut streams on every replica: when the LISTEN connection fails it reconnects with backoff,
 * re-LISTENs and republishes the current state (every killed agent, every agent with queued
 * work, the newest mesh event). It polls the kill state every 250 ms while LISTEN is down and
 * every 500 ms while it is up, so that a LISTEN connection that stalls silently cannot keep a
 * killed agent's streams open past the 1 s bound before the probe notices.
 */
export class PostgresFeed implements ChangeFeed {
  readonly #local = new LocalFeed()
  readonly #options: PostgresFeedOptions
  #client: pg.Client | null = null
  #listening = false
  #closed = false
  #attempt = 0
  #reconnectTimer: NodeJS.Timeout | null = null
  #pollTimer: NodeJS.Timeout | null = null
  #probeTimer: NodeJS.Timeout | null = null
  #polling = false
  /** Kill state seen by the poll (address_id → killed_at); null until the first poll. */
  #killedSeen: Map<string, number> | null = null
  /** Instance quarantines seen by the poll (address_id \n instance_id → quarantined_at); null until the first poll. */
  #quarantinesSeen: Map<string, number> | null = null

  constructor(options: PostgresFeedOptions) {
    this.#options = options
  }

  /** True while the LISTEN connection is up. */
  get listening(): boolean {
    return this.#listening
  }

  /** Counts LISTEN connections made: a new number after every reconnect; null while down. */
  #connections = 0
  get epoch(): number | null {
    return this.#listening ? this.#connections : null
  }

  subscribe(listener: ChangeListener): () => void {
    return this.#local.subscribe(listener)
  }

  /** Publishes to this replica's listeners (the store calls it after COMMIT). */
  publish(change: Change): void {
    this.#local.publish(change)
  }

  /** Connects and LISTENs; on failure the feed keeps retrying in the background (and polls). */
  async start(): Promise<void> {
    try {
      await this.#connect()
    } catch (error) {
      this.#down(error)
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    this.#listening = false
    for (const timer of [this.#reconnectTimer, this.#pollTimer, this.#probeTimer]) if (timer) clearTimeout(timer)
    this.#reconnectTimer = null
    this.#pollTimer = null
    this.#probeTimer = null
    const client = this.#client
    this.#client = null
    if (client) await client.end().catch(() => undefined)
  }

  async #connect(): Promise<void> {
    const client = this.#options.newClient()
    // Until LISTEN succeeds, a failure surfaces as the rejection below, not as an event.
    let ready = false
    client.on('error', (error) => {
      if (ready) this.#down(error, client)
    })
    client.on('end', () => {
      if (ready) this.#down(new Error('LISTEN connection ended'), client)
    })
    client.on('notification', (message) => {
      if (message.channel !== FEED_CHANNEL) return
      const envelope = decodeChanges(message.payload)
      if (!envelope || envelope.o === this.#options.origin) return
      for (const change of envelope.c) this.#local.publish(change)
    })
    try {
      await client.connect()
      await client.query(`LISTEN ${FEED_CHANNEL}`)
    } catch (error) {
      await client.end().catch(() => undefined)
      throw error
    }
    if (this.#closed) {
      await client.end().catch(() => undefined)
      return
    }
    ready = true
    const wasDown = this.#attempt > 0
    this.#client = client
    this.#connections += 1
    this.#listening = true
    this.#attempt = 0
    this.#scheduleProbe()
    if (this.#pollTimer === null) this.#schedulePoll(LISTENING_POLL_INTERVAL_MS)
    if (wasDown) {
      this.#options.log?.('info', 'change feed: LISTEN restored')
      await this.#resync()
    }
  }

  /** The LISTEN connection failed: reconnect with backoff; meanwhile poll the kill state. */
  #down(error: unknown, client?: pg.Client): void {
    if (this.#closed) return
    if (client !== undefined && client !== this.#client) return
    const wasListening = this.#listening
    this.#listening = false
    const old = this.#client
    this.#client = null
    if (old) {
      old.removeAllListeners('notification')
      old.on('error', () => undefined)
      old.end().catch(() => undefined)
    }
    if (this.#probeTimer) clearTimeout(this.#probeTimer)
    this.#probeTimer = null
    if (wasListening) this.#options.log?.('warn', 'change feed: LISTEN connection lost; polling kill state', { error: String(error) })
    // Poll at once, then at the faster pace: a kill may have committed unnoticed.
    if (this.#pollTimer) clearTimeout(this.#pollTimer)
    this.#schedulePoll(0)
    if (this.#reconnectTimer === null) {
      const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#attempt)
      const delay = Math.round(base / 2 + Math.random() * (base / 2))
      this.#attempt += 1
      this.#reconnectTimer = setTimeout(() => {
        this.#reconnectTimer = null
        if (this.#closed) return
        this.#connect().catch((e: unknown) => this.#down(e))
      }, delay)
      this.#reconnectTimer.unref()
    }
  }

  #scheduleProbe(): void {
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = null
      const client = this.#client
      if (!client || this.#closed) return
      // A connection that hangs without an error (a silent network partition, a frozen backend)
      // counts as down once the probe goes unanswered: the feed reconnects and caches stop
      // trusting it (epoch null) within PROBE_INTERVAL_MS + PROBE_TIMEOUT_MS.
      const timeout = setTimeout(() => this.#down(new Error('LISTEN connection probe unanswered'), client), PROBE_TIMEOUT_MS)
      timeout.unref()
      client.query('SELECT 1').then(
        () => {
          clearTimeout(timeout)
          if (client === this.#client) this.#scheduleProbe()
        },
        (error: unknown) => {
          clearTimeout(timeout)
          this.#down(error, client)
        },
      )
    }, PROBE_INTERVAL_MS)
    this.#probeTimer.unref()
  }

  #schedulePoll(delay: number): void {
    if (this.#pollTimer) clearTimeout(this.#pollTimer)
    this.#pollTimer = setTimeout(() => {
      void this.#pollKillState().finally(() => {
        if (this.#closed) this.#pollTimer = null
        else this.#schedulePoll(this.#listening ? LISTENING_POLL_INTERVAL_MS : POLL_INTERVAL_MS)
      })
    }, delay)
    this.#pollTimer.unref()
  }

  /**
   * Publishes `agent.killed` for agents killed since the previous poll (all of them on the first),
   * and `instance.quarantined` for instances quarantined since then.
   */
  async #pollKillState(): Promise<void> {
    if (this.#polling) return
    this.#polling = true
    try {
      const rows = await this.#options.query<{ address_id: string; killed_at: number }>(
        'SELECT address_id, killed_at FROM agents WHERE killed_at IS NOT NULL',
      )
      const seen = this.#killedSeen
      const next = new Map<string, number>()
      for (const row of rows) {
        next.set(row.address_id, row.killed_at)
        // The first poll publishes every killed agent: a kill may have committed unseen.
        if (seen === null || seen.get(row.address_id) !== row.killed_at) {
          this.#local.publish({ type: 'agent.killed', address_id: row.address_id })
        }
      }
      this.#killedSeen = next
      // Quarantined instances too: their streams must be cut on this replica within the same bound.
      const quarantines = await this.#options.query<{ address_id: string; instance_id: string; quarantined_at: number }>(
        'SELECT address_id, instance_id, quarantined_at FROM instance_quarantines',
      )
      const seenQ = this.#quarantinesSeen
      const nextQ = new Map<string, number>()
      for (const row of quarantines) {
        const key = `${row.address_id}\n${row.instance_id}`
        nextQ.set(key, row.quarantined_at)
        if (seenQ === null || seenQ.get(key) !== row.quarantined_at) {
          this.#local.publish({ type: 'instance.quarantined', address_id: row.address_id, instance_id: row.instance_id })
        }
      }
      this.#quarantinesSeen = nextQ
    } catch {
      // The database itself is unreachable: nothing can be accepted or delivered either.
    } finally {
      this.#polling = false
    }
  }

  /** After a reconnect: notifications sent meanwhile were lost, so republish the state. */
  async #resync(): Promise<void> {
    try {
      const killed = await this.#options.query<{ address_id: string }>(
        'SELECT address_id FROM agents WHERE killed_at IS NOT NULL',
      )
      for (const row of killed) this.#local.publish({ type: 'agent.killed', address_id: row.address_id })
      const quarantined = await this.#options.query<{ address_id: string; instance_id: string }>(
        'SELECT address_id, instance_id FROM instance_quarantines',
      )
      for (const row of quarantined) {
        this.#local.publish({ type: 'instance.quarantined', address_id: row.address_id, instance_id: row.instance_id })
      }
      const queued = await this.#options.query<{ address_id: string }>(
        "SELECT DISTINCT to_address_id AS address_id FROM intents WHERE delivery_state = 'queued'",
      )
      for (const row of queued) this.#local.publish({ type: 'intent.available', address_id: row.address_id })
      const [newest] = await this.#options.query<{ seqno: number | null }>('SELECT max(seqno) AS seqno FROM mesh_events')
      if (newest?.seqno) this.#local.publish({ type: 'mesh.event', seqno: newest.seqno })
      this.#local.publish({ type: 'alert.queued' })
    } catch (error) {
      this.#options.log?.('warn', 'change feed: resync after reconnect failed', { error: String(error) })
    }
  }
}

/**
 * Wake-ups that need not commit atomically with the data they announce (`intent.available`,
 * `intent.event`, `slot.freed`, `mesh.event`, `alert.queued`): receivers re-read the store, and a
 * lost one costs at most the streams' idle recheck. They are sent after COMMIT, batched (every
 * committed transaction of one event-loop turn shares one NOTIFY statement), on a dedicated
 * connection with `synchronous_commit = off`. Sending them inside the data transactions made
 * PostgreSQL serialize those commits behind its global notify lock, each waiting for its own
 * WAL flush; kills, quarantines, key revocations and policy changes still NOTIFY inside their
 * transaction (see WAKE_ONLY in postgres-store.ts).
 */
export class Notifier {
  readonly #origin: string
  readonly #newClient: () => pg.Client
  readonly #log: PostgresFeedOptions['log']
  #pending: Change[] = []
  #client: pg.Client | null = null
  #scheduled = false
  #flushing: Promise<void> | null = null
  #closed = false

  constructor(options: { origin: string; newClient: () => pg.Client; log?: PostgresFeedOptions['log'] }) {
    this.#origin = options.origin
    this.#newClient = options.newClient
    this.#log = options.log
  }

  /** Queues a committed transaction's wake-ups for the next batch. */
  push(changes: readonly Change[]): void {
    if (this.#closed || changes.length === 0) return
    for (const change of changes) this.#pending.push(change)
    this.#schedule()
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing !== null) return
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#flushing = this.#flush().finally(() => {
        this.#flushing = null
        if (this.#pending.length > 0) this.#schedule()
      })
    })
  }

  async #flush(): Promise<void> {
    if (this.#closed) return
    const batch = coalesce(this.#pending.splice(0))
    if (batch.length === 0) return
    try {
      const client = await this.#connect()
      await client.query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [FEED_CHANNEL, encodeChanges(this.#origin, batch)])
    } catch (error) {
      // Lost wake-ups: the other replicas' streams recheck on their own within their idle bound.
      this.#log?.('warn', 'change feed: NOTIFY of wake-ups failed', { error: String(error) })
      this.#drop()
    }
  }

  async #connect(): Promise<pg.Client> {
    if (this.#client) return this.#client
    const client = this.#newClient()
    client.on('error', () => {
      if (this.#client === client) this.#drop()
    })
    await client.connect().catch(async (error: unknown) => {
      await client.end().catch(() => undefined)
      throw error
    })
    this.#client = client
    return client
  }

  #drop(): void {
    const client = this.#client
    this.#client = null
    if (client) client.end().catch(() => undefined)
  }

  async close(): Promise<void> {
    await this.#flushing
    this.#closed = true
    this.#pending = []
    const client = this.#client
    this.#client = null
    if (client) await client.end().catch(() => undefined)
  }
}

/** At most this many `intent.available` per address in one batch: each wakes one idle stream per replica. */
const MAX_WAKES_PER_ADDRESS = 16

/** A batch's changes without repeats, except `intent.available` (each wakes one more stream), in first-seen order. */
function coalesce(changes: readonly Change[]): Change[] {
  const seen = new Map<string, number>()
  const out: Change[] = []
  for (const change of changes) {
    const key = JSON.stringify(change)
    const n = seen.get(key) ?? 0
    if (n >= (change.type === 'intent.available' ? MAX_WAKES_PER_ADDRESS : 1)) continue
    seen.set(key, n + 1)
    out.push(change)
  }
  return out
}
