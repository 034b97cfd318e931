import type { TokenUsage } from './pricing.js'

/** The OpenAI-kind endpoints the gateway meters; any other path under /llm/ is a 404. */
export type OpenAiEndpoint = 'chat' | 'embeddings'

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
 * Reads an OpenAI server-sent-event stream as it passes: finds the usage chunk and tells which
 * frames to forward (the usage-only chunk is dropped when the client did not ask for it).
 * Frames are separated by a blank line; a frame split across reads is kept until complete.
 */
export class OpenAiStreamReader {
  usage: TokenUsage | null = null
  #pending = ''

  constructor(private readonly hideUsage: boolean) {}

  /** The text to forward for this piece of the upstream body. */
  push(text: string): string {
    this.#pending += text
    let out = ''
    for (;;) {
      const end = this.#pending.search(/\r?\n\r?\n/)
      if (end === -1) break
      const sep = /\r?\n\r?\n/.exec(this.#pending.slice(end)) as RegExpExecArray
      const frame = this.#pending.slice(0, end + sep[0].length)
      this.#pending = this.#pending.slice(end + sep[0].length)
      out += this.#frame(frame)
    }
    return out
  }

  /** Whatever is left at the end of the stream (an unterminated last frame). */
  flush(): string {
    const rest = this.#pending
    this.#pending = ''
    return rest === '' ? '' : this.#frame(rest)
  }

  #frame(frame: string): string {
    const data = frame
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart())
      .join('\n')
    if (data === '' || data === '[DONE]') return frame
    let json: unknown
    try {
      json = JSON.parse(data)
    } catch {
      return frame
    }
    const usage = openAiUsage(json)
    if (usage) this.usage = usage
    const choices = (json as { choices?: unknown[] }).choices
    if (usage && this.hideUsage && Array.isArray(choices) && choices.length === 0) return ''
    return frame
  }
}
