/**
 * Egress guarantees across processes: a gateway `kill -9`ed mid-stream leaves an open call that
 * a sweeper settles at its reservation after its deadline (so the spend is never lost); and on
 * three PostgreSQL replicas, concurrent calls against a ceiling worth exactly K reservations let
 * exactly K reach the upstream, and a kill through one replica cuts the agent's streams on the
 * other two within a second.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBuilt, randomAdminKey, startChildGateway } from './child-gateway.js'
import { startFakeLlm, type FakeLlm } from './fake-llm.js'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'

const PRICE = { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100_000, max_output_tokens: 1000 }
const HAVE_POSTGRES = testEngines('egress-replicas.test.ts').includes('postgres')
const enc = encodeURIComponent

function egressConfig(dir: string, fake: FakeLlm, timeoutMs: number): string {
  const file = join(dir, `egress-${timeoutMs}.json`)
  writeFileSync(
    file,
    JSON.stringify({
      upstreams: [{ id: 'fake', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_LLM_KEY', models: { 'fake-model': PRICE }, timeout_ms: timeoutMs }],
    }),
  )
  return file
}

describe('egress after a crash (SQLite, kill -9 mid-stream)', () => {
  let fake: FakeLlm
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-crash-'))
  beforeAll(async () => {
    ensureBuilt()
    fake = await startFakeLlm({ chunks: 1000, chunkDelayMs: 50 })
  })
  afterAll(async () => {
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('the open call is settled at its reservation by the restarted gateway once past its deadline', async () => {
    const adminKey = randomAdminKey()
    const dataDir = join(dir, 'data')
    const env = { CHOKEPOINT_EGRESS_CONFIG: egressConfig(dir, fake, 1000), FAKE_LLM_KEY: fake.apiKey, CHOKEPOINT_SWEEP_INTERVAL_MS: '200' }
    const first = await startChildGateway({ dataDir, adminKey, env })
    const address = 'agent://egress/crash/streamer'
    const created = await api(first.url, adminKey, 'POST', '/v1/keys', { role: 'agent', agent: address })
    const key = created.body.key as string
    const res = await fetch(`${first.url}/llm/fake/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'go' }], stream: true, max_completion_tokens: 100 }),
    })
    expect(res.status).toBe(200)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    await reader.read() // the stream is flowing: the call is open
    await first.stop('SIGKILL')
    await reader.cancel().catch(() => undefined)

    const second = await startChildGateway({ dataDir, adminKey, env })
    try {
      const calls = async () => (await api(second.url, adminKey, 'GET', `/v1/egress/calls?agent=${enc(address)}`)).body.calls as any[]
      expect((await calls())[0]).toMatchObject({ state: 'open' })
      const settled = await pollUntil(async () => {
        const [call] = await calls()
        return call?.state === 'settled' ? call : undefined
      }, { timeoutMs: 15_000, what: 'the sweeper to settle the open call' })
      expect(settled).toMatchObject({ outcome: 'reservation' })
      expect(settled.cost_usd).toBe(settled.reserved_usd)
      const agent = (await api(second.url, adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
      expect(agent.cost_period).toBeCloseTo(settled.reserved_usd, 9)
    } finally {
      await second.stop('SIGTERM')
    }
  }, 40_000)
})

describe.runIf(HAVE_POSTGRES)('egress on 3 PostgreSQL replicas', () => {
  let fake: FakeLlm
  let replicas: TestGateway[] = []
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-pg-'))
  beforeAll(async () => {
    fake = await startFakeLlm()
    const env = { CHOKEPOINT_EGRESS_CONFIG: egressConfig(dir, fake, 5000), FAKE_LLM_KEY: fake.apiKey, CHOKEPOINT_SWEEP_INTERVAL_MS: '60000' }
    const first = await startTestGateway({ engine: 'postgres', env })
    replicas = [first]
    for (let i = 0; i < 2; i++) {
      replicas.push(await startTestGateway({ databaseUrl: first.databaseUrl as string, env: { ...env, CHOKEPOINT_ADMIN_KEY: first.adminKey } }))
    }
  })
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.close()))
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('60 concurrent calls over 3 replicas against room for exactly 9 reservations: 9 reach the upstream, 0 overshoot', async () => {
    const [a] = replicas as [TestGateway]
    const address = 'agent://egress/pg/spender'
    const key = await agentKey(a, address)
    const body = { model: 'fake-model', messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 500 }
    const worst = Math.ceil(Buffer.byteLength(JSON.stringify(body)) * 1 + 500 * 2) / 1e6
    const ceiling = worst * 9 + worst / 2
    expect((await api(a.url, a.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, { kind: 'cost', max_cost_per_day_usd: ceiling, on_breach: 'block' })).status).toBe(200)
    fake.reset()
    fake.pause() // admitted calls stay open until every call is answered or at the upstream
    try {
      let answered = 0
      const all = Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          api((replicas[i % 3] as TestGateway).url, key, 'POST', '/llm/fake/v1/chat/completions', body).finally(() => (answered += 1)),
        ),
      )
      await pollUntil(() => answered + fake.requests.length >= 60, { what: 'every call answered or at the upstream' })
      fake.resume()
      const results = await all
      expect(results.filter((r) => r.status === 200)).toHaveLength(9)
      expect(results.filter((r) => r.status === 429 && r.body.error?.code === 'budget_exceeded')).toHaveLength(51)
      expect(fake.requests.filter((r) => r.path === '/v1/chat/completions')).toHaveLength(9)
    } finally {
      fake.resume()
    }
    const calls = (await api(a.url, a.adminKey, 'GET', `/v1/egress/calls?agent=${enc(address)}`)).body.calls as any[]
    expect(calls.filter((c) => c.state === 'open')).toEqual([])
    expect(calls.reduce((n, c) => n + c.cost_usd, 0)).toBeLessThanOrEqual(ceiling)
  })

  it('a kill through replica 3 cuts streams open on replicas 1 and 2 within a second, and aborts their upstream requests', async () => {
    const [a, b, c] = replicas as [TestGateway, TestGateway, TestGateway]
    const address = 'agent://egress/pg/looper'
    const key = await agentKey(a, address)
    fake.reset()
    fake.behaviour = {}
    const open = async (url: string) => {
      const res = await fetch(`${url}/llm/fake/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'fake-model', messages: [{ role: 'user', content: 'loop' }], stream: true }),
      })
      expect(res.status).toBe(200)
      return (res.body as ReadableStream<Uint8Array>).getReader()
    }
    // Streams that send two chunks, then stay open and silent (an agent waiting on a long answer).
    fake.behaviour = { stall: 2 }
    const streams = [await open(a.url), await open(b.url)]
    for (const s of streams) await s.read()
    const start = Date.now()
    expect((await api(c.url, c.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'looping' })).status).toBe(200)
    const tails = await Promise.all(
      streams.map(async (s) => {
        let text = ''
        const decoder = new TextDecoder()
        for (;;) {
          const { done, value } = await s.read()
          if (done) break
          text += decoder.decode(value)
        }
        return { text, ms: Date.now() - start }
      }),
    )
    for (const t of tails) {
      expect(t.text).toMatch(/"code":"agent_killed"/)
      expect(t.ms).toBeLessThan(1000)
    }
    await expect.poll(() => fake.aborted, { timeout: 1000 }).toBe(2)
    console.log(`egress (3 PostgreSQL replicas): streams on the other replicas cut ${tails.map((t) => t.ms).join(' / ')} ms after the kill call started`)
    fake.behaviour = {}
  })
})
