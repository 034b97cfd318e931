/**
 * `chokepoint migrate-store`: a SQLite deployment with keys, agents, intents in every delivery
 * state (queued, leased, completed, failed, held by a kill), policies with live counters,
 * webhooks and an audit trail is stopped, copied by the CLI into a fresh PostgreSQL database,
 * and a gateway started on PostgreSQL must behave as the old one would have: the same keys
 * authenticate, intents and their events are identical, the killed agent is still killed and its
 * held work is redelivered on resume, policies enforce with the old counts, and the audit chain
 * verifies with the same entries and head hash — and keeps growing from it. Also: the refusals
 * (gateway still running, non-empty target, missing data, usage). Skipped when PostgreSQL is not
 * installed.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { MIGRATED_TABLES } from '@chokepoint/server'
import { ensureBuilt, randomAdminKey } from '../../server/test/child-gateway.js'
import { agentKey, api, pollUntil, readSse, sharedPostgres, startTestGateway, stopSharedPostgres, type TestGateway } from '../../server/test/harness.js'
import { postgresBinDir, type PostgresCluster } from '../../server/test/postgres.js'
import { SQLITE_MIGRATIONS } from '../../server/src/store/sqlite/sqlite-migrations.js'

const CLI = resolve(import.meta.dirname, '../bin/chokepoint.js')
const NO_POSTGRES = postgresBinDir() === null
if (NO_POSTGRES) console.warn('PostgreSQL not installed: skipping the migrate-store tests (Debian: apt-get install postgresql)')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function cli(args: string[]): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env['PATH'] ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('exit', (code) => done({ code, stdout, stderr }))
  })
}

const PLANNER = 'agent://acme/prod/planner'
const WORKER = 'agent://acme/prod/worker'
const DEPLOYER = 'agent://acme/prod/deployer'
const IDLE = 'agent://acme/prod/idle'
const stream = (address: string, query: string): string => `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`
const enc = encodeURIComponent

/** Reads an instance's inbox (windowed responses) until `done(deliveries by intent_id)`. */
async function collect(url: string, key: string, address: string, instance: string, query: string, done: (m: Map<string, any>) => boolean) {
  const seen = new Map<string, any>()
  await pollUntil(
    async () => {
      const res = await readSse(url, key, stream(address, `wait_seconds=1&${query}`), { 'x-instance-id': instance })
      if (res.status !== 200) throw new Error(`stream of ${address}: ${res.status} ${JSON.stringify(res.body)}`)
      for (const f of res.frames) if (f.event === 'intent.delivered') seen.set(f.data.intent_id, f.data)
      return done(seen)
    },
    { timeoutMs: 15_000, what: `deliveries to ${address} (${instance})` },
  )
  return seen
}

/** Everything observable over HTTP that the copy must preserve. */
async function snapshot(url: string, admin: string, intentIds: string[]) {
  const get = async (path: string) => {
    const res = await api(url, admin, 'GET', path)
    expect(res.status, path).toBe(200)
    return res.body
  }
  const intents: Record<string, unknown> = {}
  for (const id of intentIds) {
    intents[id] = { intent: (await get(`/v1/intents/${id}`)).intent, events: (await get(`/v1/intents/${id}/events`)).events }
  }
  const agent = async (a: string) => {
    const { agent: row } = await get(`/v1/mesh/agents/${enc(a)}`)
    // Health of a live agent depends on the clock (staleness); identity, kill state and counts do not.
    const { health_status: _h, instances_healthy: _i, instances, ...rest } = row
    return { ...rest, instances: instances.map((x: { instance_id: string }) => x.instance_id) }
  }
  return {
    intents,
    keys: (await get('/v1/keys')).keys,
    policies: (await get(`/v1/mesh/agents/${enc(PLANNER)}/policies`)).policies,
    audit: (await get('/v1/audit/events?limit=500')).entries,
    verify: await get('/v1/audit/verify'),
    mesh: (await get('/v1/mesh/events?limit=500')).events,
    webhooks: (await get('/v1/alerts/webhooks')).webhooks,
    received: (await get(`/v1/intents?agent=${enc(WORKER)}&direction=received&limit=500`)).intents,
    agents: { planner: await agent(PLANNER), worker: await agent(WORKER), deployer: await agent(DEPLOYER), idle: await agent(IDLE) },
    // Hour counters (cost_usd included); only hours with counts, so a turn of the hour between snapshots changes nothing.
    hours: {
      worker: await activeHours(get, WORKER),
      deployer: await activeHours(get, DEPLOYER),
    },
  }
}

