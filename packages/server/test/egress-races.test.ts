/**
 * Egress under adversarial load (DESIGN: egress admission and the kill switch), against the
 * fake OpenAI upstream on 127.0.0.1, on SQLite, one PostgreSQL gateway and three PostgreSQL
 * replicas of one database:
 *  1. a burst of 300 concurrent chat calls (half streaming, spread round-robin) against a cost
 *     ceiling worth exactly K reservations, with the upstream holding every answer until the
 *     burst is over: exactly K reach the upstream, the rest get 429 budget_exceeded with
 *     `x-should-retry: false`, nothing overshoots, and while they are held the open calls and
 *     the `chokepoint_egress_reserved_usd` gauges hold exactly K reservations (0 afterwards);
 *  2. 1,000 calls racing a kill: no call the client sent after the kill call returned reaches
 *     the upstream, each of them gets 403 agent_killed, and no refused call is ever forwarded;
 *  3. 20 slow streams open on three replicas when the agent is killed: each ends with the
 *     `agent_killed` error frame and the upstream sees each of its requests aborted within 1 s
 *     of the kill returning (measured from the upstream's own close events);
 *  4. PostgreSQL down (a cluster of its own, halted): a chat call gets 503 store_unavailable in
 *     the gateway's error shape and nothing reaches the upstream; once it is back, calls work;
 *  5. bad input only gets a 4xx: an absurd `n` is refused (it was a 500 on PostgreSQL, where its
 *     reservation did not fit a bigint, and stored as a float on SQLite).
 * The client is node:http with a keep-alive agent sized above the burst (no client-side queue).
 */
import http from 'node:http'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFakeLlm, type FakeLlm, type FakeRequest } from './fake-llm.js'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'
import { startPostgres, type PostgresCluster } from './postgres.js'

const ENGINES = testEngines('egress-races.test.ts')
const HAVE_POSTGRES = ENGINES.includes('postgres')
const enc = encodeURIComponent

/** $1 per million input tokens, $2 per million output tokens. */
const PRICE = { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100_000, max_output_tokens: 1000 }
/** Output cap of every call, and the exact size of every request body the gateway forwards. */
const CAP = 100
const PAYLOAD_BYTES = 240
/** One reservation, micro-USD: PAYLOAD_BYTES input tokens at $1/M + CAP output tokens at $2/M. */
const RESERVATION_MICRO = PAYLOAD_BYTES * 1 + CAP * 2
/** The burst: the ceiling is worth exactly K reservations. */
const K = 37
const BURST = 300

/** The client: keep-alive sockets, more of them than calls in flight, so nothing queues here. */
const client = new http.Agent({ keepAlive: true, maxSockets: 1024 })

/**
 * A chat body whose forwarded form is exactly PAYLOAD_BYTES long (streaming or not), so every
 * call reserves RESERVATION_MICRO: the gateway forwards it unchanged (the cap and, on a
 * stream, `include_usage` are already as it would set them). The marker names the call.
 */
function chatBody(marker: string, stream: boolean): Record<string, unknown> {
  const make = (content: string) => ({
    model: 'fake-model',
    messages: [{ role: 'user', content }],
    max_completion_tokens: CAP,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  })
  const pad = PAYLOAD_BYTES - Buffer.byteLength(JSON.stringify(make(marker)))
  if (pad < 1) throw new Error(`marker ${marker} too long`)
  const body = make(`${marker} ${'.'.repeat(pad - 1)}`)
  if (Buffer.byteLength(JSON.stringify(body)) !== PAYLOAD_BYTES) throw new Error('chat body size')
  return body
}

/** The marker of an upstream request (the first word of its message). */
const markerOf = (r: FakeRequest): string => String((r.body as any)?.messages?.[0]?.content ?? '').split(' ')[0] as string
const chatRequests = (fake: FakeLlm): FakeRequest[] => fake.requests.filter((r) => r.path === '/v1/chat/completions')

