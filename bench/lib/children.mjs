// Parent side of the benchmark child processes (gateway, baseline server).
//
// Children are started with fork() so they have an IPC channel: they report their URL when
// listening, answer small RPCs (CPU usage, start/stop profiling) and exit when asked to or
// when the channel closes (the parent died). Every live child and temp directory is tracked
// here so that a normal end, an error, Ctrl-C or SIGTERM all clean up.
import { fork } from 'node:child_process'
import { rmSync } from 'node:fs'

const live = new Set()
const tempDirs = new Set()
let handlersInstalled = false

function installHandlers() {
  if (handlersInstalled) return
  handlersInstalled = true
  // Last resort: whatever still runs when this process exits is killed (synchronously).
  process.on('exit', () => {
    for (const child of live) {
      try {
        child.process.kill('SIGKILL')
      } catch {
        // already gone
      }
    }
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
  })
  const onSignal = (signal) => {
    process.stderr.write(`\n${signal}: stopping benchmark children…\n`)
    stopAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
}

/** Registers a directory to delete when the benchmark ends, however it ends. */
export function trackTempDir(dir) {
  installHandlers()
  tempDirs.add(dir)
  return dir
}

export function removeTempDir(dir) {
  tempDirs.delete(dir)
  rmSync(dir, { recursive: true, force: true })
}

/** Stops every live child (gracefully, then SIGKILL) and removes tracked temp dirs. */
export async function stopAll() {
  await Promise.all([...live].map((child) => child.stop()))
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true })
  tempDirs.clear()
}

/**
 * Forks `script` and waits for its `{type: 'ready', url}` message.
 * Returns `{pid, url, rpc(cmd, args), stop(), process}`.
 */
export async function startChild(script, { args = [], env = {}, execArgv = [], name = script, readyTimeoutMs = 20_000 } = {}) {
  installHandlers()
  const proc = fork(script, args, {
    env: { ...process.env, ...env },
    execArgv,
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  })
  let stderr = ''
  proc.stderr.setEncoding('utf8')
  proc.stderr.on('data', (chunk) => {
    stderr += chunk
    if (stderr.length > 64_000) stderr = stderr.slice(-32_000)
  })
  const pending = new Map()
  let nextId = 1
  let exited = false
  const exitPromise = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      exited = true
      live.delete(child)
      for (const { reject } of pending.values()) reject(new Error(`${name} exited (${signal ?? code}) during an RPC`))
      pending.clear()
      resolve({ code, signal })
    })
  })
  const child = {
    name,
    process: proc,
    pid: proc.pid,
    url: null,
    get stderr() {
      return stderr
    },
    get exited() {
      return exited
    },
    rpc(cmd, payload = {}, timeoutMs = 30_000) {
      if (exited) return Promise.reject(new Error(`${name} is not running`))
      const id = nextId++
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(new Error(`${name}: RPC ${cmd} timed out`))
        }, timeoutMs)
        pending.set(id, {
          resolve: (v) => {
            clearTimeout(timer)
            resolve(v)
          },
          reject: (e) => {
            clearTimeout(timer)
            reject(e)
          },
        })
        proc.send({ type: 'rpc', id, cmd, ...payload })
      })
    },
    /** Asks the child to shut down; SIGKILL after `graceMs`. Resolves once it has exited. */
    async stop(graceMs = 8_000) {
      if (exited) return exitPromise
      try {
        proc.send({ type: 'stop' })
      } catch {
        proc.kill('SIGTERM')
      }
      const timer = setTimeout(() => {
        if (!exited) proc.kill('SIGKILL')
      }, graceMs)
      const result = await exitPromise
      clearTimeout(timer)
      return result
    },
  }
  live.add(child)
  proc.on('message', (msg) => {
    if (msg?.type === 'rpc-result') {
      const p = pending.get(msg.id)
      if (!p) return
      pending.delete(msg.id)
      if (msg.error) p.reject(new Error(`${name}: ${msg.error}`))
      else p.resolve(msg.result)
    }
  })
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not become ready within ${readyTimeoutMs} ms`)), readyTimeoutMs)
    proc.on('message', (msg) => {
      if (msg?.type === 'ready') {
        clearTimeout(timer)
        resolve(msg)
      } else if (msg?.type === 'fatal') {
        clearTimeout(timer)
        reject(new Error(`${name} failed to start: ${msg.error}`))
      }
    })
    exitPromise.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`${name} exited (${signal ?? code}) before it was ready\n${stderr.slice(-4000)}`))
    })
  })
  try {
    const msg = await ready
    child.url = msg.url
    return child
  } catch (error) {
    await child.stop(1_000)
    throw error
  }
}
