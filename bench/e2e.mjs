// End-to-end benchmark: create → delivered over the inbox stream → resolved.
//
// Scenarios (same load generator, same request pattern, one after the other):
//   baseline    two plain Node HTTP servers' worth of work in one child process: accept a POST,
//               push it as one SSE frame to a subscriber round robin, take the resolve POST
//               back. No durability, no auth, no validation.
//   chokepoint  the built gateway (packages/server/dist) in a child process on a fresh SQLite
//               data directory; agent keys; every intent committed before its 200, leased to
//               one instance, resolved in its own transaction.
//   chokepoint (profiled)  with --profile: the gateway again, with the V8 sampling profiler
//               running in the gateway process during the measurement window only.
// The load generator runs in this process; the servers run in their own processes, so the
// generator never shares their event loop (on a 2-core machine they do share the CPU).
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startChild } from './lib/children.mjs'
import { SERVER_ENTRY, api, startGateway } from './lib/gateway.mjs'
import { cpuPressureUs } from './lib/procstat.mjs'
import { runFlow } from './lib/load.mjs'
import { summarize, fmt } from './lib/stats.mjs'
import { summarizeProfile } from './lib/cpuprofile.mjs'
import { num } from './lib/util.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const TARGET_INTENTS_PER_S = 5000
/** Above this share of the window with a task waiting for a CPU, the numbers are flagged. */
const BUSY_PRESSURE_PCT = 40

export const description =
  'durable intents/s end to end (create → SSE delivery → resolve) with 8 senders and 4 receiving instances, vs. a plain-HTTP baseline'

/** Options this benchmark understands (node:util parseArgs format + help text). */
export const options = {
  duration: { type: 'string', help: 'measured seconds per scenario (default 10; --quick: 2)' },
  warmup: { type: 'string', help: 'warm-up seconds before measuring (default 2; --quick: 1)' },
  senders: { type: 'string', help: 'concurrent closed-loop senders (default 8)' },
  receivers: { type: 'string', help: 'receiving instances, one inbox stream each (default 4)' },
  'max-outstanding': { type: 'string', help: 'cap on intents created but not yet resolved (default 256)' },
  'resolve-sockets': { type: 'string', help: 'keep-alive sockets per receiver for resolve calls (default 4)' },
  profile: { type: 'boolean', help: 'add a run with the V8 CPU profiler in the gateway and summarise it' },
  'prof-dir': { type: 'string', help: 'where to write the .cpuprofile (default bench/results)' },
  'no-baseline': { type: 'boolean', help: 'skip the plain-HTTP baseline' },
  repeat: { type: 'string', help: 'run each scenario N times, alternating, and report the median (default 1)' },
  server: { type: 'string', help: 'server entry to benchmark, for A/B runs (default packages/server/dist/index.js)' },
}


function dirBytes(dir) {
  let total = 0
  for (const name of readdirSync(dir)) {
    const s = statSync(join(dir, name))
    if (s.isFile()) total += s.size
  }
  return total
}

/** CPU used by the server child and by this process over the measurement window. */
function cpuMeter(child) {
  let start = null
  let result = null
  return {
    async start() {
      const [server] = await Promise.all([child.rpc('cpu')])
      start = { server, self: process.cpuUsage(), at: performance.now(), psi: cpuPressureUs() }
    },
    async stop() {
      const server = await child.rpc('cpu')
      const self = process.cpuUsage()
      const psi = cpuPressureUs()
      const wallUs = (performance.now() - start.at) * 1000
      const used = (a, b) => b.user - a.user + (b.system - a.system)
      result = {
        server_cpu_us: used(start.server, server),
        server_cpu_pct: Math.round((used(start.server, server) / wallUs) * 1000) / 10,
        loadgen_cpu_pct: Math.round((used(start.self, self) / wallUs) * 1000) / 10,
        server_rss_mb: Math.round(server.rss / 1048576),
        // Share of the window in which some task (ours or anyone's) waited for a CPU: a noise gauge.
        cpu_pressure_pct: psi === null || start.psi === null ? null : Math.round(((psi - start.psi) / wallUs) * 1000) / 10,
      }
    },
    get result() {
      return result
    },
  }
}

/** Statements the gateway's store ran during the window (its `store-stats` RPC), per resolved intent. */
function storeMeter(child) {
  let start = null
  let end = null
  return {
    async start() {
      start = await child.rpc('store-stats')
    },
    async stop() {
      end = await child.rpc('store-stats')
    },
    perIntent(intents) {
      if (!start || !end || !intents) return null
      const per = (n) => Math.round((n / intents) * 100) / 100
      const by = Object.entries(end.by_statement)
        .map(([name, n]) => [name, n - (start.by_statement[name] ?? 0)])
        .filter(([, n]) => n / intents >= 0.005)
        .sort((a, b) => b[1] - a[1])
      return {
        statements_per_intent: per(end.statements - start.statements),
        transaction_statements_per_intent: per(end.transaction_statements - start.transaction_statements),
        by_statement_per_intent: Object.fromEntries(by.map(([name, n]) => [name, per(n)])),
      }
    },
  }
}

