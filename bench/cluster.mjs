// Cluster benchmark (DESIGN §2.1, §8, §11): Chokepoint on PostgreSQL with 3 gateway replicas,
// next to single-node SQLite and to a peer queue (pg-boss 10) on the same PostgreSQL, in ONE run.
//
// PostgreSQL: a throwaway cluster (bench/lib/postgres.mjs) with fsync, synchronous_commit and
// full_page_writes ON (every commit waits for its WAL flush); each scenario gets a fresh database.
//
// Scenarios, one after the other:
//   sqlite      one gateway (child process) on a fresh SQLite data directory (default durability).
//   pg ×3       3 gateway replicas (child processes, CHOKEPOINT_DATABASE_URL), started at the same
//               moment on an empty database (their migrations race, as they do in a rollout).
//   pg ×1       one replica on PostgreSQL (throughput only): what the replicas add on this machine.
//   pg-boss     pg-boss 10 on the same PostgreSQL: the same send → receive → complete flow.
// Per Chokepoint scenario:
//   throughput  bench/lib/load.mjs: 8 closed-loop senders and 4 receiving instances, each on its
//               own inbox stream, resolving every delivery at once; intents/s end to end (create →
//               delivered over the stream → resolved), create and end-to-end latency. On the
//               cluster, sender s talks to replica s % 3 and receiver i to replica i % 3, so most
//               intents cross replicas (the stream's wake-up comes through LISTEN/NOTIFY).
//   kill cycles (not pg ×1) ≥ 30 kill/resume cycles under load: the victim has 4 instances with open
//               streams, 4 senders send to it and 4 send as it; the kill and resume go to replica
//               0, the senders and streams to the OTHER replicas. Per cycle: kill returned → first
//               403 agent_killed answered to a sender, and → all 4 victim streams closed.
// Per scenario also: CPU µs per resolved intent of the gateway processes and of every PostgreSQL backend
// (/proc), and PostgreSQL statements per intent (pg_stat_statements, loaded unless --no-pg-stats: every
// statement executed in the measured window, all replicas, feeds and sweepers).
// pg-boss: 8 closed-loop `boss.send(queue, payload)` senders, 4 `boss.work(queue, {batchSize,
// pollingIntervalSeconds: 0.5}, handler)` workers whose handler returns at once (pg-boss then
// completes the batch); jobs/s = jobs handled per second, send latency = boss.send round trip,
// end-to-end = send → handler. After the drain every job must be `completed` in pgboss.job.
import http from 'node:http'
import { join, resolve } from 'node:path'
import { inboxStream } from './kill.mjs'
import { summarizeProfile } from './lib/cpuprofile.mjs'
import { api, randomKey, startGateway } from './lib/gateway.mjs'
import { httpRequest, runFlow } from './lib/load.mjs'
import { findPostgresBin, startPostgres } from './lib/postgres.mjs'
import { cpuPressureUs, procCpuUs } from './lib/procstat.mjs'
import { fmt, summarize } from './lib/stats.mjs'
import { now, sleep, bump, num, waitUntil } from './lib/util.mjs'

export const description =
  'PostgreSQL cluster: 3 replicas vs single-node SQLite vs pg-boss 10, same run: intents/s end to end, kill → 403 / streams closed p50/p99'

export const options = {
  replicas: { type: 'string', help: 'cluster: gateway replicas on PostgreSQL (default 3)' },
  cycles: { type: 'string', help: 'kill/resume cycles per scenario (cluster: default 30, --quick: 5)' },
  'boss-batch': { type: 'string', help: 'cluster: pg-boss batchSize per worker fetch (default 500: 4 workers × 500 per 0.5 s poll do not cap it)' },
  'sqlite-durability': { type: 'string', help: 'cluster: durability of the SQLite gateway, normal (default) or full' },
  'no-pgboss': { type: 'boolean', help: 'cluster: skip the pg-boss baseline' },
  server: { type: 'string', help: 'cluster: the gateway build to run (a packages/server dist/index.js; default this checkout), for A/B runs' },
  profile: {
    type: 'boolean',
    help: 'cluster: V8 CPU profiles of every PostgreSQL replica over the measured throughput windows (3 replicas and 1), summarised side by side (adds profiler overhead: compare profiles, not throughput)',
  },
  'no-pg-stats': { type: 'boolean', help: 'cluster: do not load pg_stat_statements (statements per intent and the top statements of the replica run; small overhead)' },
}

const LEASE_S = 30
const HOLD_TIMEOUT_MS = 3_000
const KILLED_MIN_MS = 100
const QUEUE = 'bench-cluster'

const ratio = (a, b) => (a === null || b === null || a === undefined || b === undefined || !b ? null : Math.round((a / b) * 1000) / 1000)

// ---- gateways ------------------------------------------------------------------------------------

/** `n` gateways: one on SQLite (`databaseUrl` null), or `n` replicas on one PostgreSQL database, started together. */
async function startGateways({ n, databaseUrl, durability, serverEntry }) {
  const adminKey = randomKey()
  const env = { CHOKEPOINT_ADMIN_KEY: adminKey }
  if (databaseUrl) env.CHOKEPOINT_DATABASE_URL = databaseUrl
  if (durability) env.CHOKEPOINT_DURABILITY = durability
  const started = await Promise.allSettled(
    Array.from({ length: n }, (_, i) => startGateway({ name: databaseUrl ? `replica ${i}` : 'gateway (sqlite)', env, ...(serverEntry ? { serverEntry } : {}) })),
  )
  const gateways = started.filter((r) => r.status === 'fulfilled').map((r) => r.value)
  const failed = started.find((r) => r.status === 'rejected')
  const stop = () => Promise.all(gateways.map((g) => g.stop()))
  if (failed) {
    await stop()
    throw failed.reason
  }
  return { adminKey, urls: gateways.map((g) => g.url), pids: gateways.map((g) => g.pid), children: gateways.map((g) => g.child), stop }
}

/** CPU of the gateways, of PostgreSQL and of this process over a window, plus the machine's CPU pressure. */
function cpuMeter(pids, pg) {
  const read = () => ({
    gateways: pids.reduce((sum, pid) => sum + (procCpuUs(pid) ?? 0), 0),
    postgres: pg ? pg.cpuUs() : null,
    self: process.cpuUsage(),
    psi: cpuPressureUs(),
    at: now(),
  })
  let start = null
  return {
    start() {
      start = read()
    },
    stop() {
      const end = read()
      const wallUs = (end.at - start.at) * 1000
      const pct = (us) => (us === null ? null : Math.round((us / wallUs) * 1000) / 10)
      const selfUs = end.self.user - start.self.user + (end.self.system - start.self.system)
      const postgresUs = end.postgres === null || start.postgres === null ? null : end.postgres - start.postgres
      return {
        gateways_cpu_us: end.gateways - start.gateways,
        postgres_cpu_us: postgresUs,
        gateways_cpu_pct: pct(end.gateways - start.gateways),
        postgres_cpu_pct: pct(postgresUs),
        loadgen_cpu_pct: pct(selfUs),
        cpu_pressure_pct: end.psi === null || start.psi === null ? null : Math.round(((end.psi - start.psi) / wallUs) * 1000) / 10,
      }
    },
  }
}

