/**
 * The pure parts of proxying a request to an upstream on an agent's behalf: which headers cross
 * the gateway (in either direction), and which upstream paths an agent may ask for. Shared by the
 * HTTP-tool egress route and usable by any other proxy (MCP): no I/O here.
 */
import { GatewayError } from '../errors.js'

/** Header values as node:http gives them (`IncomingHttpHeaders`) or a plain record. */
export type HeaderBag = Readonly<Record<string, string | string[] | number | undefined>>

/** Headers as sent on: lower-case names, string values. */
export type Headers = Record<string, string | string[]>

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the message, so a
 * proxy never passes them on. `Connection` may name more (see `hopByHopNames`).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'])

/** The headers that carry a gateway key (DESIGN §5): never forwarded upstream. */
export const GATEWAY_KEY_HEADERS: ReadonlySet<string> = new Set(['authorization', 'x-api-key'])

/** A Chokepoint key anywhere in a value (keys are `cp_` + base62, key-service.ts). */
const AGENT_KEY = /cp_[0-9A-Za-z]{20,}/

/** True when a header value carries a Chokepoint `cp_` key (in any position). */
export function carriesGatewayKey(value: string | readonly string[]): boolean {
  return typeof value === 'string' ? AGENT_KEY.test(value) : value.some((v) => AGENT_KEY.test(v))
}

/**
 * The lower-case names of the hop-by-hop headers of a message: the fixed list, every `proxy-*`
 * header, and the tokens its `Connection` header names.
 */
export function hopByHopNames(headers: HeaderBag): Set<string> {
  const names = new Set(HOP_BY_HOP)
  for (const name of Object.keys(headers)) if (name.toLowerCase().startsWith('proxy-')) names.add(name.toLowerCase())
  const connection = headerValue(headers, 'connection')
  for (const token of (connection ?? '').split(',')) {
    const t = token.trim().toLowerCase()
    if (t !== '') names.add(t)
  }
  return names
}

function headerValue(headers: HeaderBag, name: string): string | undefined {
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== name || v === undefined) continue
    return Array.isArray(v) ? v.join(',') : String(v)
  }
  return undefined
}

/** Values as strings (node:http gives numbers for a few headers), names lower-case. */
function copy(headers: HeaderBag, drop: (name: string, value: string | string[]) => boolean): Headers {
  const out: Headers = {}
  for (const [rawName, raw] of Object.entries(headers)) {
    if (raw === undefined) continue
    const name = rawName.toLowerCase()
    const value = Array.isArray(raw) ? raw.map(String) : String(raw)
    if (drop(name, value)) continue
    out[name] = value
  }
  return out
}

/**
 * The headers of a request as the upstream gets them: hop-by-hop headers, the gateway's key
 * headers (`Authorization`, `x-api-key`) and any header with a `cp_` key in its value are dropped;
 * `Host` and the framing (`Content-Length`, `Expect`) are the proxy's own to set; then the
 * configured credentials are set over whatever the agent sent under the same names.
 */
export function upstreamRequestHeaders(incoming: HeaderBag, inject: Readonly<Record<string, string>> = {}): Headers {
  const hop = hopByHopNames(incoming)
  const out = copy(
    incoming,
    (name, value) => hop.has(name) || GATEWAY_KEY_HEADERS.has(name) || name === 'host' || name === 'content-length' || name === 'expect' || carriesGatewayKey(value),
  )
  for (const [name, value] of Object.entries(inject)) out[name.toLowerCase()] = value
  return out
}

/**
 * The headers of an upstream's answer as the agent gets them: everything but the hop-by-hop
 * headers (status, body framing by `Content-Length`, `Retry-After`, rate-limit headers pass
 * unchanged). The upstream's `x-request-id` becomes `x-upstream-request-id` (the gateway's own
 * `x-request-id` names the call here).
 */
