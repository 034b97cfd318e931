/**
 * Kill under fire (DESIGN §2.1): while 4 agents send to a victim, the victim sends to 4 others
 * from 4 concurrent loops and 4 instances of it stream and resolve its inbox, an operator
 * kills it at a random moment. Every request is timed on the client. The guarantees:
 *  - no send (to or from the victim) that started after the kill call returned is accepted;
 *  - what was accepted is exactly what the store holds, all created at or before killed_at;
 *  - no delivery to the victim happens after the kill (store events and stream frames);
 *  - every stream gets `agent.killed` as its last frame and ends within 1 s (p99 printed);
 *  - the backlog reported as held is exactly the victim's unfinished work, all `held`.
 * Several rounds, a fresh victim each, on one gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  agentKey,
  api,
  openSseStream,
  pollUntil,
  startTestGateway,
  testEngines,
  type Engine,
  type SseConnection,
  type TestGateway,
} from './harness.js'

/** Every round runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('kill-race.test.ts')
/** Rounds per engine: PostgreSQL rounds cost more (a pool, NOTIFY), so it runs fewer of them. */
const ROUNDS_BY_ENGINE: Record<Engine, number> = { sqlite: 8, postgres: 5 }
const SENDERS_TO = 4
const SENDERS_FROM = 4
const STREAMS = 4

const streamPath = (address: string, query: string): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

interface SendRecord {
  dir: 'to' | 'from'
  start: number
  end: number
  status: number
  code: string | null
  intent_id: string | null
}

interface ResolveRecord {
  intent_id: string
  start: number
  end: number
  status: number
  code: string | null
}

interface RoundResult {
  round: number
  killDelayMs: number
  sends: SendRecord[]
  resolves: ResolveRecord[]
  closeLatencyMs: number[]
  delivered: number
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] as number
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        out[i] = await fn(items[i] as T)
      }
    }),
  )
  return out
}

