// Kill switch benchmark (DESIGN §2.1, §5b, §5c): how fast a kill takes hold under load, and
// how fast work flows again after a resume, over many kill/resume cycles.
//
// Chokepoint: the built gateway in a child process on a fresh SQLite data directory. The victim
// agent (agent://bench/kill/deploy-bot) runs 4 instances, each with a persistent inbox stream
// that resolves every delivery at once. 8 closed-loop keep-alive senders run throughout:
// 4 send to the victim, 4 send as the victim to agent://bench/kill/other (whose 2 streams
// resolve them, so the victim's undelivered output stays small). Each cycle: steady traffic for
// 250–500 ms, kill, wait until the kill has fully taken hold, resume, reconnect the 4 streams,
// wait for the first delivery. Per cycle:
//   (a) kill call latency (POST …/kill sent → response ended), split into the gateway's own time
//       (the growth of its chokepoint_kill_enforcement_seconds sum, read from /metrics after each
//       cycle) and the rest (waiting for the event loop, network)
//   (b) kill returned → first 403 agent_killed answered to a sender (first one ending after the return)
//   (c) kill returned → all 4 victim streams closed (agent.killed frame, or end of the response);
//       0 when they were all closed before the kill call returned (counted separately)
//   (d) resume returned → first intent.delivered frame on a reconnected victim stream
// Correctness per cycle: no send that started after the kill returned is answered 200 (checked
// by the client clock against the resume request, and by the server's created_at against its
// resumed_at), and no intent is leased to the victim after the kill committed (a delivery's
// server time, lease_expires_at − lease, against killed_at).
//
// Baseline, same run: the do-it-yourself kill switch, a Redis flag polled every 1 s. A private
// redis-server (Debian's binary; the part is skipped if it is missing) and 4 "agent instances"
// (in-process loops, each with its own connection and a random phase) that GET kill:deploy-bot
// every 1000 ms and stop when it is set. Per cycle: SET returned → all 4 stopped (and → the
// first one stopped). (b) and (c) are reported as ratios to the flag's all-stopped latency.
import http from 'node:http'
import { startRedis, findRedisServer } from './lib/redis.mjs'
import { connectRedis } from './lib/resp.mjs'
import { startGateway, api } from './lib/gateway.mjs'
import { httpRequest } from './lib/load.mjs'
import { cpuWindow } from './lib/procstat.mjs'
import { summarize, fmt } from './lib/stats.mjs'
import { now, sleep, bump, num, waitUntil } from './lib/util.mjs'

export const description =
  'kill switch under load: kill call, first 403, all 4 streams cut, first delivery after resume (100 cycles) vs a Redis flag polled every 1 s'

export const options = {
  cycles: { type: 'string', help: 'kill/resume cycles (default 100; --quick: 10)' },
  'no-redis': { type: 'boolean', help: 'skip the Redis-flag baseline' },
}

const VICTIM = 'agent://bench/kill/deploy-bot'
const SENDER = 'agent://bench/kill/sender'
const OTHER = 'agent://bench/kill/other'
const VICTIM_STREAM = '/v1/agents/bench/kill/deploy-bot/intents/stream'
const OTHER_STREAM = '/v1/agents/bench/kill/other/intents/stream'
const REDIS_KEY = 'kill:deploy-bot'
const LEASE_S = 30
const POLL_MS = 1000
const TARGET_B_P99_MS = 10
const TARGET_C_P99_MS = 100
/** How long a kill may take to show before the cycle counts as failed. */
const HOLD_TIMEOUT_MS = 3_000
/** The victim stays killed at least this long, so the senders keep testing the kill. */
const KILLED_MIN_MS = 100
/** Above this share of the run with a task waiting for a CPU, the numbers are flagged. */
const BUSY_PRESSURE_PCT = 40

const round3 = (v) => (v === null ? null : Math.round(v * 1000) / 1000)



// ---- inbox streams ------------------------------------------------------------------------------

/**
 * One persistent inbox stream of one instance. `connect()` resolves once the 200 arrived.
 * Hooks: onDelivered(stream, frame, t), onKilledFrame(stream, t), onEnd(stream, t).
 */
