import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { ZodError } from 'zod'
import type { Principal } from '../core/auth/principal.js'
import { assertAccess } from '../core/auth/principal.js'
import { GatewayError, isGatewayError } from '../core/errors.js'
import { isInstanceId, randomBase62 } from '../core/ids.js'
import { parseJson, readBody } from './body.js'
import { sendError, sendJson } from './errors.js'
import { STREAMED, normalizePath, type Route, type Router } from './router.js'
import type { KeyService } from '../core/auth/key-service.js'
import type { AuditService } from '../core/audit/audit-service.js'

export interface HttpDeps {
  router: Router
  keys: KeyService
  audit: AuditService
  bodyLimitBytes: number
  /** Answers GET paths no route has (the dashboard); false when it has nothing either. */
  fallback?: ((req: IncomingMessage, res: ServerResponse, path: string) => boolean) | undefined
  log: (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void
}

const PUBLIC: Principal = { key_id: 'anonymous', role: 'viewer', address_id: null, address: null }

/** The request pipeline: route → authenticate → authorize → body limit → JSON → schema → handler. */
export function createRequestHandler(deps: HttpDeps) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const requestId = `req_${randomBase62(20)}`
    res.setHeader('x-request-id', requestId)
    const traceHeader = req.headers['x-trace-id']
    const traceId = typeof traceHeader === 'string' && traceHeader.length <= 256 ? traceHeader : undefined
    if (traceId !== undefined) res.setHeader('x-trace-id', traceId)
    const traceparent = req.headers['traceparent']
    if (typeof traceparent === 'string' && traceparent.length <= 256) res.setHeader('traceparent', traceparent)
    handle(deps, req, res, requestId, traceId ?? (typeof traceparent === 'string' ? traceparent : undefined)).catch(
      (error: unknown) =>
        void drainBody(req, 4 * deps.bodyLimitBytes).then((drained) => {
          // The rest of the body stays unread: the connection cannot carry another request.
          if (!drained && !res.headersSent) res.setHeader('connection', 'close')
          fail(deps, res, requestId, error)
        }),
    )
  }
}

/** An error answer waits for the rest of an unread request body while it keeps arriving:
 * until no byte came for DRAIN_IDLE_MS, and never longer than DRAIN_MAX_MS in all. */
const DRAIN_IDLE_MS = 500
const DRAIN_MAX_MS = 10_000

/**
 * Reads and discards what is left of the request body before an error is answered (a 401 or
 * 413 comes before the body is read), at most `maxBytes` more. Closing a socket with unread
 * data resets the connection, and the client then loses the answer it has not read yet
 * (RFC 9112 §9.6): the 401 or 413 looks like a dropped connection. A body that is still
 * arriving — a megabyte over a busy link takes more than a second — is waited for; one that
 * stalls (truncated, or a client that stopped) is given up after DRAIN_IDLE_MS.
 * True when the body was read to its end (or there was none).
 */
function drainBody(req: IncomingMessage, maxBytes: number): Promise<boolean> {
  if (req.complete) return Promise.resolve(true)
  const declared = Number(req.headers['content-length'])
  if (req.destroyed || (Number.isFinite(declared) && declared > maxBytes)) return Promise.resolve(false)
  return new Promise((resolve) => {
    let seen = 0
    const finish = (drained: boolean): void => {
      clearTimeout(idle)
      clearTimeout(cap)
      req.off('data', onData).off('end', onEnd).off('close', onClose)
      resolve(drained)
    }
    const onData = (chunk: Buffer): void => {
      seen += chunk.length
      if (seen > maxBytes) return finish(false)
      idle.refresh()
    }
    const onEnd = (): void => finish(true)
    const onClose = (): void => finish(req.complete)
    const idle = setTimeout(() => finish(false), DRAIN_IDLE_MS)
    const cap = setTimeout(() => finish(false), DRAIN_MAX_MS)
    req.on('data', onData).on('end', onEnd).on('close', onClose)
    req.resume()
  })
}

/**
 * `CONNECT` (a proxy tunnel) is no route of the gateway. Node hands it to a 'connect' listener
 * instead of the request handler and, when there is none, drops the connection unanswered:
 * this answers it like any unknown route (404 `not_found`, DESIGN §4 shape, `x-request-id`).
 */
export function refuseConnect(req: IncomingMessage, socket: Duplex): void {
  const requestId = `req_${randomBase62(20)}`
  const body = JSON.stringify({
    ok: false,
    error: { code: 'not_found', message: `no route for CONNECT ${(req.url ?? '').slice(0, 200)}`, request_id: requestId },
  })
  socket.on('error', () => socket.destroy())
  socket.end(
    'HTTP/1.1 404 Not Found\r\ncontent-type: application/json; charset=utf-8\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`,
  )
}

