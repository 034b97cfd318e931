// The tests' MCP server (packages/server/test/mcp-server.ts: the official SDK's McpServer over
// StreamableHTTPServerTransport, stateful sessions) as its own process, for bench/egress.mjs.
// argv: <module (.mjs, transpiled by mcpServerModule() in egress.mjs)> <options JSON>.
//
// Speaks the protocol of children.mjs: {type: 'ready', url}, {type: 'fatal'}, {type: 'stop'} and
// RPCs: `cpu`, `stats` (the requests received since the last `reset`) and `reset`.
import { pathToFileURL } from 'node:url'
import { serveIpc } from './child-ipc.mjs'

const [modulePath, optionsJson] = process.argv.slice(2)
let server = null

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

const ipc = serveIpc({
  onStop: async () => {
    await server?.close()
  },
  commands: {
    stats: async () => stats(),
    reset: async () => {
      server.requests.length = 0
      return { reset: true }
    },
  },
})

try {
  const { TestMcpServer } = await import(pathToFileURL(modulePath).href)
  server = new TestMcpServer(JSON.parse(optionsJson ?? '{}'))
  await server.start()
  ipc.ready({ url: server.url, pid: process.pid })
} catch (error) {
  ipc.fatal(error)
}
