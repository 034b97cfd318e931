// A throwaway PostgreSQL cluster for a benchmark, owned by a small Node process so that it is
// stopped like the other benchmark children (IPC stop, Ctrl-C, or the parent vanishing).
//
// initdb into a temp directory, a server on a free 127.0.0.1 port (unix socket in the same
// directory), durable settings: fsync, synchronous_commit and full_page_writes stay ON (the
// defaults), so every commit waits for its WAL flush. Uses the machine's binaries (Debian
// package `postgresql`); as root its tools run as the `postgres` OS user (PostgreSQL refuses root).
// argv: <bin dir>. Reports `{url, port, pid, postmaster_pid, settings}`.
//
// If this wrapper is killed with SIGKILL (no handler runs), a detached watcher stops the
// server and deletes the directory as soon as the wrapper's pid is gone.
import { execFile, spawn, spawnSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { serveIpc } from './child-ipc.mjs'

const run = promisify(execFile)
const bin = process.argv[2]

/** The settings the benchmark reports next to its numbers. */
const SETTINGS = {
  fsync: 'on',
  synchronous_commit: 'on',
  full_page_writes: 'on',
  max_connections: '300',
  shared_buffers: '128MB',
}

function osUser() {
  if (process.getuid?.() !== 0) return { uid: -1, gid: -1, prefix: [] }
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' })
  const gid = spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' })
  if (id.status !== 0 || gid.status !== 0) throw new Error('running as root and there is no "postgres" OS user to run PostgreSQL as')
  return { uid: Number(id.stdout.trim()), gid: Number(gid.stdout.trim()), prefix: ['runuser', '-u', 'postgres', '--'] }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.unref()
    probe.on('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

const user = osUser()
const dir = mkdtempSync(join(tmpdir(), 'chokepoint-bench-pg-'))
if (user.uid >= 0) chownSync(dir, user.uid, user.gid)
const data = join(dir, 'data')
const logFile = join(dir, 'server.log')
let running = false

const tool = (name, args) => {
  const argv = [...user.prefix, join(bin, name), ...args]
  return run(argv[0], argv.slice(1), { timeout: 120_000 })
}

function removeDir() {
  rmSync(dir, { recursive: true, force: true })
}

async function stopServer() {
  if (running) {
    running = false
    try {
      await tool('pg_ctl', ['-D', data, '-w', '-t', '30', '-m', 'fast', 'stop'])
    } catch {
      const argv = [...user.prefix, join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']
      spawnSync(argv[0], argv.slice(1))
    }
  }
  removeDir()
}

const ipc = serveIpc({ onStop: stopServer })
try {
  await tool('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8'])
  // The watcher: stops the server and removes the directory once this process is gone, however it ends.
  const stopArgv = [...user.prefix, join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']
  const watcher = spawn(
    'sh',
    ['-c', 'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; shift; "$@" >/dev/null 2>&1; rm -rf "$DIR"', 'watcher', String(process.pid), ...stopArgv],
    { detached: true, stdio: 'ignore', env: { ...process.env, DIR: dir } },
  )
  watcher.unref()
  let port = 0
  for (let attempt = 1; ; attempt += 1) {
    port = await freePort()
    const options = [
      `-p ${port}`,
      `-k ${dir}`,
      '-c listen_addresses=127.0.0.1',
      ...Object.entries(SETTINGS).map(([k, v]) => `-c ${k}=${v}`),
      // Statement statistics (cluster benchmark, unless --no-pg-stats): what the time goes to, per statement.
      ...(process.env.BENCH_PG_STATS === '1' ? ['-c shared_preload_libraries=pg_stat_statements', '-c pg_stat_statements.track=all'] : []),
    ].join(' ')
    try {
      await tool('pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', '-o', options, 'start'])
      running = true
      break
    } catch (error) {
      // Another process took the port between the probe and the start: try another one.
      if (attempt >= 3) {
        const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(-2000) : ''
        throw new Error(`PostgreSQL did not start: ${String(error)}\n${log}`)
      }
    }
  }
  const postmasterPid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
  ipc.ready({ url: `postgres://postgres@127.0.0.1:${port}/postgres`, port, pid: process.pid, postmaster_pid: postmasterPid, settings: SETTINGS })
} catch (error) {
  await stopServer().catch(() => undefined)
  ipc.fatal(error)
}
