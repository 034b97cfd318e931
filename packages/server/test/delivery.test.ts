/**
 * Delivery guarantees (DESIGN §2.3, §5a, §5b, §10, §11): competing consumers, exactly-one
 * lease per intent, per-address seqs, lease expiry and redelivery, attempt limits, `since`
 * reconnects, max_in_flight, and window endings.
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  agentKey,
  api,
  openSseStream,
  pollUntil,
  readSse,
  startTestGateway,
  testEngines,
  type SseConnection,
  type SseFrame,
  type TestGateway,
} from './harness.js'

/** Every case runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('delivery.test.ts')

const S = 'agent://acme/prod/dl-sender'

const streamPath = (address: string, query: string): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

const deliveries = (frames: SseFrame[]): SseFrame[] => frames.filter((f) => f.event === 'intent.delivered')

describe.each(ENGINES)('delivery (%s)', (engine) => {
  let gw: TestGateway
  let keyS: string
  const open: SseConnection[] = []

  async function send(to: string, payload: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<string> {
    const res = await api(gw.url, keyS, 'POST', '/v1/intents', { intent_type: 'work.item.v1', to_agent: to, payload, ...extra })
    if (res.status !== 200) throw new Error(`send: ${res.status} ${JSON.stringify(res.body)}`)
    return res.body.intent_id as string
  }

  async function stream(key: string, address: string, query: string, instance: string): Promise<SseConnection> {
    const s = await openSseStream(gw.url, key, streamPath(address, query), { 'x-instance-id': instance })
    expect(s.status, JSON.stringify(s.body)).toBe(200)
    open.push(s)
    return s
  }

  async function intent(id: string): Promise<any> {
    const res = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${id}`)
    expect(res.status).toBe(200)
    return res.body.intent
  }

  async function eventTypes(id: string): Promise<string[]> {
    const res = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${id}/events`)
    expect(res.status).toBe(200)
    return (res.body.events as any[]).map((e) => e.event_type)
  }

  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    keyS = await agentKey(gw, S)
  })
  afterAll(async () => {
    for (const s of open) s.close()
    await gw.close()
  })

  it('(a) two instances competing for 1,000 intents: each delivered exactly once, seqs strictly increasing', async () => {
    const W = 'agent://acme/prod/dl-competing'
    const keyW = await agentKey(gw, W)
    const TOTAL = 1_000
    const instances = ['compete-1', 'compete-2']
    const streams = await Promise.all(
      instances.map((i) => stream(keyW, W, 'max_in_flight=64&lease_seconds=30', i)),
    )
    type Got = { instance: string; seq: number; id: string | undefined; intent_id: string; attempt: number }
    const got: Got[] = []
    const byStream = new Map<string, Got[]>(instances.map((i) => [i, []]))
    const resolveFailures: string[] = []

    // Each consumer resolves what it gets, as it gets it.
    const consumers = streams.map(async (s, n) => {
      const instance = instances[n] as string
      const pending: Promise<void>[] = []
      let i = 0
      for (;;) {
        while (i < s.frames.length) {
          const f = s.frames[i++] as SseFrame
          if (f.event !== 'intent.delivered') {
            resolveFailures.push(`${instance}: unexpected frame ${f.event} ${JSON.stringify(f.data)}`)
            continue
          }
          const g: Got = { instance, seq: f.data.seq, id: f.id, intent_id: f.data.intent_id, attempt: f.data.delivery_attempt }
          got.push(g)
          byStream.get(instance)!.push(g)
          pending.push(
            api(gw.url, keyW, 'POST', `/v1/intents/${g.intent_id}/resolve`, { status: 'COMPLETED', result: { by: instance } }, {
              'x-instance-id': instance,
            }).then((r) => {
              if (r.status !== 200) resolveFailures.push(`${instance} ${g.intent_id}: ${r.status} ${JSON.stringify(r.body)}`)
            }),
          )
        }
        try {
          await s.waitFor((fs) => fs.length > i, 60_000)
        } catch {
          break // closed by the test once everything arrived
        }
      }
      await Promise.all(pending)
    })

    // The sender: 16 concurrent senders, 1,000 intents.
    const sentIds: string[] = []
    let next = 0
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < TOTAL) {
          const n = next++
          sentIds.push(await send(W, { n }))
        }
      }),
    )
    expect(sentIds).toHaveLength(TOTAL)
    expect(new Set(sentIds).size).toBe(TOTAL)

    await pollUntil(() => got.length >= TOTAL, { timeoutMs: 20_000, what: `${TOTAL} deliveries (have ${got.length})` })
    // Every resolve has landed in the store before the streams are closed.
    const completedIds = async (): Promise<string[]> => {
      const ids: string[] = []
      let after: string | null = null
      for (;;) {
        const q: string = `/v1/intents?agent=${encodeURIComponent(W)}&direction=received&status=COMPLETED&limit=500${after ? `&after=${after}` : ''}`
        const page = await api(gw.url, gw.adminKey, 'GET', q)
        expect(page.status).toBe(200)
        ids.push(...(page.body.intents as any[]).map((i) => i.intent_id as string))
        after = page.body.next_after
        if (!after) return ids
      }
    }
    await pollUntil(async () => (await completedIds()).length >= TOTAL, { timeoutMs: 15_000, intervalMs: 100, what: 'all resolves' })
    for (const s of streams) s.close()
    await Promise.all(consumers)

    expect(resolveFailures).toEqual([])
    // Exactly once in total: no intent to both instances, none missing, none twice.
    expect(got).toHaveLength(TOTAL)
    const deliveredIds = got.map((g) => g.intent_id)
    expect(new Set(deliveredIds).size).toBe(TOTAL)
    expect([...deliveredIds].sort()).toEqual([...sentIds].sort())
    for (const g of got) expect(g.attempt).toBe(1)
    // Seqs: the SSE id is the seq; strictly increasing per stream; never reused across instances.
    for (const g of got) expect(g.id).toBe(String(g.seq))
    for (const [instance, list] of byStream) {
      for (let k = 1; k < list.length; k += 1) {
        expect(list[k]!.seq, `${instance} seq order at ${k}`).toBeGreaterThan(list[k - 1]!.seq)
      }
    }
    const seqs = got.map((g) => g.seq)
    expect(new Set(seqs).size).toBe(TOTAL)
    expect(Math.min(...seqs)).toBeGreaterThanOrEqual(1)
    // Both instances took part.
    for (const instance of instances) expect(byStream.get(instance)!.length, instance).toBeGreaterThan(0)

    // The store agrees: every intent COMPLETED once, with one delivery recorded by the instance that got it.
    const completed = await completedIds()
    expect(completed.sort()).toEqual([...sentIds].sort())
    for (const g of got.filter((_, k) => k % 50 === 0)) {
      const ev = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${g.intent_id}/events`)
      const delivered = (ev.body.events as any[]).filter((e) => e.event_type.startsWith('intent.') && e.status === 'DELIVERED')
      expect(delivered).toHaveLength(1)
      expect(delivered[0].details).toMatchObject({ instance_id: g.instance })
    }
  }, 60_000) // ~3 s on an idle machine; generous for a loaded CI box

  it('(b) an expired lease is redelivered to another instance with delivery_attempt 2 and a higher seq', async () => {
    const L = 'agent://acme/prod/dl-lease'
    const keyL = await agentKey(gw, L)
    const id = await send(L, { job: 'slow' })

    const first = await readSse(gw.url, keyL, streamPath(L, 'wait_seconds=5&lease_seconds=1'), { 'x-instance-id': 'lease-1' })
    const f1 = deliveries(first.frames)
    expect(f1).toHaveLength(1)
    expect(f1[0]!.data).toMatchObject({ intent_id: id, delivery_attempt: 1 })
    const seq1 = f1[0]!.data.seq as number
    const lease1 = Date.parse(f1[0]!.data.lease_expires_at)
    expect(lease1 - Date.now()).toBeLessThanOrEqual(1_000)

    // Instance 1 never resolves. Instance 2 waits.
    const second = await stream(keyL, L, 'lease_seconds=30', 'lease-2')
    const frames = await second.waitFor((fs) => deliveries(fs).some((f) => f.data.intent_id === id), 8_000, 'the redelivery')
    const receivedAt = Date.now()
    const f2 = deliveries(frames).find((f) => f.data.intent_id === id)!
    expect(f2.data.delivery_attempt).toBe(2)
    expect(f2.data.seq).toBeGreaterThan(seq1)
    expect(f2.id).toBe(String(f2.data.seq))
    // Not before the first lease ran out.
    expect(receivedAt).toBeGreaterThanOrEqual(lease1 - 5)

    const types = await eventTypes(id)
    expect(types).toEqual(['intent.created', 'intent.submitted', 'intent.delivered', 'intent.redelivered'])
    const ev = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${id}/events`)
    expect(ev.body.events[3].details).toMatchObject({ instance_id: 'lease-2', delivery_attempt: 2 })
    expect(await intent(id)).toMatchObject({ status: 'DELIVERED', delivery_state: 'leased', delivery_attempt: 2 })

    // The first instance's stale lease does not come back on its reconnect.
    const reconnect = await readSse(gw.url, keyL, streamPath(L, 'wait_seconds=1&since=0'), { 'x-instance-id': 'lease-1' })
    expect(deliveries(reconnect.frames)).toEqual([])

    const done = await api(gw.url, keyL, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' })
    expect(done.status).toBe(200)
    second.close()
  })

  it('(b2) ack keeps a short lease alive: no redelivery while acks continue', async () => {
    const K = 'agent://acme/prod/dl-keepalive'
    const keyK = await agentKey(gw, K)
    const id = await send(K)
    const first = await readSse(gw.url, keyK, streamPath(K, 'wait_seconds=5&lease_seconds=1'), { 'x-instance-id': 'ka-1' })
    expect(deliveries(first.frames)).toHaveLength(1)
    const other = await stream(keyK, K, 'lease_seconds=30', 'ka-2')
    const until = Date.now() + 1_700
    while (Date.now() < until) {
      const ack = await api(gw.url, keyK, 'POST', `/v1/intents/${id}/ack`, {})
      expect(ack.status).toBe(200)
      expect(Date.parse(ack.body.intent.lease_expires_at)).toBeGreaterThan(Date.now() + 500)
      await new Promise((resolve) => setTimeout(resolve, 300))
    }
    expect(deliveries(other.frames)).toEqual([])
    expect(await intent(id)).toMatchObject({ status: 'ACKNOWLEDGED', delivery_attempt: 1, delivery_state: 'leased' })
    expect(await eventTypes(id)).toEqual(['intent.created', 'intent.submitted', 'intent.delivered', 'intent.acknowledged'])
    other.close()
  })

  it('(c) after max_delivery_attempts unresolved leases the intent is FAILED with intent.delivery_failed', async () => {
    const F = 'agent://acme/prod/dl-fail'
    const keyF = await agentKey(gw, F)
    const id = await send(F, { doomed: true }, { max_delivery_attempts: 2 })
    expect(await intent(id)).toMatchObject({ max_delivery_attempts: 2 })
    const s = await stream(keyF, F, 'lease_seconds=1', 'fail-1')

    const failed = await pollUntil(
      async () => {
        const i = await intent(id)
        return i.status === 'FAILED' ? i : null
      },
      { timeoutMs: 10_000, intervalMs: 50, what: 'the intent to fail' },
    )
    expect(failed).toMatchObject({ status: 'FAILED', delivery_state: 'done', delivery_attempt: 2 })
    const types = await eventTypes(id)
    expect(types).toEqual([
      'intent.created',
      'intent.submitted',
      'intent.delivered',
      'intent.redelivered',
      'intent.delivery_failed',
    ])
    const ev = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${id}/events`)
    expect(ev.body.events[4]).toMatchObject({ status: 'FAILED', seq: 5 })

    // The stream saw exactly the two attempts, with increasing seqs.
    const mine = deliveries(s.frames).filter((f) => f.data.intent_id === id)
    expect(mine.map((f) => f.data.delivery_attempt)).toEqual([1, 2])
    expect(mine[1]!.data.seq).toBeGreaterThan(mine[0]!.data.seq)

    // Terminal: no more deliveries, and ack/resolve are conflicts.
    expect((await api(gw.url, keyF, 'POST', `/v1/intents/${id}/ack`, {})).status).toBe(409)
    const late = await api(gw.url, keyF, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' })
    expect(late.status).toBe(409)
    expect(late.body.error.code).toBe('conflict')
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(deliveries(s.frames).filter((f) => f.data.intent_id === id)).toHaveLength(2)
    expect((await intent(id)).status).toBe('FAILED')
    s.close()
  })

  it('(d) reconnecting with `since` re-sends still-leased deliveries with original seqs, without extending leases', async () => {
    const D = 'agent://acme/prod/dl-since'
    const keyD = await agentKey(gw, D)
    const N = 5
    const ids: string[] = []
    for (let n = 0; n < N; n += 1) ids.push(await send(D, { n }))

    const first = await readSse(gw.url, keyD, streamPath(D, 'wait_seconds=5&lease_seconds=30'), { 'x-instance-id': 'since-1' })
    const f1 = deliveries(first.frames)
    expect(f1).toHaveLength(N)
    expect(f1.map((f) => f.data.intent_id).sort()).toEqual([...ids].sort())
    const seqs = f1.map((f) => f.data.seq as number)
    for (let k = 1; k < N; k += 1) expect(seqs[k]).toBeGreaterThan(seqs[k - 1]!)
    const leaseById = new Map(f1.map((f) => [f.data.intent_id as string, f.data.lease_expires_at as string]))
    const seqById = new Map(f1.map((f) => [f.data.intent_id as string, f.data.seq as number]))
    expect(first.frames[first.frames.length - 1]).toMatchObject({ event: 'stream.end', data: { ok: true, next_seq: seqs[N - 1]! + 1, reason: 'delivered' } })

    // The client "crashed" without resolving. Let time pass so an extension would be visible.
    await new Promise((resolve) => setTimeout(resolve, 50))

    // Same instance, since=0: everything again, original seqs and leases.
    const t0 = performance.now()
    const again = await readSse(gw.url, keyD, streamPath(D, 'wait_seconds=5&since=0'), { 'x-instance-id': 'since-1' })
    expect(performance.now() - t0).toBeLessThan(2_500)
    const f2 = deliveries(again.frames)
    expect(f2.map((f) => f.data.seq)).toEqual(seqs)
    expect(f2.map((f) => f.id)).toEqual(seqs.map(String))
    for (const f of f2) {
      expect(f.data.lease_expires_at).toBe(leaseById.get(f.data.intent_id))
      expect(f.data.delivery_attempt).toBe(1)
    }
    expect(again.frames[again.frames.length - 1]).toMatchObject({ event: 'stream.end', data: { next_seq: seqs[N - 1]! + 1, reason: 'delivered' } })
    for (const id of ids) {
      const i = await intent(id)
      expect(i).toMatchObject({ delivery_state: 'leased', delivery_attempt: 1 })
      expect(i.lease_expires_at).toBe(leaseById.get(id))
    }
    // No new delivery events were recorded by the re-send.
    expect(await eventTypes(ids[0]!)).toEqual(['intent.created', 'intent.submitted', 'intent.delivered'])

    // since=k: only seq > k.
    const k = seqs[1]!
    const partial = await readSse(gw.url, keyD, streamPath(D, `wait_seconds=5&since=${k}`), { 'x-instance-id': 'since-1' })
    expect(deliveries(partial.frames).map((f) => f.data.seq)).toEqual(seqs.filter((s) => s > k))

    // Last-Event-ID is honoured when since is absent.
    const byHeader = await readSse(gw.url, keyD, streamPath(D, 'wait_seconds=5'), {
      'x-instance-id': 'since-1',
      'last-event-id': String(seqs[2]),
    })
    expect(deliveries(byHeader.frames).map((f) => f.data.seq)).toEqual(seqs.slice(3))

    // A different instance gets none of them while they are leased.
    const otherInstance = await readSse(gw.url, keyD, streamPath(D, 'wait_seconds=1&since=0'), { 'x-instance-id': 'since-2' })
    expect(deliveries(otherInstance.frames)).toEqual([])
    expect(otherInstance.frames).toEqual([{ event: 'stream.timeout', data: { ok: true, next_seq: 1, reason: 'timeout' } }])

    // Acknowledged deliveries are re-sent too; resolved ones are not.
    const acked = ids[0]!
    const resolved = ids[1]!
    expect((await api(gw.url, keyD, 'POST', `/v1/intents/${acked}/ack`, {})).status).toBe(200)
    expect((await api(gw.url, keyD, 'POST', `/v1/intents/${resolved}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
    const third = await readSse(gw.url, keyD, streamPath(D, 'wait_seconds=5&since=0'), { 'x-instance-id': 'since-1' })
    const f3 = deliveries(third.frames)
    expect(f3.map((f) => f.data.intent_id)).not.toContain(resolved)
    expect(f3.map((f) => f.data.seq)).toEqual(seqs.filter((s) => s !== seqById.get(resolved)))
    expect(f3.find((f) => f.data.intent_id === acked)!.data.status).toBe('ACKNOWLEDGED')
  })

  it('(d2) a dropped persistent stream loses nothing: the reconnect gets the leased deliveries first', async () => {
    const D = 'agent://acme/prod/dl-drop'
    const keyD = await agentKey(gw, D)
    const s1 = await stream(keyD, D, 'lease_seconds=30', 'drop-1')
    const ids = [await send(D, { n: 0 }), await send(D, { n: 1 }), await send(D, { n: 2 })]
    await s1.waitFor((fs) => deliveries(fs).length === 3, 5_000, '3 deliveries')
    const seqs = deliveries(s1.frames).map((f) => f.data.seq)
    s1.close()
    await s1.done
    const later = await send(D, { n: 3 })

    const s2 = await stream(keyD, D, 'lease_seconds=30&since=0', 'drop-1')
    await s2.waitFor((fs) => deliveries(fs).length === 4, 5_000, 're-sent + new deliveries')
    const f = deliveries(s2.frames)
    expect(f.slice(0, 3).map((x) => x.data.intent_id)).toEqual(deliveries(s1.frames).map((x) => x.data.intent_id))
    expect(f.slice(0, 3).map((x) => x.data.seq)).toEqual(seqs)
    expect(f[3]!.data.intent_id).toBe(later)
    expect(f[3]!.data.seq).toBeGreaterThan(Math.max(...seqs))
    expect(new Set(f.map((x) => x.data.intent_id))).toEqual(new Set([...ids, later]))
    s2.close()
  })

  it('(e) max_in_flight bounds what one stream holds until it resolves some', async () => {
    const M = 'agent://acme/prod/dl-inflight'
    const keyM = await agentKey(gw, M)
    for (let n = 0; n < 6; n += 1) await send(M, { n })
    const s = await stream(keyM, M, 'max_in_flight=3&lease_seconds=30', 'mif-1')
    await s.waitFor((fs) => deliveries(fs).length >= 3, 5_000, '3 deliveries')
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(deliveries(s.frames)).toHaveLength(3)

    // Acknowledging does not free a slot; resolving does, and the next one is pushed promptly.
    const [d0, d1] = deliveries(s.frames)
    expect((await api(gw.url, keyM, 'POST', `/v1/intents/${d0!.data.intent_id}/ack`, {})).status).toBe(200)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(deliveries(s.frames)).toHaveLength(3)

    const t0 = performance.now()
    expect((await api(gw.url, keyM, 'POST', `/v1/intents/${d0!.data.intent_id}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
    await s.waitFor((fs) => deliveries(fs).length >= 4, 5_000, 'a 4th delivery')
    expect(performance.now() - t0).toBeLessThan(1_000)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(deliveries(s.frames)).toHaveLength(4)

    expect((await api(gw.url, keyM, 'POST', `/v1/intents/${d1!.data.intent_id}/resolve`, { status: 'FAILED' })).status).toBe(200)
    await s.waitFor((fs) => deliveries(fs).length >= 5, 5_000, 'a 5th delivery')
    // A second instance of the same agent takes the rest meanwhile (its own budget).
    const other = await readSse(gw.url, keyM, streamPath(M, 'wait_seconds=5&max_in_flight=3'), { 'x-instance-id': 'mif-2' })
    expect(deliveries(other.frames)).toHaveLength(1)
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(deliveries(s.frames)).toHaveLength(5)
    s.close()

    // A windowed response carries at most max_in_flight deliveries.
    const M2 = 'agent://acme/prod/dl-inflight-window'
    const keyM2 = await agentKey(gw, M2)
    for (let n = 0; n < 5; n += 1) await send(M2, { n })
    const w = await readSse(gw.url, keyM2, streamPath(M2, 'wait_seconds=3&max_in_flight=3'), { 'x-instance-id': 'w-1' })
    expect(deliveries(w.frames)).toHaveLength(3)
    // Reconnecting (since defaults to 0) re-sends the 3 it holds and leases nothing new.
    const w2 = await readSse(gw.url, keyM2, streamPath(M2, 'wait_seconds=1&max_in_flight=3'), { 'x-instance-id': 'w-1' })
    expect(deliveries(w2.frames).map((f) => f.data.seq)).toEqual(deliveries(w.frames).map((f) => f.data.seq))
    const w3 = await readSse(gw.url, keyM2, streamPath(M2, `wait_seconds=1&max_in_flight=3&since=${deliveries(w.frames)[2]!.data.seq}`), {
      'x-instance-id': 'w-1',
    })
    expect(deliveries(w3.frames)).toHaveLength(0) // still holding 3: nothing new
  })

  it('(f) ack of a queued (never delivered) intent → 409 conflict', async () => {
    const Q = 'agent://acme/prod/dl-queued'
    const keyQ = await agentKey(gw, Q)
    const id = await send(Q)
    const res = await api(gw.url, keyQ, 'POST', `/v1/intents/${id}/ack`, {})
    expect(res.status).toBe(409)
    expect(res.body.ok).toBe(false)
    expect(res.body.error.code).toBe('conflict')
    expect(await intent(id)).toMatchObject({ status: 'SUBMITTED', delivery_state: 'queued', delivery_attempt: 0 })
    expect(await eventTypes(id)).toEqual(['intent.created', 'intent.submitted'])
  })

  it('(g) a wait_seconds window with nothing to deliver ends after ~W s with stream.timeout', async () => {
    const G = 'agent://acme/prod/dl-idle'
    const keyG = await agentKey(gw, G)
    const t0 = performance.now()
    const res = await readSse(gw.url, keyG, streamPath(G, 'wait_seconds=1'), { 'x-instance-id': 'idle-1' })
    const elapsed = performance.now() - t0
    expect(res.status).toBe(200)
    expect(elapsed).toBeGreaterThanOrEqual(950)
    expect(elapsed).toBeLessThan(2_500)
    expect(res.frames).toEqual([{ event: 'stream.timeout', data: { ok: true, next_seq: 1, reason: 'timeout' } }])

    const t1 = performance.now()
    const withSince = await readSse(gw.url, keyG, streamPath(G, 'wait_seconds=1&since=7'), { 'x-instance-id': 'idle-1' })
    const elapsed1 = performance.now() - t1
    expect(elapsed1).toBeGreaterThanOrEqual(950)
    expect(elapsed1).toBeLessThan(2_500)
    expect(withSince.frames).toEqual([{ event: 'stream.timeout', data: { ok: true, next_seq: 8, reason: 'timeout' } }])
  })

  it('(g2) a window that is waiting ends shortly after an intent arrives', async () => {
    const G = 'agent://acme/prod/dl-window-push'
    const keyG = await agentKey(gw, G)
    const t0 = performance.now()
    const pending = readSse(gw.url, keyG, streamPath(G, 'wait_seconds=10'), { 'x-instance-id': 'wp-1' })
    await new Promise((resolve) => setTimeout(resolve, 300))
    const id = await send(G)
    const res = await pending
    const elapsed = performance.now() - t0
    expect(deliveries(res.frames).map((f) => f.data.intent_id)).toEqual([id])
    // The last frame says the window ended because work arrived, not because time ran out.
    expect(res.frames[res.frames.length - 1]).toMatchObject({ event: 'stream.end', data: { reason: 'delivered' } })
    expect(elapsed).toBeLessThan(1_500)
  })

  it('clients without x-instance-id share the instance "default"', async () => {
    const X = 'agent://acme/prod/dl-default-instance'
    const keyX = await agentKey(gw, X)
    const id = await send(X)
    const first = await readSse(gw.url, keyX, streamPath(X, 'wait_seconds=5'))
    expect(deliveries(first.frames).map((f) => f.data.intent_id)).toEqual([id])
    const seq = deliveries(first.frames)[0]!.data.seq
    const again = await readSse(gw.url, keyX, streamPath(X, 'wait_seconds=5&since=0'))
    expect(deliveries(again.frames).map((f) => f.data.seq)).toEqual([seq])
    const named = await readSse(gw.url, keyX, streamPath(X, 'wait_seconds=5&since=0'), { 'x-instance-id': 'default' })
    expect(deliveries(named.frames).map((f) => f.data.seq)).toEqual([seq])
    const ev = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${id}/events`)
    expect(ev.body.events[2].details).toMatchObject({ instance_id: 'default' })
  })

  it('a client that disconnects is noticed: its stream is dropped and new intents wait for a live one', async () => {
    const X = 'agent://acme/prod/dl-disconnect'
    const keyX = await agentKey(gw, X)
    const registry = gw.gateway.services.streams
    const before = registry.openStreams
    const s = await stream(keyX, X, 'lease_seconds=30', 'dc-1')
    await pollUntil(() => registry.openStreams === before + 1, { timeoutMs: 2_000, what: 'the stream to register' })
    s.close()
    await pollUntil(() => registry.openStreams === before, { timeoutMs: 1_000, what: 'the closed stream to be dropped' })

    const id = await send(X)
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(await intent(id)).toMatchObject({ delivery_state: 'queued', delivery_attempt: 0 })
    const live = await readSse(gw.url, keyX, streamPath(X, 'wait_seconds=5'), { 'x-instance-id': 'dc-2' })
    expect(deliveries(live.frames).map((f) => [f.data.intent_id, f.data.delivery_attempt])).toEqual([[id, 1]])
  })

  it('stream query parameters are validated (422) and do not open a stream', async () => {
    const V = 'agent://acme/prod/dl-validate'
    const keyV = await agentKey(gw, V)
    await send(V)
    for (const q of ['wait_seconds=0', 'wait_seconds=61', 'lease_seconds=0', 'lease_seconds=3601', 'max_in_flight=0', 'since=-1', 'wait_seconds=abc']) {
      const res = await api(gw.url, keyV, 'GET', streamPath(V, q))
      expect(res.status, q).toBe(422)
      expect(res.body.error.code, q).toBe('schema_invalid')
      expect(res.body.error.details.field, q).toBe(q.split('=')[0])
    }
    const list = await api(gw.url, keyV, 'GET', `/v1/intents?agent=${encodeURIComponent(V)}`)
    expect(list.body.intents[0]).toMatchObject({ delivery_attempt: 0, delivery_state: 'queued' })
  })
})

// The restart reopens the same store: the same data directory on SQLite, the same database on PostgreSQL.
describe.each(ENGINES)('delivery across a gateway restart (§2.3, %s)', (engine) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-delivery-restart-'))
  const adminKey = `cp_${randomUUID().replace(/-/g, '')}${randomUUID().replace(/-/g, '')}`
  let gw: TestGateway | null = null
  afterAll(async () => {
    await gw?.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('accepted intents, leases, keys and the per-address seq counter survive a restart', async () => {
    const R = 'agent://acme/prod/dl-restart'
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_ADMIN_KEY: adminKey }, dataDir })
    const databaseUrl = gw.databaseUrl
    const keyS = await agentKey(gw, S)
    const keyR = await agentKey(gw, R)
    const ids: string[] = []
    for (let n = 0; n < 3; n += 1) {
      const res = await api(gw.url, keyS, 'POST', '/v1/intents', { intent_type: 'durable.v1', to_agent: R, payload: { n } })
      expect(res.status).toBe(200)
      ids.push(res.body.intent_id)
    }
    const first = await readSse(gw.url, keyR, streamPath(R, 'wait_seconds=5&max_in_flight=2&lease_seconds=30'), { 'x-instance-id': 'r-1' })
    const leased = deliveries(first.frames)
    expect(leased).toHaveLength(2)
    const leasedSeqs = leased.map((f) => f.data.seq as number)
    await gw.close()
    gw = null

    gw = await startTestGateway({ engine, env: { CHOKEPOINT_ADMIN_KEY: adminKey }, dataDir, ...(databaseUrl === null ? {} : { databaseUrl }) })
    // Keys still work (stored hashed, not in memory).
    for (const id of ids) {
      const got = await api(gw.url, keyS, 'GET', `/v1/intents/${id}`)
      expect(got.status).toBe(200)
      expect(got.body.intent.payload).toEqual({ n: ids.indexOf(id) })
    }
    const states = await Promise.all(ids.map(async (id) => (await api(gw!.url, adminKey, 'GET', `/v1/intents/${id}`)).body.intent))
    expect(states.filter((i) => i.delivery_state === 'leased').map((i) => i.intent_id).sort()).toEqual(
      leased.map((f) => f.data.intent_id).sort(),
    )
    expect(states.filter((i) => i.delivery_state === 'queued')).toHaveLength(1)

    // The same instance reconnects: its leases come back with their seqs, then the queued one with a higher seq.
    const again = await openSseStream(gw.url, keyR, streamPath(R, 'since=0&max_in_flight=5&lease_seconds=30'), { 'x-instance-id': 'r-1' })
    try {
      await again.waitFor((fs) => deliveries(fs).length >= 3, 5_000, '3 deliveries after restart')
      const f = deliveries(again.frames)
      expect(f.slice(0, 2).map((x) => x.data.seq)).toEqual(leasedSeqs)
      expect(f[2]!.data.seq).toBeGreaterThan(Math.max(...leasedSeqs))
      expect(new Set(f.map((x) => x.data.intent_id))).toEqual(new Set(ids))
    } finally {
      again.close()
    }
  })
})