// ---- throughput ----------------------------------------------------------------------------------

async function throughput(cluster, pg, cfg, label, log, databaseUrl = null) {
  const { urls, adminKey } = cluster
  const toAgent = 'agent://bench/cluster/worker'
  const senderKey = (await api(urls[0], adminKey, 'POST', '/v1/keys', { role: 'agent', agent: 'agent://bench/cluster/sender' })).key
  const receiverKey = (await api(urls[0], adminKey, 'POST', '/v1/keys', { role: 'agent', agent: toAgent })).key
  const cpu = cpuMeter(cluster.pids, pg)
  const profileFiles =
    cfg.profile && databaseUrl ? cluster.children.map((_, i) => join(cfg.resultsDir, `cluster-${cfg.stamp}-${cluster.children.length}r-replica${i}.cpuprofile`)) : null
  let usage = null
  let stats = null
  let statements = null
  let statementCount = null
  log(`cluster: ${label}: throughput, ${cfg.warmupMs / 1000} s warm-up + ${cfg.durationMs / 1000} s measured…`)
  const flow = await runFlow({
    url: urls[0],
    senderUrls: urls,
    receiverUrls: urls,
    senderKey,
    receiverKey,
    toAgent,
    streamPath: '/v1/agents/bench/cluster/worker/intents/stream',
    senders: cfg.senders,
    receivers: cfg.receivers,
    warmupMs: cfg.warmupMs,
    durationMs: cfg.durationMs,
    drainMs: cfg.drainMs,
    maxOutstanding: cfg.maxOutstanding,
    hooks: {
      measureStart: async () => {
        if (pg && databaseUrl) stats = await pg.statementStats(databaseUrl)
        if (profileFiles) await Promise.all(cluster.children.map((c) => c.rpc('profile-start', { interval_us: 1000 })))
        cpu.start()
      },
      measureEnd: async () => {
        usage = cpu.stop()
        if (profileFiles) await Promise.all(cluster.children.map((c, i) => c.rpc('profile-stop', { file: profileFiles[i] })))
        if (stats) {
          statementCount = await stats.total()
          statements = await stats.top(25)
        }
      },
    },
  })
  const k = flow.counters
  const problems = []
  if (Object.keys(k.create_errors).length) problems.push(`create errors ${JSON.stringify(k.create_errors)}`)
  if (Object.keys(k.resolve_errors).length) problems.push(`resolve errors ${JSON.stringify(k.resolve_errors)}`)
  if (Object.keys(k.stream_errors).length) problems.push(`stream errors ${JSON.stringify(k.stream_errors)}`)
  if (k.missing > 0) problems.push(`${k.missing} created intents not resolved after the drain`)
  if (k.duplicate_deliveries > 0) problems.push(`${k.duplicate_deliveries} duplicate deliveries`)
  const serverUs = usage.gateways_cpu_us + (usage.postgres_cpu_us ?? 0)
  return {
    intents_per_s: Math.round(flow.intents_per_s),
    creates_per_s: Math.round(flow.creates_per_s),
    send_ms: summarize(flow.create_latency),
    e2e_ms: summarize(flow.e2e_latency),
    counters: k,
    window_ms: flow.window_ms,
    per_second: flow.per_second,
    cpu: usage,
    server_cpu_us_per_intent: k.resolved_in_window ? Math.round(serverUs / k.resolved_in_window) : null,
    gateway_cpu_us_per_intent: k.resolved_in_window ? Math.round(usage.gateways_cpu_us / k.resolved_in_window) : null,
    postgres_cpu_us_per_intent: k.resolved_in_window && usage.postgres_cpu_us !== null ? Math.round(usage.postgres_cpu_us / k.resolved_in_window) : null,
    // Every statement PostgreSQL executed in the window (all replicas, feeds, sweepers) per resolved intent.
    statements_per_intent: k.resolved_in_window && statementCount !== null ? Math.round((statementCount / k.resolved_in_window) * 10) / 10 : null,
    // pg_stat_statements (unless --no-pg-stats): the statements of the measured window by total time, with calls per resolved intent.
    profiles: profileFiles?.map((file) => summarizeProfile(file)) ?? null,
    pg_statements: statements?.map((r) => ({ ...r, calls_per_intent: k.resolved_in_window ? Math.round((r.calls / k.resolved_in_window) * 100) / 100 : null })) ?? null,
    problems,
  }
}

// ---- accept only: one hot agent pair vs many ------------------------------------------------------

/**
 * Sends only (nobody receives): `cfg.senders` closed-loop senders spread over the gateways, either
 * all as ONE agent to ONE recipient (`pairs` 1) or each as its own agent to its own recipient.
 * Every accept updates the sender's and the recipient's counter rows in its transaction, so with
 * one pair those rows are shared by every concurrent accept; with many pairs they are not.
 */
async function acceptOnly(cluster, cfg, pairs, label, log) {
  const { urls, adminKey } = cluster
  const tag = `p${pairs}`
  const keys = []
  for (let p = 0; p < pairs; p += 1) {
    keys.push((await api(urls[0], adminKey, 'POST', '/v1/keys', { role: 'agent', agent: `agent://bench/spread/${tag}-sender-${p}` })).key)
  }
  const agents = urls.map(() => new http.Agent({ keepAlive: true, maxSockets: cfg.senders }))
  const tally = {}
  const latency = []
  let phase = 'warmup'
  let accepted = 0
  log(`cluster: ${label}: accept only, ${cfg.senders} senders as ${pairs === 1 ? 'one agent to one recipient' : `${pairs} agents to ${pairs} recipients`}, ${cfg.acceptMs / 1000} s…`)
  const loop = async (s) => {
    const p = s % pairs
    const i = s % urls.length
    const base = new URL(urls[i])
    const headers = { 'content-type': 'application/json', 'x-api-key': keys[p] }
    const body = JSON.stringify({ intent_type: 'bench.spread.v1', to_agent: `agent://bench/spread/${tag}-inbox-${p}`, payload: { s } })
    while (phase !== 'done') {
      const t = now()
      try {
        const res = await httpRequest(agents[i], base, 'POST', '/v1/intents', headers, body)
        bump(tally, res.status)
        if (res.status === 200 && phase === 'measure') {
          accepted += 1
          latency.push(now() - t)
        }
      } catch (error) {
        bump(tally, error.code ?? 'error')
        await sleep(5)
      }
    }
  }
  const loops = Array.from({ length: cfg.senders }, (_, s) => loop(s))
  try {
    await sleep(cfg.killWarmupMs)
    phase = 'measure'
    const start = now()
    await sleep(cfg.acceptMs)
    const windowMs = now() - start
    const perS = Math.round((accepted * 1000) / windowMs)
    phase = 'done'
    await Promise.all(loops)
    const odd = Object.keys(tally).filter((k) => k !== '200')
    return { pairs, accepted_per_s: perS, send_ms: summarize(latency), answers: tally, problems: odd.length ? [`accept-only (${pairs} pairs) answers ${JSON.stringify(tally)}`] : [] }
  } finally {
    phase = 'done'
    for (const a of agents) a.destroy()
  }
}

