// Idle-gateway overhead: one intent at a time, create → SSE delivery → resolve, the next one only
// after the previous was resolved (1 sender, 1 receiving instance, at most 1 outstanding), against
// the plain node:http + SSE baseline doing the same. The difference of the two latencies is what
// the gateway adds to one intent when nothing else is going on (no batching, no queueing).
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startChild } from './lib/children.mjs'
import { SERVER_ENTRY, api, startGateway } from './lib/gateway.mjs'
import { runFlow } from './lib/load.mjs'
import { summarize, fmt } from './lib/stats.mjs'
import { num } from './lib/util.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
/** Goal: the gateway adds less than this at p50 over the plain baseline. */
const GOAL_P50_MS = 1

export const description = 'one sequential create → SSE delivery → resolve at a time, gateway vs. a plain-HTTP baseline (added latency)'

export const options = {
  duration: { type: 'string', help: 'measured seconds per run (default 5; --quick: 2)' },
  warmup: { type: 'string', help: 'warm-up seconds (default 1)' },
  repeat: { type: 'string', help: 'alternating runs of each scenario; samples of all runs are pooled (default 3; --quick: 1)' },
  server: { type: 'string', help: 'server entry to benchmark (default packages/server/dist/index.js)' },
}

async function once(kind, cfg) {
  let child = null
  let gateway = null
  try {
    let url
    let senderKey = 'none'
    let receiverKey = 'none'
    const toAgent = 'agent://bench/idle/worker'
    if (kind === 'baseline') {
      child = await startChild(join(HERE, 'lib/baseline-server.mjs'), { name: 'baseline server' })
      url = child.url
    } else {
      gateway = await startGateway({ serverEntry: cfg.serverEntry })
      url = gateway.url
      senderKey = (await api(url, gateway.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: 'agent://bench/idle/sender' })).key
      receiverKey = (await api(url, gateway.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: toAgent })).key
    }
    const flow = await runFlow({
      url,
      senderKey,
      receiverKey,
      toAgent,
      streamPath: '/v1/agents/bench/idle/worker/intents/stream',
      senders: 1,
      receivers: 1,
      resolveSocketsPerReceiver: 1,
      warmupMs: cfg.warmupMs,
      durationMs: cfg.durationMs,
      drainMs: 5_000,
      maxOutstanding: 1,
    })
    const k = flow.counters
    const problems = []
    if (Object.keys(k.create_errors).length) problems.push(`create errors ${JSON.stringify(k.create_errors)}`)
    if (Object.keys(k.resolve_errors).length) problems.push(`resolve errors ${JSON.stringify(k.resolve_errors)}`)
    if (k.missing > 0) problems.push(`${k.missing} intents not resolved`)
    if (k.duplicate_deliveries > 0) problems.push(`${k.duplicate_deliveries} duplicate deliveries`)
    return { e2e: flow.e2e_latency, create: flow.create_latency, intents: k.resolved_in_window, problems }
  } finally {
    if (child && !gateway) await child.stop()
    if (gateway) await gateway.stop()
  }
}

export async function run(opts) {
  const serverEntry = resolve(opts.server ?? SERVER_ENTRY)
  if (!existsSync(serverEntry)) throw new Error('packages/server/dist is missing: run `npm run build` first')
  const quick = Boolean(opts.quick)
  const cfg = {
    durationMs: num(opts.duration, quick ? 2 : 5, 'duration') * 1000,
    warmupMs: num(opts.warmup, 1, 'warmup') * 1000,
    repeat: Math.round(num(opts.repeat, quick ? 1 : 3, 'repeat')),
    serverEntry,
  }
  const log = opts.log ?? (() => {})
  const pooled = { baseline: { e2e: [], create: [], intents: 0, problems: [] }, gateway: { e2e: [], create: [], intents: 0, problems: [] } }
  for (let round = 1; round <= cfg.repeat; round += 1) {
    for (const kind of ['baseline', 'gateway']) {
      log(`idle: ${kind} (run ${round}/${cfg.repeat}): ${cfg.warmupMs / 1000} s warm-up + ${cfg.durationMs / 1000} s measured…`)
      const r = await once(kind, cfg)
      const p = pooled[kind]
      p.e2e.push(...r.e2e)
      p.create.push(...r.create)
      p.intents += r.intents
      p.problems.push(...r.problems)
    }
  }
  const scenarios = [
    ['baseline (plain node:http + SSE)', pooled.baseline],
    ['chokepoint (SQLite, durable)', pooled.gateway],
  ].map(([name, p]) => ({
    scenario: name,
    intents: p.intents,
    e2e_ms: summarize(p.e2e),
    create_ms: summarize(p.create),
    problems: p.problems,
  }))
  const [base, gw] = scenarios
  const added = {
    p50: gw.e2e_ms.p50 - base.e2e_ms.p50,
    p90: gw.e2e_ms.p90 - base.e2e_ms.p90,
    p99: gw.e2e_ms.p99 - base.e2e_ms.p99,
  }
  const met = added.p50 < GOAL_P50_MS
  const ok = scenarios.every((s) => s.problems.length === 0)
  return {
    benchmark: 'idle',
    description,
    config: { ...cfg, quick, goal_added_p50_ms: GOAL_P50_MS },
    ok,
    added_ms: added,
    goal: { added_p50_ms: GOAL_P50_MS, met },
    table: {
      columns: [
        { key: 'scenario', title: 'scenario', align: 'left' },
        { key: 'n', title: 'intents' },
        { key: 'c50', title: 'create p50 ms' },
        { key: 'e50', title: 'e2e p50 ms' },
        { key: 'e90', title: 'e2e p90 ms' },
        { key: 'e99', title: 'e2e p99 ms' },
        { key: 'add', title: 'added p50 / p99 ms' },
      ],
      rows: scenarios.map((s, i) => ({
        scenario: s.scenario,
        n: fmt.int(s.intents),
        c50: fmt.ms(s.create_ms.p50),
        e50: fmt.ms(s.e2e_ms.p50),
        e90: fmt.ms(s.e2e_ms.p90),
        e99: fmt.ms(s.e2e_ms.p99),
        add: i === 0 ? '–' : `+${fmt.ms(added.p50)} / +${fmt.ms(added.p99)}`,
      })),
    },
    notes: [
      `goal: the gateway adds < ${GOAL_P50_MS} ms at p50 to one sequential create → delivery → resolve: ${met ? 'met' : 'NOT met'} (+${fmt.ms(added.p50)} ms)`,
      ...scenarios.flatMap((s) => (s.problems.length ? [`${s.scenario}: PROBLEMS: ${s.problems.join('; ')}`] : [])),
    ],
    scenarios,
  }
}
