/**
 * Group-committed accepts against a kill (PostgreSQL): two engine instances (two replicas) on one
 * database accept bursts of concurrent sends from one agent, which they group-commit (several
 * intents per transaction), while a third kills that agent at a random moment. The guarantees:
 *  - batches formed: some transaction committed several of the intents (shared xmin);
 *  - no intent of a batch that committed after the kill returned is accepted: every stored intent
 *    of the victim was written by a transaction already committed in a snapshot taken right after
 *    the kill call returned, and every send submitted after that is refused with agent_killed;
 *  - none acknowledged is lost: the store holds exactly the acknowledged intents, each with
 *    created_at at or before killed_at, and nothing of the refused ones.
 * Several rounds, a fresh victim each.
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { alertFor } from '../src/core/alerts/alerts.js'
import { auditHash } from '../src/core/audit/audit-chain.js'
import { isGatewayError } from '../src/core/errors.js'
import { killRecord } from '../src/core/kill-switch/kill-switch-service.js'
import { acceptRule } from '../src/core/kill-switch/rules.js'
import { PostgresStore } from '../src/store/postgres/postgres-store.js'
import type { NewIntent } from '../src/store/store.js'
import { noIdempotencyKeys, sharedPostgres, storeIntent, testEngines } from './harness.js'

const HAVE_POSTGRES = testEngines('group-commit-kill.test.ts').includes('postgres')
const ROUNDS = 6
/** Concurrent sends per wave, per accepting replica. */
const WAVE = 24

const intentOf = (from: string, to: string): NewIntent => storeIntent('test.batch.v1', from, to)

const noMismatch = noIdempotencyKeys

interface Send {
  intent_id: string
  submitted: number
  answered: number
  ok: boolean
  code: string | null
}

describe.skipIf(!HAVE_POSTGRES)('group commit against a kill (postgres, 2 accepting replicas)', () => {
  let stores: PostgresStore[] = []
  let client: pg.Client

  beforeAll(async () => {
    const cluster = await sharedPostgres()
    const url = await (cluster as NonNullable<typeof cluster>).createDatabase()
    stores = [
      await PostgresStore.open({ url, hashAudit: auditHash, alertFor }),
      await PostgresStore.open({ url, hashAudit: auditHash, alertFor }),
      await PostgresStore.open({ url, hashAudit: auditHash, alertFor }),
    ]
    client = new pg.Client({ connectionString: url })
    await client.connect()
  })
  afterAll(async () => {
    await client?.end()
    await Promise.all(stores.map((s) => s.close()))
  })

  const accept = (store: PostgresStore, intent: NewIntent) =>
    store.acceptIntent({ intent, actor: 'key:test', now: Date.now(), idempotency: null, decide: acceptRule, onIdempotencyMismatch: noMismatch })

  for (let round = 1; round <= ROUNDS; round += 1) {
    it(`round ${round}: no intent of a batch committed after the kill returned; none acknowledged lost`, async () => {
      const victim = `agent://batch/r${round}/victim`
      const peer = `agent://batch/r${round}/peer`
      const [a, b, control] = stores as [PostgresStore, PostgresStore, PostgresStore]
      // Both replicas know both rows (their first sends ran alone): the rest is group-committed.
      await accept(a, intentOf(victim, peer))
      await accept(b, intentOf(victim, peer))
      const agent = (await a.getAgentByAddress(victim)) as NonNullable<Awaited<ReturnType<typeof a.getAgentByAddress>>>
      const sends: Send[] = []
      let killReturned: number | null = null
      const send = async (store: PostgresStore): Promise<void> => {
        const intent = intentOf(victim, peer)
        const submitted = performance.now()
        try {
          await accept(store, intent)
          sends.push({ intent_id: intent.intent_id, submitted, answered: performance.now(), ok: true, code: null })
        } catch (error) {
          sends.push({ intent_id: intent.intent_id, submitted, answered: performance.now(), ok: false, code: isGatewayError(error) ? error.code : String(error) })
        }
      }
      // Waves of concurrent sends on both replicas until some waves after the kill returned.
      let after = 0
      const loop = async (): Promise<void> => {
        while (after < 3) {
          await Promise.all([...Array.from({ length: WAVE }, () => send(a)), ...Array.from({ length: WAVE }, () => send(b))])
          if (killReturned !== null) after += 1
        }
      }
      const loops = [loop(), loop()]
      await new Promise((resolve) => setTimeout(resolve, 20 + Math.floor(Math.random() * 80)))
      const now = Date.now()
      const killed = await control.killAgent({
        address_id: agent.address_id,
        now,
        clock: () => Date.now(),
        actor: 'key:test',
        reason: 'batch race',
        policy_id: null,
        record: killRecord({ kind: 'key', key_id: 'test' }, now, 'batch race', false),
      })
      killReturned = performance.now()
      // Every transaction committed by now is visible in this snapshot; later ones are not.
      const snap = (await client.query<{ s: string }>('SELECT pg_current_snapshot()::text AS s')).rows[0]?.s as string
      await Promise.all(loops)
      expect(killed.changed).toBe(true)
      const killedAt = killed.agent.killed_at as number

      const stored = (
        await client.query<{ intent_id: string; created_at: string; late: boolean; tx: string }>(
          `SELECT intent_id, created_at, NOT pg_visible_in_snapshot(xmin::text::xid8, $2::pg_snapshot) AS late, xmin::text AS tx
           FROM intents WHERE from_agent = $1`,
          [victim, snap],
        )
      ).rows
      const byTx = new Map<string, number>()
      for (const r of stored) byTx.set(r.tx, (byTx.get(r.tx) ?? 0) + 1)
      // Group commit really happened: a transaction wrote several of these intents.
      expect(Math.max(...byTx.values())).toBeGreaterThan(1)
      // No stored intent of the victim was committed after the kill returned.
      expect(stored.filter((r) => r.late)).toEqual([])
      expect(stored.filter((r) => Number(r.created_at) > killedAt)).toEqual([])
      // Sends submitted after the kill returned: all refused, agent_killed.
      const late = sends.filter((s) => s.submitted > (killReturned as number))
      expect(late.length).toBeGreaterThan(0)
      expect(late.filter((s) => s.ok || s.code !== 'agent_killed')).toEqual([])
      // Acknowledged ⇔ stored (the two warm-up sends are stored too).
      const acked = sends.filter((s) => s.ok).map((s) => s.intent_id)
      const storedIds = new Set(stored.map((r) => r.intent_id))
      expect(acked.filter((id) => !storedIds.has(id))).toEqual([])
      expect(storedIds.size).toBe(acked.length + 2)
      expect(sends.filter((s) => !s.ok && s.code !== 'agent_killed')).toEqual([])
    })
  }
})
