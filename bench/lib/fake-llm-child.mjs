// The fake OpenAI-compatible upstream (packages/server/test/fake-llm.ts) as its own process,
// for bench/egress.mjs. argv: <fake-llm module (.mjs, transpiled by fakeLlmModule())> <options JSON>.
//
// Speaks the protocol of children.mjs: {type: 'ready', url}, {type: 'fatal'}, {type: 'stop'} and
// RPCs (serveIpc's `cpu` and profiling, and its own): `stats` (a summary of the requests the fake
// received since the last `reset`) and `reset`.
import { pathToFileURL } from 'node:url'
import { serveIpc } from './child-ipc.mjs'

const [modulePath, optionsJson] = process.argv.slice(2)
let fake = null

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

const ipc = serveIpc({
  onStop: async () => {
    await fake?.close()
  },
  commands: {
    stats: async () => stats(),
    reset: async () => {
      fake.reset()
      return { reset: true }
    },
  },
})

try {
  const { startFakeLlm } = await import(pathToFileURL(modulePath).href)
  fake = await startFakeLlm(JSON.parse(optionsJson ?? '{}'))
  ipc.ready({ url: fake.url, pid: process.pid })
} catch (error) {
  ipc.fatal(error)
}