async function scenario(name, cfg, { kind, profileFile }) {
  let child = null
  let gateway = null
  try {
    let url
    let senderKey = 'none'
    let receiverKey = 'none'
    let adminKey = null
    const toAgent = 'agent://bench/e2e/worker'
    if (kind === 'baseline') {
      child = await startChild(join(HERE, 'lib/baseline-server.mjs'), { name: 'baseline server' })
      url = child.url
    } else {
      gateway = await startGateway({ serverEntry: cfg.serverEntry })
      ;({ child, url, adminKey } = gateway)
      senderKey = (await api(url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: 'agent://bench/e2e/sender', name: 'bench sender' })).key
      receiverKey = (await api(url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: toAgent, name: 'bench worker' })).key
    }
    const cpu = cpuMeter(child)
    const storeStats = kind === 'baseline' ? null : storeMeter(child)
    const flow = await runFlow({
      url,
      senderKey,
      receiverKey,
      toAgent,
      streamPath: '/v1/agents/bench/e2e/worker/intents/stream',
      senders: cfg.senders,
      receivers: cfg.receivers,
      resolveSocketsPerReceiver: cfg.resolveSockets,
      warmupMs: cfg.warmupMs,
      durationMs: cfg.durationMs,
      drainMs: cfg.drainMs,
      maxOutstanding: cfg.maxOutstanding,
      hooks: {
        measureStart: async () => {
          if (profileFile) await child.rpc('profile-start', { interval_us: 1000 })
          await storeStats?.start()
          await cpu.start()
        },
        measureEnd: async () => {
          await cpu.stop()
          await storeStats?.stop()
          if (profileFile) await child.rpc('profile-stop', { file: profileFile })
        },
      },
    })

    // Server-side cross-check: nothing left unresolved in the store, and a sample reads COMPLETED.
    let server = null
    if (kind !== 'baseline') {
      const left = {}
      for (const status of ['SUBMITTED', 'DELIVERED', 'ACKNOWLEDGED']) {
        const q = `/v1/intents?agent=${encodeURIComponent(toAgent)}&direction=received&status=${status}&limit=500`
        left[status] = (await api(url, adminKey, 'GET', q)).intents.length
      }
      const ids = [...flow.created_ids]
      const sample = []
      for (let i = 0; i < Math.min(50, ids.length); i += 1) sample.push(ids[Math.floor((i * ids.length) / Math.min(50, ids.length))])
      let completed = 0
      for (const id of sample) {
        const { intent } = await api(url, adminKey, 'GET', `/v1/intents/${id}`)
        if (intent.status === 'COMPLETED' && intent.delivery_state === 'done') completed += 1
      }
      server = { unresolved_in_store: left, sample_checked: sample.length, sample_completed: completed }
    }
    await child.stop()
    child = null
    let storeBytes = null
    if (gateway) {
      storeBytes = dirBytes(join(gateway.dataDir, 'data'))
      await gateway.stop()
      gateway = null
    }

    const k = flow.counters
    const problems = []
    if (Object.keys(k.create_errors).length) problems.push(`create errors ${JSON.stringify(k.create_errors)}`)
    if (Object.keys(k.resolve_errors).length) problems.push(`resolve errors ${JSON.stringify(k.resolve_errors)}`)
    if (Object.keys(k.stream_errors).length) problems.push(`stream errors ${JSON.stringify(k.stream_errors)}`)
    if (k.missing > 0) problems.push(`${k.missing} created intents not resolved after the drain`)
    if (k.duplicate_deliveries > 0) problems.push(`${k.duplicate_deliveries} duplicate deliveries`)
    if (k.resolved_not_created > 0) problems.push(`${k.resolved_not_created} resolved intents without a 200 create`)
    if (server) {
      const left = Object.values(server.unresolved_in_store).reduce((a, b) => a + b, 0)
      if (left > 0) problems.push(`store still has unresolved intents ${JSON.stringify(server.unresolved_in_store)}`)
      if (server.sample_completed !== server.sample_checked) problems.push(`sample: ${server.sample_completed}/${server.sample_checked} COMPLETED`)
    }
    const { created_ids: _ids, create_latency: cl, e2e_latency: el, intents_per_s: _i, creates_per_s: _c, ...rest } = flow
    return {
      scenario: name,
      intents_per_s: Math.round(flow.intents_per_s),
      creates_per_s: Math.round(flow.creates_per_s),
      create_ms: summarize(cl),
      e2e_ms: summarize(el),
      cpu: cpu.result,
      // Server CPU time per resolved intent: less sensitive to a noisy machine than intents/s.
      server_cpu_us_per_intent: k.resolved_in_window ? Math.round(cpu.result.server_cpu_us / k.resolved_in_window) : null,
      store: storeStats?.perIntent(k.resolved_in_window) ?? null,
      ...rest,
      server_check: server,
      store_bytes_per_intent: storeBytes && k.created ? Math.round(storeBytes / k.created) : null,
      correct: problems.length === 0,
      problems,
      profile: profileFile ? summarizeProfile(profileFile) : null,
    }
  } finally {
    if (child) await child.stop()
    if (gateway) await gateway.stop()
  }
}

