import type { IncomingMessage, ServerResponse } from 'node:http'
import { z } from 'zod'
import type { Principal } from '../../core/auth/principal.js'
import type { EgressService, McpUpstream } from '../../core/egress/egress-service.js'
import {
  McpGate,
  SseFramer,
  eventData,
  hideDeniedTools,
  idKey,
  isId,
  isRequest,
  isResponse,
  parseMessages,
  rpcError,
  serializeEvent,
  sseMessage,
  toolName,
  type RpcId,
  type RpcMessage,
  type SseEvent,
} from '../../core/egress/mcp.js'
import { GatewayError, isGatewayError } from '../../core/errors.js'
import type { EgressCallRow } from '../../store/store.js'
import { sendError, sendJson } from '../errors.js'
import { STREAMED, route, type Route, type RouteContext } from '../router.js'
import type { Services } from '../services.js'

/** A JSON-RPC message: the envelope is checked, the rest passes through unchanged. */
const RpcMessageBody = z.looseObject({
  jsonrpc: z.literal('2.0'),
  id: z.union([z.string().max(1024), z.number()]).nullable().optional(),
  method: z.string().min(1).max(256).optional(),
})
/** One message, or a batch (MCP 2025-03-26; later versions send one message per POST). */
const McpBody = z.union([RpcMessageBody, z.array(RpcMessageBody).min(1).max(256)])
type McpBodyT = z.output<typeof McpBody>

