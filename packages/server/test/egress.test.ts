/**
 * Egress (LLM calls through the gateway) with the official `openai` client against a fake
 * OpenAI upstream on 127.0.0.1, on both stores: metering from real usage, the usage chunk forced
 * and hidden, fail-closed pricing, exact cost ceilings under concurrency (0 overshoot), the kill
 * cutting in-flight streams with an error frame and aborting the upstream request, and upstream
 * failures mapped to 502/504 without a charge.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent } from '@chokepoint/sdk'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('egress.test.ts')
const PROVIDER_KEY = 'sk-provider-secret-0123456789'
/** $1 per million input tokens, $2 per million output tokens; at most 1000 output tokens. */
const PRICE = { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100_000, max_output_tokens: 1000 }

/** A fake OpenAI upstream: deterministic usage (10 in, min(cap, 20) out), streams of 3 chunks. */
class FakeLlm {
  server!: Server
  url = ''
  requests: { path: string; auth: string | undefined; body: Record<string, unknown>; sawAgentKey: boolean }[] = []
  aborted = 0
  /** Delay before the answer and between stream chunks, ms. */
  delayMs = 0
  chunkDelayMs = 0
  /** While set, requests are recorded but wait for it before being answered. */
  hold: Promise<void> | null = null
  chunks = 3

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.#handle(req, res))
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let raw = ''
    for await (const chunk of req) raw += chunk
    const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {}
    this.requests.push({ path: req.url ?? '', auth: req.headers.authorization, body, sawAgentKey: /cp_/.test(JSON.stringify(req.headers)) })
    let finished = false
    res.on('close', () => {
      if (!finished) this.aborted += 1
    })
    if (this.hold) await this.hold
    if (req.headers.authorization !== `Bearer ${PROVIDER_KEY}`) {
      finished = true
      res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'bad key', type: 'invalid_request_error' } }))
      return
    }
    await sleep(this.delayMs)
    const cap = (body['max_completion_tokens'] ?? body['max_tokens']) as number
    const usage = { prompt_tokens: 10, completion_tokens: Math.min(cap, 20), total_tokens: 10 + Math.min(cap, 20), prompt_tokens_details: { cached_tokens: 0 } }
    if (req.url === '/v1/chat/completions' && body['stream'] === true) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'x-request-id': 'req_upstream_1' })
      for (let i = 0; i < this.chunks; i++) {
        if (res.destroyed) return
        const chunk = { id: 'c1', object: 'chat.completion.chunk', created: 1, model: body['model'], choices: [{ index: 0, delta: { content: `w${i} ` }, finish_reason: null }] }
        res.write(`data: ${JSON.stringify(chunk)}\n\n`)
        await sleep(this.chunkDelayMs)
      }
      if ((body['stream_options'] as { include_usage?: boolean } | undefined)?.include_usage) {
        res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: body['model'], choices: [], usage })}\n\n`)
      }
      finished = true
      res.end('data: [DONE]\n\n')
      return
    }
    finished = true
    res.writeHead(200, { 'content-type': 'application/json', 'x-request-id': 'req_upstream_1' }).end(
      JSON.stringify({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: 1,
        model: body['model'],
        choices: [{ index: 0, message: { role: 'assistant', content: 'hello' }, finish_reason: 'stop' }],
        usage,
      }),
    )
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe.each(ENGINES)('egress through the gateway (%s)', (engine) => {
  const fake = new FakeLlm()
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-'))
  let gw: TestGateway
  beforeAll(async () => {
    await fake.start()
    // A port nothing listens on (taken, then freed): connections to it are refused.
    const probe = createServer()
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const closedPort = (probe.address() as AddressInfo).port
    await new Promise((resolve) => probe.close(resolve))
    const file = join(dir, 'egress.json')
    writeFileSync(
      file,
      JSON.stringify({
        upstreams: [
          { id: 'fake', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_PROVIDER_KEY', models: { 'fake-model': PRICE }, timeout_ms: 1500 },
          { id: 'down', kind: 'openai', base_url: `http://127.0.0.1:${closedPort}`, api_key_env: 'FAKE_PROVIDER_KEY', models: { 'fake-model': PRICE } },
        ],
      }),
    )
    process.env['FAKE_PROVIDER_KEY'] = PROVIDER_KEY
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_EGRESS_CONFIG: file, FAKE_PROVIDER_KEY: PROVIDER_KEY } })
  })
  afterAll(async () => {
    await gw?.close()
    await fake.close()
    rmSync(dir, { recursive: true, force: true })
  })

  // The SDK's helper gives the OpenAI client its base URL.
  const client = (key: string, upstream = 'fake') =>
    new OpenAI({ apiKey: key, baseURL: new Agent({ baseURL: gw.url, apiKey: key }).llmBaseURL(upstream), maxRetries: 0 })
  const calls = async (address: string) =>
    (await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${encodeURIComponent(address)}`)).body.calls as any[]

  it('meters a chat completion from its usage; the provider key is injected, the agent key never forwarded', async () => {
    const address = `agent://egress-${engine}/prod/writer`
    const key = await agentKey(gw, address)
    const answer = await client(key).chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] })
    expect(answer.choices[0]?.message.content).toBe('hello')
    const seen = fake.requests.at(-1)
    expect(seen?.auth).toBe(`Bearer ${PROVIDER_KEY}`)
    expect(seen?.sawAgentKey).toBe(false)
    expect(seen?.body['max_completion_tokens']).toBe(1000) // no cap asked: the model's, injected
    const [call] = await calls(address)
    // 10 in × $1/M + 20 out × $2/M = $0.00005
    expect(call).toMatchObject({ state: 'settled', outcome: 'usage', cost_usd: 0.00005, model: 'fake-model', upstream: 'fake' })
    expect(call.reserved_usd).toBeGreaterThan(call.cost_usd)
    const agent = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)).body.agent
    expect(agent.cost_period).toBeCloseTo(0.00005, 9)
    expect(new Agent({ baseURL: `${gw.url}/`, apiKey: key }).llmBaseURL('fake')).toBe(`${gw.url}/llm/fake/v1`)
    expect(() => new Agent({ baseURL: gw.url, apiKey: key }).llmBaseURL('../v1')).toThrow(/not an upstream id/)
    const models = await client(key).models.list()
    expect(models.data.map((m) => m.id)).toEqual(['fake-model'])
  })

  it('streams: the usage chunk is forced upstream and hidden from a client that did not ask; one that asked gets it', async () => {
    const address = `agent://egress-${engine}/prod/streamer`
    const key = await agentKey(gw, address)
    const stream = await client(key).chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }], stream: true, max_completion_tokens: 5 })
    const parts: string[] = []
    let sawUsage = false
    for await (const chunk of stream) {
      if (chunk.usage) sawUsage = true
      parts.push(chunk.choices[0]?.delta.content ?? '')
    }
    expect(parts.join('')).toBe('w0 w1 w2 ')
    expect(sawUsage).toBe(false)
    expect((fake.requests.at(-1)?.body['stream_options'] as any)?.include_usage).toBe(true)
    expect((await calls(address))[0]).toMatchObject({ outcome: 'usage', cost_usd: 0.00002 }) // 10 in, 5 out
    const asked = await client(key).chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'hi' }], stream: true, stream_options: { include_usage: true } })
    let usage: unknown = null
    for await (const chunk of asked) if (chunk.usage) usage = chunk.usage
    expect(usage).toMatchObject({ prompt_tokens: 10, completion_tokens: 20 })
  })

  it('fails closed: unpriced model 422 model_not_priced, unknown upstream 404, staff keys 403, no key 401 — nothing reaches the upstream', async () => {
    const key = await agentKey(gw, `agent://egress-${engine}/prod/careless`)
    const before = fake.requests.length
    const unpriced = await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { model: 'gpt-9', messages: [] })
    expect(unpriced.status).toBe(422)
    expect(unpriced.body.error).toMatchObject({ code: 'model_not_priced', type: 'model_not_priced' })
    expect((await api(gw.url, key, 'POST', '/llm/nope/v1/chat/completions', { model: 'fake-model', messages: [] })).status).toBe(404)
    expect((await api(gw.url, key, 'POST', '/llm/fake/v1/completions', { model: 'fake-model', prompt: 'x' })).status).toBe(404)
    expect((await api(gw.url, gw.adminKey, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [] })).status).toBe(403)
    expect((await api(gw.url, null, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [] })).status).toBe(401)
    expect((await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { messages: [] })).status).toBe(422)
    expect(fake.requests.length).toBe(before)
  })

  it('a cost ceiling is never overshot: 40 concurrent calls against room for exactly 7 reservations → 7 reach the upstream', async () => {
    const address = `agent://egress-${engine}/prod/spender`
    const key = await agentKey(gw, address)
    const body = { model: 'fake-model', messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 500 }
    // Worst case of this request: its bytes as input tokens + 500 output tokens.
    const bytes = Buffer.byteLength(JSON.stringify(body))
    const worst = Math.ceil((bytes * 1 + 500 * 2) * 1e6 / 1e6) / 1e6 // micro-USD → USD
    const ceiling = worst * 7 + worst / 2
    const policy = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/policies`, { kind: 'cost', max_cost_per_day_usd: ceiling, on_breach: 'block' })
    expect(policy.status, JSON.stringify(policy.body)).toBe(200)
    // Every admitted call stays open (reserved) until all 40 are answered or at the upstream.
    let release: () => void = () => undefined
    fake.hold = new Promise((resolve) => (release = resolve))
    const before = fake.requests.length
    try {
      let answered = 0
      const all = Promise.all(Array.from({ length: 40 }, () => api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', body).finally(() => (answered += 1))))
      await pollUntil(() => answered + fake.requests.length - before >= 40, { what: 'every call answered or at the upstream' })
      fake.hold = null
      release()
      const results = await all
      const ok = results.filter((r) => r.status === 200)
      const refused = results.filter((r) => r.status === 429)
      expect(ok.length).toBe(7)
      expect(refused.length).toBe(33)
      expect(refused[0]?.body.error).toMatchObject({ code: 'budget_exceeded', type: 'budget_exceeded', policy_id: policy.body.policy.policy_id })
      expect(refused[0]?.headers.get('x-should-retry')).toBe('false')
      expect(fake.requests.length - before).toBe(7)
    } finally {
      fake.hold = null
      release()
    }
    const list = await calls(address)
    expect(list.filter((c: any) => c.state === 'open')).toEqual([])
    const spent = list.reduce((n: number, c: any) => n + c.cost_usd, 0)
    expect(spent).toBeLessThanOrEqual(ceiling)
  })

  it('a kill cuts an in-flight stream with one agent_killed error frame, aborts the upstream request, and refuses the next call', async () => {
    const address = `agent://egress-${engine}/prod/looper`
    const key = await agentKey(gw, address)
    fake.chunks = 50
    fake.chunkDelayMs = 50
    const abortedBefore = fake.aborted
    try {
      const stream = await client(key).chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'loop' }], stream: true })
      let received = 0
      let killedAt = 0
      let error: any = null
      try {
        for await (const _chunk of stream) {
          received += 1
          if (received === 3) {
            killedAt = Date.now()
            const kill = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'looping' })
            expect(kill.status).toBe(200)
          }
        }
      } catch (e) {
        error = e
      }
      const cutMs = Date.now() - killedAt
      expect(error?.message ?? String(error)).toMatch(/killed/)
      expect(received).toBeLessThan(50)
      expect(cutMs).toBeLessThan(1000)
      await expect.poll(() => fake.aborted - abortedBefore, { timeout: 1000 }).toBe(1)
      console.log(`egress (${engine}): stream cut ${cutMs} ms after the kill call started, after ${received} chunks`)
    } finally {
      fake.chunks = 3
      fake.chunkDelayMs = 0
    }
    const next = await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [] })
    expect(next.status).toBe(403)
    expect(next.body.error).toMatchObject({ code: 'agent_killed', type: 'agent_killed' })
    const [call] = await calls(address)
    expect(call.state).toBe('settled')
  })

  it('upstream down → 502 upstream_error and no charge; too slow → 504 upstream_timeout and the upstream request aborted', async () => {
    const address = `agent://egress-${engine}/prod/unlucky`
    const key = await agentKey(gw, address)
    const down = await api(gw.url, key, 'POST', '/llm/down/v1/chat/completions', { model: 'fake-model', messages: [] })
    expect(down.status).toBe(502)
    expect(down.body.error.code).toBe('upstream_error')
    const [refusedCall] = await calls(address)
    expect(refusedCall, JSON.stringify(refusedCall)).toMatchObject({ state: 'settled', outcome: 'refused', cost_usd: 0 })
    fake.delayMs = 2500
    const abortedBefore = fake.aborted
    try {
      const slow = await api(gw.url, key, 'POST', '/llm/fake/v1/chat/completions', { model: 'fake-model', messages: [] })
      expect(slow.status).toBe(504)
      expect(slow.body.error.code).toBe('upstream_timeout')
      await expect.poll(() => fake.aborted - abortedBefore).toBe(1)
    } finally {
      fake.delayMs = 0
    }
    // The kill frame reaches the client first; the settlement follows it.
    await expect.poll(async () => (await calls(address))[0]?.state, { timeout: 5000 }).toBe('settled')
    expect((await calls(address))[0]).toMatchObject({ state: 'settled', outcome: 'reservation' })
  })
})
