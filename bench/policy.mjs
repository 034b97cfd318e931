#!/usr/bin/env node
// Policy decision benchmark (DESIGN §6: "< 50 µs p99 in process, compiled globs, cached per version").
//
// In process: the built PolicyEngine (packages/server/dist) deciding for a sender with 50 action
// patterns (literals, `*` and `**`) plus a rate and a cost policy, on a warm cache. Each call is
// `engine.decide(ctx, intentType, now)`, timed one by one for percentiles and in a tight loop for
// decisions/s. Baselines measured in the same run, with the same calls:
//   no policies            the same engine for a sender without policies (the fast path)
//   naive (RegExp per call) the same rules with every glob turned into a new RegExp on every call
//   engine, cache miss      the engine with the agent's policy_version bumped before every call,
//                           so every call compiles the policies again
// End to end: HTTP sends/s to a child gateway (fresh SQLite each) from 8 closed-loop keep-alive
// senders for 5 s, for a sender with those policies and for one without, as a ratio.
//
// Runs under the dispatcher (`npm run bench -- policy`) or alone (`node bench/policy.mjs`).
import http from 'node:http'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync } from 'node:fs'
import os, { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { startChild, trackTempDir, removeTempDir } from './lib/children.mjs'
import { runStandalone } from './lib/standalone.mjs'
import { summarize, fmt } from './lib/stats.mjs'
import { num } from './lib/util.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const SERVER_DIST = fileURLToPath(new URL('../packages/server/dist/', import.meta.url))
const TARGET_P99_US = 50
const LOAD_AT_START = os.loadavg().map((v) => v.toFixed(2)).join(' ')

export const description = 'policy decision µs (50 globs + rate + cost, warm cache) vs no policies and a naive matcher; HTTP sends/s with vs without'

/** Options this benchmark understands (node:util parseArgs format + help text). */
export const options = {
  decisions: { type: 'string', help: 'decisions per in-process scenario (default 200000; --quick: 20000)' },
  'http-seconds': { type: 'string', help: 'measured seconds per HTTP scenario (default 5; --quick: 1)' },
  'http-senders': { type: 'string', help: 'concurrent keep-alive HTTP senders (default 8)' },
  'http-rounds': { type: 'string', help: 'alternating rounds of the two HTTP scenarios, summed (default 2; --quick: 1)' },
  'no-http': { type: 'boolean', help: 'skip the HTTP part' },
}


// ---- the policy set ---------------------------------------------------------------------------

/** 50 patterns: 20 literals, 15 with `*`, 15 with `**`. */
function fiftyPatterns() {
  const patterns = []
  for (let i = 0; i < 20; i++) patterns.push(`svc${i}.op${i}.v1`)
  for (let i = 0; i < 15; i++) patterns.push(i % 2 ? `team${i}.*.run` : `team${i}.*`)
  for (let i = 0; i < 15; i++) patterns.push(i % 2 ? `area${i}.**` : `area${i}.**.v2`)
  return patterns
}

/**
 * Intent types cycled through: a quarter match a literal, a quarter a `*`, a quarter a `**`,
 * a quarter nothing (a full scan, then a denial). All are valid intent types.
 */
function intentTypes() {
  const types = []
  for (let i = 0; i < 16; i++) {
    types.push(`svc${(i * 7) % 20}.op${(i * 7) % 20}.v1`)
    const t = (i * 5) % 15
    types.push(t % 2 ? `team${t}.job${i}.run` : `team${t}.job${i}`)
    const a = (i * 11) % 15
    types.push(a % 2 ? `area${a}.x${i}.y.z` : `area${a}.x${i}.v2`)
    types.push(`other${i}.thing.v1`)
  }
  return types
}

const PATTERNS = fiftyPatterns()
const TYPES = intentTypes()
const NOW = Date.UTC(2026, 0, 15, 10, 20, 0)
const SPECS = [
  { kind: 'action', spec: { direction: 'send', mode: 'allowlist', patterns: PATTERNS } },
  { kind: 'rate', spec: { direction: 'send', max_per_hour: 1_000_000, max_per_day: 10_000_000, on_breach: 'block' } },
  { kind: 'cost', spec: { max_cost_per_day_usd: 1_000_000, on_breach: 'block', alert_at_percent: [50, 80, 100] } },
]

function agentRow(addressId, policyVersion) {
  return {
    address_id: addressId,
    address: `agent://bench/policy/${addressId}`,
    display_name: null,
    metadata: null,
    created_at: NOW - 1000,
    killed_at: null,
    kill_reason: null,
    kill_actor: null,
    resumed_at: null,
    policy_version: policyVersion,
    auto_kill_policy_id: null,
    enforcement_baseline: null,
    health_status: 'healthy',
    last_heartbeat_at: NOW - 5000,
  }
}

function policyRows(addressId) {
  return SPECS.map(({ kind, spec }, i) => ({
    policy_id: `pol_bench${i}`,
    address_id: addressId,
    kind,
    spec: JSON.stringify(spec),
    enabled: 1,
    version: 1,
    created_at: NOW - 1000 + i,
    updated_at: NOW - 1000 + i,
  }))
}

function counters() {
  return { day: '2026-01-15', hour: '2026-01-15T10', sent_hour: 1234, sent_day: 20_000, received_hour: 10, received_day: 99, cost_day: 12.5 }
}

function parties(withPolicies) {
  return {
    from: agentRow('addr_sender', withPolicies ? 1 : 0),
    to: agentRow('addr_recipient', 0),
    from_policies: withPolicies ? policyRows('addr_sender') : [],
    to_policies: [],
    from_counters: counters(),
    to_counters: counters(),
  }
}

/** The same rules with no compilation at all: every glob becomes a new RegExp on every call. */
function naiveDecider() {
  const specs = SPECS.map((s, i) => ({ id: `pol_bench${i}`, kind: s.kind, ...s.spec }))
  const ONE = '[a-z0-9_]+'
  const MANY = '[a-z0-9_]+(?:\\.[a-z0-9_]+)*'
  const toRegExp = (p) => new RegExp(`^${p.split('.').map((s) => (s === '**' ? MANY : s === '*' ? ONE : s)).join('\\.')}$`)
  return (ctx, type, now) => {
    const c = ctx.from_counters
    for (const p of specs) {
      if (p.kind !== 'action' || p.direction !== 'send') continue
      const hit = p.patterns.some((pattern) => toRegExp(pattern).test(type))
      if (hit !== (p.mode === 'allowlist')) return { decision: 'deny', policy_id: p.id }
    }
    for (const p of specs) {
      if (p.kind === 'rate' && p.direction === 'send') {
        if (p.max_per_hour !== undefined && c.sent_hour + 1 > p.max_per_hour) return { decision: 'rate_limited', policy_id: p.id, reset_s: Math.ceil((3_600_000 - (now % 3_600_000)) / 1000) }
        if (p.max_per_day !== undefined && c.sent_day + 1 > p.max_per_day) return { decision: 'rate_limited', policy_id: p.id, reset_s: Math.ceil((86_400_000 - (now % 86_400_000)) / 1000) }
      }
      if (p.kind === 'cost' && c.cost_day >= p.max_cost_per_day_usd) return { decision: 'budget_exceeded', policy_id: p.id }
    }
    return { decision: 'allow', policy_id: null }
  }
}

// ---- in-process measurement ------------------------------------------------------------------

let sink = 0

/** Times `decide(i)` n times one by one (µs samples), then n times in a tight loop (decisions/s). */
function measure(name, n, decide, warmup) {
  for (let i = 0; i < warmup; i++) sink += decide(i).decision.length
  const samples = new Float64Array(n)
  const decisions = {}
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint()
    const d = decide(i)
    const t1 = process.hrtime.bigint()
    samples[i] = Number(t1 - t0) / 1000
    decisions[d.decision] = (decisions[d.decision] ?? 0) + 1
  }
  const cpu0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) sink += decide(i).decision.length
  const loopNs = Number(process.hrtime.bigint() - t0)
  const cpu = process.cpuUsage(cpu0)
  const cpuUs = cpu.user + cpu.system
  const stats = summarize(samples)
  return {
    scenario: name,
    decisions: n,
    decisions_per_s: Math.round(n / (loopNs / 1e9)),
    // Per second of this process's CPU time: less sensitive to other load on the machine.
    decisions_per_cpu_s: cpuUs > 0 ? Math.round(n / (cpuUs / 1e6)) : null,
    us: stats,
    outcomes: decisions,
  }
}

