/**
 * Soak (DESIGN §2.1, §2.3): one gateway process per engine under a fixed, paced mix for a
 * bounded time — senders, a windowed and a persistent inbox consumer that resolve what they get,
 * heartbeats, a victim agent killed and resumed every few seconds while its stream is open and
 * work is addressed to it, rate policies created and deleted on the senders, and a Prometheus
 * scrape every second. Every second the test reads the process's resident memory and open
 * descriptors from /proc; at the end of each CHOKEPOINT_SOAK_SAMPLE_SECONDS window it also has
 * the gateway run a full collection and report the heap it retains (heap-probe.mjs). After the
 * warm-up:
 *  - no growth trend: the retained heap rises by less than 2 MB/min (fitted) and 4 MB in all
 *    — an injected leak of 200 bytes per intent fails it within 40 s; resident memory grows
 *    by at most 24 MB beyond what SQLite's page cache may fill (64 MB); the lowest descriptor
 *    count climbs by at most 8;
 *  - nothing acknowledged is lost: every send answered 200 ends COMPLETED (held work of the
 *    victim included: resume redelivers it);
 *  - kill latency stays stable: kill call → the victim's open stream cut, p99 < 1 s;
 *  - the audit chain is valid, /health answers 200, and nothing was logged at level error.
 * The run lasts CHOKEPOINT_SOAK_SECONDS per engine (default 75: two engines in a suite that
 * must stay under 10 minutes on 2 cores; `CHOKEPOINT_SOAK_SECONDS=1800` for a long soak).
 * Figures go to bench/results/soak-<engine>.json. Skips PostgreSQL (with a message) when it is
 * not installed.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { REPO_ROOT, ensureBuilt, randomAdminKey, startChildGateway, type ChildGateway } from '../child-gateway.js'
import { api, openSseStream, parseSse, sharedPostgres, testEngines, type SseConnection } from '../harness.js'
import { createKey, enc, mapLimit, percentile, sleep, storedIntents, streamPath } from '../replica-fleet.js'

const SECONDS = positive('CHOKEPOINT_SOAK_SECONDS', 75)
const SAMPLE_SECONDS = Math.max(1, Math.round(positive('CHOKEPOINT_SOAK_SAMPLE_SECONDS', 5)))
/** Memory and descriptors settle (JIT, pools, caches) during the first part of the run. */
const WARM_UP_SECONDS = Math.max(15, SECONDS * 0.2)
/**
 * After the warm-up, resident memory may grow by at most this much beyond what SQLite's page
 * cache may legitimately add as it fills up to its `cache_size` (64 MB, reached after a few
 * minutes of this load); on PostgreSQL, where the data lives elsewhere, by this much in all.
 */
const MAX_RSS_GROWTH_MB = 24
const SQLITE_CACHE_MB = 64
/**
 * The heap retained after a full collection may rise by at most this much per minute (fitted
 * over the samples after the warm-up) and by at most MAX_HEAP_GROWTH_MB in all (lowest of the
 * last third against the lowest of the first): a clean run creeps by 0.4–0.6 MB/min while code
 * warms up; a leak of 200 bytes per intent measures 5 MB/min.
 */
const MAX_HEAP_SLOPE_MB_PER_MIN = 2
const MAX_HEAP_GROWTH_MB = 4
/** The lowest descriptor count of the last third may exceed that of the first third by this. */
const MAX_FD_CLIMB = 8
const KILL_EVERY_MS = 3_000
const POLICY_EVERY_MS = 2_000

const HEAP_PROBE = fileURLToPath(new URL('./heap-probe.mjs', import.meta.url))
const probes = (stdout: string): number[] => [...stdout.matchAll(/^heap-probe (\d+)$/gm)].map((m) => Number(m[1]))

const SENDER = 'agent://soak/test/sender'
const RECEIVER = 'agent://soak/test/receiver'
const VICTIM = 'agent://soak/test/victim'

