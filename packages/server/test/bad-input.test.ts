/**
 * DESIGN §2.9 "Bad input never hurts", property-based: thousands of malformed requests over
 * every route the gateway registers (read from its own /openapi.json, so routes added later
 * are covered too) and over unknown routes. Every answer must be a 4xx with the §4 error
 * shape, or, for the few generated requests that happen to be valid, a 2xx `{ok: true}`;
 * never a 5xx, never a hang. Afterwards the gateway still serves and the store holds no
 * half-written state.
 *
 * Reproduce a run with BAD_INPUT_SEED=<seed printed at start>.
 */
import http from 'node:http'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, startTestGateway, type TestGateway } from './harness.js'

// ---------------------------------------------------------------------------------------------
// The contract (DESIGN §4)
// ---------------------------------------------------------------------------------------------

const STATUS_OF_CODE: Record<string, number> = {
  invalid_request: 400,
  schema_invalid: 422,
  unauthorized: 401,
  forbidden: 403,
  agent_killed: 403,
  policy_denied: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  budget_exceeded: 429,
}
/**
 * §4: "plus fields that help (e.g. retry_after_s, policy_id)"; `type` (= code) on the egress
 * routes, which the provider SDKs read.
 */
const HELPER_ERROR_FIELDS = new Set(['retry_after_s', 'policy_id', 'type'])

const BODY_LIMIT = 1024 * 1024 // default limit (DESIGN §2.9)
const REQUEST_TIMEOUT_MS = 10_000
const WORKERS = 8 // requests in flight
const RUNS_PER_WORKER = 260 // 8 × 260 = 2,080 requests (plus shrinking, if anything fails)

const SENDER = 'agent://bad/input/sender'
const OTHER_AGENT = 'agent://bad/input/other'
const RECEIVER = 'agent://bad/input/receiver' // nobody holds its key: nothing is ever delivered
/** The agent `{address_id}` paths name: it never sends or receives, so kills and policies on it touch no intent. */
const VICTIM = 'agent://bad/input/victim'
const ADDRESS_RE = /^agent:\/\/[a-z0-9][a-z0-9_-]{0,62}\/[a-z0-9][a-z0-9_-]{0,62}\/[a-z0-9][a-z0-9_-]{0,62}$/

// ---------------------------------------------------------------------------------------------
// Requests and a raw HTTP client (any method, duplicate and odd headers, declared or chunked bodies)
// ---------------------------------------------------------------------------------------------

interface BadRequest {
  /** `METHOD /template` of the route aimed at, or `unknown`. */
  route: string
  /** What is wrong with it (for statistics and failure messages). */
  kind: string
  method: string
  path: string
  headers: [string, string][]
  body?: Buffer
  chunked?: boolean
  /** Exact status the contract fixes for this request, when it does (unknown route, no key). */
  expectStatus?: number
}

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  text: string
  sse: boolean
  ms: number
}

const preview = (text: string, max = 160): string =>
  JSON.stringify(text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text)

function describeRequest(r: BadRequest): string {
  const headers = r.headers.map(([k, v]) => `${k}: ${preview(v, 80)}`).join(', ')
  const body = r.body === undefined ? 'none' : `${r.body.length} bytes${r.chunked ? ' chunked' : ''} ${preview(r.body.toString('utf8'))}`
  return `[${r.kind}] ${r.method} ${preview(r.path, 200)} headers {${headers}} body ${body}`
}

function withDescription(r: BadRequest): BadRequest {
  return Object.assign(r, { [fc.toStringMethod]: () => describeRequest(r) })
}

/** Connection resets seen on oversize bodies before the 413 could be read (retried; see `send`). */
let oversizeResets = 0

/**
 * One request. Bodies over the limit are sent like a client using `Expect: 100-continue`
 * would: headers first, then the body only if no early answer came within a second. A reset
 * of such an upload before any answer arrived (the gateway answers 413 and closes while the
 * rest of the body is still in flight) is retried twice and counted.
 */
async function send(base: URL, r: BadRequest): Promise<Answer> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await sendOnce(base, r)
    } catch (error) {
      const reset = /EPIPE|ECONNRESET|socket hang up/.test((error as Error).message)
      if (!reset || r.body === undefined || r.body.length <= BODY_LIMIT || attempt >= 2) throw error
      oversizeResets += 1
    }
  }
}

function sendOnce(base: URL, r: BadRequest): Promise<Answer> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    // keep-alive: the gateway, not this client, decides whether the connection closes.
    const headers: string[] = ['host', base.host, 'connection', 'keep-alive']
    for (const [name, value] of r.headers) headers.push(name, value)
    if (r.body !== undefined && !r.chunked) headers.push('content-length', String(r.body.length))
    let settled = false
    let responded = false
    const req = http.request({ host: base.hostname, port: base.port, method: r.method, path: r.path, headers, agent: false })
    const finish = (fn: () => void) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      fn()
    }
    const timer = setTimeout(() => {
      finish(() => reject(new Error(`no complete answer within ${REQUEST_TIMEOUT_MS} ms (hang)`)))
      req.destroy()
    }, REQUEST_TIMEOUT_MS)
    req.on('response', (res) => {
      responded = true
      const sse = String(res.headers['content-type'] ?? '').startsWith('text/event-stream')
      if (sse) {
        // A stream's headers arrived promptly: that is an answer. Leave it.
        finish(() => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: '', sse, ms: Date.now() - started }))
        res.destroy()
        req.destroy()
        return
      }
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        finish(() =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString('utf8'),
            sse,
            ms: Date.now() - started,
          }),
        )
        req.destroy()
      })
      res.on('error', (error) => finish(() => reject(new Error(`response cut: ${error.message}`))))
      res.on('aborted', () => finish(() => reject(new Error('response aborted before its end'))))
    })
    req.on('error', (error) => {
      // Writing the rest of an oversize body after the 413 fails: that is expected once answered.
      if (!responded) finish(() => reject(new Error(`request failed before an answer: ${error.message}`)))
    })
    const body = r.body
    if (body === undefined) {
      req.end()
    } else if (body.length > BODY_LIMIT) {
      req.flushHeaders()
      setTimeout(() => {
        if (responded || settled) return
        const step = 64 * 1024
        let offset = 0
        const pump = () => {
          while (offset < body.length && !responded && !settled) {
            const ok = req.write(body.subarray(offset, offset + step))
            offset += step
            if (!ok) return void req.once('drain', pump)
          }
          if (!responded && !settled) req.end()
        }
        pump()
      }, r.chunked ? 0 : 1_000)
    } else if (r.chunked) {
      const half = Math.floor(body.length / 2)
      req.write(body.subarray(0, half))
      req.end(body.subarray(half))
    } else {
      req.end(body)
    }
  })
}

