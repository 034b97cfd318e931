import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Principal } from '../../core/auth/principal.js'
import type { EgressService, HttpUpstream } from '../../core/egress/egress-service.js'
import { checkQuery, clientResponseHeaders, httpToolName, normaliseUpstreamPath, upstreamRequestHeaders, upstreamTarget } from '../../core/egress/http-proxy.js'
import { GatewayError } from '../../core/errors.js'
import { STREAMED, route, type Method, type Route } from '../router.js'
import type { Services } from '../services.js'

const METHODS: readonly Method[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS']

/** Methods whose requests carry a body by definition: they get `Content-Length: 0` when empty. */
const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH'])

/** Errors before a connection was made: the upstream never saw the request (charged 0). */
const NOT_SENT = /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EAI_NONAME|ENETUNREACH|EHOSTUNREACH)$/

/**
 * `ANY /egress/{upstream}/{path…}`: an agent's call to a generic HTTP API (`kind: "http"` in
 * `--egress-config`), forwarded to `base_url` + path with the configured credentials, admitted
 * per call under the kill switch, `tool` policies, egress rate policies and cost ceilings.
 */
export function egressHttpRoutes(s: Services & { egress: EgressService }): Route[] {
  return METHODS.map((method) =>
    route<Buffer>({
      method,
      path: '/egress/:upstream/*path',
      access: 'agent',
      tag: 'egress',
      raw: true,
      summary: `${method} to an HTTP upstream through the gateway (credentials injected, agent key stripped), admitted under the kill switch, tool policies and cost ceilings; the answer passes through`,
      handler: async ({ params, principal, req, res, body }) => {
        const upstream = s.egress.upstream(principal, params['upstream'] as string, ['http'])
        const { path, query, bare } = requestedPath(req.url ?? '/')
        await forward(s.egress, principal, upstream, { method, path, query, bare, body: body ?? Buffer.alloc(0) }, req, res)
        return STREAMED
      },
    }),
  )
}

/**
 * The path under the upstream and the query, from the raw request target (not the router's
 * normalised path: what the agent sent is what is checked and forwarded). `bare`: the agent
 * asked for `/egress/<id>` itself (no slash after the id).
 */
function requestedPath(url: string): { path: string; query: string; bare: boolean } {
  const q = url.indexOf('?')
  const rawPath = q === -1 ? url : url.slice(0, q)
  const afterId = rawPath.indexOf('/', '/egress/'.length)
  const tail = afterId === -1 ? '' : rawPath.slice(afterId)
  return { path: normaliseUpstreamPath(tail), query: q === -1 ? '' : checkQuery(url.slice(q + 1)), bare: afterId === -1 }
}

interface Outgoing {
  method: Method
  path: string
  query: string
  bare: boolean
  body: Buffer
}

/**
 * One call: admit (one store transaction) → forward → pass the answer through → settle once,
 * before the answer's last byte: `cost_per_call` when the upstream answered, 0 when the
 * connection was refused before anything was sent, the reservation when unknown (timeout,
 * reset, kill or client gone before an answer). A kill of the agent (any replica) aborts the
 * upstream request and ends the client's response: 403 `agent_killed` before the headers, a cut
 * response (the connection is closed, so the client sees a truncated body) after them.
 */
