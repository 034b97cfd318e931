/**
 * A fleet of gateway replicas for the multi-process tests: N `chokepoint serve` child
 * processes (the built CLI, as an operator starts it) on one PostgreSQL database of the
 * file's throwaway cluster, plus the small helpers those tests share. Nothing is mocked.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
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
): Promise<Fleet> {
  ensureBuilt()
  const databaseUrl = await cluster.createDatabase()
  const adminKey = randomAdminKey()
  // Unused by a PostgreSQL replica; given so that nothing can land in the working directory.
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-fleet-'))
  const started = await Promise.allSettled(
    Array.from({ length: count }, () =>
      startChildGateway({
        dataDir: join(dir, 'data'),
        adminKey,
        databaseUrl,
        // Leases expire promptly in these tests; the sweeper looks every 100 ms.
        env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '100', ...env },
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