export function inboxStream({ base, key, path, instanceId, hooks }) {
  const agent = new http.Agent({ keepAlive: false })
  const s = {
    instanceId,
    lastSeq: 0,
    open: false,
    req: null,
    endedAt: null,
    killedFrameAt: null,
    closedByUs: false,
    connect() {
      s.open = false
      s.endedAt = null
      s.killedFrameAt = null
      // Events of an earlier response of this instance (a late 'close') must not touch this one.
      const conn = {}
      s.conn = conn
      return new Promise((resolve, reject) => {
        const query = `?lease_seconds=${LEASE_S}${s.lastSeq > 0 ? `&since=${s.lastSeq}` : ''}`
        const req = http.request({
          host: base.hostname,
          port: base.port,
          method: 'GET',
          path: `${path}${query}`,
          agent,
          headers: { 'x-api-key': key, 'x-instance-id': instanceId, accept: 'text/event-stream' },
        })
        s.req = req
        let settled = false
        const finish = () => {
          if (s.conn !== conn || s.endedAt !== null) return
          s.endedAt = now()
          s.open = false
          hooks.onEnd?.(s, s.endedAt)
        }
        req.on('response', (res) => {
          if (res.statusCode !== 200) {
            let text = ''
            res.setEncoding('utf8')
            res.on('data', (c) => (text += c))
            res.on('end', () => {
              settled = true
              reject(new Error(`${instanceId}: HTTP ${res.statusCode} ${text.slice(0, 200)}`))
            })
            return
          }
          s.open = true
          settled = true
          resolve()
          let buf = ''
          res.setEncoding('utf8')
          res.on('data', (chunk) => {
            const t = now()
            if (s.conn !== conn) return
            buf += chunk
            let cut
            while ((cut = buf.indexOf('\n\n')) !== -1) {
              const block = buf.slice(0, cut)
              buf = buf.slice(cut + 2)
              onBlock(block, t)
            }
          })
          res.on('end', finish)
          res.on('close', finish)
          res.on('error', finish)
        })
        req.on('error', (error) => {
          if (!settled) {
            settled = true
            reject(error)
          } else finish()
        })
        req.end()
      })
    },
    close() {
      s.closedByUs = true
      s.req?.destroy()
      agent.destroy()
    },
  }
  function onBlock(block, t) {
    if (block.startsWith(':')) return
    let event = 'message'
    let data = ''
    for (const line of block.split('\n')) {
      if (line.startsWith('data: ')) data += line.slice(6)
      else if (line.startsWith('event: ')) event = line.slice(7)
      else if (line.startsWith('id: ')) {
        const id = Number(line.slice(4))
        if (id > s.lastSeq) s.lastSeq = id
      }
    }
    if (event === 'intent.delivered') hooks.onDelivered?.(s, JSON.parse(data), t)
    else if (event === 'agent.killed') {
      if (s.killedFrameAt === null) s.killedFrameAt = t
      hooks.onKilledFrame?.(s, t)
    } else hooks.onOtherFrame?.(s, event)
  }
  return s
}

// ---- the gateway part -----------------------------------------------------------------------------

