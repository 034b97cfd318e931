// The fake OpenAI-compatible upstream (packages/server/test/fake-llm.ts) as its own process,
// for bench/egress.mjs. argv: <fake-llm module (.mjs, transpiled by fakeLlmModule())> <options JSON>.
//
// Speaks the protocol of children.mjs: {type: 'ready', url}, {type: 'fatal'}, {type: 'stop'} and
// RPCs. Its own RPCs (serveIpc has a fixed set): `cpu`, `stats` (a summary of the requests the
// fake received since the last `reset`) and `reset`.
import { pathToFileURL } from 'node:url'

const [modulePath, optionsJson] = process.argv.slice(2)
let fake = null
let stopping = false

async function stop(code) {
  if (stopping) return
  stopping = true
  const force = setTimeout(() => process.exit(code), 5_000)
  force.unref()
  try {
    await fake?.close()
  } catch (error) {
    process.stderr.write(`fake-llm child: close failed: ${String(error)}\n`)
  }
  process.exit(code)
}

function stats() {
  const byPath = {}
  const statuses = {}
  let unauthorized = 0
  let sawAgentKey = 0
  let streams = 0
  let streamsWithIncludeUsage = 0
  let chats = 0
  let chatsWithCap = 0
  for (const r of fake.requests) {
    byPath[r.path] = (byPath[r.path] ?? 0) + 1
    statuses[r.status ?? 'none'] = (statuses[r.status ?? 'none'] ?? 0) + 1
    if (!r.authorized) unauthorized += 1
    if (r.sawAgentKey) sawAgentKey += 1
    if (r.path !== '/v1/chat/completions' || !r.body || typeof r.body !== 'object') continue
    if (r.body.stream === true) {
      streams += 1
      if (r.body.stream_options?.include_usage === true) streamsWithIncludeUsage += 1
    } else {
      chats += 1
      if (r.body.max_completion_tokens !== undefined || r.body.max_tokens !== undefined) chatsWithCap += 1
    }
  }
  return {
    requests: fake.requests.length,
    by_path: byPath,
    statuses,
    unauthorized,
    saw_agent_key: sawAgentKey,
    aborted: fake.aborted,
    dropped: fake.dropped,
    in_flight: fake.inFlight,
    chat: { requests: chats, with_cap: chatsWithCap },
    streams: { requests: streams, with_include_usage: streamsWithIncludeUsage },
  }
}

const commands = {
  cpu: async () => ({ ...process.cpuUsage(), at_ms: performance.now(), rss: process.memoryUsage.rss() }),
  stats: async () => stats(),
  reset: async () => {
    fake.reset()
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
  const { startFakeLlm } = await import(pathToFileURL(modulePath).href)
  fake = await startFakeLlm(JSON.parse(optionsJson ?? '{}'))
  process.send?.({ type: 'ready', url: fake.url, pid: process.pid })
} catch (error) {
  process.send?.({ type: 'fatal', error: String(error?.stack ?? error) })
  process.exit(1)
}
