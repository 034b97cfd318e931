/**
 * Faults under load with three gateway processes on one PostgreSQL database
 * (DESIGN §2.3 nothing acknowledged is lost, §2.8 fail closed, §3 change feed, §11 LISTEN
 * reconnect):
 *  - one replica is killed with SIGKILL while senders use all three and a receiver streams on
 *    it: the other replicas keep answering 200, the intents it had leased are redelivered to a
 *    stream on another replica once their 2 s leases expire, and every intent answered 200 is
 *    stored, delivered and resolved;
 *  - PostgreSQL itself stops and starts again under load: meanwhile every replica answers
 *    503 `store_unavailable` (never 200) and /health is 503; afterwards they recover by
 *    themselves, a kill still cuts a stream held on another replica within 1 s, the LISTEN
 *    connections come back, and new intents reach streams on other replicas promptly.
 * Skipped (with a message) when PostgreSQL is not installed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChildGateway } from './child-gateway.js'
import { api, openSseStream, pollUntil, sharedPostgres, testEngines, type SseConnection } from './harness.js'
import type { PostgresCluster } from './postgres.js'
import { createKey, enc, feedListeners, reportReplicasOnFailure, sendLoops, sleep, startFleet, storedIntents, streamPath, summary, type Fleet } from './replica-fleet.js'

const HAVE_POSTGRES = testEngines('faults.test.ts').includes('postgres')

describe.skipIf(!HAVE_POSTGRES)('faults with three gateway processes on one PostgreSQL database', () => {
  let cluster: PostgresCluster
  const open: SseConnection[] = []

  beforeAll(async () => {
    const started = await sharedPostgres()
    if (!started) throw new Error('PostgreSQL is installed but did not start')
    cluster = started
  })
  afterAll(() => {
    for (const s of open) s.close()
  })

  async function stream(url: string, key: string, address: string, query: string, instance: string): Promise<SseConnection> {
    const conn = await openSseStream(url, key, streamPath(address, query), { 'x-instance-id': instance })
    expect(conn.status, JSON.stringify(conn.body)).toBe(200)
    open.push(conn)
    return conn
  }

  describe('a replica killed with SIGKILL under load', () => {
    let fleet: Fleet
    let r: ChildGateway[]

    beforeAll(async () => {
      fleet = await startFleet(cluster, 3)
      r = fleet.replicas
    }, 90_000)
    afterAll(async () => {
      await fleet?.stop()
    })

    it('the others keep serving; its leased intents are redelivered elsewhere after the lease; nothing acknowledged is lost', async () => {
      reportReplicasOnFailure(() => r)
      const W = 'agent://faults/sigkill/worker'
      const senders = [0, 1, 2].map((i) => `agent://faults/sigkill/sender-${i}`)
      const admin = fleet.adminKey
      const wKey = await createKey(r[0]!.url, admin, 'agent', W)
      const sKeys = await Promise.all(senders.map((s, i) => createKey(r[i]!.url, admin, 'agent', s)))
      const VICTIM = 2

      // The survivor instance streams on replica 1 and resolves everything it gets through replica 2.
      const survivor = await stream(r[0]!.url, wKey, W, 'lease_seconds=30&max_in_flight=64', 'w-survivor')
      const resolved = new Map<string, number>()
      /** Wall time at which the survivor read each delivery (for redelivery lag vs lease expiry). */
      const seenAt = new Map<string, number>()
      const resolveFailures: string[] = []
      let consumed = 0
      const pendingResolves: Promise<void>[] = []
      const consumer = (async () => {
        for (;;) {
          try {
            await survivor.waitFor((f) => f.length > consumed, 60_000)
          } catch {
            return
          }
          while (consumed < survivor.frames.length) {
            const frame = survivor.frames[consumed++]!
            if (frame.event !== 'intent.delivered') continue
            const id = frame.data.intent_id as string
            seenAt.set(id, Date.now())
            pendingResolves.push(
              api(r[1]!.url, wKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' }).then((res) => {
                if (res.status === 200) resolved.set(id, frame.data.delivery_attempt)
                else resolveFailures.push(`${id}: ${res.status} ${JSON.stringify(res.body)}`)
              }),
            )
          }
        }
      })()
      // The doomed instance streams on the victim replica with 2 s leases and never resolves.
      const doomed = await stream(r[VICTIM]!.url, wKey, W, 'lease_seconds=2&max_in_flight=8', 'w-doomed')

      let alive = [true, true, true]
      const load = sendLoops({
        loops: 12,
        pick: (turn) => {
          const candidates = [0, 1, 2].filter((i) => alive[i])
          return candidates[turn % candidates.length] ?? null
        },
        url: (i) => r[i]!.url,
        key: (loop) => sKeys[loop % 3]!,
        to: W,
      })
      let killedAt = 0
      let doomedLeases: string[] = []
      let leaseExpiry = new Map<string, number>()
      try {
        await doomed.waitFor((fs) => fs.filter((f) => f.event === 'intent.delivered').length >= 8, 10_000, '8 leases on the victim replica')
        await pollUntil(() => load.sends.filter((s) => s.status === 200 && s.replica === VICTIM).length >= 20, {
          timeoutMs: 10_000,
          what: 'sends through the victim replica',
        })
        // Kill -9 within the 2 s leases, with sends, streams and resolves in flight.
        alive = [true, true, false]
        killedAt = performance.now()
        r[VICTIM]!.proc.kill('SIGKILL')
        expect((await r[VICTIM]!.exited).signal).toBe('SIGKILL')
        doomedLeases = doomed.frames.filter((f) => f.event === 'intent.delivered').map((f) => f.data.intent_id as string)
        leaseExpiry = new Map(doomed.frames.filter((f) => f.event === 'intent.delivered').map((f) => [f.data.intent_id as string, Date.parse(f.data.lease_expires_at)]))
        await pollUntil(() => load.sends.filter((s) => s.start > killedAt && s.status === 200).length >= 300, {
          timeoutMs: 30_000,
          what: '300 sends after the SIGKILL',
        })
      } finally {
        await load.stop()
      }
      await doomed.done // its connection died with the process

      // The other replicas kept serving: every send through them after the kill answered 200.
      const after = load.sends.filter((s) => s.start > killedAt)
      expect(after.filter((s) => s.replica === VICTIM)).toEqual([])
      expect(after.filter((s) => s.status !== 200).slice(0, 5)).toEqual([])
      // Through the victim, requests in flight at the kill got no answer; nothing else failed.
      for (const s of load.sends.filter((x) => x.status !== 200)) {
        expect(s.replica, JSON.stringify(s)).toBe(VICTIM)
        expect(s.status, JSON.stringify(s)).toBe(0)
      }

      // The victim's leases expire after 2 s and its intents are redelivered on replica 1.
      await pollUntil(() => doomedLeases.every((id) => resolved.has(id)), {
        timeoutMs: 15_000,
        intervalMs: 50,
        what: "the dead replica's leased intents to be redelivered and resolved",
      })
      for (const id of doomedLeases) expect(resolved.get(id), id).toBeGreaterThanOrEqual(2)
      // Redelivered promptly once the lease ran out (sweeper every 100 ms, then NOTIFY).
      const lagMs = doomedLeases.map((id) => (seenAt.get(id) as number) - (leaseExpiry.get(id) as number))
      for (const lag of lagMs) expect(lag).toBeGreaterThanOrEqual(-5)
      expect(Math.max(...lagMs)).toBeLessThan(3_000)

      // Nothing acknowledged is lost: every 200 is stored, and is delivered and resolved.
      const acknowledged = load.sends.filter((s) => s.status === 200).map((s) => s.intent_id as string)
      await pollUntil(() => acknowledged.every((id) => resolved.has(id)), {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: `every acknowledged intent to be resolved (${acknowledged.filter((id) => resolved.has(id)).length}/${acknowledged.length})`,
      })
      await Promise.all(pendingResolves)
      expect(resolveFailures).toEqual([])
      const stored = await storedIntents(r[0]!.url, admin, W, 'received')
      const byId = new Map(stored.map((i) => [i.intent_id as string, i]))
      expect(acknowledged.filter((id) => !byId.has(id)), 'answered 200 but not stored').toEqual([])
      for (const id of acknowledged) expect(byId.get(id)?.status, id).toBe('COMPLETED')
      // Requests that were in flight when it died were never acknowledged; any the store kept
      // anyway are delivered like the rest.
      const unanswered = load.sends.filter((s) => s.status === 0).length
      await pollUntil(async () => (await storedIntents(r[1]!.url, admin, W, 'received')).every((i) => i.status === 'COMPLETED'), {
        timeoutMs: 15_000,
        intervalMs: 200,
        what: 'every stored intent to be resolved',
      })
      // The dead replica's LISTEN connection is gone; the two live ones remain.
      await pollUntil(async () => (await feedListeners(cluster.url, fleet.databaseName)) === 2, {
        timeoutMs: 10_000,
        what: 'two LISTEN connections',
      })
      survivor.close()
      await consumer
      console.log(
        `faults: SIGKILL under load: ${acknowledged.length} acknowledged (${after.length} after the kill, all 200 on the 2 live replicas), ` +
          `${unanswered} unanswered in flight; ${doomedLeases.length} leases of the dead replica redelivered on replica 1 ` +
          `${summary(lagMs)} after their 2 s leases ran out; all ${stored.length} stored intents COMPLETED`,
      )
    }, 120_000)
  })

  describe('PostgreSQL restarted under load', () => {
    let fleet: Fleet
    let r: ChildGateway[]

    beforeAll(async () => {
      fleet = await startFleet(cluster, 3)
      r = fleet.replicas
    }, 90_000)
    afterAll(async () => {
      await fleet?.stop()
    })

    it('503 store_unavailable while it is down (never 200), then recovery by itself; kill and delivery cross replicas again', async () => {
      reportReplicasOnFailure(() => r)
      const admin = fleet.adminKey
      const operator = await createKey(r[0]!.url, admin, 'operator')
      const Z = 'agent://faults/outage/sink'
      const S = 'agent://faults/outage/sender'
      const sKey = await createKey(r[0]!.url, admin, 'agent', S)
      await createKey(r[0]!.url, admin, 'agent', Z)
      // A stream held on replica 2 across the outage.
      const Q = 'agent://faults/outage/held-across'
      const qKey = await createKey(r[0]!.url, admin, 'agent', Q)
      const across = await stream(r[1]!.url, qKey, Q, 'lease_seconds=30', 'q-1')
      expect(await feedListeners(cluster.url, fleet.databaseName)).toBe(3)

      const load = sendLoops({ loops: 9, pick: (turn) => turn % 3, url: (i) => r[i]!.url, key: () => sKey, to: Z })
      let haltDone = 0
      let startCalled = 0
      let started = 0
      const recoveredAfter: number[] = []
      const healthDown: { status: number; code: string | undefined }[] = []
      try {
        await pollUntil(() => load.sends.filter((s) => s.status === 200).length >= 150, { timeoutMs: 15_000, what: 'traffic' })
        await cluster.halt()
        haltDone = performance.now()
        // Down for ≥ 2 s (long enough for the LISTEN reconnect to back off a few times), with
        // sends through every replica meanwhile; every replica says so on /health.
        await pollUntil(
          () =>
            performance.now() - haltDone >= 2_000 &&
            [0, 1, 2].every((i) => load.sends.filter((s) => s.replica === i && s.start > haltDone).length >= 10),
          { timeoutMs: 15_000, what: 'sends to every replica while PostgreSQL is down' },
        )
        for (const replica of r) {
          const health = await api(replica.url, null, 'GET', '/health')
          healthDown.push({ status: health.status, code: health.body?.error?.code })
        }
        startCalled = performance.now()
        await cluster.start()
        started = performance.now()
        // Back: each replica accepts again by itself (no restart, no operator).
        await pollUntil(
          () => [0, 1, 2].every((i) => load.sends.some((s) => s.replica === i && s.start > started && s.status === 200)),
          { timeoutMs: 20_000, intervalMs: 10, what: 'every replica to accept again' },
        )
        for (const i of [0, 1, 2]) {
          const first = load.sends.find((s) => s.replica === i && s.start > started && s.status === 200)!
          recoveredAfter.push(first.end - started)
        }
      } finally {
        if (startCalled === 0) await cluster.start().catch(() => undefined)
        await load.stop()
      }

      const down = load.sends.filter((s) => s.start >= haltDone && s.end <= startCalled)
      const stats = {
        sends: load.sends.length,
        accepted: load.sends.filter((s) => s.status === 200).length,
        whileDown: down.length,
        downMs: Math.round(startCalled - haltDone),
        startMs: Math.round(started - startCalled),
        recoveredMs: recoveredAfter.map((x) => Math.round(x)),
        codes: Object.fromEntries(
          [...new Set(load.sends.filter((s) => s.status !== 200).map((s) => `${s.status} ${s.code}`))].map((k) => [
            k,
            load.sends.filter((s) => `${s.status} ${s.code}` === k).length,
          ]),
        ),
      }
      console.log(`faults: PostgreSQL outage under load: ${JSON.stringify(stats)}`)
      // Fail closed: while it was down nothing was accepted, every answer was 503 store_unavailable.
      expect(down.length).toBeGreaterThanOrEqual(30)
      expect(down.filter((s) => s.status === 200), 'accepted while PostgreSQL was down').toEqual([])
      for (const s of down) expect([s.status, s.code]).toEqual([503, 'store_unavailable'])
      for (const h of healthDown) expect(h).toEqual({ status: 503, code: 'store_unavailable' })
      // Around the outage too, an answer is a 200 or a 503 store_unavailable, nothing else.
      for (const s of load.sends) if (s.status !== 200) expect([s.status, s.code]).toEqual([503, 'store_unavailable'])
      for (const ms of recoveredAfter) expect(ms).toBeLessThan(15_000)
      // Nothing acknowledged is lost across the outage.
      const acknowledged = load.sends.filter((s) => s.status === 200).map((s) => s.intent_id as string)
      const stored = new Set((await storedIntents(r[2]!.url, admin, Z, 'received')).map((i) => i.intent_id as string))
      expect(acknowledged.filter((id) => !stored.has(id)), 'answered 200 but not stored').toEqual([])
      for (const replica of r) expect((await api(replica.url, null, 'GET', '/health')).status).toBe(200)

      // Right after recovery, a kill on replica 1 cuts a stream held on replica 3 within 1 s
      // (through LISTEN if it is back already, else through the kill-state poll).
      const X = 'agent://faults/outage/killed-after'
      const xKey = await createKey(r[0]!.url, admin, 'agent', X)
      const xStream = await stream(r[2]!.url, xKey, X, 'lease_seconds=30', 'x-1')
      const kill1Start = performance.now()
      const kill1 = await api(r[0]!.url, operator, 'POST', `/v1/mesh/agents/${enc(X)}/kill`, { reason: 'after the outage' })
      expect(kill1.status).toBe(200)
      await xStream.waitFor((fs) => fs.some((f) => f.event === 'agent.killed'), 2_000, 'the cut right after recovery')
      await xStream.done
      const cutRightAfter = performance.now() - kill1Start
      expect(cutRightAfter).toBeLessThan(1_000)

      // The stream held across the outage either ended with an error frame or is still held,
      // and then a kill through replica 3 cuts it.
      const acrossFate = across.ended ? 'ended with an error frame during the outage' : 'survived the outage and was cut by a kill'
      if (across.ended) {
        expect(across.frames[across.frames.length - 1]).toMatchObject({ event: 'error', data: { error: { code: 'store_unavailable' } } })
      } else {
        const kill = await api(r[2]!.url, operator, 'POST', `/v1/mesh/agents/${enc(Q)}/kill`, {})
        expect(kill.status).toBe(200)
        await across.waitFor((fs) => fs.some((f) => f.event === 'agent.killed'), 1_000, 'the cut of the stream held across the outage')
      }

      // Every replica's LISTEN connection comes back by itself.
      const listenStart = performance.now()
      await pollUntil(async () => (await feedListeners(cluster.url, fleet.databaseName)) === 3, {
        timeoutMs: 15_000,
        intervalMs: 50,
        what: 'three LISTEN connections again',
      })
      const listenBackAfter = performance.now() - started
      const listenWaited = performance.now() - listenStart

      // With LISTEN back: a kill cuts a stream on another replica at once, and new intents reach
      // an idle stream on another replica in milliseconds (only NOTIFY wakes it that fast: its
      // idle re-check is 2 s).
      const X2 = 'agent://faults/outage/killed-later'
      const x2Key = await createKey(r[1]!.url, admin, 'agent', X2)
      const x2Stream = await stream(r[1]!.url, x2Key, X2, 'lease_seconds=30', 'x2-1')
      const kill2Start = performance.now()
      expect((await api(r[2]!.url, operator, 'POST', `/v1/mesh/agents/${enc(X2)}/kill`, {})).status).toBe(200)
      await x2Stream.waitFor((fs) => fs.some((f) => f.event === 'agent.killed'), 1_000, 'the cut with LISTEN back')
      const cutLater = performance.now() - kill2Start

      const Y = 'agent://faults/outage/worker'
      const yKey = await createKey(r[0]!.url, admin, 'agent', Y)
      const yStream = await stream(r[2]!.url, yKey, Y, 'lease_seconds=30', 'y-1')
      const deliveryMs: number[] = []
      for (let n = 0; n < 6; n += 1) {
        await sleep(20 + Math.random() * 80)
        const start = performance.now()
        const sent = await api(r[n % 2]!.url, sKey, 'POST', '/v1/intents', { intent_type: 'fault.test.v1', to_agent: Y, payload: { n } })
        expect(sent.status).toBe(200)
        const frames = await yStream.waitFor((fs) => fs.some((f) => f.data?.intent_id === sent.body.intent_id), 5_000, `intent ${n}`)
        deliveryMs.push(frames.find((f) => f.data?.intent_id === sent.body.intent_id)!.receivedAt - start)
      }
      console.log(
        `faults: after the outage: first 200 per replica ${stats.recoveredMs.join('/')} ms after PostgreSQL was back; ` +
          `kill → cut on another replica ${cutRightAfter.toFixed(1)} ms right after recovery, ${cutLater.toFixed(1)} ms with LISTEN back; ` +
          `LISTEN back on all 3 replicas ${(listenBackAfter / 1000).toFixed(2)} s after PostgreSQL was back (waited ${listenWaited.toFixed(0)} ms for it here); ` +
          `cross-replica delivery ${summary(deliveryMs)}; the stream held across the outage ${acrossFate}`,
      )
      expect(Math.max(...deliveryMs)).toBeLessThan(500)
    }, 120_000)
  })
})