async function forward(egress: EgressService, principal: Principal, upstream: HttpUpstream, out: Outgoing, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let stopped: 'killed' | 'timeout' | 'client' | null = null
  let killReason = ''
  let upstreamReq: ReturnType<typeof httpRequest> | null = null
  const stop = (why: 'killed' | 'timeout' | 'client'): void => {
    if (stopped !== null) return
    stopped = why
    upstreamReq?.destroy(new Error(`stopped: ${why}`))
    // Mid-answer the client's response is cut at once, even while it is not reading (backpressure).
    if (res.headersSent) res.destroy()
  }
  // Tracked before admission: a kill that lands while the call is being admitted still stops it.
  const untrack = egress.track(principal.address_id as string, (reason) => {
    killReason = reason
    stop('killed')
  })
  const killed = (): GatewayError => new GatewayError('agent_killed', `${principal.address ?? 'the agent'} is killed: ${killReason}`)
  let call
  try {
    call = await egress.admit(principal, {
      kind: 'http',
      upstream: upstream.id,
      endpoint: 'http',
      model: null,
      tool: httpToolName(upstream.id, out.method, out.path),
      reserved_micro: upstream.cost_per_call_micro,
      timeout_ms: upstream.timeout_ms,
    })
  } catch (error) {
    untrack()
    throw error
  }

  let settled = false
  const settle = async (outcome: 'usage' | 'reservation' | 'refused', status: number | null): Promise<void> => {
    if (settled) return
    settled = true
    const cost = outcome === 'usage' ? upstream.cost_per_call_micro : outcome === 'refused' ? 0 : call.reserved_micro
    await egress.settle(call, { outcome, cost_micro: cost, usage: null, status })
  }
  const timer = setTimeout(() => stop('timeout'), upstream.timeout_ms)
  const onClose = (): void => {
    if (!res.writableFinished) stop('client')
  }
  res.on('close', onClose)
  if (res.destroyed) stop('client') // gone while the call was being admitted
  try {
    // Killed (or the client left) while being admitted: nothing is sent, nothing charged.
    if (stopped !== null) {
      await settle('refused', null)
      if (stopped === 'killed') throw killed()
      return
    }
    const base = new URL(upstream.base_url)
    const headers = upstreamRequestHeaders(req.headers, upstream.headers)
    if (out.body.length > 0 || BODY_METHODS.has(out.method)) headers['content-length'] = String(out.body.length)
    const send = base.protocol === 'https:' ? httpsRequest : httpRequest
    const sent = send({
      protocol: base.protocol,
      hostname: base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: base.port === '' ? undefined : Number(base.port),
      method: out.method,
      path: upstreamTarget(base.pathname, out.path, out.query, out.bare),
      headers,
      agent: false,
    })
    upstreamReq = sent
    // Errors are handled where they matter (below); a late one (after a stop) must not go unheard.
    sent.on('error', () => undefined)
    let connected = false
    sent.on('socket', (socket) => {
      if (!socket.connecting) connected = true
      else socket.once('connect', () => (connected = true))
    })
    let answer: IncomingMessage
    try {
      answer = await new Promise<IncomingMessage>((resolve, reject) => {
        sent.once('response', resolve)
        sent.once('error', reject)
        sent.end(out.body.length > 0 ? out.body : undefined)
      })
    } catch (error) {
      const code = String((error as NodeJS.ErrnoException).code ?? '')
      const refused = !connected && NOT_SENT.test(code)
      await settle(refused ? 'refused' : 'reservation', null)
      if (stopped === 'killed') throw killed()
      if (stopped === 'client') return
      if (stopped === 'timeout') throw new GatewayError('upstream_timeout', `upstream ${upstream.id} did not answer within ${upstream.timeout_ms} ms`)
      throw new GatewayError('upstream_error', `upstream ${upstream.id} cannot be reached: ${code || (error as Error).message}`)
    }
    // The upstream answered: the call is charged whatever happens to the rest of the body.
    answer.on('error', () => undefined)
    const status = answer.statusCode ?? 502
    if (stopped !== null) {
      answer.destroy()
      await settle('usage', status)
      if (stopped === 'killed') throw killed()
      if (stopped === 'timeout') throw new GatewayError('upstream_timeout', `upstream ${upstream.id} did not answer within ${upstream.timeout_ms} ms`)
      return
    }
    res.writeHead(status, answer.statusMessage, clientResponseHeaders(answer.headers))
    let complete = false
    try {
      for await (const chunk of answer as AsyncIterable<Buffer>) {
        if (stopped !== null || res.destroyed) break
        if (!res.write(chunk)) await drained(res)
      }
      complete = stopped === null && !res.destroyed && answer.complete
    } catch {
      // The upstream dropped mid-body, or the call was stopped: the client's response is cut below.
    }
    await settle('usage', status)
    if (complete) res.end()
    else res.destroy()
  } finally {
    clearTimeout(timer)
    untrack()
    res.off('close', onClose)
    upstreamReq?.destroy()
    if (!settled) await settle('reservation', null)
  }
}

/** Waits until `res` can take more, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  if (res.destroyed) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done).off('close', done)
      resolve()
    }
    res.on('drain', done).on('close', done)
  })
}
