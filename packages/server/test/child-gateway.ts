/**
 * Gateways as child processes: the built CLI (`chokepoint serve`) started the way an
 * operator starts it, so a test can `kill -9` it and start another one on the same data
 * directory. Nothing of the product is mocked.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'

export const REPO_ROOT = fileURLToPath(new URL('../../..', import.meta.url))
export const CLI_BIN = join(REPO_ROOT, 'packages/cli/bin/chokepoint.js')

const BUILT = ['packages/cli/dist/main.js', 'packages/server/dist/index.js'].map((p) => join(REPO_ROOT, p))

/** The launcher imports the compiled CLI; builds it once when `npm run build` has not run. */
export function ensureBuilt(): void {
  if (BUILT.every((file) => existsSync(file))) return
  execFileSync('npx', ['tsc', '-b', 'packages/sdk', 'packages/server', 'packages/cli'], {
    cwd: REPO_ROOT,
    stdio: 'inherit',
  })
  for (const file of BUILT) if (!existsSync(file)) throw new Error(`build did not produce ${file}`)
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

/** A well-formed admin key (`cp_` + 43 base62 chars) for CHOKEPOINT_ADMIN_KEY. */
export function randomAdminKey(): string {
  let out = 'cp_'
  while (out.length < 46) {
    for (const byte of randomBytes(64)) {
      if (byte < 248 && out.length < 46) out += BASE62[byte % 62]
    }
  }
  return out
}

export interface ChildExit {
  code: number | null
  signal: NodeJS.Signals | null
}

export interface ChildGateway {
  readonly proc: ChildProcess
  readonly pid: number
  readonly url: string
  readonly adminKey: string
  readonly dataDir: string
  stdout(): string
  stderr(): string
  /** Settles when the process has exited. */
  readonly exited: Promise<ChildExit>
  /** Sends `signal` and waits for the exit (no-op when it already exited). */
  stop(signal?: NodeJS.Signals): Promise<ChildExit>
}

interface Spawned {
  proc: ChildProcess
  stdout: () => string
  stderr: () => string
  exited: Promise<ChildExit>
  isExited: () => boolean
}

function spawnServe(dataDir: string, adminKey: string, env: Record<string, string>, databaseUrl?: string): Spawned {
  const args = [CLI_BIN, 'serve', '--port', '0', '--data', dataDir, ...(databaseUrl === undefined ? [] : ['--database-url', databaseUrl])]
  const proc = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env, CHOKEPOINT_ADMIN_KEY: adminKey },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  let done = false
  proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk))
  proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk))
  const exited = new Promise<ChildExit>((resolve) => {
    proc.once('exit', (code, signal) => {
      done = true
      resolve({ code, signal })
    })
    proc.once('error', () => {
      done = true
      resolve({ code: null, signal: null })
    })
  })
  return { proc, stdout: () => out, stderr: () => err, exited, isExited: () => done }
}

/**
 * Starts `chokepoint serve --port 0 --data <dataDir>` (plus `--database-url <url>` for a
 * PostgreSQL replica) and waits for the `listening on http://…` line; rejects (with the
 * child's output) if it exits first.
 */
export async function startChildGateway(options: {
  dataDir: string
  adminKey: string
  /** PostgreSQL: serve from this database (`--database-url`); the data directory is then unused. */
  databaseUrl?: string
  env?: Record<string, string>
  timeoutMs?: number
}): Promise<ChildGateway> {
  const child = spawnServe(options.dataDir, options.adminKey, options.env ?? {}, options.databaseUrl)
  const timeoutMs = options.timeoutMs ?? 20_000
  const url = await new Promise<string>((resolve, reject) => {
    const describe = () => `stdout:\n${child.stdout()}\nstderr:\n${child.stderr()}`
    const timer = setTimeout(() => {
      cleanup()
      child.proc.kill('SIGKILL')
      reject(new Error(`gateway did not print its URL within ${timeoutMs} ms\n${describe()}`))
    }, timeoutMs)
    const onData = () => {
      const m = /listening on (http:\/\/[^\s]+)/.exec(child.stdout())
      if (m) {
        cleanup()
        resolve(m[1] as string)
      }
    }
    const onExit = (code: number | null, signal: string | null) => {
      cleanup()
      reject(new Error(`gateway exited before listening (code ${code}, signal ${signal})\n${describe()}`))
    }
    const cleanup = () => {
      clearTimeout(timer)
      child.proc.stdout?.off('data', onData)
      child.proc.off('exit', onExit)
    }
    child.proc.stdout?.on('data', onData)
    child.proc.once('exit', onExit)
    onData()
  })
  return {
    proc: child.proc,
    pid: child.proc.pid as number,
    url,
    adminKey: options.adminKey,
    dataDir: options.dataDir,
    stdout: child.stdout,
    stderr: child.stderr,
    exited: child.exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (!child.isExited()) child.proc.kill(signal)
      return child.exited
    },
  }
}

/** Runs `chokepoint serve` on `dataDir` expecting it to exit by itself (e.g. refused); kills it after `timeoutMs`. */
export async function runServeToExit(options: {
  dataDir: string
  adminKey: string
  env?: Record<string, string>
  timeoutMs?: number
}): Promise<ChildExit & { stdout: string; stderr: string; timedOut: boolean }> {
  const child = spawnServe(options.dataDir, options.adminKey, options.env ?? {})
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.proc.kill('SIGKILL')
  }, options.timeoutMs ?? 15_000)
  const exit = await child.exited
  clearTimeout(timer)
  return { ...exit, stdout: child.stdout(), stderr: child.stderr(), timedOut }
}