// ---- kill cycles ---------------------------------------------------------------------------------

/** Kill/resume cycles: the kill and resume go to urls[0], senders and streams to the other gateways (or the only one). */
async function killCycles(cluster, cfg, label, log) {
  const { urls, adminKey } = cluster
  const killUrl = urls[0]
  const others = urls.length > 1 ? urls.slice(1) : urls
  const VICTIM = 'agent://bench/cluster/deploy-bot'
  const OTHER = 'agent://bench/cluster/other'
  const mk = (agent) => api(killUrl, adminKey, 'POST', '/v1/keys', { role: 'agent', agent })
  const victim = await mk(VICTIM)
  const sender = await mk('agent://bench/cluster/kill-sender')
  const other = await mk(OTHER)
  const agents = []
  const agentFor = new Map()
  const keepAlive = (url) => {
    if (!agentFor.has(url)) {
      const a = new http.Agent({ keepAlive: true, maxSockets: 16 })
      agents.push(a)
      agentFor.set(url, a)
    }
    return agentFor.get(url)
  }
  const streams = []
  let running = true
  let cur = null
  const c = { sends: {}, resolves: {}, stream_errors: {}, unexpected_frames: {} }
  const problems = []
  try {
    const resolveOn = (url, key, instanceId, intentId) =>
      httpRequest(keepAlive(url), new URL(url), 'POST', `/v1/intents/${intentId}/resolve`, { 'content-type': 'application/json', 'x-api-key': key, 'x-instance-id': instanceId }, '{"status":"COMPLETED"}').then(
        (res) => bump(c.resolves, res.status === 403 && res.text.includes('agent_killed') ? '403 agent_killed' : res.status),
        (error) => bump(c.resolves, error.code ?? 'error'),
      )
    const reconnectLater = (s, why) => {
      bump(c.stream_errors, why)
      setTimeout(() => {
        if (!s.closedByUs && !s.open) s.connect().catch((e) => bump(c.stream_errors, `reconnect: ${e.message.slice(0, 80)}`))
      }, 50)
    }
    const victimStreams = [0, 1, 2, 3].map((i) => {
      const url = others[i % others.length]
      return inboxStream({
        base: new URL(url),
        key: victim.key,
        path: '/v1/agents/bench/cluster/deploy-bot/intents/stream',
        instanceId: `deploy-bot-${i}`,
        hooks: {
          onDelivered: (s, frame, t) => {
            const cyc = cur
            if (cyc && cyc.killStartAt !== null && cyc.firstDeliveryAt === null) cyc.leaseTimes.push(Date.parse(frame.lease_expires_at) - LEASE_S * 1000)
            if (cyc && cyc.resumeReturnAt !== null && cyc.firstDeliveryAt === null && t >= cyc.resumeReturnAt) cyc.firstDeliveryAt = t
            void resolveOn(url, victim.key, s.instanceId, frame.intent_id)
          },
          onOtherFrame: (_s, event) => bump(c.unexpected_frames, event),
          onEnd: (s) => {
            if (s.closedByUs) return
            const cyc = cur
            if (!cyc || cyc.killStartAt === null || cyc.resumeStartAt !== null) reconnectLater(s, 'victim stream ended without a kill')
          },
        },
      })
    })
    const otherStreams = [0, 1].map((i) => {
      const url = others[i % others.length]
      return inboxStream({
        base: new URL(url),
        key: other.key,
        path: '/v1/agents/bench/cluster/other/intents/stream',
        instanceId: `other-${i}`,
        hooks: {
          onDelivered: (s, frame) => void resolveOn(url, other.key, s.instanceId, frame.intent_id),
          onOtherFrame: (_s, event) => bump(c.unexpected_frames, `other: ${event}`),
          onEnd: (s) => {
            if (!s.closedByUs) reconnectLater(s, 'other stream ended')
          },
        },
      })
    })
    streams.push(...victimStreams, ...otherStreams)
    await Promise.all(streams.map((s) => s.connect()))

    const senderLoop = async (url, key, to) => {
      const base = new URL(url)
      const headers = { 'content-type': 'application/json', 'x-api-key': key }
      let n = 0
      while (running) {
        n += 1
        const cyc = cur
        const t = now()
        try {
          const res = await httpRequest(keepAlive(url), base, 'POST', '/v1/intents', headers, JSON.stringify({ intent_type: 'deploy.service.v1', to_agent: to, payload: { n } }))
          const end = now()
          if (res.status === 200) {
            bump(c.sends, 200)
            if (cyc && cyc.killReturnAt !== null && t >= cyc.killReturnAt && cyc.resumeStartAt === null) cyc.acceptedAfterKill.push(t - cyc.killReturnAt)
          } else if (res.status === 403 && res.text.includes('"agent_killed"')) {
            bump(c.sends, '403 agent_killed')
            const k = cur
            if (k && k.killReturnAt !== null && end >= k.killReturnAt && k.first403After === null) k.first403After = end
          } else bump(c.sends, `${res.status} ${res.text.slice(0, 60)}`)
        } catch (error) {
          bump(c.sends, error.code ?? 'error')
          await sleep(5)
        }
      }
    }
    const senderLoops = [
      ...[0, 1, 2, 3].map((i) => senderLoop(others[i % others.length], sender.key, VICTIM)),
      ...[0, 1, 2, 3].map((i) => senderLoop(others[(i + 1) % others.length], victim.key, OTHER)),
    ]
    const ctl = new http.Agent({ keepAlive: true, maxSockets: 1 })
    agents.push(ctl)
    const ctlHeaders = { 'content-type': 'application/json', 'x-api-key': adminKey }
    const victimId = victim.address_id
    await sleep(cfg.killWarmupMs)
    log(`cluster: ${label}: ${cfg.cycles} kill/resume cycles (kill on ${urls.length > 1 ? 'replica 0, senders and streams on the others' : 'the one gateway'})…`)
    const cycles = []
    for (let i = 0; i < cfg.cycles; i += 1) {
      const cyc = {
        i,
        killStartAt: null,
        killReturnAt: null,
        killedAtMs: null,
        first403After: null,
        allClosedAt: null,
        resumeStartAt: null,
        resumeReturnAt: null,
        resumedAtMs: null,
        firstDeliveryAt: null,
        acceptedAfterKill: [],
        leaseTimes: [],
        problems: [],
      }
      cur = cyc
      await sleep(200 + Math.random() * 200)
      if (!(await waitUntil(() => victimStreams.every((s) => s.open), 5_000))) cyc.problems.push('victim streams not all open before the kill')
      cyc.killStartAt = now()
      const kill = await httpRequest(ctl, new URL(killUrl), 'POST', `/v1/mesh/agents/${victimId}/kill`, ctlHeaders, JSON.stringify({ reason: `bench cycle ${i}` }))
      cyc.killReturnAt = now()
      if (kill.status !== 200) throw new Error(`kill: HTTP ${kill.status} ${kill.text.slice(0, 300)}`)
      cyc.killedAtMs = Date.parse(JSON.parse(kill.text).killed_at)
      const held = await waitUntil(
        () => victimStreams.every((s) => !s.open) && cyc.first403After !== null && now() - cyc.killReturnAt >= KILLED_MIN_MS,
        HOLD_TIMEOUT_MS,
      )
      if (!held) {
        const open = victimStreams.filter((s) => s.open).length
        if (open) cyc.problems.push(`${open} victim stream(s) still open ${HOLD_TIMEOUT_MS} ms after the kill returned`)
        if (cyc.first403After === null) cyc.problems.push(`no 403 agent_killed within ${HOLD_TIMEOUT_MS} ms after the kill returned`)
        for (const s of victimStreams) if (s.open) s.req.destroy()
      }
      const noFrame = victimStreams.filter((s) => s.killedFrameAt === null).length
      if (noFrame) cyc.problems.push(`${noFrame} stream(s) closed without the agent.killed frame`)
      cyc.allClosedAt = Math.max(...victimStreams.map((s) => s.killedFrameAt ?? s.endedAt ?? Infinity))
      cyc.resumeStartAt = now()
      const resume = await httpRequest(ctl, new URL(killUrl), 'POST', `/v1/mesh/agents/${victimId}/resume`, ctlHeaders, JSON.stringify({ reason: `bench cycle ${i}` }))
      cyc.resumeReturnAt = now()
      if (resume.status !== 200) throw new Error(`resume: HTTP ${resume.status} ${resume.text.slice(0, 300)}`)
      cyc.resumedAtMs = Date.parse(JSON.parse(resume.text).resumed_at)
      try {
        await Promise.all(victimStreams.map((s) => s.connect()))
      } catch (error) {
        cyc.problems.push(`reconnect after resume failed: ${error.message.slice(0, 200)}`)
        await sleep(100)
        await Promise.all(victimStreams.filter((s) => !s.open).map((s) => s.connect()))
      }
      if (!(await waitUntil(() => cyc.firstDeliveryAt !== null, 5_000))) cyc.problems.push('no delivery within 5 s of the resume')
      cycles.push(cyc)
      if ((i + 1) % Math.max(1, Math.round(cfg.cycles / 5)) === 0 || i + 1 === cfg.cycles) {
        log(`cluster: ${label}: ${i + 1}/${cfg.cycles} cycles (last: kill call ${fmt.ms(cyc.killReturnAt - cyc.killStartAt)} ms, first 403 +${fmt.ms(cyc.first403After - cyc.killReturnAt)} ms)`)
      }
    }
    await sleep(50)
    running = false
    await Promise.all(senderLoops)

    for (const cyc of cycles) {
      for (const after of cyc.acceptedAfterKill) cyc.problems.push(`a send started ${fmt.ms(after)} ms after the kill returned was accepted`)
      const leased = cyc.leaseTimes.filter((at) => at > cyc.killedAtMs && at < cyc.resumedAtMs).length
      if (leased) cyc.problems.push(`${leased} deliveries leased to the victim after the kill committed`)
      for (const p of cyc.problems) problems.push(`cycle ${cyc.i}: ${p}`)
    }
    const odd = Object.keys(c.sends).filter((k) => k !== '200' && k !== '403 agent_killed')
    if (odd.length) problems.push(`unexpected send answers ${JSON.stringify(Object.fromEntries(odd.map((k) => [k, c.sends[k]])))}`)
    if (Object.keys(c.stream_errors).length) problems.push(`stream errors ${JSON.stringify(c.stream_errors)}`)
    if (Object.keys(c.unexpected_frames).length) problems.push(`unexpected frames ${JSON.stringify(c.unexpected_frames)}`)
    const verify = await api(others[0], adminKey, 'GET', '/v1/audit/verify')
    if (!verify.valid) problems.push(`audit chain broken at seq ${verify.first_broken_seq}`)

    const d = (a, b) => (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b) ? null : a - b)
    const series = {
      kill_call_ms: cycles.map((x) => x.killReturnAt - x.killStartAt),
      first_403_ms: cycles.map((x) => d(x.first403After, x.killReturnAt)).filter((v) => v !== null),
      streams_closed_ms: cycles.map((x) => d(x.allClosedAt, x.killReturnAt)).filter((v) => v !== null).map((v) => Math.max(0, v)),
      first_delivery_after_resume_ms: cycles.map((x) => d(x.firstDeliveryAt, x.resumeReturnAt)).filter((v) => v !== null),
      // The client's whole view: from sending the kill request.
      streams_closed_from_kill_sent_ms: cycles.map((x) => d(x.allClosedAt, x.killStartAt)).filter((v) => v !== null),
    }
    return {
      cycles: cycles.length,
      stats: Object.fromEntries(Object.entries(series).map(([k, v]) => [k, summarize(v)])),
      series: Object.fromEntries(Object.entries(series).map(([k, v]) => [k, v.map((x) => Math.round(x * 1000) / 1000)])),
      streams_closed_before_kill_returned: cycles.filter((x) => Number.isFinite(x.allClosedAt) && x.allClosedAt <= x.killReturnAt).length,
      counters: c,
      audit: verify,
      problems,
    }
  } finally {
    running = false
    for (const s of streams) s.close()
    for (const a of agents) a.destroy()
  }
}