interface Answer {
  marker: string
  status: number
  headers: http.IncomingHttpHeaders
  text: string
  /** performance.now() just before the request was handed to the socket. */
  sentAt: number
  /** performance.now() when the response had ended. */
  doneAt: number
  /** Resolves once the first body bytes arrived (streams: the call is flowing). */
  firstBytes: Promise<void>
}

/** POST a chat call; resolves with the whole answer (a stream is read to its end). */
function chat(url: string, key: string, marker: string, stream: boolean, onStart?: (a: Answer) => void): Promise<Answer> {
  const payload = JSON.stringify(chatBody(marker, stream))
  return new Promise((resolve, reject) => {
    let gotBytes: () => void = () => undefined
    const answer: Answer = { marker, status: 0, headers: {}, text: '', sentAt: 0, doneAt: 0, firstBytes: new Promise((r) => (gotBytes = r)) }
    const req = http.request(`${url}/llm/fake/v1/chat/completions`, {
      method: 'POST',
      agent: client,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    })
    req.on('response', (res) => {
      answer.status = res.statusCode ?? 0
      answer.headers = res.headers
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        answer.text += chunk
        gotBytes()
      })
      res.on('end', () => {
        answer.doneAt = performance.now()
        gotBytes()
        resolve(answer)
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    answer.sentAt = performance.now()
    onStart?.(answer)
    req.end(payload)
  })
}

const errorCode = (a: Answer): string | null => {
  try {
    return (JSON.parse(a.text) as { error?: { code?: string } }).error?.code ?? null
  } catch {
    return null
  }
}

/** The data of the last SSE frame of a stream. */
function lastFrame(text: string): unknown {
  const frames = text.split(/\n\n/).filter((f) => f.trim() !== '')
  const data = (frames.at(-1) ?? '').replace(/^data: /, '')
  try {
    return JSON.parse(data)
  } catch {
    return data
  }
}

/** Runs `fn` over 0..n-1 with at most `limit` in flight. */
async function loops(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < n) await fn(next++)
    }),
  )
}