async function inProcess(n, log) {
  const { PolicyEngine } = await import(pathToFileURL(join(SERVER_DIST, 'core/policies/policy-engine.js')).href)
  const warmup = Math.min(50_000, n)
  const types = TYPES
  const m = types.length

  // Timer overhead: the same loop around a call that does nothing.
  const noop = { decision: 'x' }
  const timer = measure('timer only (empty call)', n, () => noop, warmup)

  const engine = new PolicyEngine()
  const withCtx = parties(true)
  const warm = measure('engine: 50 globs + rate + cost (warm cache)', n, (i) => engine.decide(withCtx, types[i % m], NOW), warmup)

  const noneEngine = new PolicyEngine()
  const noneCtx = parties(false)
  const none = measure('engine: no policies', n, (i) => noneEngine.decide(noneCtx, types[i % m], NOW), warmup)

  const naive = naiveDecider()
  const naiveRun = measure('naive: RegExp built per call', n, (i) => naive(withCtx, types[i % m], NOW), Math.min(warmup, 20_000))

  // Cache miss on every call: a new policy_version each time (what a policy change costs once).
  const missEngine = new PolicyEngine()
  const missCtx = parties(true)
  let version = 1
  const missN = Math.max(1000, Math.floor(n / 10))
  const miss = measure(
    'engine: cache miss every call (recompile)',
    missN,
    (i) => {
      missCtx.from = { ...missCtx.from, policy_version: ++version }
      return missEngine.decide(missCtx, types[i % m], NOW)
    },
    Math.min(warmup, 5_000),
  )
  log(`policy: in-process done (sink ${sink % 10})`)

  // Cross-check: the engine and the naive matcher agree on every intent type used.
  const disagreements = types.filter((t) => engine.decide(withCtx, t, NOW).decision !== naive(withCtx, t, NOW).decision)
  return { timer, warm, none, naive: naiveRun, miss, disagreements }
}