/** Every way `a` breaks the contract for `r` (empty: fine). */
function contractProblems(r: BadRequest, a: Answer, routePathOf: (r: BadRequest) => string | null): string[] {
  const problems: string[] = []
  const requestId = a.headers['x-request-id']
  if (typeof requestId !== 'string' || requestId === '') problems.push('no x-request-id header')
  if (a.status >= 500) problems.push(`server error ${a.status}`)
  else if (a.status < 200 || (a.status >= 300 && a.status < 400) || a.status >= 600) problems.push(`unexpected status ${a.status}`)
  if (r.expectStatus !== undefined && a.status !== r.expectStatus) {
    problems.push(`status ${a.status}, the contract says ${r.expectStatus}`)
  }
  if (r.method === 'HEAD') return problems // no body to check
  const ok2xx = a.status >= 200 && a.status < 300
  if (ok2xx && a.sse) return problems // a stream opened for a request that happened to be valid
  const templ = routePathOf(r)
  if (ok2xx && templ === '/metrics') return problems // Prometheus text
  const contentType = String(a.headers['content-type'] ?? '')
  if (!contentType.startsWith('application/json')) problems.push(`content-type ${JSON.stringify(contentType)}`)
  let body: any
  try {
    body = JSON.parse(a.text)
  } catch {
    problems.push(`body is not JSON: ${preview(a.text)}`)
    return problems
  }
  if (ok2xx) {
    if (templ === '/openapi.json') {
      if (typeof body?.openapi !== 'string') problems.push('openapi.json without `openapi`')
    } else if (body === null || typeof body !== 'object' || Array.isArray(body) || body.ok !== true) {
      problems.push(`2xx body without ok: true: ${preview(a.text)}`)
    }
    return problems
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    problems.push(`error body is not an object: ${preview(a.text)}`)
    return problems
  }
  const topKeys = Object.keys(body).sort()
  if (topKeys.join(',') !== 'error,ok') problems.push(`error body keys ${JSON.stringify(topKeys)} (want exactly ok, error)`)
  if (body.ok !== false) problems.push('error body without ok: false')
  const error = body.error
  if (error === null || typeof error !== 'object' || Array.isArray(error)) {
    problems.push(`error is not an object: ${preview(a.text)}`)
    return problems
  }
  if (typeof error.code !== 'string' || !(error.code in STATUS_OF_CODE)) {
    problems.push(`error.code ${JSON.stringify(error.code)} is not a §4 client error code`)
  } else if (STATUS_OF_CODE[error.code] !== a.status) {
    problems.push(`error.code ${error.code} answered with status ${a.status} (want ${STATUS_OF_CODE[error.code]})`)
  }
  if (typeof error.message !== 'string' || error.message === '') problems.push('error.message is not a non-empty string')
  if (error.request_id !== requestId) problems.push(`error.request_id ${JSON.stringify(error.request_id)} ≠ x-request-id ${requestId}`)
  if ('details' in error && (error.details === null || typeof error.details !== 'object' || Array.isArray(error.details))) {
    problems.push('error.details is not an object')
  }
  for (const key of Object.keys(error)) {
    if (!['code', 'message', 'request_id', 'details'].includes(key) && !HELPER_ERROR_FIELDS.has(key)) {
      problems.push(`unexpected error field ${key}`)
    }
  }
  return problems
}

// ---------------------------------------------------------------------------------------------
// Routes, as the gateway publishes them
// ---------------------------------------------------------------------------------------------

interface RouteInfo {
  key: string // `POST /v1/intents/{intent_id}/resolve`
  method: string
  template: string
  access: string
  params: string[]
  query: string[]
  bodyProps: string[] | null // null: the route takes no body
  stream: boolean
  regex: RegExp
}

function routesFromOpenApi(spec: any): RouteInfo[] {
  const routes: RouteInfo[] = []
  for (const [template, ops] of Object.entries<any>(spec.paths)) {
    for (const [method, op] of Object.entries<any>(ops)) {
      const parameters: any[] = op.parameters ?? []
      const bodySchema = op.requestBody?.content?.['application/json']?.schema
      routes.push({
        key: `${method.toUpperCase()} ${template}`,
        method: method.toUpperCase(),
        template,
        access: String(op['x-access'] ?? 'unknown'),
        params: parameters.filter((p) => p.in === 'path').map((p) => String(p.name)),
        query: parameters.filter((p) => p.in === 'query').map((p) => String(p.name)),
        bodyProps: bodySchema ? Object.keys(bodySchema.properties ?? {}) : null,
        stream: op.responses?.['200']?.content?.['text/event-stream'] !== undefined,
        regex: new RegExp(`^${template.replace(/\{[a-z_]+\}/g, '[^/]+').replace(/[.]/g, '\\.')}$`),
      })
    }
  }
  return routes
}

// ---------------------------------------------------------------------------------------------
// Bad values (as raw JSON text, so that 1e309, -0, duplicate keys and \ud800 survive)
// ---------------------------------------------------------------------------------------------

const j = (value: unknown): string => JSON.stringify(value)
const objectText = (fields: [string, string][]): string => `{${fields.map(([k, v]) => `${j(k)}:${v}`).join(',')}}`

const deepText = (depth: number, shape: 'array' | 'object' | 'mixed'): string => {
  if (shape === 'array') return '['.repeat(depth) + ']'.repeat(depth)
  if (shape === 'object') return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
  const half = Math.floor(depth / 2)
  return '[{"a":'.repeat(half) + 'null' + '}]'.repeat(half)
}

/** Deep nesting: 1 to 10,000 levels, sometimes far deeper (still under the body limit). Shrinks toward 1. */
const deepArb = fc
  .tuple(
    fc.oneof(fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 150_000 })),
    fc.constantFrom<'array' | 'object' | 'mixed'>('array', 'object', 'mixed'),
  )
  .map(([depth, shape]) => deepText(shape === 'object' ? Math.min(depth, 100_000) : depth, shape))

const UNICODE_SAMPLES = [
  '😀🔥👩‍👩‍👧‍👦',
  '\u202eevil\u202c',
  'שלום עולם',
  'مرحبا',
  '\u0000',
  'a\u0000b',
  '\ufeff',
  '\u200b\u200d',
  'e\u0301\u0301\u0301',
  '\uffff',
  '𝕏𝕪𝕫',
  'ä',
  'İı',
]
/** JSON string literals with escapes a JS string cannot carry cleanly: lone surrogates, NUL. */
const ESCAPED_LITERALS = ['"\\ud800"', '"\\udfff"', '"\\udfff\\ud800x"', '"a\\ud83d"', '"\\u0000"', '"\\u0000\\u0001\\u001f"', '"\\\\"']

const unicodeArb = fc.oneof(
  fc.constantFrom(...UNICODE_SAMPLES).map(j),
  fc.constantFrom(...ESCAPED_LITERALS),
  fc.string({ unit: 'binary', maxLength: 40 }).map(j),
  fc.string({ unit: 'grapheme', maxLength: 40 }).map(j),
)

const hugeStringArb = fc
  .tuple(fc.integer({ min: 5_000, max: 200_000 }), fc.constantFrom('x', 'é', '😀', '\\u0000', '\\ud800', ' '))
  .map(([n, unit]) => `"${unit.repeat(Math.ceil(n / Math.max(1, unit.length)))}"`)

const BAD_ADDRESSES = [
  '',
  'agent://',
  'agent:/a/b/c',
  'agent:a/b/c',
  'agent://a/b',
  'agent://a/b/c/d',
  'agent://A/b/c',
  'agent://a/b/C',
  'agent://-a/b/c',
  'agent://_a/b/c',
  'agent://a b/c/d',
  'agent://a/b/c ',
  ' agent://a/b/c',
  'agent://a//c',
  'agent:///b/c',
  'agent://a/b/',
  'agent://a/b/c/',
  'http://a/b/c',
  'AGENT://a/b/c',
  'agent://a/b/c?x=1',
  'agent://a/b/c#frag',
  'agent://a/b/c\u0000',
  'agent://a/b/c\n',
  'agent://ä/b/c',
  'agent://a/b/\u202ec',
  'agent://a/b/😀',
  `agent://a/b/${'c'.repeat(64)}`,
  `agent://${'a'.repeat(300)}/b/c`,
  `agent://a/b/${'c'.repeat(10_000)}`,
  'agent://../b/c',
  'agent://./b/c',
  'agent://a%2Fb/c/d',
  'agent://a\\b/c/d',
  'addr_',
  'addr_!!!',
]
const badAddressArb = fc.oneof(
  fc.constantFrom(...BAD_ADDRESSES).map(j),
  fc.string({ maxLength: 30 }).map((s) => j(`agent://${s}`)),
  fc.constantFrom('"agent://a/b/\\ud800"', '"agent://a/b/c\\u0000"'),
)