// ---- pg-boss -------------------------------------------------------------------------------------

async function pgBossPart(pg, cfg, log) {
  let PgBoss
  try {
    PgBoss = (await import('pg-boss')).default
  } catch {
    return { skipped: 'pg-boss is not installed (npm install -D pg-boss@10)' }
  }
  const url = await pg.createDatabase('bench_pgboss')
  const common = { connectionString: url, supervise: false, schedule: false, migrate: true }
  const producer = new PgBoss({ ...common, max: cfg.senders + 2, application_name: 'bench-pgboss-send' })
  const consumer = new PgBoss({ ...common, max: cfg.receivers + 4, application_name: 'bench-pgboss-work' })
  const errors = {}
  producer.on('error', (e) => bump(errors, `producer: ${String(e.message).slice(0, 80)}`))
  consumer.on('error', (e) => bump(errors, `consumer: ${String(e.message).slice(0, 80)}`))
  try {
    await producer.start()
    await consumer.start()
    await producer.createQueue(QUEUE)
    let phase = 'warmup'
    const t0 = now()
    const k = { sent: 0, send_errors: {}, handled: 0, sent_in_window: 0, handled_in_window: 0, duplicates: 0 }
    const sendLatency = []
    const e2eLatency = []
    const perSecond = []
    const seen = new Set()
    for (let w = 0; w < cfg.receivers; w += 1) {
      await consumer.work(QUEUE, { batchSize: cfg.bossBatch, pollingIntervalSeconds: 0.5 }, async (jobs) => {
        const t = now()
        for (const job of jobs) {
          if (seen.has(job.id)) k.duplicates += 1
          seen.add(job.id)
          k.handled += 1
          const second = Math.floor((t - t0) / 1000)
          perSecond[second] = (perSecond[second] ?? 0) + 1
          if (phase === 'measure') {
            k.handled_in_window += 1
            if (typeof job.data?.t === 'number') e2eLatency.push(t - job.data.t)
          }
        }
      })
    }
    const sender = async (s) => {
      let n = 0
      while (phase === 'warmup' || phase === 'measure') {
        n += 1
        const t = now()
        try {
          await producer.send(QUEUE, { s, n, t })
          k.sent += 1
          if (phase === 'measure') {
            k.sent_in_window += 1
            sendLatency.push(now() - t)
          }
        } catch (error) {
          bump(k.send_errors, String(error.message).slice(0, 80))
          await sleep(10)
        }
      }
    }
    log(`cluster: pg-boss 10: ${cfg.senders} senders, ${cfg.receivers} workers (batchSize ${cfg.bossBatch}, polling 0.5 s), ${cfg.warmupMs / 1000} s warm-up + ${cfg.durationMs / 1000} s measured…`)
    const cpu = cpuMeter([], pg)
    const loops = Array.from({ length: cfg.senders }, (_, s) => sender(s))
    await sleep(cfg.warmupMs)
    const stats = await pg.statementStats(url)
    cpu.start()
    const windowStart = now()
    phase = 'measure'
    await sleep(cfg.durationMs)
    phase = 'drain'
    const windowMs = now() - windowStart
    const usage = cpu.stop()
    const statementCount = stats ? await stats.total() : null
    await Promise.all(loops)
    const drained = await waitUntil(() => k.handled >= k.sent, cfg.drainMs, 20)
    phase = 'done'
    // pg-boss completes a batch after the handler returns (not awaited by its worker loop): give it a moment, then check the table.
    const client = new (await import('pg')).default.Client({ connectionString: url })
    await client.connect()
    let states = {}
    try {
      for (let attempt = 0; attempt < 50; attempt += 1) {
        const { rows } = await client.query('SELECT state, count(*)::int AS n FROM pgboss.job WHERE name = $1 GROUP BY state', [QUEUE])
        states = Object.fromEntries(rows.map((r) => [r.state, r.n]))
        if ((states.completed ?? 0) >= k.sent) break
        await sleep(100)
      }
    } finally {
      await client.end()
    }
    const problems = []
    if (!drained) problems.push(`${k.sent - k.handled} jobs not handled after the drain`)
    if ((states.completed ?? 0) !== k.sent) problems.push(`pgboss.job states ${JSON.stringify(states)} for ${k.sent} sent`)
    if (Object.keys(k.send_errors).length) problems.push(`send errors ${JSON.stringify(k.send_errors)}`)
    if (Object.keys(errors).length) problems.push(`pg-boss errors ${JSON.stringify(errors)}`)
    return {
      jobs_per_s: Math.round((k.handled_in_window * 1000) / windowMs),
      sends_per_s: Math.round((k.sent_in_window * 1000) / windowMs),
      send_ms: summarize(sendLatency),
      e2e_ms: summarize(e2eLatency),
      counters: k,
      job_states: states,
      per_second: Array.from(perSecond, (v) => v ?? 0),
      cpu: usage,
      postgres_cpu_us_per_job: k.handled_in_window && usage.postgres_cpu_us !== null ? Math.round(usage.postgres_cpu_us / k.handled_in_window) : null,
      statements_per_job: k.handled_in_window && statementCount !== null ? Math.round((statementCount / k.handled_in_window) * 10) / 10 : null,
      window_ms: Math.round(windowMs),
      problems,
    }
  } finally {
    await consumer.stop({ graceful: false, wait: true, timeout: 5_000 }).catch(() => undefined)
    await producer.stop({ graceful: false, wait: true, timeout: 5_000 }).catch(() => undefined)
  }
}

