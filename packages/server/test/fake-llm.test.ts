/**
 * The fake OpenAI-compatible upstream (fake-llm.ts), exercised with the official `openai`
 * client pointed straight at it: what the gateway's egress tests will rely on.
 */
import type { APIError as AnthropicError } from '@anthropic-ai/sdk'
import Anthropic from '@anthropic-ai/sdk'
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError } from 'openai'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { FAKE_LLM_KEY, embeddingTokensOf, parseBehaviour, promptTokensOf, startFakeLlm, type FakeLlm } from './fake-llm.js'

const MESSAGES: OpenAI.Chat.ChatCompletionMessageParam[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say something about gateways.' },
]

function client(fake: FakeLlm, extra: Partial<ConstructorParameters<typeof OpenAI>[0]> = {}): OpenAI {
  return new OpenAI({ apiKey: fake.apiKey, baseURL: `${fake.url}/v1`, maxRetries: 0, ...extra })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('fake LLM upstream', () => {
  let fake: FakeLlm
  let openai: OpenAI
  beforeAll(async () => {
    fake = await startFakeLlm({ chunks: 5, cachedTokens: 3 })
    openai = client(fake)
  })
  afterEach(async () => {
    await fake.waitForIdle()
    fake.reset()
  })
  afterAll(() => fake.close())

  describe('answers', () => {
    it('non-streaming chat: an OpenAI chat.completion with deterministic usage', async () => {
      const answer = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })
      expect(answer.object).toBe('chat.completion')
      expect(answer.model).toBe('fake-model')
      expect(answer.choices[0]?.message.role).toBe('assistant')
      expect(answer.choices[0]?.finish_reason).toBe('stop')
      const prompt = Math.ceil(JSON.stringify(MESSAGES).length / 4)
      expect(promptTokensOf(MESSAGES)).toBe(prompt)
      expect(answer.usage).toMatchObject({
        prompt_tokens: prompt,
        completion_tokens: 20,
        total_tokens: prompt + 20,
        prompt_tokens_details: { cached_tokens: 3 },
      })
      expect(fake.requests).toHaveLength(1)
      const [req] = fake.requests
      expect(req).toMatchObject({ method: 'POST', path: '/v1/chat/completions', authorized: true, sawAgentKey: false, outcome: 'completed', status: 200 })
      expect(req?.body).toMatchObject({ model: 'fake-model', messages: MESSAGES })
      expect(req?.headers.authorization).toBe(`Bearer ${FAKE_LLM_KEY}`)
      expect(typeof req?.at).toBe('number')
    })

    it('completion_tokens is min(max_completion_tokens ?? max_tokens, 20)', async () => {
      const capped = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_completion_tokens: 5 })
      expect(capped.usage?.completion_tokens).toBe(5)
      expect(capped.choices[0]?.finish_reason).toBe('length')
      const legacy = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_tokens: 7 })
      expect(legacy.usage?.completion_tokens).toBe(7)
      const both = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_tokens: 7, max_completion_tokens: 2 })
      expect(both.usage?.completion_tokens).toBe(2)
      const high = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_completion_tokens: 1000 })
      expect(high.usage?.completion_tokens).toBe(20)
      expect(high.choices[0]?.finish_reason).toBe('stop')
    })

    it('streaming without include_usage: N content chunks, no usage, then [DONE]', async () => {
      const stream = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true })
      const chunks: OpenAI.Chat.ChatCompletionChunk[] = []
      for await (const chunk of stream) chunks.push(chunk)
      expect(chunks).toHaveLength(5)
      expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.choices.length === 1)).toBe(true)
      expect(chunks.every((c) => c.usage === undefined)).toBe(true)
      expect(chunks[0]?.choices[0]?.delta.role).toBe('assistant')
      expect(chunks.map((c) => c.choices[0]?.delta.content).join('')).toBe('c0 c1 c2 c3 c4 ')
      expect(chunks[4]?.choices[0]?.finish_reason).toBe('stop')
      expect(fake.requests[0]?.outcome).toBe('completed')
    })

    it('streaming with include_usage: a final chunk with choices [] and usage', async () => {
      const stream = await openai.chat.completions.create({
        model: 'fake-model',
        messages: MESSAGES,
        stream: true,
        stream_options: { include_usage: true },
        max_completion_tokens: 9,
      })
      const chunks: OpenAI.Chat.ChatCompletionChunk[] = []
      for await (const chunk of stream) chunks.push(chunk)
      expect(chunks).toHaveLength(6)
      // Like OpenAI: the content chunks carry usage: null.
      expect(chunks.slice(0, 5).every((c) => c.usage === null)).toBe(true)
      const last = chunks[5]
      expect(last?.choices).toEqual([])
      const prompt = promptTokensOf(MESSAGES)
      expect(last?.usage).toMatchObject({ prompt_tokens: prompt, completion_tokens: 9, total_tokens: prompt + 9, prompt_tokens_details: { cached_tokens: 3 } })
    })

    it('the raw stream is text/event-stream ending in data: [DONE]', async () => {
      const res = await fetch(`${fake.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${fake.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'fake-model', messages: MESSAGES, stream: true, stream_options: { include_usage: true } }),
      })
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
      const events = (await res.text()).split('\n\n').filter(Boolean)
      expect(events).toHaveLength(7)
      expect(events.every((e) => e.startsWith('data: '))).toBe(true)
      expect(events[6]).toBe('data: [DONE]')
    })

    it('chunk delay is configurable', async () => {
      const slowChunks = await startFakeLlm({ chunks: 4, chunkDelayMs: 40 })
      try {
        const stream = await client(slowChunks).chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true })
        const times: number[] = []
        for await (const _chunk of stream) times.push(performance.now())
        expect(times).toHaveLength(4)
        expect(times[3]! - times[0]!).toBeGreaterThanOrEqual(3 * 40 - 5)
      } finally {
        await slowChunks.close()
      }
    })

    it('embeddings: vectors (base64 as the client asks, or floats) and usage', async () => {
      const answer = await openai.embeddings.create({ model: 'fake-model', input: ['alpha', 'beta'] })
      expect(answer.object).toBe('list')
      expect(answer.data).toHaveLength(2)
      expect(answer.data[0]?.embedding).toHaveLength(8)
      expect(answer.data[0]?.embedding.every((v) => typeof v === 'number' && Number.isFinite(v))).toBe(true)
      expect(answer.usage).toEqual({ prompt_tokens: embeddingTokensOf(['alpha', 'beta']), total_tokens: embeddingTokensOf(['alpha', 'beta']) })
      expect(fake.requests[0]?.body).toMatchObject({ encoding_format: 'base64' })

      const floats = await openai.embeddings.create({ model: 'fake-model', input: 'alpha', encoding_format: 'float' })
      expect(floats.data).toHaveLength(1)
      // Deterministic: the same input gives the same vector (float32 rounding aside).
      floats.data[0]?.embedding.forEach((v, i) => expect(v).toBeCloseTo(answer.data[0]!.embedding[i]!, 5))
    })

    it('models: a list', async () => {
      const ids: string[] = []
      for await (const model of openai.models.list()) ids.push(model.id)
      expect(ids).toEqual(['fake-model'])
    })

    it('an unknown model is 404 model_not_found', async () => {
      const error = await openai.chat.completions.create({ model: 'gpt-nope', messages: MESSAGES }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(APIError)
      expect((error as APIError).status).toBe(404)
      expect((error as APIError).code).toBe('model_not_found')
    })
  })

  describe('the provider key', () => {
    it('a wrong key is 401 in OpenAI error shape', async () => {
      const error = await client(fake, { apiKey: 'sk-wrong' })
        .chat.completions.create({ model: 'fake-model', messages: MESSAGES })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(APIError)
      expect((error as APIError).status).toBe(401)
      expect((error as APIError).code).toBe('invalid_api_key')
      expect((error as APIError).type).toBe('invalid_request_error')
      expect(fake.requests[0]).toMatchObject({ authorized: false, status: 401 })
    })

    it('a missing key is 401 too', async () => {
      const res = await fetch(`${fake.url}/v1/models`)
      expect(res.status).toBe(401)
      const body = (await res.json()) as { error: { message: string; type: string; param: unknown; code: unknown } }
      expect(body.error).toMatchObject({ type: 'invalid_request_error', param: null })
      expect(body.error.message).toMatch(/API key/)
    })

    it('records a Chokepoint key (cp_…) in any header', async () => {
      const agentKey = `cp_${'a'.repeat(43)}`
      const error = await client(fake, { apiKey: agentKey })
        .chat.completions.create({ model: 'fake-model', messages: MESSAGES })
        .catch((e: unknown) => e)
      expect((error as APIError).status).toBe(401)
      await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES }, { headers: { 'x-forwarded-key': agentKey } })
      expect(fake.requests.map((r) => [r.authorized, r.sawAgentKey])).toEqual([
        [false, true],
        [true, true],
      ])
      expect(fake.sawAgentKey).toBe(true)
      fake.reset()
      await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })
      expect(fake.sawAgentKey).toBe(false)
    })
  })

  describe('misbehaviours', () => {
    it('slow: headers only after the delay', async () => {
      fake.behaviour = { slow: 150 }
      const t0 = performance.now()
      await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })
      expect(performance.now() - t0).toBeGreaterThanOrEqual(140)
      // A client timeout shorter than the delay: the fake sees the client go away.
      const error = await client(fake, { timeout: 40 })
        .chat.completions.create({ model: 'fake-model', messages: MESSAGES })
        .catch((e: unknown) => e)
      expect(error).toBeInstanceOf(APIConnectionTimeoutError)
      await fake.waitForIdle()
      expect(fake.aborted).toBe(1)
      expect(fake.requests.map((r) => r.outcome)).toEqual(['completed', 'aborted'])
    })

    it('no_usage: no usage in the body, no usage chunk even when asked', async () => {
      fake.behaviour = { no_usage: true }
      const answer = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })
      expect(answer.usage).toBeUndefined()
      const stream = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true, stream_options: { include_usage: true } })
      const chunks: OpenAI.Chat.ChatCompletionChunk[] = []
      for await (const chunk of stream) chunks.push(chunk)
      expect(chunks).toHaveLength(5)
      expect(chunks.some((c) => c.usage)).toBe(false)
      const embedding = await openai.embeddings.create({ model: 'fake-model', input: 'x', encoding_format: 'float' })
      expect(embedding.usage).toBeUndefined()
    })

    it('drop: K chunks, then the socket is destroyed', async () => {
      fake.behaviour = { drop: 2 }
      const stream = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true, stream_options: { include_usage: true } })
      const chunks: OpenAI.Chat.ChatCompletionChunk[] = []
      const error = await (async () => {
        for await (const chunk of stream) chunks.push(chunk)
      })().catch((e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      expect(chunks).toHaveLength(2)
      await fake.waitForIdle()
      expect(fake.dropped).toBe(1)
      expect(fake.aborted).toBe(0)
      expect(fake.requests[0]?.outcome).toBe('dropped')
    })

    it('drop on a non-streaming request: half a body, then the socket is destroyed', async () => {
      fake.behaviour = { drop: 0 }
      const error = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(Error)
      await fake.waitForIdle()
      expect(fake.dropped).toBe(1)
    })

    it('status 429: Retry-After: 7 and an OpenAI error body', async () => {
      fake.behaviour = { status: 429 }
      const error = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(APIError)
      const e = error as APIError
      expect(e.status).toBe(429)
      expect(e.headers?.get('retry-after')).toBe('7')
      expect(e.code).toBe('rate_limit_exceeded')
      expect(e.error).toMatchObject({ message: expect.any(String), type: 'requests', param: null, code: 'rate_limit_exceeded' })
    })

    it('status 500: an OpenAI server_error', async () => {
      fake.behaviour = { status: 500 }
      const error = await openai.embeddings.create({ model: 'fake-model', input: 'x' }).catch((e: unknown) => e)
      expect((error as APIError).status).toBe(500)
      expect((error as APIError).type).toBe('server_error')
      expect((error as APIError).headers?.get('retry-after')).toBeNull()
    })

    it('over_cap: usage.completion_tokens above the cap', async () => {
      fake.behaviour = { over_cap: 5 }
      const answer = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_completion_tokens: 4 })
      expect(answer.usage?.completion_tokens).toBe(9)
      const stream = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, max_tokens: 4, stream: true, stream_options: { include_usage: true } })
      let usage: OpenAI.CompletionUsage | null | undefined
      for await (const chunk of stream) usage = chunk.usage ?? usage
      expect(usage?.completion_tokens).toBe(9)
      const uncapped = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })
      expect(uncapped.usage?.completion_tokens).toBe(25)
    })

    it('hang: never answers; the client giving up counts as aborted', async () => {
      fake.behaviour = { hang: true }
      const controller = new AbortController()
      const pending = openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES }, { signal: controller.signal }).catch((e: unknown) => e)
      await fake.waitForRequests(1)
      await sleep(100)
      expect(fake.inFlight).toBe(1)
      expect(fake.requests[0]?.outcome).toBe('pending')
      expect(fake.requests[0]?.status).toBeNull()
      controller.abort()
      expect(await pending).toBeInstanceOf(APIUserAbortError)
      await fake.waitForIdle()
      expect(fake.inFlight).toBe(0)
      expect(fake.aborted).toBe(1)
      expect(fake.requests[0]?.outcome).toBe('aborted')
    })

    it('stall: K chunks, then silence on an open socket', async () => {
      fake.behaviour = { stall: 1 }
      const controller = new AbortController()
      const stream = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true }, { signal: controller.signal })
      const chunks: OpenAI.Chat.ChatCompletionChunk[] = []
      const reading = (async () => {
        for await (const chunk of stream) chunks.push(chunk)
      })().catch((e: unknown) => e)
      await sleep(150)
      expect(chunks).toHaveLength(1)
      expect(fake.inFlight).toBe(1)
      controller.abort()
      await reading
      await fake.waitForIdle()
      expect(fake.aborted).toBe(1)
    })

    it('a client aborting mid-stream counts as aborted', async () => {
      const slowChunks = await startFakeLlm({ chunks: 50, chunkDelayMs: 20 })
      try {
        const controller = new AbortController()
        const stream = await client(slowChunks).chat.completions.create({ model: 'fake-model', messages: MESSAGES, stream: true }, { signal: controller.signal })
        let n = 0
        // The client's stream iterator ends quietly when its own signal aborts.
        for await (const _chunk of stream) if (++n === 3) controller.abort()
        expect(n).toBe(3)
        await slowChunks.waitForIdle()
        expect(slowChunks.aborted).toBe(1)
        expect(slowChunks.requests[0]?.outcome).toBe('aborted')
      } finally {
        await slowChunks.close()
      }
    })

    it('completed requests never count as aborted', async () => {
      await Promise.all(Array.from({ length: 10 }, () => openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })))
      await fake.waitForIdle()
      expect(fake.aborted).toBe(0)
      expect(fake.requests.every((r) => r.outcome === 'completed')).toBe(true)
    })
  })

  describe('per-request behaviour', () => {
    it('once(): the next chat/embeddings request only, in order', async () => {
      fake.once({ status: 500 })
      fake.once({ over_cap: 1 })
      await openai.models.list() // never takes a queued behaviour
      const error = await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES }).catch((e: unknown) => e)
      expect((error as APIError).status).toBe(500)
      expect((await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })).usage?.completion_tokens).toBe(21)
      expect((await openai.chat.completions.create({ model: 'fake-model', messages: MESSAGES })).usage?.completion_tokens).toBe(20)
    })

    it('the model name: <model>@<spec>', async () => {
      const answer = await openai.chat.completions.create({ model: 'fake-model@over_cap=3,no_usage', messages: MESSAGES })
      expect(answer.usage).toBeUndefined()
      expect(answer.model).toBe('fake-model')
      expect(fake.requests[0]?.behaviour).toEqual({ over_cap: 3, no_usage: true })
      const error = await openai.chat.completions.create({ model: 'fake-model@status=429', messages: MESSAGES }).catch((e: unknown) => e)
      expect((error as APIError).status).toBe(429)
    })

    it('the x-fake-behaviour header', async () => {
      const error = await openai.chat.completions
        .create({ model: 'fake-model', messages: MESSAGES }, { headers: { 'x-fake-behaviour': 'status=500' } })
        .catch((e: unknown) => e)
      expect((error as APIError).status).toBe(500)
    })

    it('later sources win: fake.behaviour < once() < header < model name', async () => {
      fake.behaviour = { over_cap: 1, no_usage: false }
      fake.once({ over_cap: 2 })
      const answer = await openai.chat.completions.create({ model: 'fake-model@over_cap=4', messages: MESSAGES }, { headers: { 'x-fake-behaviour': 'over_cap=3' } })
      expect(answer.usage?.completion_tokens).toBe(24)
    })

    it('parseBehaviour: defaults and errors', () => {
      expect(parseBehaviour('slow=200, no_usage,drop=3,stall,status=429,over_cap,hang')).toEqual({
        slow: 200,
        no_usage: true,
        drop: 3,
        stall: 1,
        status: 429,
        over_cap: 10,
        hang: true,
      })
      expect(parseBehaviour('')).toEqual({})
      expect(() => parseBehaviour('explode')).toThrow(/unknown behaviour/)
    })

    it('an unknown behaviour in a request is a 400', async () => {
      const error = await openai.chat.completions.create({ model: 'fake-model@explode', messages: MESSAGES }).catch((e: unknown) => e)
      expect((error as APIError).status).toBe(400)
    })
  })

  it('close() ends hanging requests without counting them as aborted', async () => {
    const other = await startFakeLlm({ behaviour: { hang: true } })
    const pending = client(other).chat.completions.create({ model: 'fake-model', messages: MESSAGES }).catch((e: unknown) => e)
    await other.waitForRequests(1)
    await other.close()
    expect(await pending).toBeInstanceOf(APIConnectionError)
    expect(other.aborted).toBe(0)
    expect(other.inFlight).toBe(0)
    expect(other.requests[0]?.outcome).toBe('closed')
  })
})

describe('fake LLM upstream: Responses API and Anthropic Messages', () => {
  let fake: FakeLlm
  beforeAll(async () => {
    fake = await startFakeLlm({ models: ['fake-model', 'claude-fake'], chunks: 4, cachedTokens: 2, cacheCreationTokens: 5 })
  })
  afterEach(async () => {
    await fake.waitForIdle()
    fake.reset()
  })
  afterAll(() => fake.close())
  const anthropic = () => new Anthropic({ apiKey: null, baseURL: fake.url, maxRetries: 0, defaultHeaders: { 'x-api-key': fake.apiKey } })

  it('responses: a response object with deterministic usage; streams end in response.completed with the same usage', async () => {
    const openai = client(fake)
    const answer = await openai.responses.create({ model: 'fake-model', input: 'hello there', max_output_tokens: 50 })
    expect(answer.status).toBe('completed')
    expect(answer.usage).toMatchObject({ input_tokens: promptTokensOf('hello there'), output_tokens: 20, input_tokens_details: { cached_tokens: 2 } })
    const events: OpenAI.Responses.ResponseStreamEvent[] = []
    for await (const e of await openai.responses.create({ model: 'fake-model', input: 'hello there', stream: true, max_output_tokens: 5 })) events.push(e)
    expect(events.filter((e) => e.type === 'response.output_text.delta')).toHaveLength(4)
    const last = events.at(-1)
    expect(last?.type).toBe('response.incomplete')
    expect((last as OpenAI.Responses.ResponseIncompleteEvent).response.usage?.output_tokens).toBe(5)
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i))
  })

  it('messages: x-api-key required, Anthropic error shape; usage apart from the cache; streams report cumulative output_tokens', async () => {
    const noKey = await fetch(`${fake.url}/v1/messages`, { method: 'POST', headers: { authorization: `Bearer ${fake.apiKey}`, 'anthropic-version': '2023-06-01' }, body: '{}' })
    expect(noKey.status).toBe(401)
    expect(await noKey.json()).toMatchObject({ type: 'error', error: { type: 'authentication_error' } })
    const answer = await anthropic().messages.create({ model: 'claude-fake', max_tokens: 9, messages: [{ role: 'user', content: 'hi' }] })
    expect(answer.stop_reason).toBe('max_tokens')
    expect(answer.usage).toMatchObject({ input_tokens: promptTokensOf([{ role: 'user', content: 'hi' }]), output_tokens: 9, cache_read_input_tokens: 2, cache_creation_input_tokens: 5 })
    fake.once({ deltas: 2 })
    const outputs: number[] = []
    for await (const e of await anthropic().messages.create({ model: 'claude-fake', max_tokens: 100, messages: [{ role: 'user', content: 'hi' }], stream: true })) {
      if (e.type === 'message_start') outputs.push(e.message.usage.output_tokens)
      if (e.type === 'message_delta') outputs.push(e.usage.output_tokens)
    }
    expect(outputs).toEqual([1, 10, 20])
    fake.once({ status: 529 })
    const overloaded = await anthropic()
      .messages.create({ model: 'claude-fake', max_tokens: 9, messages: [{ role: 'user', content: 'hi' }] })
      .catch((e: unknown) => e)
    expect((overloaded as AnthropicError).status).toBe(529)
    expect((overloaded as AnthropicError).type).toBe('overloaded_error')
    const models = await anthropic().models.list()
    expect(models.data.map((m) => m.id)).toEqual(['fake-model', 'claude-fake'])
  })
})
