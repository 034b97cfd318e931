/**
 * A real, throwaway PostgreSQL cluster for tests: `initdb` into a temp directory, a server on
 * a free 127.0.0.1 port (unix socket in the same directory), fsync off. Nothing is mocked and
 * nothing is downloaded: it uses the PostgreSQL binaries of the machine (Debian package
 * `postgresql`, /usr/lib/postgresql/<version>/bin) and returns null when there are none.
 */
import { execFile, spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import pg from 'pg'

const run = promisify(execFile)

export interface PostgresCluster {
  /** URL of the maintenance database `postgres` (superuser `postgres`, trust auth). */
  readonly url: string
  readonly port: number
  /** Creates a fresh, empty database (`test_<random>`) and returns its URL. */
  createDatabase(): Promise<string>
  /** Stops the server (fast shutdown: connections are cut) and starts it again, same port and data. */
  restart(): Promise<void>
  /** Stops the server but keeps the data (an outage); `start()` brings it back. */
  halt(): Promise<void>
  start(): Promise<void>
  /** Stops the server and deletes the cluster. Safe to call twice. */
  stop(): Promise<void>
}

/** The newest installed PostgreSQL's bin directory, or null. */
export function postgresBinDir(): string | null {
  const root = '/usr/lib/postgresql'
  if (!existsSync(root)) return null
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')) && existsSync(join(root, v, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a))
  return versions[0] === undefined ? null : join(root, versions[0], 'bin')
}

/** PostgreSQL refuses to run as root: as root, its tools run as the `postgres` OS user. */
function osUser(): { uid: number; gid: number; prefix: string[] } | null {
  if (process.getuid?.() !== 0) return { uid: -1, gid: -1, prefix: [] }
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' })
  if (id.status !== 0 || gid.status !== 0) return null
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()), prefix: ['runuser', '-u', 'postgres', '--'] }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** Starts a throwaway cluster, or returns null when PostgreSQL is not installed. */
export async function startPostgres(): Promise<PostgresCluster | null> {
  const bin = postgresBinDir()
  const user = bin === null ? null : osUser()
  if (bin === null || user === null) return null
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-pg-'))
  if (user.uid >= 0) chownSync(dir, user.uid, user.gid)
  const data = join(dir, 'data')
  const logFile = join(dir, 'server.log')
  const tool = async (name: string, args: string[]): Promise<void> => {
    const argv = [...user.prefix, join(bin, name), ...args]
    await run(argv[0] as string, argv.slice(1), { timeout: 60_000 })
  }
  await tool('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync'])
  let port = 0
  let running = false
  const start = async (): Promise<void> => {
    const options = [
      `-p ${port}`,
      `-k ${dir}`,
      '-c listen_addresses=127.0.0.1',
      '-c fsync=off',
      '-c synchronous_commit=off',
      '-c full_page_writes=off',
      '-c max_connections=300',
      '-c shared_buffers=32MB',
    ].join(' ')
    try {
      await tool('pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '30', '-o', options, 'start'])
    } catch (error) {
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : ''
      throw new Error(`PostgreSQL did not start: ${String(error)}\n${log}`)
    }
    running = true
  }
  const halt = async (): Promise<void> => {
    if (!running) return
    running = false
    await tool('pg_ctl', ['-D', data, '-w', '-t', '30', '-m', 'fast', 'stop'])
  }
  // A test process that ends without its afterAll (a killed test worker runs no exit
  // handlers) still takes its cluster down: a detached watcher stops the server and deletes
  // the directory as soon as this process is gone.
  const stopArgv = [...user.prefix, join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']
  const reaper = spawn(
    'sh',
    [
      '-c',
      'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; shift; "$@" >/dev/null 2>&1; rm -rf "$DIR"',
      'reaper',
      String(process.pid),
      ...stopArgv,
    ],
    { detached: true, stdio: 'ignore', env: { ...process.env, DIR: dir } },
  )
  reaper.unref()
  const onExit = (): void => {
    if (running) spawnSync(stopArgv[0] as string, stopArgv.slice(1))
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', onExit)
  for (let attempt = 1; ; attempt += 1) {
    port = await freePort()
    try {
      await start()
      break
    } catch (error) {
      // Another process took the port between the probe and the start: try another one.
      if (attempt >= 3) {
        onExit()
        process.off('exit', onExit)
        reaper.kill()
        throw error
      }
    }
  }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  let stopped = false
  return {
    url,
    port,
    async createDatabase() {
      const name = `test_${randomBytes(8).toString('hex')}`
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      try {
        await client.query(`CREATE DATABASE ${name}`)
      } finally {
        await client.end()
      }
      return `postgres://postgres@127.0.0.1:${port}/${name}`
    },
    async restart() {
      await halt()
      await start()
    },
    halt,
    start,
    async stop() {
      if (stopped) return
      stopped = true
      try {
        await halt()
      } finally {
        rmSync(dir, { recursive: true, force: true })
        process.off('exit', onExit)
        reaper.kill()
      }
    },
  }
}
