/**
 * A fake OpenAI-compatible upstream for tests: node:http on 127.0.0.1, port 0.
 *
 * Endpoints (all under `/v1`, all require `Authorization: Bearer <options.apiKey>`, else 401
 * in OpenAI's error shape):
 *   POST /v1/chat/completions   non-streaming `chat.completion`, or with `stream: true` an SSE
 *                               stream of `chat.completion.chunk`s ending in `data: [DONE]`
 *   POST /v1/embeddings         `{object: 'list', data: [{object: 'embedding', index, embedding}], usage}`
 *                               (float arrays, or base64 little-endian float32 when
 *                               `encoding_format: 'base64'`, which the `openai` client asks for)
 *   GET  /v1/models             `{object: 'list', data: [{id, object: 'model', created, owned_by}]}`
 *   POST /v1/responses          OpenAI Responses API: a `response` object, or with `stream: true`
 *                               its typed SSE events (`event: <type>` + `data`, with sequence_number)
 *                               ending in `response.completed` (`response.incomplete` when capped)
 *
 * Anthropic endpoints (a request is Anthropic's when the path is /v1/messages or it carries an
 * `anthropic-version` header; they require `x-api-key: <options.apiKey>`, else 401 in
 * Anthropic's error shape `{type: 'error', error: {type, message}, request_id}`):
 *   POST /v1/messages           an Anthropic `message`, or with `stream: true` the SSE events
 *                               message_start, content_block_start, ping, content_block_delta × chunks,
 *                               content_block_stop, message_delta × deltas (default 1), message_stop
 *   GET  /v1/models             (with anthropic-version) `{data: [{type: 'model', id, display_name, created_at}], has_more, first_id, last_id}`
 *
 * Token accounting is deterministic, so a test can compute what the gateway should have seen:
 *   chat prompt_tokens       = promptTokensOf(messages) = ceil(JSON.stringify(messages).length / 4)
 *   chat completion_tokens   = min(cap, options.completionTokens (20)), cap = max_completion_tokens ?? max_tokens;
 *                              with `over_cap: n`: (cap ?? completionTokens) + n
 *   cached_tokens            = min(options.cachedTokens (0), prompt_tokens)
 *   embeddings prompt_tokens = embeddingTokensOf(input) = ceil(JSON.stringify(input).length / 4)
 *   responses input_tokens   = promptTokensOf(input); output_tokens = min(max_output_tokens, 20) (over_cap as chat);
 *                              input_tokens_details.cached_tokens = min(cachedTokens, input_tokens)
 *   messages input_tokens    = promptTokensOf(messages); output_tokens = min(max_tokens, 20) (over_cap as chat);
 *                              cache_read_input_tokens = cachedTokens, cache_creation_input_tokens =
 *                              cacheCreationTokens (Anthropic counts them apart from input_tokens)
 * The streamed usage is the same as the non-streamed one (it does not depend on the chunk count).
 * Anthropic streams report usage as Anthropic does: message_start has the input fields and
 * output_tokens 1; each message_delta has every field CUMULATIVE (the last one is the total).
 *
 * Misbehaviours (`FakeBehaviour`) combine; for one request they are merged, later wins, from:
 *   1. `fake.behaviour` (every request, to any endpoint; assignable at any time)
 *   2. `fake.once(b)` (a FIFO queue: each POST to chat/completions, embeddings, responses or
 *      messages that passes the key check takes the next entry; GET /v1/models never does)
 *   3. the request header `x-fake-behaviour: <spec>`
 *   4. the model name: `<model>@<spec>`, e.g. `fake-model@drop=3,no_usage` (the part before `@`
 *      is the model that must be in options.models)
 * `<spec>` is a comma-separated list: `slow=200`, `no_usage`, `drop=3`, `stall=3`, `status=429`,
 * `over_cap` (= over_cap=10) or `over_cap=5`, `hang`, `deltas=3` (Anthropic streams: that many
 * message_delta events), `failed` (Responses streams: end in `response.failed`, with usage).
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeBehaviour {
  /** Milliseconds to wait before sending the status line and headers. */
  slow?: number
  /** Never send `usage`: omitted from a chat/embeddings body, no usage chunk on a stream even when asked. */
  no_usage?: boolean
  /** Streams: send this many content chunks, then destroy the socket. Non-streaming: send the headers and half the body, then destroy the socket. */
  drop?: number
  /** Streams: send this many content chunks, then send nothing more and keep the socket open. */
  stall?: number
  /** Answer with this HTTP status and an OpenAI error body; 429 adds `Retry-After: 7`. */
  status?: number
  /** Report usage.completion_tokens this many above the cap (or above the default when there is no cap). */
  over_cap?: number
  /** Never answer (no headers); the request stays open until the client goes away or `close()`. */
  hang?: boolean
  /** Anthropic streams: send this many message_delta events (cumulative usage), default 1. */
  deltas?: number
  /** Responses streams: end with `response.failed` (usage still reported) instead of completed. */
  failed?: boolean
}

