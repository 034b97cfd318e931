import type { IncomingMessage, ServerResponse } from 'node:http'
import { z } from 'zod'
import { assertActsFor, type Principal } from '../../core/auth/principal.js'
import { egressCallView, type EgressService, type LlmUpstream } from '../../core/egress/egress-service.js'
import { AnthropicStreamReader, anthropicUsage, shapeAnthropic } from '../../core/egress/anthropic.js'
import { OpenAiStreamReader, ResponsesStreamReader, openAiUsage, responsesUsage, shapeOpenAi, type OpenAiEndpoint, type ShapedRequest } from '../../core/egress/openai.js'
import { usageMicro, worstCaseMicro, type TokenUsage } from '../../core/egress/pricing.js'
import type { SseReader } from '../../core/egress/sse.js'
import { GatewayError, isGatewayError } from '../../core/errors.js'
import { sendError, sendJson } from '../errors.js'
import { STREAMED, route, type Route } from '../router.js'
import type { Services } from '../services.js'

/** An OpenAI request body: `model` is required (it decides the price); the rest passes through. */
const OpenAiBody = z.looseObject({ model: z.string().min(1).max(256) })

const EgressCallsQuery = z.strictObject({
  agent: z.string().max(512).optional(),
  limit: z.coerce.number().int().min(1).max(500).optional(),
  after: z.string().max(64).optional(),
})

/** Upstream response headers a client may rely on (status, body and Retry-After pass unchanged). */
const PASS_HEADERS = ['content-type', 'retry-after', 'openai-processing-ms', 'openai-version', 'x-ratelimit-limit-requests', 'x-ratelimit-limit-tokens', 'x-ratelimit-remaining-requests', 'x-ratelimit-remaining-tokens', 'x-ratelimit-reset-requests', 'x-ratelimit-reset-tokens']
/** Anthropic's rate-limit headers all start with this; they pass too. */
const PASS_PREFIX = 'anthropic-ratelimit-'

/** One metered LLM endpoint: how its request is bounded, where it goes, how its usage is read. */
interface Protocol {
  /** `endpoint` of the egress call row. */
  endpoint: 'chat' | 'embeddings' | 'responses' | 'messages'
  /** Path under the upstream's base_url. */
  path: string
  shape(input: Record<string, unknown>, maxOutput: number): ShapedRequest
  /** Usage of a whole (non-streamed) answer. */
  usage(json: unknown): TokenUsage | null
  reader(shaped: ShapedRequest): SseReader
  /** Provider credentials and version headers sent upstream (never the agent's key). */
  headers(upstream: LlmUpstream, req: IncomingMessage): Record<string, string>
}

const bearer = (upstream: LlmUpstream): Record<string, string> => ({ authorization: `Bearer ${upstream.api_key}` })

const OPENAI: Record<OpenAiEndpoint, Protocol> = {
  chat: { endpoint: 'chat', path: '/v1/chat/completions', shape: (b, m) => shapeOpenAi('chat', b, m), usage: openAiUsage, reader: (sh) => new OpenAiStreamReader(sh.hide_usage_chunk), headers: bearer },
  embeddings: { endpoint: 'embeddings', path: '/v1/embeddings', shape: (b, m) => shapeOpenAi('embeddings', b, m), usage: openAiUsage, reader: (sh) => new OpenAiStreamReader(sh.hide_usage_chunk), headers: bearer },
  responses: {
    endpoint: 'responses',
    path: '/v1/responses',
    shape: (b, m) => shapeOpenAi('responses', b, m),
    usage: responsesUsage,
    reader: () => new ResponsesStreamReader(),
    headers: bearer,
  },
}

/** A request header value, if sent once and printable (passed through to Anthropic). */
function headerOf(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return typeof v === 'string' && /^[\x20-\x7e]{1,512}$/.test(v) ? v : undefined
}

const ANTHROPIC_MESSAGES: Protocol = {
  endpoint: 'messages',
  path: '/v1/messages',
  shape: shapeAnthropic,
  usage: (json) => anthropicUsage((json as { usage?: unknown } | null)?.usage),
  reader: () => new AnthropicStreamReader(),
  headers: (upstream, req) => {
    const beta = headerOf(req, 'anthropic-beta')
    return { 'x-api-key': upstream.api_key, 'anthropic-version': headerOf(req, 'anthropic-version') ?? upstream.anthropic_version, ...(beta ? { 'anthropic-beta': beta } : {}) }
  },
}

/** Provider SDKs read `error.type`; ours reads `error.code`: egress errors carry both. */
function withType(error: unknown): unknown {
  if (!isGatewayError(error)) return error
  return new GatewayError(error.code, error.message, {
    extra: { ...error.extra, type: error.code },
    ...(error.details ? { details: error.details } : {}),
    ...(error.headers ? { headers: error.headers } : {}),
  })
}