describe.each(ENGINES)('kill race (DESIGN §2.1, %s)', (engine) => {
  const ROUNDS = ROUNDS_BY_ENGINE[engine]
  let gw: TestGateway
  let operatorKey: string
  const results: RoundResult[] = []

  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    const op = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'operator' })
    operatorKey = op.body.key
  })
  afterAll(async () => {
    await gw?.close()
  })

  /** All intents the store has from or to `address` (newest first pages). */
  async function storeIntents(address: string): Promise<any[]> {
    const all: any[] = []
    let after: string | null = null
    for (;;) {
      const q: string = `/v1/intents?agent=${encodeURIComponent(address)}&limit=500${after ? `&after=${after}` : ''}`
      const page: { status: number; body: any } = await api(gw.url, operatorKey, 'GET', q)
      expect(page.status).toBe(200)
      all.push(...page.body.intents)
      after = page.body.next_after
      if (!after) return all
    }
  }

  for (let round = 1; round <= ROUNDS; round += 1) {
    it(`round ${round}: nothing gets in or out after the kill returns; streams cut within 1 s`, async () => {
      const V = `agent://race/r${round}/victim`
      const victimKey = await agentKey(gw, V)
      const senderKeys = await Promise.all(
        Array.from({ length: SENDERS_TO }, (_, i) => agentKey(gw, `agent://race/r${round}/sender-${i}`)),
      )
      const sinks = Array.from({ length: SENDERS_FROM }, (_, i) => `agent://race/r${round}/sink-${i}`)

      // Four instances of the victim, persistent streams with long leases.
      const streams: SseConnection[] = []
      const endedAt: number[] = []
      for (let i = 0; i < STREAMS; i += 1) {
        const conn = await openSseStream(gw.url, victimKey, streamPath(V, 'lease_seconds=300&max_in_flight=16'), {
          'x-instance-id': `victim-${i}`,
        })
        expect(conn.status).toBe(200)
        endedAt[i] = Number.NaN
        void conn.done.then(() => {
          endedAt[i] = performance.now()
        })
        streams.push(conn)
      }

      let stop = false
      const sends: SendRecord[] = []
      const resolves: ResolveRecord[] = []
      const pendingResolves: Promise<void>[] = []

      const sendLoop = async (dir: 'to' | 'from', key: string, to: string): Promise<void> => {
        let n = 0
        while (!stop) {
          n += 1
          const start = performance.now()
          const res = await api(gw.url, key, 'POST', '/v1/intents', {
            intent_type: 'race.intent.v1',
            to_agent: to,
            payload: { n },
          })
          const end = performance.now()
          sends.push({
            dir,
            start,
            end,
            status: res.status,
            code: res.status === 200 ? null : (res.body?.error?.code ?? String(res.body)),
            intent_id: res.status === 200 ? res.body.intent_id : null,
          })
        }
      }

      const resolveLoop = async (conn: SseConnection): Promise<void> => {
        let seen = 0
        for (;;) {
          try {
            await conn.waitFor((f) => f.length > seen, 60_000, 'a frame')
          } catch {
            return // the stream ended and every frame was handled
          }
          while (seen < conn.frames.length) {
            const frame = conn.frames[seen++]!
            if (frame.event !== 'intent.delivered') continue
            const id = frame.data.intent_id as string
            pendingResolves.push(
              (async () => {
                const start = performance.now()
                const res = await api(gw.url, victimKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED', result: { ok: true } })
                resolves.push({ intent_id: id, start, end: performance.now(), status: res.status, code: res.body?.error?.code ?? null })
              })(),
            )
          }
        }
      }

      const loops = [
        ...senderKeys.map((key) => sendLoop('to', key, V)),
        ...sinks.map((sink) => sendLoop('from', victimKey, sink)),
      ]
      const resolvers = streams.map(resolveLoop)

      let killDelayMs = 0
      let killStart = 0
      let killEnd = 0
      let kill: { status: number; body: any }
      try {
        // Kill at a random moment once traffic flows both ways and the streams are delivering.
        await pollUntil(
          () =>
            sends.filter((s) => s.dir === 'to' && s.status === 200).length >= 5 &&
            sends.filter((s) => s.dir === 'from' && s.status === 200).length >= 5 &&
            streams.some((c) => c.frames.some((f) => f.event === 'intent.delivered')),
          { timeoutMs: 15_000, intervalMs: 5, what: 'traffic in both directions' },
        )
        killDelayMs = Math.floor(Math.random() * 400)
        await sleep(killDelayMs)
        killStart = performance.now()
        kill = await api(gw.url, operatorKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/kill`, { reason: `race round ${round}` })
        killEnd = performance.now()
        expect(kill.status).toBe(200)
        // Keep hammering for a while after the kill returned (≥ 250 ms and ≥ 20 sends each way), then stop.
        await sleep(250)
        await pollUntil(
          () =>
            sends.filter((s) => s.dir === 'to' && s.start > killEnd).length >= 20 &&
            sends.filter((s) => s.dir === 'from' && s.start > killEnd).length >= 20,
          { timeoutMs: 15_000, intervalMs: 5, what: 'sends after the kill' },
        )
      } finally {
        stop = true
      }
      expect(kill.body.health_status).toBe('killed')
      const killedAt = Date.parse(kill.body.killed_at)
      await Promise.all(loops)
      // Every stream must end by itself (the kill cuts it); bound the wait.
      await pollUntil(() => streams.every((c) => c.ended), { timeoutMs: 5_000, what: 'every victim stream to end' })
      await Promise.all(resolvers)
      await Promise.all(pendingResolves)

      const to = sends.filter((s) => s.dir === 'to')
      const from = sends.filter((s) => s.dir === 'from')
      const lateSends = sends.filter((s) => s.start > killEnd)
      const diagnostics = {
        round,
        killDelayMs,
        killMs: +(killEnd - killStart).toFixed(2),
        sendsTo: to.length,
        sendsFrom: from.length,
        acceptedTo: to.filter((s) => s.status === 200).length,
        acceptedFrom: from.filter((s) => s.status === 200).length,
        late: lateSends.length,
        // Sends in flight while the kill call was in flight: started before it returned, answered after it started.
        inFlightAtKill: sends.filter((s) => s.start < killEnd && s.end > killStart).length,
        refusedInFlight: sends.filter((s) => s.start < killEnd && s.end > killStart && s.status !== 200).length,
        held: kill.body.held_intents,
      }

      // The race actually raced: traffic both ways before the kill, and after it.
      expect(diagnostics.acceptedTo, JSON.stringify(diagnostics)).toBeGreaterThan(0)
      expect(diagnostics.acceptedFrom, JSON.stringify(diagnostics)).toBeGreaterThan(0)
      expect(lateSends.filter((s) => s.dir === 'to').length).toBeGreaterThan(0)
      expect(lateSends.filter((s) => s.dir === 'from').length).toBeGreaterThan(0)

      // 1. No send that started after the kill returned was accepted; each is 403 agent_killed.
      const lateAccepted = lateSends.filter((s) => s.status === 200)
      expect(lateAccepted, `accepted after kill returned: ${JSON.stringify(lateAccepted.slice(0, 5))}`).toEqual([])
      for (const s of lateSends) expect([s.status, s.code]).toEqual([403, 'agent_killed'])
      // Every other answer is 200 or 403 agent_killed: nothing else went wrong under load.
      for (const s of sends) if (s.status !== 200) expect([s.status, s.code]).toEqual([403, 'agent_killed'])

      // 2. The accepted set is exactly the store's set, and all of it was created at or before killed_at.
      const accepted = new Map(sends.filter((s) => s.status === 200).map((s) => [s.intent_id as string, s]))
      const stored = await storeIntents(V)
      const storedIds = new Set(stored.map((i) => i.intent_id as string))
      expect(storedIds.size).toBe(stored.length)
      expect([...storedIds].filter((id) => !accepted.has(id)), 'stored but never answered 200').toEqual([])
      expect([...accepted.keys()].filter((id) => !storedIds.has(id)), 'answered 200 but not stored').toEqual([])
      const createdLate = stored.filter((i) => Date.parse(i.created_at) > killedAt)
      expect(createdLate.map((i) => [i.intent_id, i.created_at]), `killed_at ${kill.body.killed_at}`).toEqual([])
      // The same through GET /v1/intents/{id} (the object a client reads).
      await mapLimit([...accepted.keys()], 16, async (id) => {
        const got = await api(gw.url, operatorKey, 'GET', `/v1/intents/${id}`)
        expect(got.status).toBe(200)
        expect(Date.parse(got.body.intent.created_at)).toBeLessThanOrEqual(killedAt)
      })

      // 3. The held backlog is exactly the victim's unfinished work, and all of it is held.
      const unfinished = stored.filter((i) => i.delivery_state !== 'done')
      for (const i of unfinished) {
        if (i.to_agent === V) expect(i.delivery_state, i.intent_id).toBe('held')
        else expect([i.delivery_state, i.delivery_attempt], i.intent_id).toEqual(['held', 0])
      }
      expect(kill.body.held_intents).toBe(unfinished.length)

      // 4. Streams: the kill frame is the last frame of every stream; no delivery after it;
      //    each ended within 1 s of the kill returning.
      const closeLatencyMs: number[] = []
      const framesDelivered = new Set<string>()
      streams.forEach((conn, i) => {
        const events = conn.frames.map((f) => f.event)
        expect(events.filter((e) => e === 'agent.killed'), `stream ${i}: ${events.slice(-3)}`).toHaveLength(1)
        expect(events[events.length - 1], `stream ${i}`).toBe('agent.killed')
        expect(events.filter((e) => e !== 'intent.delivered' && e !== 'agent.killed'), `stream ${i}`).toEqual([])
        const killFrame = conn.frames[conn.frames.length - 1]!
        expect(killFrame.data).toMatchObject({ ok: false, error: { code: 'agent_killed', message: expect.any(String) } })
        for (const f of conn.frames) {
          if (f.event === 'intent.delivered') {
            expect(f.receivedAt).toBeLessThanOrEqual(killFrame.receivedAt)
            expect(framesDelivered.has(f.data.intent_id), `delivered twice: ${f.data.intent_id}`).toBe(false)
            framesDelivered.add(f.data.intent_id)
          }
        }
        expect(conn.ended).toBe(true)
        expect(Number.isNaN(endedAt[i] as number)).toBe(false)
        expect((endedAt[i] as number) - killEnd, `stream ${i} ended too late`).toBeLessThan(1_000)
        closeLatencyMs.push((endedAt[i] as number) - killStart)
      })

      // 5. Deliveries: every intent delivered to the victim (store view) was delivered at or
      //    before killed_at, and each one reached a stream before that stream's kill frame.
      const deliveredInStore = stored.filter((i) => i.to_agent === V && i.delivery_attempt > 0)
      expect(deliveredInStore.filter((i) => !framesDelivered.has(i.intent_id)).map((i) => [i.intent_id, i.delivery_state, i.status, i.delivery_attempt]), 'leased but never framed').toEqual([])
      expect([...framesDelivered].filter((id) => !deliveredInStore.some((i) => i.intent_id === id))).toEqual([])
      await mapLimit([...framesDelivered], 16, async (id) => {
        const ev = await api(gw.url, operatorKey, 'GET', `/v1/intents/${id}/events`)
        expect(ev.status).toBe(200)
        const deliveries = ev.body.events.filter((e: any) => e.event_type === 'intent.delivered' || e.event_type === 'intent.redelivered')
        expect(deliveries.length, id).toBeGreaterThanOrEqual(1)
        for (const e of deliveries) expect(Date.parse(e.at), `${id} delivered at ${e.at}`).toBeLessThanOrEqual(killedAt)
      })
      // Intents that were never delivered stay undelivered (no lease, no delivery event).
      for (const i of stored.filter((x) => x.to_agent === V && x.delivery_attempt === 0)) {
        expect(i.status).toBe('SUBMITTED')
      }

      // 6. Resolves by the victim: none that started after the kill returned succeeded.
      const lateResolves = resolves.filter((r) => r.start > killEnd)
      expect(lateResolves.filter((r) => r.status === 200)).toEqual([])
      for (const r of lateResolves) expect([r.status, r.code]).toEqual([403, 'agent_killed'])
      for (const r of resolves) if (r.status !== 200) expect([r.status, r.code]).toEqual([403, 'agent_killed'])
      const completed = new Set(stored.filter((i) => i.status === 'COMPLETED').map((i) => i.intent_id))
      expect([...completed].sort()).toEqual(resolves.filter((r) => r.status === 200).map((r) => r.intent_id).sort())

      // 7. The victim cannot come back in.
      const reconnect = await api(gw.url, victimKey, 'GET', streamPath(V, 'lease_seconds=300'), undefined, { 'x-instance-id': 'victim-0' })
      expect([reconnect.status, reconnect.body?.error?.code]).toEqual([403, 'agent_killed'])

      console.log(
        `kill-race (${engine}) round ${round}: ${JSON.stringify({ ...diagnostics, delivered: framesDelivered.size, resolved: completed.size, closeMs: closeLatencyMs.map((x) => +x.toFixed(1)) })}`,
      )
      results.push({ round, killDelayMs, sends, resolves, closeLatencyMs, delivered: framesDelivered.size })
    })
  }

  it('stream cut latency over all rounds: p99 < 1000 ms (goal 100 ms)', () => {
    expect(results).toHaveLength(ROUNDS)
    const all = results.flatMap((r) => r.closeLatencyMs)
    expect(all).toHaveLength(ROUNDS * STREAMS)
    const p50 = percentile(all, 50)
    const p99 = percentile(all, 99)
    console.log(
      `kill-race (${engine}): stream close latency from kill call over ${all.length} streams: p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, max ${Math.max(...all).toFixed(1)} ms`,
    )
    expect(p99).toBeLessThan(1_000)
    expect(results.reduce((n, r) => n + r.delivered, 0)).toBeGreaterThan(0)
  })
})
