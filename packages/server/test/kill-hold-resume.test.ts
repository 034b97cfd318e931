/**
 * Kill preserves work and stops it in both directions; resume releases it, oldest first and
 * paced (DESIGN §2.4, §2.5, §5c, §10, §11).
 *  - held: work queued to the victim, work it leased but did not resolve, and its own output
 *    not yet delivered all become `held` (with an `intent.held` event); the recipient of that
 *    output gets none of it while the victim is killed; what it already received stays its own.
 *  - cancel_pending: the victim's undelivered output is canceled instead, and audited.
 *  - resume: everything held is delivered again, in creation order per recipient, once, with
 *    new seqs; previously leased intents come back with delivery_attempt 2 and
 *    `intent.redelivered`; pacing follows CHOKEPOINT_RESUME_RATE.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  agentKey,
  api,
  openSseStream,
  readSse,
  startTestGateway,
  testEngines,
  type SseConnection,
  type TimedSseFrame,
  type TestGateway,
} from './harness.js'

/** Every case runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('kill-hold-resume.test.ts')

const streamPath = (address: string, query: string): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

const deliveredFrames = (frames: TimedSseFrame[]): TimedSseFrame[] => frames.filter((f) => f.event === 'intent.delivered')

/** The most frames received within any `windowMs` (sliding window over receive times). */
function maxInWindow(frames: TimedSseFrame[], windowMs: number): number {
  const times = frames.map((f) => f.receivedAt).sort((a, b) => a - b)
  let best = 0
  let lo = 0
  for (let hi = 0; hi < times.length; hi += 1) {
    while ((times[hi] as number) - (times[lo] as number) >= windowMs) lo += 1
    best = Math.max(best, hi - lo + 1)
  }
  return best
}

/**
 * How much earlier than its slot any frame arrived, in ms (≤ 0: none early). The pacing
 * guarantee is the schedule itself (DESIGN §11: `available_at = resumed_at + i / rate`), so
 * the k-th frame of a budget may not arrive before `t0 + (firstSlot + k) / rate`. A sliding-
 * window count is no test of it: a gateway that fell behind (a stalled event loop, a slow
 * commit) rightly delivers every slot that has come due at once.
 */
function earliestAheadOfSlot(frames: TimedSseFrame[], t0: number, ratePerSecond: number, firstSlot = 0): number {
  let worst = -Infinity
  frames.forEach((f, k) => {
    worst = Math.max(worst, t0 + ((firstSlot + k) * 1000) / ratePerSecond - f.receivedAt)
  })
  return worst
}

/** Clock slack between this process and the gateway (same host; a database clock within its noise band). */
const SLOT_SLACK_MS = 25

/** Receive times relative to `t0`, for failure messages. */
const offsets = (frames: TimedSseFrame[], t0: number): string => frames.map((f) => Math.round(f.receivedAt - t0)).join(',')

async function operatorKey(gw: TestGateway): Promise<string> {
  const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'operator' })
  if (res.status !== 200) throw new Error(`operator key: ${res.status}`)
  return res.body.key
}

async function sendMany(gw: TestGateway, key: string, to: string, n: number, tag: string): Promise<string[]> {
  const ids: string[] = []
  // Sequential: creation order is send order.
  for (let i = 0; i < n; i += 1) {
    const res = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: to, payload: { tag, i } })
    if (res.status !== 200) throw new Error(`send ${tag} #${i}: ${res.status} ${JSON.stringify(res.body)}`)
    ids.push(res.body.intent_id)
  }
  return ids
}

/** Reads intents by id with bounded concurrency. */
async function getIntents(gw: TestGateway, key: string, ids: string[]): Promise<any[]> {
  const out: any[] = new Array(ids.length)
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ids.length) {
        const i = next++
        const res = await api(gw.url, key, 'GET', `/v1/intents/${ids[i]}`)
        expect(res.status).toBe(200)
        out[i] = res.body.intent
      }
    }),
  )
  return out
}

