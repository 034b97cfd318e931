#!/usr/bin/env node
// LLM egress benchmark: what the gateway's `/llm/{upstream}/v1/...` route adds to a call.
//
// Upstream: the fake OpenAI-compatible server of the tests (packages/server/test/fake-llm.ts,
// transpiled on the fly) in its own process, answering at once (20 completion tokens, streams
// of --chunks chunks, --chunk-delay-ms apart). Gateway: a child gateway (fresh SQLite) started
// with CHOKEPOINT_EGRESS_CONFIG pointing at a temp file with one upstream `fake` (kind openai,
// base_url the fake) whose key comes from FAKE_LLM_KEY; the calls use an agent key made with
// POST /v1/keys. In the same run, over keep-alive node:http, the same scenarios go
//   direct    POST {fake}/v1/chat/completions                with the provider key
//   gateway   POST {gateway}/llm/fake/v1/chat/completions    with the agent key
// Scenarios: non-streaming chat one at a time (p50/p99), non-streaming chat from --concurrency
// closed-loop callers (requests/s, p50/p99), and streams one at a time (time to the first body
// bytes = the first chunk, and to the end). The agent's request is what an agent sends (no cap,
// no stream_options); the direct one is the request the gateway should forward (streams with
// stream_options.include_usage, which the gateway forces), so the upstream does the same work.
// Overhead = gateway − direct, per percentile.
//
// MCP: the tests' MCP server (packages/server/test/mcp-server.ts, the official SDK's McpServer
// over StreamableHTTPServerTransport, stateful sessions), twice in its own processes — one
// answering POSTs with SSE streams (the SDK's default), one with JSON — configured as `kind: mcp`
// upstreams whose Authorization comes from headers_env. Per route one session is initialized,
// then --mcp-calls sequential `tools/call echo` go
//   direct    POST {server}/mcp            with the server's token
//   gateway   POST {gateway}/mcp/{id}      with the agent key (admitted and settled as egress calls)
// and each is timed to the end of its answer.
//
// When the gateway answers 404 for the route (a build without egress), only the direct
// baseline is measured and the run still succeeds.
//
// Runs under the dispatcher (`npm run bench -- egress`) or alone (`node bench/egress.mjs`).
import http from 'node:http'
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import os, { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { removeTempDir, startChild, trackTempDir } from './lib/children.mjs'
import { runStandalone } from './lib/standalone.mjs'
import { api, SERVER_ENTRY, startGateway } from './lib/gateway.mjs'
import { fmt, summarize } from './lib/stats.mjs'
import { now, num, sleep } from './lib/util.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const FAKE_SOURCE = fileURLToPath(new URL('../packages/server/test/fake-llm.ts', import.meta.url))
const MCP_SOURCE = fileURLToPath(new URL('../packages/server/test/mcp-server.ts', import.meta.url))
const MCP_TOKEN = 'mcp-bench-upstream-token-0123456789'
const MCP_PROTOCOL = '2025-11-25'
const UPSTREAM = 'fake'
const MODEL = 'fake-model'
const PROVIDER_KEY = 'sk-bench-egress-provider-key-0123456789'
const AGENT = 'agent://bench/egress/caller'
const MESSAGES = [
  { role: 'system', content: 'You are a benchmark. Answer briefly.' },
  { role: 'user', content: 'Say hello in about twenty tokens.' },
]

export const description = 'LLM and MCP egress: fake upstream direct vs through /llm/fake/v1 (chat sequential, concurrent, 50-chunk streams), SDK MCP server direct vs through /mcp/{id} (tools/call, SSE and JSON answers); overhead p50/p99 ms'

/** Options this benchmark understands (node:util parseArgs format + help text). */
export const options = {
  requests: { type: 'string', help: 'sequential non-streaming chat calls per route (default 2000; --quick: 200)' },
  concurrency: { type: 'string', help: 'closed-loop callers in the concurrent scenario (default 32)' },
  'concurrent-seconds': { type: 'string', help: 'measured seconds of the concurrent scenario per route (default 5; --quick: 1)' },
  streams: { type: 'string', help: 'sequential streamed chat calls per route (default 300; --quick: 40)' },
  chunks: { type: 'string', help: 'content chunks per stream (default 50)' },
  'chunk-delay-ms': { type: 'string', help: 'delay between stream chunks in the fake upstream (default 0)' },
  'mcp-calls': { type: 'string', help: 'sequential MCP tools/call per route and answer type (default 1000; --quick: 100)' },
  server: { type: 'string', help: 'server entry to benchmark, for A/B runs (default packages/server/dist/index.js)' },
}

// ---- the fake upstream ------------------------------------------------------------------------

/** Transpiles the tests' fake upstream (TypeScript, type-only imports) into `dir`; returns the .mjs path. */
function fakeLlmModule(dir) {
  const source = readFileSync(FAKE_SOURCE, 'utf8')
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
    fileName: FAKE_SOURCE,
  })
  const file = join(dir, 'fake-llm.mjs')
  writeFileSync(file, outputText)
  return file
}

