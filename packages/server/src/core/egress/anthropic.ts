import type { TokenUsage } from './pricing.js'
import type { ShapedRequest } from './openai.js'
import { SseReader, count } from './sse.js'

/** Content blocks whose size bytes do not bound (images, PDFs and other documents). */
const OPAQUE_BLOCKS = new Set(['image', 'document', 'container_upload', 'search_result'])

function hasOpaqueBlocks(value: unknown, depth = 0): boolean {
  if (depth > 8 || value === null || typeof value !== 'object') return false
  if (Array.isArray(value)) return value.some((v) => hasOpaqueBlocks(v, depth + 1))
  const type = (value as { type?: unknown }).type
  if (typeof type === 'string' && OPAQUE_BLOCKS.has(type)) return true
  return hasOpaqueBlocks((value as { content?: unknown }).content, depth + 1)
}

/**
 * Shapes an Anthropic Messages request: the output cap is the request's `max_tokens`, clamped
 * to the model's `max_output_tokens` (injected when absent, so the provider always enforces the
 * bound the reservation assumed). Input is bounded by the body's bytes unless something the
 * model reads is not in the body: images or documents, server tools (web search or fetch, code
 * execution: their results are input), `mcp_servers` or a `container`; those reserve the whole
 * input window.
 */
export function shapeAnthropic(input: Record<string, unknown>, maxOutput: number): ShapedRequest {
  const body: Record<string, unknown> = { ...input }
  const asked = body['max_tokens']
  const cap = typeof asked === 'number' && Number.isInteger(asked) && asked > 0 ? Math.min(asked, maxOutput) : maxOutput
  body['max_tokens'] = cap
  const tools = Array.isArray(body['tools']) ? (body['tools'] as { type?: unknown }[]) : []
  const opaque =
    tools.some((t) => t?.type !== undefined && t.type !== null && t.type !== 'custom') ||
    (Array.isArray(body['mcp_servers']) && body['mcp_servers'].length > 0) ||
    (body['container'] !== undefined && body['container'] !== null) ||
    hasOpaqueBlocks(body['messages']) ||
    hasOpaqueBlocks(body['system'])
  return { body, output_cap: cap, choices: 1, stream: body['stream'] === true, hide_usage_chunk: false, opaque_input: opaque }
}

/**
 * Anthropic's `usage` in the gateway's terms: Anthropic counts `input_tokens` apart from cache
 * reads and writes, so input is their sum; the reads and the writes are priced at their rates.
 */
export function anthropicUsage(u: unknown): TokenUsage | null {
  if (!u || typeof u !== 'object') return null
  const o = u as Record<string, unknown>
  const input = count(o['input_tokens'])
  const output = count(o['output_tokens'])
  if (input === null || output === null) return null
  const read = count(o['cache_read_input_tokens']) ?? 0
  const created = count(o['cache_creation_input_tokens']) ?? 0
  return { input_tokens: input + read + created, output_tokens: output, cached_input_tokens: read, cache_creation_input_tokens: created }
}

/**
 * Reads an Anthropic Messages stream. `message_start` carries the input usage (and a first,
 * provisional output count); each `message_delta` carries the CUMULATIVE `output_tokens` (and,
 * on newer API versions, the input fields again): the last value of each field is kept, never
 * added. The usage counts as final only once a `message_delta` came; a stream cut before it is
 * charged its reservation.
 */
export class AnthropicStreamReader extends SseReader {
  #fields: Record<string, unknown> = {}
  #final = false

  killFrame(message: string, requestId: string): string {
    return `event: error\ndata: ${JSON.stringify({ type: 'error', error: { type: 'agent_killed', message }, request_id: requestId })}\n\n`
  }

  protected frame(frame: string, _event: string | null, json: unknown): string {
    const e = json as { type?: unknown; message?: { usage?: unknown }; usage?: unknown }
    let usage: unknown
    if (e.type === 'message_start') usage = e.message?.usage
    else if (e.type === 'message_delta') {
      usage = e.usage
      this.#final = true
    }
    if (usage && typeof usage === 'object') {
      for (const [k, v] of Object.entries(usage)) if (count(v) !== null) this.#fields[k] = v
    }
    if (this.#final) this.usage = anthropicUsage(this.#fields)
    return frame
  }
}
