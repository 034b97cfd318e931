// A private PostgreSQL cluster for a benchmark (see postgres-child.mjs), when the machine has one.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { startChild } from './children.mjs'
import { procCpuUs } from './procstat.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))

/** The newest installed PostgreSQL's bin directory (Debian layout /usr/lib/postgresql/<v>/bin), or null. */
export function findPostgresBin() {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return null
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')) && existsSync(join(root, v, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] === undefined ? null : join(root, versions[0], 'bin')
}

/**
 * Starts a throwaway cluster (fsync on). Returns the child (`stop()`, `pid`) plus `url` (the
 * `postgres` maintenance database), `port`, `settings`, `createDatabase(name)` → URL, and
 * `cpuUs()`: CPU time of the postmaster and all its backends so far (µs, from /proc).
 */
export async function startPostgres(bin, { statementStats = false } = {}) {
  const child = await startChild(join(HERE, 'postgres-child.mjs'), {
    name: 'postgres',
    args: [bin],
    readyTimeoutMs: 120_000,
    env: statementStats ? { BENCH_PG_STATS: '1' } : {},
  })
  const port = Number(new URL(child.url).port)
  const postmasterPid = findPostmaster(port)
  return Object.assign(child, {
    port,
    postmasterPid,
    async createDatabase(name) {
      const client = new pg.Client({ connectionString: child.url })
      await client.connect()
      try {
        await client.query(`CREATE DATABASE ${name}`)
      } finally {
        await client.end()
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    cpuUs() {
      return postgresCpuUs(postmasterPid)
    },
    /** With `statementStats`: resets pg_stat_statements in `databaseUrl`'s database; returns `top(n)` → the statements by total time since. */
    async statementStats(databaseUrl) {
      if (!statementStats) return null
      const client = new pg.Client({ connectionString: databaseUrl })
      await client.connect()
      try {
        await client.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements')
        await client.query('SELECT pg_stat_statements_reset()')
      } finally {
        await client.end()
      }
      return {
        /** Statements executed in the database since the reset (every client, top level and nested). */
        async total() {
          const c = new pg.Client({ connectionString: databaseUrl })
          await c.connect()
          try {
            const { rows } = await c.query(
              `SELECT coalesce(sum(calls), 0)::bigint AS calls FROM pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())`,
            )
            return Number(rows[0].calls)
          } finally {
            await c.end()
          }
        },
        async top(n = 15) {
          const c = new pg.Client({ connectionString: databaseUrl })
          await c.connect()
          try {
            const { rows } = await c.query(
              `SELECT calls::int, round(total_exec_time::numeric, 1)::float AS total_ms, round(mean_exec_time::numeric, 3)::float AS mean_ms,
                      rows::int, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query
                 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY total_exec_time DESC LIMIT $1`,
              [n],
            )
            return rows
          } finally {
            await c.end()
          }
        },
      }
    },
  })
}

/** The pid of the postmaster listening on `port` (pg_ctl starts it as `postgres -D … -p <port> …`), or null. */
function findPostmaster(port) {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')
      const p = argv.indexOf('-p')
      if (argv[0]?.endsWith('/postgres') && p > 0 && argv[p + 1] === String(port)) return Number(entry)
    } catch {
      // gone
    }
  }
  return null
}

/** CPU (µs) of the postmaster and every process whose parent it is (backends, WAL writer, …). */
export function postgresCpuUs(postmasterPid) {
  if (!postmasterPid) return null
  let total = procCpuUs(postmasterPid)
  if (total === null) return null
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      // fields[1] is field 4 (ppid); field 14/15 (utime/stime) and 16/17 (cutime/cstime of reaped children).
      if (Number(fields[1]) === postmasterPid) total += procCpuUs(Number(entry)) ?? 0
    } catch {
      // gone
    }
  }
  return total
}