/**
 * The tests' MCP server, transpiled into `dir`; its package imports (the MCP SDK, zod) are
 * rewritten to absolute URLs, since the temp dir has no node_modules.
 */
function mcpServerModule(dir) {
  const source = readFileSync(MCP_SOURCE, 'utf8')
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
    fileName: MCP_SOURCE,
  })
  const resolved = outputText.replace(/from '((?:@modelcontextprotocol\/sdk|zod)[^']*)'/g, (_m, spec) => `from '${import.meta.resolve(spec)}'`)
  const file = join(dir, 'mcp-server.mjs')
  writeFileSync(file, resolved)
  return file
}

// ---- the HTTP client --------------------------------------------------------------------------

/** One POST; resolves `{status, ms, firstMs, text}` (firstMs: the first body bytes). Never rejects. */
function post(agent, base, path, headers, body) {
  return new Promise((resolveCall) => {
    const t0 = now()
    let firstMs = null
    const req = http.request(
      {
        host: base.hostname,
        port: base.port,
        method: 'POST',
        path,
        agent,
        headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          if (firstMs === null) firstMs = now() - t0
          text += chunk
        })
        res.on('end', () => resolveCall({ status: res.statusCode, ms: now() - t0, firstMs, text, headers: res.headers }))
        res.on('error', (error) => resolveCall({ status: error.code ?? 'error', ms: now() - t0, firstMs, text }))
      },
    )
    req.on('error', (error) => resolveCall({ status: error.code ?? 'error', ms: now() - t0, firstMs, text: '' }))
    req.end(body)
  })
}

/** A route: where to send, with which key, and the body to send for a chat or a stream. */
function routes(fakeUrl, gatewayUrl, agentKey, concurrency) {
  const make = (name, url, prefix, key, bodies) => ({
    name,
    base: new URL(url),
    prefix,
    headers: { authorization: `Bearer ${key}` },
    agent: new http.Agent({ keepAlive: true, maxSockets: concurrency }),
    bodies,
  })
  const direct = make('direct', fakeUrl, '', PROVIDER_KEY, {
    chat: JSON.stringify({ model: MODEL, messages: MESSAGES }),
    stream: JSON.stringify({ model: MODEL, messages: MESSAGES, stream: true, stream_options: { include_usage: true } }),
  })
  const gateway = gatewayUrl
    ? make('gateway', gatewayUrl, `/llm/${UPSTREAM}`, agentKey, {
        chat: JSON.stringify({ model: MODEL, messages: MESSAGES }),
        stream: JSON.stringify({ model: MODEL, messages: MESSAGES, stream: true }),
      })
    : null
  return { direct, gateway }
}

const chat = (route) => post(route.agent, route.base, `${route.prefix}/v1/chat/completions`, route.headers, route.bodies.chat)
const stream = (route) => post(route.agent, route.base, `${route.prefix}/v1/chat/completions`, route.headers, route.bodies.stream)

/** Whether an answer is a complete success (a chat.completion with usage; a stream ending in [DONE]). */
function good(kind, r) {
  if (r.status !== 200) return false
  if (kind === 'chat') return r.text.includes('"chat.completion"') && r.text.includes('"usage"')
  return r.text.includes('"chat.completion.chunk"') && r.text.endsWith('data: [DONE]\n\n')
}

// ---- MCP ----------------------------------------------------------------------------------------

/** An MCP route: the server direct (its token) or the gateway's /mcp/{id} (the agent key). */
function mcpRoute(name, url, path, key) {
  return { name, base: new URL(url), path, headers: { authorization: `Bearer ${key}`, accept: 'application/json, text/event-stream' }, agent: new http.Agent({ keepAlive: true, maxSockets: 4 }), session: null }
}

