// Heartbeat benchmark (DESIGN §5c, §7): the gateway's CPU cost of a fleet's heartbeats.
//
// 10,000 agents beating every 30 s is 333 beats/s. Setup: the gateway in a child process on a
// fresh SQLite data directory; one agent key per agent (POST /v1/keys, with concurrency: there
// is no bulk API); one first beat per agent (registers its instance, unknown → healthy), so the
// measured beats are the steady kind: an update of an instance that is already there.
// Phases against the same gateway:
//   idle         no requests: the gateway's background cost with this many agents (sweeper)
//   GET /health  333 requests/s of an unauthenticated no-op: the cost of the HTTP traffic alone
//   heartbeat    333 POST /v1/mesh/heartbeat/s, agents in turn (each beats every agents/rate s
//                of heartbeat traffic), each with its own key and instance id and small metric deltas
//   plain HTTP   for context: 333 GET/s to a plain node:http server (bench/lib/baseline-server.mjs,
//                answering 404) in its own process: this machine's floor for one HTTP request
// The no-op and heartbeat phases run as alternating slices (3 × 10 s each by default, after 2 s
// of warm-up), so that both see the same machine noise and their ratio holds on a busy machine;
// the plain HTTP phase runs once at the end, for one slice.
// Requests are spread evenly (an open-loop schedule, not closed-loop senders) over a keep-alive
// socket pool. The gateway's CPU
// is read from /proc/<pid>/stat (utime + stime, all threads) before and after the window, as %
// of one core; the load generator's own CPU (process.cpuUsage) is reported for context.
// With --profile, one more heartbeat window runs with the V8 sampling profiler in the gateway.
import http from 'node:http'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startChild } from './lib/children.mjs'
import { startGateway, api } from './lib/gateway.mjs'
import { httpRequest } from './lib/load.mjs'
import { cpuWindow } from './lib/procstat.mjs'
import { summarize, fmt } from './lib/stats.mjs'
import { summarizeProfile } from './lib/cpuprofile.mjs'
import { now, sleep, bump, num } from './lib/util.mjs'

export const description = 'gateway CPU for 10,000 agents heartbeating every 30 s (333 beats/s) vs the same rate of GET /health; latency p50/p99'

export const options = {
  agents: { type: 'string', help: 'agents, one key and one instance each (default 10000; --quick: 1000)' },
  rate: { type: 'string', help: 'requests per second in the paced phases (default 333)' },
  'beat-seconds': { type: 'string', help: 'measured seconds per paced phase (default 30; --quick: 10)' },
  slices: { type: 'string', help: 'run the no-op and heartbeat phases as N alternating slices (default 3; --quick: 2)' },
  'stale-after': { type: 'string', help: 'the gateway\'s CHOKEPOINT_STALE_AFTER_SECONDS (default 90; raise it when agents/rate exceeds it, or agents go stale during the run)' },
  profile: { type: 'boolean', help: 'add a run with the V8 CPU profiler in the gateway and summarise it' },
  'prof-dir': { type: 'string', help: 'where to write the .cpuprofile (default bench/results)' },
}

const HERE = fileURLToPath(new URL('.', import.meta.url))
const TARGET_CPU_PCT = 5
/** Above this share of a phase with a task waiting for a CPU, the numbers are flagged. */
const BUSY_PRESSURE_PCT = 40
const WARMUP_MS = 2_000


const addressOf = (i) => `agent://bench/hb/agent-${String(i).padStart(5, '0')}`