export function egressRoutes(s: Services & { egress: EgressService }): Route[] {
  // Each route serves one kind: the same path on an upstream of the other kind is a 404.
  const proxy = (kind: LlmUpstream['kind'], protocol: Protocol, summary: string): Route =>
    route<z.output<typeof OpenAiBody>>({
      method: 'POST',
      path: `/llm/:upstream${protocol.path}`,
      access: 'agent',
      tag: 'egress',
      summary,
      body: OpenAiBody,
      handler: async ({ params, body, principal, res, req, requestId }) => {
        try {
          await forward(s.egress, principal, s.egress.upstream(principal, params['upstream'] as string, [kind]), protocol, body, res, req, requestId)
        } catch (error) {
          throw withType(error)
        }
        return STREAMED
      },
    })
  return [
    proxy('openai', OPENAI.chat, 'OpenAI chat completions through the gateway (streaming or not), metered under the kill switch and cost ceilings'),
    proxy('openai', OPENAI.embeddings, 'OpenAI embeddings through the gateway, metered'),
    proxy('openai', OPENAI.responses, 'OpenAI Responses API through the gateway (streaming or not), metered under the kill switch and cost ceilings'),
    proxy('anthropic', ANTHROPIC_MESSAGES, 'Anthropic Messages API through the gateway (streaming or not), metered under the kill switch and cost ceilings'),
    route({
      method: 'GET',
      path: '/llm/:upstream/v1/models',
      access: 'agent',
      tag: 'egress',
      summary: "The priced models of an upstream (the ones the gateway lets through), in its provider's list shape",
      handler: async ({ params, principal, res }) => {
        try {
          const upstream = s.egress.upstream(principal, params['upstream'] as string, ['openai', 'anthropic'])
          const ids = [...upstream.models.keys()]
          if (upstream.kind === 'anthropic') {
            const data = ids.map((id) => ({ type: 'model', id, display_name: id, created_at: '1970-01-01T00:00:00Z' }))
            sendJson(res, 200, { data, has_more: false, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null })
          } else {
            sendJson(res, 200, { object: 'list', data: ids.map((id) => ({ id, object: 'model', created: 0, owned_by: upstream.id })) })
          }
        } catch (error) {
          throw withType(error)
        }
        return STREAMED
      },
    }),
    route<undefined, z.output<typeof EgressCallsQuery>>({
      method: 'GET',
      path: '/v1/egress/calls',
      access: 'agent_or_viewer',
      tag: 'egress',
      summary: 'Egress calls, newest first: upstream, model, reservation, cost, usage, state',
      query: EgressCallsQuery,
      handler: async ({ query, principal }) => {
        let addressId: string | null = principal.role === 'agent' ? principal.address_id : null
        if (query.agent !== undefined) {
          const agent = await s.agents.resolve(query.agent)
          assertActsFor(principal, agent.address_id, "read another agent's egress calls")
          addressId = agent.address_id
        }
        const rows = await s.egress.list(addressId, query.limit ?? 100, query.after ?? null)
        return { calls: rows.map(egressCallView), next_after: rows.length === (query.limit ?? 100) ? (rows.at(-1)?.call_id ?? null) : null }
      },
    }),
  ]
}

/**
 * One metered call: price → shape (bound the output) → reserve the worst case (admission) →
 * forward with the provider key → settle on real usage (else the reservation; 0 when the
 * upstream refused). A kill of the agent aborts it on every replica; a stream gets one
 * terminal error frame in its provider's shape.
 */