async function handle(
  deps: HttpDeps,
  req: IncomingMessage,
  res: ServerResponse,
  requestId: string,
  traceId: string | undefined,
): Promise<void> {
  const url = req.url ?? '/'
  const q = url.indexOf('?')
  const path = normalizePath(q === -1 ? url : url.slice(0, q))
  const matched = deps.router.match(req.method ?? 'GET', path)
  if (!matched) {
    req.resume()
    if (deps.fallback?.(req, res, path)) return
    throw new GatewayError('not_found', `no route for ${req.method ?? 'GET'} ${path.slice(0, 200)}`)
  }
  const { route, params } = matched
  let principal = PUBLIC
  if (route.access !== 'public') {
    principal = await deps.keys.authenticate(apiKeyOf(req))
    try {
      assertAccess(route.access, principal)
    } catch (error) {
      if (route.control) {
        await deps.audit.denied(principal, `${route.method} ${route.path}`, (error as Error).message)
      }
      throw error
    }
  }
  for (const header of route.headers ?? []) HEADER_CHECKS[header](req)
  let body: unknown = undefined
  if (route.raw) {
    body = await readBody(req, deps.bodyLimitBytes)
  } else if (req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH') {
    const raw = await readBody(req, deps.bodyLimitBytes)
    body = route.body ? validate(route.body, parseJson(raw), 'body') : undefined
  } else {
    req.resume()
  }
  const query = route.query ? validate(route.query, queryObject(url, q), 'query') : {}
  const result = await route.handler({ req, res, requestId, principal, params, query, body, traceId })
  if (result === STREAMED) return
  sendJson(res, 200, { ok: true, ...result })
}

const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/

/** Header checks that answer 400 before the body is read (precedence: 413 → 400 → 422). */
const HEADER_CHECKS: Record<'x-instance-id' | 'idempotency-key', (req: IncomingMessage) => void> = {
  'x-instance-id': (req) => {
    const v = req.headers['x-instance-id']
    if (v !== undefined && (typeof v !== 'string' || !isInstanceId(v))) {
      throw new GatewayError('invalid_request', 'x-instance-id must be 1–128 printable ASCII characters')
    }
  },
  'idempotency-key': (req) => {
    const v = req.headers['idempotency-key']
    if (v !== undefined && (typeof v !== 'string' || !IDEMPOTENCY_KEY.test(v))) {
      throw new GatewayError('invalid_request', 'Idempotency-Key must be 1–255 printable ASCII characters')
    }
  },
}

/** `x-api-key` wins over `Authorization: Bearer` when both are present (DESIGN §5). */
function apiKeyOf(req: IncomingMessage): string | undefined {
  const header = req.headers['x-api-key']
  if (typeof header === 'string') return header.trim()
  const auth = req.headers.authorization
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim())
    return m ? (m[1] as string).trim() : ''
  }
  return undefined
}

function queryObject(url: string, q: number): Record<string, string> {
  const out: Record<string, string> = {}
  if (q === -1) return out
  for (const [k, v] of new URLSearchParams(url.slice(q + 1))) {
    if (k in out) throw new GatewayError('invalid_request', `query parameter ${k} is given more than once`)
    out[k] = v
  }
  return out
}

function validate<T>(schema: Route['body'] & {}, value: unknown, where: 'body' | 'query'): T {
  const parsed = schema.safeParse(value)
  if (parsed.success) return parsed.data as T
  throw schemaError(parsed.error, where)
}

export function schemaError(error: ZodError, where: 'body' | 'query'): GatewayError {
  const issues = error.issues.slice(0, 10).map((issue) => ({
    field: issue.path.map(String).join('.') || (issue.code === 'unrecognized_keys' ? issue.keys.join(',') : where),
    message: issue.message,
  }))
  const first = error.issues[0]
  let field = issues[0]?.field ?? where
  if (first?.code === 'unrecognized_keys') field = [...first.path.map(String), ...first.keys].join('.')
  return new GatewayError('schema_invalid', `${where === 'query' ? 'query parameter' : 'field'} ${field}: ${issues[0]?.message ?? 'invalid'}`, {
    details: { field, in: where, issues },
  })
}

function fail(deps: HttpDeps, res: ServerResponse, requestId: string, error: unknown): void {
  if (isGatewayError(error)) {
    if (error.code === 'payload_too_large') res.setHeader('connection', 'close')
    sendError(res, requestId, error)
    return
  }
  deps.log('error', 'unhandled error', { request_id: requestId, error: describe(error) })
  sendError(res, requestId, { code: 'internal_error', message: 'internal error; see the gateway log for this request_id' })
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}\n${error.stack ?? ''}` : String(error)
}