const mcpPost = (route, body) =>
  post(route.agent, route.base, route.path, { ...route.headers, ...(route.session ? { 'mcp-session-id': route.session, 'mcp-protocol-version': MCP_PROTOCOL } : {}) }, JSON.stringify(body))

/** initialize + notifications/initialized; the route then carries the session id. */
async function mcpSession(route) {
  const init = await mcpPost(route, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: MCP_PROTOCOL, capabilities: {}, clientInfo: { name: 'bench', version: '1' } } })
  const session = init.headers?.['mcp-session-id']
  if (init.status !== 200 || typeof session !== 'string') return { ok: false, status: init.status, text: init.text }
  route.session = session
  const initialized = await mcpPost(route, { jsonrpc: '2.0', method: 'notifications/initialized' })
  return { ok: initialized.status === 202, status: initialized.status, text: initialized.text }
}

let mcpId = 1
const mcpCall = (route) => mcpPost(route, { jsonrpc: '2.0', id: mcpId++, method: 'tools/call', params: { name: 'echo', arguments: { text: 'hello from the bench' } } })
const mcpGood = (r) => r.status === 200 && r.text.includes('"result"') && r.text.includes('hello from the bench')

async function mcpSequential(route, n) {
  const samples = []
  const statuses = {}
  const t0 = now()
  for (let i = 0; i < n; i++) {
    const r = await mcpCall(route)
    const ok = mcpGood(r)
    tally(statuses, r, ok)
    if (ok) samples.push(r.ms)
  }
  const windowMs = now() - t0
  return { n, statuses, window_ms: Math.round(windowMs), per_s: Math.round(((statuses.ok ?? 0) * 1000) / windowMs), ms: summarize(samples) }
}

function tally(statuses, r, ok) {
  const key = ok ? 'ok' : String(r.status === 200 ? '200 (incomplete)' : r.status)
  statuses[key] = (statuses[key] ?? 0) + 1
}

// ---- scenarios --------------------------------------------------------------------------------

async function sequential(kind, route, n) {
  const total = []
  const first = []
  const statuses = {}
  const t0 = now()
  for (let i = 0; i < n; i++) {
    const r = kind === 'chat' ? await chat(route) : await stream(route)
    const ok = good(kind, r)
    tally(statuses, r, ok)
    if (!ok) continue
    total.push(r.ms)
    if (r.firstMs !== null) first.push(r.firstMs)
  }
  const windowMs = now() - t0
  return { n, statuses, window_ms: Math.round(windowMs), per_s: Math.round(((statuses.ok ?? 0) * 1000) / windowMs), ms: summarize(total), first_ms: summarize(first) }
}

async function concurrent(route, callers, seconds) {
  const samples = []
  const statuses = {}
  let running = true
  const t0 = now()
  const loops = Array.from({ length: callers }, async () => {
    while (running) {
      const r = await chat(route)
      if (!running) break // answered after the window closed: not counted
      const ok = good('chat', r)
      tally(statuses, r, ok)
      if (ok) samples.push(r.ms)
    }
  })
  await sleep(seconds * 1000)
  running = false
  const windowMs = now() - t0
  await Promise.all(loops)
  return { callers, statuses, window_ms: Math.round(windowMs), per_s: Math.round(((statuses.ok ?? 0) * 1000) / windowMs), ms: summarize(samples) }
}

/** Runs `fn` and the gateway's CPU time over it (µs), when there is a gateway child. */
async function withCpu(child, fn) {
  if (!child) return { result: await fn(), cpuUs: null }
  const a = await child.rpc('cpu')
  const result = await fn()
  const b = await child.rpc('cpu')
  return { result, cpuUs: b.user - a.user + (b.system - a.system) }
}

// ---- run ------------------------------------------------------------------------------------

