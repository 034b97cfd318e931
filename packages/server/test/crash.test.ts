/**
 * DESIGN §2.3 "Nothing acknowledged is lost": a gateway process is killed with SIGKILL in
 * the middle of concurrent sends and deliveries; a new process on the same data directory
 * (taking over the dead process's lock) still has every intent it answered 2xx for, and
 * delivers every one of them at least once. Also §11: a second `serve` on a data directory
 * that a live gateway holds is refused.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  ensureBuilt,
  randomAdminKey,
  runServeToExit,
  startChildGateway,
  type ChildGateway,
} from './child-gateway.js'
import { api, parseSse, type SseFrame } from './harness.js'

const SENDER = 'agent://crash/test/sender'
const RECEIVER = 'agent://crash/test/receiver'
const INBOX = '/v1/agents/crash/test/receiver/intents/stream'
const INSTANCE = 'receiver-1'
const SENDERS = 8

const dirs: string[] = []
const children: ChildGateway[] = []

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-crash-'))
  dirs.push(dir)
  return join(dir, 'data')
}

async function start(dataDir: string, adminKey: string): Promise<ChildGateway> {
  const child = await startChildGateway({ dataDir, adminKey })
  children.push(child)
  return child
}

async function createAgentKey(gw: ChildGateway, address: string): Promise<string> {
  const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
  if (res.status !== 200) throw new Error(`agent key for ${address}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body.key as string
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T
      await fn(item)
    }
  })
  await Promise.all(workers)
}

/** One windowed read of the receiver's inbox; throws if the connection dies mid-response. */
async function readInbox(url: string, key: string, query: string): Promise<{ status: number; frames: SseFrame[] }> {
  const res = await fetch(`${url}${INBOX}?${query}`, { headers: { 'x-api-key': key, 'x-instance-id': INSTANCE } })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`inbox stream: ${res.status} ${text}`)
  return { status: res.status, frames: parseSse(text) }
}

beforeAll(() => {
  ensureBuilt()
}, 180_000)

afterEach(async () => {
  await Promise.all(children.splice(0).map((child) => child.stop('SIGKILL')))
})

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