const NUMBER_LITERALS = [
  '1e309',
  '-1e309',
  '-0',
  '-0.0',
  '0',
  '-1',
  '1.5',
  '1e-400',
  '9007199254740993',
  '-9007199254740993',
  '123456789012345678901234567890123456789012345678901234567890',
  '1E+2',
  '0.1e1',
  '4294967296',
  '2147483648',
]

const jsonValueArb = fc.jsonValue({ maxDepth: 3 }).map((v) => j(v) ?? 'null')

/** A value of (probably) the wrong type or shape for any field. */
const badValueArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NUMBER_LITERALS) },
  { weight: 3, arbitrary: fc.constantFrom('true', 'false', 'null', '[]', '{}', '[1,"a",null]', '{"a":{"b":[]}}', '""', '" "') },
  { weight: 3, arbitrary: unicodeArb },
  { weight: 2, arbitrary: badAddressArb },
  { weight: 1, arbitrary: hugeStringArb },
  { weight: 1, arbitrary: deepArb },
  { weight: 2, arbitrary: jsonValueArb },
  { weight: 1, arbitrary: fc.double().map((d) => (Number.isFinite(d) ? String(d) : '1e400')) },
  { weight: 1, arbitrary: fc.bigInt().map(String) },
  { weight: 1, arbitrary: fc.constantFrom('"COMPLETED "', '"completed"', '"RUNNING"', '"admin "', '"ADMIN"', '"agent"') },
)

const BAD_JSON = [
  '{',
  '}',
  '{"a":}',
  '{"a" 1}',
  "{'a':1}",
  '{a:1}',
  '{"a":1,}',
  '[1,]',
  '{"a":1}}',
  '{"a":1}{"b":2}',
  'nul',
  'tru',
  'undefined',
  'NaN',
  'Infinity',
  '-Infinity',
  '0x10',
  '01',
  '1.',
  '.5',
  '+1',
  '"\\x41"',
  '"\\u12"',
  '"\\ud800\\u"',
  '"unterminated',
  '"a\nb"',
  '"tab\there"',
  '\u0000',
  '{"a":1}\u0000',
  '/* comment */ {}',
  '{"a":1} // comment',
  '\ufeff{"a":1}',
  '[[[[[[[[[[',
  ']]]]',
  '{"a":[}',
  '{"__proto__":',
  '<xml/>',
  'a=1&b=2',
]

// ---------------------------------------------------------------------------------------------
// Keys and route-specific "valid" parts (the base that one thing is broken in)
// ---------------------------------------------------------------------------------------------

interface Keys {
  admin: string
  agent: string
  otherAgent: string
  operator: string
  viewer: string
  revoked: string
}

/** Valid request bodies of the routes this test knows, as JSON fields (raw values). */
const TEMPLATES: Record<string, [string, string][]> = {
  'POST /v1/intents': [
    ['intent_type', j('bad.input.v1')],
    ['to_agent', j(RECEIVER)],
    ['payload', '{"n":1}'],
  ],
  'POST /v1/intents/{intent_id}/resolve': [
    ['status', j('COMPLETED')],
    ['result', '{"ok":1}'],
  ],
  'POST /v1/intents/{intent_id}/ack': [],
  'POST /v1/keys': [
    ['role', j('viewer')],
    ['name', j('bad-input')],
  ],
  'POST /v1/mesh/agents': [
    ['address', j('agent://bad/input/registered')],
    ['display_name', j('Registered')],
    ['metadata', '{"team":"bad-input"}'],
  ],
  'POST /v1/mesh/heartbeat': [
    ['metrics', '{"intents_total":1,"intents_succeeded":1,"intents_failed":0,"avg_latency_ms":5,"cost_usd":0}'],
  ],
  'POST /v1/mesh/agents/{address_id}/kill': [
    ['reason', j('bad input')],
    ['cancel_pending', 'false'],
  ],
  'POST /v1/mesh/agents/{address_id}/resume': [['reason', j('bad input')]],
  'POST /v1/mesh/agents/{address_id}/policies': [
    ['kind', j('rate')],
    ['direction', j('send')],
    ['max_per_hour', '100'],
    ['on_breach', j('block')],
  ],
  'PUT /v1/policies/{policy_id}': [
    ['kind', j('rate')],
    ['direction', j('send')],
    ['max_per_hour', '100'],
    ['on_breach', j('block')],
  ],
  'POST /v1/policies/evaluate': [
    ['from_agent', j(SENDER)],
    ['to_agent', j(RECEIVER)],
    ['intent_type', j('bad.input.v1')],
  ],
  'POST /v1/alerts/webhooks': [
    ['url', j('http://127.0.0.1:9/bad-input')],
    ['event_types', '["agent.killed"]'],
  ],
}

/** Known query parameters of any route (including ones a route may not take). */
const QUERY_NAMES = [
  'since',
  'wait_seconds',
  'lease_seconds',
  'max_in_flight',
  'limit',
  'after',
  'agent',
  'direction',
  'status',
  'health',
  'window',
  'event_type',
  'address',
  'after_seq',
  'action_prefix',
  'target',
]
const BAD_QUERY_VALUES = [
  '-1',
  'abc',
  '1e3',
  '1.5',
  '',
  '99999999999',
  '100000',
  '0',
  '-0',
  'NaN',
  'Infinity',
  '%201',
  '1%20',
  '0x10',
  '+1',
  '%zz',
  '%E0%A4%A',
  '%ED%A0%80',
  '1%00',
  encodeURIComponent('😀'),
  encodeURIComponent('\u202e1'),
  '9'.repeat(400),
  'agent%3A%2F%2FA%2Fb%2Fc',
  'agent://a/b',
  'SENT',
  'sent%00',
  'true',
  '[]',
  '{}',
]

const BAD_PATH_SEGMENTS = [
  '%E0%A4%A',
  '%',
  '%%',
  '%zz',
  '%C0%AF',
  '%ED%A0%80',
  '%FF',
  '..',
  '.',
  '%2e%2e',
  '..%2F..%2Fetc%2Fpasswd',
  '%2F',
  '%00',
  '%0A',
  '%20',
  '+',
  'a'.repeat(5_000),
  `addr_${'A'.repeat(65)}`,
  'addr_',
  'addr_!!!',
  'addr_0000000000000000000000',
  encodeURIComponent('😀'),
  encodeURIComponent('\u202eabc'),
  encodeURIComponent('agent://A/b/c'),
  encodeURIComponent('agent://a/b'),
  'agent:%2F%2Fa',
  'null',
  'undefined',
  '-1',
  '0',
  '1e309',
  '00000000-0000-0000-0000-00000000000g',
  '00000000-0000-0000-0000-000000000000',
  `key_${'z'.repeat(16)}`,
  'KEY_doesnotexist',
]