export async function run(opts) {
  const serverEntry = resolve(opts.server ?? SERVER_ENTRY)
  if (!existsSync(serverEntry)) {
    throw new Error(opts.server ? `--server ${opts.server} does not exist` : 'packages/server/dist is missing: run `npm run build` first')
  }
  const quick = Boolean(opts.quick)
  const cfg = {
    senders: num(opts.senders, 8, 'senders'),
    receivers: num(opts.receivers, 4, 'receivers'),
    durationMs: num(opts.duration, quick ? 2 : 10, 'duration') * 1000,
    warmupMs: num(opts.warmup, quick ? 1 : 2, 'warmup') * 1000,
    drainMs: quick ? 5_000 : 15_000,
    maxOutstanding: num(opts['max-outstanding'], 256, 'max-outstanding'),
    resolveSockets: num(opts['resolve-sockets'], 4, 'resolve-sockets'),
    repeat: Math.round(num(opts.repeat, 1, 'repeat')),
    serverEntry,
  }
  const profDir = opts['prof-dir'] ?? opts.resultsDir
  const log = opts.log ?? (() => {})
  const plan = []
  if (!opts['no-baseline']) plan.push(['baseline (plain node:http + SSE)', { kind: 'baseline' }])
  plan.push(['chokepoint (SQLite, durable)', { kind: 'gateway' }])
  if (opts.profile) {
    mkdirSync(profDir, { recursive: true })
    const profileFile = join(profDir, `e2e-gateway-${opts.stamp}.cpuprofile`)
    plan.push(['chokepoint (profiled)', { kind: 'gateway', profileFile }])
  }

  // With --repeat N the unprofiled scenarios run N times, alternating (so slow phases of a
  // noisy machine hit both), and the run with the median intents/s represents each.
  const runs = new Map(plan.map(([name]) => [name, []]))
  for (let round = 1; round <= cfg.repeat; round += 1) {
    for (const [name, how] of plan) {
      if (how.profileFile && round < cfg.repeat) continue
      const label = cfg.repeat > 1 ? ` (run ${round}/${cfg.repeat})` : ''
      log(`e2e: ${name}${label}: ${cfg.warmupMs / 1000} s warm-up + ${cfg.durationMs / 1000} s measured…`)
      runs.get(name).push(await scenario(name, cfg, how))
    }
  }
  const scenarios = [...runs.values()].map((list) => {
    const sorted = [...list].sort((a, b) => a.intents_per_s - b.intents_per_s)
    const median = sorted[Math.floor((sorted.length - 1) / 2)]
    return {
      ...median,
      correct: list.every((r) => r.correct),
      problems: list.flatMap((r) => r.problems),
      runs: list.map((r) => ({
        intents_per_s: r.intents_per_s,
        server_cpu_us_per_intent: r.server_cpu_us_per_intent,
        cpu_pressure_pct: r.cpu?.cpu_pressure_pct ?? null,
      })),
    }
  })
  const base = scenarios.find((s) => s.scenario.startsWith('baseline'))
  for (const s of scenarios) s.ratio_to_baseline = base ? Math.round((s.intents_per_s / base.intents_per_s) * 1000) / 1000 : null
  const main = scenarios.find((s) => s.scenario.startsWith('chokepoint (SQLite'))

  const notes = []
  for (const s of scenarios) {
    const k = s.counters
    notes.push(
      `${s.scenario}: created ${k.created}, delivered ${k.delivered}, resolved ${k.resolved}, missing ${k.missing}, ` +
        `duplicates ${k.duplicate_deliveries}; window ${s.window_ms} ms, drain ${s.drain_ms} ms; ` +
        `CPU server ${fmt.pct(s.cpu?.server_cpu_pct)} / load generator ${fmt.pct(s.cpu?.loadgen_cpu_pct)} of one core, ` +
        `CPU pressure ${fmt.pct(s.cpu?.cpu_pressure_pct)}; ` +
        `per-second resolves after warm-up [${s.per_second.slice(s.warmup_seconds, s.warmup_seconds + Math.round(s.window_ms / 1000)).join(', ')}]` +
        (s.server_check
          ? `; store check: unresolved ${JSON.stringify(s.server_check.unresolved_in_store)}, sample ${s.server_check.sample_completed}/${s.server_check.sample_checked} COMPLETED, ~${s.store_bytes_per_intent} bytes/intent on disk`
          : '') +
        (s.runs.length > 1 ? `; intents/s of all runs [${s.runs.map((r) => r.intents_per_s).join(', ')}]` : '') +
        (s.correct ? '; OK' : `; PROBLEMS: ${s.problems.join('; ')}`),
    )
  }
  const busy = scenarios.flatMap((s) => s.runs).filter((r) => r.cpu_pressure_pct !== null && r.cpu_pressure_pct > BUSY_PRESSURE_PCT)
  if (busy.length) {
    notes.push(
      `WARNING: the machine was busy (CPU pressure above ${BUSY_PRESSURE_PCT} % in ${busy.length} run(s)): other processes competed for the CPU, so throughput and latency are understated; compare 'server CPU µs/intent' instead, or re-run.`,
    )
  }
  if (main) {
    notes.push(
      `target ≥ ${TARGET_INTENTS_PER_S.toLocaleString('en-US')} intents/s end to end: ${main.intents_per_s >= TARGET_INTENTS_PER_S ? 'reached' : 'NOT reached'} (${main.intents_per_s.toLocaleString('en-US')}/s)`,
    )
  }
  for (const s of scenarios) {
    if (!s.store) continue
    const by = Object.entries(s.store.by_statement_per_intent).map(([name, n]) => `${name} ${n}`)
    notes.push(
      `${s.scenario}: ${s.store.statements_per_intent} prepared statements per intent (+${s.store.transaction_statements_per_intent} BEGIN/COMMIT/SAVEPOINT/RELEASE): ${by.join(', ')}`,
    )
  }
  const prof = scenarios.find((s) => s.profile)?.profile
  if (prof) {
    notes.push(`gateway CPU profile (${prof.file}; ${prof.busy_samples} busy samples, ${prof.idle_pct} % idle):`)
    notes.push('  self time by category:')
    for (const c of prof.categories.slice(0, 14)) notes.push(`    ${String(c.pct).padStart(5)} %  ${c.category}`)
    notes.push('  top self-time functions:')
    for (const f of prof.top_self.slice(0, 20)) notes.push(`    ${String(f.pct).padStart(5)} %  ${f.function}  ${f.location}`)
    notes.push('  gateway functions by inclusive time:')
    for (const f of prof.top_inclusive.slice(0, 15)) notes.push(`    ${String(f.pct).padStart(5)} %  ${f.function}  ${f.location}`)
  }

  return {
    benchmark: 'e2e',
    description,
    config: { ...cfg, quick, target_intents_per_s: TARGET_INTENTS_PER_S },
    ok: scenarios.every((s) => s.correct),
    target: main ? { intents_per_s: TARGET_INTENTS_PER_S, reached: main.intents_per_s >= TARGET_INTENTS_PER_S } : null,
    table: {
      columns: [
        { key: 'scenario', title: 'scenario', align: 'left' },
        { key: 'ips', title: 'intents/s' },
        { key: 'c50', title: 'create p50 ms' },
        { key: 'c99', title: 'create p99 ms' },
        { key: 'e50', title: 'e2e p50 ms' },
        { key: 'e99', title: 'e2e p99 ms' },
        { key: 'ratio', title: 'ratio to baseline' },
        { key: 'scpu', title: 'server CPU' },
        { key: 'lcpu', title: 'loadgen CPU' },
        { key: 'cpi', title: 'server CPU µs/intent' },
        { key: 'spi', title: 'statements/intent' },
      ],
      rows: scenarios.map((s) => ({
        scenario: s.scenario,
        ips: fmt.int(s.intents_per_s),
        c50: fmt.ms(s.create_ms.p50),
        c99: fmt.ms(s.create_ms.p99),
        e50: fmt.ms(s.e2e_ms.p50),
        e99: fmt.ms(s.e2e_ms.p99),
        ratio: fmt.ratio(s.ratio_to_baseline),
        scpu: fmt.pct(s.cpu?.server_cpu_pct),
        lcpu: fmt.pct(s.cpu?.loadgen_cpu_pct),
        cpi: fmt.int(s.server_cpu_us_per_intent),
        spi: s.store ? `${s.store.statements_per_intent} (+${s.store.transaction_statements_per_intent} tx)` : '–',
      })),
    },
    notes,
    scenarios,
  }
}