async function gatewayPart(cfg, log) {
  const gw = await startGateway()
  const base = new URL(gw.url)
  const agents = []
  const mkAgent = (opts) => {
    const a = new http.Agent({ keepAlive: true, ...opts })
    agents.push(a)
    return a
  }
  const streams = []
  let running = true
  try {
    const mk = (agent, name) => api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent, name })
    const victim = await mk(VICTIM, 'bench victim')
    const sender = await mk(SENDER, 'bench sender')
    const other = await mk(OTHER, 'bench other')
    const victimId = victim.address_id

    const c = {
      sends: { to_victim: {}, from_victim: {} },
      accepted_in_steady: 0,
      steady_ms: 0,
      resolves: {},
      other_resolves: {},
      stream_errors: {},
      unexpected_frames: {},
      delivered_to_victim: 0,
    }
    const problems = []
    let cur = null // the current cycle
    let steadyFrom = null

    // --- receivers: the victim's 4 instances and the other agent's 2 ---
    const resolveAgents = new Map()
    const resolve = (key, instanceId, intentId, tally) => {
      let agent = resolveAgents.get(instanceId)
      if (!agent) {
        agent = mkAgent({ maxSockets: 4 })
        resolveAgents.set(instanceId, agent)
      }
      httpRequest(
        agent,
        base,
        'POST',
        `/v1/intents/${intentId}/resolve`,
        { 'content-type': 'application/json', 'x-api-key': key, 'x-instance-id': instanceId },
        '{"status":"COMPLETED"}',
      ).then(
        (res) => {
          if (res.status === 403 && res.text.includes('agent_killed')) bump(tally, '403 agent_killed')
          else bump(tally, res.status)
        },
        (error) => bump(tally, error.code ?? 'error'),
      )
    }
    const victimHooks = {
      onDelivered: (s, frame, t) => {
        c.delivered_to_victim += 1
        const cyc = cur
        if (cyc) {
          // Server time of this lease: lease_expires_at − lease. None may follow the kill's commit.
          if (cyc.killStartAt !== null && cyc.firstDeliveryAt === null) cyc.leaseTimes.push(Date.parse(frame.lease_expires_at) - LEASE_S * 1000)
          if (cyc.killReturnAt !== null && cyc.resumeStartAt === null && t > cyc.killReturnAt) cyc.framesAfterKillReturn += 1
          if (cyc.resumeReturnAt !== null && cyc.firstDeliveryAt === null && t >= cyc.resumeReturnAt) cyc.firstDeliveryAt = t
        }
        resolve(victim.key, s.instanceId, frame.intent_id, c.resolves)
      },
      onOtherFrame: (_s, event) => bump(c.unexpected_frames, event),
      onEnd: (s) => {
        if (s.closedByUs) return
        const cyc = cur
        // Ended outside a kill: a real client reconnects (counted, and a problem).
        if (!cyc || cyc.killStartAt === null || cyc.resumeStartAt !== null) {
          bump(c.stream_errors, 'victim stream ended without a kill')
          setTimeout(() => {
            if (!s.closedByUs && !s.open) s.connect().catch((e) => bump(c.stream_errors, `reconnect: ${e.message.slice(0, 80)}`))
          }, 50)
        }
      },
    }
    const otherHooks = {
      onDelivered: (s, frame) => resolve(other.key, s.instanceId, frame.intent_id, c.other_resolves),
      onOtherFrame: (_s, event) => bump(c.unexpected_frames, `other: ${event}`),
      onEnd: (s) => {
        if (s.closedByUs) return
        bump(c.stream_errors, 'other stream ended')
        setTimeout(() => {
          if (!s.closedByUs) s.connect().catch((e) => bump(c.stream_errors, `reconnect: ${e.message.slice(0, 80)}`))
        }, 50)
      },
    }
    const victimStreams = [0, 1, 2, 3].map((i) =>
      inboxStream({ base, key: victim.key, path: VICTIM_STREAM, instanceId: `deploy-bot-${i}`, hooks: victimHooks }),
    )
    const otherStreams = [0, 1].map((i) =>
      inboxStream({ base, key: other.key, path: OTHER_STREAM, instanceId: `other-${i}`, hooks: otherHooks }),
    )
    streams.push(...victimStreams, ...otherStreams)
    await Promise.all(streams.map((s) => s.connect()))

    // --- senders: 4 → victim, 4 as the victim → other ---
    const sendAgent = mkAgent({ maxSockets: 8 })
    const onSendResult = (dir, startCycle, t, end, status, text) => {
      const tally = c.sends[dir]
      if (status === 200) {
        bump(tally, 200)
        if (steadyFrom !== null) c.accepted_in_steady += 1
        if (startCycle && startCycle.killReturnAt !== null && t >= startCycle.killReturnAt) {
          let createdAt = null
          try {
            createdAt = Date.parse(JSON.parse(text).created_at)
          } catch {
            // counted below without a server time
          }
          startCycle.acceptedAfterKill.push({ dir, t, end, createdAt })
        }
        return
      }
      if (status === 403 && text.includes('"agent_killed"')) {
        bump(tally, '403 agent_killed')
        const cyc = cur
        if (cyc && cyc.killStartAt !== null && cyc.first403Any === null && end >= cyc.killStartAt) cyc.first403Any = end
        if (cyc && cyc.killReturnAt !== null && end >= cyc.killReturnAt && cyc.first403After === null) cyc.first403After = end
        return
      }
      bump(tally, `${status} ${text.slice(0, 60)}`)
    }
    const senderLoop = async (dir, key, to, n) => {
      const headers = { 'content-type': 'application/json', 'x-api-key': key }
      let k = 0
      while (running) {
        k += 1
        const body = JSON.stringify({ intent_type: 'deploy.service.v1', to_agent: to, payload: { n, k } })
        const startCycle = cur
        const t = now()
        try {
          const res = await httpRequest(sendAgent, base, 'POST', '/v1/intents', headers, body)
          onSendResult(dir, startCycle, t, now(), res.status, res.text)
        } catch (error) {
          bump(c.sends[dir], error.code ?? 'error')
          await sleep(5)
        }
      }
    }
    const senderLoops = [
      ...[0, 1, 2, 3].map((n) => senderLoop('to_victim', sender.key, VICTIM, n)),
      ...[0, 1, 2, 3].map((n) => senderLoop('from_victim', victim.key, OTHER, n)),
    ]

    // --- warm-up, then the cycles ---
    const ctlAgent = mkAgent({ maxSockets: 1 })
    const ctlHeaders = { 'content-type': 'application/json', 'x-api-key': gw.adminKey }
    await sleep(cfg.warmupMs)
    const cpu = cpuWindow(gw.pid)
    cpu.start()
    const cycles = []
    let lastHistSum = (await killHistogram(gw.url))?.sum_ms ?? 0
    for (let i = 0; i < cfg.cycles; i += 1) {
      const cyc = {
        i,
        killStartAt: null,
        killReturnAt: null,
        killedAtMs: null,
        heldIntents: null,
        first403Any: null,
        first403After: null,
        resumeStartAt: null,
        resumeReturnAt: null,
        resumedAtMs: null,
        firstDeliveryAt: null,
        acceptedAfterKill: [],
        leaseTimes: [],
        framesAfterKillReturn: 0,
        problems: [],
      }
      cur = cyc
      // Steady traffic with all 4 victim streams open.
      const steadyStart = now()
      steadyFrom = steadyStart
      await sleep(250 + Math.random() * 250)
      if (!(await waitUntil(() => victimStreams.every((s) => s.open), 5_000))) cyc.problems.push('victim streams not all open before the kill')
      c.steady_ms += now() - steadyStart
      steadyFrom = null

      cyc.killStartAt = now()
      const kill = await httpRequest(ctlAgent, base, 'POST', `/v1/mesh/agents/${victimId}/kill`, ctlHeaders, JSON.stringify({ reason: `bench cycle ${i}` }))
      cyc.killReturnAt = now()
      if (kill.status !== 200) throw new Error(`kill: HTTP ${kill.status} ${kill.text.slice(0, 300)}`)
      const killed = JSON.parse(kill.text)
      cyc.killedAtMs = Date.parse(killed.killed_at)
      cyc.heldIntents = killed.held_intents

      const held = await waitUntil(
        () => victimStreams.every((s) => !s.open) && cyc.first403After !== null && now() - cyc.killReturnAt >= KILLED_MIN_MS,
        HOLD_TIMEOUT_MS,
      )
      if (!held) {
        const openNow = victimStreams.filter((s) => s.open).length
        if (openNow) cyc.problems.push(`${openNow} victim stream(s) still open ${HOLD_TIMEOUT_MS} ms after the kill returned`)
        if (cyc.first403After === null) cyc.problems.push(`no 403 agent_killed within ${HOLD_TIMEOUT_MS} ms after the kill returned`)
        for (const s of victimStreams) if (s.open) s.req.destroy()
      }
      cyc.streamsWithoutKilledFrame = victimStreams.filter((s) => s.killedFrameAt === null).length
      cyc.allClosedAt = Math.max(...victimStreams.map((s) => s.killedFrameAt ?? s.endedAt ?? Infinity))

      cyc.resumeStartAt = now()
      const resume = await httpRequest(ctlAgent, base, 'POST', `/v1/mesh/agents/${victimId}/resume`, ctlHeaders, JSON.stringify({ reason: `bench cycle ${i}` }))
      cyc.resumeReturnAt = now()
      if (resume.status !== 200) throw new Error(`resume: HTTP ${resume.status} ${resume.text.slice(0, 300)}`)
      const resumed = JSON.parse(resume.text)
      cyc.resumedAtMs = Date.parse(resumed.resumed_at)
      cyc.redelivering = resumed.redelivering
      // The instances reconnect (a killed agent's reconnect is refused, so they wait for the resume).
      try {
        await Promise.all(victimStreams.map((s) => s.connect()))
      } catch (error) {
        cyc.problems.push(`reconnect after resume failed: ${error.message.slice(0, 200)}`)
        await sleep(100)
        await Promise.all(victimStreams.filter((s) => !s.open).map((s) => s.connect()))
      }
      if (!(await waitUntil(() => cyc.firstDeliveryAt !== null, 5_000))) cyc.problems.push('no delivery within 5 s of the resume')
      cyc.deliveredToVictimSoFar = c.delivered_to_victim
      // The gateway's own time for this kill: the growth of its kill histogram's sum.
      const hist = await killHistogram(gw.url)
      cyc.serverKillMs = hist && lastHistSum !== null ? hist.sum_ms - lastHistSum : null
      lastHistSum = hist?.sum_ms ?? null
      cycles.push(cyc)
      if ((i + 1) % Math.max(1, Math.round(cfg.cycles / 10)) === 0 || i + 1 === cfg.cycles) {
        log(`kill: ${i + 1}/${cfg.cycles} cycles (last: kill ${fmt.ms(cyc.killReturnAt - cyc.killStartAt)} ms, ${cyc.heldIntents} held, ${cyc.redelivering} redelivering)`)
      }
    }
    // Let the senders' in-flight answers of the last cycle arrive before judging it.
    await sleep(50)
    const usage = cpu.stop()
    running = false
    await Promise.all(senderLoops)

    // --- per-cycle verdicts ---
    for (const cyc of cycles) {
      for (const a of cyc.acceptedAfterKill) {
        const clientCertain = a.end < cyc.resumeStartAt
        const serverBeforeResume = a.createdAt !== null && a.createdAt < cyc.resumedAtMs
        if (clientCertain || serverBeforeResume) {
          cyc.problems.push(
            `send ${a.dir} started ${fmt.ms(a.t - cyc.killReturnAt)} ms after the kill returned was accepted (200)` +
              (a.createdAt !== null ? `, created_at ${a.createdAt - cyc.killedAtMs} ms after killed_at` : ''),
          )
        }
      }
      cyc.leasedAfterKill = cyc.leaseTimes.filter((at) => at > cyc.killedAtMs && at < cyc.resumedAtMs).length
      if (cyc.leasedAfterKill > 0) cyc.problems.push(`${cyc.leasedAfterKill} deliveries leased to the victim after the kill committed`)
      if (cyc.streamsWithoutKilledFrame > 0) cyc.problems.push(`${cyc.streamsWithoutKilledFrame} stream(s) closed without the agent.killed frame`)
    }
    for (const cyc of cycles) for (const p of cyc.problems) problems.push(`cycle ${cyc.i}: ${p}`)
    for (const [dir, tally] of Object.entries(c.sends)) {
      const odd = Object.keys(tally).filter((k) => k !== '200' && k !== '403 agent_killed')
      if (odd.length) problems.push(`unexpected send answers (${dir}): ${JSON.stringify(Object.fromEntries(odd.map((k) => [k, tally[k]])))}`)
    }
    if (Object.keys(c.stream_errors).length) problems.push(`stream errors ${JSON.stringify(c.stream_errors)}`)
    if (Object.keys(c.unexpected_frames).length) problems.push(`unexpected frames ${JSON.stringify(c.unexpected_frames)}`)

    // Server side: every kill and resume audited, chain intact.
    const verify = await api(gw.url, gw.adminKey, 'GET', '/v1/audit/verify')
    let kills = 0
    let resumes = 0
    let after = 0
    for (;;) {
      const page = await api(gw.url, gw.adminKey, 'GET', `/v1/audit/events?limit=500&after_seq=${after}&action_prefix=agent.`)
      for (const e of page.entries) {
        if (e.action === 'agent.kill') kills += 1
        if (e.action === 'agent.resume') resumes += 1
      }
      if (page.entries.length < 500 || page.next_after_seq === null || page.next_after_seq === undefined) break
      after = page.next_after_seq
    }
    if (!verify.valid) problems.push(`audit chain broken at seq ${verify.first_broken_seq}`)
    if (kills !== cycles.length || resumes !== cycles.length) problems.push(`audit has ${kills} kills and ${resumes} resumes for ${cycles.length} cycles`)

    // Server side of (a): the gateway's own kill histogram (handler start → committed, streams cut, backlog held).
    const serverKill = await killHistogram(gw.url)

    const d = (a, b) => (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b) ? null : a - b)
    const series = {
      a_kill_call_ms: cycles.map((x) => x.killReturnAt - x.killStartAt),
      b_first_403_ms: cycles.map((x) => d(x.first403After, x.killReturnAt)).filter((v) => v !== null),
      c_streams_closed_ms: cycles.map((x) => d(x.allClosedAt, x.killReturnAt)).filter((v) => v !== null).map((v) => Math.max(0, v)),
      d_first_delivery_ms: cycles.map((x) => d(x.firstDeliveryAt, x.resumeReturnAt)).filter((v) => v !== null),
      // Context: from the start of the kill call (the client's whole view of "kill → stopped").
      first_403_from_kill_start_ms: cycles.map((x) => d(x.first403Any ?? x.first403After, x.killStartAt)).filter((v) => v !== null),
      streams_closed_from_kill_start_ms: cycles.map((x) => d(x.allClosedAt, x.killStartAt)).filter((v) => v !== null),
      resume_call_ms: cycles.map((x) => x.resumeReturnAt - x.resumeStartAt),
      // (a) split: the gateway's handler time (its histogram) and the rest (waiting for the event loop, network).
      a_server_ms: cycles.map((x) => x.serverKillMs).filter((v) => v !== null),
      a_waiting_ms: cycles.filter((x) => x.serverKillMs !== null).map((x) => x.killReturnAt - x.killStartAt - x.serverKillMs),
    }
    // (a) as the victim's history grows: the first and the last tenth of the cycles.
    const tenth = Math.max(1, Math.floor(cycles.length / 10))
    const trend = [cycles.slice(0, tenth), cycles.slice(-tenth)].map((part) => ({
      cycles: `${part[0].i + 1}–${part[part.length - 1].i + 1}`,
      kill_call_p50_ms: summarize(part.map((x) => x.killReturnAt - x.killStartAt)).p50,
      server_kill_p50_ms: summarize(part.map((x) => x.serverKillMs).filter((v) => v !== null)).p50,
      intents_delivered_to_victim_before: part[0].deliveredToVictimSoFar,
    }))
    return {
      cycles: cycles.length,
      series,
      stats: Object.fromEntries(Object.entries(series).map(([k, v]) => [k, summarize(v)])),
      streams_closed_before_kill_returned: cycles.filter((x) => Number.isFinite(x.allClosedAt) && x.allClosedAt <= x.killReturnAt).length,
      first_403_before_kill_returned: cycles.filter((x) => x.first403Any !== null && x.first403Any < x.killReturnAt).length,
      // Client-side view only (frames read after the kill response on another socket): the server-side check is leasedAfterKill.
      frames_after_kill_return: cycles.reduce((n, x) => n + x.framesAfterKillReturn, 0),
      held_intents: summarize(cycles.map((x) => x.heldIntents)),
      redelivering: summarize(cycles.map((x) => x.redelivering)),
      accepted_per_s_steady: Math.round((c.accepted_in_steady * 1000) / Math.max(1, c.steady_ms)),
      counters: c,
      cpu: usage,
      audit: { valid: verify.valid, entries: verify.entries, kills, resumes },
      server_kill_histogram: serverKill,
      kill_call_trend: trend,
      problems,
    }
  } finally {
    running = false
    for (const s of streams) s.close()
    for (const a of agents) a.destroy()
    await gw.stop()
  }
}