export interface FakeLlmOptions {
  /** The provider key the fake expects as `Authorization: Bearer …` (default FAKE_LLM_KEY). */
  apiKey?: string
  /** Model ids served (default ['fake-model']); any other model gets 404 model_not_found. */
  models?: string[]
  /** completion_tokens when the request has no lower cap (default 20). */
  completionTokens?: number
  /** prompt_tokens_details.cached_tokens (default 0, never above prompt_tokens). */
  cachedTokens?: number
  /** Content chunks per stream (default 5). */
  chunks?: number
  /** Milliseconds between stream chunks (default 0). */
  chunkDelayMs?: number
  /** Anthropic cache_creation_input_tokens (default 0). */
  cacheCreationTokens?: number
  /** Length of each embedding vector (default 8). */
  embeddingDimensions?: number
  /** The initial `fake.behaviour` (default {}). */
  behaviour?: FakeBehaviour
}

export type FakeOutcome = 'pending' | 'completed' | 'aborted' | 'dropped' | 'closed'

export interface FakeRequest {
  method: string
  path: string
  headers: http.IncomingHttpHeaders
  /** The JSON body parsed (undefined when empty, the raw text when it is not JSON). */
  body: unknown
  /** Date.now() when the request arrived. */
  at: number
  /** Whether the request carried the expected provider key (Authorization: Bearer, or x-api-key for Anthropic requests). */
  authorized: boolean
  /** Whether it was answered as an Anthropic request (path /v1/messages or an anthropic-version header). */
  anthropic: boolean
  /** Whether any header name or value contained `cp_` (a Chokepoint key leaking upstream). */
  sawAgentKey: boolean
  /** The merged behaviour this request was answered with. */
  behaviour: FakeBehaviour
  /** completed: answer fully written; aborted: the client went away first; dropped: the fake cut it (drop); closed: cut by close(). */
  outcome: FakeOutcome
  /** HTTP status sent (null when no headers were sent). */
  status: number | null
}

export interface FakeLlm {
  /** Base URL without the `/v1`, e.g. `http://127.0.0.1:40123` (an upstream `base_url`). */
  readonly url: string
  /** The key the fake expects. */
  readonly apiKey: string
  /** The behaviour applied to every request; assign to change it. */
  behaviour: FakeBehaviour
  /** Queues a behaviour for the next chat/embeddings request (FIFO, one request per entry). */
  once(behaviour: FakeBehaviour): void
  /** Every request received, in arrival order. */
  readonly requests: FakeRequest[]
  /** Requests whose client went away before the answer was completely written. */
  readonly aborted: number
  /** Requests the fake cut itself (drop). */
  readonly dropped: number
  /** Requests received whose response has not closed yet. */
  readonly inFlight: number
  /** Whether any request so far had a header containing `cp_`. */
  readonly sawAgentKey: boolean
  /** Resolves once `n` requests have arrived (rejects after `timeoutMs`, default 5000). */
  waitForRequests(n: number, timeoutMs?: number): Promise<FakeRequest[]>
  /** Resolves once no request is in flight (rejects after `timeoutMs`, default 5000). */
  waitForIdle(timeoutMs?: number): Promise<void>
  /** Forgets requests and counters, empties the once() queue and sets behaviour to {}. */
  reset(): void
  /** Stops the server and destroys open connections (hanging requests count as `closed`, not aborted). */
  close(): Promise<void>
}

