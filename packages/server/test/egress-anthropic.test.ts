/**
 * Anthropic egress (`kind: "anthropic"` upstreams: POST /llm/{upstream}/v1/messages and GET
 * /llm/{upstream}/v1/models) with the official `@anthropic-ai/sdk` client against the fake
 * upstream (fake-llm.ts) on 127.0.0.1, on both stores: the provider key injected as x-api-key
 * with anthropic-version, the agent's key (Bearer or x-api-key) never forwarded, charges from
 * Anthropic's usage priced exactly (cache reads and writes at their rates; a stream's cumulative
 * output_tokens counted once), max_tokens clamped, the kill cutting a stream with one Anthropic
 * error event and aborting the upstream request, ceiling and pricing refusals, and 404 for paths
 * of the other kind.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Anthropic, { APIError } from '@anthropic-ai/sdk'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { promptTokensOf, startFakeLlm, type FakeLlm } from './fake-llm.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('egress-anthropic.test.ts')
const PROVIDER_KEY = 'sk-ant-provider-secret-0123456789'
/** Whole micro-USD per token, so a charge is an exact integer: 3 in, 15 out, 1 cache read, 4 cache write. */
const PRICE = {
  input_cost_per_token: 0.000003,
  output_cost_per_token: 0.000015,
  cache_read_input_token_cost: 0.000001,
  cache_creation_input_token_cost: 0.000004,
  max_input_tokens: 200_000,
  max_output_tokens: 1000,
  litellm_provider: 'anthropic',
}
const CACHE_READ = 4
const CACHE_WRITE = 6
const MESSAGES: Anthropic.MessageParam[] = [{ role: 'user', content: 'Say something about gateways.' }]
/** What the fake reports for MESSAGES with `output` output tokens, priced (micro-USD). */
const chargeOf = (output: number, messages: unknown = MESSAGES): number => promptTokensOf(messages) * 3 + CACHE_READ * 1 + CACHE_WRITE * 4 + output * 15