// ---- HTTP end to end ------------------------------------------------------------------------

function randomKey() {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
  let out = 'cp_'
  while (out.length < 46) for (const b of randomBytes(64)) if (b < 248 && out.length < 46) out += alphabet[b % 62]
  return out
}

async function api(url, key, method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { 'x-api-key': key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const json = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json).slice(0, 300)}`)
  return json
}

function post(agent, base, path, headers, body) {
  return new Promise((resolvePost, reject) => {
    const req = http.request(
      { host: base.hostname, port: base.port, method: 'POST', path, agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume()
        res.on('end', () => resolvePost(res.statusCode))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** Closed-loop senders for `seconds` (after a 1 s warm-up); counts answers by status. */
async function sendLoop(url, key, to, senders, seconds, hooks) {
  const base = new URL(url)
  const agent = new http.Agent({ keepAlive: true, maxSockets: senders })
  const headers = { 'content-type': 'application/json', 'x-api-key': key }
  const allowed = TYPES.filter((_, i) => i % 4 !== 3) // the three quarters the allowlist admits
  const statuses = {}
  const latency = []
  let measuring = false
  let stop = false
  let n = 0
  const loop = async () => {
    while (!stop) {
      const body = JSON.stringify({ intent_type: allowed[n++ % allowed.length], to_agent: to, payload: { n } })
      const t0 = performance.now()
      const status = await post(agent, base, '/v1/intents', headers, body)
      if (measuring) {
        latency.push(performance.now() - t0)
        statuses[status] = (statuses[status] ?? 0) + 1
      }
    }
  }
  const loops = Array.from({ length: senders }, loop)
  await new Promise((r) => setTimeout(r, 1000))
  await hooks.start()
  measuring = true
  const t0 = performance.now()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  measuring = false
  const elapsed = performance.now() - t0
  await hooks.end()
  stop = true
  await Promise.all(loops)
  agent.destroy()
  const ok = statuses[200] ?? 0
  return { sends_per_s: Math.round(ok / (elapsed / 1000)), window_ms: Math.round(elapsed), statuses, latency_samples: latency }
}

/** Sums alternating rounds of one scenario: sends/s over the total window, latency over all samples. */
function combine(runs) {
  const statuses = {}
  let windowMs = 0
  let cpuUs = 0
  const latency = []
  for (const run of runs) {
    windowMs += run.window_ms
    cpuUs += run.server_cpu_us
    latency.push(...run.latency_samples)
    for (const [s, n] of Object.entries(run.statuses)) statuses[s] = (statuses[s] ?? 0) + n
  }
  return {
    scenario: runs[0].scenario,
    rounds: runs.length,
    sends_per_s: Math.round((statuses[200] ?? 0) / (windowMs / 1000)),
    sends_per_s_by_round: runs.map((r) => r.sends_per_s),
    server_cpu_us_per_send: statuses[200] ? Math.round((cpuUs / statuses[200]) * 10) / 10 : null,
    window_ms: windowMs,
    statuses,
    latency_ms: summarize(latency),
  }
}

async function httpScenario(name, withPolicies, cfg, log) {
  const dataDir = trackTempDir(mkdtempSync(join(tmpdir(), 'chokepoint-bench-policy-')))
  const adminKey = randomKey()
  let child = null
  try {
    child = await startChild(join(HERE, 'lib/gateway-child.mjs'), {
      name: 'gateway',
      args: [join(dataDir, 'data'), cfg.serverEntry],
      env: { CHOKEPOINT_ADMIN_KEY: adminKey, CHOKEPOINT_QUIET: '1' },
    })
    const sender = 'agent://bench/policy/sender'
    const to = 'agent://bench/policy/sink'
    const key = (await api(child.url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: sender })).key
    await api(child.url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: to })
    if (withPolicies) {
      for (const { kind, spec } of SPECS) {
        const body = { kind, ...spec, ...(kind === 'rate' ? { max_per_hour: 1_000_000_000, max_per_day: 1_000_000_000 } : {}) }
        if (kind === 'cost') body.max_cost_per_day_usd = 10_000_000
        await api(child.url, adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(sender)}/policies`, body)
      }
    }
    log(`policy: HTTP ${name}: 1 s warm-up + ${cfg.httpSeconds} s with ${cfg.httpSenders} senders…`)
    // Server CPU time per accepted send: far less sensitive to other load than sends/s.
    let cpu0 = null
    let cpuUs = 0
    const used = (a, b) => b.user - a.user + (b.system - a.system)
    const result = await sendLoop(child.url, key, to, cfg.httpSenders, cfg.httpSeconds, {
      start: async () => {
        cpu0 = await child.rpc('cpu')
      },
      end: async () => {
        cpuUs = used(cpu0, await child.rpc('cpu'))
      },
    })
    return { scenario: name, ...result, server_cpu_us: cpuUs }
  } finally {
    if (child) await child.stop()
    removeTempDir(dataDir)
  }
}