function nonNegative(value, fallback, name) {
  if (value === undefined) return fallback
  const n = Number(value)
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number ≥ 0, got "${value}"`)
  return n
}

export async function run(opts = {}) {
  const quick = Boolean(opts.quick)
  const cfg = {
    requests: num(opts.requests, quick ? 200 : 2000, 'requests'),
    concurrency: num(opts.concurrency, 32, 'concurrency'),
    concurrentSeconds: num(opts['concurrent-seconds'], quick ? 1 : 5, 'concurrent-seconds'),
    streams: num(opts.streams, quick ? 40 : 300, 'streams'),
    chunks: num(opts.chunks, 50, 'chunks'),
    chunkDelayMs: nonNegative(opts['chunk-delay-ms'], 0, 'chunk-delay-ms'),
    mcpCalls: num(opts['mcp-calls'], quick ? 100 : 1000, 'mcp-calls'),
    serverEntry: resolve(opts.server ?? SERVER_ENTRY),
    completionTokens: 20,
  }
  if (!existsSync(cfg.serverEntry)) {
    throw new Error(opts.server ? `--server ${opts.server} does not exist` : 'packages/server/dist is missing: run `npm run build` first')
  }
  const log = opts.log ?? (() => {})
  const dir = trackTempDir(mkdtempSync(join(tmpdir(), 'chokepoint-bench-egress-')))

  const fake = await startChild(join(HERE, 'lib/fake-llm-child.mjs'), {
    name: 'fake-llm',
    args: [fakeLlmModule(dir), JSON.stringify({ apiKey: PROVIDER_KEY, models: [MODEL], chunks: cfg.chunks, chunkDelayMs: cfg.chunkDelayMs, completionTokens: cfg.completionTokens })],
  })
  const mcpModule = mcpServerModule(dir)
  const mcpServers = {
    sse: await startChild(join(HERE, 'lib/mcp-server-child.mjs'), { name: 'mcp-server-sse', args: [mcpModule, JSON.stringify({ token: MCP_TOKEN })] }),
    json: await startChild(join(HERE, 'lib/mcp-server-child.mjs'), { name: 'mcp-server-json', args: [mcpModule, JSON.stringify({ token: MCP_TOKEN, json: true })] }),
  }
  const egressConfig = join(dir, 'egress.json')
  writeFileSync(
    egressConfig,
    `${JSON.stringify({
      upstreams: [
        {
          id: UPSTREAM,
          kind: 'openai',
          base_url: fake.url,
          api_key_env: 'FAKE_LLM_KEY',
          models: { [MODEL]: { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100000, max_output_tokens: 1000 } },
        },
        { id: 'mcp', kind: 'mcp', url: mcpServers.sse.url, headers_env: { Authorization: 'MCP_BENCH_AUTH' }, cost_per_call_usd: 0.0001 },
        { id: 'mcp-json', kind: 'mcp', url: mcpServers.json.url, headers_env: { Authorization: 'MCP_BENCH_AUTH' }, cost_per_call_usd: 0.0001 },
      ],
    })}\n`,
  )
  let gw = null
  const notes = []
  const problems = []
  try {
    gw = await startGateway({ serverEntry: cfg.serverEntry, env: { CHOKEPOINT_EGRESS_CONFIG: egressConfig, FAKE_LLM_KEY: PROVIDER_KEY, MCP_BENCH_AUTH: `Bearer ${MCP_TOKEN}` } })
    const agentKey = (await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: AGENT })).key

    // Does this build have the route?
    const probeRoute = routes(fake.url, gw.url, agentKey, 1).gateway
    const probe = await chat(probeRoute)
    probeRoute.agent.destroy()
    let egress = true
    if (probe.status === 404) {
      egress = false
      const line = `egress: the gateway answered 404 for POST /llm/${UPSTREAM}/v1/chat/completions: this build has no LLM egress route yet; measuring the direct baseline only`
      log(line)
      notes.push(line)
    } else if (!good('chat', probe)) {
      egress = false
      problems.push(`the gateway route answered ${probe.status}: ${probe.text.slice(0, 300)}`)
      log(`egress: PROBLEM: the gateway route answered ${probe.status}: ${probe.text.slice(0, 300)}`)
    }
    const gatewayChild = egress ? gw.child : null
    if (!egress) {
      await gw.stop()
      gw = null
    }
    const { direct, gateway } = routes(fake.url, egress ? gw.url : null, agentKey, cfg.concurrency)
    const both = gateway ? [direct, gateway] : [direct]

    log(`egress: warm-up (200 chats and 20 streams per route)…`)
    for (const route of both) {
      await Promise.all(Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 25; i++) await chat(route)
      }))
      for (let i = 0; i < 20; i++) await stream(route)
    }
    await fake.rpc('reset')

    const results = { direct: {}, gateway: {} }
    const upstreamSeen = {}
    for (const route of both) {
      const child = route === gateway ? gatewayChild : null
      log(`egress: ${route.name}: ${cfg.requests} sequential chats…`)
      const seq = await withCpu(child, () => sequential('chat', route, cfg.requests))
      log(`egress: ${route.name}: ${cfg.concurrency} concurrent callers for ${cfg.concurrentSeconds} s…`)
      const conc = await withCpu(child, () => concurrent(route, cfg.concurrency, cfg.concurrentSeconds))
      log(`egress: ${route.name}: ${cfg.streams} sequential ${cfg.chunks}-chunk streams…`)
      const str = await withCpu(child, () => sequential('stream', route, cfg.streams))
      results[route.name] = {
        chat_sequential: { ...seq.result, server_cpu_us_per_call: cpuPer(seq) },
        chat_concurrent: { ...conc.result, server_cpu_us_per_call: cpuPer(conc) },
        stream_sequential: { ...str.result, server_cpu_us_per_call: cpuPer(str) },
      }
      upstreamSeen[route.name] = await fake.rpc('stats')
      await fake.rpc('reset')
      route.agent.destroy()
    }

    // ---- MCP: tools/call direct vs through /mcp/{id}, SSE and JSON answers --------------------
    for (const [kind, server, upstreamId] of [['sse', mcpServers.sse, 'mcp'], ['json', mcpServers.json, 'mcp-json']]) {
      const mcpRoutes = [mcpRoute('direct', server.url, new URL(server.url).pathname, MCP_TOKEN)]
      if (egress) mcpRoutes.push(mcpRoute('gateway', gw.url, `/mcp/${upstreamId}`, agentKey))
      for (const route of mcpRoutes) {
        const session = await mcpSession(route)
        if (!session.ok) {
          route.agent.destroy()
          const line = `mcp (${kind}): ${route.name} could not open a session (${session.status}: ${String(session.text).slice(0, 200)})`
          if (route.name === 'gateway' && session.status === 404) notes.push(`${line}: this build has no MCP egress route; direct baseline only`)
          else problems.push(line)
          log(`egress: ${line}`)
          continue
        }
        for (let i = 0; i < 100; i++) await mcpCall(route) // warm-up
        await server.rpc('reset')
        log(`egress: ${route.name}: ${cfg.mcpCalls} sequential MCP tools/call (${kind} answers)…`)
        const seq = await withCpu(route.name === 'gateway' ? gatewayChild : null, () => mcpSequential(route, cfg.mcpCalls))
        results[route.name][`mcp_${kind}_sequential`] = { ...seq.result, server_cpu_us_per_call: cpuPer(seq) }
        upstreamSeen[`mcp_${kind}_${route.name}`] = await server.rpc('stats')
        route.agent.destroy()
      }
    }

    // ---- checks --------------------------------------------------------------------------------
    for (const [name, byScenario] of Object.entries(results)) {
      for (const [scenario, r] of Object.entries(byScenario)) {
        const bad = Object.entries(r.statuses).filter(([s]) => s !== 'ok')
        if (bad.length) problems.push(`${name} ${scenario}: failed calls ${JSON.stringify(Object.fromEntries(bad))}`)
      }
    }
    const seen = upstreamSeen.gateway
    if (seen) {
      if (seen.saw_agent_key) problems.push(`the upstream saw a cp_ key on ${seen.saw_agent_key} request(s) through the gateway`)
      if (seen.unauthorized) problems.push(`${seen.unauthorized} request(s) reached the upstream without the provider key`)
      notes.push(
        `through the gateway the upstream saw ${seen.requests} request(s), statuses ${JSON.stringify(seen.statuses)}; stream_options.include_usage forced on ${seen.streams.with_include_usage}/${seen.streams.requests} streams, a cap (max_completion_tokens or max_tokens) on ${seen.chat.with_cap}/${seen.chat.requests} chats; aborted by the caller ${seen.aborted}`,
      )
    }
    for (const kind of ['sse', 'json']) {
      const m = upstreamSeen[`mcp_${kind}_gateway`]
      if (!m) continue
      if (m.saw_agent_key) problems.push(`the MCP server (${kind}) saw a cp_ key on ${m.saw_agent_key} request(s) through the gateway`)
      if (m.unauthorized) problems.push(`${m.unauthorized} request(s) reached the MCP server (${kind}) without its token`)
      if (m.tool_calls !== cfg.mcpCalls) problems.push(`the MCP server (${kind}) saw ${m.tool_calls} tools/call through the gateway, ${cfg.mcpCalls} were sent`)
      notes.push(`MCP (${kind} answers): through the gateway the server saw ${m.requests} request(s) ${JSON.stringify(m.methods)}, aborted ${m.aborted}`)
    }

    // ---- table ---------------------------------------------------------------------------------
    const rows = []
    const overhead = {}
    const add = (scenario, key, metric, withRate) => {
      const d = results.direct[key]
      const g = results.gateway[key]
      const stat = (r) => r?.[metric]
      const o = g ? { p50: round(stat(g).p50 - stat(d).p50), p99: round(stat(g).p99 - stat(d).p99) } : null
      overhead[`${key}.${metric}`] = o
      for (const [name, r] of [['direct', d], ['gateway', g]]) {
        if (!r) continue
        rows.push({
          scenario,
          route: name,
          n: fmt.int(stat(r).count),
          rate: withRate ? fmt.int(r.per_s) : '',
          p50: fmt.ms(stat(r).p50),
          p99: fmt.ms(stat(r).p99),
          max: fmt.ms(stat(r).max),
          cpu: name === 'gateway' && r.server_cpu_us_per_call !== null ? fmt.int(r.server_cpu_us_per_call) : '',
          o50: name === 'gateway' && o ? signed(o.p50) : '',
          o99: name === 'gateway' && o ? signed(o.p99) : '',
        })
      }
    }
    add('chat, sequential', 'chat_sequential', 'ms', true)
    add(`chat, ${cfg.concurrency} concurrent`, 'chat_concurrent', 'ms', true)
    add(`stream ${cfg.chunks} chunks: first chunk`, 'stream_sequential', 'first_ms', false)
    add(`stream ${cfg.chunks} chunks: total`, 'stream_sequential', 'ms', true)
    add('MCP tools/call, SSE answer', 'mcp_sse_sequential', 'ms', true)
    add('MCP tools/call, JSON answer', 'mcp_json_sequential', 'ms', true)

    notes.unshift(
      `same run, keep-alive node:http from this process; upstream: the tests' fake (own process, ${cfg.completionTokens} completion tokens, ${cfg.chunks} chunks ${cfg.chunkDelayMs} ms apart); gateway: child on fresh SQLite, upstream "${UPSTREAM}" = the fake; overhead = gateway − direct at the same percentile; server CPU = the gateway process's CPU µs per call`,
    )
    if (results.gateway.chat_concurrent) {
      notes.push(
        `concurrent requests/s: direct ${fmt.int(results.direct.chat_concurrent.per_s)}, gateway ${fmt.int(results.gateway.chat_concurrent.per_s)} (${ratio(results.gateway.chat_concurrent.per_s, results.direct.chat_concurrent.per_s)}× of direct)`,
      )
    }
    notes.push(`load average at the end: ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} (${os.cpus().length} cores, shared by this process, the fake and the gateway)`)
    if (problems.length) notes.push(`PROBLEMS: ${problems.join('; ')}`)

    return {
      benchmark: 'egress',
      description,
      config: { ...cfg, quick, upstream: UPSTREAM, model: MODEL },
      ok: problems.length === 0,
      egress_route: egress,
      probe: { status: probe.status, body: egress ? undefined : probe.text.slice(0, 500) },
      results,
      overhead_ms: overhead,
      upstream_seen: upstreamSeen,
      problems,
      table: {
        columns: [
          { key: 'scenario', title: 'scenario', align: 'left' },
          { key: 'route', title: 'route', align: 'left' },
          { key: 'n', title: 'n' },
          { key: 'rate', title: 'calls/s' },
          { key: 'p50', title: 'p50 ms' },
          { key: 'p99', title: 'p99 ms' },
          { key: 'max', title: 'max ms' },
          { key: 'cpu', title: 'server CPU µs/call' },
          { key: 'o50', title: 'overhead p50 ms' },
          { key: 'o99', title: 'overhead p99 ms' },
        ],
        rows,
      },
      notes,
    }
  } finally {
    await gw?.stop()
    await fake.stop()
    await mcpServers.sse.stop()
    await mcpServers.json.stop()
    removeTempDir(dir)
  }
}

const round = (v) => Math.round(v * 1000) / 1000
const signed = (v) => (v >= 0 ? `+${fmt.ms(v)}` : `-${fmt.ms(-v)}`)
const ratio = (a, b) => (a && b ? Math.round((a / b) * 100) / 100 : null)
const cpuPer = ({ result, cpuUs }) => (cpuUs === null || !result.statuses.ok ? null : Math.round((cpuUs / result.statuses.ok) * 10) / 10)

// ---- standalone -----------------------------------------------------------------------------

runStandalone('egress', import.meta.url, options, run)
