/**
 * The audit trail (DESIGN §2.7, §5d, §10, §11): every control change appends one hash-chained
 * entry; the chain is recomputed here independently; filters and paging; verification; and
 * tampering with the database (edit, re-hash, delete) is detected. The server source contains
 * no SQL that updates or deletes audit rows. Mesh events record kills and resumes.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, startTestGateway, type TestGateway } from './harness.js'

const GENESIS = '0'.repeat(64)
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/
const A = 'agent://acme/prod/audit-target'

/** A small canonical JSON of our own (RFC 8785 for JSON.parse values): sorted keys, no whitespace. */
function jcs(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(jcs).join(',')}]`
  const obj = value as Record<string, unknown>
  return `{${Object.keys(obj)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${jcs(obj[k])}`)
    .join(',')}}`
}

function entryHash(prevHash: string, e: any): string {
  const body = { seq: e.seq, at: e.at, actor: e.actor, action: e.action, target: e.target, reason: e.reason, before: e.before, after: e.after }
  return createHash('sha256').update(prevHash + jcs(body), 'utf8').digest('hex')
}

function sourceFiles(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path))
    else if (/\.(ts|js|mjs|cjs|sql)$/.test(name)) out.push(path)
  }
  return out
}

async function createKey(gw: TestGateway, key: string, body: Record<string, unknown>): Promise<{ key: string; key_id: string }> {
  const res = await api(gw.url, key, 'POST', '/v1/keys', body)
  if (res.status !== 200) throw new Error(`key: ${res.status} ${JSON.stringify(res.body)}`)
  return { key: res.body.key, key_id: res.body.key_id }
}