/** The default provider key. */
export const FAKE_LLM_KEY = 'sk-fake-llm-0123456789abcdef'

/** chat prompt_tokens: ceil(JSON.stringify(messages).length / 4). */
export function promptTokensOf(messages: unknown): number {
  return Math.ceil((JSON.stringify(messages) ?? '').length / 4)
}

/** embeddings prompt_tokens: ceil(JSON.stringify(input).length / 4). */
export function embeddingTokensOf(input: unknown): number {
  return Math.ceil((JSON.stringify(input) ?? '').length / 4)
}

/** Parses `slow=200,no_usage,drop=3,status=429,over_cap=5,hang,stall=2`. Unknown names throw. */
export function parseBehaviour(spec: string): FakeBehaviour {
  const out: FakeBehaviour = {}
  for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [name, raw] = part.split('=', 2) as [string, string | undefined]
    const n = raw === undefined ? undefined : Number(raw)
    if (n !== undefined && !Number.isFinite(n)) throw new Error(`fake-llm: ${name}=${raw} is not a number`)
    switch (name) {
      case 'slow':
        out.slow = n ?? 1000
        break
      case 'no_usage':
        out.no_usage = true
        break
      case 'drop':
        out.drop = n ?? 1
        break
      case 'stall':
        out.stall = n ?? 1
        break
      case 'status':
        out.status = n ?? 500
        break
      case 'over_cap':
        out.over_cap = n ?? 10
        break
      case 'hang':
        out.hang = true
        break
      case 'deltas':
        out.deltas = n ?? 1
        break
      case 'failed':
        out.failed = true
        break
      default:
        throw new Error(`fake-llm: unknown behaviour "${name}"`)
    }
  }
  return out
}

function openAiError(message: string, type: string, code: string | null, param: string | null = null): string {
  return JSON.stringify({ error: { message, type, param, code } })
}

const ERRORS: Record<number, { message: string; type: string; code: string | null }> = {
  400: { message: 'Bad request.', type: 'invalid_request_error', code: null },
  401: { message: 'Incorrect API key provided.', type: 'invalid_request_error', code: 'invalid_api_key' },
  404: { message: 'Not found.', type: 'invalid_request_error', code: null },
  429: { message: 'Rate limit reached for requests. Please try again in 7s.', type: 'requests', code: 'rate_limit_exceeded' },
  500: { message: 'The server had an error while processing your request. Sorry about that!', type: 'server_error', code: null },
  503: { message: 'The engine is currently overloaded, please try again later.', type: 'server_error', code: null },
}

const ANTHROPIC_ERRORS: Record<number, { type: string; message: string }> = {
  400: { type: 'invalid_request_error', message: 'Bad request.' },
  401: { type: 'authentication_error', message: 'invalid x-api-key' },
  404: { type: 'not_found_error', message: 'Not found.' },
  429: { type: 'rate_limit_error', message: 'Number of request tokens has exceeded your per-minute rate limit.' },
  500: { type: 'api_error', message: 'Internal server error' },
  529: { type: 'overloaded_error', message: 'Overloaded' },
}

function hasAgentKey(headers: http.IncomingHttpHeaders): boolean {
  for (const [name, value] of Object.entries(headers)) {
    if (name.includes('cp_')) return true
    const values = Array.isArray(value) ? value : [value ?? '']
    if (values.some((v) => v.includes('cp_'))) return true
  }
  return false
}

/** A deterministic unit-ish vector for `text`. */
function embeddingOf(text: string, dims: number): number[] {
  let h = 2166136261
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619) >>> 0
  const out: number[] = []
  for (let i = 0; i < dims; i++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) >>> 0
    out.push(Math.round(((h % 2000) / 1000 - 1) * 1e6) / 1e6)
  }
  return out
}

function toBase64(vector: number[]): string {
  return Buffer.from(new Float32Array(vector).buffer).toString('base64')
}

class Gone extends Error {}