describe.each(ENGINES)('Anthropic egress through the gateway (%s)', (engine) => {
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-anthropic-'))
  let fake: FakeLlm
  let gw: TestGateway
  beforeAll(async () => {
    fake = await startFakeLlm({ apiKey: PROVIDER_KEY, models: ['claude-fake', 'claude-unpriced'], cachedTokens: CACHE_READ, cacheCreationTokens: CACHE_WRITE, chunks: 5 })
    const file = join(dir, 'egress.json')
    writeFileSync(
      file,
      JSON.stringify({
        upstreams: [
          { id: 'anth', kind: 'anthropic', base_url: fake.url, api_key_env: 'FAKE_ANTHROPIC_KEY', models: { 'claude-fake': PRICE }, timeout_ms: 5000 },
          { id: 'oai', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_ANTHROPIC_KEY', models: { 'claude-fake': PRICE } },
        ],
      }),
    )
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_EGRESS_CONFIG: file, FAKE_ANTHROPIC_KEY: PROVIDER_KEY } })
  })
  afterEach(async () => {
    await fake.waitForIdle()
    fake.reset()
  })
  afterAll(async () => {
    await gw?.close()
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  // ANTHROPIC_BASE_URL = <gateway>/llm/<upstream>; the SDK appends /v1/messages.
  const client = (key: string, extra: Partial<ConstructorParameters<typeof Anthropic>[0]> = {}) => new Anthropic({ apiKey: key, baseURL: `${gw.url}/llm/anth`, maxRetries: 0, ...extra })
  const calls = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${encodeURIComponent(address)}`)).body.calls as any[]
  const microOf = (call: any): number => Math.round(call.cost_usd * 1e6)

  it('meters a message from its usage (cache reads and writes at their rates); x-api-key and anthropic-version injected, the agent key never forwarded', async () => {
    const address = `agent://anth-${engine}/prod/writer`
    const key = await agentKey(gw, address)
    const answer = await client(key).messages.create({ model: 'claude-fake', max_tokens: 300, messages: MESSAGES }, { headers: { 'anthropic-beta': 'prompt-caching-2024-07-31' } })
    expect(answer.type).toBe('message')
    expect(answer.content[0]).toMatchObject({ type: 'text' })
    expect(answer.usage).toMatchObject({ input_tokens: promptTokensOf(MESSAGES), output_tokens: 20, cache_read_input_tokens: CACHE_READ, cache_creation_input_tokens: CACHE_WRITE })
    const seen = fake.requests.at(-1)
    expect(seen).toMatchObject({ path: '/v1/messages', anthropic: true, authorized: true, sawAgentKey: false })
    expect(seen?.headers['x-api-key']).toBe(PROVIDER_KEY)
    expect(seen?.headers.authorization).toBeUndefined()
    // The client's anthropic-version and anthropic-beta pass through.
    expect(seen?.headers['anthropic-version']).toMatch(/^\d{4}-\d{2}-\d{2}$/)
    expect(seen?.headers['anthropic-beta']).toBe('prompt-caching-2024-07-31')
    expect((seen?.body as any).max_tokens).toBe(300)
    const [call] = await calls(address)
    expect(call).toMatchObject({ state: 'settled', outcome: 'usage', upstream: 'anth', endpoint: 'messages', model: 'claude-fake' })
    expect(microOf(call)).toBe(chargeOf(20))
    expect(call.usage).toMatchObject({ input_tokens: promptTokensOf(MESSAGES) + CACHE_READ + CACHE_WRITE, output_tokens: 20, cached_input_tokens: CACHE_READ, cache_creation_input_tokens: CACHE_WRITE })
    const agent = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)).body.agent
    expect(Math.round(agent.cost_period * 1e6)).toBe(chargeOf(20))
  })

  it('the agent key as x-api-key works too; without anthropic-version the configured default is sent; the models list is in Anthropic\'s shape', async () => {
    const address = `agent://anth-${engine}/prod/raw`
    const key = await agentKey(gw, address)
    // `api` sends the key as x-api-key (what ANTHROPIC_API_KEY clients send), no anthropic-version.
    const res = await api(gw.url, key, 'POST', '/llm/anth/v1/messages', { model: 'claude-fake', max_tokens: 5, messages: MESSAGES })
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    expect(res.body.usage.output_tokens).toBe(5)
    expect(res.headers.get('x-upstream-request-id')).toMatch(/^req_fake/)
    expect(res.headers.get('anthropic-ratelimit-requests-remaining')).toBe('99')
    const seen = fake.requests.at(-1)
    expect(seen?.headers['anthropic-version']).toBe('2023-06-01')
    expect(seen?.headers['x-api-key']).toBe(PROVIDER_KEY)
    expect(seen?.sawAgentKey).toBe(false)
    expect(microOf((await calls(address))[0])).toBe(chargeOf(5))
    const models = await client(key).models.list()
    expect(models.data.map((m) => m.id)).toEqual(['claude-fake'])
    expect(models.data[0]).toMatchObject({ type: 'model', id: 'claude-fake' })
  })

  it('max_tokens above the model\'s max is clamped to it; absent, the model\'s max is injected', async () => {
    const address = `agent://anth-${engine}/prod/greedy`
    const key = await agentKey(gw, address)
    await client(key).messages.create({ model: 'claude-fake', max_tokens: 8000, messages: MESSAGES })
    expect((fake.requests.at(-1)?.body as any).max_tokens).toBe(1000)
    const [clamped] = await calls(address)
    // The reservation assumed 1000 output tokens (the clamp), not 8000.
    // bytes × $4/M (the higher input rate) + 1000 × $15/M: under 1000 bytes, so 15 000–19 000 micro-USD.
    expect(Math.round(clamped.reserved_usd * 1e6)).toBeGreaterThan(15_000)
    expect(Math.round(clamped.reserved_usd * 1e6)).toBeLessThan(19_000)
    const res = await api(gw.url, key, 'POST', '/llm/anth/v1/messages', { model: 'claude-fake', messages: MESSAGES })
    expect(res.status).toBe(200)
    expect((fake.requests.at(-1)?.body as any).max_tokens).toBe(1000)
  })

  it('streams: message_delta\'s cumulative output_tokens is kept, never added (3 deltas, message_start\'s provisional 1 ignored)', async () => {
    const address = `agent://anth-${engine}/prod/streamer`
    const key = await agentKey(gw, address)
    fake.once({ deltas: 3 })
    const stream = await client(key).messages.create({ model: 'claude-fake', max_tokens: 300, messages: MESSAGES, stream: true })
    const types: string[] = []
    let text = ''
    const outputs: number[] = []
    for await (const event of stream) {
      types.push(event.type)
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text
      if (event.type === 'message_delta') outputs.push(event.usage.output_tokens)
    }
    expect(text).toBe('c0 c1 c2 c3 c4 ')
    expect(outputs).toEqual([6, 13, 20])
    expect(types.at(-1)).toBe('message_stop')
    const [call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'usage', endpoint: 'messages' })
    expect(call.usage.output_tokens).toBe(20)
    expect(microOf(call)).toBe(chargeOf(20))

    // The SDK's stream helper reads the same stream: its final usage is the gateway's.
    const helper = client(key).messages.stream({ model: 'claude-fake', max_tokens: 7, messages: MESSAGES })
    const final = await helper.finalMessage()
    expect(final.usage.output_tokens).toBe(7)
    expect(microOf((await calls(address))[0])).toBe(chargeOf(7))
  })

  it('a kill cuts an in-flight stream with one Anthropic error event (agent_killed), aborts the upstream request, and refuses the next call', async () => {
    const address = `agent://anth-${engine}/prod/looper`
    const key = await agentKey(gw, address)
    fake.once({ stall: 2 }) // two text chunks, then the upstream keeps the stream open
    const res = await fetch(`${gw.url}/llm/anth/v1/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-fake', max_tokens: 100, messages: MESSAGES, stream: true }),
    })
    expect(res.status).toBe(200)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let text = ''
    while (!text.includes('c1 ')) text += decoder.decode((await reader.read()).value, { stream: true })
    const kill = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'looping' })
    expect(kill.status).toBe(200)
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
    const frames = text.split('\n\n').filter(Boolean)
    const errors = frames.filter((f) => f.startsWith('event: error'))
    expect(errors).toHaveLength(1)
    expect(frames.at(-1)).toBe(errors[0])
    const data = JSON.parse((errors[0] as string).split('\ndata: ')[1] as string)
    expect(data).toMatchObject({ type: 'error', error: { type: 'agent_killed' } })
    expect(data.error.message).toMatch(/killed/)
    await expect.poll(() => fake.requests.at(-1)?.outcome).toBe('aborted')
    // The kill frame reaches the client first; the settlement follows it.
    await expect.poll(async () => (await calls(address))[0]?.state, { timeout: 5000 }).toBe('settled')
    const [call] = await calls(address)
    expect(call).toMatchObject({ state: 'settled', outcome: 'reservation' })
    // The SDK reads a gateway refusal: APIError with the gateway's code as its type.
    const next = await client(key)
      .messages.create({ model: 'claude-fake', max_tokens: 5, messages: MESSAGES })
      .catch((e: unknown) => e)
    expect(next).toBeInstanceOf(APIError)
    expect((next as APIError).status).toBe(403)
    expect((next as APIError).type).toBe('agent_killed')
  })

  it('the SDK sees the kill event as an APIError of type agent_killed', async () => {
    const address = `agent://anth-${engine}/prod/looper-sdk`
    const key = await agentKey(gw, address)
    fake.once({ stall: 2 })
    const stream = await client(key).messages.create({ model: 'claude-fake', max_tokens: 100, messages: MESSAGES, stream: true })
    let deltas = 0
    let killedAt = 0
    const error = await (async () => {
      for await (const event of stream) {
        if (event.type === 'content_block_delta' && ++deltas === 2) {
          killedAt = Date.now()
          expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'looping' })).status).toBe(200)
        }
      }
    })().catch((e: unknown) => e)
    console.log(`anthropic egress (${engine}): stream cut ${Date.now() - killedAt} ms after the kill call started`)
    expect(error).toBeInstanceOf(APIError)
    expect((error as APIError).type).toBe('agent_killed')
    await expect.poll(() => fake.requests.at(-1)?.outcome).toBe('aborted')
  })

  it('a ceiling refusal is 429 with x-should-retry: false in the gateway\'s error shape, and the SDK does not retry it', async () => {
    const address = `agent://anth-${engine}/prod/spender`
    const key = await agentKey(gw, address)
    const policy = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/policies`, { kind: 'cost', max_cost_per_day_usd: 0.001, on_breach: 'block' })
    expect(policy.status, JSON.stringify(policy.body)).toBe(200)
    const before = fake.requests.length
    const raw = await api(gw.url, key, 'POST', '/llm/anth/v1/messages', { model: 'claude-fake', max_tokens: 1000, messages: MESSAGES })
    expect(raw.status).toBe(429)
    expect(raw.headers.get('x-should-retry')).toBe('false')
    expect(raw.body).toMatchObject({ ok: false, error: { code: 'budget_exceeded', type: 'budget_exceeded', policy_id: policy.body.policy.policy_id } })
    expect(typeof raw.body.error.request_id).toBe('string')
    const error = await client(key, { maxRetries: 3 })
      .messages.create({ model: 'claude-fake', max_tokens: 1000, messages: MESSAGES })
      .catch((e: unknown) => e)
    expect(error).toBeInstanceOf(APIError)
    expect((error as APIError).status).toBe(429)
    expect((error as APIError).type).toBe('budget_exceeded')
    expect(fake.requests.length).toBe(before)
    expect((await calls(address)).length).toBe(0)
  })

  it('fails closed: an unpriced model is 422 model_not_priced; paths of the other kind and unknown paths are 404 — nothing reaches the upstream', async () => {
    const key = await agentKey(gw, `agent://anth-${engine}/prod/careless`)
    const before = fake.requests.length
    const unpriced = await api(gw.url, key, 'POST', '/llm/anth/v1/messages', { model: 'claude-unpriced', max_tokens: 5, messages: MESSAGES })
    expect(unpriced.status).toBe(422)
    expect(unpriced.body).toMatchObject({ ok: false, error: { code: 'model_not_priced', type: 'model_not_priced' } })
    const viaSdk = await client(key)
      .messages.create({ model: 'claude-unpriced', max_tokens: 5, messages: MESSAGES })
      .catch((e: unknown) => e)
    expect((viaSdk as APIError).status).toBe(422)
    expect((viaSdk as APIError).type).toBe('model_not_priced')
    const chat = { model: 'claude-fake', messages: MESSAGES }
    const notFound: [string, string, unknown][] = [
      ['POST', '/llm/anth/v1/chat/completions', chat],
      ['POST', '/llm/anth/v1/embeddings', { model: 'claude-fake', input: 'x' }],
      ['POST', '/llm/anth/v1/responses', { model: 'claude-fake', input: 'x' }],
      ['POST', '/llm/anth/v1/complete', { model: 'claude-fake', prompt: 'x' }],
      ['POST', '/llm/anth/v1/messages/count_tokens', { model: 'claude-fake', messages: MESSAGES }],
      ['GET', '/llm/anth/v1/models/claude-fake', undefined],
      ['POST', '/llm/oai/v1/messages', { model: 'claude-fake', max_tokens: 5, messages: MESSAGES }],
      ['POST', '/llm/oai/v1/nope', chat],
      ['POST', '/llm/nope/v1/messages', { model: 'claude-fake', max_tokens: 5, messages: MESSAGES }],
    ]
    for (const [method, path, body] of notFound) {
      const res = await api(gw.url, key, method, path, body)
      expect(res.status, `${method} ${path}`).toBe(404)
      expect(res.body.ok).toBe(false)
    }
    expect((await api(gw.url, gw.adminKey, 'POST', '/llm/anth/v1/messages', { model: 'claude-fake', max_tokens: 5, messages: MESSAGES })).status).toBe(403)
    expect((await api(gw.url, null, 'POST', '/llm/anth/v1/messages', { model: 'claude-fake', max_tokens: 5, messages: MESSAGES })).status).toBe(401)
    expect(fake.requests.length).toBe(before)
  })

  it('misbehaving upstreams: 429 and 529 pass through uncharged; no usage or a stream dropped mid-way charge the reservation; usage above the cap is charged as reported', async () => {
    const address = `agent://anth-${engine}/prod/unlucky`
    const key = await agentKey(gw, address)
    const body = { model: 'claude-fake', max_tokens: 10, messages: MESSAGES }

    fake.once({ status: 429 })
    const limited = await client(key).messages.create(body).catch((e: unknown) => e)
    expect((limited as APIError).status).toBe(429)
    expect((limited as APIError).type).toBe('rate_limit_error')
    expect((limited as APIError).headers?.get('retry-after')).toBe('7')
    expect((await calls(address))[0]).toMatchObject({ outcome: 'refused', cost_usd: 0, status: 429 })

    fake.once({ status: 529 })
    const overloaded = await client(key).messages.create(body).catch((e: unknown) => e)
    expect((overloaded as APIError).status).toBe(529)
    expect((await calls(address))[0]).toMatchObject({ outcome: 'refused', cost_usd: 0, status: 529 })

    fake.once({ no_usage: true })
    const noUsage = await api(gw.url, key, 'POST', '/llm/anth/v1/messages', body)
    expect(noUsage.status).toBe(200)
    let [call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'reservation' })
    expect(call.cost_usd).toBe(call.reserved_usd)

    // A stream dropped before message_delta: message_start's provisional count is not the usage.
    fake.once({ drop: 2 })
    const types: string[] = []
    for await (const event of await client(key).messages.create({ ...body, stream: true })) types.push(event.type)
    expect(types).toContain('message_start')
    expect(types).not.toContain('message_delta')
    ;[call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'reservation' })
    expect(call.cost_usd).toBe(call.reserved_usd)

    fake.once({ over_cap: 50 })
    await client(key).messages.create({ ...body, stream: true }).then(async (s) => {
      for await (const _ of s) void _
    })
    ;[call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'usage' })
    expect(call.usage.output_tokens).toBe(60)
    expect(microOf(call)).toBe(chargeOf(60))
    expect(call.cost_usd).toBeGreaterThan(call.reserved_usd)
  })
})