function positive(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${name} must be a positive number of seconds, got ${JSON.stringify(raw)}`)
  return value
}

interface Sample {
  t_s: number
  rss_mb: number
  /** The heap the gateway retains after a full collection, at the end of the window. */
  heap_mb: number
  fds: number
  /** SQLite: the database and its WAL on disk (0 on PostgreSQL). */
  db_mb: number
  acked: number
}

/** Resident set size (MB) and open descriptors of a process, from /proc. */
function readProc(pid: number): { rss_mb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1])
  return { rss_mb: kb / 1024, fds: readdirSync(`/proc/${pid}/fd`).length }
}

const round1 = (x: number): number => Math.round(x * 10) / 10

/** Bytes of the SQLite database files in a data directory (none for PostgreSQL). */
function databaseBytes(dataDir: string): number {
  let total = 0
  for (const name of ['chokepoint.db', 'chokepoint.db-wal']) {
    try {
      total += statSync(join(dataDir, name)).size
    } catch {
      // not there: PostgreSQL, or no WAL right now
    }
  }
  return total
}

/** Least-squares slope of y over x. */
function slope(points: { x: number; y: number }[]): number {
  const n = points.length
  const mx = points.reduce((s, p) => s + p.x, 0) / n
  const my = points.reduce((s, p) => s + p.y, 0) / n
  const sxy = points.reduce((s, p) => s + (p.x - mx) * (p.y - my), 0)
  const sxx = points.reduce((s, p) => s + (p.x - mx) ** 2, 0)
  return sxx === 0 ? 0 : sxy / sxx
}

const dirs: string[] = []
const children: ChildGateway[] = []
beforeAll(() => ensureBuilt(), 180_000)
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')))
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

describe.each(testEngines('reliability/soak.test.ts'))('soak (%s)', (engine) => {
  it(`${SECONDS} s of mixed load: no memory or descriptor growth, nothing lost, kill latency stable, audit valid`, async () => {
    const root = mkdtempSync(join(tmpdir(), 'chokepoint-soak-'))
    dirs.push(root)
    const databaseUrl = engine === 'postgres' ? await (await sharedPostgres())!.createDatabase() : undefined
    const gw = await startChildGateway({
      dataDir: join(root, 'data'),
      adminKey: randomAdminKey(),
      ...(databaseUrl ? { databaseUrl } : {}),
      env: { NODE_OPTIONS: `${process.env['NODE_OPTIONS'] ?? ''} --expose-gc --import=${HEAP_PROBE}`.trim() },
    })
    children.push(gw)
    const admin = (method: string, path: string, body?: unknown, headers?: Record<string, string>) => api(gw.url, gw.adminKey, method, path, body, headers)
    const keys = {
      sender: await createKey(gw.url, gw.adminKey, 'agent', SENDER),
      receiver: await createKey(gw.url, gw.adminKey, 'agent', RECEIVER),
      victim: await createKey(gw.url, gw.adminKey, 'agent', VICTIM),
    }

    const acked = new Set<string>()
    const resolved = new Set<string>()
    const unexpected: string[] = []
    const killCuts: number[] = []
    const killCalls: number[] = []
    const counts = { sends: 0, refusedKilled: 0, heartbeats: 0, kills: 0, policies: 0 }
    let stopped = false
    const t0 = performance.now()
    const note = (what: string, status: number, body: unknown) => {
      if (unexpected.length < 20) unexpected.push(`${what}: ${status} ${JSON.stringify(body).slice(0, 200)}`)
    }

    const resolve = async (key: string, id: string) => {
      const res = await api(gw.url, key, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED', result: { ok: true } })
      if (res.status === 200) resolved.add(id)
      // 403 agent_killed (the victim was killed mid-delivery: the lease is held and resume
      // redelivers it) and 409 (already resolved after a redelivery) are the contract.
      else if (res.status !== 403 && res.status !== 409) note('resolve', res.status, res.body)
    }

    const sender = async (to: string, pauseMs: number) => {
      while (!stopped) {
        const res = await api(gw.url, keys.sender, 'POST', '/v1/intents', { intent_type: 'soak.work.v1', to_agent: to, payload: { n: counts.sends++ } })
        if (res.status === 200) acked.add(res.body.intent_id as string)
        else if (res.status === 403 && res.body.error?.code === 'agent_killed' && to === VICTIM) counts.refusedKilled += 1
        else note('send', res.status, res.body)
        await sleep(pauseMs)
      }
    }

    // Windowed consumer: reconnects every window, resumes from its cursor.
    const windowed = async () => {
      let since = 0
      while (!stopped) {
        const res = await fetch(`${gw.url}${streamPath(RECEIVER, `since=${since}&wait_seconds=1&lease_seconds=10&max_in_flight=100`)}`, {
          headers: { 'x-api-key': keys.receiver, 'x-instance-id': 'r-window' },
        })
        const text = await res.text()
        if (res.status !== 200) {
          note('windowed stream', res.status, text)
          await sleep(100)
          continue
        }
        const ids: string[] = []
        for (const frame of parseSse(text)) {
          if (frame.event !== 'intent.delivered') continue
          since = Math.max(since, Number(frame.id))
          ids.push(frame.data.intent_id as string)
        }
        await mapLimit(ids, 4, (id) => resolve(keys.receiver, id))
      }
    }

    // Persistent consumer: one open stream, resolving each delivery as it arrives. Returns
    // when the stream ends (stop, or a kill of its agent).
    const persistent = async (conn: SseConnection, key: string) => {
      let seen = 0
      while (!stopped && !conn.ended) {
        while (seen < conn.frames.length) {
          const frame = conn.frames[seen++]!
          if (frame.event === 'intent.delivered') await resolve(key, frame.data.intent_id as string)
        }
        await sleep(25)
      }
    }
    const open = async (address: string, key: string, instance: string) => {
      const conn = await openSseStream(gw.url, key, streamPath(address, 'lease_seconds=10&max_in_flight=50'), { 'x-instance-id': instance })
      if (conn.status !== 200) throw new Error(`stream ${address}: ${conn.status} ${JSON.stringify(conn.body)}`)
      return conn
    }
    const receiverStream = await open(RECEIVER, keys.receiver, 'r-stream')

    const heartbeats = async () => {
      while (!stopped) {
        for (const [key, instance] of [[keys.sender, 's-1'], [keys.receiver, 'r-window'], [keys.receiver, 'r-stream']] as const) {
          const metrics = { intents_total: 3, intents_succeeded: 3, intents_failed: 0, avg_latency_ms: 4, cost_usd: 0.0001 }
          const res = await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', { metrics }, { 'x-instance-id': instance })
          if (res.status === 200) counts.heartbeats += 1
          else note('heartbeat', res.status, res.body)
        }
        await sleep(500)
      }
    }

    // The victim: an open stream that resolves its work, killed every KILL_EVERY_MS; the kill
    // must cut that stream, and resume brings back what the kill held.
    const victim = async () => {
      while (!stopped) {
        const conn = await open(VICTIM, keys.victim, 'v-1')
        const consuming = persistent(conn, keys.victim)
        await sleep(KILL_EVERY_MS)
        if (stopped) {
          conn.close()
          await consuming
          return
        }
        let cutAt = Infinity
        void conn.done.then(() => (cutAt = performance.now()))
        const started = performance.now()
        const killed = await admin('POST', `/v1/mesh/agents/${enc(VICTIM)}/kill`, { reason: 'soak' })
        killCalls.push(performance.now() - started)
        if (killed.status !== 200) note('kill', killed.status, killed.body)
        await Promise.race([conn.done, sleep(5_000)])
        killCuts.push(cutAt - started)
        counts.kills += 1
        conn.close()
        await consuming
        const resumed = await admin('POST', `/v1/mesh/agents/${enc(VICTIM)}/resume`, {})
        if (resumed.status !== 200) note('resume', resumed.status, resumed.body)
      }
    }

    // Policy churn on the sender: a generous rate policy (never breached) created and deleted,
    // so every send alternates between the policy and the no-policy path.
    const policies = async () => {
      while (!stopped) {
        const created = await admin('POST', `/v1/mesh/agents/${enc(SENDER)}/policies`, { kind: 'rate', direction: 'send', max_per_hour: 10_000_000, on_breach: 'block' })
        if (created.status !== 200) note('create policy', created.status, created.body)
        await sleep(POLICY_EVERY_MS / 2)
        if (created.status === 200) {
          const deleted = await admin('DELETE', `/v1/policies/${created.body.policy.policy_id}`)
          if (deleted.status !== 200) note('delete policy', deleted.status, deleted.body)
          else counts.policies += 1
        }
        await sleep(POLICY_EVERY_MS / 2)
      }
    }

    // Every second: /proc (resident memory, descriptors). Each SAMPLE_SECONDS window is one
    // sample: its last resident size, its lowest descriptor count, and the heap the gateway
    // retains after a full collection (heap-probe.mjs, on SIGUSR2).
    const retainedHeap = async (): Promise<number> => {
      const before = probes(gw.stdout()).length
      gw.proc.kill('SIGUSR2')
      const deadline = Date.now() + 10_000
      while (probes(gw.stdout()).length === before) {
        if (Date.now() > deadline) throw new Error('the gateway did not answer the heap probe within 10 s')
        await sleep(10)
      }
      return probes(gw.stdout()).at(-1) as number
    }
    const samples: Sample[] = []
    const sampler = async () => {
      let window: { rss_mb: number; fds: number }[] = []
      for (let tick = 1; !stopped; tick += 1) {
        await sleep(Math.max(0, tick * 1000 - (performance.now() - t0)))
        if (stopped) return
        // A Prometheus scrape every second is part of the mix.
        const scrape = await fetch(`${gw.url}/metrics`)
        if (scrape.status !== 200) note('metrics', scrape.status, await scrape.text())
        else await scrape.text()
        window.push(readProc(gw.pid))
        if (tick % SAMPLE_SECONDS !== 0) continue
        const sample: Sample = {
          t_s: tick,
          rss_mb: round1(window.at(-1)!.rss_mb),
          heap_mb: round1((await retainedHeap()) / 2 ** 20),
          fds: Math.min(...window.map((w) => w.fds)),
          db_mb: round1(databaseBytes(join(root, 'data')) / 2 ** 20),
          acked: acked.size,
        }
        window = []
        samples.push(sample)
        console.log(`soak (${engine}) ${sample.t_s} s: rss ${sample.rss_mb} MB, heap ${sample.heap_mb} MB, ${sample.fds} fds, database ${sample.db_mb} MB, ${sample.acked} acknowledged`)
      }
    }

    const loops = [
      sender(RECEIVER, 10),
      sender(RECEIVER, 10),
      sender(RECEIVER, 10),
      sender(VICTIM, 40),
      windowed(),
      persistent(receiverStream, keys.receiver),
      heartbeats(),
      victim(),
      policies(),
      sampler(),
    ]
    await sleep(SECONDS * 1000)
    stopped = true
    receiverStream.close()
    await Promise.all(loops)
    const ranSeconds = (performance.now() - t0) / 1000

    // Drain: whatever is still open (leases that lapsed, work the last kill held) is delivered
    // again within its lease; resolve until every acknowledged intent is done.
    const deadline = Date.now() + 60_000
    const open_ = () => [...acked].filter((id) => !resolved.has(id))
    const cursors = { [RECEIVER]: 0, [VICTIM]: 0 }
    while (open_().length > 0 && Date.now() < deadline) {
      for (const [address, key] of [[RECEIVER, keys.receiver], [VICTIM, keys.victim]] as const) {
        const res = await fetch(`${gw.url}${streamPath(address, `since=${cursors[address]}&wait_seconds=1&lease_seconds=10&max_in_flight=500`)}`, {
          headers: { 'x-api-key': key, 'x-instance-id': 'drain' },
        })
        const ids: string[] = []
        for (const frame of parseSse(await res.text())) {
          if (frame.event !== 'intent.delivered') continue
          cursors[address] = Math.max(cursors[address], Number(frame.id))
          ids.push(frame.data.intent_id as string)
        }
        await mapLimit(ids, 8, (id) => resolve(key, id))
      }
    }

    // The store's view: every acknowledged intent, once, COMPLETED.
    const stored = new Map<string, string>()
    for (const address of [RECEIVER, VICTIM]) for (const row of await storedIntents(gw.url, gw.adminKey, address, 'received')) stored.set(row.intent_id, row.status)
    const lost = [...acked].filter((id) => stored.get(id) !== 'COMPLETED')

    const verify = await admin('GET', '/v1/audit/verify')
    const health = await api(gw.url, '', 'GET', '/health')
    const errorLines = `${gw.stdout()}\n${gw.stderr()}`.split('\n').filter((line) => /"level":"error"|unhandled|uncaught/i.test(line))

    const settled = samples.filter((s) => s.t_s >= WARM_UP_SECONDS)
    const rssSlope = slope(settled.map((s) => ({ x: s.t_s / 60, y: s.rss_mb })))
    const heapSlope = slope(settled.map((s) => ({ x: s.t_s / 60, y: s.heap_mb })))
    const rssGrowth = Math.max(...settled.map((s) => s.rss_mb)) - (settled[0]?.rss_mb ?? 0)
    const databaseGrowth = (settled.at(-1)?.db_mb ?? 0) - (settled[0]?.db_mb ?? 0)
    const cacheAllowance = engine === 'sqlite' ? SQLITE_CACHE_MB : 0
    const lowest = (part: Sample[]) => Math.min(...part.map((s) => s.heap_mb))
    const third = Math.max(1, Math.floor(settled.length / 3))
    const fdFirst = Math.min(...settled.slice(0, third).map((s) => s.fds))
    const fdLast = Math.min(...settled.slice(-third).map((s) => s.fds))
    const heapGrowth = lowest(settled.slice(-third)) - lowest(settled.slice(0, third))
    const finite = killCuts.filter(Number.isFinite)
    const result = {
      engine,
      date: new Date().toISOString(),
      node: process.version,
      seconds: Number(ranSeconds.toFixed(1)),
      sample_seconds: SAMPLE_SECONDS,
      warm_up_seconds: WARM_UP_SECONDS,
      acknowledged: acked.size,
      intents_per_second: Number((acked.size / ranSeconds).toFixed(1)),
      resolved: resolved.size,
      lost: lost.length,
      sends_refused_killed: counts.refusedKilled,
      heartbeats: counts.heartbeats,
      kills: counts.kills,
      policy_changes: counts.policies * 2,
      kill_call_ms: { p50: Number(percentile(killCalls, 50).toFixed(1)), p99: Number(percentile(killCalls, 99).toFixed(1)) },
      kill_cut_ms: { p50: Number(percentile(finite, 50).toFixed(1)), p99: Number(percentile(killCuts, 99).toFixed(1)), max: Number(Math.max(...killCuts).toFixed(1)) },
      rss_mb: { first: settled[0]?.rss_mb, last: settled.at(-1)?.rss_mb, max: Math.max(...samples.map((s) => s.rss_mb)) },
      rss_slope_mb_per_min: Number(rssSlope.toFixed(2)),
      rss_growth_mb: round1(rssGrowth),
      database_growth_mb: round1(databaseGrowth),
      rss_growth_allowed_mb: round1(cacheAllowance + MAX_RSS_GROWTH_MB),
      heap_growth_mb: round1(heapGrowth),
      heap_mb: { first: settled[0]?.heap_mb, last: settled.at(-1)?.heap_mb, max: Math.max(...samples.map((s) => s.heap_mb)) },
      heap_slope_mb_per_min: Number(heapSlope.toFixed(2)),
      fds: { first_third_min: fdFirst, last_third_min: fdLast, max: Math.max(...samples.map((s) => s.fds)) },
      audit_entries: verify.body.entries,
      samples,
    }
    mkdirSync(join(REPO_ROOT, 'bench/results'), { recursive: true })
    writeFileSync(join(REPO_ROOT, `bench/results/soak-${engine}.json`), `${JSON.stringify(result, null, 2)}\n`)
    console.log(
      `soak (${engine}): ${result.seconds} s, ${acked.size} acknowledged (${result.intents_per_second}/s), ${lost.length} lost, ` +
        `${counts.kills} kills (cut p50 ${result.kill_cut_ms.p50} ms, p99 ${result.kill_cut_ms.p99} ms), ${result.policy_changes} policy changes, ` +
        `${counts.heartbeats} heartbeats; rss ${result.rss_mb.first} → ${result.rss_mb.last} MB (slope ${result.rss_slope_mb_per_min} MB/min), ` +
        `heap ${result.heap_mb.first} → ${result.heap_mb.last} MB (slope ${result.heap_slope_mb_per_min} MB/min), database +${result.database_growth_mb} MB, ` +
        `fds ${fdFirst} → ${fdLast} (max ${result.fds.max})`,
    )

    expect(unexpected, 'answers outside the contract').toEqual([])
    expect(lost, 'acknowledged intents not COMPLETED').toEqual([])
    expect(acked.size).toBeGreaterThan(100)
    // One kill per KILL_EVERY_MS plus the resume and reconnect: at least half of that count.
    expect(counts.kills).toBeGreaterThanOrEqual(Math.floor(SECONDS / (KILL_EVERY_MS / 1000) / 2))
    expect(result.kill_cut_ms.p99, `kill → stream cut: ${killCuts.map((x) => x.toFixed(0)).join(', ')}`).toBeLessThan(1_000)
    expect(settled.length, 'samples after the warm-up').toBeGreaterThanOrEqual(3)
    expect(heapSlope, `retained heap after the warm-up: ${settled.map((s) => s.heap_mb).join(', ')} MB`).toBeLessThan(MAX_HEAP_SLOPE_MB_PER_MIN)
    expect(heapGrowth, `retained heap after the warm-up: ${settled.map((s) => s.heap_mb).join(', ')} MB`).toBeLessThanOrEqual(MAX_HEAP_GROWTH_MB)
    expect(rssGrowth, `rss after the warm-up: ${settled.map((s) => s.rss_mb).join(', ')} MB; database ${settled.map((s) => s.db_mb).join(', ')} MB`).toBeLessThanOrEqual(
      cacheAllowance + MAX_RSS_GROWTH_MB,
    )
    expect(fdLast - fdFirst, `fds after the warm-up: ${settled.map((s) => s.fds).join(', ')}`).toBeLessThanOrEqual(MAX_FD_CLIMB)
    expect(verify.body).toMatchObject({ ok: true, valid: true, first_broken_seq: null })
    expect(health.status).toBe(200)
    expect(errorLines).toEqual([])
  }, (SECONDS + 150) * 1000)
})
