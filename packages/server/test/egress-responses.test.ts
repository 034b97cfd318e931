/**
 * The OpenAI Responses API through the gateway (POST /llm/{upstream}/v1/responses on
 * `kind: "openai"` upstreams) with the official `openai` client (`client.responses.create`)
 * against the fake upstream (fake-llm.ts), on both stores: max_output_tokens injected and
 * clamped, charges from `response.usage` priced exactly (streams: the final
 * response.completed / .incomplete / .failed event), the kill cutting a stream with one
 * Responses `error` event and aborting the upstream request, ceiling and pricing refusals,
 * misbehaving upstreams.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent } from '@chokepoint/sdk'
import type { APIError } from 'openai'
import OpenAI from 'openai'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { promptTokensOf, startFakeLlm, type FakeLlm } from './fake-llm.js'
import { agentKey, api, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('egress-responses.test.ts')
const PROVIDER_KEY = 'sk-provider-secret-responses-0123'
/** Whole micro-USD per token: 2 in, 8 out, 1 cached; at most 1000 output tokens. */
const PRICE = { input_cost_per_token: 0.000002, output_cost_per_token: 0.000008, cache_read_input_token_cost: 0.000001, max_input_tokens: 100_000, max_output_tokens: 1000 }
const CACHED = 3
const INPUT = 'Say something about gateways.'
const chargeOf = (output: number, input: unknown = INPUT): number => (promptTokensOf(input) - CACHED) * 2 + CACHED * 1 + output * 8