export async function startFakeLlm(options: FakeLlmOptions = {}): Promise<FakeLlm> {
  const apiKey = options.apiKey ?? FAKE_LLM_KEY
  const models = options.models ?? ['fake-model']
  const completionTokens = options.completionTokens ?? 20
  const cachedTokens = options.cachedTokens ?? 0
  const cacheCreationTokens = options.cacheCreationTokens ?? 0
  const chunkCount = options.chunks ?? 5
  const chunkDelayMs = options.chunkDelayMs ?? 0
  const dims = options.embeddingDimensions ?? 8

  let behaviour: FakeBehaviour = { ...(options.behaviour ?? {}) }
  let queue: FakeBehaviour[] = []
  let requests: FakeRequest[] = []
  let aborted = 0
  let dropped = 0
  let inFlight = 0
  let closing = false
  let seq = 0
  const waiters = new Set<() => void>()
  const notify = () => {
    for (const w of [...waiters]) w()
  }

  const server = http.createServer((req, res) => {
    inFlight += 1
    let record: FakeRequest | null = null
    let cutByUs = false
    const timers = new Set<NodeJS.Timeout>()
    let onGone: (() => void) | null = null
    res.on('close', () => {
      inFlight -= 1
      for (const t of timers) clearTimeout(t)
      if (!res.writableFinished) {
        if (cutByUs) {
          dropped += 1
          if (record) record.outcome = 'dropped'
        } else if (closing) {
          if (record) record.outcome = 'closed'
        } else {
          aborted += 1
          if (record) record.outcome = 'aborted'
        }
      } else if (record) {
        record.outcome = 'completed'
      }
      onGone?.()
      notify()
    })

    /** Resolves after `ms`; rejects with Gone when the response closes first. */
    const wait = (ms: number) =>
      new Promise<void>((resolve, reject) => {
        if (res.destroyed || res.writableEnded) return reject(new Gone())
        const t = setTimeout(() => {
          timers.delete(t)
          onGone = null
          resolve()
        }, ms)
        timers.add(t)
        onGone = () => {
          clearTimeout(t)
          reject(new Gone())
        }
      })
    const head = (status: number, headers: http.OutgoingHttpHeaders) => {
      if (record) record.status = status
      res.writeHead(status, headers)
    }
    const json = (status: number, body: string, extra: http.OutgoingHttpHeaders = {}) => {
      head(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...extra })
      res.end(body)
    }
    const fail = (status: number, message?: string, code?: string | null, param?: string | null) => {
      const e = ERRORS[status] ?? { message: `HTTP ${status}`, type: 'server_error', code: null }
      json(status, openAiError(message ?? e.message, e.type, code === undefined ? e.code : code, param ?? null), status === 429 ? { 'retry-after': '7' } : {})
    }
    const write = (text: string) =>
      new Promise<void>((resolve, reject) => {
        if (res.destroyed) return reject(new Gone())
        res.write(text, (error) => (error ? reject(new Gone()) : resolve()))
      })
    const cut = () => {
      cutByUs = true
      res.socket?.destroy()
      req.socket.destroy()
    }

    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      let body: unknown = undefined
      let badJson = false
      if (text.length) {
        try {
          body = JSON.parse(text)
        } catch {
          body = text
          badJson = true
        }
      }
      const path = (req.url ?? '/').split('?')[0] ?? '/'
      const anthropic = path === '/v1/messages' || req.headers['anthropic-version'] !== undefined
      const authorized = anthropic ? req.headers['x-api-key'] === apiKey : req.headers.authorization === `Bearer ${apiKey}`
      record = {
        method: req.method ?? 'GET',
        path,
        headers: req.headers,
        body,
        at: Date.now(),
        authorized,
        anthropic,
        sawAgentKey: hasAgentKey(req.headers),
        behaviour: {},
        outcome: 'pending',
        status: null,
      }
      requests.push(record)
      notify()
      handle(record, path, body, badJson).catch((error: unknown) => {
        if (error instanceof Gone) return
        if (!res.headersSent) fail(500, `fake-llm: ${String(error)}`)
        else res.destroy()
      })
    })

    async function handle(rec: FakeRequest, path: string, body: unknown, badJson: boolean): Promise<void> {
      if (rec.anthropic) return handleAnthropic(rec, path, body, badJson)
      if (!rec.authorized) {
        const shown = req.headers.authorization ? String(req.headers.authorization).replace(/^Bearer\s+/i, '').slice(0, 6) : ''
        return fail(401, req.headers.authorization ? `Incorrect API key provided: ${shown}****. You can find your API key at https://platform.openai.com/account/api-keys.` : "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", req.headers.authorization ? 'invalid_api_key' : null)
      }
      const route = `${req.method} ${path}`
      const known = ['POST /v1/chat/completions', 'POST /v1/embeddings', 'POST /v1/responses', 'GET /v1/models']
      if (!known.includes(route)) return fail(404, `Invalid URL (${req.method} ${path})`, null)

      const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>
      const rawModel = typeof b['model'] === 'string' ? b['model'] : ''
      const at = rawModel.indexOf('@')
      const model = at === -1 ? rawModel : rawModel.slice(0, at)
      let merged: FakeBehaviour
      try {
        merged = {
          ...behaviour,
          ...(route !== 'GET /v1/models' ? (queue.shift() ?? {}) : {}),
          ...parseBehaviour(String(req.headers['x-fake-behaviour'] ?? '')),
          ...(at === -1 ? {} : parseBehaviour(rawModel.slice(at + 1))),
        }
      } catch (error) {
        return fail(400, (error as Error).message)
      }
      rec.behaviour = merged

      if (merged.hang) return // never answers; 'close' does the bookkeeping
      if (merged.slow) await wait(merged.slow)
      if (merged.status) return fail(merged.status)

      if (route === 'GET /v1/models') {
        return json(200, JSON.stringify({ object: 'list', data: models.map((id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'fake-llm' })) }))
      }
      if (badJson) return fail(400, 'We could not parse the JSON body of your request.')
      if (!models.includes(model)) {
        return fail(404, `The model \`${rawModel}\` does not exist or you do not have access to it.`, 'model_not_found', 'model')
      }

      if (route === 'POST /v1/embeddings') {
        const input = b['input']
        if (input === undefined) return fail(400, "Missing required parameter: 'input'.", 'missing_required_parameter', 'input')
        const inputs = Array.isArray(input) && input.length > 0 && typeof input[0] !== 'number' ? (input as unknown[]) : [input]
        const base64 = b['encoding_format'] === 'base64'
        const tokens = embeddingTokensOf(input)
        const out = JSON.stringify({
          object: 'list',
          data: inputs.map((item, index) => {
            const vector = embeddingOf(JSON.stringify(item) ?? '', dims)
            return { object: 'embedding', index, embedding: base64 ? toBase64(vector) : vector }
          }),
          model,
          ...(merged.no_usage ? {} : { usage: { prompt_tokens: tokens, total_tokens: tokens } }),
        })
        if (merged.drop !== undefined) return dropBody(out)
        return json(200, out)
      }

      if (route === 'POST /v1/responses') return responses(b, model, merged)

      // chat completions
      const messages = b['messages']
      if (!Array.isArray(messages)) return fail(400, "Missing required parameter: 'messages'.", 'missing_required_parameter', 'messages')
      const capRaw = b['max_completion_tokens'] ?? b['max_tokens']
      const cap = typeof capRaw === 'number' ? capRaw : null
      const promptTokens = promptTokensOf(messages)
      const completion =
        merged.over_cap !== undefined ? (cap ?? completionTokens) + merged.over_cap : cap === null ? completionTokens : Math.min(cap, completionTokens)
      const finish = cap !== null && cap < completionTokens ? 'length' : 'stop'
      const usage = {
        prompt_tokens: promptTokens,
        completion_tokens: completion,
        total_tokens: promptTokens + completion,
        prompt_tokens_details: { cached_tokens: Math.min(cachedTokens, promptTokens), audio_tokens: 0 },
        completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
      }
      const id = `chatcmpl-fake${++seq}`
      const created = Math.floor(Date.now() / 1000)

      if (b['stream'] !== true) {
        const content = Array.from({ length: Math.max(1, Math.min(completion, 200)) }, (_, i) => `w${i}`).join(' ')
        const out = JSON.stringify({
          id,
          object: 'chat.completion',
          created,
          model,
          system_fingerprint: 'fp_fake',
          choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: finish }],
          ...(merged.no_usage ? {} : { usage }),
        })
        if (merged.drop !== undefined) return dropBody(out)
        return json(200, out)
      }

      const streamOptions = b['stream_options']
      const includeUsage =
        !!streamOptions && typeof streamOptions === 'object' && (streamOptions as Record<string, unknown>)['include_usage'] === true && !merged.no_usage
      head(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
      res.flushHeaders()
      const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
        `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: 'fp_fake', choices, ...extra })}\n\n`
      for (let i = 0; i < chunkCount; i++) {
        if (merged.drop !== undefined && i >= merged.drop) return cut()
        if (merged.stall !== undefined && i >= merged.stall) return
        if (i > 0 && chunkDelayMs > 0) await wait(chunkDelayMs)
        const last = i === chunkCount - 1
        const delta = i === 0 ? { role: 'assistant', content: `c${i} ` } : { content: `c${i} ` }
        await write(chunk([{ index: 0, delta, logprobs: null, finish_reason: last ? finish : null }], includeUsage ? { usage: null } : {}))
      }
      if (merged.drop !== undefined) return cut()
      if (merged.stall !== undefined) return
      if (includeUsage) await write(chunk([], { usage }))
      await write('data: [DONE]\n\n')
      res.end()
    }

    /** Events of an SSE stream with `event:` names (Responses, Anthropic): drop/stall apply per content chunk. */
    async function typedStream(events: { before: unknown[]; chunk: (i: number) => unknown[]; after: () => unknown[] }, merged: FakeBehaviour): Promise<void> {
      head(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
      res.flushHeaders()
      const send = async (list: unknown[]) => {
        for (const e of list) await write(`event: ${(e as { type: string }).type}\ndata: ${JSON.stringify(e)}\n\n`)
      }
      await send(events.before)
      for (let i = 0; i < chunkCount; i++) {
        if (merged.drop !== undefined && i >= merged.drop) return cut()
        if (merged.stall !== undefined && i >= merged.stall) return
        if (i > 0 && chunkDelayMs > 0) await wait(chunkDelayMs)
        await send(events.chunk(i))
      }
      if (merged.drop !== undefined) return cut()
      if (merged.stall !== undefined) return
      await send(events.after())
      res.end()
    }

    /** POST /v1/responses (OpenAI Responses API). */
    async function responses(b: Record<string, unknown>, model: string, merged: FakeBehaviour): Promise<void> {
      const input = b['input']
      if (input === undefined) return fail(400, "Missing required parameter: 'input'.", 'missing_required_parameter', 'input')
      const cap = typeof b['max_output_tokens'] === 'number' ? b['max_output_tokens'] : null
      const inputTokens = promptTokensOf(input)
      const output = merged.over_cap !== undefined ? (cap ?? completionTokens) + merged.over_cap : cap === null ? completionTokens : Math.min(cap, completionTokens)
      const capped = cap !== null && cap < completionTokens
      const usage = merged.no_usage
        ? null
        : {
            input_tokens: inputTokens,
            input_tokens_details: { cached_tokens: Math.min(cachedTokens, inputTokens) },
            output_tokens: output,
            output_tokens_details: { reasoning_tokens: 0 },
            total_tokens: inputTokens + output,
          }
      const id = `resp_fake${++seq}`
      const msgId = `msg_fake${seq}`
      const created_at = Math.floor(Date.now() / 1000)
      const status = merged.failed ? 'failed' : capped ? 'incomplete' : 'completed'
      const text = (n: number) => Array.from({ length: n }, (_, i) => `c${i} `).join('')
      const message = (content: string, state: string) => ({
        type: 'message',
        id: msgId,
        status: state,
        role: 'assistant',
        content: content === '' && state === 'in_progress' ? [] : [{ type: 'output_text', text: content, annotations: [], logprobs: [] }],
      })
      const response = (state: string, out: unknown[], u: unknown) => ({
        id,
        object: 'response',
        created_at,
        status: state,
        error: state === 'failed' ? { code: 'server_error', message: 'The model failed mid-answer.' } : null,
        incomplete_details: state === 'incomplete' ? { reason: 'max_output_tokens' } : null,
        instructions: b['instructions'] ?? null,
        max_output_tokens: cap,
        model,
        output: out,
        parallel_tool_calls: true,
        temperature: 1,
        tool_choice: 'auto',
        tools: [],
        top_p: 1,
        text: { format: { type: 'text' } },
        truncation: 'disabled',
        usage: u,
        metadata: {},
      })
      if (b['stream'] !== true) {
        const words = Array.from({ length: Math.max(1, Math.min(output, 200)) }, (_, i) => `w${i}`).join(' ')
        const out = JSON.stringify(response(status, [message(words, status === 'completed' ? 'completed' : 'incomplete')], usage))
        if (merged.drop !== undefined) return dropBody(out)
        return json(200, out, { 'x-request-id': `req_fake${seq}` })
      }
      let n = 0
      const ev = (type: string, rest: Record<string, unknown>) => ({ type, sequence_number: n++, ...rest })
      const finalType = merged.failed ? 'response.failed' : capped ? 'response.incomplete' : 'response.completed'
      return typedStream(
        {
          before: [
            ev('response.created', { response: response('in_progress', [], null) }),
            ev('response.in_progress', { response: response('in_progress', [], null) }),
            ev('response.output_item.added', { output_index: 0, item: message('', 'in_progress') }),
            ev('response.content_part.added', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }),
          ],
          chunk: (i) => [ev('response.output_text.delta', { item_id: msgId, output_index: 0, content_index: 0, delta: `c${i} `, logprobs: [] })],
          after: () => [
            ev('response.output_text.done', { item_id: msgId, output_index: 0, content_index: 0, text: text(chunkCount), logprobs: [] }),
            ev('response.content_part.done', { item_id: msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: text(chunkCount), annotations: [] } }),
            ev('response.output_item.done', { output_index: 0, item: message(text(chunkCount), 'completed') }),
            ev(finalType, { response: response(status, [message(text(chunkCount), 'completed')], usage) }),
          ],
        },
        merged,
      )
    }

    /** Anthropic requests: POST /v1/messages, GET /v1/models (with anthropic-version). */
    async function handleAnthropic(rec: FakeRequest, path: string, body: unknown, badJson: boolean): Promise<void> {
      const requestId = `req_fake${++seq}`
      const afail = (status: number, message?: string) => {
        const e = ANTHROPIC_ERRORS[status] ?? { type: 'api_error', message: `HTTP ${status}` }
        json(status, JSON.stringify({ type: 'error', error: { type: e.type, message: message ?? e.message }, request_id: requestId }), {
          'request-id': requestId,
          ...(status === 429 ? { 'retry-after': '7' } : {}),
        })
      }
      if (!rec.authorized) return afail(401, req.headers['x-api-key'] ? 'invalid x-api-key' : 'x-api-key header is required')
      const route = `${req.method} ${path}`
      if (route !== 'POST /v1/messages' && route !== 'GET /v1/models') return afail(404, `Not found: ${req.method} ${path}`)
      if (req.headers['anthropic-version'] === undefined) return afail(400, 'anthropic-version: header is required')
      const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>
      const rawModel = typeof b['model'] === 'string' ? b['model'] : ''
      const at = rawModel.indexOf('@')
      const model = at === -1 ? rawModel : rawModel.slice(0, at)
      let merged: FakeBehaviour
      try {
        merged = {
          ...behaviour,
          ...(route === 'POST /v1/messages' ? (queue.shift() ?? {}) : {}),
          ...parseBehaviour(String(req.headers['x-fake-behaviour'] ?? '')),
          ...(at === -1 ? {} : parseBehaviour(rawModel.slice(at + 1))),
        }
      } catch (error) {
        return afail(400, (error as Error).message)
      }
      rec.behaviour = merged
      if (merged.hang) return
      if (merged.slow) await wait(merged.slow)
      if (merged.status) return afail(merged.status)
      if (route === 'GET /v1/models') {
        const data = models.map((id) => ({ type: 'model', id, display_name: id, created_at: '2025-01-01T00:00:00Z' }))
        return json(200, JSON.stringify({ data, has_more: false, first_id: models[0] ?? null, last_id: models.at(-1) ?? null }))
      }
      if (badJson) return afail(400, 'There was an issue with the format of the request body: invalid JSON.')
      if (!models.includes(model)) return afail(404, `model: ${rawModel}`)
      const messages = b['messages']
      if (!Array.isArray(messages)) return afail(400, 'messages: Field required')
      const cap = b['max_tokens']
      if (typeof cap !== 'number') return afail(400, 'max_tokens: Field required')
      const inputTokens = promptTokensOf(messages)
      const output = merged.over_cap !== undefined ? cap + merged.over_cap : Math.min(cap, completionTokens)
      const stop = cap < completionTokens && merged.over_cap === undefined ? 'max_tokens' : 'end_turn'
      const inputUsage = { input_tokens: inputTokens, cache_creation_input_tokens: cacheCreationTokens, cache_read_input_tokens: cachedTokens }
      const id = `msg_fake${seq}`
      const message = (content: unknown[], stopReason: string | null, usage: Record<string, unknown> | null) => ({
        id,
        type: 'message',
        role: 'assistant',
        model,
        content,
        stop_reason: stopReason,
        stop_sequence: null,
        ...(usage ? { usage } : {}),
      })
      if (b['stream'] !== true) {
        const words = Array.from({ length: Math.max(1, Math.min(output, 200)) }, (_, i) => `w${i}`).join(' ')
        const out = JSON.stringify(message([{ type: 'text', text: words }], stop, merged.no_usage ? null : { ...inputUsage, output_tokens: output, service_tier: 'standard' }))
        if (merged.drop !== undefined) return dropBody(out)
        return json(200, out, { 'request-id': requestId, 'anthropic-ratelimit-requests-remaining': '99' })
      }
      const deltas = Math.max(1, merged.deltas ?? 1)
      return typedStream(
        {
          before: [
            { type: 'message_start', message: message([], null, merged.no_usage ? null : { ...inputUsage, output_tokens: 1 }) },
            { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
            { type: 'ping' },
          ],
          chunk: (i) => [{ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `c${i} ` } }],
          after: () => [
            { type: 'content_block_stop', index: 0 },
            ...Array.from({ length: deltas }, (_, k) => ({
              type: 'message_delta',
              delta: k === deltas - 1 ? { stop_reason: stop, stop_sequence: null } : { stop_reason: null, stop_sequence: null },
              ...(merged.no_usage ? {} : { usage: { ...inputUsage, output_tokens: k === deltas - 1 ? output : Math.floor((output * (k + 1)) / deltas) } }),
            })),
            { type: 'message_stop' },
          ],
        },
        merged,
      )
    }

    /** Headers and half of `body`, then the socket is destroyed. */
    async function dropBody(body: string): Promise<void> {
      head(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      await write(body.slice(0, Math.floor(body.length / 2)))
      cut()
    }
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const { port } = server.address() as AddressInfo

  const until = (predicate: () => boolean, timeoutMs: number, what: string) =>
    new Promise<void>((resolve, reject) => {
      if (predicate()) return resolve()
      const check = () => {
        if (!predicate()) return
        waiters.delete(check)
        clearTimeout(timer)
        resolve()
      }
      const timer = setTimeout(() => {
        waiters.delete(check)
        reject(new Error(`fake-llm: timed out after ${timeoutMs} ms waiting for ${what}`))
      }, timeoutMs)
      waiters.add(check)
    })

  return {
    url: `http://127.0.0.1:${port}`,
    apiKey,
    get behaviour() {
      return behaviour
    },
    set behaviour(value: FakeBehaviour) {
      behaviour = { ...value }
    },
    once(b: FakeBehaviour) {
      queue.push({ ...b })
    },
    get requests() {
      return requests
    },
    get aborted() {
      return aborted
    },
    get dropped() {
      return dropped
    },
    get inFlight() {
      return inFlight
    },
    get sawAgentKey() {
      return requests.some((r) => r.sawAgentKey)
    },
    async waitForRequests(n: number, timeoutMs = 5_000) {
      await until(() => requests.length >= n, timeoutMs, `${n} request(s) (have ${requests.length})`)
      return requests
    },
    waitForIdle(timeoutMs = 5_000) {
      return until(() => inFlight === 0, timeoutMs, `no request in flight (have ${inFlight})`)
    },
    reset() {
      requests = []
      queue = []
      behaviour = {}
      aborted = 0
      dropped = 0
    },
    async close() {
      closing = true
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    },
  }
}
