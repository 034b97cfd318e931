// The gateway under test, as its own process: the built server package, started through
// its public entry (loadConfig + startGateway) on a SQLite data directory.
// argv: <dataDir> [<server entry>]. Env: CHOKEPOINT_ADMIN_KEY (and any other CHOKEPOINT_* setting).
import { rmSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { serveIpc } from './child-ipc.mjs'

const dataDir = process.argv[2]
const entry = process.argv[3] ? pathToFileURL(process.argv[3]).href : '../../packages/server/dist/index.js'
let gateway = null
const ipc = serveIpc({
  onStop: async (reason) => {
    await gateway?.close()
    // Orphaned (the benchmark was killed): remove the temp directory the parent would have removed.
    if (reason === 'orphaned' && process.env.BENCH_TEMP_DIR) rmSync(process.env.BENCH_TEMP_DIR, { recursive: true, force: true })
  },
  commands: {
    // Statements the store ran so far (SQLite: every prepared-statement execution, by name).
    'store-stats': async () => gateway?.store.stats?.() ?? null,
  },
})

try {
  const { loadConfig, startGateway } = await import(entry)
  const config = loadConfig(process.env, { port: '0', host: '127.0.0.1', data: dataDir })
  const log = (level, message, fields) => {
    if (level !== 'info') process.stderr.write(`gateway ${level}: ${message} ${fields ? JSON.stringify(fields) : ''}\n`)
  }
  gateway = await startGateway(config, { log })
  ipc.ready({ url: gateway.url, pid: process.pid })
} catch (error) {
  // Started just as the parent died (no 'disconnect' seen): nobody else will remove the temp directory.
  if (!process.connected && process.env.BENCH_TEMP_DIR) rmSync(process.env.BENCH_TEMP_DIR, { recursive: true, force: true })
  ipc.fatal(error)
}
