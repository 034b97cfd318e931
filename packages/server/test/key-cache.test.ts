/**
 * The API-key cache (DESIGN §4 keys, §2 revocation): a valid key is remembered so that a
 * request need not read the key table, yet a revocation holds from the next request on, on
 * every replica, also when the change feed missed the revocation (PostgreSQL LISTEN down).
 */
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, pollUntil, sharedPostgres, startTestGateway, testEngines, type TestGateway } from './harness.js'

/** How many times the gateway looked a key up in its store, from /metrics. */
async function keyLookups(gw: TestGateway): Promise<number> {
  const res = await fetch(`${gw.url}/metrics`)
  const text = await res.text()
  const line = text.split('\n').find((l) => l.startsWith('chokepoint_store_transaction_seconds_count{op="findKeyByHash"}'))
  return line === undefined ? 0 : Number(line.split(' ').at(-1))
}

const engines = testEngines()
const path = (address: string) => `/v1/intents?agent=${encodeURIComponent(address)}`

describe.each(engines)('the API-key cache (%s)', (engine) => {
  let gw: TestGateway
  let uncached: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    uncached = await startTestGateway({ engine, env: { CHOKEPOINT_KEY_CACHE_SECONDS: '0' } })
  })
  afterAll(async () => {
    await gw.close()
    await uncached.close()
  })

  it('a key is read from the store once, then served from memory until it is revoked', async () => {
    const address = 'agent://cache/prod/a'
    const created = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    const before = await keyLookups(gw)
    for (let i = 0; i < 5; i += 1) expect((await api(gw.url, created.body.key, 'GET', path(address))).status).toBe(200)
    expect(await keyLookups(gw)).toBe(before + 1)
    expect((await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)).status).toBe(200)
    const refused = await api(gw.url, created.body.key, 'GET', path(address))
    expect([refused.status, refused.body.error?.code]).toEqual([401, 'unauthorized'])
    // Refusals are not remembered: a wrong key is looked up every time (a key created later could match).
    const lookups = await keyLookups(gw)
    await api(gw.url, created.body.key, 'GET', path(address))
    expect(await keyLookups(gw)).toBe(lookups + 1)
  })

  it('CHOKEPOINT_KEY_CACHE_SECONDS=0 reads the key on every request', async () => {
    const address = 'agent://cache/prod/b'
    const created = await api(uncached.url, uncached.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    const before = await keyLookups(uncached)
    for (let i = 0; i < 3; i += 1) expect((await api(uncached.url, created.body.key, 'GET', path(address))).status).toBe(200)
    expect(await keyLookups(uncached)).toBe(before + 3)
  })

  it('a revocation racing requests that use the key: every request after the revoke returned is 401', async () => {
    const address = 'agent://cache/prod/race'
    const created = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    const key = created.body.key as string
    let revokedAt = Number.POSITIVE_INFINITY
    const late: number[] = []
    const hammer = async () => {
      for (let i = 0; i < 60; i += 1) {
        const started = performance.now()
        const res = await api(gw.url, key, 'GET', path(address))
        if (started > revokedAt && res.status !== 401) late.push(res.status)
      }
    }
    const workers = Array.from({ length: 6 }, hammer)
    await new Promise((r) => setTimeout(r, 20))
    expect((await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)).status).toBe(200)
    revokedAt = performance.now()
    await Promise.all(workers)
    expect(late).toEqual([])
    expect((await api(gw.url, key, 'GET', path(address))).status).toBe(401)
  })
})

describe.skipIf(!engines.includes('postgres'))('the API-key cache across PostgreSQL replicas', () => {
  let a: TestGateway
  let b: TestGateway
  beforeAll(async () => {
    a = await startTestGateway({ engine: 'postgres' })
    b = await startTestGateway({ databaseUrl: a.databaseUrl!, env: { CHOKEPOINT_ADMIN_KEY: a.adminKey } })
  })
  afterAll(async () => {
    await b?.close()
    await a?.close()
  })

  it('a key cached on replica B is refused there as soon as replica A revoked it', async () => {
    const address = 'agent://cache/prod/replicas'
    const created = await api(a.url, a.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    expect((await api(b.url, created.body.key, 'GET', path(address))).status).toBe(200)
    expect((await api(b.url, created.body.key, 'GET', path(address))).status).toBe(200)
    expect((await api(a.url, a.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)).status).toBe(200)
    // The revocation reaches B through NOTIFY, within milliseconds; the store read would be at once.
    await pollUntil(async () => (await api(b.url, created.body.key, 'GET', path(address))).status === 401, {
      timeoutMs: 1_000,
      intervalMs: 5,
      what: 'replica B to refuse the revoked key',
    })
  })

  it('a revocation B missed while its LISTEN connection was down is not served from its cache', async () => {
    const cluster = await sharedPostgres()
    const address = 'agent://cache/prod/missed'
    const created = await api(a.url, a.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    expect((await api(b.url, created.body.key, 'GET', path(address))).status).toBe(200)
    // Cut every LISTEN connection of this database, then revoke at once: nobody hears the NOTIFY.
    const database = new URL(a.databaseUrl!).pathname.slice(1)
    const admin = new pg.Client({ connectionString: cluster!.url })
    await admin.connect()
    try {
      await admin.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chokepoint-feed' AND datname = $1`,
        [database],
      )
    } finally {
      await admin.end()
    }
    // While B knows it is cut off (it reconnects by itself 50–100 ms later), revoke on A.
    await pollUntil(() => b.gateway.store.feed.epoch === null, { timeoutMs: 5_000, intervalMs: 1, what: 'replica B to notice its LISTEN connection was cut' })
    expect((await api(a.url, a.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)).status).toBe(200)
    // Whether B noticed the cut yet or has already reconnected, it must not answer from its cache.
    const res = await api(b.url, created.body.key, 'GET', path(address))
    expect([res.status, res.body.error?.code]).toEqual([401, 'unauthorized'])
  })
})