describe.each(ENGINES)('Responses API egress through the gateway (%s)', (engine) => {
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-responses-'))
  let fake: FakeLlm
  let gw: TestGateway
  beforeAll(async () => {
    fake = await startFakeLlm({ apiKey: PROVIDER_KEY, models: ['fake-model', 'unpriced-model'], cachedTokens: CACHED, chunks: 5 })
    const file = join(dir, 'egress.json')
    writeFileSync(file, JSON.stringify({ upstreams: [{ id: 'fake', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_PROVIDER_KEY', models: { 'fake-model': PRICE }, timeout_ms: 5000 }] }))
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_EGRESS_CONFIG: file, FAKE_PROVIDER_KEY: PROVIDER_KEY } })
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

  const client = (key: string, maxRetries = 0) => new OpenAI({ apiKey: key, baseURL: new Agent({ baseURL: gw.url, apiKey: key }).llmBaseURL('fake'), maxRetries })
  const calls = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${encodeURIComponent(address)}`)).body.calls as any[]
  const microOf = (call: any): number => Math.round(call.cost_usd * 1e6)

  it('meters a response from response.usage (cached input at its rate); max_output_tokens injected when absent, clamped when above the model', async () => {
    const address = `agent://resp-${engine}/prod/writer`
    const key = await agentKey(gw, address)
    const answer = await client(key).responses.create({ model: 'fake-model', input: INPUT })
    expect(answer.object).toBe('response')
    expect(answer.output_text).toMatch(/^w0 w1/)
    expect(answer.usage).toMatchObject({ input_tokens: promptTokensOf(INPUT), output_tokens: 20, input_tokens_details: { cached_tokens: CACHED } })
    const seen = fake.requests.at(-1)
    expect(seen).toMatchObject({ path: '/v1/responses', authorized: true, sawAgentKey: false })
    expect(seen?.headers.authorization).toBe(`Bearer ${PROVIDER_KEY}`)
    expect((seen?.body as any).max_output_tokens).toBe(1000)
    const [call] = await calls(address)
    expect(call).toMatchObject({ state: 'settled', outcome: 'usage', endpoint: 'responses', model: 'fake-model', upstream: 'fake' })
    expect(microOf(call)).toBe(chargeOf(20))

    await client(key).responses.create({ model: 'fake-model', input: INPUT, max_output_tokens: 50_000 })
    expect((fake.requests.at(-1)?.body as any).max_output_tokens).toBe(1000)
    const capped = await client(key).responses.create({ model: 'fake-model', input: INPUT, max_output_tokens: 7 })
    expect(capped.status).toBe('incomplete')
    expect(microOf((await calls(address))[0])).toBe(chargeOf(7))
  })

  it('streams: the usage of response.completed, response.incomplete and response.failed is what is charged', async () => {
    const address = `agent://resp-${engine}/prod/streamer`
    const key = await agentKey(gw, address)
    const stream = await client(key).responses.create({ model: 'fake-model', input: INPUT, stream: true })
    let text = ''
    const types: string[] = []
    for await (const event of stream) {
      types.push(event.type)
      if (event.type === 'response.output_text.delta') text += event.delta
    }
    expect(text).toBe('c0 c1 c2 c3 c4 ')
    expect(types[0]).toBe('response.created')
    expect(types.at(-1)).toBe('response.completed')
    let [call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'usage', endpoint: 'responses' })
    expect(microOf(call)).toBe(chargeOf(20))

    const incomplete = await client(key).responses.create({ model: 'fake-model', input: INPUT, stream: true, max_output_tokens: 9 })
    let last = ''
    for await (const event of incomplete) last = event.type
    expect(last).toBe('response.incomplete')
    ;[call] = await calls(address)
    expect(microOf(call)).toBe(chargeOf(9))

    fake.once({ failed: true })
    const failed = await client(key).responses.create({ model: 'fake-model', input: INPUT, stream: true, max_output_tokens: 30 })
    for await (const event of failed) last = event.type
    expect(last).toBe('response.failed')
    ;[call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'usage' })
    expect(microOf(call)).toBe(chargeOf(20))
  })

  it('a kill cuts an in-flight stream with one Responses error event (agent_killed), aborts the upstream request, and refuses the next call', async () => {
    const address = `agent://resp-${engine}/prod/looper`
    const key = await agentKey(gw, address)
    fake.once({ stall: 2 })
    const stream = await client(key).responses.create({ model: 'fake-model', input: INPUT, stream: true })
    const events: any[] = []
    for await (const event of stream) {
      events.push(event)
      if (event.type === 'response.output_text.delta' && event.delta === 'c1 ') {
        expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'looping' })).status).toBe(200)
      }
    }
    const errors = events.filter((e) => e.type === 'error')
    expect(errors).toHaveLength(1)
    expect(events.at(-1)).toBe(errors[0])
    expect(errors[0]).toMatchObject({ type: 'error', code: 'agent_killed' })
    expect(errors[0].message).toMatch(/killed/)
    // Numbered after the last upstream event, as the stream's own events are.
    expect(errors[0].sequence_number).toBe(events.at(-2).sequence_number + 1)
    await expect.poll(() => fake.requests.at(-1)?.outcome).toBe('aborted')
    // The kill frame reaches the client first; the settlement follows it.
    await expect.poll(async () => (await calls(address))[0]?.state, { timeout: 5000 }).toBe('settled')
    expect((await calls(address))[0]).toMatchObject({ state: 'settled', outcome: 'reservation' })
    const next = await client(key)
      .responses.create({ model: 'fake-model', input: INPUT })
      .catch((e: unknown) => e)
    expect((next as APIError).status).toBe(403)
    expect((next as APIError).type).toBe('agent_killed')
  })

  it('the raw kill frame is `event: error` with the Responses error data', async () => {
    const address = `agent://resp-${engine}/prod/looper-raw`
    const key = await agentKey(gw, address)
    fake.once({ stall: 1 })
    const res = await fetch(`${gw.url}/llm/fake/v1/responses`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'fake-model', input: INPUT, stream: true }),
    })
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let text = ''
    while (!text.includes('c0 ')) text += decoder.decode((await reader.read()).value, { stream: true })
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'looping' })).status).toBe(200)
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
    const frames = text.split('\n\n').filter(Boolean)
    expect(frames.filter((f) => f.startsWith('event: error'))).toHaveLength(1)
    const [head, data] = (frames.at(-1) as string).split('\n')
    expect(head).toBe('event: error')
    expect(JSON.parse((data as string).slice('data: '.length))).toMatchObject({ type: 'error', code: 'agent_killed' })
  })

  it('refusals: ceiling 429 with x-should-retry: false (the client does not retry), unpriced model 422 model_not_priced — nothing reaches the upstream', async () => {
    const address = `agent://resp-${engine}/prod/spender`
    const key = await agentKey(gw, address)
    const policy = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/policies`, { kind: 'cost', max_cost_per_day_usd: 0.001, on_breach: 'block' })
    expect(policy.status).toBe(200)
    const before = fake.requests.length
    const raw = await api(gw.url, key, 'POST', '/llm/fake/v1/responses', { model: 'fake-model', input: INPUT })
    expect(raw.status).toBe(429)
    expect(raw.headers.get('x-should-retry')).toBe('false')
    expect(raw.body).toMatchObject({ ok: false, error: { code: 'budget_exceeded', type: 'budget_exceeded' } })
    const error = await client(key, 3)
      .responses.create({ model: 'fake-model', input: INPUT })
      .catch((e: unknown) => e)
    expect((error as APIError).status).toBe(429)
    const unpriced = await client(key)
      .responses.create({ model: 'unpriced-model', input: INPUT })
      .catch((e: unknown) => e)
    expect((unpriced as APIError).status).toBe(422)
    expect((unpriced as APIError).type).toBe('model_not_priced')
    expect(fake.requests.length).toBe(before)
  })

  it('misbehaving upstreams: 429/500 pass through uncharged; no usage, a drop mid-stream charge the reservation; usage above the cap is charged as reported', async () => {
    const address = `agent://resp-${engine}/prod/unlucky`
    const key = await agentKey(gw, address)
    const body = { model: 'fake-model', input: INPUT, max_output_tokens: 10 }
    for (const status of [429, 500]) {
      fake.once({ status })
      const e = await client(key).responses.create(body).catch((x: unknown) => x)
      expect((e as APIError).status).toBe(status)
      expect((await calls(address))[0]).toMatchObject({ outcome: 'refused', cost_usd: 0, status })
    }
    fake.once({ no_usage: true })
    const events: string[] = []
    for await (const event of await client(key).responses.create({ ...body, stream: true })) events.push(event.type)
    expect(events.at(-1)).toBe('response.incomplete')
    let [call] = await calls(address)
    expect(call.outcome).toBe('reservation')
    expect(call.cost_usd).toBe(call.reserved_usd)

    fake.once({ drop: 2 })
    const dropped: string[] = []
    await (async () => {
      for await (const event of await client(key).responses.create({ ...body, stream: true })) dropped.push(event.type)
    })().catch(() => undefined)
    expect(dropped).not.toContain('response.completed')
    ;[call] = await calls(address)
    expect(call.outcome).toBe('reservation')

    fake.once({ over_cap: 40 })
    await client(key).responses.create(body)
    ;[call] = await calls(address)
    expect(call).toMatchObject({ outcome: 'usage' })
    expect(call.usage.output_tokens).toBe(50)
    expect(microOf(call)).toBe(chargeOf(50))
  })

  it('input the body does not bound (previous_response_id, built-in tools, images) reserves the whole input window', async () => {
    const address = `agent://resp-${engine}/prod/stateful`
    const key = await agentKey(gw, address)
    await client(key).responses.create({ model: 'fake-model', input: INPUT, max_output_tokens: 10 })
    const plain = (await calls(address))[0]
    await client(key).responses.create({ model: 'fake-model', input: INPUT, max_output_tokens: 10, previous_response_id: 'resp_fake1' })
    const stateful = (await calls(address))[0]
    expect(Math.round(plain.reserved_usd * 1e6)).toBeLessThan(2000)
    // 100 000 input tokens × $2/M + 10 × $8/M
    expect(Math.round(stateful.reserved_usd * 1e6)).toBe(100_000 * 2 + 10 * 8)
    await client(key).responses.create({ model: 'fake-model', input: INPUT, max_output_tokens: 10, tools: [{ type: 'web_search' }] as any })
    expect(Math.round((await calls(address))[0].reserved_usd * 1e6)).toBe(200_080)
    const image = [{ role: 'user' as const, content: [{ type: 'input_image' as const, image_url: 'https://example.com/a.png', detail: 'auto' as const }] }]
    await client(key).responses.create({ model: 'fake-model', input: image, max_output_tokens: 10 })
    expect(Math.round((await calls(address))[0].reserved_usd * 1e6)).toBe(200_080)
  })
})
