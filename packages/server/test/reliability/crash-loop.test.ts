/**
 * Crash loop (DESIGN §2.3, §2.7): ten times in a row, a gateway process is killed with SIGKILL
 * in the middle of concurrent sends, deliveries, resolves and audited control calls, and a new
 * process is started on the same store (SQLite: the same data directory; PostgreSQL: the same
 * database). At the end:
 *  - every intent the gateway answered 200 for is stored and is eventually resolved — 0 lost;
 *  - no intent whose resolve was answered 200 is ever delivered again — 0 duplicates after
 *    resolve (redelivery of an unresolved lease is the at-least-once contract, and allowed);
 *  - the audit hash chain is valid over every entry written between crashes.
 * Skips PostgreSQL (with a message) when it is not installed.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBuilt, randomAdminKey, startChildGateway, type ChildGateway } from '../child-gateway.js'
import { api, parseSse, sharedPostgres, testEngines } from '../harness.js'

const CRASHES = 10
const SENDERS = 6
const SENDER = 'agent://crashloop/test/sender'
const RECEIVER = 'agent://crashloop/test/receiver'
const CONTROL = 'agent://crashloop/test/control'
const INBOX = '/v1/agents/crashloop/test/receiver/intents/stream'

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const dirs: string[] = []
const children: ChildGateway[] = []

beforeAll(() => ensureBuilt(), 180_000)
afterAll(async () => {
  await Promise.all(children.map((c) => c.stop('SIGKILL')))
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

interface Ledger {
  /** intent_id → payload n for every send answered 200. */
  acked: Map<string, number>
  /** Intents whose resolve was answered 200 (committed). */
  resolved: Set<string>
  /** Deliveries of an intent after its resolve had been answered 200. */
  deliveredAfterResolve: string[]
  sendsCut: number
  sendsRefused: Map<number, number>
  /** Control calls (kill, resume) answered 200 (a no-op one writes no audit entry). */
  controlsAnswered: number
}

/** Load against one gateway process until `stop()`: senders, a resolving receiver, control calls. */
function runLoad(gw: ChildGateway, keys: { sender: string; receiver: string }, ledger: Ledger, nextN: { n: number }) {
  let stopped = false
  const sender = async () => {
    while (!stopped) {
      const n = nextN.n++
      try {
        const res = await fetch(`${gw.url}/v1/intents`, {
          method: 'POST',
          headers: { 'x-api-key': keys.sender, 'content-type': 'application/json' },
          body: JSON.stringify({ intent_type: 'crash.loop.v1', to_agent: RECEIVER, payload: { n } }),
        })
        const body = (await res.json()) as { intent_id?: string }
        if (res.status === 200 && typeof body.intent_id === 'string') ledger.acked.set(body.intent_id, n)
        else ledger.sendsRefused.set(res.status, (ledger.sendsRefused.get(res.status) ?? 0) + 1)
      } catch {
        ledger.sendsCut += 1 // the connection died with the process: not acknowledged
        await sleep(5)
      }
    }
  }
  const receiver = async () => {
    let since = 0
    while (!stopped) {
      let text: string
      try {
        const res = await fetch(`${gw.url}${INBOX}?since=${since}&wait_seconds=1&lease_seconds=3&max_in_flight=200`, {
          headers: { 'x-api-key': keys.receiver, 'x-instance-id': 'r-1' },
        })
        text = await res.text()
        if (res.status !== 200) throw new Error(`inbox ${res.status}`)
      } catch {
        await sleep(10)
        continue
      }
      const ids: string[] = []
      for (const frame of parseSse(text)) {
        if (frame.event !== 'intent.delivered') continue
        since = Math.max(since, Number(frame.id))
        const id = frame.data.intent_id as string
        if (ledger.resolved.has(id)) ledger.deliveredAfterResolve.push(id)
        // Leave every fifth one unresolved: its lease must expire and bring it back later.
        if ((frame.data.payload.n as number) % 5 !== 4) ids.push(id)
      }
      await Promise.all(
        ids.map(async (id) => {
          try {
            const res = await fetch(`${gw.url}/v1/intents/${id}/resolve`, {
              method: 'POST',
              headers: { 'x-api-key': keys.receiver, 'content-type': 'application/json' },
              body: JSON.stringify({ status: 'COMPLETED', result: { ok: true } }),
            })
            await res.text()
            if (res.status === 200) ledger.resolved.add(id)
          } catch {
            // cut by the crash: committed or not, either is allowed
          }
        }),
      )
    }
  }
  // Audited control traffic between crashes: kill and resume of a third agent, key creation.
  const control = async () => {
    while (!stopped) {
      for (const path of [`/v1/mesh/agents/${encodeURIComponent(CONTROL)}/kill`, `/v1/mesh/agents/${encodeURIComponent(CONTROL)}/resume`]) {
        try {
          const res = await api(gw.url, gw.adminKey, 'POST', path, { reason: 'crash loop' })
          if (res.status === 200) ledger.controlsAnswered += 1
        } catch {
          // cut by the crash
        }
      }
      await sleep(50)
    }
  }
  const loops = [...Array.from({ length: SENDERS }, sender), receiver(), control()]
  return {
    async stop() {
      stopped = true
      await Promise.allSettled(loops)
    },
  }
}

