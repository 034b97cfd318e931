// The tests' MCP server (packages/server/test/mcp-server.ts: the official SDK's McpServer over
// StreamableHTTPServerTransport, stateful sessions) as its own process, for bench/egress.mjs.
// argv: <module (.mjs, transpiled by mcpServerModule() in egress.mjs)> <options JSON>.
//
// Speaks the protocol of children.mjs: {type: 'ready', url}, {type: 'fatal'}, {type: 'stop'} and
// RPCs: `cpu`, `stats` (the requests received since the last `reset`) and `reset`.
import { pathToFileURL } from 'node:url'

const [modulePath, optionsJson] = process.argv.slice(2)
let server = null
let stopping = false

async function stop(code) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), 5_000)
  force.unref()
  try {
    await server?.close()
  } catch (error) {
    process.stderr.write(`mcp-server child: close failed: ${String(error)}\n`)
  }
  process.exit(code)
}

function stats() {
  const methods = {}
  let sawAgentKey = 0
  let unauthorized = 0
  for (const r of server.requests) {
    for (const m of r.rpc.length ? r.rpc : [r.method]) methods[m] = (methods[m] ?? 0) + 1
    if (/cp_/.test(JSON.stringify(r.headers))) sawAgentKey += 1
    if (r.headers.authorization !== `Bearer ${server.options.token}`) unauthorized += 1
  }
  return { requests: server.requests.length, methods, tool_calls: server.calls(), saw_agent_key: sawAgentKey, unauthorized, aborted: server.aborted }
}

const commands = {
  cpu: async () => ({ ...process.cpuUsage(), at_ms: performance.now(), rss: process.memoryUsage.rss() }),
  stats: async () => stats(),
  reset: async () => {
    server.requests.length = 0
    return { reset: true }
  },
}

process.on('message', (msg) => {
  if (msg?.type === 'stop') {
    void stop(0)
    return
  }
  if (msg?.type !== 'rpc') return
  const reply = (body) => {
    if (process.connected) process.send({ type: 'rpc-result', id: msg.id, ...body })
  }
  const fn = commands[msg.cmd]
  if (!fn) return reply({ error: `unknown command ${msg.cmd}` })
  fn(msg).then(
    (result) => reply({ result }),
    (error) => reply({ error: String(error?.message ?? error) }),
  )
})
process.on('disconnect', () => void stop(0))
process.once('SIGINT', () => void stop(130))
process.once('SIGTERM', () => void stop(143))

try {
  const { TestMcpServer } = await import(pathToFileURL(modulePath).href)
  server = new TestMcpServer(JSON.parse(optionsJson ?? '{}'))
  await server.start()
  process.send?.({ type: 'ready', url: server.url, pid: process.pid })
} catch (error) {
  process.send?.({ type: 'fatal', error: String(error?.stack ?? error) })
  process.exit(1)
}
