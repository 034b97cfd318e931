/**
 * The hot path takes no row lock on agent rows (PostgreSQL). Accepts, claims and resolves order
 * themselves against kills through the per-agent gate (an advisory lock) and read the agent row
 * in a later statement; a row lock on the agent rows — `FOR SHARE`, or the `FOR KEY SHARE` of a
 * foreign-key check — would write into the hottest rows of the database on every intent.
 * The recipient's first claim is measured too (it creates its delivery counter row).
 * Proof: while another session holds both agents' rows `FOR UPDATE` (which conflicts with every
 * row lock, including `FOR KEY SHARE`), a send, its claim and its resolve all complete at once.
 * Any of them taking a row lock would wait for that session (until the 5 s lock timeout).
 * Also: a kill that waits at the agent's gate reads its clock only once it holds it, and the
 * kills' own connections are open before the first kill.
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { alertFor } from '../src/core/alerts/alerts.js'
import { auditHash } from '../src/core/audit/audit-chain.js'
import { killRecord } from '../src/core/kill-switch/kill-switch-service.js'
import { acceptRule, deliveryRule, settleRule } from '../src/core/kill-switch/rules.js'
import { PostgresStore } from '../src/store/postgres/postgres-store.js'
import { LOCK_AGENT } from '../src/store/postgres/tx.js'
import type { NewIntent } from '../src/store/store.js'
import { noIdempotencyKeys, sharedPostgres, storeIntent, testEngines } from './harness.js'

const HAVE_POSTGRES = testEngines('agent-row-locks.test.ts').includes('postgres')

const intentOf = (from: string, to: string): NewIntent => storeIntent('test.locks.v1', from, to)

const noMismatch = noIdempotencyKeys

/** Far below the engine's 5 s lock timeout: a step that waited for the row lock would miss it. */
const PROMPT_MS = 2_000

const within = async <T>(what: string, p: Promise<T>): Promise<T> => {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} waited for the agent row lock`)), PROMPT_MS)
  })
  try {
    return await Promise.race([p, late])
  } finally {
    clearTimeout(timer)
  }
}

describe.skipIf(!HAVE_POSTGRES)('agent rows are never row-locked by sends, claims and resolves (postgres)', () => {
  let store: PostgresStore
  let url: string
  let holder: pg.Client

  beforeAll(async () => {
    const cluster = await sharedPostgres()
    url = await (cluster as NonNullable<typeof cluster>).createDatabase()
    store = await PostgresStore.open({ url, hashAudit: auditHash, alertFor })
    holder = new pg.Client({ connectionString: url })
    await holder.connect()
  })
  afterAll(async () => {
    await holder?.query('ROLLBACK').catch(() => undefined)
    await holder?.end()
    await store?.close()
  })

  const accept = (intent: NewIntent) =>
    store.acceptIntent({ intent, actor: 'key:test', now: Date.now(), idempotency: null, decide: acceptRule, onIdempotencyMismatch: noMismatch })

  it('keeps the control pool (kills, resumes) connected from the start (before any kill): a kill never waits for a new connection', async () => {
    const { rows } = await holder.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'chokepoint-control'",
    )
    expect(rows[0].n).toBe(2)
  })

  it('has no foreign key from intents or address_seq to agents', async () => {
    const { rows } = await holder.query(
      `SELECT conname FROM pg_constraint WHERE conrelid IN ('intents'::regclass, 'address_seq'::regclass) AND contype = 'f'`,
    )
    expect(rows).toEqual([])
  })

  it('a send, its delivery and its resolve complete while both agent rows are locked FOR UPDATE elsewhere', async () => {
    const from = 'agent://locks/sender'
    const to = 'agent://locks/worker'
    // Both agents exist (their rows are what the other session locks).
    const first = await accept(intentOf(from, to))
    const recipientId = first.intent.to_address_id

    await holder.query('BEGIN')
    const locked = await holder.query('SELECT address FROM agents WHERE address = ANY($1::text[]) FOR UPDATE', [[from, to]])
    expect(locked.rowCount).toBe(2)
    try {
      const sent = await within('the send', accept(intentOf(from, to)))
      expect(sent.intent.status).toBe('SUBMITTED')

      const claimed = await within(
        'the claim',
        store.claimDeliveries({
          address_id: recipientId,
          instance_id: 'i-1',
          max_in_flight: 32,
          lease_ms: 60_000,
          max_batch: 64,
          now: Date.now(),
          decide: deliveryRule,
        }),
      )
      expect(claimed.deliveries.map((d) => d.intent.intent_id).sort()).toEqual([first.intent.intent_id, sent.intent.intent_id].sort())

      for (const { intent } of claimed.deliveries) {
        const resolved = await within(
          'the resolve',
          store.updateIntent({
            intent_id: intent.intent_id,
            now: Date.now(),
            actor: 'key:test',
            decide: ({ recipient }) => {
              settleRule(recipient)
              return { status: 'COMPLETED', delivery_state: 'done', lease_expires_at: null, event_type: 'intent.completed', event_details: null, result: '{}' }
            },
          }),
        )
        expect(resolved.intent.status).toBe('COMPLETED')
      }
    } finally {
      await holder.query('ROLLBACK')
    }
  })

  it('a kill that waits at the gate for an in-flight transaction reads its clock after it: killed_at is not before that commit', async () => {
    const victim = 'agent://locks/victim'
    const { intent } = await accept(intentOf(victim, 'agent://locks/peer'))
    const victimId = intent.from_address_id
    // An in-flight accept of the victim, as another replica would hold it: the agent's gate, shared.
    await holder.query('BEGIN')
    await holder.query('SELECT pg_advisory_xact_lock_shared($1::int, hashtext($2))', [LOCK_AGENT, victim])
    const now = Date.now()
    const kill = store.killAgent({
      address_id: victimId,
      now,
      clock: () => Date.now(),
      actor: 'key:test',
      reason: 'gate wait',
      policy_id: null,
      record: killRecord({ kind: 'key', key_id: 'test' }, now, 'gate wait', false),
    })
    await new Promise((r) => setTimeout(r, 300))
    const committedAt = Date.now()
    await holder.query('COMMIT')
    const { agent } = await kill
    expect(agent.killed_at).not.toBeNull()
    expect(agent.killed_at as number).toBeGreaterThanOrEqual(committedAt)
  })
})