const latin1Arb = (min: number, max: number) =>
  fc.string({
    unit: fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff })).map((c) => String.fromCharCode(c)),
    minLength: min,
    maxLength: max,
  })

const garbageKeyArb = fc.oneof(
  latin1Arb(0, 60),
  fc.constantFrom('cp_', 'cp_x', `cp_${'A'.repeat(43)}`, `cp_${'A'.repeat(200)}`, 'Bearer', 'null', 'undefined', ' ', '\t'),
  fc.string({ unit: fc.constantFrom(...'0123456789abcdefXYZ'), minLength: 43, maxLength: 43 }).map((s) => `cp_${s}`),
  fc.integer({ min: 1_000, max: 6_000 }).map((n) => `cp_${'a'.repeat(n)}`),
)

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

function buildArbitrary(routes: RouteInfo[], keys: Keys): { all: fc.Arbitrary<BadRequest>; of: (key: string) => fc.Arbitrary<BadRequest> | undefined } {
  const allKeys = [keys.admin, keys.agent, keys.otherAgent, keys.operator, keys.viewer]

  /** The key a route is meant to be called with (mostly), or another valid one. */
  const keyFor = (route: RouteInfo): fc.Arbitrary<string | null> => {
    const natural: Record<string, string[]> = {
      public: [keys.admin],
      admin: [keys.admin],
      operator: [keys.admin, keys.operator],
      viewer: [keys.admin, keys.viewer, keys.operator],
      agent: [keys.agent],
      agent_or_viewer: [keys.agent, keys.admin, keys.viewer],
      sender: [keys.agent, keys.admin, keys.operator],
    }
    return fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(...(natural[route.access] ?? allKeys)) },
      { weight: 1, arbitrary: fc.constantFrom(...allKeys) },
    )
  }

  const keyHeaders = (key: string | null): fc.Arbitrary<[string, string][]> =>
    key === null
      ? fc.constant([])
      : fc.oneof(
          { weight: 4, arbitrary: fc.constant<[string, string][]>([['x-api-key', key]]) },
          { weight: 1, arbitrary: fc.constant<[string, string][]>([['authorization', `Bearer ${key}`]]) },
          { weight: 1, arbitrary: fc.constant<[string, string][]>([['Authorization', `bearer   ${key}  `]]) },
        )

  const paramValue = (name: string): fc.Arbitrary<string> => {
    switch (name) {
      case 'intent_id':
        return fc.uuid()
      case 'org':
        return fc.constant('bad')
      case 'workspace':
        return fc.constant('input')
      case 'name':
        return fc.constant('sender')
      case 'address_id':
        return fc.constantFrom(encodeURIComponent(VICTIM), VICTIM, 'addr_0000000000000000000000')
      case 'key_id':
        return fc.constant('key_0000000000000000')
      default:
        return fc.constantFrom('x', 'addr_0000000000000000000000', '00000000-0000-4000-8000-000000000000')
    }
  }

  const pathWith = (route: RouteInfo, values: Record<string, string>): string =>
    route.template.replace(/\{([a-z_]+)\}/g, (_m, name: string) => values[name] ?? 'x')

  const validPath = (route: RouteInfo): fc.Arbitrary<string> =>
    route.params.length === 0
      ? fc.constant(route.template)
      : fc
          .tuple(...route.params.map((p) => paramValue(p)))
          .map((vals) => pathWith(route, Object.fromEntries(route.params.map((p, i) => [p, vals[i] as string]))))

  const baseFields = (route: RouteInfo): [string, string][] =>
    TEMPLATES[route.key] ?? (route.bodyProps ?? []).map((name): [string, string] => [name, j('x')])

  const takesBody = (route: RouteInfo) => route.method === 'POST' || route.method === 'PUT'

  const jsonBody = (text: string): Buffer => Buffer.from(text, 'utf8')
  const jsonCt: [string, string] = ['content-type', 'application/json']

  /** Extra header noise on any request. */
  const noiseArb: fc.Arbitrary<[string, string][]> = fc
    .array(
      fc.oneof(
        fc.tuple(fc.constant('x-trace-id'), latin1Arb(0, 300)),
        fc.tuple(fc.constant('traceparent'), fc.oneof(latin1Arb(0, 80), fc.constant('00-' + '0'.repeat(32) + '-' + '0'.repeat(16) + '-00'))),
        fc.tuple(fc.constant('last-event-id'), fc.constantFrom('-1', 'abc', '99999999999999999999', '1e3', '')),
        fc.tuple(fc.constant('if-match'), fc.constantFrom('"3"', 'W/"1"', '*', 'abc', '-1', '')),
        fc.tuple(fc.constant('accept'), fc.oneof(fc.constantFrom('text/html', '*/*', 'application/xml', 'text/event-stream'), latin1Arb(0, 20))),
        fc.tuple(fc.constant('x-request-id'), latin1Arb(0, 40)),
        fc.tuple(fc.constant('x-forwarded-for'), latin1Arb(0, 40)),
        fc.tuple(fc.constant('cookie'), latin1Arb(0, 100)),
      ),
      { maxLength: 3 },
    )
    .map((pairs) => pairs.map(([k, v]): [string, string] => [k, String(v)]))

  const finish = (parts: {
    route: string
    kind: string
    method: string
    path: string
    headers: [string, string][]
    body?: Buffer
    chunked?: boolean
    expectStatus?: number
  }): BadRequest => withDescription({ ...parts })

  // -- 1. authentication: missing, garbage, odd forms, revoked, both headers --------------------
  const authArb = (route: RouteInfo) =>
    fc
      .tuple(
        validPath(route),
        fc.oneof(
          fc.constant<[string, [string, string][]]>(['no key', []]),
          garbageKeyArb.map((k): [string, [string, string][]] => ['garbage x-api-key', [['x-api-key', k]]]),
          garbageKeyArb.map((k): [string, [string, string][]] => ['garbage bearer', [['authorization', `Bearer ${k}`]]]),
          fc
            .constantFrom(
              'Basic dXNlcjpwYXNz',
              'Bearer',
              'Bearer ',
              'bearer',
              'Token abc',
              `Bearer ${keys.admin} extra`,
              `Bearer  ${keys.admin.slice(0, -1)}`,
              `Bearer ${keys.admin.toLowerCase()}`,
              `Digest ${keys.admin}`,
              keys.admin,
              '',
            )
            .map((v): [string, [string, string][]] => ['odd authorization', [['authorization', v]]]),
          fc.constant<[string, [string, string][]]>(['revoked key', [['x-api-key', keys.revoked]]]),
          fc.constant<[string, [string, string][]]>([
            'garbage x-api-key beside a valid bearer',
            [
              ['x-api-key', 'cp_notakey'],
              ['authorization', `Bearer ${keys.admin}`],
            ],
          ]),
          fc.constant<[string, [string, string][]]>([
            'duplicate x-api-key',
            [
              ['x-api-key', keys.admin],
              ['x-api-key', keys.admin],
            ],
          ]),
          fc.constant<[string, [string, string][]]>(['empty x-api-key', [['x-api-key', '']]]),
        ),
        noiseArb,
      )
      .map(([path, [what, auth], noise]) => {
        const body = takesBody(route) ? jsonBody(objectText(baseFields(route))) : undefined
        const missing = auth.length === 0
        return finish({
          route: route.key,
          kind: `auth: ${what}`,
          method: route.method,
          path,
          headers: [...auth, ...(body ? [jsonCt] : []), ...noise],
          ...(body ? { body } : {}),
          ...(missing && route.access !== 'public' ? { expectStatus: 401 } : {}),
        })
      })

  // -- 2. malformed JSON bodies -------------------------------------------------------------------
  const badJsonArb = (route: RouteInfo) =>
    fc
      .tuple(
        validPath(route),
        keyFor(route).chain(keyHeaders),
        fc.oneof(
          fc.constantFrom(...BAD_JSON).map((t): [string, Buffer] => ['bad JSON', jsonBody(t)]),
          fc
            .tuple(fc.constant(objectText(baseFields(route))), fc.nat())
            .filter(([t]) => t.length > 1)
            .map(([t, n]): [string, Buffer] => ['truncated JSON', jsonBody(t.slice(0, 1 + (n % (t.length - 1))))]),
          fc
            .constantFrom(
              Buffer.from([0xff, 0xfe, 0x7b, 0x7d]),
              Buffer.from('{"a":"\xff\xfe"}', 'latin1'),
              Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d]),
              Buffer.from([0xc0, 0x80]),
              Buffer.from('{"a":1}', 'utf16le'),
            )
            .map((b): [string, Buffer] => ['invalid UTF-8 / other encoding', b]),
          fc
            .constantFrom('[]', '[{}]', `[${objectText(baseFields(route))}]`, '"string"', 'null', 'true', '0', '1e309', '-0', '""')
            .map((t): [string, Buffer] => ['not an object', jsonBody(t)]),
          deepArb.map((t): [string, Buffer] => ['deeply nested body', jsonBody(t)]),
          fc.constantFrom(' ', '\n\t', '\u00a0').map((t): [string, Buffer] => ['blank body', jsonBody(t)]),
        ),
        fc.constantFrom<[string, string][]>([jsonCt], [], [['content-type', 'text/plain']]),
        noiseArb,
      )
      .map(([path, auth, [what, body], ct, noise]) =>
        finish({
          route: route.key,
          kind: `body: ${what}`,
          method: route.method,
          path,
          headers: [...auth, ...ct, ...noise],
          body,
        }),
      )

  // -- 3. wrong types, unknown, missing and duplicate fields -------------------------------------
  const fieldArb = (route: RouteInfo) => {
    const fields = baseFields(route)
    const names = fields.map(([k]) => k)
    const unknownName = fc.constantFrom('__proto__', 'constructor', 'prototype', '', ' ', 'ok', 'intent_id', 'status', 'x'.repeat(5_000), '😀', 'a\u0000b', 'hasOwnProperty')
    const mutation: fc.Arbitrary<[string, [string, string][]]> = fc.oneof(
      // one field of the wrong type
      ...(names.length > 0
        ? [
            fc.tuple(fc.constantFrom(...names), badValueArb).map(([name, value]): [string, [string, string][]] => [
              `field ${name}: wrong type or value`,
              fields.map(([k, v]): [string, string] => [k, k === name ? value : v]),
            ]),
            // every field wrong at once
            fc.array(badValueArb, { minLength: names.length, maxLength: names.length }).map((values): [string, [string, string][]] => [
              'every field wrong',
              names.map((k, i): [string, string] => [k, values[i] as string]),
            ]),
            // a missing field
            fc.constantFrom(...names).map((name): [string, [string, string][]] => [
              `field ${name} missing`,
              fields.filter(([k]) => k !== name),
            ]),
            // duplicate key: valid first, bad second (JSON.parse keeps the last) or the other way
            fc.tuple(fc.constantFrom(...names), badValueArb, fc.boolean()).map(([name, value, badLast]): [string, [string, string][]] => {
              const valid = fields.find(([k]) => k === name)?.[1] ?? 'null'
              return [
                `field ${name} duplicated`,
                [...fields, [name, badLast ? value : valid], ...(badLast ? [] : ([[name, value]] as [string, string][]))],
              ]
            }),
          ]
        : []),
      // an unknown field with a bad value (only control objects refuse unknown fields)
      fc.tuple(unknownName, badValueArb).map(([name, value]): [string, [string, string][]] => [
        'unknown field',
        [...fields, [name, value]],
      ]),
      // many-KB strings in every string field
      fc.integer({ min: 2_000, max: 100_000 }).map((n): [string, [string, string][]] => [
        'huge strings in fields',
        fields.map(([k, v]): [string, string] => [k, v.startsWith('"') ? j(`${JSON.parse(v)}${'z'.repeat(n)}`) : v]),
      ]),
    )
    return fc
      .tuple(validPath(route), keyFor(route).chain(keyHeaders), mutation, noiseArb)
      .map(([path, auth, [what, fs], noise]) =>
        finish({
          route: route.key,
          kind: `fields: ${what}`,
          method: route.method,
          path,
          headers: [...auth, jsonCt, ...noise],
          body: jsonBody(objectText(fs)),
        }),
      )
  }

  // -- 4. oversize bodies (declared or chunked) ----------------------------------------------------
  const oversizeArb = (route: RouteInfo) =>
    fc
      .tuple(
        validPath(route),
        keyFor(route).chain(keyHeaders),
        fc.oneof(fc.integer({ min: 1, max: 512 * 1024 }), fc.constantFrom(1, 2, 512 * 1024)),
        fc.boolean(),
        fc.constantFrom('json', 'garbage'),
      )
      .map(([path, auth, over, chunked, shape]) => {
        const size = BODY_LIMIT + over
        const head = `{"intent_type":"bad.input.v1","to_agent":${j(RECEIVER)},"payload":{"s":"`
        const text = shape === 'json' ? head + 'x'.repeat(size - head.length - 4) + '"}}' : 'q'.repeat(size)
        return finish({
          route: route.key,
          kind: `oversize body (${size} bytes${chunked ? ', chunked' : ''})`,
          // Node's client frames a chunked body on POST, PUT and PATCH only.
          method: route.method === 'PUT' || route.method === 'PATCH' ? route.method : 'POST',
          path,
          headers: [...auth, jsonCt],
          body: jsonBody(text),
          chunked,
        })
      })

  // -- 5. query parameters (routes that take some) -----------------------------------------------
  const queryArb = (route: RouteInfo) => {
    const own = route.query
    const names = [...new Set([...own, ...QUERY_NAMES])]
    const badOwn = fc.tuple(fc.constantFrom(...own), fc.constantFrom(...BAD_QUERY_VALUES))
    const anyPair = fc.tuple(fc.constantFrom(...names), fc.constantFrom(...BAD_QUERY_VALUES))
    const query: fc.Arbitrary<[string, string]> = fc.oneof(
      fc
        .tuple(badOwn, fc.array(anyPair, { maxLength: 3 }))
        .map(([first, rest]): [string, string] => ['bad values', [first, ...rest].map(([k, v]) => `${k}=${v}`).join('&')]),
      fc.tuple(fc.constantFrom(...own), fc.constantFrom('1', '2', 'abc', '')).map(([k, v]): [string, string] => ['repeated parameter', `${k}=1&${k}=${v}`]),
      fc
        .tuple(fc.constantFrom(...own), fc.constantFrom('&&&', '=', '==&=', '%', '[]=1', '[a]=b', ';x=1', '#frag'))
        .map(([k, junk]): [string, string] => ['garbage query', `${k}${junk.startsWith('[') || junk.startsWith(';') ? junk : `=${junk}`}&${k}`]),
      fc.constantFrom(...own).map((k): [string, string] => ['long value', `${k}=${'1'.repeat(4_000)}`]),
    )
    return fc
      .tuple(validPath(route), keyFor(route).chain(keyHeaders), query, noiseArb)
      .map(([path, auth, [what, q], noise]) => {
        const body = takesBody(route) ? jsonBody(objectText(baseFields(route))) : undefined
        return finish({
          route: route.key,
          kind: `query: ${what}`,
          method: route.method,
          path: `${path}?${q}`,
          headers: [...auth, ...(body ? [jsonCt] : []), ...noise],
          ...(body ? { body } : {}),
        })
      })
  }

  /** Routes that take no query parameters ignore them: bad ones ride along with a wrong key. */
  const ignoredQueryArb = (route: RouteInfo) =>
    fc
      .tuple(validPath(route), fc.constantFrom(...BAD_QUERY_VALUES), fc.constantFrom(...QUERY_NAMES), garbageKeyArb)
      .map(([path, value, name, key]) =>
        finish({
          route: route.key,
          kind: 'query (ignored) + garbage key',
          method: route.method,
          path: `${path}?${name}=${value}&${name}=${value}`,
          headers: [['x-api-key', key]],
          ...(route.access !== 'public' ? { expectStatus: 401 } : {}),
        }),
      )

  // -- 6. path parameters -------------------------------------------------------------------------
  const pathArb = (route: RouteInfo) =>
    fc
      .tuple(
        fc.constantFrom(...route.params),
        fc.oneof(fc.constantFrom(...BAD_PATH_SEGMENTS), fc.string({ unit: fc.constantFrom(...'abcXYZ019%._~-!$&()*+,;=:@'), maxLength: 40 })),
        fc.tuple(...route.params.map((p) => paramValue(p))),
        keyFor(route).chain(keyHeaders),
        noiseArb,
      )
      .map(([target, bad, vals, auth, noise]) => {
        const values = Object.fromEntries(route.params.map((p, i) => [p, p === target ? bad : (vals[i] as string)]))
        const body = takesBody(route) ? jsonBody(objectText(baseFields(route))) : undefined
        return finish({
          route: route.key,
          kind: `path: bad ${target}`,
          method: route.method,
          path: pathWith(route, values),
          headers: [...auth, ...(body ? [jsonCt] : []), ...noise],
          ...(body ? { body } : {}),
        })
      })

  // -- 7. odd headers: x-instance-id, Idempotency-Key, Content-Type, duplicates ------------------
  // Headers a route ignores do not make a request invalid, so each such request also carries
  // one thing its route refuses: the header the route reads, else bad JSON, a bad query value
  // or a wrong key.
  const badInstanceId = fc
    .oneof(
      fc.constant(''),
      latin1Arb(129, 300),
      latin1Arb(0, 20).map((s) => `${s}\u00e9`),
      fc.constant('\t'),
      fc.constant('\u00a0'),
    )
    .map((v): [string, string][] => [['x-instance-id', v]])
  const dupInstanceId = fc.constant<[string, string][]>([
    ['x-instance-id', 'a'],
    ['x-instance-id', 'b'.repeat(200)],
  ])
  const badIdempotencyKey = fc
    .oneof(fc.constant(''), fc.constant(' '), fc.constant('a b'), latin1Arb(256, 400), latin1Arb(0, 20).map((s) => `${s}\u00ff`))
    .map((v): [string, string][] => [['idempotency-key', v]])
  const dupIdempotencyKey = fc.constant<[string, string][]>([
    ['idempotency-key', 'k1'],
    ['idempotency-key', 'k2'],
  ])
  const oddContentType = fc.oneof(
    fc
      .constantFrom(
        'text/plain',
        'application/xml',
        'multipart/form-data; boundary=x',
        'application/json; charset=utf-16',
        'application/x-www-form-urlencoded',
        '',
        ';;;',
        'application/json, text/plain',
      )
      .map((v): [string, string][] => [['content-type', v]]),
    fc.constant<[string, string][]>([
      ['content-type', 'application/json'],
      ['content-type', 'text/plain'],
    ]),
    fc.constantFrom('gzip', 'br', 'identity, gzip', 'x').map((v): [string, string][] => [['content-encoding', v]]),
  )
  const READS_INSTANCE_ID = new Set(['GET /v1/agents/{org}/{workspace}/{name}/intents/stream', 'POST /v1/mesh/heartbeat'])
  const READS_IDEMPOTENCY_KEY = new Set(['POST /v1/intents'])

  const headerArb = (route: RouteInfo) => {
    const readsInstance = READS_INSTANCE_ID.has(route.key)
    const readsIdempotency = READS_IDEMPOTENCY_KEY.has(route.key)
    const refused: fc.Arbitrary<[string, string][]> = readsInstance
      ? fc.oneof(badInstanceId, dupInstanceId)
      : readsIdempotency
        ? fc.oneof(badIdempotencyKey, dupIdempotencyKey)
        : fc.constant([])
    const extras = fc.array(fc.oneof(badInstanceId, dupInstanceId, badIdempotencyKey, dupIdempotencyKey, oddContentType), {
      maxLength: 2,
    })
    /** For routes that read none of these headers: what else makes the request invalid. */
    const otherwise: fc.Arbitrary<{ what: string; body?: Buffer; query?: string; key?: [string, string][] }> =
      readsInstance || readsIdempotency
        ? fc.constant({ what: '' })
        : takesBody(route)
          ? fc.constantFrom(...BAD_JSON).map((t) => ({ what: ' + bad JSON', body: jsonBody(t) }))
          : route.query.length > 0
            ? fc
                .tuple(fc.constantFrom(...route.query), fc.constantFrom('abc', '-1', '1.5', '%zz', '99999999999'))
                .map(([k, v]) => ({ what: ' + bad query', query: `?${k}=${v}` }))
            : garbageKeyArb.map((k) => ({ what: ' + garbage key', key: [['x-api-key', k]] as [string, string][] }))
    return fc
      .tuple(validPath(route), keyFor(route).chain(keyHeaders), refused, extras, otherwise, noiseArb)
      .map(([path, auth, must, more, other, noise]) => {
        const headers = [...must, ...more.flat()]
        const body = other.body ?? (takesBody(route) ? jsonBody(objectText(baseFields(route))) : undefined)
        const hasCt = headers.some(([k]) => k === 'content-type')
        return finish({
          route: route.key,
          kind: `headers: ${[...new Set(headers.map(([k]) => k))].join(', ') || 'none'}${other.what}`,
          method: route.method,
          path: path + (other.query ?? ''),
          headers: [...(other.key ?? auth), ...(body && !hasCt ? [jsonCt] : []), ...headers, ...noise],
          ...(body ? { body } : {}),
        })
      })
  }

  // -- 8. unknown routes and wrong methods ------------------------------------------------------------
  const known = (method: string, path: string) => routes.some((r) => r.method === method && r.regex.test(path.split('?')[0] as string))
  const unknownPaths = [
    '/v1',
    '/v1/',
    '/v1/intents/',
    '/v2/intents',
    '/V1/INTENTS',
    '/v1/intents/x/y/z',
    '/v1//intents',
    '//v1/intents',
    '/v1/keys/',
    '/v1/unknown',
    '/v1/../health',
    '/v1/%2e%2e/health',
    '/v1/intents%2F',
    '/v1/mesh/agents/x/y/z/w',
    '/v1/agents/a/b/c/intents',
    '/v1/agents/a/b/intents/stream',
    `/v1/${'a'.repeat(6_000)}`,
    '/v1/intents/%E0%A4%A/events/x',
    '/v1/%C3%A9',
    '/v1/intents?since=1',
  ]
  const unknownArb = fc
    .tuple(
      fc.oneof(
        fc.tuple(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'), fc.constantFrom(...unknownPaths)),
        fc.tuple(fc.constantFrom('PATCH', 'OPTIONS', 'PUT', 'DELETE', 'POST', 'HEAD', 'TRACE'), fc.constantFrom(...routes.map((r) => r.template))).map(
          ([m, t]): [string, string] => [m, t.replace(/\{[a-z_]+\}/g, 'x')],
        ),
        fc.string({ unit: fc.constantFrom(...'abcz09/._-%~'), maxLength: 30 }).map((s): [string, string] => ['GET', `/v1/zz${s}`]),
      ),
      fc.constantFrom<[string, string][]>([], [['x-api-key', keys.admin]], [['x-api-key', 'garbage']]),
      fc.option(fc.constantFrom(...BAD_JSON, '{}'), { nil: undefined }),
    )
    .filter(([[method, path]]) => !known(method, path))
    .map(([[method, path], auth, body]) =>
      finish({
        route: 'unknown',
        kind: 'unknown route',
        method,
        path,
        headers: [...auth, ...(body !== undefined ? [jsonCt] : [])],
        ...(body !== undefined && method !== 'GET' && method !== 'HEAD' && method !== 'TRACE' ? { body: jsonBody(body) } : {}),
        expectStatus: 404,
      }),
    )

  // -- 9. sends that are valid but weird (these may be accepted: they are counted) -----------------
  const idemKeys = ['idem-a', 'idem-b', 'idem-c']
  const weirdSendArb = fc
    .tuple(
      fc.oneof(
        fc.jsonValue({ maxDepth: 4 }).map((v): [string, string] => ['json payload', objectText([['v', j(v) ?? 'null']])]),
        unicodeArb.map((u): [string, string] => ['unicode payload', objectText([[JSON.parse(u) as string, u]])]),
        fc.constantFrom(...NUMBER_LITERALS).map((n): [string, string] => ['number payload', `{"n":${n}}`]),
        deepArb.map((d): [string, string] => ['deeply nested payload', `{"deep":${d}}`]),
        hugeStringArb.map((s): [string, string] => ['big payload', `{"s":${s}}`]),
        fc.integer({ min: 100, max: 20_000 }).map((n): [string, string] => ['many keys', `{${Array.from({ length: n }, (_v, i) => `"k${i}":${i}`).join(',')}}`]),
        fc.constantFrom('{"__proto__":{"polluted":1}}', '{"constructor":{"prototype":{"x":1}}}', '{"":""}').map((p): [string, string] => ['prototype keys', p]),
      ),
      fc.option(fc.tuple(fc.constantFrom('zz_unknown', 'ok', 'intent_id', 'status'), badValueArb), { nil: undefined }),
      fc.option(fc.constantFrom(...idemKeys), { nil: undefined }),
      fc.boolean(),
      unicodeArb,
      noiseArb,
    )
    .map(([[what, payload], extra, idem, asAdmin, correlation, noise]) => {
      const fields: [string, string][] = [
        ['intent_type', j('bad.input.weird.v1')],
        ['to_agent', j(RECEIVER)],
        ['payload', payload],
        ...(asAdmin ? ([['from_agent', j(SENDER)]] as [string, string][]) : []),
        ...(correlation.length < 200 ? ([['correlation_id', correlation]] as [string, string][]) : []),
        ...(extra ? [extra] : []),
      ]
      return finish({
        route: 'POST /v1/intents',
        kind: `weird send: ${what}${extra ? `, extra ${extra[0]}` : ''}${idem ? ', idempotent' : ''}`,
        method: 'POST',
        path: '/v1/intents',
        headers: [['x-api-key', asAdmin ? keys.admin : keys.agent], jsonCt, ...(idem ? ([['idempotency-key', idem]] as [string, string][]) : []), ...noise],
        body: jsonBody(objectText(fields)),
      })
    })

  const perRoute = routes.map((route) => {
    const weighted: fc.WeightedArbitrary<BadRequest>[] = [
      { weight: 2, arbitrary: authArb(route) },
      { weight: 2, arbitrary: headerArb(route) },
      { weight: 1, arbitrary: oversizeArb(route) },
      route.query.length > 0 ? { weight: 3, arbitrary: queryArb(route) } : { weight: 1, arbitrary: ignoredQueryArb(route) },
    ]
    if (route.params.length > 0) weighted.push({ weight: 3, arbitrary: pathArb(route) })
    if (takesBody(route)) weighted.push({ weight: 3, arbitrary: badJsonArb(route) }, { weight: 5, arbitrary: fieldArb(route) })
    // Public routes (health, metrics, the spec) have little to refuse: fewer requests go there.
    return { weight: route.access === 'public' ? 1 : 4, arbitrary: fc.oneof(...weighted) }
  })
  return {
    all: fc.oneof(...perRoute, { weight: 4, arbitrary: unknownArb }, { weight: 4, arbitrary: weirdSendArb }),
    /** Each route's own requests: tops up a route the random mix happened to reach too rarely. */
    of: (key: string) => perRoute[routes.findIndex((r) => r.key === key)]?.arbitrary,
  }
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

describe('bad input never hurts (DESIGN §2.9)', () => {
  let gw: TestGateway
  let keys: Keys
  let routes: RouteInfo[]
  const acceptedIntentIds = new Set<string>()
  const perRoute = new Map<string, number>()
  const perStatus = new Map<number, number>()
  let total = 0
  let slowest = 0

  beforeAll(async () => {
    gw = await startTestGateway()
    const create = async (role: string) => {
      const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role, name: `bad-input ${role}` })
      if (res.status !== 200) throw new Error(`${role} key: ${res.status} ${JSON.stringify(res.body)}`)
      return res.body as { key: string; key_id: string }
    }
    const revoked = await create('viewer')
    const revoke = await api(gw.url, gw.adminKey, 'DELETE', `/v1/keys/${revoked.key_id}`)
    if (revoke.status !== 200) throw new Error(`revoke: ${revoke.status}`)
    const victim = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: VICTIM })
    if (victim.status !== 200) throw new Error(`register ${VICTIM}: ${victim.status} ${JSON.stringify(victim.body)}`)
    keys = {
      admin: gw.adminKey,
      agent: await agentKey(gw, SENDER),
      otherAgent: await agentKey(gw, OTHER_AGENT),
      operator: (await create('operator')).key,
      viewer: (await create('viewer')).key,
      revoked: revoked.key,
    }
    const spec = await api(gw.url, null, 'GET', '/openapi.json')
    if (spec.status !== 200) throw new Error(`openapi.json: ${spec.status}`)
    routes = routesFromOpenApi(spec.body)
  })

  afterAll(() => gw?.close())

  it('publishes the routes this test aims at', () => {
    const published = routes.map((r) => r.key)
    for (const key of [
      'GET /health',
      'GET /openapi.json',
      'POST /v1/keys',
      'GET /v1/keys',
      'DELETE /v1/keys/{key_id}',
      'POST /v1/intents',
      'GET /v1/intents',
      'GET /v1/intents/{intent_id}',
      'GET /v1/intents/{intent_id}/events',
      'GET /v1/intents/{intent_id}/events/stream',
      'POST /v1/intents/{intent_id}/ack',
      'POST /v1/intents/{intent_id}/resolve',
      'GET /v1/agents/{org}/{workspace}/{name}/intents/stream',
      'POST /v1/mesh/agents',
      'GET /v1/mesh/agents',
      'GET /v1/mesh/agents/{address_id}',
    ]) {
      expect(published).toContain(key)
    }
  })

  it('answers ≥ 2,000 malformed requests over every route with a 4xx §4 error (never 5xx, never a hang)', async () => {
    const base = new URL(gw.url)
    const { all: arbitrary, of: arbitraryOf } = buildArbitrary(routes, keys)
    const routePathOf = (r: BadRequest): string | null => {
      const path = r.path.split('?')[0] as string
      return routes.find((route) => route.method === r.method && route.regex.test(path))?.template ?? null
    }
    const seedBase = Number(process.env['BAD_INPUT_SEED'] ?? Math.floor(Math.random() * 2 ** 31))
    console.log(`bad-input: BAD_INPUT_SEED=${seedBase} (worker i uses seed ${seedBase} + i), ${routes.length} routes`)
    const started = Date.now()

    const check = async (r: BadRequest): Promise<void> => {
      let answer: Answer
      try {
        answer = await send(base, r)
      } catch (error) {
        throw new Error(`${(error as Error).message}\n  request: ${describeRequest(r)}`)
      }
      total += 1
      slowest = Math.max(slowest, answer.ms)
      perRoute.set(r.route, (perRoute.get(r.route) ?? 0) + 1)
      perStatus.set(answer.status, (perStatus.get(answer.status) ?? 0) + 1)
      if (r.method === 'POST' && (r.path === '/v1/intents' || r.path.startsWith('/v1/intents?')) && answer.status === 200) {
        const id = (JSON.parse(answer.text) as { intent_id?: unknown }).intent_id
        if (typeof id === 'string') acceptedIntentIds.add(id)
      }
      const problems = contractProblems(r, answer, routePathOf)
      if (problems.length > 0) {
        throw new Error(
          `contract broken: ${problems.join('; ')}\n  request: ${describeRequest(r)}\n  answer: ${answer.status} ${preview(answer.text, 400)}`,
        )
      }
    }
    const property = fc.asyncProperty(arbitrary, check)
    const leastFor = (route: RouteInfo): number => (route.access === 'public' ? 5 : 20)

    const results = await Promise.allSettled(
      Array.from({ length: WORKERS }, (_v, i) => fc.assert(property, { numRuns: RUNS_PER_WORKER, seed: (seedBase + i) | 0, includeErrorInReport: true })),
    )
    // The mix is random: a route it reached too rarely gets the rest of its share on its own.
    for (const route of routes) {
      const missing = leastFor(route) - (perRoute.get(route.key) ?? 0)
      const own = arbitraryOf(route.key)
      if (missing <= 0 || !own) continue
      results.push(
        ...(await Promise.allSettled([fc.assert(fc.asyncProperty(own, check), { numRuns: missing * 2, seed: seedBase | 0, includeErrorInReport: true })])),
      )
    }
    const elapsed = Date.now() - started
    const statuses = [...perStatus.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`)
    console.log(
      `bad-input: ${total} requests in ${elapsed} ms (slowest answer ${slowest} ms), statuses ${statuses.join(' ')}, ` +
        `${acceptedIntentIds.size} weird-but-valid intents accepted, ${oversizeResets} oversize uploads reset before the 413 (retried)`,
    )
    const failures = results.flatMap((r, i) => (r.status === 'rejected' ? [`worker ${i}: ${(r.reason as Error).message}`] : []))
    if (failures.length > 0) {
      throw new Error(`${failures.length} of ${WORKERS} workers found requests that break the contract:\n\n${failures.join('\n\n')}`)
    }

    expect(total).toBeGreaterThanOrEqual(2_000)
    for (const route of routes) {
      expect(perRoute.get(route.key) ?? 0, `requests aimed at ${route.key}`).toBeGreaterThanOrEqual(leastFor(route))
    }
    expect(perRoute.get('unknown') ?? 0).toBeGreaterThanOrEqual(20)
  }, 120_000)

  it('still serves afterwards and holds no half-written state', async () => {
    const health = await api(gw.url, null, 'GET', '/health')
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ ok: true })
    // Still does real work: a send, read back.
    const sent = await api(gw.url, keys.agent, 'POST', '/v1/intents', {
      intent_type: 'bad.input.after.v1',
      to_agent: RECEIVER,
      payload: { after: true },
    })
    expect(sent.status).toBe(200)
    acceptedIntentIds.add(sent.body.intent_id as string)
    const read = await api(gw.url, keys.agent, 'GET', `/v1/intents/${sent.body.intent_id}`)
    expect(read.status).toBe(200)
    expect(read.body.intent.payload).toEqual({ after: true })

    const db = new Database(join(gw.dataDir, 'chokepoint.db'), { readonly: true, fileMustExist: true })
    try {
      const one = (sql: string): number => (db.prepare(sql).get() as { n: number }).n
      const intentIds = (db.prepare('SELECT intent_id FROM intents').all() as { intent_id: string }[]).map((r) => r.intent_id)
      // Every intent in the store was answered 2xx, and every 2xx answer is in the store.
      expect(new Set(intentIds)).toEqual(acceptedIntentIds)
      expect(intentIds.length).toBe(acceptedIntentIds.size)
      // Each has exactly its events 1 and 2, nothing else, and there are no orphan events.
      expect(one('SELECT count(*) AS n FROM intent_events')).toBe(2 * intentIds.length)
      expect(
        one(`SELECT count(*) AS n FROM intents i
             WHERE NOT EXISTS (SELECT 1 FROM intent_events e WHERE e.intent_id = i.intent_id AND e.seq = 1 AND e.event_type = 'intent.created')
                OR NOT EXISTS (SELECT 1 FROM intent_events e WHERE e.intent_id = i.intent_id AND e.seq = 2 AND e.event_type = 'intent.submitted')`),
      ).toBe(0)
      expect(one('SELECT count(*) AS n FROM intent_events e WHERE NOT EXISTS (SELECT 1 FROM intents i WHERE i.intent_id = e.intent_id)')).toBe(0)
      expect(one('SELECT count(*) AS n FROM intent_events WHERE seq NOT IN (1, 2)')).toBe(0)
      expect(one(`SELECT count(*) AS n FROM intents WHERE status <> 'SUBMITTED' OR delivery_state <> 'queued' OR last_event_seq <> 2`)).toBe(0)
      // Idempotency records point at stored intents only.
      expect(one('SELECT count(*) AS n FROM idempotency_keys k WHERE NOT EXISTS (SELECT 1 FROM intents i WHERE i.intent_id = k.intent_id)')).toBe(0)
      // No agent with an invalid address was registered on the way.
      const addresses = (db.prepare('SELECT address FROM agents').all() as { address: string }[]).map((r) => r.address)
      expect(addresses.filter((a) => !ADDRESS_RE.test(a) || a.length > 255)).toEqual([])
      console.log(`bad-input: store holds ${intentIds.length} intents, ${addresses.length} agents; all consistent`)
    } finally {
      db.close()
    }
  })
})