// ---- run -----------------------------------------------------------------------------------------

export async function run(opts) {
  const quick = Boolean(opts.quick)
  const log = opts.log ?? (() => {})
  const bin = findPostgresBin()
  if (!bin) throw new Error('PostgreSQL is not installed (Debian: apt-get install -y postgresql); the cluster benchmark needs its binaries')
  const durability = opts['sqlite-durability'] ?? 'normal'
  if (durability !== 'normal' && durability !== 'full') throw new Error('--sqlite-durability must be normal or full')
  const cfg = {
    replicas: Math.round(num(opts.replicas, 3, 'replicas')),
    senders: Math.round(num(opts.senders, 8, 'senders')),
    receivers: Math.round(num(opts.receivers, 4, 'receivers')),
    durationMs: num(opts.duration, quick ? 2 : 10, 'duration') * 1000,
    warmupMs: num(opts.warmup, quick ? 1 : 2, 'warmup') * 1000,
    drainMs: quick ? 5_000 : 15_000,
    maxOutstanding: Math.round(num(opts['max-outstanding'], 256, 'max-outstanding')),
    cycles: Math.round(num(opts.cycles, quick ? 5 : 30, 'cycles')),
    killWarmupMs: quick ? 500 : 1_000,
    acceptMs: quick ? 1_000 : 5_000,
    bossBatch: Math.round(num(opts['boss-batch'], 500, 'boss-batch')),
    sqliteDurability: durability,
    pgboss: !opts['no-pgboss'],
    profile: Boolean(opts.profile),
    server: opts.server ? resolve(opts.server) : undefined,
    resultsDir: opts.resultsDir,
    stamp: opts.stamp,
  }
  log(`cluster: starting a throwaway PostgreSQL (${bin}, fsync on)…`)
  const pg = await startPostgres(bin, { statementStats: !opts['no-pg-stats'] })
  const scenarios = []
  try {
    // 1. Single node on SQLite.
    {
      const gw = await startGateways({ n: 1, databaseUrl: null, durability: durability === 'full' ? 'full' : undefined, serverEntry: cfg.server })
      try {
        const tp = await throughput(gw, null, cfg, 'SQLite, 1 gateway', log)
        const kill = await killCycles(gw, cfg, 'SQLite, 1 gateway', log)
        const accept = [await acceptOnly(gw, cfg, 1, 'SQLite, 1 gateway', log), await acceptOnly(gw, cfg, cfg.senders, 'SQLite, 1 gateway', log)]
        scenarios.push({ key: 'sqlite', scenario: `Chokepoint, SQLite, 1 gateway (durability ${durability})`, throughput: tp, kill, accept })
      } finally {
        await gw.stop()
      }
    }
    // 2. The cluster: N replicas on one PostgreSQL database, started together.
    {
      const db = await pg.createDatabase('bench_cluster')
      const startAt = now()
      const gw = await startGateways({ n: cfg.replicas, databaseUrl: db, serverEntry: cfg.server })
      const startMs = Math.round(now() - startAt)
      try {
        const tp = await throughput(gw, pg, cfg, `PostgreSQL, ${cfg.replicas} replicas`, log, db)
        const kill = await killCycles(gw, cfg, `PostgreSQL, ${cfg.replicas} replicas`, log)
        const label = `PostgreSQL, ${cfg.replicas} replicas`
        const accept = [await acceptOnly(gw, cfg, 1, label, log), await acceptOnly(gw, cfg, cfg.senders, label, log)]
        scenarios.push({ key: 'pg', scenario: `Chokepoint, PostgreSQL, ${cfg.replicas} replicas`, throughput: tp, kill, accept, replicas_started_together_ms: startMs })
      } finally {
        await gw.stop()
      }
    }
    // 3. One replica on PostgreSQL (throughput only).
    if (cfg.replicas > 1) {
      const db = await pg.createDatabase('bench_single')
      const gw = await startGateways({ n: 1, databaseUrl: db, serverEntry: cfg.server })
      try {
        const tp = await throughput(gw, pg, cfg, 'PostgreSQL, 1 replica', log, db)
        scenarios.push({ key: 'pg1', scenario: 'Chokepoint, PostgreSQL, 1 replica', throughput: tp, kill: null })
      } finally {
        await gw.stop()
      }
    }
  } catch (error) {
    await pg.stop()
    throw error
  }
  let boss = { skipped: 'skipped (--no-pgboss)' }
  try {
    if (cfg.pgboss) boss = await pgBossPart(pg, cfg, log)
  } finally {
    await pg.stop()
  }

  const by = Object.fromEntries(scenarios.map((s) => [s.key, s]))
  const sq = by.sqlite
  const pgs = by.pg
  const bossOk = boss && !boss.skipped
  const ratios = {
    pg_vs_sqlite_intents_per_s: ratio(pgs?.throughput.intents_per_s, sq?.throughput.intents_per_s),
    pg_vs_sqlite_first_403_p50: ratio(pgs?.kill?.stats.first_403_ms.p50, sq?.kill?.stats.first_403_ms.p50),
    pg_vs_sqlite_first_403_p99: ratio(pgs?.kill?.stats.first_403_ms.p99, sq?.kill?.stats.first_403_ms.p99),
    pg_vs_sqlite_streams_closed_p50: ratio(pgs?.kill?.stats.streams_closed_ms.p50, sq?.kill?.stats.streams_closed_ms.p50),
    pg_vs_sqlite_streams_closed_p99: ratio(pgs?.kill?.stats.streams_closed_ms.p99, sq?.kill?.stats.streams_closed_ms.p99),
    // Streams are usually closed before the kill call returns (0 ms above): compare from the kill request instead.
    pg_vs_sqlite_kill_sent_to_closed_p50: ratio(pgs?.kill?.stats.streams_closed_from_kill_sent_ms.p50, sq?.kill?.stats.streams_closed_from_kill_sent_ms.p50),
    pg_vs_sqlite_kill_sent_to_closed_p99: ratio(pgs?.kill?.stats.streams_closed_from_kill_sent_ms.p99, sq?.kill?.stats.streams_closed_from_kill_sent_ms.p99),
    pg_vs_sqlite_kill_call_p50: ratio(pgs?.kill?.stats.kill_call_ms.p50, sq?.kill?.stats.kill_call_ms.p50),
    pg_replicas_vs_one_replica_intents_per_s: ratio(pgs?.throughput.intents_per_s, by.pg1?.throughput.intents_per_s),
    pg_vs_pgboss_per_s: bossOk ? ratio(pgs?.throughput.intents_per_s, boss.jobs_per_s) : null,
    pg_vs_pgboss_send_p50: bossOk ? ratio(pgs?.throughput.send_ms.p50, boss.send_ms.p50) : null,
    pg_vs_pgboss_send_p99: bossOk ? ratio(pgs?.throughput.send_ms.p99, boss.send_ms.p99) : null,
    pg_vs_pgboss_e2e_p50: bossOk ? ratio(pgs?.throughput.e2e_ms.p50, boss.e2e_ms.p50) : null,
    pg_accept_many_pairs_vs_one: ratio(pgs?.accept?.[1].accepted_per_s, pgs?.accept?.[0].accepted_per_s),
    sqlite_accept_many_pairs_vs_one: ratio(sq?.accept?.[1].accepted_per_s, sq?.accept?.[0].accepted_per_s),
    pg_vs_pgboss_accept_many_pairs_vs_sends: bossOk ? ratio(pgs?.accept?.[1].accepted_per_s, boss.sends_per_s) : null,
  }

  const rows = scenarios.map((s) => ({
    scenario: s.scenario,
    ips: fmt.int(s.throughput.intents_per_s),
    s50: fmt.ms(s.throughput.send_ms.p50),
    s99: fmt.ms(s.throughput.send_ms.p99),
    e50: fmt.ms(s.throughput.e2e_ms.p50),
    e99: fmt.ms(s.throughput.e2e_ms.p99),
    kcall: s.kill ? `${fmt.ms(s.kill.stats.kill_call_ms.p50)} / ${fmt.ms(s.kill.stats.kill_call_ms.p99)}` : '',
    k403: s.kill ? `${fmt.ms(s.kill.stats.first_403_ms.p50)} / ${fmt.ms(s.kill.stats.first_403_ms.p99)}` : '',
    kcut: s.kill ? `${fmt.ms(s.kill.stats.streams_closed_ms.p50)} / ${fmt.ms(s.kill.stats.streams_closed_ms.p99)}` : '',
    ksent: s.kill ? `${fmt.ms(s.kill.stats.streams_closed_from_kill_sent_ms.p50)} / ${fmt.ms(s.kill.stats.streams_closed_from_kill_sent_ms.p99)}` : '',
    vsq: fmt.ratio(ratio(s.throughput.intents_per_s, sq?.throughput.intents_per_s)),
    vboss: bossOk ? fmt.ratio(ratio(s.throughput.intents_per_s, boss.jobs_per_s)) : '–',
    cpi: fmt.int(s.throughput.server_cpu_us_per_intent),
    gcpi: fmt.int(s.throughput.gateway_cpu_us_per_intent),
    pcpi: s.throughput.postgres_cpu_us_per_intent === null ? '–' : fmt.int(s.throughput.postgres_cpu_us_per_intent),
    spi: s.throughput.statements_per_intent === null ? '–' : String(s.throughput.statements_per_intent),
  }))
  if (bossOk) {
    rows.push({
      scenario: `pg-boss 10 (batchSize ${cfg.bossBatch}, polling 0.5 s)`,
      ips: fmt.int(boss.jobs_per_s),
      s50: fmt.ms(boss.send_ms.p50),
      s99: fmt.ms(boss.send_ms.p99),
      e50: fmt.ms(boss.e2e_ms.p50),
      e99: fmt.ms(boss.e2e_ms.p99),
      kcall: 'n/a',
      k403: 'n/a',
      kcut: 'n/a',
      ksent: 'n/a',
      vsq: fmt.ratio(ratio(boss.jobs_per_s, sq?.throughput.intents_per_s)),
      vboss: '1.00×',
      cpi: `${fmt.int(boss.postgres_cpu_us_per_job)} (PG only)`,
      gcpi: 'n/a',
      pcpi: fmt.int(boss.postgres_cpu_us_per_job),
      spi: boss.statements_per_job === null ? '–' : String(boss.statements_per_job),
    })
  }

  const problems = [
    ...scenarios.flatMap((s) => [...s.throughput.problems, ...(s.kill?.problems ?? [])].map((p) => `${s.scenario}: ${p}`)),
    ...scenarios.flatMap((s) => (s.accept ?? []).flatMap((a) => a.problems).map((p) => `${s.scenario}: ${p}`)),
    ...(bossOk ? boss.problems.map((p) => `pg-boss: ${p}`) : []),
  ]
  const notes = []
  notes.push(`PostgreSQL ${bin.split('/').at(-2)} throwaway cluster on this machine's disk: fsync=on, synchronous_commit=on, full_page_writes=on, shared_buffers=128MB (every commit waits for its WAL flush); each scenario on a fresh database.`)
  notes.push(`SQLite gateway: durability ${durability} (${durability === 'normal' ? 'WAL, synchronous=NORMAL: survives kill -9, not power loss; no fsync per commit' : 'synchronous=FULL: fsync per commit'}).`)
  for (const s of scenarios) {
    const t = s.throughput
    notes.push(
      `${s.scenario}: ${fmt.int(t.intents_per_s)} intents/s (created ${t.counters.created}, resolved ${t.counters.resolved}, missing ${t.counters.missing}, duplicates ${t.counters.duplicate_deliveries}); ` +
        `CPU gateways ${fmt.pct(t.cpu.gateways_cpu_pct)}${t.cpu.postgres_cpu_pct === null ? '' : `, PostgreSQL ${fmt.pct(t.cpu.postgres_cpu_pct)}`}, load generator ${fmt.pct(t.cpu.loadgen_cpu_pct)} of one core; CPU pressure ${fmt.pct(t.cpu.cpu_pressure_pct)}` +
        (s.replicas_started_together_ms !== undefined ? `; ${cfg.replicas} replicas started together on an empty database in ${s.replicas_started_together_ms} ms (migrations raced, one applied them)` : ''),
    )
    if (s.kill) {
      const k = s.kill.stats
      notes.push(
        `  kill cycles (${s.kill.cycles}): kill call p50 ${fmt.ms(k.kill_call_ms.p50)} / p99 ${fmt.ms(k.kill_call_ms.p99)} ms; first 403 after the kill returned p50 ${fmt.ms(k.first_403_ms.p50)} / p99 ${fmt.ms(k.first_403_ms.p99)} ms; ` +
          `all 4 streams closed p50 ${fmt.ms(k.streams_closed_ms.p50)} / p99 ${fmt.ms(k.streams_closed_ms.p99)} ms (closed before the kill returned in ${s.kill.streams_closed_before_kill_returned}/${s.kill.cycles}); ` +
          `first delivery after resume p50 ${fmt.ms(k.first_delivery_after_resume_ms.p50)} ms; sends ${JSON.stringify(s.kill.counters.sends)}; audit ${s.kill.audit.valid ? 'valid' : 'BROKEN'} (${s.kill.audit.entries} entries)`,
      )
    }
  }
  for (const s of scenarios.filter((x) => x.accept)) {
    const [one, many] = s.accept
    notes.push(
      `${s.scenario}, accept only (no receivers): ${cfg.senders} senders as one agent → one recipient ${fmt.int(one.accepted_per_s)}/s (p50 ${fmt.ms(one.send_ms.p50)} / p99 ${fmt.ms(one.send_ms.p99)} ms); ` +
        `as ${many.pairs} agents → ${many.pairs} recipients ${fmt.int(many.accepted_per_s)}/s (p50 ${fmt.ms(many.send_ms.p50)} / p99 ${fmt.ms(many.send_ms.p99)} ms): ${fmt.ratio(ratio(many.accepted_per_s, one.accepted_per_s))}`,
    )
  }
  const top = by.pg?.throughput.pg_statements
  if (top?.length) {
    notes.push(`top statements of the ${cfg.replicas}-replica window (pg_stat_statements; calls per resolved intent, total ms, mean ms):`)
    for (const st of top.slice(0, 12)) notes.push(`  ${String(st.calls_per_intent).padStart(6)}/intent ${String(st.total_ms).padStart(9)} ms ${String(st.mean_ms).padStart(8)} ms  ${st.query}`)
  }
  for (const s of scenarios) {
    const profiles = s.throughput.profiles
    if (!profiles?.length) continue
    const intents = s.throughput.counters.resolved_in_window
    const busy = profiles.reduce((n, p) => n + p.busy_samples, 0)
    // Samples are 1 ms apart: busy samples × 1000 µs ÷ intents ≈ the gateways' JS-visible CPU per intent.
    notes.push(`${s.scenario}: CPU profiles of ${profiles.length} gateway(s), ${busy} busy samples in all (≈ ${intents ? Math.round((busy * 1000) / intents) : '–'} µs per intent); self time by category, all gateways:`)
    const cats = new Map()
    for (const p of profiles) for (const c of p.categories) cats.set(c.category, (cats.get(c.category) ?? 0) + c.samples)
    for (const [cat, n] of [...cats].sort((a, b) => b[1] - a[1]).slice(0, 12)) {
      notes.push(`    ${String(Math.round((n * 1000) / busy) / 10).padStart(5)} %  ${String(intents ? Math.round((n * 1000) / intents) : '–').padStart(5)} µs/intent  ${cat}`)
    }
    notes.push(`  top self-time functions (replica 0, ${profiles[0].file}):`)
    for (const f of profiles[0].top_self.slice(0, 12)) notes.push(`    ${String(f.pct).padStart(5)} %  ${f.function}  ${f.location}`)
  }
  if (bossOk) {
    notes.push(
      `pg-boss 10: ${fmt.int(boss.jobs_per_s)} jobs/s handled, ${fmt.int(boss.sends_per_s)} sends/s; send p50 ${fmt.ms(boss.send_ms.p50)} / p99 ${fmt.ms(boss.send_ms.p99)} ms; send → handler p50 ${fmt.ms(boss.e2e_ms.p50)} / p99 ${fmt.ms(boss.e2e_ms.p99)} ms (workers poll every 0.5 s); ` +
        `job states after the drain ${JSON.stringify(boss.job_states)}; PostgreSQL ${fmt.pct(boss.cpu.postgres_cpu_pct)}, client process ${fmt.pct(boss.cpu.loadgen_cpu_pct)} of one core; CPU pressure ${fmt.pct(boss.cpu.cpu_pressure_pct)}. ` +
        'It has no kill switch, auth, policies or audit: a baseline for moving a durable job through PostgreSQL.',
    )
  } else notes.push(`pg-boss baseline: ${boss.skipped}`)
  const r = ratios
  notes.push(
    `ratios (same run): ${cfg.replicas} PG replicas ÷ SQLite: intents/s ${fmt.ratio(r.pg_vs_sqlite_intents_per_s)}, first 403 p50/p99 ${fmt.ratio(r.pg_vs_sqlite_first_403_p50)} / ${fmt.ratio(r.pg_vs_sqlite_first_403_p99)}, ` +
      `kill call p50 ${fmt.ratio(r.pg_vs_sqlite_kill_call_p50)}, kill sent → streams closed p50/p99 ${fmt.ratio(r.pg_vs_sqlite_kill_sent_to_closed_p50)} / ${fmt.ratio(r.pg_vs_sqlite_kill_sent_to_closed_p99)} ` +
      `(kill returned → streams closed is 0 ms on both in most cycles); ${cfg.replicas} replicas ÷ 1 replica (PG): ${fmt.ratio(r.pg_replicas_vs_one_replica_intents_per_s)}; ` +
      `Chokepoint on PG ÷ pg-boss: per second ${fmt.ratio(r.pg_vs_pgboss_per_s)}, send p50/p99 ${fmt.ratio(r.pg_vs_pgboss_send_p50)} / ${fmt.ratio(r.pg_vs_pgboss_send_p99)}, end-to-end p50 ${fmt.ratio(r.pg_vs_pgboss_e2e_p50)}; ` +
      `accept only, ${cfg.senders} pairs ÷ 1 pair: PG ${fmt.ratio(r.pg_accept_many_pairs_vs_one)}, SQLite ${fmt.ratio(r.sqlite_accept_many_pairs_vs_one)}; PG accepts (${cfg.senders} pairs) ÷ pg-boss sends ${fmt.ratio(r.pg_vs_pgboss_accept_many_pairs_vs_sends)}`,
  )
  notes.push(
    `goals: ${cfg.replicas} PG replicas ≥ 0.7× pg-boss: ${fmt.ratio(r.pg_vs_pgboss_per_s)} (${r.pg_vs_pgboss_per_s !== null && r.pg_vs_pgboss_per_s >= 0.7 ? 'met' : 'not met'}); ` +
      `${cfg.replicas} replicas ≥ 1 replica: ${fmt.ratio(r.pg_replicas_vs_one_replica_intents_per_s)} (${r.pg_replicas_vs_one_replica_intents_per_s !== null && r.pg_replicas_vs_one_replica_intents_per_s >= 1 ? 'met' : 'not met'}); ` +
      `kill call p99 < 50 ms on PG: ${fmt.ms(pgs?.kill?.stats.kill_call_ms.p99)} ms (${(pgs?.kill?.stats.kill_call_ms.p99 ?? Infinity) < 50 ? 'met' : 'not met'})`,
  )
  notes.push('Machine note: 2 cores shared by PostgreSQL, every gateway process and the load generator; replicas cannot add CPU here, they show the cost of coordination through PostgreSQL.')
  notes.push(problems.length ? `PROBLEMS (${problems.length}): ${problems.slice(0, 20).join('; ')}` : 'correctness: no lost or duplicate intents; no send accepted after a kill returned; nothing leased to a killed agent; every victim stream got agent.killed; pg-boss completed every job')

  return {
    benchmark: 'cluster',
    description,
    config: { ...cfg, quick, postgres_bin: bin, postgres_settings: { fsync: 'on', synchronous_commit: 'on', full_page_writes: 'on', shared_buffers: '128MB', max_connections: 300 } },
    ok: problems.length === 0,
    ratios,
    table: {
      columns: [
        { key: 'scenario', title: 'scenario', align: 'left' },
        { key: 'ips', title: 'intents|jobs/s' },
        { key: 's50', title: 'send p50 ms' },
        { key: 's99', title: 'send p99 ms' },
        { key: 'e50', title: 'e2e p50 ms' },
        { key: 'e99', title: 'e2e p99 ms' },
        { key: 'kcall', title: 'kill call p50/p99 ms' },
        { key: 'k403', title: 'kill returned→403 p50/p99' },
        { key: 'kcut', title: 'kill returned→streams closed p50/p99' },
        { key: 'ksent', title: 'kill sent→streams closed p50/p99' },
        { key: 'vsq', title: '/s vs SQLite' },
        { key: 'vboss', title: '/s vs pg-boss' },
        { key: 'cpi', title: 'server CPU µs/intent' },
        { key: 'gcpi', title: 'gateway CPU µs/intent' },
        { key: 'pcpi', title: 'PG CPU µs/intent' },
        { key: 'spi', title: 'PG statements/intent' },
      ],
      rows,
    },
    notes,
    scenarios,
    pgboss: boss,
    problems,
  }
}