describe('audit trail', () => {
  let gw: TestGateway
  let db: Database.Database
  let adminKeyId: string
  let operator: { key: string; key_id: string }
  let agent: { key: string; key_id: string }
  let viewer: { key: string; key_id: string }
  let killedAt: string
  let entries: any[]

  const all = async (): Promise<any[]> => {
    const res = await api(gw.url, gw.adminKey, 'GET', '/v1/audit/events?limit=500')
    expect(res.status).toBe(200)
    return res.body.entries
  }
  const verify = async () => {
    const res = await api(gw.url, viewer.key, 'GET', '/v1/audit/verify')
    expect(res.status).toBe(200)
    return res.body
  }

  beforeAll(async () => {
    gw = await startTestGateway()
    const keys = await api(gw.url, gw.adminKey, 'GET', '/v1/keys')
    adminKeyId = keys.body.keys.find((k: any) => k.role === 'admin').key_id
    // key.create ×3 (operator, agent, viewer)
    operator = await createKey(gw, gw.adminKey, { role: 'operator', name: 'ops' })
    agent = await createKey(gw, gw.adminKey, { role: 'agent', agent: A })
    viewer = await createKey(gw, gw.adminKey, { role: 'viewer' })
    // agent.kill, agent.resume
    const kill = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/kill`, { reason: 'audit kill' })
    expect(kill.status).toBe(200)
    killedAt = kill.body.killed_at
    const resume = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/resume`, { reason: 'audit resume' })
    expect(resume.status).toBe(200)
    // auth.denied: an agent key tries to kill
    const selfKill = await api(gw.url, agent.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/kill`, { reason: 'self' })
    expect([selfKill.status, selfKill.body.error.code]).toEqual([403, 'forbidden'])
    // A 401 is not audited.
    expect((await api(gw.url, 'cp_000000000000000000000000000000', 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/kill`, {})).status).toBe(401)
    // auth.denied: an operator tries to create a key (admin only)
    const denied = await api(gw.url, operator.key, 'POST', '/v1/keys', { role: 'admin' })
    expect([denied.status, denied.body.error.code]).toEqual([403, 'forbidden'])
    // key.revoke: a throwaway key
    const spare = await createKey(gw, gw.adminKey, { role: 'viewer', name: 'spare' })
    const revoke = await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${spare.key_id}`)
    expect(revoke.status).toBe(200)
    entries = await all()
    db = new Database(join(gw.dataDir, 'chokepoint.db'))
    db.pragma('busy_timeout = 5000')
  })
  afterAll(async () => {
    db?.close()
    await gw?.close()
  })

  it('appends one entry per control change, with the full shape', () => {
    expect(entries.map((e) => [e.seq, e.action])).toEqual([
      [1, 'key.create'], // the bootstrap admin key
      [2, 'key.create'],
      [3, 'key.create'],
      [4, 'key.create'],
      [5, 'agent.kill'],
      [6, 'agent.resume'],
      [7, 'auth.denied'],
      [8, 'auth.denied'],
      [9, 'key.create'],
      [10, 'key.revoke'],
    ])
    for (const e of entries) {
      expect(Object.keys(e).sort()).toEqual(['action', 'actor', 'after', 'at', 'before', 'hash', 'prev_hash', 'reason', 'seq', 'target'])
      expect(e.at).toMatch(ISO_MS)
      expect(e.hash).toMatch(/^[0-9a-f]{64}$/)
      expect(e.prev_hash).toMatch(/^[0-9a-f]{64}$/)
    }
    const [boot, op, ag, vw, kill, resume, denied1, denied2, spare, revoke] = entries
    expect(boot).toMatchObject({ actor: 'system', target: adminKeyId, after: { role: 'admin' } })
    expect(op).toMatchObject({ actor: `key:${adminKeyId}`, target: operator.key_id, reason: null, before: null, after: { role: 'operator', name: 'ops' } })
    expect(ag).toMatchObject({ actor: `key:${adminKeyId}`, target: agent.key_id, after: { role: 'agent', agent: A } })
    expect(vw).toMatchObject({ actor: `key:${adminKeyId}`, target: viewer.key_id, after: { role: 'viewer' } })
    expect(kill).toMatchObject({
      actor: `key:${operator.key_id}`,
      target: A,
      reason: 'audit kill',
      before: { health_status: 'unknown', killed_at: null },
      after: { health_status: 'killed', killed_at: killedAt, cancel_pending: false },
    })
    expect(kill.at).toBe(killedAt)
    expect(resume).toMatchObject({
      actor: `key:${operator.key_id}`,
      target: A,
      reason: 'audit resume',
      before: { health_status: 'killed', killed_at: killedAt },
      after: { killed_at: null, redelivering: 0 },
    })
    expect(denied1).toMatchObject({ actor: `key:${agent.key_id}`, target: agent.key_id, reason: expect.any(String) })
    expect(JSON.stringify(denied1.after)).toContain('/kill')
    expect(denied2).toMatchObject({ actor: `key:${operator.key_id}`, target: operator.key_id })
    expect(JSON.stringify(denied2.after)).toContain('/v1/keys')
    expect(spare).toMatchObject({ action: 'key.create', actor: `key:${adminKeyId}` })
    expect(revoke).toMatchObject({
      actor: `key:${adminKeyId}`,
      target: spare.target,
      before: { revoked: false },
      after: { revoked: true },
    })
    for (let i = 1; i < entries.length; i += 1) expect(Date.parse(entries[i].at)).toBeGreaterThanOrEqual(Date.parse(entries[i - 1].at))
  })

  it('chains: genesis prev_hash is 64 zeros; hash = sha256_hex(prev_hash + JCS(entry)), recomputed here', () => {
    expect(entries[0].prev_hash).toBe(GENESIS)
    let prev = GENESIS
    for (const e of entries) {
      expect(e.prev_hash, `seq ${e.seq}`).toBe(prev)
      expect(entryHash(prev, e), `seq ${e.seq}`).toBe(e.hash)
      prev = e.hash
    }
    // Our canonical form is the hashed text: key order and whitespace do not leak in.
    expect(jcs({ b: 1, a: { d: [1, 'x', null], c: true } })).toBe('{"a":{"c":true,"d":[1,"x",null]},"b":1}')
  })

  it('filters by action_prefix and target', async () => {
    const byPrefix = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?action_prefix=agent.')
    expect(byPrefix.body.entries.map((e: any) => e.action)).toEqual(['agent.kill', 'agent.resume'])
    const keys = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?action_prefix=key.')
    expect(keys.body.entries.map((e: any) => e.seq)).toEqual([1, 2, 3, 4, 9, 10])
    const denied = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?action_prefix=auth.denied')
    expect(denied.body.entries.map((e: any) => e.seq)).toEqual([7, 8])
    const byTarget = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?target=${encodeURIComponent(A)}`)
    expect(byTarget.body.entries.map((e: any) => e.action)).toEqual(['agent.kill', 'agent.resume'])
    const byKey = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?target=${agent.key_id}`)
    expect(byKey.body.entries.map((e: any) => e.action)).toEqual(['key.create', 'auth.denied'])
    const both = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?action_prefix=agent.res&target=${encodeURIComponent(A)}`)
    expect(both.body.entries.map((e: any) => e.seq)).toEqual([6])
    // LIKE wildcards in the prefix are literal.
    const wild = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?action_prefix=%25')
    expect(wild.body.entries).toEqual([])
    const none = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?target=agent%3A%2F%2Facme%2Fprod%2Fnobody')
    expect(none.body).toEqual({ ok: true, entries: [], next_after_seq: null })
  })

  it('pages with after_seq + limit and next_after_seq', async () => {
    const seen: number[] = []
    let after = 0
    for (let page = 0; page < 20; page += 1) {
      const res = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?limit=3&after_seq=${after}`)
      expect(res.status).toBe(200)
      expect(res.body.entries.length).toBeLessThanOrEqual(3)
      seen.push(...res.body.entries.map((e: any) => e.seq))
      if (res.body.next_after_seq === null) break
      expect(res.body.next_after_seq).toBe(res.body.entries[res.body.entries.length - 1].seq)
      after = res.body.next_after_seq
    }
    expect(seen).toEqual(entries.map((e) => e.seq))
    const tail = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?limit=3&after_seq=9')
    expect(tail.body.entries.map((e: any) => e.seq)).toEqual([10])
    expect(tail.body.next_after_seq).toBeNull()
    const filtered = await api(gw.url, viewer.key, 'GET', '/v1/audit/events?action_prefix=key.&limit=2&after_seq=2')
    expect(filtered.body.entries.map((e: any) => e.seq)).toEqual([3, 4])
    expect(filtered.body.next_after_seq).toBe(4)
    for (const bad of ['limit=0', 'limit=501', 'after_seq=-1', 'limit=abc']) {
      const res = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?${bad}`)
      expect([res.status, res.body.error.code], bad).toEqual([422, 'schema_invalid'])
    }
  })

  it('audit is readable by viewers, not by agent keys', async () => {
    expect((await api(gw.url, agent.key, 'GET', '/v1/audit/events')).status).toBe(403)
    expect((await api(gw.url, agent.key, 'GET', '/v1/audit/verify')).status).toBe(403)
    expect((await api(gw.url, null, 'GET', '/v1/audit/events')).status).toBe(401)
  })

  it('GET /v1/audit/verify → valid on an untouched chain', async () => {
    expect(await verify()).toEqual({ ok: true, entries: entries.length, valid: true, first_broken_seq: null })
  })

  it('mesh events list agent.killed / agent.resumed newest first, with actor_id and details.reason', async () => {
    const res = await api(gw.url, viewer.key, 'GET', `/v1/mesh/events?address=${encodeURIComponent(A)}`)
    expect(res.status).toBe(200)
    const evs = res.body.events.filter((e: any) => e.event_type === 'agent.killed' || e.event_type === 'agent.resumed')
    expect(evs.map((e: any) => e.event_type)).toEqual(['agent.resumed', 'agent.killed'])
    expect(evs[0]).toMatchObject({ address: A, actor_id: `key:${operator.key_id}`, details: { reason: 'audit resume' } })
    expect(evs[1]).toMatchObject({ address: A, actor_id: `key:${operator.key_id}`, details: { reason: 'audit kill' }, created_at: killedAt })
    for (const e of evs) expect(e.event_id).toMatch(/^evt_\d+$/)
    expect(Number(evs[0].event_id.slice(4))).toBeGreaterThan(Number(evs[1].event_id.slice(4)))
    const killedOnly = await api(gw.url, viewer.key, 'GET', '/v1/mesh/events?event_type=agent.killed')
    expect(killedOnly.body.events.map((e: any) => e.event_type)).toEqual(['agent.killed'])
  })

  describe('tampering with the database is detected', () => {
    it('an edited row (UPDATE audit_log SET reason = edited WHERE seq = 3) → valid: false, first_broken_seq: 3', async () => {
      const original = db.prepare('SELECT reason FROM audit_log WHERE seq = 3').get() as { reason: string | null }
      db.prepare("UPDATE audit_log SET reason = 'edited' WHERE seq = 3").run()
      expect(await verify()).toMatchObject({ ok: true, entries: expect.any(Number), valid: false, first_broken_seq: 3 })
      // Undo: the chain is whole again.
      db.prepare('UPDATE audit_log SET reason = ? WHERE seq = 3').run(original.reason)
      expect((await verify()).valid).toBe(true)
    })

    it('an edit of before/after or at is detected too', async () => {
      const row = db.prepare('SELECT at, after FROM audit_log WHERE seq = 5').get() as { at: string; after: string }
      db.prepare('UPDATE audit_log SET after = ? WHERE seq = 5').run(row.after.replace('"killed"', '"healthy"'))
      expect(await verify()).toMatchObject({ valid: false, first_broken_seq: 5 })
      db.prepare('UPDATE audit_log SET after = ? WHERE seq = 5').run(row.after)
      const otherAt = row.at.replace(/\.\d{3}Z$/, row.at.endsWith('.999Z') ? '.998Z' : '.999Z')
      db.prepare('UPDATE audit_log SET at = ? WHERE seq = 5').run(otherAt)
      expect(await verify()).toMatchObject({ valid: false, first_broken_seq: 5 })
      db.prepare('UPDATE audit_log SET at = ? WHERE seq = 5').run(row.at)
      expect((await verify()).valid).toBe(true)
    })

    it('an edit that re-hashes its own row still breaks the next link', async () => {
      const row = db.prepare('SELECT * FROM audit_log WHERE seq = 3').get() as any
      const forged = {
        ...row,
        reason: 'edited',
        before: row.before === null ? null : JSON.parse(row.before),
        after: row.after === null ? null : JSON.parse(row.after),
      }
      db.prepare("UPDATE audit_log SET reason = 'edited', hash = ? WHERE seq = 3").run(entryHash(row.prev_hash, forged))
      expect(await verify()).toMatchObject({ ok: true, valid: false, first_broken_seq: 4 })
      db.prepare('UPDATE audit_log SET reason = ?, hash = ? WHERE seq = 3').run(row.reason, row.hash)
      expect((await verify()).valid).toBe(true)
    })

    it('a deleted row → valid: false at the gap', async () => {
      const row = db.prepare('SELECT * FROM audit_log WHERE seq = 6').get() as any
      db.prepare('DELETE FROM audit_log WHERE seq = 6').run()
      expect(await verify()).toMatchObject({ ok: true, valid: false, first_broken_seq: 6 })
      // And a new control change appended after the damage does not heal it.
      const kill = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/kill`, { reason: 'after damage' })
      expect(kill.status).toBe(200)
      expect(await verify()).toMatchObject({ valid: false, first_broken_seq: 6 })
      db.prepare(
        'INSERT INTO audit_log (seq, at, actor, action, target, reason, before, after, prev_hash, hash) VALUES (@seq, @at, @actor, @action, @target, @reason, @before, @after, @prev_hash, @hash)',
      ).run(row)
      expect(await verify()).toEqual({ ok: true, entries: entries.length + 1, valid: true, first_broken_seq: null })
    })
  })

  it('denied attempts are coalesced per key and route per minute; other routes get their own entry', async () => {
    const probe = await createKey(gw, gw.adminKey, { role: 'agent', agent: 'agent://acme/prod/audit-prober' })
    const minuteBefore = Math.floor(Date.now() / 60_000)
    for (let i = 0; i < 3; i += 1) {
      const res = await api(gw.url, probe.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/kill`, {})
      expect(res.status).toBe(403)
    }
    const crossedMinute = Math.floor(Date.now() / 60_000) !== minuteBefore
    expect((await api(gw.url, probe.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(A)}/resume`, {})).status).toBe(403)
    const res = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?action_prefix=auth.denied&target=${probe.key_id}`)
    const routes = res.body.entries.map((e: any) => JSON.stringify(e.after))
    const kills = routes.filter((r: string) => r.includes('/kill')).length
    if (crossedMinute) expect([1, 2]).toContain(kills)
    else expect(kills).toBe(1)
    expect(routes.filter((r: string) => r.includes('/resume'))).toHaveLength(1)
    for (const e of res.body.entries) expect(e).toMatchObject({ action: 'auth.denied', actor: `key:${probe.key_id}`, target: probe.key_id })
    expect((await verify()).valid).toBe(true)
  })

  it('the server source never updates or deletes audit rows (append-only)', () => {
    const src = join(dirname(fileURLToPath(import.meta.url)), '..', 'src')
    const files = sourceFiles(src)
    expect(files.length).toBeGreaterThan(10)
    const offenders = files.filter((f) => /UPDATE\s+audit_log|DELETE\s+FROM\s+audit_log|REPLACE\s+INTO\s+audit_log|INSERT\s+OR\s+REPLACE\s+INTO\s+audit_log/i.test(readFileSync(f, 'utf8')))
    expect(offenders).toEqual([])
    // The scan does see the code that writes the log.
    expect(files.some((f) => /INSERT\s+INTO\s+audit_log/i.test(readFileSync(f, 'utf8')))).toBe(true)
  })
})
