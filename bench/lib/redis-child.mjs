// A throwaway redis-server for a benchmark, as a child of a small Node process so that it is
// stopped like the other benchmark children (IPC stop, Ctrl-C, or the parent vanishing).
// argv: <redis-server binary>. Reports `{url: 'redis://127.0.0.1:<port>', port, pid, redis_pid}`.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { serveIpc } from './child-ipc.mjs'
import { connectRedis } from './resp.mjs'

const binary = process.argv[2]
let server = null

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

function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const force = setTimeout(() => server.kill('SIGKILL'), 3_000)
    server.once('exit', () => {
      clearTimeout(force)
      resolve()
    })
    server.kill('SIGTERM')
  })
}

async function start() {
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort()
    let output = ''
    server = spawn(binary, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server.stdout.on('data', (c) => (output = (output + c).slice(-4000)))
    server.stderr.on('data', (c) => (output = (output + c).slice(-4000)))
    const exited = new Promise((resolve) => server.once('exit', (code, signal) => resolve({ code, signal })))
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const gone = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 50))])
      if (gone) break
      try {
        const client = await connectRedis(port)
        const pong = await client.command('PING')
        client.close()
        if (pong === 'PONG') return { port, pid: server.pid }
      } catch {
        // not listening yet
      }
    }
    await stopServer()
    if (attempt >= 3) throw new Error(`redis-server did not start on port ${port}: ${output.trim().slice(-1000)}`)
  }
}

const ipc = serveIpc({ onStop: stopServer })
try {
  const { port, pid } = await start()
  // If redis-server dies on its own, so does this wrapper (the parent sees the exit).
  server.once('exit', () => process.exit(1))
  ipc.ready({ url: `redis://127.0.0.1:${port}`, port, pid: process.pid, redis_pid: pid })
} catch (error) {
  await stopServer()
  ipc.fatal(error)
}