/** `chokepoint_kill_enforcement_seconds` from GET /metrics: count, mean and bucket bounds of p50/p99 (ms). */
async function killHistogram(url) {
  try {
    const text = await (await fetch(`${url}/metrics`)).text()
    const buckets = []
    let sum = null
    let count = null
    for (const line of text.split('\n')) {
      const b = /^chokepoint_kill_enforcement_seconds_bucket\{.*le="([^"]+)".*\} (\S+)/.exec(line)
      if (b) buckets.push({ le: b[1] === '+Inf' ? Infinity : Number(b[1]) * 1000, n: Number(b[2]) })
      const m = /^chokepoint_kill_enforcement_seconds_(sum|count)(?:\{[^}]*\})? (\S+)/.exec(line)
      if (m && m[1] === 'sum') sum = Number(m[2]) * 1000
      if (m && m[1] === 'count') count = Number(m[2])
    }
    if (!count) return { count: 0, sum_ms: 0, mean_ms: null, p50_le_ms: null, p99_le_ms: null }
    const bound = (q) => buckets.find((x) => x.n >= q * count)?.le ?? null
    return { count, sum_ms: sum, mean_ms: Math.round((sum / count) * 1000) / 1000, p50_le_ms: bound(0.5), p99_le_ms: bound(0.99) }
  } catch {
    return null
  }
}