function egressConfig(dir: string, fake: FakeLlm): string {
  const file = join(dir, 'egress.json')
  writeFileSync(
    file,
    JSON.stringify({
      upstreams: [{ id: 'fake', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_LLM_KEY', models: { 'fake-model': PRICE }, timeout_ms: 20_000 }],
    }),
  )
  return file
}

/** Every egress call of an agent (all pages). */
async function callsOf(gw: TestGateway, address: string): Promise<any[]> {
  const out: any[] = []
  let after: string | null = null
  for (;;) {
    const page: { status: number; body: any } = await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${enc(address)}&limit=500${after ? `&after=${after}` : ''}`)
    expect(page.status).toBe(200)
    out.push(...page.body.calls)
    after = page.body.next_after
    if (!after) return out
  }
}

/** `chokepoint_egress_reserved_usd`, summed over the replicas (each counts its own open calls). */
async function reservedGauge(gws: TestGateway[]): Promise<number> {
  let sum = 0
  for (const gw of gws) {
    const text = await (await fetch(`${gw.url}/metrics`)).text()
    const line = text.split('\n').find((l) => l.startsWith('chokepoint_egress_reserved_usd '))
    if (line === undefined) throw new Error(`no chokepoint_egress_reserved_usd on ${gw.url}/metrics`)
    sum += Number(line.split(' ')[1])
  }
  return sum
}

/** Errors the gateways of this file logged (an unhandled error is a bug, whatever the client saw). */
const gatewayErrors: string[] = []
const log = (level: string, message: string, fields?: Record<string, unknown>): void => {
  if (level === 'error') gatewayErrors.push(`${message} ${JSON.stringify(fields ?? {}).slice(0, 600)}`)
}

const micros = (usdValues: number[]): number => usdValues.reduce((n, v) => n + Math.round(v * 1_000_000), 0)

/** 1. The burst against a ceiling worth exactly K reservations. */
async function burst(gws: TestGateway[], fake: FakeLlm, label: string): Promise<void> {
  const [first] = gws as [TestGateway]
  const address = `agent://egress-races/${label}/spender`
  const key = await agentKey(first, address)
  const ceilingMicro = K * RESERVATION_MICRO
  const policy = await api(first.url, first.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, {
    kind: 'cost',
    max_cost_per_day_usd: ceilingMicro / 1_000_000,
    on_breach: 'block',
  })
  expect(policy.status, JSON.stringify(policy.body)).toBe(200)
  const gaugeBefore = await reservedGauge(gws)
  fake.reset()
  fake.pause() // every admitted call stays open (reserved) until the whole burst is answered
  const answered: Answer[] = []
  let all: Promise<Answer[]> | null = null
  try {
    all = Promise.all(
      Array.from({ length: BURST }, (_, i) =>
        chat((gws[i % gws.length] as TestGateway).url, key, `burst-${i}`, i % 2 === 0).then((a) => {
          answered.push(a)
          return a
        }),
      ),
    )
    // Every call is either answered (refused) or held at the upstream (admitted).
    await pollUntil(() => answered.length + chatRequests(fake).length >= BURST, { timeoutMs: 20_000, what: 'every call answered or at the upstream' })
    const upstream = chatRequests(fake)
    expect(upstream).toHaveLength(K)
    expect(answered).toHaveLength(BURST - K)
    for (const a of answered) {
      expect([a.status, errorCode(a)], a.text).toEqual([429, 'budget_exceeded'])
      expect(a.headers['x-should-retry']).toBe('false')
    }
    // The admitted ones are exactly the calls still waiting, each once.
    const waiting = new Set(Array.from({ length: BURST }, (_, i) => `burst-${i}`))
    for (const a of answered) waiting.delete(a.marker)
    expect(new Set(upstream.map(markerOf))).toEqual(waiting)
    // Held: the store's open reservations are those K calls, and so are the gauges.
    const open = (await callsOf(first, address)).filter((c) => c.state === 'open')
    expect(open).toHaveLength(K)
    for (const c of open) expect(Math.round(c.reserved_usd * 1_000_000)).toBe(RESERVATION_MICRO)
    expect(micros(open.map((c) => c.reserved_usd))).toBe(ceilingMicro)
    expect((await reservedGauge(gws)) - gaugeBefore).toBeCloseTo(ceilingMicro / 1_000_000, 9)
  } finally {
    fake.resume()
  }
  const results = await (all as Promise<Answer[]>)
  const ok = results.filter((a) => a.status === 200)
  expect(ok).toHaveLength(K)
  for (const a of ok) {
    if (Number(a.marker.split('-')[1]) % 2 === 0) expect(a.text).toMatch(/data: \[DONE\]\n\n$/)
    else expect(JSON.parse(a.text).object).toBe('chat.completion')
  }
  // Settled from real usage: nothing open, the charges within the ceiling, the gauges back.
  await fake.waitForIdle()
  const calls = await callsOf(first, address)
  expect(calls).toHaveLength(K)
  expect(calls.filter((c) => c.state !== 'settled' || c.outcome !== 'usage')).toEqual([])
  const charged = micros(calls.map((c) => c.cost_usd))
  expect(charged).toBeLessThanOrEqual(ceilingMicro)
  const agent = (await api(first.url, first.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
  expect(Math.round(agent.cost_period * 1_000_000)).toBe(charged)
  expect(await reservedGauge(gws)).toBeCloseTo(gaugeBefore, 9)
  console.log(`egress races (${label}): ${BURST} concurrent calls vs a ceiling of ${K} × ${RESERVATION_MICRO} µUSD: ${K} reached the upstream, ${BURST - K} got 429; charged ${charged} µUSD of ${ceilingMicro}`)
}

/** 2. 1,000 calls racing a kill. */
async function killRace(gws: TestGateway[], fake: FakeLlm, label: string): Promise<void> {
  const [first] = gws as [TestGateway]
  const address = `agent://egress-races/${label}/raced`
  const key = await agentKey(first, address)
  const CALLS = 1_000
  fake.reset()
  const answers: Answer[] = []
  let started = 0
  let killStart = 0
  let killEnd = 0
  const errorsBefore = gatewayErrors.length
  const killer = (async () => {
    await pollUntil(() => started >= 300, { timeoutMs: 30_000, intervalMs: 1, what: '300 calls sent' })
    const via = gws[1 % gws.length] as TestGateway
    killStart = performance.now()
    const kill = await api(via.url, via.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'race' })
    killEnd = performance.now()
    expect(kill.status, JSON.stringify(kill.body)).toBe(200)
  })()
  await loops(CALLS, 24, async (i) => {
    answers.push(await chat((gws[i % gws.length] as TestGateway).url, key, `race-${i}`, i % 4 === 0, () => (started += 1)))
  })
  await killer
  await fake.waitForIdle()
  const reached = new Set(chatRequests(fake).map(markerOf))
  const after = answers.filter((a) => a.sentAt > killEnd)
  const before = answers.filter((a) => a.doneAt < killStart)
  // The race happened: calls went through before the kill, many were sent after it returned.
  expect(before.filter((a) => a.status === 200).length).toBeGreaterThan(50)
  expect(after.length).toBeGreaterThan(300)
  // Nothing sent after the kill returned reached the upstream; each got 403 agent_killed.
  expect(after.filter((a) => reached.has(a.marker)).map((a) => a.marker)).toEqual([])
  for (const a of after) expect([a.status, errorCode(a)], a.text).toEqual([403, 'agent_killed'])
  // Overall: a call answered 200 was forwarded; one refused (403) was forwarded only if it was
  // admitted before the kill and cut in flight by it; every upstream request is one of ours.
  const byMarker = new Map(answers.map((a) => [a.marker, a]))
  for (const a of answers) {
    expect([200, 403], a.text).toContain(a.status)
    if (a.status === 200) expect(reached.has(a.marker), a.marker).toBe(true)
    else expect(errorCode(a) ?? lastFrame(a.text), a.marker).toBe('agent_killed')
  }
  for (const m of reached) expect((byMarker.get(m) as Answer).sentAt, m).toBeLessThan(killEnd)
  // Each forwarded call is settled once (the ones cut by the kill at their reservation).
  const calls = await pollUntil(async () => {
    const all = await callsOf(first, address)
    return all.every((c) => c.state === 'settled') ? all : null
  }, { timeoutMs: 10_000, what: 'every call settled' })
  // A call admitted just before the kill and caught by it before it was sent is settled
  // `refused` at 0 (the gateway never sent it); every other call row is one that reached it.
  const unsent = calls.filter((c) => c.outcome === 'refused')
  for (const c of unsent) expect(c.cost_usd).toBe(0)
  expect(calls.length - unsent.length).toBe(reached.size)
  // A kill landing while a call is being settled is no error (it once was: the answer's headers
  // were set after the agent_killed refusal had been written).
  expect(gatewayErrors.slice(errorsBefore)).toEqual([])
  console.log(
    `egress races (${label}): ${CALLS} calls racing a kill (${(killEnd - killStart).toFixed(1)} ms): ${reached.size} reached the upstream, ` +
      `${after.length} sent after the kill returned, all 403 agent_killed, none forwarded`,
  )
}

describe.each(ENGINES)('egress races on one gateway (%s)', (engine) => {
  let fake: FakeLlm
  let gw: TestGateway
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-races-'))
  beforeAll(async () => {
    fake = await startFakeLlm()
    gw = await startTestGateway({ engine, log, env: { CHOKEPOINT_EGRESS_CONFIG: egressConfig(dir, fake), FAKE_LLM_KEY: fake.apiKey } })
  })
  afterAll(async () => {
    await gw?.close()
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it(`${BURST} concurrent calls against a ceiling of exactly ${K} reservations: ${K} reach the upstream, 0 overshoot`, async () => {
    await burst([gw], fake, engine)
  }, 60_000)

  it('bad input only gets a 4xx: an absurd "n" (a worst case past 2^53 µUSD) is refused before anything is reserved or sent', async () => {
    const address = `agent://egress-races/${engine}/greedy`
    const key = await agentKey(gw, address)
    fake.reset()
    for (const n of [1e300, 2 ** 53, 1e15]) {
      const res = await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [{ role: 'user', content: 'x' }], n })
      expect(res.status, JSON.stringify(res.body)).toBe(422)
      expect(res.body.error).toMatchObject({ code: 'schema_invalid', type: 'schema_invalid', details: { field: 'n' } })
    }
    expect(fake.requests).toEqual([])
    expect(await callsOf(gw, address)).toEqual([])
    const fine = await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [{ role: 'user', content: 'x' }], n: 2 })
    expect(fine.status).toBe(200)
  })

  it.runIf(engine === 'sqlite')('1,000 calls racing a kill: none sent after the kill returned reaches the upstream', async () => {
    await killRace([gw], fake, engine)
  }, 60_000)
})

describe.runIf(HAVE_POSTGRES)('egress races on 3 PostgreSQL replicas', () => {
  let fake: FakeLlm
  let replicas: TestGateway[] = []
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-races-pg-'))
  beforeAll(async () => {
    fake = await startFakeLlm({ chunks: 1000 })
    const env = { CHOKEPOINT_EGRESS_CONFIG: egressConfig(dir, fake), FAKE_LLM_KEY: fake.apiKey }
    const first = await startTestGateway({ engine: 'postgres', env, log })
    replicas = [first]
    for (let i = 0; i < 2; i++) replicas.push(await startTestGateway({ databaseUrl: first.databaseUrl as string, log, env: { ...env, CHOKEPOINT_ADMIN_KEY: first.adminKey } }))
  })
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.close()))
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it(`${BURST} concurrent calls round-robin over 3 replicas against a ceiling of exactly ${K} reservations`, async () => {
    await burst(replicas, fake, 'pg-replicas')
  }, 60_000)

  it('1,000 calls over 3 replicas racing a kill through one of them', async () => {
    await killRace(replicas, fake, 'pg-replicas')
  }, 60_000)

  it('20 slow streams on 3 replicas at a kill: each ends with the agent_killed frame, each upstream request aborted within 1 s', async () => {
    const address = 'agent://egress-races/pg-replicas/streamer'
    const key = await agentKey(replicas[0] as TestGateway, address)
    const N = 20
    fake.reset()
    fake.behaviour = { stall: 2 } // two chunks, then silence: an agent waiting on a long answer
    const opened: Answer[] = []
    const ends = Array.from({ length: N }, (_, i) => chat((replicas[i % 3] as TestGateway).url, key, `slow-${i}`, true, (a) => opened.push(a)))
    await pollUntil(() => opened.length === N, { what: 'every stream sent' })
    await Promise.all(opened.map((a) => a.firstBytes))
    await fake.waitForRequests(N)
    expect(chatRequests(fake).every((r) => r.closedAt === null)).toBe(true)
    const via = replicas[2] as TestGateway
    const killStart = performance.now()
    const kill = await api(via.url, via.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'stuck' })
    const killEnd = performance.now()
    expect(kill.status).toBe(200)
    const streams = await Promise.all(ends)
    for (const s of streams) {
      expect(s.status).toBe(200)
      expect(lastFrame(s.text), s.text.slice(-300)).toMatchObject({ error: { code: 'agent_killed', type: 'agent_killed' } })
    }
    const upstream = await pollUntil(() => (chatRequests(fake).every((r) => r.closedAt !== null) ? chatRequests(fake) : null), {
      timeoutMs: 5_000,
      what: 'every upstream request closed',
    })
    expect(upstream).toHaveLength(N)
    const lagMs = upstream.map((r) => (r.closedAt as number) - killEnd)
    for (const r of upstream) {
      expect(r.outcome).toBe('aborted')
      expect(r.closedAt as number).toBeGreaterThanOrEqual(killStart)
    }
    expect(Math.max(...lagMs)).toBeLessThanOrEqual(1_000)
    fake.behaviour = {}
    // Cut before any usage arrived: each is settled once, at its reservation.
    const calls = await pollUntil(async () => {
      const all = await callsOf(replicas[0] as TestGateway, address)
      return all.every((c) => c.state === 'settled') ? all : null
    }, { timeoutMs: 10_000, what: 'every cut call settled' })
    expect(calls).toHaveLength(N)
    for (const c of calls) expect(c).toMatchObject({ outcome: 'reservation', cost_usd: c.reserved_usd })
    console.log(
      `egress races (3 PostgreSQL replicas): ${N} streams cut by a kill (${(killEnd - killStart).toFixed(1)} ms); upstream aborts ` +
        `${Math.min(...lagMs).toFixed(1)}…${Math.max(...lagMs).toFixed(1)} ms after the kill returned`,
    )
  }, 30_000)
})

