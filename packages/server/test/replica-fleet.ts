/**
 * A fleet of gateway replicas for the multi-process tests: N `chokepoint serve` child
 * processes (the built CLI, as an operator starts it) on one PostgreSQL database of the
 * file's throwaway cluster, plus the small helpers those tests share. Nothing is mocked.
 */
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { onTestFailed } from 'vitest'
import { ensureBuilt, randomAdminKey, startChildGateway, type ChildGateway } from './child-gateway.js'
import { api, type ApiResponse } from './harness.js'
import type { PostgresCluster } from './postgres.js'

export interface Fleet {
  readonly replicas: ChildGateway[]
  readonly adminKey: string
  readonly databaseUrl: string
  /** The database's name in the cluster (for pg_stat_activity). */
  readonly databaseName: string
  /** Stops every replica still running (SIGTERM, then SIGKILL after 5 s) and removes the temp dir. */
  stop(): Promise<void>
}

/**
 * Starts `count` replicas at once on a fresh database of `cluster`
 * (`serve --port 0 --database-url <url>`, CHOKEPOINT_ADMIN_KEY set), each printing its URL.
 */
export async function startFleet(
  cluster: PostgresCluster,
  count: number,
  env: Record<string, string> = {},
  /** More environment for replica `index` only. */
  envFor: (index: number) => Record<string, string> = () => ({}),
): Promise<Fleet> {
  ensureBuilt()
  const databaseUrl = await cluster.createDatabase()
  const adminKey = randomAdminKey()
  // Unused by a PostgreSQL replica; given so that nothing can land in the working directory.
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-fleet-'))
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, index) =>
      startChildGateway({
        dataDir: join(dir, 'data'),
        adminKey,
        databaseUrl,
        // Leases expire promptly in these tests; the sweeper looks every 100 ms.
        env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '100', ...env, ...envFor(index) },
      }),
    ),
  )
  const replicas = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []))
  const stop = async (): Promise<void> => {
    await Promise.all(
      replicas.map(async (r) => {
        const timer = setTimeout(() => r.proc.kill('SIGKILL'), 5_000)
        await r.stop('SIGTERM')
        clearTimeout(timer)
      }),
    )
    rmSync(dir, { recursive: true, force: true })
  }
  const failed = started.find((s) => s.status === 'rejected')
  if (failed) {
    await stop()
    throw (failed as PromiseRejectedResult).reason
  }
  return { replicas, adminKey, databaseUrl, databaseName: new URL(databaseUrl).pathname.slice(1), stop }
}

/** Creates a key of `role` (bound to `agent` for role agent) through `url`. */
export async function createKey(url: string, adminKey: string, role: string, agent?: string): Promise<string> {
  const res = await api(url, adminKey, 'POST', '/v1/keys', agent === undefined ? { role } : { role, agent })
  if (res.status !== 200) throw new Error(`${role} key: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.key as string
}

export const streamPath = (address: string, query = ''): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream${query === '' ? '' : `?${query}`}`

export const enc = encodeURIComponent

/** Every intent the store holds from or to `address` (all pages), read through `url`. */
export async function storedIntents(url: string, key: string, address: string, direction?: 'sent' | 'received'): Promise<any[]> {
  const all: any[] = []
  let after: string | null = null
  for (;;) {
    const q: string = `/v1/intents?agent=${enc(address)}&limit=500${direction ? `&direction=${direction}` : ''}${after ? `&after=${after}` : ''}`
    const page: ApiResponse<any> = await api(url, key, 'GET', q)
    if (page.status !== 200) throw new Error(`list intents: ${page.status} ${JSON.stringify(page.body)}`)
    all.push(...page.body.intents)
    after = page.body.next_after
    if (!after) return all
  }
}

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] as number
}

/** `p50 … ms, p99 … ms, max … ms (n)` for a log line. */
export function summary(values: number[]): string {
  if (values.length === 0) return 'no samples'
  const f = (x: number): string => x.toFixed(1)
  return `p50 ${f(percentile(values, 50))} ms, p99 ${f(percentile(values, 99))} ms, max ${f(Math.max(...values))} ms (n=${values.length})`
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        out[i] = await fn(items[i] as T, i)
      }
    }),
  )
  return out
}

/**
 * How many LISTEN connections of replicas (`application_name = 'chokepoint-feed'`) the server
 * has on `database` (pg_stat_activity): one per replica whose change feed is up.
 */