// ---- the Redis-flag baseline --------------------------------------------------------------------

/** One agent instance of the DIY switch: GET the flag every POLL_MS from a random phase; stop when set. */
function flagInstance(conn) {
  const inst = { stoppedAt: null, polls: 0, error: null }
  let timer = null
  inst.stopped = new Promise((resolve) => {
    const t0 = now()
    const phase = Math.random() * POLL_MS
    const poll = async () => {
      try {
        inst.polls += 1
        const value = await conn.command('GET', REDIS_KEY)
        if (value !== null) {
          inst.stoppedAt = now()
          resolve()
          return
        }
      } catch (error) {
        inst.error = error
        resolve()
        return
      }
      // Drift-free schedule: phase, phase + 1 s, phase + 2 s, …
      timer = setTimeout(poll, Math.max(0, t0 + phase + inst.polls * POLL_MS - now()))
    }
    timer = setTimeout(poll, phase)
  })
  inst.cancel = () => clearTimeout(timer)
  return inst
}

async function redisPart(cfg, log) {
  const binary = findRedisServer()
  if (!binary) return { skipped: 'redis-server not found on PATH (Debian: apt-get install -y redis-server); the Redis-flag baseline was skipped' }
  const redis = await startRedis(binary)
  const conns = []
  try {
    const ctl = await connectRedis(redis.port)
    conns.push(ctl)
    for (let k = 0; k < 4; k += 1) conns.push(await connectRedis(redis.port))
    await ctl.command('DEL', REDIS_KEY)
    const all = []
    const first = []
    const each = []
    for (let i = 0; i < cfg.cycles; i += 1) {
      // Four instances start working at random moments (independent phases), work for a while…
      const instances = conns.slice(1).map((conn) => flagInstance(conn))
      await sleep(Math.random() * POLL_MS)
      // …then the operator sets the flag.
      await ctl.command('SET', REDIS_KEY, '1')
      const setAt = now()
      const ok = await Promise.race([Promise.all(instances.map((x) => x.stopped)).then(() => true), sleep(POLL_MS * 3).then(() => false)])
      for (const x of instances) x.cancel()
      await ctl.command('DEL', REDIS_KEY)
      if (!ok || instances.some((x) => x.error || x.stoppedAt === null)) {
        throw new Error(`redis flag cycle ${i}: not all instances stopped (${instances.map((x) => x.error?.message ?? x.stoppedAt).join(', ')})`)
      }
      const stops = instances.map((x) => x.stoppedAt - setAt)
      all.push(Math.max(...stops))
      first.push(Math.min(...stops))
      each.push(...stops)
      if ((i + 1) % Math.max(1, Math.round(cfg.cycles / 5)) === 0 || i + 1 === cfg.cycles) {
        log(`kill: Redis flag ${i + 1}/${cfg.cycles} cycles (last: all stopped after ${fmt.int(Math.max(...stops))} ms)`)
      }
    }
    return {
      cycles: cfg.cycles,
      series: { all_stopped_ms: all, first_stopped_ms: first, per_instance_ms: each },
      stats: { all_stopped_ms: summarize(all), first_stopped_ms: summarize(first), per_instance_ms: summarize(each) },
    }
  } finally {
    for (const c of conns) c.close()
    await redis.stop()
  }
}

