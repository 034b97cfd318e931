// A private redis-server for a benchmark (see redis-child.mjs), when the machine has one.
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startChild } from './children.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))

/** The path of the redis-server binary (PATH, then /usr/sbin and /usr/local/bin), or null. */
export function findRedisServer() {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/bin', '/usr/sbin', '/usr/local/bin']
  for (const dir of dirs) {
    if (!dir) continue
    const candidate = join(dir, 'redis-server')
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return null
}

/**
 * Starts `redis-server --port <free> --save '' --appendonly no` under a wrapper child.
 * Returns the child (`stop()`, `pid`) plus `port` and `redisPid`.
 */
export async function startRedis(binary) {
  const child = await startChild(join(HERE, 'redis-child.mjs'), { name: 'redis-server', args: [binary] })
  const port = Number(new URL(child.url).port)
  return Object.assign(child, { port })
}
