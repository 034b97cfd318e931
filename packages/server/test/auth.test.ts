/**
 * Authentication and authorization (DESIGN §4, §5d, §11): key lifecycle, roles, agent-key
 * boundaries, the last admin key, the bootstrap key, and keys stored only as hashes.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig, startGateway } from '../src/index.js'
import { agentKey, api, readSse, startTestGateway, type TestGateway } from './harness.js'

const KEY_RE = /^cp_[0-9A-Za-z]{43,}$/
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex')
const streamPath = (address: string, query = 'wait_seconds=1'): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

function expectError(res: { status: number; body: any; headers: Headers }, status: number, code: string): void {
  expect(res.status, JSON.stringify(res.body)).toBe(status)
  expect(res.body.ok).toBe(false)
  expect(res.body.error.code).toBe(code)
  expect(res.body.error.message).toEqual(expect.any(String))
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

function randomBase62(n: number): string {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
  let out = ''
  while (out.length < n) out += alphabet[Math.floor(Math.random() * 62)]
  return out
}

describe('keys', () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway()
  })
  afterAll(() => gw.close())

  it('POST /v1/keys returns {ok, key_id, key, role, agent}; GET lists without the key or its hash', async () => {
    const created: { key: string; key_id: string }[] = []
    for (const body of [
      { role: 'agent', agent: 'agent://acme/prod/auth-k1', name: 'k1' },
      { role: 'operator', name: 'ops' },
      { role: 'viewer' },
      { role: 'admin', name: 'second admin' },
    ]) {
      const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', body)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      expect(res.body).toMatchObject({
        ok: true,
        key_id: expect.any(String),
        key: expect.stringMatching(KEY_RE),
        role: body.role,
        agent: body.role === 'agent' ? body.agent : null,
      })
      expect(res.body).not.toHaveProperty('key_hash')
      created.push({ key: res.body.key, key_id: res.body.key_id })
    }
    expect(new Set(created.map((c) => c.key)).size).toBe(created.length)
    expect(new Set(created.map((c) => c.key_id)).size).toBe(created.length)

    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    expect(list.status).toBe(200)
    expect(list.body.ok).toBe(true)
    const text = JSON.stringify(list.body)
    for (const c of [...created, { key: gw.adminKey, key_id: '' }]) {
      expect(text).not.toContain(c.key)
      expect(text).not.toContain(c.key.slice(3)) // not even without the prefix
      expect(text).not.toContain(sha256(c.key))
    }
    const ids = (list.body.keys as any[]).map((k) => k.key_id)
    for (const c of created) expect(ids).toContain(c.key_id)
    for (const k of list.body.keys as any[]) {
      expect(k).not.toHaveProperty('key')
      expect(k).not.toHaveProperty('key_hash')
      expect(k).not.toHaveProperty('hash')
    }
    const agentRow = (list.body.keys as any[]).find((k) => k.key_id === created[0]!.key_id)
    expect(agentRow).toMatchObject({ role: 'agent', agent: 'agent://acme/prod/auth-k1' })
  })

  it('GET /v1/whoami names the calling key: id, name, role and, for an agent key, its agent', async () => {
    const viewer = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer', name: 'night shift' })
    expect((await api(gw.url, viewer.body.key, 'GET', '/v1/whoami')).body).toEqual({
      ok: true,
      key_id: viewer.body.key_id,
      name: 'night shift',
      role: 'viewer',
      agent: null,
      address_id: null,
    })
    const key = await agentKey(gw, 'agent://acme/prod/whoami')
    const me = (await api(gw.url, key, 'GET', '/v1/whoami')).body
    expect(me).toMatchObject({ role: 'agent', agent: 'agent://acme/prod/whoami' })
    expect(me.address_id).toMatch(/^addr_/)
    expect((await api(gw.url, gw.adminKey, 'GET', '/v1/whoami')).body.role).toBe('admin')
    expect((await api(gw.url, null, 'GET', '/v1/whoami')).status).toBe(401)
  })

  it('each new key works right away with its role', async () => {
    const viewer = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer' })
    const ok = await api(gw.url, viewer.body.key, 'GET', '/v1/mesh/agents')
    expect(ok.status).toBe(200)
    const forbidden = await api(gw.url, viewer.body.key, 'GET', '/v1/keys')
    expectError(forbidden, 403, 'forbidden')
    const operator = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'operator' })
    expectError(await api(gw.url, operator.body.key, 'GET', '/v1/keys'), 403, 'forbidden')
    expectError(await api(gw.url, operator.body.key, 'POST', '/v1/keys', { role: 'viewer' }), 403, 'forbidden')
  })

  it('a revoked key is refused with 401 from the next request on', async () => {
    const created = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: 'agent://acme/prod/auth-rev' })
    const key = created.body.key as string
    const path = `/v1/intents?agent=${encodeURIComponent('agent://acme/prod/auth-rev')}`
    expect((await api(gw.url, key, 'GET', path)).status).toBe(200)
    const revoked = await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)
    expect(revoked.status).toBe(200)
    expect(revoked.body.ok).toBe(true)
    expectError(await api(gw.url, key, 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, null, 'GET', path, undefined, { authorization: `Bearer ${key}` }), 401, 'unauthorized')
    expectError(
      await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'a.b', to_agent: 'agent://acme/prod/x', payload: {} }),
      401,
      'unauthorized',
    )
    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    const row = (list.body.keys as any[]).find((k) => k.key_id === created.body.key_id)
    expect(row.revoked_at).toEqual(expect.any(String))
    // Revoking an unknown key id → 404.
    expectError(await api(gw.url, gw.adminKey, 'DELETE', '/v1/keys/key_doesnotexist0000'), 404, 'not_found')
  })

  it('a revoked key cannot read a stream it opens afterwards', async () => {
    const address = 'agent://acme/prod/auth-rev-stream'
    const created = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${created.body.key_id}`)
    const res = await readSse(gw.url, created.body.key, streamPath(address))
    expect(res.status).toBe(401)
    expect(res.body.error.code).toBe('unauthorized')
  })

  it('missing or invalid keys → 401 unauthorized', async () => {
    const path = '/v1/mesh/agents'
    expectError(await api(gw.url, null, 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, '', 'GET', path, undefined, { 'x-api-key': '' }), 401, 'unauthorized')
    expectError(await api(gw.url, 'not-a-key', 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, `cp_${randomBase62(43)}`, 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, gw.adminKey.slice(0, -1), 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, `${gw.adminKey}x`, 'GET', path), 401, 'unauthorized')
    expectError(await api(gw.url, sha256(gw.adminKey), 'GET', path), 401, 'unauthorized') // the hash is not a key
    expectError(await api(gw.url, null, 'GET', path, undefined, { authorization: 'Bearer' }), 401, 'unauthorized')
    expectError(await api(gw.url, null, 'GET', path, undefined, { authorization: `Basic ${gw.adminKey}` }), 401, 'unauthorized')
    expectError(await api(gw.url, null, 'POST', '/v1/intents', { intent_type: 'a.b', to_agent: 'agent://a/b/c' }), 401, 'unauthorized')
    expectError(await api(gw.url, null, 'GET', '/v1/keys'), 401, 'unauthorized')
    expectError(await api(gw.url, null, 'GET', streamPath('agent://acme/prod/anyone')), 401, 'unauthorized')
  })

  it('unknown fields in POST /v1/keys → 422 naming the field; bad roles and addresses → 422', async () => {
    const extra = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer', scopes: ['all'] })
    expectError(extra, 422, 'schema_invalid')
    expect(JSON.stringify(extra.body.error.details)).toContain('scopes')
    expectError(await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'superuser' }), 422, 'schema_invalid')
    const noAgent = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent' })
    expectError(noAgent, 422, 'schema_invalid')
    expect(noAgent.body.error.details.field).toBe('agent')
    const badAddress = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'agent', agent: 'agent://Acme/prod/x' })
    expectError(badAddress, 422, 'schema_invalid')
    expect(badAddress.body.error.details.field).toBe('agent')
    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    expect((list.body.keys as any[]).every((k) => k.role !== 'superuser')).toBe(true)
  })

  it('revoking the last admin key → 409 conflict; with another admin it works', async () => {
    const list0 = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    const activeAdmins = (list0.body.keys as any[]).filter((k) => k.role === 'admin' && k.revoked_at === null)
    expect(activeAdmins.length).toBeGreaterThanOrEqual(1)
    const other = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'admin', name: 'temp admin' })
    expect(other.status).toBe(200)
    // Revoke every active admin key except the bootstrap key, using the temporary admin key.
    for (const k of activeAdmins) {
      const res = await api(gw.url, other.body.key, 'DELETE', `/v1/keys/${k.key_id}`)
      expect(res.status).toBe(200)
    }
    // The bootstrap key was among them: it now fails; the temporary admin is the last one.
    expectError(await api(gw.url, gw.adminKey, 'GET', '/v1/keys'), 401, 'unauthorized')
    const last = await api(gw.url, other.body.key, 'DELETE', `/v1/keys/${other.body.key_id}`)
    expectError(last, 409, 'conflict')
    // Still works afterwards.
    const still = await api(gw.url, other.body.key, 'GET', '/v1/keys')
    expect(still.status).toBe(200)
    const active = (still.body.keys as any[]).filter((k) => k.role === 'admin' && k.revoked_at === null)
    expect(active.map((k) => k.key_id)).toEqual([other.body.key_id])
  })
})

describe('agent keys are bound to one agent', () => {
  let gw: TestGateway
  const A = 'agent://acme/prod/auth-a'
  const B = 'agent://acme/prod/auth-b'
  const C = 'agent://acme/prod/auth-c'
  let keyA: string
  let keyB: string
  let keyC: string
  let aToB: string
  let bToC: string

  beforeAll(async () => {
    gw = await startTestGateway()
    keyA = await agentKey(gw, A)
    keyB = await agentKey(gw, B)
    keyC = await agentKey(gw, C)
    aToB = (await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: B, payload: {} })).body.intent_id
    bToC = (await api(gw.url, keyB, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: C, payload: {} })).body.intent_id
  })
  afterAll(() => gw.close())

  it('cannot send as another agent (403 forbidden); nothing is stored', async () => {
    const res = await api(gw.url, keyA, 'POST', '/v1/intents', {
      intent_type: 'work.v1',
      to_agent: C,
      from_agent: B,
      payload: { spoof: true },
    })
    expectError(res, 403, 'forbidden')
    const sent = await api(gw.url, gw.adminKey, 'GET', `/v1/intents?agent=${encodeURIComponent(B)}&direction=sent`)
    expect((sent.body.intents as any[]).map((i) => i.intent_id)).toEqual([bToC])
    // Naming itself explicitly is fine.
    const self = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'work.v1', to_agent: C, from_agent: A, payload: {} })
    expect(self.status).toBe(200)
  })

  it("cannot read another agent's inbox stream (403), with or without an instance id", async () => {
    const res = await readSse(gw.url, keyA, streamPath(B), { 'x-instance-id': 'i1' })
    expect(res.status).toBe(403)
    expect(res.body.error.code).toBe('forbidden')
    const res2 = await readSse(gw.url, keyA, streamPath(B))
    expect(res2.status).toBe(403)
    // Nothing was leased by the refused stream.
    const got = await api(gw.url, keyA, 'GET', `/v1/intents/${aToB}`)
    expect(got.body.intent).toMatchObject({ status: 'SUBMITTED', delivery_attempt: 0 })
    // Its own inbox is fine.
    const own = await readSse(gw.url, keyA, streamPath(A))
    expect(own.status).toBe(200)
  })

  it('cannot ack or resolve an intent not addressed to it (403), even one it sent', async () => {
    // Lease aToB to B first so the ack would otherwise be valid.
    const inbox = await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=5'), { 'x-instance-id': 'b1' })
    expect(inbox.frames.some((f) => f.event === 'intent.delivered' && f.data.intent_id === aToB)).toBe(true)

    expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${aToB}/ack`, {}), 403, 'forbidden')
    expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${aToB}/resolve`, { status: 'COMPLETED' }), 403, 'forbidden')
    expectError(await api(gw.url, keyC, 'POST', `/v1/intents/${aToB}/ack`, {}), 403, 'forbidden')
    expectError(await api(gw.url, keyC, 'POST', `/v1/intents/${aToB}/resolve`, { status: 'CANCELED' }), 403, 'forbidden')
    const after = await api(gw.url, keyB, 'GET', `/v1/intents/${aToB}`)
    expect(after.body.intent).toMatchObject({ status: 'DELIVERED', delivery_state: 'leased' })
    const events = await api(gw.url, keyB, 'GET', `/v1/intents/${aToB}/events`)
    expect(events.body.events.map((e: any) => e.event_type)).toEqual(['intent.created', 'intent.submitted', 'intent.delivered'])
    // The recipient can.
    expect((await api(gw.url, keyB, 'POST', `/v1/intents/${aToB}/ack`, {})).status).toBe(200)
    expect((await api(gw.url, keyB, 'POST', `/v1/intents/${aToB}/resolve`, { status: 'COMPLETED' })).status).toBe(200)
  })

  it('cannot call /v1/keys or staff routes (403)', async () => {
    expectError(await api(gw.url, keyA, 'GET', '/v1/keys'), 403, 'forbidden')
    expectError(await api(gw.url, keyA, 'POST', '/v1/keys', { role: 'admin' }), 403, 'forbidden')
    expectError(await api(gw.url, keyA, 'POST', '/v1/keys', { role: 'agent', agent: A }), 403, 'forbidden')
    const list = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    const keyId = (list.body.keys as any[]).find((k) => k.agent === B).key_id
    expectError(await api(gw.url, keyA, 'DELETE', `/v1/keys/${keyId}`), 403, 'forbidden')
    expect((await api(gw.url, keyB, 'GET', `/v1/intents?agent=${encodeURIComponent(B)}`)).status).toBe(200) // B's key still valid
    expectError(await api(gw.url, keyA, 'GET', '/v1/mesh/agents'), 403, 'forbidden')
    expectError(await api(gw.url, keyA, 'POST', '/v1/mesh/agents', { address: 'agent://acme/prod/auth-new' }), 403, 'forbidden')
  })

  it("cannot read another agent's intent, its events, or its intent list", async () => {
    // bToC is neither sent nor received by A.
    const one = await api(gw.url, keyA, 'GET', `/v1/intents/${bToC}`)
    expect([403, 404]).toContain(one.status)
    expect(one.body.ok).toBe(false)
    expect(JSON.stringify(one.body)).not.toContain('work.v1')
    const events = await api(gw.url, keyA, 'GET', `/v1/intents/${bToC}/events`)
    expect([403, 404]).toContain(events.status)
    expect(events.body.events).toBeUndefined()
    const es = await readSse(gw.url, keyA, `/v1/intents/${bToC}/events/stream?wait_seconds=1`)
    expect([403, 404]).toContain(es.status)
    const list = await api(gw.url, keyA, 'GET', `/v1/intents?agent=${encodeURIComponent(B)}`)
    expectError(list, 403, 'forbidden')
    // It may read what it sent and what it received.
    expect((await api(gw.url, keyA, 'GET', `/v1/intents/${aToB}`)).status).toBe(200)
    expect((await api(gw.url, keyB, 'GET', `/v1/intents/${aToB}`)).status).toBe(200)
    expect((await api(gw.url, keyC, 'GET', `/v1/intents/${bToC}`)).status).toBe(200)
    const mine = await api(gw.url, keyA, 'GET', '/v1/intents')
    expect(mine.status).toBe(200)
    for (const i of mine.body.intents as any[]) expect([i.from_agent, i.to_agent]).toContain(A)
  })
})

describe('bootstrap admin key from CHOKEPOINT_ADMIN_KEY', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-auth-boot-'))
  const envKey = `cp_${randomBase62(43)}`
  let gw: TestGateway | null = null
  afterAll(async () => {
    await gw?.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  it('accepts the configured key, prints none, and survives a restart on the same directory', async () => {
    gw = await startTestGateway({ env: { CHOKEPOINT_ADMIN_KEY: envKey }, dataDir })
    expect(gw.gateway.bootstrapKey).toBeNull()
    expect(gw.adminKey).toBe(envKey)
    const list = await api(gw.url, envKey, 'GET', '/v1/keys')
    expect(list.status).toBe(200)
    const admins = (list.body.keys as any[]).filter((k) => k.role === 'admin')
    expect(admins).toHaveLength(1)
    expect(await api(gw.url, envKey, 'GET', '/v1/keys', undefined, {})).toMatchObject({ status: 200 })
    await gw.close()
    gw = null

    // Restart with the same key: idempotent, still exactly one admin key, no new key printed.
    gw = await startTestGateway({ env: { CHOKEPOINT_ADMIN_KEY: envKey }, dataDir })
    expect(gw.gateway.bootstrapKey).toBeNull()
    const list2 = await api(gw.url, envKey, 'GET', '/v1/keys')
    expect(list2.status).toBe(200)
    expect((list2.body.keys as any[]).filter((k) => k.role === 'admin')).toHaveLength(1)
    await gw.close()
    gw = null

    // Restart without the variable: an admin key exists, so none is created or printed,
    // and the stored key keeps working.
    const plain = await startGateway(loadConfig({ CHOKEPOINT_SWEEP_INTERVAL_MS: '50' }, { port: '0', data: dataDir }), {
      log: () => undefined,
    })
    try {
      expect(plain.bootstrapKey).toBeNull()
      expect((await api(plain.url, envKey, 'GET', '/v1/keys')).status).toBe(200)
    } finally {
      await plain.close()
    }
  })

  it('a gateway without CHOKEPOINT_ADMIN_KEY on an empty directory prints a fresh admin key once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'chokepoint-auth-fresh-'))
    try {
      const first = await startTestGateway({ dataDir: dir })
      const printed = first.gateway.bootstrapKey
      expect(printed).toMatch(KEY_RE)
      expect((await api(first.url, printed, 'GET', '/v1/keys')).status).toBe(200)
      await first.close()
      const second = await startTestGateway({ dataDir: dir, env: { CHOKEPOINT_ADMIN_KEY: envKey } })
      // The old printed key still works; the configured key was added.
      expect(second.gateway.bootstrapKey).toBeNull()
      expect((await api(second.url, printed, 'GET', '/v1/keys')).status).toBe(200)
      expect((await api(second.url, envKey, 'GET', '/v1/keys')).status).toBe(200)
      await second.close()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('keys are stored hashed', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-auth-hash-'))
  let gw: TestGateway | null = null
  afterAll(async () => {
    await gw?.close()
    rmSync(dataDir, { recursive: true, force: true })
  })

  function dbFilesContain(needles: string[]): string[] {
    const found: string[] = []
    for (const name of readdirSync(dataDir)) {
      if (!name.startsWith('chokepoint.db')) continue
      const bytes = readFileSync(join(dataDir, name))
      for (const needle of needles) {
        if (bytes.includes(Buffer.from(needle, 'utf8'))) found.push(`${name}: ${needle.slice(0, 8)}…`)
        // Also not stored as UTF-16 text.
        if (bytes.includes(Buffer.from(needle, 'utf16le'))) found.push(`${name} (utf16): ${needle.slice(0, 8)}…`)
      }
    }
    return found
  }

  it('no raw key appears anywhere in the database files; key_hash is the SHA-256 of the key', async () => {
    const envKey = `cp_${randomBase62(43)}`
    gw = await startTestGateway({ env: { CHOKEPOINT_ADMIN_KEY: envKey }, dataDir })
    const keys: string[] = [envKey]
    for (const body of [
      { role: 'agent', agent: 'agent://acme/prod/hash-a' },
      { role: 'operator' },
      { role: 'viewer' },
      { role: 'admin' },
    ]) {
      const res = await api(gw.url, envKey, 'POST', '/v1/keys', body)
      expect(res.status).toBe(200)
      keys.push(res.body.key)
    }
    // Use each key once so any "last used" bookkeeping runs too.
    for (const k of keys) await api(gw.url, k, 'GET', '/v1/intents')

    // While the gateway runs (WAL mode: the data may still be in chokepoint.db-wal).
    expect(dbFilesContain(keys)).toEqual([])
    expect(dbFilesContain(keys.map((k) => k.slice(3)))).toEqual([])

    const db = new Database(join(dataDir, 'chokepoint.db'), { readonly: true, fileMustExist: true })
    try {
      const rows = db.prepare('SELECT key_hash FROM api_keys').all() as { key_hash: string }[]
      const hashes = new Set(rows.map((r) => r.key_hash))
      for (const k of keys) expect(hashes.has(sha256(k)), 'sha256 of a key is stored').toBe(true)
      for (const r of rows) expect(r.key_hash).toMatch(/^[0-9a-f]{64}$/)
      // No column of any table holds a raw key.
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
      for (const { name } of tables) {
        const dump = JSON.stringify(db.prepare(`SELECT * FROM "${name}"`).all())
        for (const k of keys) expect(dump.includes(k.slice(3)), `table ${name}`).toBe(false)
      }
    } finally {
      db.close()
    }

    // After a clean shutdown (checkpointed into the main file).
    await gw.close()
    gw = null
    expect(dbFilesContain(keys)).toEqual([])
  })
})