// ---- run ----------------------------------------------------------------------------------------

export async function run(opts) {
  const quick = Boolean(opts.quick)
  const cfg = {
    cycles: Math.round(num(opts.cycles, quick ? 10 : 100, 'cycles')),
    warmupMs: quick ? 1_000 : 2_000,
    redis: !opts['no-redis'],
  }
  const log = opts.log ?? (() => {})
  log(`kill: gateway part, ${cfg.cycles} kill/resume cycles under load (4 senders → victim, 4 victim → other, 4 victim streams)…`)
  const gateway = await gatewayPart(cfg, log)
  let redis = null
  if (cfg.redis) {
    log(`kill: Redis flag part, ${cfg.cycles} cycles (4 instances polling every ${POLL_MS} ms; ~${Math.round(cfg.cycles * 1.4)} s)…`)
    redis = await redisPart(cfg, log)
  } else {
    redis = { skipped: 'skipped (--no-redis)' }
  }

  const g = gateway.stats
  const flag = redis?.stats?.all_stopped_ms ?? null
  const ratio = (ours, theirs) => (ours === null || theirs === null || !theirs ? null : ours / theirs)
  const ratios = flag
    ? {
        b_p50: ratio(g.b_first_403_ms.p50, flag.p50),
        b_p99: ratio(g.b_first_403_ms.p99, flag.p99),
        c_p50: ratio(g.c_streams_closed_ms.p50, flag.p50),
        c_p99: ratio(g.c_streams_closed_ms.p99, flag.p99),
      }
    : null
  const targets = {
    b_p99_ms: TARGET_B_P99_MS,
    c_p99_ms: TARGET_C_P99_MS,
    b_met: g.b_first_403_ms.p99 !== null && g.b_first_403_ms.p99 < TARGET_B_P99_MS,
    c_met: g.c_streams_closed_ms.p99 !== null && g.c_streams_closed_ms.p99 < TARGET_C_P99_MS,
  }
  const correct = gateway.problems.length === 0
  const missing = ['b_first_403_ms', 'c_streams_closed_ms', 'd_first_delivery_ms'].filter((k) => g[k].count !== gateway.cycles)

  const fmtRatio = (v) => (v === null ? '–' : v === 0 ? '0' : v < 0.01 ? `1/${Math.round(1 / v).toLocaleString('en-US')}` : `${v.toFixed(3)}×`)
  const row = (what, s, target, r50, r99) => ({
    what,
    n: fmt.int(s?.count),
    p50: fmt.ms(s?.p50),
    p99: fmt.ms(s?.p99),
    max: fmt.ms(s?.max),
    target: target ?? '',
    ratio: r50 === undefined ? '' : `${fmtRatio(r50)} / ${fmtRatio(r99)}`,
  })
  const rows = [
    row('(a) kill call (sent → 200 received)', g.a_kill_call_ms),
    row('    of which inside the gateway', g.a_server_ms),
    row('(b) kill returned → first 403 agent_killed', g.b_first_403_ms, `p99 < ${TARGET_B_P99_MS} ms: ${targets.b_met ? 'met' : 'MISSED'}`, ratios?.b_p50 ?? null, ratios?.b_p99 ?? null),
    row('(c) kill returned → all 4 streams closed', g.c_streams_closed_ms, `p99 < ${TARGET_C_P99_MS} ms: ${targets.c_met ? 'met' : 'MISSED'}`, ratios?.c_p50 ?? null, ratios?.c_p99 ?? null),
    row('(d) resume returned → first delivery', g.d_first_delivery_ms),
    row('    resume call (sent → 200 received)', g.resume_call_ms),
    row('    kill sent → all 4 streams closed', g.streams_closed_from_kill_start_ms),
  ]
  if (flag) {
    rows.push(row('Redis flag: SET → all 4 instances stopped', flag, '', undefined, undefined))
    rows.push(row('Redis flag: SET → first instance stopped', redis.stats.first_stopped_ms))
    rows.push(row('Redis flag: SET → each instance stopped', redis.stats.per_instance_ms))
  }

  const notes = []
  notes.push(
    `chokepoint: ${gateway.cycles} cycles; ~${gateway.accepted_per_s_steady.toLocaleString('en-US')} sends/s accepted between kills; ` +
      `sends ${JSON.stringify(gateway.counters.sends)}; victim resolves ${JSON.stringify(gateway.counters.resolves)}; ` +
      `held at kill p50 ${gateway.held_intents.p50}, max ${gateway.held_intents.max}; redelivering at resume p50 ${gateway.redelivering.p50}, max ${gateway.redelivering.max}`,
  )
  notes.push(
    `(c): in ${gateway.streams_closed_before_kill_returned}/${gateway.cycles} cycles all 4 streams were closed before the kill call returned (counted as 0 ms: ` +
      'the gateway cuts streams when the kill commits, then holds the backlog, then answers); ' +
      `in ${gateway.first_403_before_kill_returned}/${gateway.cycles} cycles a sender had a 403 before the kill call returned; ` +
      `delivery frames read after the kill response: ${gateway.frames_after_kill_return} (all leased before the kill committed, by server time)`,
  )
  if (g.a_server_ms.count) {
    notes.push(
      `(a) split: inside the gateway (per kill, from its chokepoint_kill_enforcement_seconds histogram: handler start → kill committed, streams cut, backlog held) ` +
        `p50 ${fmt.ms(g.a_server_ms.p50)} ms, p99 ${fmt.ms(g.a_server_ms.p99)} ms; the rest (the request waiting its turn behind data-plane requests on the gateway's event loop, and the network) ` +
        `p50 ${fmt.ms(g.a_waiting_ms.p50)} ms, p99 ${fmt.ms(g.a_waiting_ms.p99)} ms`,
    )
  }
  const [early, late] = gateway.kill_call_trend
  if (gateway.cycles >= 20) {
    notes.push(
      `(a) as the victim's history grows: p50 ${fmt.ms(early.kill_call_p50_ms)} ms (gateway's part ${fmt.ms(early.server_kill_p50_ms)} ms) in cycles ${early.cycles} ` +
        `(≈${early.intents_delivered_to_victim_before.toLocaleString('en-US')} intents delivered to the victim before), ` +
        `${fmt.ms(late.kill_call_p50_ms)} ms (gateway's part ${fmt.ms(late.server_kill_p50_ms)} ms) in cycles ${late.cycles} (≈${late.intents_delivered_to_victim_before.toLocaleString('en-US')})`,
    )
  }
  notes.push(
    `CPU during the cycles: gateway ${fmt.pct(gateway.cpu.target_cpu_pct)} / load generator ${fmt.pct(gateway.cpu.self_cpu_pct)} of one core; CPU pressure ${fmt.pct(gateway.cpu.cpu_pressure_pct)}; ` +
      `audit: ${gateway.audit.kills} kills + ${gateway.audit.resumes} resumes recorded, chain ${gateway.audit.valid ? 'valid' : 'BROKEN'}`,
  )
  if (flag) {
    notes.push(
      `Redis flag (poll every ${POLL_MS} ms, 4 instances with independent phases): all stopped p50 ${fmt.int(flag.p50)} ms, p99 ${fmt.int(flag.p99)} ms ` +
        `(the slowest of 4 uniform waits: expected p50 ≈ ${Math.round(POLL_MS * 0.5 ** 0.25)} ms; one instance p50 ≈ ${POLL_MS / 2} ms, measured ${fmt.int(redis.stats.per_instance_ms.p50)} ms). ` +
        'Ratio column = chokepoint ÷ Redis flag (all stopped), p50 / p99. The flag only stops agents that poll it; it does not refuse their sends or cut their streams.',
    )
  } else {
    notes.push(`Redis flag baseline: ${redis.skipped}`)
  }
  notes.push(
    `targets: (b) p99 < ${TARGET_B_P99_MS} ms ${targets.b_met ? 'met' : 'NOT met'} (${fmt.ms(g.b_first_403_ms.p99)} ms); ` +
      `(c) p99 < ${TARGET_C_P99_MS} ms ${targets.c_met ? 'met' : 'NOT met'} (${fmt.ms(g.c_streams_closed_ms.p99)} ms)`,
  )
  if (gateway.cpu.cpu_pressure_pct !== null && gateway.cpu.cpu_pressure_pct > BUSY_PRESSURE_PCT) {
    notes.push(
      `WARNING: the machine was busy (CPU pressure ${fmt.pct(gateway.cpu.cpu_pressure_pct)} during the cycles, above ${BUSY_PRESSURE_PCT} %): ` +
        'other processes competed for the CPU, so the gateway\'s latencies are overstated; re-run on a quieter machine before judging the targets.',
    )
  }
  if (missing.length) notes.push(`PROBLEM: measurements missing in some cycles: ${missing.join(', ')}`)
  notes.push(
    correct
      ? `correctness: no send that started after a kill returned was accepted; nothing was leased to the victim after a kill committed; every stream got agent.killed (${gateway.cycles} cycles)`
      : `PROBLEMS (${gateway.problems.length}): ${gateway.problems.slice(0, 20).join('; ')}`,
  )

  return {
    benchmark: 'kill',
    description,
    config: { ...cfg, quick, lease_seconds: LEASE_S, poll_ms: POLL_MS, killed_min_ms: KILLED_MIN_MS },
    ok: correct && targets.b_met && targets.c_met && missing.length === 0,
    targets,
    ratios_to_redis_flag: ratios,
    table: {
      columns: [
        { key: 'what', title: 'measure', align: 'left' },
        { key: 'n', title: 'n' },
        { key: 'p50', title: 'p50 ms' },
        { key: 'p99', title: 'p99 ms' },
        { key: 'max', title: 'max ms' },
        { key: 'target', title: 'target', align: 'left' },
        { key: 'ratio', title: 'vs Redis flag p50 / p99', align: 'left' },
      ],
      rows,
    },
    notes,
    gateway: { ...gateway, series: Object.fromEntries(Object.entries(gateway.series).map(([k, v]) => [k, v.map(round3)])) },
    redis: redis.series ? { ...redis, series: Object.fromEntries(Object.entries(redis.series).map(([k, v]) => [k, v.map(round3)])) } : redis,
  }
}