async function activeHours(get: (path: string) => Promise<any>, address: string) {
  const { hours } = await get(`/v1/mesh/agents/${enc(address)}/cost?hours=168`)
  return (hours as { cost_usd: number; sent: number; received: number }[]).filter((h) => h.cost_usd > 0 || h.sent > 0 || h.received > 0)
}

describe.skipIf(NO_POSTGRES)('chokepoint migrate-store (SQLite → PostgreSQL)', () => {
  const adminKey = randomAdminKey()
  const env = { CHOKEPOINT_ADMIN_KEY: adminKey, CHOKEPOINT_RESUME_RATE: '1000' }
  let dataDir: string
  let cluster: PostgresCluster
  let sqlite: TestGateway | null = null
  let pgGateway: TestGateway | null = null
  const keys: Record<string, string> = {}
  let revokedKey: string
  let ids: Record<string, string[]>
  let before: Awaited<ReturnType<typeof snapshot>>
  let workerMaxSeq = 0
  let hourOfSends = ''

  beforeAll(async () => {
    ensureBuilt()
    const pgCluster = await sharedPostgres()
    if (!pgCluster) throw new Error('PostgreSQL did not start')
    cluster = pgCluster
    dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-migrate-'))
    sqlite = await startTestGateway({ dataDir, env })
    const gw = sqlite
    const admin = adminKey
    for (const [name, address] of [['planner', PLANNER], ['worker', WORKER], ['deployer', DEPLOYER]] as const) keys[name] = await agentKey(gw, address)
    keys['viewer'] = (await api(gw.url, admin, 'POST', '/v1/keys', { role: 'viewer', name: 'dash' })).body.key
    keys['operator'] = (await api(gw.url, admin, 'POST', '/v1/keys', { role: 'operator', name: 'oncall' })).body.key
    const revoked = await api(gw.url, admin, 'POST', '/v1/keys', { role: 'agent', agent: PLANNER, name: 'old laptop' })
    revokedKey = revoked.body.key
    expect((await api(gw.url, admin, 'DELETE', `/v1/keys/${revoked.body.key_id}`)).status).toBe(200)
    expect((await api(gw.url, admin, 'POST', '/v1/alerts/webhooks', { url: 'http://127.0.0.1:9/hook', event_types: ['agent.killed'] })).status).toBe(200)
    // Policies on the planner: at most 8 sends an hour, and no secrets.*.
    const planner = enc(PLANNER)
    expect((await api(gw.url, admin, 'POST', `/v1/mesh/agents/${planner}/policies`, { kind: 'rate', direction: 'send', max_per_hour: 8, on_breach: 'block' })).status).toBe(200)
    expect((await api(gw.url, admin, 'POST', `/v1/mesh/agents/${planner}/policies`, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['secrets.**'] })).status).toBe(200)

    const send = async (key: string, to: string, payload: unknown, headers: Record<string, string> = {}) => {
      const res = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: to, payload }, headers)
      expect(res.status, JSON.stringify(res.body)).toBe(200)
      return res.body.intent_id as string
    }
    hourOfSends = new Date().toISOString().slice(0, 13)
    // To the worker: one completed (with cost), one failed, one left leased.
    ids = { worker: [], deployer: [], idle: [], outbound: [] }
    ids['worker']!.push(await send(keys['planner']!, WORKER, { n: 1 }, { 'idempotency-key': 'order-1' }))
    ids['worker']!.push(await send(keys['planner']!, WORKER, { n: 2, nested: { list: [1, 2.5, 'x'] } }))
    ids['worker']!.push(await send(keys['planner']!, WORKER, { n: 3 }))
    const delivered = [...(await collect(gw.url, keys['worker']!, WORKER, 'w-1', 'lease_seconds=3600', (m) => m.size === 3)).values()]
    expect(delivered.map((d) => d.intent_id).sort()).toEqual([...ids['worker']!].sort())
    workerMaxSeq = Math.max(...delivered.map((d) => d.seq as number))
    const byN = (n: number) => delivered.find((d) => d.payload.n === n)!.intent_id as string
    const resolveAs = (id: string, body: unknown) => api(gw.url, keys['worker']!, 'POST', `/v1/intents/${id}/resolve`, body, { 'x-instance-id': 'w-1' })
    expect((await resolveAs(byN(1), { status: 'COMPLETED', result: { url: 'https://x' }, cost_usd: 0.25 })).status).toBe(200)
    expect((await resolveAs(byN(2), { status: 'FAILED', error: { message: 'boom' } })).status).toBe(200)
    expect((await api(gw.url, keys['worker']!, 'POST', `/v1/intents/${byN(3)}/ack`, {}, { 'x-instance-id': 'w-1' })).status).toBe(200)
    // Queued for an agent that never connected.
    ids['idle']!.push(await send(keys['planner']!, IDLE, { n: 4 }))
    // The deployer: 3 queued to it, one of them then leased; one of its own sends not yet delivered.
    for (const n of [5, 6, 7]) ids['deployer']!.push(await send(keys['planner']!, DEPLOYER, { n }))
    const leased = await readSse(gw.url, keys['deployer']!, stream(DEPLOYER, 'wait_seconds=2&lease_seconds=3600&max_in_flight=1'), { 'x-instance-id': 'd-1' })
    expect(leased.frames.filter((f) => f.event === 'intent.delivered')).toHaveLength(1)
    ids['outbound']!.push(await send(keys['deployer']!, WORKER, { n: 8 }))
    expect((await api(gw.url, keys['deployer']!, 'POST', '/v1/mesh/heartbeat', { metrics: { intents_total: 3, cost_usd: 0.5 } }, { 'x-instance-id': 'd-1' })).status).toBe(200)
    // A denied send (not counted) and the kill: everything of the deployer's is held.
    const denied = await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'secrets.read', to_agent: WORKER, payload: {} })
    expect(denied.body.error?.code).toBe('policy_denied')
    const kill = await api(gw.url, keys['operator']!, 'POST', `/v1/mesh/agents/${enc(DEPLOYER)}/kill`, { reason: 'deploy loop' })
    expect(kill.status).toBe(200)
    await pollUntil(async () => {
      const all = [...ids['deployer']!, ...ids['outbound']!]
      const states = await Promise.all(all.map(async (id) => (await api(gw.url, adminKey, 'GET', `/v1/intents/${id}`)).body.intent.delivery_state))
      return states.every((s) => s === 'held')
    }, { what: 'the deployer backlog to be held' })
    before = await snapshot(gw.url, adminKey, Object.values(ids).flat())
    // The resolve's and the heartbeat's costs are in the hour counters the copy must carry.
    expect(before.hours.worker.reduce((sum: number, h: { cost_usd: number }) => sum + h.cost_usd, 0)).toBe(0.25)
    expect(before.hours.deployer.reduce((sum: number, h: { cost_usd: number }) => sum + h.cost_usd, 0)).toBe(0.5)
    expect(before.verify).toMatchObject({ valid: true })
    expect(before.audit.length).toBeGreaterThanOrEqual(10)
  }, 60_000)

  afterAll(async () => {
    await sqlite?.close()
    await pgGateway?.close()
    await stopSharedPostgres()
    if (dataDir) rmSync(dataDir, { recursive: true, force: true })
  })

  it('covers every table of the SQLite schema', async () => {
    const Database = (await import('better-sqlite3')).default
    const db = new Database(':memory:')
    for (const step of SQLITE_MIGRATIONS) db.exec(step)
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[]).map((r) => r.name)
    db.close()
    expect([...MIGRATED_TABLES].sort()).toEqual(tables.sort())
  })

  it('refuses while a gateway holds the data directory, and on bad input', async () => {
    const target = await cluster.createDatabase()
    const busy = await cli(['migrate-store', '--from', `sqlite:${dataDir}`, '--to', target])
    expect(busy.code).toBe(1)
    expect(busy.stderr).toMatch(new RegExp(`a gateway \\(pid ${process.pid}\\) is serving .*stop it first`))
    expect((await cli(['migrate-store', '--from', dataDir, '--to', target])).code).toBe(2)
    expect((await cli(['migrate-store', '--from', `sqlite:${dataDir}`])).code).toBe(2)
    expect((await cli(['migrate-store', '--from', `sqlite:${dataDir}`, '--to', 'mysql://x'])).code).toBe(2)
    const missing = await cli(['migrate-store', '--from', `sqlite:${join(dataDir, 'nope')}`, '--to', target])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/no Chokepoint SQLite data in/)
    expect(existsSync(join(dataDir, 'nope'))).toBe(false)
    const help = await cli(['migrate-store', '--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: chokepoint migrate-store[\s\S]*Examples:/)
  })

  /** The copy needs the SQLite gateway stopped (each test may run alone, e.g. with -t). */
  const stopSqlite = async (): Promise<void> => {
    await sqlite?.close()
    sqlite = null
  }

  it('refuses a non-empty target database, writing nothing', async () => {
    await stopSqlite()
    const used = await cluster.createDatabase()
    const other = await startTestGateway({ databaseUrl: used, env })
    await other.close()
    const run = await cli(['migrate-store', '--from', `sqlite:${dataDir}`, '--to', used, '--json'])
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/the target database is not empty \(api_keys: 1 rows/)
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, error: { code: 'target_not_empty' } })
    expect(existsSync(join(dataDir, 'chokepoint.lock'))).toBe(false)
  })

  it('copies everything; a PostgreSQL gateway then behaves as the SQLite one did', async () => {
    await stopSqlite()
    const target = await cluster.createDatabase()
    const run = await cli(['migrate-store', '--from', `sqlite:${dataDir}`, '--to', target, '--json'])
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.ok).toBe(true)
    expect(summary.tables.map((t: { table: string }) => t.table)).toEqual([...MIGRATED_TABLES])
    const rows = Object.fromEntries(summary.tables.map((t: { table: string; rows: number }) => [t.table, t.rows]))
    expect(rows).toMatchObject({ agents: 4, intents: 8, policies: 2, webhooks: 1, idempotency_keys: 1 })
    expect(rows['intent_events']).toBeGreaterThan(16)
    expect(rows['alert_outbox']).toBeGreaterThanOrEqual(1)
    expect(rows['agent_instances']).toBe(1)
    expect(summary.audit).toMatchObject({ entries: before.audit.length, valid: true, head_hash: before.audit.at(-1).hash })
    expect(run.stderr).toMatch(/intent_events\s+\d+ rows/)
    expect(existsSync(join(dataDir, 'chokepoint.lock'))).toBe(false)

    pgGateway = await startTestGateway({ databaseUrl: target, env })
    const gw = pgGateway
    expect(gw.gateway.store.engine).toBe('postgres')
    expect(gw.gateway.bootstrapKey).toBeNull()
    const after = await snapshot(gw.url, adminKey, Object.values(ids).flat())
    expect(after).toEqual(before)
    expect(after.verify).toEqual({ ok: true, entries: before.audit.length, valid: true, first_broken_seq: null })

    // The same keys authenticate (hashes copied); the revoked one stays revoked.
    for (const [name, address] of [['planner', PLANNER], ['worker', WORKER]] as const) {
      expect((await api(gw.url, keys[name]!, 'GET', `/v1/intents?agent=${enc(address)}`)).status, name).toBe(200)
    }
    for (const name of ['viewer', 'operator']) expect((await api(gw.url, keys[name]!, 'GET', '/v1/mesh/events')).status, name).toBe(200)
    expect((await api(gw.url, keys['deployer']!, 'GET', `/v1/intents?agent=${enc(DEPLOYER)}`)).status).not.toBe(401)
    expect((await api(gw.url, revokedKey, 'GET', '/v1/mesh/events')).status).toBe(401)
    // Idempotency survived: the same key and body answer the original intent.
    const replay = await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: WORKER, payload: { n: 1 } }, { 'idempotency-key': 'order-1' })
    expect(replay.status).toBe(200)
    expect(replay.body.intent_id).toBe(ids['worker']![0])

    // Still killed: its sends and intents to it are refused, its stream too.
    const toKilled = await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: DEPLOYER, payload: {} })
    expect(toKilled.body.error?.code).toBe('agent_killed')
    const fromKilled = await api(gw.url, keys['deployer']!, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: WORKER, payload: {} })
    expect(fromKilled.body.error?.code).toBe('agent_killed')
    expect((await readSse(gw.url, keys['deployer']!, stream(DEPLOYER, 'wait_seconds=1'), { 'x-instance-id': 'd-1' })).status).toBe(403)

    // Policies enforce with the old counts: 7 accepted this hour, the 8th passes, the 9th is refused.
    expect((await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'secrets.read', to_agent: WORKER, payload: {} })).body.error?.code).toBe('policy_denied')
    const eighth = await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: WORKER, payload: { n: 9 } })
    expect(eighth.status).toBe(200)
    const ninth = await api(gw.url, keys['planner']!, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: WORKER, payload: { n: 10 } })
    if (new Date().toISOString().slice(0, 13) === hourOfSends) expect(ninth.body.error?.code).toBe('rate_limited')

    // New work gets new numbers: the delivery seq continues the worker's counter.
    const fresh = await collect(gw.url, keys['worker']!, WORKER, 'w-2', 'lease_seconds=60', (m) => m.has(eighth.body.intent_id))
    expect(fresh.get(eighth.body.intent_id)?.seq).toBe(workerMaxSeq + 1)

    // Resume: the held work flows again, in both directions.
    const resumed = await api(gw.url, keys['operator']!, 'POST', `/v1/mesh/agents/${enc(DEPLOYER)}/resume`, { reason: 'fixed' })
    expect(resumed.status).toBe(200)
    expect(resumed.body.redelivering).toBe(4)
    const toDeployer = await collect(gw.url, keys['deployer']!, DEPLOYER, 'd-2', 'lease_seconds=60', (m) => m.size === 3)
    expect([...toDeployer.keys()].sort()).toEqual([...ids['deployer']!].sort())
    expect([...toDeployer.values()].map((d) => d.delivery_attempt).sort()).toEqual([1, 1, 2])
    await collect(gw.url, keys['worker']!, WORKER, 'w-3', 'lease_seconds=60', (m) => m.has(ids['outbound']![0]!))

    // The audit chain grows from the copied head; mesh events continue their numbering.
    const verify = await api(gw.url, adminKey, 'GET', '/v1/audit/verify')
    expect(verify.body).toMatchObject({ valid: true, entries: before.audit.length + 1 })
    const last = (await api(gw.url, adminKey, 'GET', `/v1/audit/events?after_seq=${before.audit.length}`)).body.entries
    expect(last).toHaveLength(1)
    expect(last[0]).toMatchObject({ action: 'agent.resume', prev_hash: before.audit.at(-1).hash })
    const events = (await api(gw.url, adminKey, 'GET', '/v1/mesh/events?limit=500')).body.events as { event_id: string; event_type: string }[]
    expect(new Set(events.map((e) => e.event_id)).size).toBe(events.length)
    expect(events[0]?.event_type).toBe('agent.resumed')
    const num = (id: string | undefined) => Number(id?.slice(4))
    expect(num(events[0]?.event_id)).toBeGreaterThan(num(before.mesh[0]?.event_id))
  }, 60_000)

  it('prints a table and a summary for people', async () => {
    await stopSqlite()
    const target = await cluster.createDatabase()
    const run = await cli(['migrate-store', '--from', `sqlite:${dataDir}`, '--to', target.replace('postgres@', 'postgres:hunter2@')])
    expect(run.code, run.stderr).toBe(0)
    expect(run.stdout).toMatch(/Copying sqlite:.* → postgres:\/\/postgres:\*\*\*@127\.0\.0\.1/)
    expect(run.stdout).toMatch(/^ {2}intents\s+8 rows$/m)
    expect(run.stdout).toMatch(/copied: \d+ rows in 21 tables/)
    expect(run.stdout).toMatch(/audit trail: \d+ entries, hash chain intact/)
    expect(run.stdout).not.toContain('hunter2')
  })
})