/** Request headers the MCP client sends that the server needs; everything else (the agent key first) stays here. */
const PASS_REQUEST = ['accept', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id'] as const
/** Upstream response headers passed to the client (status and body pass unchanged). */
const PASS_RESPONSE = ['content-type', 'mcp-session-id', 'retry-after'] as const

export function mcpRoutes(s: Services): Route[] {
  const gate = new McpGate(s.store)
  const handle =
    (kind: Kind) =>
    async ({ params, body, principal, req, res, requestId }: RouteContext<unknown, unknown>): Promise<typeof STREAMED> => {
      const upstream = s.egress.upstream(principal, params['upstream'] as string, ['mcp'])
      await new McpExchange(s.egress, gate, principal, upstream, kind, req, res, requestId).run(body as McpBodyT | undefined)
      return STREAMED
    }
  return [
    route<McpBodyT>({
      method: 'POST',
      path: '/mcp/:upstream',
      access: 'agent',
      tag: 'egress',
      summary: 'MCP (Streamable HTTP) messages to an MCP server through the gateway: each tools/call metered under the kill switch, tool policies and cost ceilings; the answer is JSON or an SSE stream',
      body: McpBody,
      headers: ['x-instance-id'],
      handler: handle('post'),
    }),
    route({
      method: 'GET',
      path: '/mcp/:upstream',
      access: 'agent',
      tag: 'egress',
      summary: "The MCP server's SSE stream to the client (server requests and notifications), cut when the agent is killed",
      stream: true,
      headers: ['x-instance-id'],
      handler: handle('get'),
    }),
    route({
      method: 'DELETE',
      path: '/mcp/:upstream',
      access: 'agent',
      tag: 'egress',
      summary: 'Ends an MCP session (Mcp-Session-Id) on the MCP server',
      headers: ['x-instance-id'],
      handler: handle('delete'),
    }),
  ]
}

type Kind = 'post' | 'get' | 'delete'

interface Pending {
  id: RpcId
  call: EgressCallRow | null
  answered: boolean
}

/**
 * One HTTP exchange with an MCP server on behalf of an agent. Registered for abort before its
 * kill check (a kill that lands at any point after cuts it); every `tools/call` in it is one
 * admitted egress call, settled when its response passes (its `cost_per_call`), at the
 * reservation when the exchange ends without one, and at 0 when the upstream refused (an error
 * status, a refused connection) or nothing was sent. SSE streams pass event by event as they
 * arrive; denied tools are hidden from every tools list that passes.
 */
class McpExchange {
  #stopped: 'killed' | 'timeout' | 'client' | null = null
  /** SSE headers are out: a stop ends the stream with a frame instead of an error answer. */
  #streaming = false
  #sent = false
  readonly #controller = new AbortController()
  readonly #pending = new Map<string, Pending>()
  readonly #calls: EgressCallRow[] = []
  readonly #settled = new Set<EgressCallRow>()
  readonly #denials = new Map<string, Promise<boolean>>()

  constructor(
    readonly egress: EgressService,
    readonly gate: McpGate,
    readonly principal: Principal,
    readonly upstream: McpUpstream,
    readonly kind: Kind,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly requestId: string,
  ) {}

  async run(body: McpBodyT | undefined): Promise<void> {
    const { res, req } = this
    const untrack = this.egress.track(this.principal.address_id as string, (reason) => this.#stop('killed', `${this.principal.address} is killed: ${reason}`))
    const timer = setTimeout(() => this.#stop('timeout', `upstream ${this.upstream.id} did not answer within ${this.upstream.timeout_ms} ms`), this.upstream.timeout_ms)
    const onClose = (): void => {
      if (!res.writableFinished) this.#stop('client', 'the client went away')
    }
    const onReqClose = (): void => {
      if (!req.complete) onClose()
    }
    res.on('close', onClose)
    req.on('close', onReqClose)
    try {
      if (this.kind === 'post') await this.#post(body as McpBodyT)
      else await this.#other(timer)
    } finally {
      clearTimeout(timer)
      untrack()
      res.off('close', onClose)
      req.off('close', onReqClose)
      // Not answered: the upstream may have run it (the reservation); never sent: nothing.
      for (const call of this.#calls) await this.#settle(call, this.#sent ? 'reservation' : 'refused', null)
    }
  }

  /** Stops the exchange once: the upstream request is aborted; a kill or a timeout is told to the client. */
  #stop(why: 'killed' | 'timeout' | 'client', message: string): void {
    if (this.#stopped !== null) return
    this.#stopped = why
    this.#controller.abort()
    if (why === 'client') return
    const code = why === 'killed' ? 'agent_killed' : 'upstream_timeout'
    const { res } = this
    if (this.#streaming) {
      if (res.writableEnded) return
      let frames = ''
      if (this.kind === 'post') {
        // One JSON-RPC error for each request of this POST still waiting for its response.
        for (const p of this.#pending.values()) if (!p.answered) frames += sseMessage(rpcError(p.id, code, message, { request_id: this.requestId }))
      } else {
        // The server's stream carries no request of the client: an MCP log message says why it ends.
        frames = sseMessage({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'error', logger: 'chokepoint', data: { code, message, request_id: this.requestId } } })
      }
      res.end(frames)
    } else if (why === 'killed' && !res.headersSent) {
      sendError(res, this.requestId, { code: 'agent_killed', message })
    }
    // A timeout before the answer started: the pending fetch or read fails and the handler answers 504.
  }

  async #post(body: McpBodyT): Promise<void> {
    const batch = Array.isArray(body)
    const messages = (batch ? body : [body]) as RpcMessage[]
    // Schema first: every tools/call must name its tool and have an id (no admission is wasted).
    for (const m of messages) {
      if (m['method'] !== 'tools/call') continue
      if (!isId(m['id'])) throw new GatewayError('schema_invalid', 'a tools/call is a request: it needs an id', { details: { field: 'id' } })
      toolName(m)
    }
    const hasCall = messages.some((m) => m['method'] === 'tools/call')
    await this.gate.check(this.principal, this.#instanceId(), !hasCall)
    if (this.#stopped !== null) return

    const answers: RpcMessage[] = []
    const forward: RpcMessage[] = []
    for (const m of messages) {
      if (m['method'] !== 'tools/call') {
        if (isRequest(m)) this.#pending.set(idKey(m['id'] as RpcId), { id: m['id'] as RpcId, call: null, answered: false })
        forward.push(m)
        continue
      }
      const id = m['id'] as RpcId
      try {
        const call = await this.egress.admit(this.principal, {
          kind: 'mcp',
          upstream: this.upstream.id,
          endpoint: 'tools/call',
          model: null,
          tool: `${this.upstream.id}/${toolName(m)}`,
          reserved_micro: this.upstream.cost_per_call_micro,
          timeout_ms: this.upstream.timeout_ms,
        })
        this.#calls.push(call)
        this.#pending.set(idKey(id), { id, call, answered: false })
        forward.push(m)
      } catch (error) {
        // A denied tool is answered in-band: the session and the other tools stay usable. A
        // limit refuses with 429 (the gateway's norm), except inside a batch, which one status
        // cannot answer message by message.
        const inBand = isGatewayError(error) && (error.code === 'policy_denied' || (batch && (error.code === 'budget_exceeded' || error.code === 'rate_limited')))
        if (!inBand) throw error
        answers.push(rpcError(id, error.code, error.message, { ...error.extra, request_id: this.requestId }))
      }
      if (this.#stopped !== null) return
    }
    if (forward.length === 0) {
      sendJson(this.res, 200, batch ? answers : answers[0])
      return
    }

    const upstreamRes = await this.#fetch('POST', JSON.stringify(batch ? forward : forward[0]))
    if (upstreamRes === null) return
    if (upstreamRes.status >= 400) {
      for (const call of this.#calls) await this.#settle(call, 'refused', upstreamRes.status)
      await this.#passBody(upstreamRes)
      return
    }
    const type = upstreamRes.headers.get('content-type') ?? ''
    if (/^text\/event-stream/i.test(type)) return this.#stream(upstreamRes, answers)
    if (/^application\/json/i.test(type)) return this.#json(upstreamRes, answers, batch)
    if (answers.length > 0) {
      // Only notifications and responses went on (202): the denied requests still need their answers.
      await upstreamRes.body?.cancel().catch(() => undefined)
      if (this.#stopped === null) sendJson(this.res, 200, batch ? answers : answers[0])
      return
    }
    await this.#passBody(upstreamRes)
  }

  /** GET (the server's SSE stream) and DELETE (end of a session): kill-checked, passed through. */
  async #other(timer: NodeJS.Timeout): Promise<void> {
    await this.gate.check(this.principal, this.#instanceId(), true)
    if (this.#stopped !== null) return
    const upstreamRes = await this.#fetch(this.kind === 'get' ? 'GET' : 'DELETE', undefined)
    if (upstreamRes === null) return
    // The server's stream lives as long as the session: the deadline is for its headers only.
    if (this.kind === 'get') clearTimeout(timer)
    const type = upstreamRes.headers.get('content-type') ?? ''
    if (upstreamRes.status < 400 && /^text\/event-stream/i.test(type)) return this.#stream(upstreamRes, [])
    await this.#passBody(upstreamRes)
  }

  #instanceId(): string | undefined {
    const v = this.req.headers['x-instance-id']
    return typeof v === 'string' ? v : undefined
  }

  /** The upstream answer's status and headers, or null when the exchange already ended (kill, client gone). */
  async #fetch(method: 'POST' | 'GET' | 'DELETE', body: string | undefined): Promise<Response | null> {
    const headers: Record<string, string> = {}
    for (const name of PASS_REQUEST) {
      const value = this.req.headers[name]
      if (typeof value === 'string') headers[name] = value
    }
    if (body !== undefined) headers['content-type'] = 'application/json'
    Object.assign(headers, this.upstream.headers)
    this.#sent = true
    let upstreamRes: Response
    try {
      upstreamRes = await fetch(this.upstream.url, { method, headers, ...(body === undefined ? {} : { body }), signal: this.#controller.signal })
    } catch (error) {
      const code = String((error as { cause?: { code?: string } }).cause?.code ?? '')
      // A refused connection never reached the server: nothing was done, nothing is charged.
      if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN/.test(code)) for (const call of this.#calls) await this.#settle(call, 'refused', null)
      return this.#failed(error)
    }
    if (this.#stopped !== null) {
      await upstreamRes.body?.cancel().catch(() => undefined)
      if (this.#stopped === 'timeout') return this.#failed(new Error('timeout'))
      return null
    }
    this.res.statusCode = upstreamRes.status
    for (const name of PASS_RESPONSE) {
      const value = upstreamRes.headers.get(name)
      if (value !== null) this.res.setHeader(name, value)
    }
    return upstreamRes
  }

  /** After a failed fetch or read: nothing more to say when the exchange was stopped by a kill or the client; else 504/502. */
  #failed(error: unknown): null {
    if (this.#stopped === 'killed' || this.#stopped === 'client') return null
    if (this.#stopped === 'timeout') throw new GatewayError('upstream_timeout', `upstream ${this.upstream.id} did not answer within ${this.upstream.timeout_ms} ms`)
    const cause = (error as { cause?: { code?: string } }).cause?.code ?? (error as Error).message
    throw new GatewayError('upstream_error', `upstream ${this.upstream.id} cannot be reached: ${String(cause)}`)
  }

  /** A JSON answer: read whole (it is one message or one batch), inspected, then sent. */
  async #json(upstreamRes: Response, answers: RpcMessage[], batch: boolean): Promise<void> {
    let text: string
    try {
      text = await upstreamRes.text()
    } catch (error) {
      this.#failed(error)
      return
    }
    if (this.#stopped !== null) return
    const parsed = parseMessages(text)
    if (parsed) {
      let changed = false
      for (const m of parsed.messages) if (await this.#inspect(m)) changed = true
      if (this.#stopped !== null) return
      if (changed || answers.length > 0) {
        const all = [...parsed.messages, ...answers]
        text = JSON.stringify(parsed.batch || batch || all.length > 1 ? all : all[0])
      }
    }
    this.res.setHeader('content-length', Buffer.byteLength(text))
    this.res.end(text)
  }

  /** An SSE answer: each event goes on as it completes (inspected, tools lists filtered). */
  async #stream(upstreamRes: Response, answers: RpcMessage[]): Promise<void> {
    const { res } = this
    this.#streaming = true
    res.setHeader('cache-control', 'no-cache')
    res.setHeader('x-accel-buffering', 'no')
    res.flushHeaders()
    for (const answer of answers) res.write(sseMessage(answer))
    const framer = new SseFramer()
    const decoder = new TextDecoder()
    try {
      for await (const chunk of upstreamRes.body as unknown as AsyncIterable<Uint8Array>) {
        if (this.#stopped !== null) break
        for (const event of framer.push(decoder.decode(chunk, { stream: true }))) {
          const out = await this.#event(event)
          if (this.#stopped !== null || res.writableEnded) break
          if (!res.write(out)) await drained(res)
        }
      }
    } catch {
      // The upstream dropped the stream, or it was aborted (kill, timeout, client gone).
    }
    // Settled before the stream ends, so the charge is booked when the client sees the end. An
    // incomplete last event is dropped, as an SSE client would.
    for (const call of this.#calls) await this.#settle(call, 'reservation', upstreamRes.status)
    if (!res.writableEnded) res.end()
  }

  async #event(event: SseEvent): Promise<string> {
    const data = eventData(event)
    const parsed = data === null || data === '' ? null : parseMessages(data)
    if (!parsed) return serializeEvent(event)
    let changed = false
    for (const m of parsed.messages) if (await this.#inspect(m)) changed = true
    return changed ? serializeEvent(event, JSON.stringify(parsed.batch ? parsed.messages : parsed.messages[0])) : serializeEvent(event)
  }

  /** A message from the server: a response settles its call; a tools list loses its denied tools. True when changed. */
  async #inspect(m: RpcMessage): Promise<boolean> {
    if (isResponse(m)) {
      const p = this.#pending.get(idKey(m['id'] as RpcId))
      if (p && !p.answered) {
        p.answered = true
        if (p.call) await this.#settle(p.call, 'usage', this.res.statusCode)
      }
    }
    return hideDeniedTools(m, (name) => this.#denied(name))
  }

  #denied(name: string): Promise<boolean> {
    let denied = this.#denials.get(name)
    if (!denied) {
      denied = this.egress.toolDenial(this.principal, `${this.upstream.id}/${name}`).then((d) => d !== null)
      this.#denials.set(name, denied)
    }
    return denied
  }

  /** Any other answer (an error, a 202, a DELETE's): passed whole. */
  async #passBody(upstreamRes: Response): Promise<void> {
    let bytes: Buffer
    try {
      bytes = Buffer.from(await upstreamRes.arrayBuffer())
    } catch (error) {
      this.#failed(error)
      return
    }
    if (this.#stopped !== null) return
    this.res.setHeader('content-length', bytes.length)
    this.res.end(bytes)
  }

  async #settle(call: EgressCallRow, outcome: 'usage' | 'reservation' | 'refused', status: number | null): Promise<void> {
    if (this.#settled.has(call)) return
    this.#settled.add(call)
    const cost = outcome === 'refused' ? 0 : call.reserved_micro
    await this.egress.settle(call, { outcome, cost_micro: cost, usage: null, status })
  }
}

/** Resolves when the response can take more (or is gone). */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done).off('close', done)
      resolve()
    }
    res.on('drain', done).on('close', done)
  })
}
