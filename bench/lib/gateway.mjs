// Starting the gateway under test (a child process on a fresh SQLite data directory) and
// talking to its admin API: shared by the benchmarks that need a gateway and an admin key.
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { removeTempDir, startChild, trackTempDir } from './children.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
export const SERVER_ENTRY = fileURLToPath(new URL('../../packages/server/dist/index.js', import.meta.url))

/** A key in the gateway's format: `cp_` + 43 base62 characters. */
export function randomKey() {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
  let out = 'cp_'
  while (out.length < 46) for (const b of randomBytes(64)) if (b < 248 && out.length < 46) out += alphabet[b % 62]
  return out
}

/** One JSON call; throws on a non-2xx answer. */
export async function api(url, key, method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const json = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json).slice(0, 300)}`)
  return json
}

/**
 * Forks bench/lib/gateway-child.mjs on a new temp data directory with a fresh admin key.
 * Returns `{child, url, pid, adminKey, dataDir, stop()}`; `stop()` stops the child and removes
 * the directory (both are also cleaned up on Ctrl-C and on exit, see children.mjs).
 */
export async function startGateway({ serverEntry = SERVER_ENTRY, env = {}, name = 'gateway' } = {}) {
  if (!existsSync(serverEntry)) throw new Error('packages/server/dist is missing: run `npm run build` first')
  const dataDir = trackTempDir(mkdtempSync(join(tmpdir(), 'chokepoint-bench-')))
  const adminKey = randomKey()
  let child
  try {
    child = await startChild(join(HERE, 'gateway-child.mjs'), {
      name,
      args: [join(dataDir, 'data'), serverEntry],
      env: { CHOKEPOINT_ADMIN_KEY: adminKey, CHOKEPOINT_QUIET: '1', BENCH_TEMP_DIR: dataDir, ...env },
    })
  } catch (error) {
    removeTempDir(dataDir)
    throw error
  }
  return {
    child,
    url: child.url,
    pid: child.pid,
    adminKey,
    dataDir,
    async stop() {
      await child.stop()
      removeTempDir(dataDir)
    },
  }
}
