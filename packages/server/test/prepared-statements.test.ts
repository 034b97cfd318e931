/**
 * How the PostgreSQL engine sends statements: the first statement of a transaction inline with
 * its BEGIN (parameters written as literals, one round trip fewer), the rest as named prepared
 * statements.
 *
 * Named prepared statements (PostgreSQL). The engine prepares each statement once per
 * connection. A rolling upgrade changes tables under the connections of replicas still running:
 * a prepared `SELECT *` then fails with `cached plan must not change result type` on every
 * connection that prepared it. The engine discards such a connection and runs the transaction
 * again on a fresh one, so sends, deliveries, resolves and reads go on through the migration.
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../src/config.js'
import { alertFor } from '../src/core/alerts/alerts.js'
import { auditHash } from '../src/core/audit/audit-chain.js'
import { acceptRule, deliveryRule, settleRule } from '../src/core/kill-switch/rules.js'
import { PostgresStore } from '../src/store/postgres/postgres-store.js'
import { inlineParams, prepared } from '../src/store/postgres/tx.js'
import type { NewIntent } from '../src/store/store.js'
import { noIdempotencyKeys, sharedPostgres, storeIntent, testEngines } from './harness.js'

const HAVE_POSTGRES = testEngines('prepared-statements.test.ts').includes('postgres')

const intentOf = (from: string, to: string): NewIntent => storeIntent('test.prepared.v1', from, to)

const noMismatch = noIdempotencyKeys

describe('prepared statements: naming and the switch', () => {
  it('names a statement by its text, the same name every time; unnamed when switched off', () => {
    const a = prepared('SELECT 1 AS one', [])
    expect(a.name).toMatch(/^cp_[0-9a-f]{16}$/)
    expect(prepared('SELECT 1 AS one', []).name).toBe(a.name)
    expect(prepared('SELECT 2 AS two', []).name).not.toBe(a.name)
    expect(prepared('SELECT 1 AS one', [], false)).toEqual({ text: 'SELECT 1 AS one', values: [] })
  })

  it('CHOKEPOINT_PG_PREPARED_STATEMENTS: on by default, 0 turns it off, anything else is refused', () => {
    expect(loadConfig({}).pgPreparedStatements).toBe(true)
    expect(loadConfig({ CHOKEPOINT_PG_PREPARED_STATEMENTS: '0' }).pgPreparedStatements).toBe(false)
    expect(() => loadConfig({ CHOKEPOINT_PG_PREPARED_STATEMENTS: 'sometimes' })).toThrow(/CHOKEPOINT_PG_PREPARED_STATEMENTS/)
  })
})

describe('the first statement inline with BEGIN', () => {
  const escape = (v: string) => `'${v.replace(/'/g, "''")}'`
  it('writes every value as a quoted literal of the text a bound parameter carries; $10 is not $1', () => {
    const sql = 'SELECT $1::int, $2, $3, $4::text[], $5::text[], $6, $7, $8, $9, $10, $11, $12::int[]'
    expect(inlineParams(sql, [-5, "it's", null, ['a', "b'c", 'd"e', 'f\\g', null], [], true, 1.5e-7, 8, 9, 'ten', 11n, [1, 2]], escape)).toBe(
      `SELECT '-5'::int, 'it''s', NULL, '{"a","b''c","d\\"e","f\\\\g",NULL}'::text[], '{}'::text[], 'true', '1.5e-7', '8', '9', 'ten', '11', '{"1","2"}'::int[]`,
    )
  })
  it('refuses what has no safe literal here: NUL in a string, objects, nested arrays, NaN, a missing parameter, a long result', () => {
    expect(inlineParams('SELECT $1', ['a\0b'], escape)).toBeNull()
    expect(inlineParams('SELECT $1', [{ a: 1 }], escape)).toBeNull()
    expect(inlineParams('SELECT $1', [Buffer.from('x')], escape)).toBeNull()
    expect(inlineParams('SELECT $1', [[['a']]], escape)).toBeNull()
    expect(inlineParams('SELECT $1', [Number.NaN], escape)).toBeNull()
    expect(inlineParams('SELECT $1, $2', [1], escape)).toBeNull()
    expect(inlineParams('SELECT $1', ['x'.repeat(10_000)], escape)).toBeNull()
  })
  it.skipIf(!HAVE_POSTGRES)('PostgreSQL reads the inlined values exactly as the bound ones', async () => {
    const cluster = await sharedPostgres()
    const url = await (cluster as NonNullable<typeof cluster>).createDatabase()
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      const sql = 'SELECT $1::text AS a, $2::text[] AS b, $3::float8 AS c, $4::bigint AS d, $5::text AS e, hashtext($6) AS f, $7::bigint[] AS g, $8::boolean AS h, $9 AS i'
      const tricky = ["quote ' and '' and \\ backslash \\' end", 'ünïcødé ✓ \n newline\ttab', '$1 $$ dollar', 'E\'x\'', '-- not a comment', '']
      for (const text of tricky) {
        const params = [text, [text, 'plain', '', null, 'with "quotes" and \\ and {braces,}'], -0.000123, 9007199254740991, null, text, [1, null, -3], false, text]
        const bound = await client.query(sql, params)
        const inlined = inlineParams(sql, params, (s) => client.escapeLiteral(s)) as string
        expect(inlined).not.toBeNull()
        const simple = await client.query(inlined)
        expect(simple.rows).toEqual(bound.rows)
      }
    } finally {
      await client.end()
    }
  })
})

describe.skipIf(!HAVE_POSTGRES).each([true, false])('a migration under running connections (postgres, prepared: %s)', (named) => {
  let store: PostgresStore
  let admin: pg.Client

  beforeAll(async () => {
    const cluster = await sharedPostgres()
    const url = await (cluster as NonNullable<typeof cluster>).createDatabase()
    store = await PostgresStore.open({ url, hashAudit: auditHash, alertFor, preparedStatements: named })
    admin = new pg.Client({ connectionString: url })
    await admin.connect()
  })
  afterAll(async () => {
    await admin?.end()
    await store?.close()
  })

  const accept = (intent: NewIntent) =>
    store.acceptIntent({ intent, actor: 'key:test', now: Date.now(), idempotency: null, decide: acceptRule, onIdempotencyMismatch: noMismatch })

  /** Concurrent sends (so that many pooled connections prepare the statements), then every delivery resolved. */
  const roundTrip = async (from: string, to: string, n: number): Promise<number> => {
    const sent = await Promise.all(Array.from({ length: n }, () => accept(intentOf(from, to))))
    const recipient = sent[0]?.intent.to_address_id as string
    let resolved = 0
    for (;;) {
      const { deliveries } = await store.claimDeliveries({
        address_id: recipient,
        instance_id: 'i-1',
        max_in_flight: 1000,
        lease_ms: 60_000,
        max_batch: 64,
        now: Date.now(),
        decide: deliveryRule,
      })
      if (deliveries.length === 0) break
      await Promise.all(
        deliveries.map(({ intent }) =>
          store.updateIntent({
            intent_id: intent.intent_id,
            now: Date.now(),
            actor: 'key:test',
            decide: ({ recipient: r }) => {
              settleRule(r)
              return { status: 'COMPLETED', delivery_state: 'done', lease_expires_at: null, event_type: 'intent.completed', event_details: null, result: '{}' }
            },
          }),
        ),
      )
      resolved += deliveries.length
    }
    return resolved
  }

  it('sends, deliveries, resolves and reads go on after columns are added to agents and intents', async () => {
    const from = `agent://prepared/${named}/sender`
    const to = `agent://prepared/${named}/worker`
    expect(await roundTrip(from, to, 40)).toBe(40)
    expect((await store.getAgentByAddress(from))?.address).toBe(from)

    // What a newer replica's migration would do while this one runs.
    await admin.query('ALTER TABLE agents ADD COLUMN added_by_upgrade text')
    await admin.query('ALTER TABLE intents ADD COLUMN added_by_upgrade text')

    expect(await roundTrip(from, to, 40)).toBe(40)
    expect((await store.getAgentByAddress(from))?.address).toBe(from)
    expect(await store.getAgentByAddress(to)).toMatchObject({ address: to, killed_at: null })
  })
})