describe('crash safety (DESIGN §2.3)', () => {
  it('keeps every acknowledged intent through kill -9 and restart, and delivers each at least once', async () => {
    const dataDir = tempDir()
    const adminKey = randomAdminKey()
    const first = await start(dataDir, adminKey)
    const senderKey = await createAgentKey(first, SENDER)
    const receiverKey = await createAgentKey(first, RECEIVER)

    // ---- load: 8 senders as fast as they can, one receiver consuming and resolving ----
    let stopped = false
    let nextN = 0
    const attempted = new Set<number>()
    /** intent_id → payload n, for every send answered 200. */
    const acked = new Map<string, number>()
    let failedSends = 0
    let rejectedSends = 0
    /** Once set, the gateway is killed the moment this many sends have been acknowledged. */
    let crashAtAcked = Infinity
    let crashed = false
    const crash = () => {
      if (crashed) return
      crashed = true
      first.proc.kill('SIGKILL')
      stopped = true
    }

    /** One send; returns once it is answered or cut by the crash. */
    const sendOne = async (): Promise<void> => {
      const n = nextN++
      attempted.add(n)
      try {
        const res = await fetch(`${first.url}/v1/intents`, {
          method: 'POST',
          headers: { 'x-api-key': senderKey, 'content-type': 'application/json' },
          body: JSON.stringify({ intent_type: 'crash.test.v1', to_agent: RECEIVER, payload: { n } }),
        })
        const body = (await res.json()) as { ok: boolean; intent_id?: string }
        if (res.status === 200 && body.ok && typeof body.intent_id === 'string') {
          acked.set(body.intent_id, n)
          if (acked.size >= crashAtAcked) crash()
        } else {
          rejectedSends += 1
        }
      } catch {
        failedSends += 1 // connection reset by the crash: not acknowledged
      }
    }
    const sender = async () => {
      while (!stopped) await sendOne()
    }

    /** Payload n of every intent seen delivered before the crash. */
    const deliveredBefore = new Map<string, number>()
    /** Resolves answered 200 before the crash (result.phase = before). */
    const resolvedBefore = new Set<string>()
    let lastSeq = 0
    const receiver = async () => {
      while (!stopped) {
        let frames: SseFrame[]
        try {
          frames = (
            await readInbox(first.url, receiverKey, `since=${lastSeq}&wait_seconds=1&lease_seconds=4&max_in_flight=1000`)
          ).frames
        } catch {
          if (stopped) return
          await sleep(10)
          continue
        }
        const toResolve: string[] = []
        for (const frame of frames) {
          if (frame.event === 'stream.timeout' || frame.event === 'stream.end') lastSeq = Math.max(lastSeq, Number(frame.data.next_seq) - 1)
          if (frame.event !== 'intent.delivered') continue
          lastSeq = Math.max(lastSeq, Number(frame.id))
          const id = frame.data.intent_id as string
          const n = frame.data.payload.n as number
          deliveredBefore.set(id, n)
          // Leave a quarter leased and unresolved when the crash comes.
          if (n % 4 !== 3) toResolve.push(id)
        }
        await pool(toResolve, 8, async (id) => {
          if (stopped) return
          try {
            const res = await fetch(`${first.url}/v1/intents/${id}/resolve`, {
              method: 'POST',
              headers: { 'x-api-key': receiverKey, 'content-type': 'application/json' },
              body: JSON.stringify({ status: 'COMPLETED', result: { phase: 'before' } }),
            })
            await res.text()
            if (res.status === 200) resolvedBefore.add(id)
          } catch {
            // cut by the crash: the resolve may or may not have committed
          }
        })
      }
    }

    const loadStarted = Date.now()
    const loops = [...Array.from({ length: SENDERS }, sender), receiver()]
    while (true) {
      const elapsed = Date.now() - loadStarted
      // ~1–2 s of load, or ≥ 500 acknowledged sends; longer only on a machine too busy for 100.
      if ((elapsed >= 1_000 && acked.size >= 500) || (elapsed >= 2_000 && acked.size >= 100) || elapsed >= 10_000) break
      await sleep(20)
    }

    // ---- crash: SIGKILL mid-load ----
    // A burst on top of the steady load, and the kill comes with its 20th answer: the gateway
    // dies in the middle of requests (some committed and answered, some committed and not yet
    // answered, most not started), whichever process is the bottleneck on this machine.
    const firstPid = first.pid
    crashAtAcked = acked.size + 20
    const burst = Array.from({ length: 256 }, () => sendOne())
    const fallback = setTimeout(crash, 2_000)
    const exit = await first.exited
    clearTimeout(fallback)
    stopped = true
    await Promise.all([...loops, ...burst])
    expect(exit.signal).toBe('SIGKILL')

    const ackedAtCrash = acked.size
    console.log(
      `crash test: ${ackedAtCrash} sends acknowledged, ${failedSends} cut by the crash, ${rejectedSends} rejected, ` +
        `${deliveredBefore.size} delivered and ${resolvedBefore.size} resolved before SIGKILL at ${Date.now() - loadStarted} ms`,
    )
    expect(rejectedSends).toBe(0)
    expect(ackedAtCrash).toBeGreaterThanOrEqual(100)
    // The crash really came mid-load: some sends were cut off without an answer.
    expect(failedSends).toBeGreaterThan(0)
    expect(resolvedBefore.size).toBeGreaterThan(0)

    // The dead process's lock file is still there (stale pid): the restart must take it over.
    const lockFile = join(dataDir, 'chokepoint.lock')
    expect(readFileSync(lockFile, 'utf8').trim()).toBe(String(firstPid))

    // ---- restart on the same data directory ----
    const second = await start(dataDir, adminKey)
    expect(readFileSync(lockFile, 'utf8').trim()).toBe(String(second.pid))
    expect((await api(second.url, null, 'GET', '/health')).status).toBe(200)

    // Every acknowledged intent exists, with the payload it was sent with.
    const missing: string[] = []
    const statusBefore = new Map<string, string>()
    await pool([...acked.keys()], 16, async (id) => {
      const res = await api(second.url, adminKey, 'GET', `/v1/intents/${id}`)
      if (res.status !== 200) {
        missing.push(`${id}: ${res.status} ${JSON.stringify(res.body)}`)
        return
      }
      expect(res.body.intent.payload).toEqual({ n: acked.get(id) })
      expect(res.body.intent.from_agent).toBe(SENDER)
      expect(res.body.intent.to_agent).toBe(RECEIVER)
      statusBefore.set(id, res.body.intent.status as string)
    })
    expect(missing, `acknowledged intents lost by the crash:\n${missing.slice(0, 20).join('\n')}`).toEqual([])
    for (const id of resolvedBefore) {
      if (acked.has(id)) expect(statusBefore.get(id), `intent ${id} was resolved before the crash`).toBe('COMPLETED')
    }

    // ---- drain the receiver's inbox on the new process, resolving everything ----
    const byN = new Map<number, string>()
    for (const [id, n] of deliveredBefore) byN.set(n, id)
    const deliveredAfter = new Set<string>()
    const pending = new Set([...acked.keys()].filter((id) => statusBefore.get(id) !== 'COMPLETED'))
    const drainDeadline = Date.now() + 45_000
    let emptyWindows = 0
    while (Date.now() < drainDeadline) {
      // since=0 on the same instance re-sends what it still holds leased, then claims new work.
      const { frames } = await readInbox(second.url, receiverKey, 'since=0&wait_seconds=1&lease_seconds=30&max_in_flight=1000')
      const delivered = frames.filter((f) => f.event === 'intent.delivered')
      for (const frame of delivered) {
        const id = frame.data.intent_id as string
        const n = frame.data.payload.n as number
        expect(attempted.has(n), `delivered intent ${id} carries a payload nobody sent: ${n}`).toBe(true)
        const known = byN.get(n)
        expect(known === undefined || known === id, `payload ${n} delivered as two intents (${known}, ${id})`).toBe(true)
        byN.set(n, id)
        if (acked.has(id)) expect(n).toBe(acked.get(id))
        expect(resolvedBefore.has(id), `intent ${id} was resolved (200) before the crash but delivered again`).toBe(false)
        deliveredAfter.add(id)
        pending.delete(id)
      }
      await pool(delivered, 16, async (frame) => {
        const id = frame.data.intent_id as string
        const res = await api(second.url, receiverKey, 'POST', `/v1/intents/${id}/resolve`, {
          status: 'COMPLETED',
          result: { phase: 'after' },
        })
        expect(res.status, `resolve ${id}: ${JSON.stringify(res.body)}`).toBe(200)
      })
      if (delivered.length === 0) {
        emptyWindows += 1
        if (pending.size === 0 && emptyWindows >= 2) break
        // Leases from before the crash that the stream did not re-send expire and are redelivered.
      } else {
        emptyWindows = 0
      }
    }
    expect([...pending], 'acknowledged intents never delivered after the restart').toEqual([])

    // ---- final state: every acknowledged intent was delivered at least once and is COMPLETED ----
    const problems: string[] = []
    await pool([...acked.keys()], 16, async (id) => {
      const res = await api(second.url, adminKey, 'GET', `/v1/intents/${id}`)
      const intent = res.body.intent
      if (res.status !== 200) return void problems.push(`${id}: GET ${res.status}`)
      if (!deliveredBefore.has(id) && !deliveredAfter.has(id)) problems.push(`${id}: never delivered`)
      if (intent.status !== 'COMPLETED') problems.push(`${id}: status ${intent.status}`)
      if (intent.delivery_attempt < 1) problems.push(`${id}: delivery_attempt ${intent.delivery_attempt}`)
      if (resolvedBefore.has(id) && intent.result?.phase !== 'before') {
        problems.push(`${id}: resolved before the crash, result now ${JSON.stringify(intent.result)}`)
      }
    })
    expect(problems.slice(0, 20)).toEqual([])

    // The event log of a redelivered intent starts with created/submitted and is gap-free.
    const sample = [...deliveredAfter].slice(0, 20)
    for (const id of sample) {
      const res = await api(second.url, adminKey, 'GET', `/v1/intents/${id}/events`)
      expect(res.status).toBe(200)
      const events = res.body.events as { seq: number; event_type: string }[]
      expect(events.slice(0, 2).map((e) => e.event_type)).toEqual(['intent.created', 'intent.submitted'])
      expect(events.map((e) => e.seq)).toEqual(events.map((_e, i) => i + 1))
      expect(events.at(-1)?.event_type).toBe('intent.completed')
    }

    // Nothing is left for the receiver.
    const rest = await readInbox(second.url, receiverKey, 'since=0&wait_seconds=1')
    expect(rest.frames.filter((f) => f.event === 'intent.delivered')).toEqual([])
    const unanswered = [...deliveredAfter].filter((id) => !acked.has(id) && !deliveredBefore.has(id)).length
    console.log(
      `crash test: after restart ${deliveredAfter.size} intents delivered again or for the first time ` +
        `(${unanswered} of them committed but never answered before the crash); ` +
        `all ${ackedAtCrash} acknowledged intents present and COMPLETED (total ${Date.now() - loadStarted} ms)`,
    )
  }, 120_000)

  it('refuses a second serve on a data directory a live gateway holds, with a clear message', async () => {
    const dataDir = tempDir()
    const adminKey = randomAdminKey()
    const first = await start(dataDir, adminKey)
    const lockFile = join(dataDir, 'chokepoint.lock')
    expect(readFileSync(lockFile, 'utf8').trim()).toBe(String(first.pid))

    const second = await runServeToExit({ dataDir, adminKey, timeoutMs: 15_000 })
    expect(second.timedOut, `second serve kept running:\n${second.stdout}\n${second.stderr}`).toBe(false)
    expect(second.code).not.toBe(0)
    expect(second.code).not.toBeNull()
    expect(second.stdout).not.toMatch(/listening on/)
    expect(second.stderr).toMatch(/another gateway/i)
    expect(second.stderr).toContain(`pid ${first.pid}`)
    expect(second.stderr).toContain(dataDir)

    // The first gateway is untouched and still owns the directory.
    expect((await api(first.url, null, 'GET', '/health')).status).toBe(200)
    expect(readFileSync(lockFile, 'utf8').trim()).toBe(String(first.pid))

    // A clean stop releases the lock; the directory can then be served again.
    const exit = await first.stop('SIGTERM')
    expect(exit.code).toBe(0)
    expect(existsSync(lockFile)).toBe(false)
    const third = await start(dataDir, adminKey)
    expect((await api(third.url, adminKey, 'GET', '/v1/keys')).status).toBe(200)
  }, 60_000)
})
