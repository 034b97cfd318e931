import type { TokenUsage } from './pricing.js'
import { SseReader, count } from './sse.js'

/** The OpenAI-kind endpoints the gateway meters; any other path under /llm/ is a 404. */
export type OpenAiEndpoint = 'chat' | 'embeddings' | 'responses'

export interface ShapedRequest {
  /** What is sent upstream. */
  body: Record<string, unknown>
  /** The output cap that bounds the charge (the request's, or the model's, injected). */
  output_cap: number
  choices: number
  stream: boolean
  /** Streaming chat: the client did not ask for the usage chunk (it is hidden from it). */
  hide_usage_chunk: boolean
  /** Input that bytes do not bound (images, audio, files): reserved at the whole window. */
  opaque_input: boolean
}

const NON_TEXT_PARTS = new Set(['image_url', 'input_audio', 'file', 'input_image', 'input_file'])

/** Any message content part that is not text makes the input size unknowable from bytes. */
function hasOpaqueInput(messages: unknown): boolean {
  if (!Array.isArray(messages)) return false
  return messages.some(
    (m) =>
      Array.isArray((m as { content?: unknown })?.content) &&
      ((m as { content: unknown[] }).content as { type?: unknown }[]).some((p) => typeof p?.type === 'string' && NON_TEXT_PARTS.has(p.type)),
  )
}

/**
 * Shapes a request so that its cost is bounded: the output cap is the request's
 * `max_completion_tokens` (or legacy `max_tokens`), at most the model's `max_output_tokens`,
 * injected when absent so the provider enforces it; streamed chat always asks for the usage chunk.
 */
export function shapeOpenAi(endpoint: OpenAiEndpoint, input: Record<string, unknown>, maxOutput: number): ShapedRequest {
  if (endpoint === 'responses') return shapeResponses(input, maxOutput)
  const body: Record<string, unknown> = { ...input }
  if (endpoint === 'embeddings') {
    return { body, output_cap: 0, choices: 1, stream: false, hide_usage_chunk: false, opaque_input: false }
  }
  const asked = [body['max_completion_tokens'], body['max_tokens']].find((v) => typeof v === 'number' && Number.isInteger(v) && v > 0) as number | undefined
  const cap = Math.min(asked ?? maxOutput, maxOutput)
  if (body['max_tokens'] !== undefined && body['max_completion_tokens'] === undefined) body['max_tokens'] = cap
  else body['max_completion_tokens'] = cap
  const n = typeof body['n'] === 'number' && Number.isInteger(body['n']) && body['n'] > 0 ? body['n'] : 1
  const stream = body['stream'] === true
  let hide = false
  if (stream) {
    const options = (typeof body['stream_options'] === 'object' && body['stream_options'] !== null ? body['stream_options'] : {}) as Record<string, unknown>
    hide = options['include_usage'] !== true
    body['stream_options'] = { ...options, include_usage: true }
  }
  return { body, output_cap: cap, choices: n, stream, hide_usage_chunk: hide, opaque_input: hasOpaqueInput(body['messages']) }
}

/** `usage` of a chat completion, a usage chunk or an embeddings answer, or null when absent. */
export function openAiUsage(json: unknown): TokenUsage | null {
  const u = (json as { usage?: Record<string, unknown> | null } | null)?.usage
  if (!u || typeof u !== 'object') return null
  const input = typeof u['prompt_tokens'] === 'number' ? u['prompt_tokens'] : null
  if (input === null) return null
  const output = typeof u['completion_tokens'] === 'number' ? u['completion_tokens'] : 0
  const details = u['prompt_tokens_details'] as { cached_tokens?: unknown } | undefined
  const cached = typeof details?.cached_tokens === 'number' ? details.cached_tokens : 0
  return { input_tokens: input, output_tokens: output, cached_input_tokens: cached }
}

/**
 * Reads an OpenAI chat completions stream as it passes: finds the usage chunk and tells which
 * frames to forward (the usage-only chunk is dropped when the client did not ask for it).
 */
export class OpenAiStreamReader extends SseReader {
  constructor(private readonly hideUsage: boolean) {
    super()
  }

  killFrame(message: string, requestId: string): string {
    return `data: ${JSON.stringify({ error: { code: 'agent_killed', type: 'agent_killed', message, request_id: requestId } })}\n\n`
  }