/** Runs `task(i)` for i in [0, n) with `concurrency` workers; logs progress about every 10 %. */
async function forEachConcurrent(n, concurrency, task, progress) {
  let next = 0
  let done = 0
  const started = now()
  let lastLog = started
  const step = Math.max(1, Math.ceil(n / 10))
  const worker = async () => {
    while (next < n) {
      const i = next++
      await task(i)
      done += 1
      if (done % step === 0 || done === n || now() - lastLog > 5_000) {
        lastLog = now()
        progress(done, Math.round((done * 1000) / (now() - started)))
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return now() - started
}

/** Small metric deltas since the previous beat, different per agent and beat, ~2 % failures. */
function metricsFor(i, beat) {
  const total = 1 + ((i + beat) % 5)
  const failed = (i * 7 + beat) % 50 === 0 ? 1 : 0
  return {
    intents_total: total,
    intents_succeeded: total - failed,
    intents_failed: failed,
    avg_latency_ms: 20 + ((i * 13 + beat) % 80),
    cost_usd: Math.round(total * 0.0004 * 10_000) / 10_000,
  }
}

/**
 * An open-loop phase: request k is due at t0 + k / rate; `send(k)` returns the response.
 * `judge(res)` names the outcome ('ok' or a problem). The first WARMUP_MS are not measured.
 */
async function pacedPhase({ name, gwPid, rate, seconds, warmupMs = WARMUP_MS, send, judge, hooks = {}, log }) {
  const intervalMs = 1000 / rate
  const windowMs = seconds * 1000
  const latency = []
  const lag = []
  const outcomes = {}
  const inFlight = new Set()
  let measuring = false
  let sentInWindow = 0
  let answeredInWindow = 0
  const cpu = cpuWindow(gwPid)

  const fire = (k, dueAt) => {
    const t = now()
    const counted = measuring
    if (counted) {
      sentInWindow += 1
      lag.push(t - dueAt)
    }
    const p = send(k).then(
      (res) => {
        const verdict = judge(res)
        if (counted) {
          latency.push(now() - t)
          answeredInWindow += 1
          bump(outcomes, verdict)
        }
      },
      (error) => {
        if (counted) bump(outcomes, `error ${error.code ?? error.message}`)
      },
    )
    inFlight.add(p)
    p.finally(() => inFlight.delete(p))
  }

  log(`heartbeat: ${name}: ${rate}/s, ${warmupMs / 1000} s warm-up + ${seconds} s measured…`)
  const t0 = now()
  let k = 0
  let windowStart = null
  let windowEnd = null
  const totalMs = warmupMs + windowMs
  for (;;) {
    const elapsed = now() - t0
    if (windowStart === null && elapsed >= warmupMs) {
      await hooks.measureStart?.()
      cpu.start()
      windowStart = now()
      measuring = true
    }
    if (elapsed >= totalMs) break
    const due = Math.min(Math.floor(elapsed / intervalMs) + 1, Math.ceil(totalMs / intervalMs))
    while (k < due) {
      fire(k, t0 + k * intervalMs)
      k += 1
    }
    // Sleep until the next request is due (timers fire ~1 ms late at best: requests stay evenly spread).
    await sleep(Math.max(0, t0 + k * intervalMs - now() - 0.5))
  }
  measuring = false
  windowEnd = now()
  // Wait for the window's answers before reading the CPU, so their work is inside the window.
  await Promise.race([Promise.all([...inFlight]), sleep(5_000)])
  const usage = cpu.stop()
  await hooks.measureEnd?.()
  const realWindowMs = windowEnd - windowStart
  const raw = { windowMs: realWindowMs, sent: sentInWindow, answered: answeredInWindow, outcomes, latency, lag, usage }
  return Object.assign(summarizePhase(name, rate, [raw]), { raw })
}

/** One phase's numbers from one or more measured slices (alternating slices share the machine's noise). */
function summarizePhase(name, rate, slices) {
  const sum = (f) => slices.reduce((n, x) => n + f(x), 0)
  const realWindowMs = sum((x) => x.windowMs)
  const sentInWindow = sum((x) => x.sent)
  const answeredInWindow = sum((x) => x.answered)
  const outcomes = {}
  for (const x of slices) for (const [k, v] of Object.entries(x.outcomes)) outcomes[k] = (outcomes[k] ?? 0) + v
  const latency = slices.flatMap((x) => x.latency)
  const lag = slices.flatMap((x) => x.lag)
  const targetUs = slices.some((x) => x.usage.target_cpu_us === null) ? null : sum((x) => x.usage.target_cpu_us)
  const wallUs = sum((x) => x.usage.wall_ms * 1000)
  const selfUs = sum((x) => x.usage.self_cpu_us)
  const psi = slices.some((x) => x.usage.cpu_pressure_pct === null) ? null : sum((x) => x.usage.cpu_pressure_pct * x.usage.wall_ms) / sum((x) => x.usage.wall_ms)
  const pct = (us) => (us === null ? null : Math.round((us / wallUs) * 10_000) / 100)
  const usage = {
    wall_ms: Math.round(wallUs / 1000),
    target_cpu_us: targetUs,
    target_cpu_pct: pct(targetUs),
    self_cpu_us: selfUs,
    self_cpu_pct: pct(selfUs),
    cpu_pressure_pct: psi === null ? null : Math.round(psi * 10) / 10,
  }
  return {
    phase: name,
    slices: slices.map((x) => ({ window_ms: Math.round(x.windowMs), sent: x.sent, gateway_cpu_pct: x.usage.target_cpu_pct, cpu_pressure_pct: x.usage.cpu_pressure_pct })),
    rate_target: rate,
    rate_achieved: Math.round((sentInWindow * 10_000) / realWindowMs) / 10,
    window_ms: Math.round(realWindowMs),
    sent: sentInWindow,
    answered: answeredInWindow,
    outcomes,
    latency_ms: summarize(latency),
    schedule_lag_ms: summarize(lag),
    cpu: usage,
    gateway_cpu_us_per_request: answeredInWindow && targetUs !== null ? Math.round(targetUs / answeredInWindow) : null,
  }
}

/** Agents by health from the gateway's `chokepoint_agents{health}` gauge (GET /metrics). */
async function agentsByHealth(url) {
  const text = await (await fetch(`${url}/metrics`)).text()
  const out = {}
  for (const m of text.matchAll(/^chokepoint_agents\{health="([a-z]+)"\} (\d+)/gm)) out[m[1]] = Number(m[2])
  return out
}

export async function run(opts) {
  const quick = Boolean(opts.quick)
  const cfg = {
    agents: Math.round(num(opts.agents, quick ? 1_000 : 10_000, 'agents')),
    rate: num(opts.rate, 333, 'rate'),
    seconds: num(opts['beat-seconds'], quick ? 10 : 30, 'beat-seconds'),
    slices: Math.round(num(opts.slices, quick ? 2 : 3, 'slices')),
    idleSeconds: quick ? 3 : 10,
    setupConcurrency: 8,
  }
  const log = opts.log ?? (() => {})
  const profDir = opts['prof-dir'] ?? opts.resultsDir
  const gw = await startGateway(opts['stale-after'] ? { env: { CHOKEPOINT_STALE_AFTER_SECONDS: String(num(opts['stale-after'], 90, 'stale-after')) } } : {})
  const base = new URL(gw.url)
  const pool = new http.Agent({ keepAlive: true, maxSockets: 32 })
  let plain = null
  try {
    plain = await startChild(join(HERE, 'lib/baseline-server.mjs'), { name: 'plain HTTP server' })
    // ---- setup: keys, then a first beat per agent ----
    log(`heartbeat: creating ${cfg.agents.toLocaleString('en-US')} agent keys (POST /v1/keys, ${cfg.setupConcurrency} at a time)…`)
    const keys = new Array(cfg.agents)
    const adminHeaders = { 'content-type': 'application/json', 'x-api-key': gw.adminKey }
    const keysMs = await forEachConcurrent(
      cfg.agents,
      cfg.setupConcurrency,
      async (i) => {
        const body = JSON.stringify({ role: 'agent', agent: addressOf(i), name: `hb ${i}` })
        const res = await httpRequest(pool, base, 'POST', '/v1/keys', adminHeaders, body)
        if (res.status !== 200) throw new Error(`POST /v1/keys: HTTP ${res.status} ${res.text.slice(0, 300)}`)
        keys[i] = JSON.parse(res.text).key
      },
      (done, perS) => log(`heartbeat:   keys ${done.toLocaleString('en-US')}/${cfg.agents.toLocaleString('en-US')} (${perS}/s)`),
    )

    const beats = new Array(cfg.agents).fill(0)
    const beat = (i) => {
      const body = JSON.stringify({ metrics: metricsFor(i, beats[i]) })
      beats[i] += 1
      return httpRequest(pool, base, 'POST', '/v1/mesh/heartbeat', { 'content-type': 'application/json', 'x-api-key': keys[i], 'x-instance-id': `i-${i % 4}` }, body)
    }
    // 64 at a time: a beat may wait up to CHOKEPOINT_HEARTBEAT_BATCH_MS to share its commit.
    log(`heartbeat: first beat of each agent (registers its instance), 64 at a time…`)
    const firstBeatMs = await forEachConcurrent(
      cfg.agents,
      64,
      async (i) => {
        const res = await beat(i)
        if (res.status !== 200) throw new Error(`first heartbeat: HTTP ${res.status} ${res.text.slice(0, 300)}`)
      },
      (done, perS) => log(`heartbeat:   first beats ${done.toLocaleString('en-US')}/${cfg.agents.toLocaleString('en-US')} (${perS}/s)`),
    )
    log(`heartbeat: agents by health after setup: ${JSON.stringify(await agentsByHealth(gw.url))}`)

    // ---- idle ----
    log(`heartbeat: idle: ${cfg.idleSeconds} s without requests…`)
    const idleCpu = cpuWindow(gw.pid)
    idleCpu.start()
    await sleep(cfg.idleSeconds * 1000)
    const idle = { phase: 'idle (no requests)', cpu: idleCpu.stop() }

    // ---- paced phases: no-op and heartbeat in alternating slices, so both see the same noise ----
    // Agents in turn, continuing after the first beats: each agent beats every agents/rate seconds
    // of heartbeat traffic.
    let cursor = 0
    const judgeBeat = (res) => {
      if (res.status !== 200) return `HTTP ${res.status} ${res.text.slice(0, 80)}`
      const hs = JSON.parse(res.text).health_status
      return hs === 'healthy' ? 'ok' : `health_status ${hs}`
    }
    const kinds = {
      health: {
        name: 'GET /health (no-op)',
        send: () => httpRequest(pool, base, 'GET', '/health', {}),
        judge: (res) => (res.status === 200 ? 'ok' : `HTTP ${res.status}`),
      },
      heartbeat: { name: 'POST /v1/mesh/heartbeat', send: () => beat(cursor++ % cfg.agents), judge: judgeBeat },
    }
    const plainBase = new URL(plain.url)
    kinds.plain = {
      name: 'plain node:http, GET → 404 (context)',
      send: () => httpRequest(pool, plainBase, 'GET', '/health', {}),
      judge: (res) => (res.status === 404 ? 'ok' : `HTTP ${res.status}`),
    }
    const slices = { health: [], heartbeat: [], plain: [] }
    const sliceSeconds = cfg.seconds / cfg.slices
    for (let i = 0; i < cfg.slices; i += 1) {
      for (const kind of ['health', 'heartbeat']) {
        const k = kinds[kind]
        const r = await pacedPhase({
          name: `${k.name}, slice ${i + 1}/${cfg.slices}`,
          gwPid: gw.pid,
          rate: cfg.rate,
          seconds: sliceSeconds,
          warmupMs: i === 0 ? WARMUP_MS : 500,
          log,
          send: k.send,
          judge: k.judge,
        })
        slices[kind].push(r.raw)
      }
    }
    const health = summarizePhase(kinds.health.name, cfg.rate, slices.health)
    const heartbeat = summarizePhase(kinds.heartbeat.name, cfg.rate, slices.heartbeat)
    let profiled = null
    if (opts.profile) {
      mkdirSync(profDir, { recursive: true })
      const file = join(profDir, `heartbeat-gateway-${opts.stamp}.cpuprofile`)
      profiled = await pacedPhase({
        name: 'POST /v1/mesh/heartbeat (profiled)',
        gwPid: gw.pid,
        rate: cfg.rate,
        seconds: sliceSeconds,
        warmupMs: 500,
        log,
        send: () => beat(cursor++ % cfg.agents),
        judge: judgeBeat,
        hooks: {
          measureStart: () => gw.child.rpc('profile-start', { interval_us: 1000 }),
          measureEnd: () => gw.child.rpc('profile-stop', { file }),
        },
      })
      delete profiled.raw
      profiled.profile = summarizeProfile(file)
    }
    const after = await agentsByHealth(gw.url)
    // Context, once at the end (interleaving it would stretch the gap between an agent's beats
    // past stale_after): the same rate against a plain node:http server.
    const plainHttp = await pacedPhase({
      name: kinds.plain.name,
      gwPid: plain.pid,
      rate: cfg.rate,
      seconds: sliceSeconds,
      log,
      send: kinds.plain.send,
      judge: kinds.plain.judge,
    })
    delete plainHttp.raw
    // The operators' agent list with this many agents (its summary is what a dashboard shows).
    const listStart = now()
    const mesh = await api(gw.url, gw.adminKey, 'GET', '/v1/mesh/agents?limit=100')
    const meshList = { ms: Math.round(now() - listStart), summary: mesh.summary }

    // ---- verdicts ----
    const phases = [health, heartbeat, ...(profiled ? [profiled] : []), plainHttp]
    const problems = []
    for (const p of phases) {
      const bad = Object.entries(p.outcomes).filter(([k]) => k !== 'ok')
      if (bad.length) problems.push(`${p.phase}: ${JSON.stringify(Object.fromEntries(bad))}`)
      if (p.answered !== p.sent) problems.push(`${p.phase}: ${p.sent - p.answered} of ${p.sent} requests unanswered`)
      if (p.rate_achieved < cfg.rate * 0.95) problems.push(`${p.phase}: only ${p.rate_achieved}/s sent of ${cfg.rate}/s (load generator behind)`)
    }
    if (after.healthy !== cfg.agents) problems.push(`after the run: agents by health ${JSON.stringify(after)}, expected all ${cfg.agents} healthy`)
    const hbPct = heartbeat.cpu.target_cpu_pct
    const noopPct = health.cpu.target_cpu_pct
    const targetMet = hbPct !== null && hbPct < TARGET_CPU_PCT
    const ratio = hbPct !== null && noopPct ? hbPct / noopPct : null

    const notes = [
      `setup: ${cfg.agents.toLocaleString('en-US')} keys in ${(keysMs / 1000).toFixed(1)} s (${Math.round((cfg.agents * 1000) / keysMs)}/s), ` +
        `first beats in ${(firstBeatMs / 1000).toFixed(1)} s (${Math.round((cfg.agents * 1000) / firstBeatMs)}/s); agents by health after the run ${JSON.stringify(after)} (/metrics)`,
      `GET /v1/mesh/agents?limit=100 with ${cfg.agents.toLocaleString('en-US')} agents: ${meshList.ms} ms, summary ${JSON.stringify(meshList.summary)}` +
        (meshList.summary.total !== cfg.agents ? ` (counts only ${meshList.summary.total} of ${cfg.agents} agents)` : ''),
      `each agent beats every ${(cfg.agents / cfg.rate).toFixed(1)} s in the heartbeat phase (${cfg.agents.toLocaleString('en-US')} agents at ${cfg.rate}/s), ` +
        `${heartbeat.sent.toLocaleString('en-US')} beats measured, outcomes ${JSON.stringify(heartbeat.outcomes)}`,
      `gateway CPU: heartbeats ${fmt.pct(hbPct)} of one core vs ${fmt.pct(noopPct)} for GET /health at the same rate ` +
        `(ratio ${ratio === null ? '–' : `${ratio.toFixed(2)}×`}), ${fmt.pct(idle.cpu.target_cpu_pct)} idle; ` +
        `per request ${fmt.int(heartbeat.gateway_cpu_us_per_request)} µs vs ${fmt.int(health.gateway_cpu_us_per_request)} µs ` +
        `(/proc utime+stime, ${fmt.int(heartbeat.cpu.target_cpu_us / 1000)} ms of CPU over ${fmt.int(heartbeat.cpu.wall_ms)} ms; 10 ms tick resolution)`,
      `context: a plain node:http server (no gateway) at the same rate uses ${fmt.pct(plainHttp.cpu.target_cpu_pct)} (${fmt.int(plainHttp.gateway_cpu_us_per_request)} µs/request): ` +
        `this machine's floor for one HTTP request; the gateway's idle ${fmt.pct(idle.cpu.target_cpu_pct)} (background sweeper) is inside both gateway figures`,
      `load generator CPU: ${fmt.pct(heartbeat.cpu.self_cpu_pct)} (heartbeats), ${fmt.pct(health.cpu.self_cpu_pct)} (GET /health) of one core; ` +
        `CPU pressure ${fmt.pct(heartbeat.cpu.cpu_pressure_pct)} / ${fmt.pct(health.cpu.cpu_pressure_pct)}; schedule lag p99 ${fmt.ms(heartbeat.schedule_lag_ms.p99)} / ${fmt.ms(health.schedule_lag_ms.p99)} ms`,
      `target < ${TARGET_CPU_PCT} % of one core for ${cfg.agents.toLocaleString('en-US')} agents every ${(cfg.agents / cfg.rate).toFixed(0)} s: ${targetMet ? 'met' : 'NOT met'} (${fmt.pct(hbPct)})`,
    ]
    const pressure = Math.max(heartbeat.cpu.cpu_pressure_pct ?? 0, health.cpu.cpu_pressure_pct ?? 0)
    if (pressure > BUSY_PRESSURE_PCT) {
      notes.push(
        `WARNING: the machine was busy (CPU pressure up to ${fmt.pct(pressure)}, above ${BUSY_PRESSURE_PCT} %): CPU time per request runs higher on a contended machine; ` +
          'the heartbeat/no-op ratio (alternating slices) is the steadier number.',
      )
    }
    if (problems.length) notes.push(`PROBLEMS: ${problems.join('; ')}`)
    const prof = profiled?.profile
    if (prof) {
      notes.push(`gateway CPU profile of the heartbeat phase (${prof.file}; ${prof.busy_samples} busy samples, ${prof.idle_pct} % idle):`)
      notes.push('  self time by category:')
      for (const c of prof.categories.slice(0, 12)) notes.push(`    ${String(c.pct).padStart(5)} %  ${c.category}`)
      notes.push('  top self-time functions:')
      for (const f of prof.top_self.slice(0, 15)) notes.push(`    ${String(f.pct).padStart(5)} %  ${f.function}  ${f.location}`)
      notes.push('  gateway functions by inclusive time:')
      for (const f of prof.top_inclusive.slice(0, 15)) notes.push(`    ${String(f.pct).padStart(5)} %  ${f.function}  ${f.location}`)
    }

    const row = (p) => ({
      phase: p.phase,
      rate: p.rate_achieved === undefined ? '–' : fmt.int(p.rate_achieved),
      n: p.sent === undefined ? '–' : fmt.int(p.sent),
      l50: fmt.ms(p.latency_ms?.p50),
      l99: fmt.ms(p.latency_ms?.p99),
      gcpu: fmt.pct(p.cpu.target_cpu_pct),
      us: p.gateway_cpu_us_per_request === undefined ? '–' : fmt.int(p.gateway_cpu_us_per_request),
      ratio:
        p === health
          ? '1.00×'
          : (p === heartbeat || p === plainHttp) && p.cpu.target_cpu_pct !== null && noopPct
            ? `${(p.cpu.target_cpu_pct / noopPct).toFixed(2)}×`
            : '',
      lcpu: fmt.pct(p.cpu.self_cpu_pct),
    })
    return {
      benchmark: 'heartbeat',
      description,
      config: { ...cfg, quick, warmup_ms: WARMUP_MS, target_cpu_pct: TARGET_CPU_PCT },
      // Like e2e: `ok` is about correctness (every beat answered 200 healthy, the rate held);
      // the CPU target is reported beside it (target.met and the notes).
      ok: problems.length === 0,
      target: { cpu_pct: TARGET_CPU_PCT, met: targetMet },
      ratio_heartbeat_to_noop_cpu: ratio,
      table: {
        columns: [
          { key: 'phase', title: 'phase', align: 'left' },
          { key: 'rate', title: 'req/s' },
          { key: 'n', title: 'requests' },
          { key: 'l50', title: 'p50 ms' },
          { key: 'l99', title: 'p99 ms' },
          { key: 'gcpu', title: 'server CPU' },
          { key: 'us', title: 'server µs/req' },
          { key: 'ratio', title: 'CPU vs no-op' },
          { key: 'lcpu', title: 'loadgen CPU' },
        ],
        rows: [row(idle), ...phases.map(row)],
      },
      notes,
      mesh_list: meshList,
      agents_by_health: after,
      setup: { keys_ms: Math.round(keysMs), first_beats_ms: Math.round(firstBeatMs) },
      phases: { idle, health, heartbeat, profiled, plain_http: plainHttp },
      problems,
    }
  } finally {
    pool.destroy()
    await plain?.stop()
    await gw.stop()
  }
}