describe.runIf(HAVE_POSTGRES)('egress with PostgreSQL down', () => {
  let fake: FakeLlm
  let cluster: PostgresCluster | null = null
  let gw: TestGateway | null = null
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-down-'))
  beforeAll(async () => {
    fake = await startFakeLlm()
    // A cluster of its own: halting it touches no other test's database.
    cluster = await startPostgres()
    if (!cluster) throw new Error('PostgreSQL is installed but did not start')
    gw = await startTestGateway({ databaseUrl: await cluster.createDatabase(), env: { CHOKEPOINT_EGRESS_CONFIG: egressConfig(dir, fake), FAKE_LLM_KEY: fake.apiKey } })
  }, 60_000)
  afterAll(async () => {
    await gw?.close()
    await cluster?.stop()
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('503 store_unavailable and nothing sent upstream while it is down; calls work again once it is back', async () => {
    const g = gw as TestGateway
    const pg = cluster as PostgresCluster
    const key = await agentKey(g, 'agent://egress-races/outage/caller')
    expect((await chat(g.url, key, 'warm', false)).status).toBe(200) // the key is known and cached
    fake.reset()
    await pg.halt()
    let restarted = false
    try {
      for (const [i, stream] of [false, true, false, true].entries()) {
        const a = await chat(g.url, key, `down-${i}`, stream)
        expect(a.status, a.text).toBe(503)
        expect(a.headers['content-type']).toMatch(/^application\/json/)
        const body = JSON.parse(a.text)
        expect(body).toMatchObject({ ok: false, error: { code: 'store_unavailable', request_id: a.headers['x-request-id'] } })
        expect(typeof body.error.message).toBe('string')
      }
      expect(fake.requests).toEqual([])
      await pg.start()
      restarted = true
    } finally {
      if (!restarted) await pg.start().catch(() => undefined)
    }
    const back = await pollUntil(
      async () => {
        const a = await chat(g.url, key, 'back', true)
        return a.status === 200 ? a : null
      },
      { timeoutMs: 20_000, intervalMs: 100, what: 'a call to succeed after PostgreSQL is back' },
    )
    expect(back.text).toMatch(/data: \[DONE\]\n\n$/)
    expect(chatRequests(fake).map(markerOf).every((m) => m === 'back')).toBe(true)
    const calls = await callsOf(g, 'agent://egress-races/outage/caller')
    expect(calls.filter((c) => c.state === 'open')).toEqual([])
  }, 60_000)
})