  protected frame(frame: string, _event: string | null, json: unknown): string {
    const usage = openAiUsage(json)
    if (usage) this.usage = usage
    const choices = (json as { choices?: unknown[] }).choices
    if (usage && this.hideUsage && Array.isArray(choices) && choices.length === 0) return ''
    return frame
  }
}

/** Built-in tools of the Responses API whose results the provider adds to the input (not bounded by the body's bytes). */
const CLIENT_TOOLS = new Set(['function', 'custom'])

/** Any part of a Responses `input` that is not text (images, files, audio). */
function hasOpaqueParts(value: unknown, depth = 0): boolean {
  if (depth > 8 || value === null || typeof value !== 'object') return false
  if (Array.isArray(value)) return value.some((v) => hasOpaqueParts(v, depth + 1))
  const type = (value as { type?: unknown }).type
  if (typeof type === 'string' && NON_TEXT_PARTS.has(type)) return true
  return hasOpaqueParts((value as { content?: unknown }).content, depth + 1)
}

/**
 * Shapes a Responses API request: the output cap is `max_output_tokens` (reasoning included), at
 * most the model's, injected when absent. Its input is bounded by the body's bytes only when
 * everything the model reads is in the body: state kept by the provider (`previous_response_id`,
 * `conversation`, a stored `prompt`), non-text parts and built-in tools (web or file search,
 * code interpreter, MCP…) reserve the whole input window.
 */
export function shapeResponses(input: Record<string, unknown>, maxOutput: number): ShapedRequest {
  const body: Record<string, unknown> = { ...input }
  const asked = body['max_output_tokens']
  const cap = typeof asked === 'number' && Number.isInteger(asked) && asked > 0 ? Math.min(asked, maxOutput) : maxOutput
  body['max_output_tokens'] = cap
  const tools = Array.isArray(body['tools']) ? (body['tools'] as { type?: unknown }[]) : []
  const opaque =
    (body['previous_response_id'] !== undefined && body['previous_response_id'] !== null) ||
    (body['conversation'] !== undefined && body['conversation'] !== null) ||
    (body['prompt'] !== undefined && body['prompt'] !== null) ||
    tools.some((t) => typeof t?.type !== 'string' || !CLIENT_TOOLS.has(t.type)) ||
    hasOpaqueParts(body['input'])
  return { body, output_cap: cap, choices: 1, stream: body['stream'] === true, hide_usage_chunk: false, opaque_input: opaque }
}

/** `usage` of a Responses `response` object (`input_tokens`, `output_tokens`, `input_tokens_details.cached_tokens`). */
export function responsesUsage(response: unknown): TokenUsage | null {
  const u = (response as { usage?: Record<string, unknown> | null } | null)?.usage
  if (!u || typeof u !== 'object') return null
  const input = count(u['input_tokens'])
  const output = count(u['output_tokens'])
  if (input === null || output === null) return null
  const cached = count((u['input_tokens_details'] as { cached_tokens?: unknown } | undefined)?.cached_tokens) ?? 0
  return { input_tokens: input, output_tokens: output, cached_input_tokens: cached }
}

/** The events of a Responses stream that end it carrying the final `response` (and its usage). */
const FINAL_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed'])

/**
 * Reads a Responses API stream: the usage is the final event's (`response.completed`,
 * `.incomplete` or `.failed`); a kill ends it with an `error` event numbered after the last one.
 */
export class ResponsesStreamReader extends SseReader {
  #sequence = -1

  killFrame(message: string, requestId: string): string {
    const data = { type: 'error', code: 'agent_killed', message, param: null, sequence_number: this.#sequence + 1, request_id: requestId }
    return `event: error\ndata: ${JSON.stringify(data)}\n\n`
  }

  protected frame(frame: string, _event: string | null, json: unknown): string {
    const e = json as { type?: unknown; sequence_number?: unknown; response?: unknown }
    const seq = count(e.sequence_number)
    if (seq !== null && seq > this.#sequence) this.#sequence = seq
    if (typeof e.type === 'string' && FINAL_EVENTS.has(e.type)) {
      const usage = responsesUsage(e.response)
      if (usage) this.usage = usage
    }
    return frame
  }
}