async function getEvents(gw: TestGateway, key: string, ids: string[]): Promise<any[][]> {
  const out: any[][] = new Array(ids.length)
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < ids.length) {
        const i = next++
        const res = await api(gw.url, key, 'GET', `/v1/intents/${ids[i]}/events`)
        expect(res.status).toBe(200)
        out[i] = res.body.events
      }
    }),
  )
  return out
}

describe.each(ENGINES)('kill holds work in both directions; resume redelivers it oldest first, paced (%s)', (engine) => {
  const RATE = 100
  const V = 'agent://acme/prod/hold-victim'
  const B = 'agent://acme/prod/hold-downstream'
  const P = 'agent://acme/prod/hold-upstream'
  let gw: TestGateway
  let opKey: string
  let vKey: string
  let bKey: string
  let pKey: string
  const open: SseConnection[] = []

  // Work around the kill.
  let leasedToV: string[] = [] // delivered to the victim and not resolved
  let queuedToV: string[] = [] // queued for the victim, never delivered
  let receivedByB: string[] = [] // the victim's output B received before the kill
  let pendingFromV: string[] = [] // the victim's output B had not received
  let vPreKillMaxSeq = 0
  let bPreKillMaxSeq = 0
  let vStream: SseConnection
  let bLive: SseConnection
  let kill: any

  beforeAll(async () => {
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_RESUME_RATE: String(RATE) } })
    opKey = await operatorKey(gw)
    vKey = await agentKey(gw, V)
    bKey = await agentKey(gw, B)
    pKey = await agentKey(gw, P)

    // The victim's instance takes 5 (max_in_flight=5) and does not resolve them.
    vStream = await openSseStream(gw.url, vKey, streamPath(V, 'lease_seconds=600&max_in_flight=5'), { 'x-instance-id': 'v-1' })
    open.push(vStream)
    leasedToV = await sendMany(gw, pKey, V, 5, 'leased')
    await vStream.waitFor((f) => deliveredFrames(f).length === 5, 5_000, '5 deliveries to the victim')
    vPreKillMaxSeq = Math.max(...deliveredFrames(vStream.frames).map((f) => f.data.seq as number))

    // B receives 3 of the victim's intents before the kill (leased to b-1, not resolved yet).
    receivedByB = await sendMany(gw, vKey, B, 3, 'received-by-b')
    const gotByB: string[] = []
    while (gotByB.length < 3) {
      const r = await readSse(gw.url, bKey, streamPath(B, 'wait_seconds=5&lease_seconds=600'), { 'x-instance-id': 'b-1' })
      expect(r.status).toBe(200)
      for (const f of deliveredFrames(r.frames as TimedSseFrame[])) {
        gotByB.push(f.data.intent_id)
        bPreKillMaxSeq = Math.max(bPreKillMaxSeq, f.data.seq)
      }
    }
    expect(gotByB).toEqual(receivedByB)

    // 100 more queued for the victim (its stream is full), 100 more from it to B (B offline).
    queuedToV = await sendMany(gw, pKey, V, 100, 'queued')
    pendingFromV = await sendMany(gw, vKey, B, 100, 'pending')
    const before = await getIntents(gw, opKey, [...queuedToV.slice(0, 3), ...pendingFromV.slice(0, 3)])
    for (const i of before) expect([i.delivery_state, i.delivery_attempt]).toEqual(['queued', 0])
    expect(deliveredFrames(vStream.frames)).toHaveLength(5)

    kill = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/kill`, { reason: 'hold test' })
    expect(kill.status).toBe(200)
  }, 60_000)

  afterAll(async () => {
    for (const s of open) s.close()
    await gw?.close()
  })

  describe('(a) at kill', () => {
    it('reports every held intent and cuts the victim stream', async () => {
      expect(kill.body).toMatchObject({ ok: true, address: V, health_status: 'killed', held_intents: 205 })
      await vStream.done
      expect(vStream.frames[vStream.frames.length - 1]!.event).toBe('agent.killed')
      expect(deliveredFrames(vStream.frames)).toHaveLength(5)
    })

    it('work to the victim (queued and leased) and its undelivered output are all held, with intent.held', async () => {
      const killedAt = Date.parse(kill.body.killed_at)
      const check = async (ids: string[], status: string, attempt: number) => {
        const intents = await getIntents(gw, opKey, ids)
        for (const i of intents) {
          expect({ id: i.intent_id, state: i.delivery_state, status: i.status, attempt: i.delivery_attempt, lease: i.lease_expires_at }).toEqual({
            id: i.intent_id,
            state: 'held',
            status, // a hold never changes status
            attempt,
            lease: null,
          })
        }
        const events = await getEvents(gw, opKey, ids)
        events.forEach((log, n) => {
          const held = log.filter((e) => e.event_type === 'intent.held')
          expect(held, ids[n]).toHaveLength(1)
          expect(held[0]).toMatchObject({ status, details: expect.objectContaining({ reason: 'hold test' }) })
          expect(Date.parse(held[0].at)).toBeGreaterThanOrEqual(killedAt)
          // The held event is the last thing that happened to it.
          expect(log[log.length - 1].event_type).toBe('intent.held')
        })
      }
      await check(leasedToV, 'DELIVERED', 1)
      await check(queuedToV, 'SUBMITTED', 0)
      await check(pendingFromV, 'SUBMITTED', 0)
    })

    it('B receives none of the victim’s undelivered output while it is killed', async () => {
      // A persistent stream of B stays open from now until after the resume.
      bLive = await openSseStream(gw.url, bKey, streamPath(B, 'lease_seconds=600&max_in_flight=500'), { 'x-instance-id': 'b-live' })
      open.push(bLive)
      expect(bLive.status).toBe(200)
      // A windowed read by another instance sees nothing for its whole window.
      const t0 = performance.now()
      const window = await readSse(gw.url, bKey, streamPath(B, 'wait_seconds=1&lease_seconds=600'), { 'x-instance-id': 'b-2' })
      expect(performance.now() - t0).toBeGreaterThanOrEqual(900)
      expect(window.frames.map((f) => f.event)).toEqual(['stream.timeout'])
      expect(deliveredFrames(bLive.frames)).toEqual([])
      const still = await getIntents(gw, opKey, pendingFromV.slice(0, 5))
      for (const i of still) expect(i.delivery_state).toBe('held')
    })

    it('what B had already received before the kill stays with B, and B can still resolve it', async () => {
      const intents = await getIntents(gw, bKey, receivedByB)
      for (const i of intents) expect([i.delivery_state, i.status]).toEqual(['leased', 'DELIVERED'])
      const events = await getEvents(gw, opKey, receivedByB)
      for (const log of events) expect(log.map((e) => e.event_type)).not.toContain('intent.held')
      for (const id of receivedByB) {
        const ack = await api(gw.url, bKey, 'POST', `/v1/intents/${id}/ack`, {}, { 'x-instance-id': 'b-1' })
        expect(ack.status).toBe(200)
        const res = await api(gw.url, bKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED', result: { by: 'b' } })
        expect(res.status).toBe(200)
        expect(res.body.intent.status).toBe('COMPLETED')
      }
      expect(deliveredFrames(bLive.frames)).toEqual([])
    })
  })

  describe('(c) resume', () => {
    let resume: any
    // Lower bounds on pacing are measured from when the resume was *sent*: the gateway's due
    // times count from its clock at the resume, which is never earlier than this, however long
    // the resume's own transaction takes on a busy machine. (Measured from the answer, a slow
    // resume ate into the margin and made "≥ 700 ms" fail.)
    let resumeSentAt = 0
    // The victim's stream can only open after the resume answered (before, it is 403): what fell
    // due meanwhile arrives at once when it connects. Pacing is judged on what came after.
    let vConnectedAt = 0
    const CATCH_UP_MS = 100
    let vAfter: SseConnection

    beforeAll(async () => {
      resumeSentAt = performance.now()
      resume = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/resume`, { reason: 'fixed' })
      vAfter = await openSseStream(gw.url, vKey, streamPath(V, `lease_seconds=600&max_in_flight=500&since=${vPreKillMaxSeq}`), {
        'x-instance-id': 'v-1',
      })
      vConnectedAt = performance.now()
      open.push(vAfter)
    })

    it('answers {ok, address_id, address, health_status, resumed_at, redelivering}', async () => {
      expect(resume.status).toBe(200)
      expect(resume.body).toEqual({
        ok: true,
        address_id: kill.body.address_id,
        address: V,
        health_status: 'unknown', // until the next heartbeat (§2.5)
        resumed_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/),
        redelivering: 205,
      })
      expect(Date.parse(resume.body.resumed_at)).toBeGreaterThanOrEqual(Date.parse(kill.body.killed_at))
      expect(vAfter.status).toBe(200)
      const show = await api(gw.url, opKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(V)}`)
      expect(show.body.agent.health_status).toBe('unknown')
      expect(show.body.agent.killed_at).toBeUndefined()
    })

    it('delivers all 105 held intents to the victim once, oldest first, new seqs, leased ones as attempt 2', async () => {
      await vAfter.waitFor((f) => deliveredFrames(f).length >= 105, 15_000, '105 redeliveries to the victim')
      const frames = deliveredFrames(vAfter.frames)
      // Exactly the held work, each once, in creation order.
      expect(frames.map((f) => f.data.intent_id)).toEqual([...leasedToV, ...queuedToV])
      const seqs = frames.map((f) => f.data.seq as number)
      expect(Math.min(...seqs)).toBeGreaterThan(vPreKillMaxSeq)
      for (let i = 1; i < seqs.length; i += 1) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number)
      for (const f of frames) expect(f.id).toBe(String(f.data.seq))
      const attempts = frames.map((f) => f.data.delivery_attempt)
      expect(attempts.slice(0, 5)).toEqual([2, 2, 2, 2, 2])
      expect(new Set(attempts.slice(5))).toEqual(new Set([1]))

      const leasedEvents = await getEvents(gw, opKey, leasedToV)
      for (const log of leasedEvents) {
        const types = log.map((e) => e.event_type)
        expect(types.filter((t) => t === 'intent.delivered')).toHaveLength(1) // before the kill
        expect(types.filter((t) => t === 'intent.redelivered')).toHaveLength(1) // after the resume
        expect(types.indexOf('intent.held')).toBeLessThan(types.indexOf('intent.redelivered'))
        const redelivered = log.find((e) => e.event_type === 'intent.redelivered')
        expect(Date.parse(redelivered.at)).toBeGreaterThanOrEqual(Date.parse(resume.body.resumed_at))
      }
      const queuedEvents = await getEvents(gw, opKey, queuedToV)
      for (const log of queuedEvents) {
        const types = log.map((e) => e.event_type)
        expect(types.filter((t) => t === 'intent.delivered')).toHaveLength(1)
        expect(types).not.toContain('intent.redelivered')
        expect(types.indexOf('intent.held')).toBeLessThan(types.indexOf('intent.delivered'))
      }
    })

    it('paces the release: at 100/s the victim’s 105 take ≥ 0.7 s, and never more than ~100/s arrive', () => {
      const frames = deliveredFrames(vAfter.frames).slice(0, 105)
      const spreadMs = frames[frames.length - 1]!.receivedAt - frames[0]!.receivedAt
      const sinceResumeMs = frames[frames.length - 1]!.receivedAt - resumeSentAt
      const connectMs = vConnectedAt - resumeSentAt
      const catchUp = frames.filter((f) => f.receivedAt < vConnectedAt + CATCH_UP_MS)
      const paced = frames.slice(catchUp.length)
      const burst = maxInWindow(paced, 300)
      console.log(
        `kill-hold-resume: 105 held intents to the victim at ${RATE}/s: resume→connect ${connectMs.toFixed(0)} ms (${catchUp.length} due by then), first→last ${spreadMs.toFixed(0)} ms, resume→last ${sinceResumeMs.toFixed(0)} ms, max ${burst} in any 300 ms after`,
      )
      // Slot 104 is due 1.04 s after the resume: unpaced, all would arrive at connect.
      expect(sinceResumeMs).toBeGreaterThanOrEqual(1_000)
      // At connect, no more than had fallen due (RATE/s since the resume, plus a batch's slack).
      expect(catchUp.length).toBeLessThanOrEqual(Math.ceil(((connectMs + CATCH_UP_MS) * RATE) / 1000) + 10)
      // "At most RATE intents/s" (§2.4): no intent arrives before its slot, so by any moment t no more
      // than (t − resume) × RATE have arrived — never a burst of the whole backlog.
      expect(earliestAheadOfSlot(frames, resumeSentAt, RATE), `receive offsets (ms after resume): ${offsets(frames, resumeSentAt)}`).toBeLessThanOrEqual(
        SLOT_SLACK_MS,
      )
    })

    it('delivers the victim’s 100 held outbound intents to B, oldest first, after the inbound ones (one budget)', async () => {
      await bLive.waitFor((f) => deliveredFrames(f).length >= 100, 15_000, '100 held intents at B')
      const frames = deliveredFrames(bLive.frames)
      expect(frames.map((f) => f.data.intent_id)).toEqual(pendingFromV)
      const seqs = frames.map((f) => f.data.seq as number)
      expect(Math.min(...seqs)).toBeGreaterThan(bPreKillMaxSeq)
      for (let i = 1; i < seqs.length; i += 1) expect(seqs[i]).toBeGreaterThan(seqs[i - 1] as number)
      expect(new Set(frames.map((f) => f.data.delivery_attempt))).toEqual(new Set([1]))
      for (const f of frames) expect(f.data.from_agent).toBe(V)
      // One budget per resumed agent covering both directions, oldest first (§11): the 100
      // outbound come after the 105 inbound, so 205 at 100/s end ≥ ~2 s after the resume.
      const lastAt = frames[frames.length - 1]!.receivedAt
      console.log(`kill-hold-resume: 100 held outbound intents at B: resume→last ${(lastAt - resumeSentAt).toFixed(0)} ms`)
      // Slot 105 of the budget is due 1.05 s after the resume, slot 204 2.04 s after it.
      expect(frames[0]!.receivedAt - resumeSentAt).toBeGreaterThanOrEqual(1_000)
      expect(lastAt - resumeSentAt).toBeGreaterThanOrEqual(2_000)
      // The budget covers both directions: B's 100 take slots 105…204, none arriving before its slot.
      expect(earliestAheadOfSlot(frames, resumeSentAt, RATE, 105), `B offsets: ${offsets(frames, resumeSentAt)}`).toBeLessThanOrEqual(SLOT_SLACK_MS)
    })

    it('delivered nothing twice anywhere (long leases, no expiry)', async () => {
      const all = [...deliveredFrames(vAfter.frames), ...deliveredFrames(bLive.frames)].map((f) => f.data.intent_id)
      expect(new Set(all).size).toBe(all.length)
      const intents = await getIntents(gw, opKey, [...leasedToV, ...queuedToV, ...pendingFromV])
      for (const i of intents) expect([i.delivery_state, i.status]).toEqual(['leased', 'DELIVERED'])
    })

    it('records the resume in the audit trail and mesh events', async () => {
      const audit = await api(gw.url, opKey, 'GET', `/v1/audit/events?action_prefix=agent.&target=${encodeURIComponent(V)}`)
      expect(audit.body.entries.map((e: any) => e.action)).toEqual(['agent.kill', 'agent.resume'])
      expect(audit.body.entries[0]).toMatchObject({ reason: 'hold test', after: { health_status: 'killed', cancel_pending: false } })
      expect(audit.body.entries[1]).toMatchObject({
        reason: 'fixed',
        before: { health_status: 'killed' },
        after: { redelivering: 205 },
      })
      const events = await api(gw.url, opKey, 'GET', `/v1/mesh/events?address=${encodeURIComponent(V)}`)
      expect(events.body.events.slice(0, 2).map((e: any) => e.event_type)).toEqual(['agent.resumed', 'agent.killed'])
      expect(events.body.events[0].details).toMatchObject({ reason: 'fixed', redelivering: 205 })
    })

    it('resuming a live agent is a 200 no-op with redelivering 0 (no audit entry)', async () => {
      const again = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/resume`, {})
      expect(again.status).toBe(200)
      expect(again.body).toMatchObject({ ok: true, address: V, redelivering: 0 })
      expect(again.body.health_status).not.toBe('killed')
      // Body-less with content-type json works too.
      const res = await fetch(`${gw.url}/v1/mesh/agents/${encodeURIComponent(V)}/resume`, {
        method: 'POST',
        headers: { 'x-api-key': opKey, 'content-type': 'application/json' },
      })
      expect(res.status).toBe(200)
      expect(((await res.json()) as any).redelivering).toBe(0)
      const audit = await api(gw.url, opKey, 'GET', `/v1/audit/events?action_prefix=agent.resume&target=${encodeURIComponent(V)}`)
      expect(audit.body.entries).toHaveLength(1)
    })

    it('health is unknown after the resume until the next heartbeat, then healthy (§2.5)', async () => {
      const before = await api(gw.url, opKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(V)}`)
      expect(before.body.agent.health_status).toBe('unknown')
      const beat = await api(gw.url, vKey, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'v-1' })
      expect([beat.status, beat.body.health_status]).toEqual([200, 'healthy'])
      const after = await api(gw.url, opKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(V)}`)
      expect(after.body.agent.health_status).toBe('healthy')
    })

    it('sends, deliveries, acks and resolves work again after the resume', async () => {
      const [toV] = await sendMany(gw, pKey, V, 1, 'after-resume')
      await vAfter.waitFor((f) => f.some((x) => x.data?.intent_id === toV), 5_000, 'a fresh delivery to the victim')
      expect((await api(gw.url, vKey, 'POST', `/v1/intents/${toV}/ack`, {}, { 'x-instance-id': 'v-1' })).status).toBe(200)
      expect((await api(gw.url, vKey, 'POST', `/v1/intents/${toV}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
      // A redelivered one can be resolved too.
      expect((await api(gw.url, vKey, 'POST', `/v1/intents/${leasedToV[0]}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
      const [fromV] = await sendMany(gw, vKey, B, 1, 'after-resume')
      await bLive.waitFor((f) => f.some((x) => x.data?.intent_id === fromV), 5_000, 'a fresh delivery from the victim')
      expect((await api(gw.url, bKey, 'POST', `/v1/intents/${fromV}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
    })
  })
})

describe.each(ENGINES)('kill {cancel_pending: true} cancels the victim’s undelivered output instead of holding it (%s)', (engine) => {
  const V = 'agent://acme/prod/cancel-victim'
  const B = 'agent://acme/prod/cancel-downstream'
  const P = 'agent://acme/prod/cancel-upstream'
  let gw: TestGateway
  let opKey: string
  let vKey: string
  let bKey: string
  let toV: string[]
  let fromV: string[]
  let kill: any
  const open: SseConnection[] = []

  beforeAll(async () => {
    gw = await startTestGateway({ engine }) // default CHOKEPOINT_RESUME_RATE (50/s)
    opKey = await operatorKey(gw)
    vKey = await agentKey(gw, V)
    bKey = await agentKey(gw, B)
    const pKey = await agentKey(gw, P)
    toV = await sendMany(gw, pKey, V, 40, 'to-victim')
    fromV = await sendMany(gw, vKey, B, 10, 'from-victim')
    kill = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/kill`, {
      reason: 'stop the rogue',
      cancel_pending: true,
    })
  })
  afterAll(async () => {
    for (const s of open) s.close()
    await gw?.close()
  })

  it('cancels the outbound (CANCELED, intent.canceled with the reason) and holds the inbound', async () => {
    expect(kill.status).toBe(200)
    expect(kill.body).toMatchObject({ ok: true, address: V, health_status: 'killed', held_intents: 40 })
    const out = await getIntents(gw, opKey, fromV)
    for (const i of out) {
      expect([i.status, i.delivery_state]).toEqual(['CANCELED', 'done'])
      expect(i.error).toMatchObject({ code: 'canceled' })
    }
    const outEvents = await getEvents(gw, opKey, fromV)
    for (const log of outEvents) {
      const last = log[log.length - 1]
      expect(last).toMatchObject({ event_type: 'intent.canceled', status: 'CANCELED', details: expect.objectContaining({ reason: 'stop the rogue' }) })
      expect(log.map((e: any) => e.event_type)).not.toContain('intent.held')
    }
    const inbound = await getIntents(gw, opKey, toV)
    for (const i of inbound) expect([i.status, i.delivery_state]).toEqual(['SUBMITTED', 'held'])
  })

  it('audits the kill with cancel_pending in `after`, and the mesh event carries it', async () => {
    const audit = await api(gw.url, opKey, 'GET', `/v1/audit/events?action_prefix=agent.kill&target=${encodeURIComponent(V)}`)
    expect(audit.body.entries).toHaveLength(1)
    expect(audit.body.entries[0]).toMatchObject({
      action: 'agent.kill',
      target: V,
      reason: 'stop the rogue',
      before: { health_status: 'unknown', killed_at: null },
      after: { health_status: 'killed', killed_at: kill.body.killed_at, cancel_pending: true },
    })
    const events = await api(gw.url, opKey, 'GET', `/v1/mesh/events?event_type=agent.killed&address=${encodeURIComponent(V)}`)
    expect(events.body.events[0]).toMatchObject({ event_type: 'agent.killed', details: { reason: 'stop the rogue', cancel_pending: true } })
  })

  it('B never receives the canceled intents, not even after the resume; the inbound are redelivered paced (default 50/s)', async () => {
    const before = await readSse(gw.url, bKey, streamPath(B, 'wait_seconds=1'), { 'x-instance-id': 'b-1' })
    expect(before.frames.map((f) => f.event)).toEqual(['stream.timeout'])

    const resumeSentAt = performance.now()
    const resume = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/resume`, {})
    expect(resume.status).toBe(200)
    expect(resume.body.redelivering).toBe(40)
    const vStream = await openSseStream(gw.url, vKey, streamPath(V, 'lease_seconds=600&max_in_flight=100'), { 'x-instance-id': 'v-1' })
    open.push(vStream)
    await vStream.waitFor((f) => deliveredFrames(f).length >= 40, 10_000, '40 redeliveries')
    const frames = deliveredFrames(vStream.frames)
    expect(frames.map((f) => f.data.intent_id)).toEqual(toV)
    const spreadMs = frames[39]!.receivedAt - frames[0]!.receivedAt
    const burst = maxInWindow(frames, 250)
    console.log(`kill-hold-resume: 40 held intents at the default rate: first→last ${spreadMs.toFixed(0)} ms, max ${burst} in any 250 ms`)
    expect(spreadMs).toBeGreaterThanOrEqual(550) // 39 gaps × 20 ms = 780 ms
    // At most 50/s: no intent before its slot (20 ms apart from the resume).
    expect(earliestAheadOfSlot(frames, resumeSentAt, 50), `receive offsets: ${offsets(frames, resumeSentAt)}`).toBeLessThanOrEqual(SLOT_SLACK_MS)

    const after = await readSse(gw.url, bKey, streamPath(B, 'wait_seconds=1'), { 'x-instance-id': 'b-1' })
    expect(after.frames.map((f) => f.event)).toEqual(['stream.timeout'])
    const out = await getIntents(gw, opKey, fromV)
    for (const i of out) expect(i.status).toBe('CANCELED')
  })
})

describe.each(ENGINES)('work between two killed agents stays held until both are resumed (%s)', (engine) => {
  const C = 'agent://acme/prod/pair-c'
  const D = 'agent://acme/prod/pair-d'
  let gw: TestGateway
  let opKey: string
  let cKey: string
  let dKey: string
  let cToD: string[]
  let dToC: string[]
  const open: SseConnection[] = []

  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    opKey = await operatorKey(gw)
    cKey = await agentKey(gw, C)
    dKey = await agentKey(gw, D)
    cToD = await sendMany(gw, cKey, D, 3, 'c-to-d')
    dToC = await sendMany(gw, dKey, C, 2, 'd-to-c')
  })
  afterAll(async () => {
    for (const s of open) s.close()
    await gw?.close()
  })

  it('resuming one of them releases nothing that involves the other; resuming both releases it all', async () => {
    const killC = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(C)}/kill`, { reason: 'c' })
    expect([killC.status, killC.body.held_intents]).toEqual([200, 5])
    const killD = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(D)}/kill`, { reason: 'd' })
    expect(killD.status).toBe(200)
    for (const i of await getIntents(gw, opKey, [...cToD, ...dToC])) expect(i.delivery_state).toBe('held')

    // C comes back: its inbound is from a killed sender, its outbound is for a killed recipient.
    const resumeC = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(C)}/resume`, {})
    expect([resumeC.status, resumeC.body.redelivering]).toEqual([200, 0])
    const cWindow = await readSse(gw.url, cKey, streamPath(C, 'wait_seconds=1'), { 'x-instance-id': 'c-1' })
    expect(cWindow.frames.map((f) => f.event)).toEqual(['stream.timeout'])
    for (const i of await getIntents(gw, opKey, [...cToD, ...dToC])) expect(i.delivery_state).toBe('held')
    // New work from C to the killed D is refused, and nothing of D's reaches C.
    const toD = await api(gw.url, cKey, 'POST', '/v1/intents', { intent_type: 'x.y', to_agent: D, payload: {} })
    expect([toD.status, toD.body.error.code]).toEqual([403, 'agent_killed'])

    // D comes back: now everything between them flows, each side gets its own, in order.
    const resumeD = await api(gw.url, opKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(D)}/resume`, {})
    expect([resumeD.status, resumeD.body.redelivering]).toEqual([200, 5])
    const cStream = await openSseStream(gw.url, cKey, streamPath(C, 'lease_seconds=600'), { 'x-instance-id': 'c-1' })
    const dStream = await openSseStream(gw.url, dKey, streamPath(D, 'lease_seconds=600'), { 'x-instance-id': 'd-1' })
    open.push(cStream, dStream)
    await cStream.waitFor((f) => deliveredFrames(f).length >= 2, 10_000, "D's 2 intents at C")
    await dStream.waitFor((f) => deliveredFrames(f).length >= 3, 10_000, "C's 3 intents at D")
    expect(deliveredFrames(cStream.frames).map((f) => f.data.intent_id)).toEqual(dToC)
    expect(deliveredFrames(dStream.frames).map((f) => f.data.intent_id)).toEqual(cToD)
  })
})