// ---- run ------------------------------------------------------------------------------------

export async function run(opts = {}) {
  const engineFile = join(SERVER_DIST, 'core/policies/policy-engine.js')
  if (!existsSync(engineFile)) throw new Error('packages/server/dist is missing: run `npm run build` first')
  const quick = Boolean(opts.quick)
  const cfg = {
    decisions: num(opts.decisions, quick ? 20_000 : 200_000, 'decisions'),
    httpSeconds: num(opts['http-seconds'], quick ? 1 : 5, 'http-seconds'),
    httpSenders: num(opts['http-senders'], 8, 'http-senders'),
    httpRounds: num(opts['http-rounds'], quick ? 1 : 2, 'http-rounds'),
    serverEntry: resolve(opts.server ?? join(SERVER_DIST, 'index.js')),
    patterns: PATTERNS.length,
    intent_types: TYPES.length,
  }
  const log = opts.log ?? (() => {})
  log(`policy: ${cfg.decisions.toLocaleString('en-US')} decisions per in-process scenario…`)
  const inproc = await inProcess(cfg.decisions, log)

  // Alternating rounds (none, with, none, with, …) so drift on a shared machine hits both alike.
  let httpRuns = []
  if (!opts['no-http']) {
    const rounds = { none: [], with: [] }
    for (let r = 0; r < cfg.httpRounds; r++) {
      rounds.none.push(await httpScenario('HTTP sends, no policies', false, cfg, log))
      rounds.with.push(await httpScenario('HTTP sends, 50 globs + rate + cost', true, cfg, log))
    }
    httpRuns = [combine(rounds.none), combine(rounds.with)]
  }

  const { timer, warm, none, naive, miss } = inproc
  const ratio = (a, b) => (a && b ? Math.round((a / b) * 100) / 100 : null)
  const reached = warm.us.p99 < TARGET_P99_US
  const httpNone = httpRuns[0]
  const httpWith = httpRuns[1]
  const httpRatio = httpNone && httpWith ? ratio(httpWith.sends_per_s, httpNone.sends_per_s) : null
  const cpuRatio = httpNone && httpWith ? ratio(httpWith.server_cpu_us_per_send, httpNone.server_cpu_us_per_send) : null
  const problems = []
  if (inproc.disagreements.length) problems.push(`engine and naive matcher disagree on ${inproc.disagreements.join(', ')}`)
  for (const h of httpRuns) {
    const bad = Object.entries(h.statuses).filter(([s]) => s !== '200')
    if (bad.length) problems.push(`${h.scenario}: non-200 answers ${JSON.stringify(Object.fromEntries(bad))}`)
  }

  const rows = [warm, none, naive, miss, timer].map((s) => ({
    scenario: s.scenario,
    n: fmt.int(s.decisions),
    dps: fmt.int(s.decisions_per_s),
    dpc: fmt.int(s.decisions_per_cpu_s),
    p50: s.us.p50.toFixed(2),
    p99: s.us.p99.toFixed(2),
    max: s.us.max.toFixed(1),
    vs: s === warm || s === timer ? '' : `p99 ${ratio(s.us.p99, warm.us.p99)}×, decisions/s ${ratio(s.decisions_per_s, warm.decisions_per_s)}×`,
  }))
  for (const h of httpRuns) {
    rows.push({
      scenario: h.scenario,
      n: fmt.int(h.statuses[200] ?? 0),
      dps: `${fmt.int(h.sends_per_s)} sends/s`,
      dpc: `${h.server_cpu_us_per_send} µs CPU/send`,
      p50: `${fmt.ms(h.latency_ms.p50)} ms`,
      p99: `${fmt.ms(h.latency_ms.p99)} ms`,
      max: `${fmt.ms(h.latency_ms.max)} ms`,
      vs: h === httpWith && httpRatio !== null ? `sends/s ${httpRatio}×, server CPU/send ${cpuRatio}× of no policies` : '',
    })
  }
  const notes = [
    `in process: ${cfg.patterns} action patterns (20 literal, 15 with *, 15 with **) + rate + cost on the sender; ${cfg.intent_types} intent types cycled (¼ literal hit, ¼ * hit, ¼ ** hit, ¼ no match → deny); outcomes with policies ${JSON.stringify(warm.outcomes)}`,
    `per-call times include the timer itself (empty call: p50 ${timer.us.p50.toFixed(2)} µs, p99 ${timer.us.p99.toFixed(2)} µs); decisions/s (wall clock) and per CPU-s come from a second, untimed loop; p99 and max include GC pauses and time the process was descheduled (load average at the start ${LOAD_AT_START})`,
    `warm cache vs no policies: p99 ${ratio(warm.us.p99, none.us.p99)}×, decisions/s ${ratio(none.decisions_per_s, warm.decisions_per_s)}× fewer; naive RegExp-per-call is ${ratio(naive.us.p99, warm.us.p99)}× the warm p99`,
    `target p99 < ${TARGET_P99_US} µs (DESIGN §6): ${reached ? 'reached' : 'NOT reached'} (${warm.us.p99.toFixed(2)} µs)`,
  ]
  if (httpNone && httpWith) {
    notes.push(
      `HTTP: ${cfg.httpSenders} closed-loop keep-alive senders, ${cfg.httpSeconds} s per scenario per round, ${cfg.httpRounds} alternating round(s), fresh child gateway (SQLite) each time; sends/s by round: none [${httpNone.sends_per_s_by_round.join(', ')}], with [${httpWith.sends_per_s_by_round.join(', ')}]; with / without = ${httpRatio}; server CPU per accepted send ${httpNone.server_cpu_us_per_send} µs without, ${httpWith.server_cpu_us_per_send} µs with (${cpuRatio}×)`,
      `load average at the end: ${os.loadavg().map((v) => v.toFixed(2)).join(' ')} (2 cores; other work on the machine makes the HTTP numbers noisy)`,
    )
  }
  if (problems.length) notes.push(`PROBLEMS: ${problems.join('; ')}`)

  return {
    benchmark: 'policy',
    description,
    config: { ...cfg, quick, target_p99_us: TARGET_P99_US },
    ok: problems.length === 0,
    target: { p99_us: TARGET_P99_US, reached, p99_us_measured: warm.us.p99 },
    in_process: { warm, no_policies: none, naive_regexp_per_call: naive, cache_miss_every_call: miss, timer_only: timer },
    ratios: {
      warm_p99_vs_no_policies: ratio(warm.us.p99, none.us.p99),
      naive_p99_vs_warm: ratio(naive.us.p99, warm.us.p99),
      naive_throughput_vs_warm: ratio(naive.decisions_per_s, warm.decisions_per_s),
      http_sends_with_vs_without: httpRatio,
      http_server_cpu_per_send_with_vs_without: cpuRatio,
    },
    http: httpRuns,
    problems,
    table: {
      columns: [
        { key: 'scenario', title: 'scenario', align: 'left' },
        { key: 'n', title: 'n' },
        { key: 'dps', title: 'decisions/s' },
        { key: 'dpc', title: 'per CPU-s (HTTP: server CPU)' },
        { key: 'p50', title: 'p50 µs' },
        { key: 'p99', title: 'p99 µs' },
        { key: 'max', title: 'max µs' },
        { key: 'vs', title: 'relative to the warm engine', align: 'left' },
      ],
      rows,
    },
    notes,
  }
}

// ---- standalone -----------------------------------------------------------------------------

runStandalone('policy', import.meta.url, options, run, { server: { type: 'string' } })