export async function feedListeners(clusterUrl: string, database: string): Promise<number> {
  const client = new pg.Client({ connectionString: clusterUrl, connectionTimeoutMillis: 2_000 })
  await client.connect()
  try {
    const res = await client.query<{ n: string }>(
      `SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'chokepoint-feed' AND datname = $1`,
      [database],
    )
    return Number(res.rows[0]?.n ?? 0)
  } finally {
    await client.end()
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface SendRecord {
  replica: number
  loop: number
  start: number
  end: number
  /** 0 when no HTTP answer came back (the replica died with the request in flight). */
  status: number
  code: string | null
  intent_id: string | null
}

/** On failure, says which replica process exited and what it logged. */
export function reportReplicasOnFailure(replicas: () => ChildGateway[]): void {
  onTestFailed(() => {
    for (const [i, replica] of replicas().entries()) {
      const state = replica.proc.exitCode !== null || replica.proc.signalCode !== null ? `exited (${replica.proc.exitCode ?? replica.proc.signalCode})` : 'running'
      console.error(`replica ${i + 1} (${replica.url}) ${state}; stderr tail:\n${replica.stderr().split('\n').filter((l) => !l.includes('sweeper pass failed')).slice(-30).join('\n')}`)
    }
  })
}

/** Sender loops that keep sending through the replicas `pick()` returns until stopped. */
export function sendLoops(options: { loops: number; pick: (turn: number, loop: number) => number | null; url: (replica: number) => string; key: (loop: number) => string; to: string }) {
  const sends: SendRecord[] = []
  let stopped = false
  let turn = 0
  const run = async (loop: number): Promise<void> => {
    while (!stopped) {
      const replica = options.pick(turn++, loop)
      if (replica === null) {
        await sleep(5)
        continue
      }
      const start = performance.now()
      let record: SendRecord
      try {
        const res = await api(options.url(replica), options.key(loop), 'POST', '/v1/intents', {
          intent_type: 'fault.test.v1',
          to_agent: options.to,
          payload: { loop, n: sends.length },
        })
        record = {
          replica,
          loop,
          start,
          end: performance.now(),
          status: res.status,
          code: res.status === 200 ? null : (res.body?.error?.code ?? String(res.body).slice(0, 200)),
          intent_id: res.status === 200 ? res.body.intent_id : null,
        }
      } catch (error) {
        record = { replica, loop, start, end: performance.now(), status: 0, code: String((error as Error).cause ?? error).slice(0, 200), intent_id: null }
        await sleep(5) // a dead replica refuses at once: do not spin
      }
      sends.push(record)
    }
  }
  const all = Promise.all(Array.from({ length: options.loops }, (_, i) => run(i)))
  return {
    sends,
    async stop(): Promise<void> {
      stopped = true
      await all
    },
  }
}

/** The local TCP ports of the sockets process `pid` holds (its fds matched against /proc/net/tcp*). */
export function localPortsOf(pid: number): Set<number> {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1] as string)
    } catch {
      // closed meanwhile
    }
  }
  const ports = new Set<number>()
  for (const table of ['tcp', 'tcp6']) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length > 9 && inodes.has(cols[9] as string)) ports.add(parseInt((cols[1] as string).split(':')[1] as string, 16))
    }
  }
  return ports
}

export interface Backend {
  pid: number
  application_name: string
  state: string | null
  /** Milliseconds since the backend's transaction began, or null outside a transaction. */
  xact_age_ms: number | null
}

/** The PostgreSQL backends serving the connections of gateway process `pid` (pg_stat_activity by client port). */
export async function backendsOf(clusterUrl: string, database: string, pid: number): Promise<Backend[]> {
  const ports = [...localPortsOf(pid)]
  const client = new pg.Client({ connectionString: clusterUrl, connectionTimeoutMillis: 2_000 })
  await client.connect()
  try {
    const res = await client.query<Backend>(
      `SELECT pid, application_name, state,
              (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::float8 AS xact_age_ms
         FROM pg_stat_activity
        WHERE datname = $1 AND client_addr IS NOT NULL AND client_port = ANY($2::int[])`,
      [database, ports],
    )
    return res.rows
  } finally {
    await client.end()
  }
}

/** Runs one statement on the cluster's maintenance database (as its superuser). */
export async function clusterQuery<R extends pg.QueryResultRow = any>(clusterUrl: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: clusterUrl, connectionTimeoutMillis: 2_000 })
  await client.connect()
  try {
    return (await client.query<R>(sql, params)).rows
  } finally {
    await client.end()
  }
}