async function forward(
  egress: EgressService,
  principal: Principal,
  upstream: LlmUpstream,
  protocol: Protocol,
  input: Record<string, unknown>,
  res: ServerResponse,
  req: IncomingMessage,
  requestId: string,
): Promise<void> {
  const { model, price } = egress.price(upstream, input['model'])
  const shaped = protocol.shape(input, price.max_output_tokens)
  const endpoint = protocol.endpoint
  const reader = protocol.reader(shaped)
  const payload = JSON.stringify(shaped.body)
  const reserved = worstCaseMicro(price, { bytes: Buffer.byteLength(payload), opaque: shaped.opaque_input }, shaped.output_cap, shaped.choices)
  const call = await egress.admit(principal, { kind: 'llm', upstream: upstream.id, endpoint, model, tool: null, reserved_micro: reserved, timeout_ms: upstream.timeout_ms })

  const controller = new AbortController()
  let stopped: 'killed' | 'timeout' | 'client' | null = null
  let streaming = false
  const stop = (why: 'killed' | 'timeout' | 'client', message: string): void => {
    if (stopped !== null) return
    stopped = why
    controller.abort()
    if (why !== 'killed') return
    if (streaming && !res.writableEnded) res.end(reader.killFrame(message, requestId))
    else if (!res.headersSent) sendError(res, requestId, { code: 'agent_killed', message, extra: { type: 'agent_killed' } })
  }
  const untrack = egress.track(principal.address_id as string, (reason) => stop('killed', `${principal.address} is killed: ${reason}`), call)
  const timer = setTimeout(() => stop('timeout', 'upstream timeout'), upstream.timeout_ms)
  const onClose = (): void => {
    if (!res.writableFinished) stop('client', 'client went away')
  }
  res.on('close', onClose)
  req.on('close', () => {
    if (!req.complete) onClose()
  })

  let settled = false
  const settle = async (outcome: 'usage' | 'reservation' | 'refused', cost: number, usage: unknown, status: number | null): Promise<void> => {
    if (settled) return
    settled = true
    await egress.settle(call, { outcome, cost_micro: cost, usage, status })
  }
  try {
    // Killed between admission and here: nothing was sent, nothing is charged.
    await Promise.resolve()
    if (stopped !== null) {
      await settle('refused', 0, null, null)
      return
    }
    let upstreamRes: Response
    try {
      upstreamRes = await fetch(`${upstream.base_url}${protocol.path}`, {
        method: 'POST',
        headers: { ...protocol.headers(upstream, req), 'content-type': 'application/json', accept: shaped.stream ? 'text/event-stream' : 'application/json' },
        body: payload,
        signal: controller.signal,
      })
    } catch (error) {
      // Nothing came back. A refused connection never reached the provider: 0. Anything else
      // (reset, timeout, kill) may have been processed: the reservation.
      const refused = /ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(String((error as { cause?: { code?: string } }).cause?.code ?? ''))
      await settle(refused ? 'refused' : 'reservation', refused ? 0 : reserved, null, null)
      if (stopped === 'killed' || stopped === 'client') return
      if (stopped === 'timeout') throw new GatewayError('upstream_timeout', `upstream ${upstream.id} did not answer within ${upstream.timeout_ms} ms`)
      throw new GatewayError('upstream_error', `upstream ${upstream.id} cannot be reached: ${String((error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message)}`)
    }
    if (stopped !== null) return
    res.statusCode = upstreamRes.status
    for (const name of PASS_HEADERS) {
      const value = upstreamRes.headers.get(name)
      if (value !== null) res.setHeader(name, value)
    }
    for (const [name, value] of upstreamRes.headers) if (name.startsWith(PASS_PREFIX)) res.setHeader(name, value)
    const upstreamId = upstreamRes.headers.get('x-request-id') ?? upstreamRes.headers.get('request-id')
    if (upstreamId !== null) res.setHeader('x-upstream-request-id', upstreamId)

    if (upstreamRes.status >= 400 || !shaped.stream || !upstreamRes.body) {
      const text = await upstreamRes.text()
      if (stopped !== null) return
      let usage = null
      try {
        usage = upstreamRes.status < 400 ? protocol.usage(JSON.parse(text)) : null
      } catch {
        usage = null
      }
      // A refusal (4xx/5xx error body) is not billed; an answer without usage is charged its reservation.
      if (upstreamRes.status >= 400) await settle('refused', 0, null, upstreamRes.status)
      else if (usage) await settle('usage', usageMicro(price, usage), usage, upstreamRes.status)
      else await settle('reservation', reserved, null, upstreamRes.status)
      res.setHeader('content-length', Buffer.byteLength(text))
      res.end(text)
      return
    }

    streaming = true
    res.setHeader('cache-control', 'no-cache')
    res.flushHeaders()
    const decoder = new TextDecoder()
    let rest = ''
    try {
      for await (const chunk of upstreamRes.body as unknown as AsyncIterable<Uint8Array>) {
        if (stopped !== null) break
        const out = reader.push(decoder.decode(chunk, { stream: true }))
        if (out !== '') res.write(out)
      }
      rest = reader.flush() + decoder.decode()
    } catch {
      // The upstream dropped mid-stream (or we aborted it): the client's stream ends below.
    }
    // Settled before the stream's last bytes: when the client sees the end, the charge is booked.
    const usage = reader.usage
    if (usage) await settle('usage', usageMicro(price, usage), usage, upstreamRes.status)
    else await settle('reservation', reserved, null, upstreamRes.status)
    if (!res.writableEnded) res.end(stopped === null ? rest : undefined)
  } finally {
    clearTimeout(timer)
    untrack()
    res.off('close', onClose)
    if (!settled) await settle('reservation', reserved, null, null)
  }
}