for (const engine of testEngines('reliability/crash-loop.test.ts')) {
  describe(`crash loop (${engine})`, () => {
    it(`${CRASHES} × kill -9 under load: 0 acknowledged intents lost, 0 deliveries after resolve, audit chain valid`, async () => {
      const root = mkdtempSync(join(tmpdir(), 'chokepoint-crashloop-'))
      dirs.push(root)
      const dataDir = join(root, 'data')
      const databaseUrl = engine === 'postgres' ? await (await sharedPostgres())!.createDatabase() : undefined
      const adminKey = randomAdminKey()
      const start = async (): Promise<ChildGateway> => {
        // A short lease so unresolved deliveries come back within the run.
        const child = await startChildGateway({ dataDir, adminKey, ...(databaseUrl ? { databaseUrl } : {}), env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '100' } })
        children.push(child)
        return child
      }
      let gw = await start()
      const key = async (address: string) => (await api(gw.url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })).body.key as string
      const keys = { sender: await key(SENDER), receiver: await key(RECEIVER) }
      await key(CONTROL)

      const ledger: Ledger = { acked: new Map(), resolved: new Set(), deliveredAfterResolve: [], sendsCut: 0, sendsRefused: new Map(), controlsAnswered: 0 }
      const nextN = { n: 0 }
      const perCrash: number[] = []
      for (let crash = 1; crash <= CRASHES; crash += 1) {
        const before = ledger.acked.size
        const controlsBefore = ledger.controlsAnswered
        const load = runLoad(gw, keys, ledger, nextN)
        // Crash at a varying point once the load is flowing — judged by what this process has
        // answered, not by a fixed time, which a slow machine may spend warming up.
        const flowing = Date.now() + 60_000
        while ((ledger.acked.size - before < 5 || ledger.controlsAnswered - controlsBefore < 3) && Date.now() < flowing) await sleep(20)
        await sleep((crash * 137) % 500)
        gw.proc.kill('SIGKILL')
        await gw.exited
        await load.stop()
        perCrash.push(ledger.acked.size - before)
        gw = await start()
      }

      // Drain: resolve everything still open, including leases that died with a process.
      const deadline = Date.now() + 60_000
      const committedUnanswered = new Set<string>()
      const open = () => [...ledger.acked.keys()].filter((id) => !ledger.resolved.has(id) && !committedUnanswered.has(id))
      let since = 0
      while (open().length > 0 && Date.now() < deadline) {
        const res = await fetch(`${gw.url}${INBOX}?since=${since}&wait_seconds=2&lease_seconds=3&max_in_flight=500`, {
          headers: { 'x-api-key': keys.receiver, 'x-instance-id': 'r-1' },
        })
        for (const frame of parseSse(await res.text())) {
          if (frame.event !== 'intent.delivered') continue
          since = Math.max(since, Number(frame.id))
          const id = frame.data.intent_id as string
          if (ledger.resolved.has(id)) ledger.deliveredAfterResolve.push(id)
          const r = await api(gw.url, keys.receiver, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' })
          if (r.status === 200) ledger.resolved.add(id)
        }
        // A resolve cut by a crash may have committed: such an intent is done, not open.
        const pending = open()
        if (pending.length > 0 && pending.length <= 100) {
          const rows = await Promise.all(pending.map((id) => api(gw.url, adminKey, 'GET', `/v1/intents/${id}`)))
          for (const [j, row] of rows.entries()) if (row.body.intent?.status === 'COMPLETED') committedUnanswered.add(pending[j] as string)
        }
      }

      console.log(
        `crash loop (${engine}): ${CRASHES} crashes, ${ledger.acked.size} acknowledged (per run ${perCrash.join(', ')}), ` +
          `${ledger.sendsCut} sends cut by a crash, refused ${JSON.stringify(Object.fromEntries(ledger.sendsRefused))}, ` +
          `${ledger.resolved.size} resolved (+${committedUnanswered.size} whose resolve committed but its answer was cut), ${ledger.deliveredAfterResolve.length} delivered after resolve`,
      )
      expect(perCrash.every((n) => n > 0), `every run acknowledged sends: ${perCrash.join(', ')}`).toBe(true)
      // 0 lost: every acknowledged intent exists and ended COMPLETED.
      const unresolved = open()
      if (unresolved.length > 0) {
        const rows = await Promise.all(unresolved.slice(0, 10).map((id) => api(gw.url, adminKey, 'GET', `/v1/intents/${id}`)))
        const events = await Promise.all(unresolved.slice(0, 3).map((id) => api(gw.url, adminKey, 'GET', `/v1/intents/${id}/events`)))
        console.error('unresolved:', JSON.stringify(rows.map((r) => r.body.intent ?? r.body)), JSON.stringify(events.map((e) => e.body.events)))
      }
      expect(unresolved, 'acknowledged intents never resolved').toEqual([])
      const sample = [...ledger.acked.keys()]
      for (let i = 0; i < sample.length; i += 25) {
        const batch = sample.slice(i, i + 25)
        const rows = await Promise.all(batch.map((id) => api(gw.url, adminKey, 'GET', `/v1/intents/${id}`)))
        for (const [j, row] of rows.entries()) {
          expect(row.status, batch[j]).toBe(200)
          expect(row.body.intent.status, batch[j]).toBe('COMPLETED')
        }
      }
      // 0 duplicates after a committed resolve.
      expect(ledger.deliveredAfterResolve).toEqual([])
      // Only 5xx allowed is none at all: a send either was answered (200 or a 4xx) or cut.
      expect([...ledger.sendsRefused.keys()].filter((s) => s >= 500)).toEqual([])
      const verify = await api(gw.url, adminKey, 'GET', '/v1/audit/verify')
      expect(verify.body).toMatchObject({ ok: true, valid: true, first_broken_seq: null })
      // 3 key creations, then kills and resumes: each run had at least kill, resume, kill
      // answered, of which at most the first was a no-op (the agent was left killed by a crash
      // between a kill and its resume), so at least two entries per run.
      expect(verify.body.entries).toBeGreaterThanOrEqual(3 + 2 * CRASHES)
    }, 240_000)
  })
}