export function clientResponseHeaders(upstream: HeaderBag): Headers {
  const hop = hopByHopNames(upstream)
  const out = copy(upstream, (name) => hop.has(name))
  const id = out['x-request-id']
  if (id !== undefined) {
    delete out['x-request-id']
    out['x-upstream-request-id'] = id
  }
  return out
}

/** RFC 3986 `pchar` plus `/`, and `%XX` escapes: nothing else may appear in a path we forward. */
const PATH_CHARS = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/
/** The same for a query string (`?` allowed too). */
const QUERY_CHARS = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*$/
const UNRESERVED = /[A-Za-z0-9\-._~]/

const badPath = (message: string, path: string): GatewayError =>
  new GatewayError('invalid_request', `upstream path ${JSON.stringify(path.slice(0, 200))}: ${message}`, { details: { field: 'path' } })

/**
 * Normalises the path an agent asked for under an upstream (the part after `/egress/<id>`) and
 * refuses what could leave the upstream's `base_url` path (400 `invalid_request`):
 *
 * - only URL path characters and well-formed `%XX` escapes;
 * - percent-escapes of unreserved characters are decoded and the others upper-cased (RFC 3986
 *   §6.2.2), so `/v2/%73ervices` is `/v2/services` both for the upstream and for `tool` policies;
 * - no empty segment (`//host`, `a//b`), and no segment that is `.` or `..` once decoded — any
 *   number of times (`%2e%2e`, `%252e%252e`) and split at `/` and `\` (`..%2f`, `..%5c`);
 * - no NUL or other control character once decoded.
 *
 * Returns `/` plus the segments (`''` → `/`); a trailing slash is kept.
 */
export function normaliseUpstreamPath(raw: string): string {
  if (raw.length > 8192) throw badPath('longer than 8192 characters', raw)
  if (!PATH_CHARS.test(raw)) throw badPath('has characters that are not allowed in a URL path', raw)
  const path = raw.replace(/%[0-9A-Fa-f]{2}/g, (escape) => {
    const c = String.fromCharCode(parseInt(escape.slice(1), 16))
    return UNRESERVED.test(c) ? c : escape.toUpperCase()
  })
  if (path === '' || path === '/') return '/'
  if (!path.startsWith('/')) throw badPath('does not start with /', raw)
  const segments = path.slice(1).split('/')
  segments.forEach((segment, i) => {
    if (segment === '' && i < segments.length - 1) throw badPath('has an empty segment (//)', raw)
    let decoded = segment
    for (let round = 0; round < 4; round += 1) {
      let next: string
      try {
        next = decodeURIComponent(decoded)
      } catch {
        break // a lone `%` after decoding: not an escape any more, so not a dot either
      }
      if (next === decoded) break
      decoded = next
    }
    if (/[\x00-\x1f\x7f]/.test(decoded)) throw badPath('has a control character', raw)
    if (decoded.split(/[/\\]/).some((part) => part === '.' || part === '..')) throw badPath('has a . or .. segment', raw)
  })
  return path
}

/** Checks a raw query string (after `?`, may be empty): URL characters only (400 otherwise). */
export function checkQuery(raw: string): string {
  if (raw.length > 8192 || !QUERY_CHARS.test(raw)) {
    throw new GatewayError('invalid_request', 'the query string has characters that are not allowed in a URL', { details: { field: 'query' } })
  }
  return raw
}

/** The `tool` an HTTP call is, for `tool` policies: `<upstream>/<METHOD> <path>`. */
export function httpToolName(upstream: string, method: string, path: string): string {
  return `${upstream}/${method.toUpperCase()} ${path}`
}

/**
 * The upstream request target: `base_url`'s path (no trailing slash) + the normalised path +
 * the query. `''` as path (the agent asked for `/egress/<id>` itself) is `base_url` as given.
 */
export function upstreamTarget(basePath: string, path: string, query: string, bare: boolean): string {
  const base = basePath.replace(/\/+$/, '')
  const joined = bare ? base || '/' : `${base}${path}`
  return query === '' ? joined : `${joined}?${query}`
}
