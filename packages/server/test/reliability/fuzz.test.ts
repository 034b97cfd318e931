/**
 * Reliability fuzz (DESIGN §2.9 "Bad input never hurts", §4 error shape, §11 precedence):
 * ≥ 10,000 generated requests against a real `chokepoint serve` child process on 127.0.0.1,
 * written byte for byte to TCP sockets so that they can be broken at every level: the HTTP
 * framing (request line, headers, Content-Length / chunked, truncation, pipelining), the
 * headers (near and over Node's size limit, duplicates, unicode, NUL), the path parameters and
 * agent addresses (traversal, `%2e%2e`, `%00`, double encoding, RTL, emoji), the query (every
 * parameter: negative, huge, NaN, 1e309, duplicates) and the body (random bytes, wrong content
 * types, 10k-level nesting, every field of every body with wrong JSON types, empty and
 * oversized strings), with keys of every role so that requests get past authentication.
 * Routes and fields come from the gateway's own `GET /openapi.json`, so routes added later are
 * fuzzed too.
 *
 * Contract: no status ≥ 500, every request answered within 5 s, every answer of the gateway
 * carries `x-request-id` and (4xx) the §4 error shape. Answers without `x-request-id` are
 * Node's HTTP parser refusing the framing (400 / 431, then a close; 417 for an `Expect` it
 * does not know): allowed only for requests built to be malformed at that level, and counted
 * separately. Afterwards the process still runs, `/health` is 200, the audit chain verifies and
 * a send → stream delivery → resolve still works.
 *
 * bad-input.test.ts covers the same contract with fast-check on an in-process gateway over
 * well-formed HTTP; this file adds the raw-socket level, a separate process, PostgreSQL and volume.
 *
 * Reproduce: `FUZZ_SEED=<seed printed at start>`; a request is a pure function of the seed and
 * its number, so `FUZZ_ONLY=<n,n,…>` sends just the listed ones. `FUZZ_REQUESTS` (SQLite) and
 * `FUZZ_PG_REQUESTS` (PostgreSQL) change the counts.
 */
import { randomInt } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureBuilt, randomAdminKey, startChildGateway, type ChildGateway } from '../child-gateway.js'
import { startFakeLlm, type FakeLlm } from '../fake-llm.js'
import { api, readSse, sharedPostgres, testEngines, type Engine } from '../harness.js'

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

const SEED = Number(process.env['FUZZ_SEED'] ?? randomInt(2 ** 31 - 1)) | 0
const ONLY = (process.env['FUZZ_ONLY'] ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '')
  .map(Number)
const COUNT: Record<Engine, number> = {
  sqlite: Number(process.env['FUZZ_REQUESTS'] ?? 10_000),
  // Both engines get the full count: the file runs in well under 90 s on two shared cores.
  postgres: Number(process.env['FUZZ_PG_REQUESTS'] ?? 10_000),
}
const CONCURRENCY = 24
const TIMEOUT_MS = 5_000
const BODY_LIMIT = 1024 * 1024 // the gateway's default (DESIGN §2.9)
/** Node's limit on the request line plus headers (16 KiB unless --max-http-header-size). */
const HEADER_LIMIT = http.maxHeaderSize

/** The egress upstream (a fake OpenAI on 127.0.0.1) and its one priced model: `/llm/…` routes are live. */
const UPSTREAM = 'fake'
const LLM_MODEL = 'fake-model'
const LLM_PRICE = { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100_000, max_output_tokens: 1000 }

const SENDER = 'agent://fuzz/box/sender'
const RECEIVER = 'agent://fuzz/box/receiver'
/** The `kind: "http"` upstream of the child gateway: `/egress/{upstream}/…` reaches a real API. */
const FUZZ_UPSTREAM = 'fuzz-api'
/** The agent `{address_id}` paths name: kills, resumes and policies land on it and on nobody else. */
const VICTIM = 'agent://fuzz/box/victim'

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
  model_not_priced: 422,
}

// ---------------------------------------------------------------------------------------------
// Seeded generator (mulberry32; one independent stream per request number)
// ---------------------------------------------------------------------------------------------

function mix(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b)
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35)
  return (x ^ (x >>> 16)) | 0
}

class Rng {
  #s: number
  constructor(seed: number, stream: number) {
    this.#s = mix(mix(seed) ^ Math.imul(stream + 0x3c6ef372, 0x9e3779b1))
  }
  next(): number {
    this.#s = (this.#s + 0x6d2b79f5) | 0
    let t = this.#s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1))
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T
  }
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n)
    for (let i = 0; i < n; i += 1) out[i] = (this.next() * 256) | 0
    return out
  }
  /** A string over every kind of code point: ASCII, controls, Latin-1, RTL marks, CJK, lone surrogates, emoji. */
  text(maxLength: number): string {
    let out = ''
    const n = this.int(0, maxLength)
    for (let i = 0; i < n; i += 1) {
      const kind = this.int(0, 9)
      if (kind <= 3) out += String.fromCharCode(this.int(0x20, 0x7e))
      else if (kind === 4) out += String.fromCharCode(this.int(0, 0x1f))
      else if (kind === 5) out += String.fromCharCode(this.int(0x80, 0xff))
      else if (kind === 6) out += this.pick(['\u202e', '\u202d', '\u200f', '\u061c', '\u2066', '\ufeff', '\u200b'])
      else if (kind === 7) out += String.fromCharCode(this.int(0x0590, 0x9fff))
      else if (kind === 8) out += String.fromCharCode(this.int(0xd800, 0xdfff))
      else out += String.fromCodePoint(this.int(0x1f300, 0x1faff))
    }
    return out
  }
}

// ---------------------------------------------------------------------------------------------
// Routes, as the gateway publishes them
// ---------------------------------------------------------------------------------------------

interface FieldInfo {
  name: string // dotted: `metrics.cost_usd`, `patterns.0`
  path: string[]
  schema: any
}

interface RouteInfo {
  key: string // `POST /v1/intents/{intent_id}/resolve`
  method: string
  template: string
  access: string
  params: string[]
  query: { name: string; schema: any }[]
  body: boolean
  fields: FieldInfo[]
  stream: boolean
}

/** The non-null alternative of `anyOf: [X, {type: null}]`, else the schema itself. */
const unwrap = (schema: any): any => (Array.isArray(schema?.anyOf) ? (schema.anyOf.find((s: any) => s?.type !== 'null') ?? schema) : schema)

function collectFields(schema: any, prefix: string[], out: Map<string, FieldInfo>): void {
  if (schema === null || typeof schema !== 'object') return
  for (const alternative of [...(schema.oneOf ?? []), ...(schema.anyOf ?? [])]) collectFields(alternative, prefix, out)
  for (const [name, sub] of Object.entries<any>(schema.properties ?? {})) {
    const path = [...prefix, name]
    const key = path.join('.')
    if (!out.has(key)) out.set(key, { name: key, path, schema: unwrap(sub) })
    collectFields(sub, path, out)
    const items = unwrap(sub)?.items
    if (items) {
      const itemPath = [...path, '0']
      out.set(itemPath.join('.'), { name: itemPath.join('.'), path: itemPath, schema: unwrap(items) })
      collectFields(items, itemPath, out)
    }
  }
}

function routesFromOpenApi(spec: any): RouteInfo[] {
  const routes: RouteInfo[] = []
  for (const [template, operations] of Object.entries<any>(spec.paths)) {
    for (const [method, op] of Object.entries<any>(operations)) {
      const parameters: any[] = op.parameters ?? []
      const bodySchema = op.requestBody?.content?.['application/json']?.schema
      const fields = new Map<string, FieldInfo>()
      if (bodySchema) collectFields(bodySchema, [], fields)
      routes.push({
        key: `${method.toUpperCase()} ${template}`,
        method: method.toUpperCase(),
        template,
        access: String(op['x-access'] ?? 'unknown'),
        params: parameters.filter((p) => p.in === 'path').map((p) => String(p.name)),
        query: parameters.filter((p) => p.in === 'query').map((p) => ({ name: String(p.name), schema: unwrap(p.schema) })),
        body: bodySchema !== undefined,
        fields: [...fields.values()],
        stream: op.responses?.['200']?.content?.['text/event-stream'] !== undefined,
      })
    }
  }
  return routes
}

// ---------------------------------------------------------------------------------------------
// Fixtures: keys of every role and real ids for the path parameters
// ---------------------------------------------------------------------------------------------

type Role = 'admin' | 'operator' | 'viewer' | 'agent'
const ROLES: readonly Role[] = ['admin', 'operator', 'viewer', 'agent']

interface Fixtures {
  keys: Record<Role, string>
  revokedKey: string
  revokedKeyId: string
  victimId: string
  intentIds: string[]
  policyId: string
  webhookId: string
}

async function must(res: Promise<{ status: number; body: any }>, what: string): Promise<any> {
  const r = await res
  if (r.status !== 200) throw new Error(`${what}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body
}

async function createFixtures(url: string, adminKey: string): Promise<Fixtures> {
  const key = async (body: Record<string, unknown>) => must(api(url, adminKey, 'POST', '/v1/keys', body), `key ${JSON.stringify(body)}`)
  const operator = await key({ role: 'operator', name: 'fuzz operator' })
  const viewer = await key({ role: 'viewer', name: 'fuzz viewer' })
  const agent = await key({ role: 'agent', agent: SENDER, name: 'fuzz sender' })
  await key({ role: 'agent', agent: RECEIVER, name: 'fuzz receiver' })
  const revoked = await key({ role: 'viewer', name: 'fuzz revoked' })
  await must(api(url, adminKey, 'DELETE', `/v1/keys/${revoked.key_id}`), 'revoke')
  const victim = await must(api(url, adminKey, 'POST', '/v1/mesh/agents', { address: VICTIM }), 'register victim')
  const sent = await must(
    api(url, agent.key, 'POST', '/v1/intents', { intent_type: 'fuzz.fixture.v1', to_agent: RECEIVER, payload: { n: 1 } }),
    'intent to receiver',
  )
  const inbound = await must(
    api(url, adminKey, 'POST', '/v1/intents', { intent_type: 'fuzz.fixture.v1', from_agent: RECEIVER, to_agent: SENDER, payload: {} }),
    'intent to sender',
  )
  const policy = await must(
    api(url, adminKey, 'POST', `/v1/mesh/agents/${victim.agent.address_id}/policies`, {
      kind: 'rate',
      direction: 'send',
      max_per_hour: 1_000_000,
      on_breach: 'block',
    }),
    'policy',
  )
  const webhook = await must(
    api(url, adminKey, 'POST', '/v1/alerts/webhooks', { url: 'http://127.0.0.1:9/fuzz', event_types: ['agent.killed'] }),
    'webhook',
  )
  return {
    keys: { admin: adminKey, operator: operator.key, viewer: viewer.key, agent: agent.key },
    revokedKey: revoked.key,
    revokedKeyId: revoked.key_id,
    victimId: victim.agent.address_id,
    intentIds: [sent.intent_id, inbound.intent_id],
    policyId: policy.policy.policy_id,
    webhookId: webhook.webhook.webhook_id,
  }
}

// ---------------------------------------------------------------------------------------------
// Bad values
// ---------------------------------------------------------------------------------------------

const j = (value: unknown): string => JSON.stringify(value)

const JSON_TYPES = ['null', 'true', 'false', '0', '1', '""', '[]', '{}', '[null]', '[1,"a",{}]', '{"a":{"b":[]}}', '[[]]', '{"":null}']
const JSON_NUMBERS = [
  '0',
  '-0',
  '-0.0',
  '-1',
  '1.5',
  '-1.5',
  '1e309',
  '-1e309',
  '1E+400',
  '1e-400',
  '5e-324',
  '1.7976931348623157e308',
  '9007199254740993',
  '-9007199254740993',
  '2147483648',
  '4294967296',
  '1e21',
  '1e12',
  '1000001',
  '100000000000000000000000000000000000000000000000000000',
  '0.000000000000000000000000000001',
  `1${'0'.repeat(400)}`,
]
/** Literals JSON does not allow: the whole body becomes malformed (400). */
const NON_JSON_LITERALS = ['NaN', '-NaN', 'Infinity', '-Infinity', 'undefined', '0x10', '01', '+1', '.5', '1.', '1e', '--1', "'a'", 'True', 'nul']
const UNICODE = [
  j('😀🔥👩‍👩‍👧‍👦'),
  j('\u202eevil\u202c'),
  j('\u200f\u061c\u2066x\u2069'),
  j('שלום עולם'),
  j('مرحبا'),
  j('\u0000'),
  j('a\u0000b'),
  j('\ufeff'),
  j('\u200b\u200d'),
  j('e\u0301\u0301\u0301'),
  j('\uffff\ufffe'),
  j('𝕏𝕪𝕫'),
  j('İı'),
  '"\\ud800"',
  '"\\udfff\\ud800"',
  '"a\\ud83d"',
  '"\\u0000\\u0001\\u001f"',
]
const TRAVERSAL = [
  j('../../../../etc/passwd'),
  j('..\\..\\..\\windows\\win.ini'),
  j('%2e%2e%2f%2e%2e%2f'),
  j('%252e%252e%252f'),
  j('..%00/'),
  j('%00'),
  j('/etc/passwd\u0000.json'),
  j('....//....//'),
  j('file:///etc/passwd'),
]
const BAD_ADDRESSES = [
  '',
  'agent://',
  'agent://fuzz/box',
  'agent://fuzz/box/victim/extra',
  'agent://FUZZ/box/victim',
  'AGENT://fuzz/box/victim',
  'agent:/fuzz/box/victim',
  'agent://fuzz//victim',
  'agent://fuzz/../victim',
  'agent://fuzz/box/..',
  'agent://../../..',
  'agent://%2e%2e/box/victim',
  'agent://fuzz%2Fbox/victim/x',
  'agent://fuzz/box/victim\u0000',
  'agent://fuzz/box/vic\u0000tim',
  'agent://fuzz/box/😀',
  'agent://fuzz/box/\u202evictim',
  'agent://ﬀuzz/box/victim',
  'agent://fuzz/box/victim ',
  ' agent://fuzz/box/victim',
  'agent://fuzz/box/victim\n',
  'agent://-fuzz/box/victim',
  'agent://fuzz/box/victim?x=1',
  'agent://fuzz/box/victim#x',
  `agent://fuzz/box/${'a'.repeat(64)}`,
  `agent://${'a'.repeat(63)}/${'b'.repeat(63)}/${'c'.repeat(63)}/${'d'.repeat(63)}`,
  `agent://fuzz/box/${'v'.repeat(20_000)}`,
  'http://fuzz/box/victim',
  'addr_',
  'addr_../../x',
]

const hugeString = (rng: Rng): string => {
  const size = rng.pick([1_000, 5_000, 70_000, 300_000, BODY_LIMIT - 4_096, BODY_LIMIT + 10])
  const unit = rng.pick(['a', 'é', '😀', '\\u0000', '\\ud800', ' ', '\\\\', '\\"', '\u202e'])
  return `"${unit.repeat(Math.max(1, Math.floor(size / Buffer.byteLength(unit))))}"`
}

const deepText = (depth: number, shape: 'array' | 'object' | 'mixed'): string => {
  if (shape === 'array') return '['.repeat(depth) + ']'.repeat(depth)
  if (shape === 'object') return '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
  const half = Math.ceil(depth / 2)
  return '[{"a":'.repeat(half) + 'null' + '}]'.repeat(half)
}
const deepValue = (rng: Rng): string => {
  const depth = rng.pick([127, 128, 129, 1_000, 10_000, 10_000, 50_000])
  return deepText(depth, rng.pick(['array', 'object', 'mixed'] as const))
}

/** A value of (probably) the wrong JSON type or an absurd one, as JSON text. */
function badValue(rng: Rng): { what: string; text: string } {
  switch (rng.int(0, 10)) {
    case 0:
    case 1:
      return { what: 'wrong type', text: rng.pick(JSON_TYPES) }
    case 2:
    case 3:
      return { what: 'number', text: rng.pick(JSON_NUMBERS) }
    case 4:
      return { what: 'unicode', text: rng.pick(UNICODE) }
    case 5:
      return { what: 'traversal', text: rng.pick(TRAVERSAL) }
    case 6:
      return { what: 'bad address', text: j(rng.pick(BAD_ADDRESSES)) }
    case 7:
      return { what: 'huge string', text: hugeString(rng) }
    case 8:
      return { what: 'deep nesting', text: deepValue(rng) }
    case 9:
      return { what: 'random text', text: j(rng.text(40)) }
    default:
      return { what: 'numeric string', text: j(rng.pick(['1', '-1', '1e309', 'NaN', '0x1', ' 1', '1 ', ''])) }
  }
}

/** Values just inside and just outside what the field's schema allows. */
function edgeValue(rng: Rng, schema: any): { what: string; text: string } {
  const s = schema ?? {}
  const options: string[] = []
  if (typeof s.maxLength === 'number') options.push(j('a'.repeat(s.maxLength)), j('a'.repeat(s.maxLength + 1)), j('é'.repeat(s.maxLength)))
  if (typeof s.minLength === 'number') options.push(j('a'.repeat(Math.max(0, s.minLength - 1))))
  if (typeof s.maximum === 'number') options.push(String(s.maximum), String(s.maximum + 1), `${s.maximum}.0000001`)
  if (typeof s.minimum === 'number') options.push(String(s.minimum), String(s.minimum - 1), `${s.minimum - 0.5}`)
  if (typeof s.exclusiveMinimum === 'number') options.push(String(s.exclusiveMinimum))
  if (typeof s.maxItems === 'number') options.push(`[${Array.from({ length: s.maxItems + 1 }, () => '"a"').join(',')}]`)
  if (typeof s.minItems === 'number') options.push('[]')
  const choices: unknown[] = Array.isArray(s.enum) ? s.enum : s.const !== undefined ? [s.const] : []
  for (const value of choices) {
    if (typeof value === 'string') options.push(j(value.toUpperCase()), j(value.toLowerCase()), j(` ${value}`), j(`${value}\u0000`), j([value]))
  }
  if (s.type === 'integer') options.push('1.5', '1e0', '1.0')
  if (s.type === 'boolean') options.push('"true"', '1', '0')
  if (typeof s.pattern === 'string') options.push(j('a'), j('a.'), j('.a'), j('a..b'), j('A'))
  if (s.format === 'date-time') options.push(j('2024-02-30T00:00:00Z'), j('9999-12-31T23:59:59Z'), j('0000-01-01T00:00:00Z'), j('2024-01-01'), j('now'))
  if (s.format === 'uuid') options.push(j('00000000-0000-0000-0000-000000000000'), j('not-a-uuid'))
  if (options.length === 0) return badValue(rng)
  return { what: 'edge value', text: rng.pick(options) }
}

const BAD_JSON = [
  '{',
  '}',
  '{"a":}',
  '{"a" 1}',
  "{'a':1}",
  '{a:1}',
  '{"a":1,}',
  '{"a":1}}',
  '{"a":1}{"b":2}',
  '{"a":1} x',
  '"unterminated',
  '"a\nb"',
  '\u0000',
  '{"a":1}\u0000',
  '/* c */ {}',
  '{"a":1} // c',
  '[[[[[[[[[[',
  ']]]]',
  '{"a":[}',
  '{"__proto__":',
  '<xml/>',
  'a=1&b=2',
  '--boundary\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--boundary--',
]
const NOT_OBJECTS = ['[]', '[{}]', '"string"', 'null', 'true', '0', '-0', '1e309', '""', '[1,2,3]']
const CONTENT_TYPES = [
  'text/plain',
  'application/xml',
  'multipart/form-data; boundary=boundary',
  'application/x-www-form-urlencoded',
  'application/octet-stream',
  'application/json; charset=utf-16',
  'application/json; charset=iso-8859-1',
  'application/json;;;',
  'application/vnd.api+json',
  'image/png',
  'text/event-stream',
  '',
  '*/*',
  'application/json, text/plain',
  '\u00e9/\u00e9',
]

const BAD_QUERY_VALUES = [
  '',
  '-1',
  '0',
  '-0',
  '1.5',
  'NaN',
  'Infinity',
  '-Infinity',
  '1e309',
  '1e3',
  '+1',
  '0x10',
  '01',
  '%201',
  '1%20',
  '9999999999',
  '99999999999',
  '9007199254740993',
  '9'.repeat(400),
  'true',
  'null',
  '[]',
  '{}',
  '%00',
  '1%00',
  '%2e%2e',
  '..',
  '..%2f..%2f..%2fetc%2fpasswd',
  '%252e%252e%252f',
  '%zz',
  '%',
  '%E0%A4%A',
  '%ED%A0%80',
  '%C0%AE',
  '%FF',
  '%F0%9F%98%80',
  '%E2%80%AE1',
  '%D7%A9%D7%9C%D7%95%D7%9D',
  'agent%3A%2F%2Ffuzz%2Fbox%2Fsender',
  'agent://fuzz/box/sender',
  'agent%3A%2F%2Ffuzz%2F..%2Fsender',
  'agent%3A%2F%2FFUZZ%2Fbox%2Fsender',
  'SENT',
  'sent%00',
  'evt_',
  'evt_-1',
  'evt_1e309',
  `evt_${'9'.repeat(16)}`,
  '00000000-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000000g',
  'a'.repeat(6_000),
  '+',
  '%26',
  '%3D',
]

/** A plausible valid value for each known query parameter (so some requests succeed). */
const VALID_QUERY: Record<string, string[]> = {
  since: ['0', '1', '5'],
  wait_seconds: ['1'],
  lease_seconds: ['1', '30'],
  max_in_flight: ['1', '32'],
  limit: ['1', '10', '500'],
  after: ['00000000-0000-4000-8000-000000000000'],
  agent: [encodeURIComponent(SENDER)],
  direction: ['sent', 'received'],
  status: ['SUBMITTED', 'COMPLETED'],
  health: ['killed', 'unknown'],
  window: ['day', 'week', 'month'],
  event_type: ['agent.killed'],
  address: [encodeURIComponent(VICTIM)],
  after_seq: ['0', '3'],
  action_prefix: ['agent.', 'key'],
  target: ['x'],
  webhook_id: ['x'],
}

const BAD_SEGMENTS = [
  '..',
  '.',
  '%2e%2e',
  '%2E%2E',
  '.%2e',
  '%2e',
  '%252e%252e',
  '%25252e%25252e',
  '..%2f..%2f..%2fetc%2fpasswd',
  '..%252f..%252f',
  '%2f',
  '%2F..%2F',
  '%5c..%5c',
  '..%5c..%5c',
  '%00',
  'a%00b',
  '%00..',
  '%0a',
  '%0d%0a',
  '%20',
  '+',
  '%',
  '%%',
  '%zz',
  '%C0%AE%C0%AE',
  '%ED%A0%80',
  '%FF',
  '%F0%9F%98%80',
  '%E2%80%AE%E2%80%AD',
  '%D7%A9%D7%9C%D7%95%D7%9D',
  '%EF%BB%BF',
  'a'.repeat(3_000),
  'addr_',
  'addr_%00',
  `addr_${'A'.repeat(70)}`,
  'addr_..',
  'null',
  'undefined',
  '-1',
  '0',
  '1e309',
  'NaN',
  '00000000-0000-0000-0000-000000000000',
  '00000000-0000-0000-0000-00000000000g',
  'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
  'key_zzzzzzzzzzzzzzzz',
  'pol_x',
  'wh_x',
  '~',
  '*',
  '$',
  ';',
  ':',
  '@',
]
/** Encodings of agent addresses for `{address_id}` (raw ones are split by the path normaliser). */
const ADDRESS_SEGMENTS = [
  ...BAD_ADDRESSES.filter((a) => a.length < 1_000).map(encodeURIComponent),
  encodeURIComponent(encodeURIComponent(VICTIM)),
  'agent%3A%2F%2Ffuzz%2F..%2F..%2Fvictim',
  'agent:%2F%2Ffuzz%2Fbox%2Fvictim',
  'agent%253A%252F%252Ffuzz%252Fbox%252Fvictim',
  'agent://fuzz/box/victim%00',
  'agent://fuzz/box/%2e%2e',
  'agent://fuzz/%2e%2e/victim',
  'agent://fuzz/box/victim%2F..',
  'agent:/fuzz/box/victim',
  'agent://fuzz/box/VICTIM',
  'agent://fuzz/box/%F0%9F%98%80',
  'agent://fuzz/box/%E2%80%AEmitciv',
]

// ---------------------------------------------------------------------------------------------
// Requests on the wire
// ---------------------------------------------------------------------------------------------

type Mode = 'inline' | 'early' | 'stream'

interface Wire {
  head: Buffer
  body: Buffer | null
  /** inline: head + body at once; early: body only if no answer came within a second (oversize); stream: chunked until answered. */
  mode: Mode
  streamBytes: number
  halfClose: boolean
  /** Methods of the requests in `head`, in order (pipelining); HEAD answers have no body. */
  methods: string[]
}

interface FuzzRequest {
  n: number
  route: string
  /** Coverage bucket, e.g. `field to_agent`, `query limit`, `path intent_id`, `http chunked`. */
  target: string
  what: string
  role: string
  wire: Wire
  /** Statuses Node's own HTTP layer may answer with (no x-request-id). Empty: the gateway must answer. */
  nodeMay: number[]
  /** Pipelined requests whose answers are all expected (fewer only after a rejection by Node). */
  expected: number
}

interface Draft {
  method: string
  path: string
  headers: [string, string][]
  body?: Buffer
  chunked?: boolean
  mode?: Mode
  streamBytes?: number
  halfClose?: boolean
  /** Do not add Content-Length (the headers carry their own, or none on purpose). */
  noLength?: boolean
}

/** Percent-encodes the UTF-8 bytes of `s` (lone surrogates become U+FFFD, where encodeURIComponent throws). */
const percentEncode = (s: string): string =>
  [...Buffer.from(s, 'utf8')].map((b) => (/[A-Za-z0-9_.~-]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('')

const has = (headers: [string, string][], name: string): boolean => headers.some(([k]) => k.toLowerCase() === name)

/** Head bytes of one request; adds Host, Content-Length (or chunked) and `connection: close`. */
function headOf(d: Draft, host: string, close = true): Buffer {
  const lines = [`${d.method} ${d.path} HTTP/1.1`, `host: ${host}`]
  for (const [name, value] of d.headers) lines.push(`${name}: ${value}`)
  if (d.chunked) lines.push('transfer-encoding: chunked')
  else if (d.body !== undefined && !d.noLength && !has(d.headers, 'content-length')) lines.push(`content-length: ${d.body.length}`)
  if (close && !has(d.headers, 'connection')) lines.push('connection: close')
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8')
}

const chunkedOf = (body: Buffer): Buffer => {
  const half = Math.floor(body.length / 2)
  const parts = [body.subarray(0, half), body.subarray(half)].filter((p) => p.length > 0)
  return Buffer.concat([...parts.flatMap((p) => [Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n')]), Buffer.from('0\r\n\r\n')])
}

/** What Node's parser refuses before the gateway sees the request: it may answer 400/431 itself. */
function nodeMayFor(d: Draft, head: Buffer): number[] {
  const target = Buffer.from(d.path, 'utf8')
  const badTarget = target.some((b) => b <= 0x20 || b >= 0x7f)
  const badHeader = d.headers.some(
    ([name, value]) => !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name) || /[\x00-\x08\x0a-\x1f\x7f]/.test(value),
  )
  const badMethod = !/^[A-Z]+$/.test(d.method)
  // Near the limit Node's accounting (request line, separators) decides: either answer is fine there.
  const oversize = head.length > HEADER_LIMIT - 256
  return badTarget || badHeader || badMethod || oversize ? [400, 431] : []
}

function requestOf(n: number, route: string, target: string, what: string, role: string, d: Draft, host: string): FuzzRequest {
  const head = headOf(d, host)
  const body = d.body === undefined ? null : d.chunked && d.mode !== 'stream' ? chunkedOf(d.body) : d.body
  // Oversize bodies: half sent at once, half only after waiting a second for an early answer.
  const mode: Mode = d.mode ?? (body !== null && body.length > BODY_LIMIT && n % 2 === 0 ? 'early' : 'inline')
  return {
    n,
    route,
    target,
    what,
    role,
    wire: { head, body, mode, streamBytes: d.streamBytes ?? 0, halfClose: d.halfClose ?? false, methods: [d.method] },
    nodeMay: nodeMayFor(d, head),
    expected: 1,
  }
}

// ---------------------------------------------------------------------------------------------
// The generator: request number → request (pure, given the seed, routes and fixtures)
// ---------------------------------------------------------------------------------------------

type Kind = 'field' | 'body' | 'oversize' | 'query' | 'query-dup' | 'path' | 'headers' | 'role' | 'http' | 'unknown'

interface Target {
  kind: Kind
  route: RouteInfo | null
  name: string
}

const HTTP_CASES = ['garbage', 'request-line', 'header-syntax', 'framing', 'chunked', 'truncated', 'pipelined', 'raw-target', 'methods'] as const

/** Coverage buckets with weights; request n aims at `plan[n % plan.length]`. */
function planOf(routes: RouteInfo[], seed: number): Target[] {
  const weighted: [Target, number][] = []
  for (const route of routes) {
    const public_ = route.access === 'public'
    weighted.push([{ kind: 'headers', route, name: 'headers' }, public_ ? 1 : 3])
    for (const role of ROLES) weighted.push([{ kind: 'role', route, name: role }, 1])
    for (const param of route.params) weighted.push([{ kind: 'path', route, name: param }, 3])
    for (const q of route.query) weighted.push([{ kind: 'query', route, name: q.name }, 3])
    if (route.query.length > 0) weighted.push([{ kind: 'query-dup', route, name: 'duplicates' }, 1])
    if (route.body) {
      weighted.push([{ kind: 'body', route, name: 'body' }, 4], [{ kind: 'oversize', route, name: 'oversize' }, 1])
      for (const field of route.fields) weighted.push([{ kind: 'field', route, name: field.name }, 3])
    }
  }
  for (const name of HTTP_CASES) weighted.push([{ kind: 'http', route: null, name }, 5])
  weighted.push([{ kind: 'unknown', route: null, name: 'unknown route' }, 4])
  const plan = weighted.flatMap(([target, weight]) => Array.from({ length: weight }, () => target))
  const rng = new Rng(seed, -1)
  for (let i = plan.length - 1; i > 0; i -= 1) {
    const k = rng.int(0, i)
    ;[plan[i], plan[k]] = [plan[k] as Target, plan[i] as Target]
  }
  return plan
}

const NATURAL_ROLES: Record<string, Role[]> = {
  public: ['admin'],
  admin: ['admin'],
  operator: ['admin', 'operator'],
  viewer: ['admin', 'operator', 'viewer'],
  agent: ['agent'],
  agent_or_viewer: ['agent', 'viewer', 'operator', 'admin'],
  sender: ['agent', 'operator', 'admin'],
}

const READS_INSTANCE_ID = new Set(['GET /v1/agents/{org}/{workspace}/{name}/intents/stream', 'POST /v1/mesh/heartbeat'])

class Generator {
  constructor(
    readonly routes: RouteInfo[],
    readonly fx: Fixtures,
    readonly host: string,
    readonly plan: Target[],
    readonly seed: number,
  ) {}

  request(n: number): FuzzRequest {
    const rng = new Rng(this.seed, n)
    const target = this.plan[n % this.plan.length] as Target
    const route = target.route
    switch (target.kind) {
      case 'http':
        return this.http(n, rng, target.name as (typeof HTTP_CASES)[number])
      case 'unknown':
        return this.unknown(n, rng)
      default:
        return this.forRoute(n, rng, target, route as RouteInfo)
    }
  }

  // -- parts ------------------------------------------------------------------------------------

  auth(rng: Rng, route: RouteInfo, forced?: Role): { role: string; headers: [string, string][] } {
    const natural = NATURAL_ROLES[route.access] ?? [...ROLES]
    const r = rng.next()
    let role: string
    let key: string | null
    if (forced !== undefined) [role, key] = [forced, this.fx.keys[forced]]
    else if (r < 0.85) {
      const pick = rng.pick(natural)
      ;[role, key] = [pick, this.fx.keys[pick]]
    } else if (r < 0.95) {
      const pick = rng.pick(ROLES)
      ;[role, key] = [pick, this.fx.keys[pick]]
    } else if (r < 0.97) [role, key] = ['none', null]
    else if (r < 0.985) [role, key] = ['revoked', this.fx.revokedKey]
    else [role, key] = ['bogus', rng.pick(['cp_', `cp_${'A'.repeat(43)}`, 'x', `${this.fx.keys.admin} `, this.fx.keys.admin.slice(0, -1)])]
    if (route.access === 'public' && rng.chance(0.5)) return { role: 'none', headers: [] }
    if (key === null) return { role, headers: [] }
    const form = rng.next()
    if (form < 0.8) return { role, headers: [['x-api-key', key]] }
    if (form < 0.95) return { role, headers: [['authorization', `Bearer ${key}`]] }
    return { role, headers: [['authorization', `bearer   ${key}  `]] }
  }

  param(rng: Rng, name: string, template = ''): string {
    switch (name) {
      case 'intent_id':
        return rng.chance(0.8) ? rng.pick(this.fx.intentIds) : '00000000-0000-4000-8000-000000000000'
      case 'org':
        return 'fuzz'
      case 'workspace':
        return 'box'
      case 'name':
        return 'sender'
      case 'address_id':
        return rng.pick([this.fx.victimId, encodeURIComponent(VICTIM), VICTIM])
      case 'policy_id':
        return this.fx.policyId
      case 'webhook_id':
        return rng.chance(0.5) ? this.fx.webhookId : 'wh_doesnotexist'
      case 'key_id':
        return this.fx.revokedKeyId
      case 'upstream':
        // The upstream of the route's kind in the child's egress config (the HTTP echo API, or the
        // fake OpenAI), sometimes the other one or an unknown one (both 404).
        if (rng.chance(0.1)) return rng.chance(0.5) ? 'x' : template.startsWith('/egress/') ? UPSTREAM : FUZZ_UPSTREAM
        return template.startsWith('/egress/') ? FUZZ_UPSTREAM : UPSTREAM
      default:
        return 'x'
    }
  }

  path(rng: Rng, route: RouteInfo, override: Record<string, string> = {}): string {
    return route.template.replace(/\{([a-z_]+)\}/g, (_m, name: string) => override[name] ?? this.param(rng, name, route.template))
  }

  validQuery(rng: Rng, route: RouteInfo): string {
    const pairs = route.query.filter(() => rng.chance(0.3)).map((q) => `${q.name}=${rng.pick(VALID_QUERY[q.name] ?? ['1'])}`)
    return pairs.length === 0 ? '' : `?${pairs.join('&')}`
  }

  /** Valid bodies of the known routes (several for unions); other routes get one built from the schema. */
  bases(route: RouteInfo): Record<string, unknown>[] {
    const policy = [
      { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['fuzz.**', 'x.*'], enabled: true, version: 1 },
      { kind: 'rate', direction: 'receive', max_per_hour: 1_000_000, max_per_day: 1_000_000, on_breach: 'block', enabled: true },
      { kind: 'cost', max_cost_per_day_usd: 1_000_000, on_breach: 'block', alert_at_percent: [50, 80], enabled: true },
    ]
    const known: Record<string, Record<string, unknown>[]> = {
      'POST /v1/intents': [
        {
          intent_type: 'fuzz.send.v1',
          to_agent: RECEIVER,
          payload: { n: 1 },
          correlation_id: 'c-1',
          from_agent: SENDER,
          reply_to: SENDER,
          deadline_at: '2999-01-01T00:00:00Z',
          max_delivery_attempts: 3,
        },
      ],
      'POST /v1/intents/{intent_id}/resolve': [{ status: 'COMPLETED', result: { ok: true }, error: { e: 1 }, reason: 'fuzz', cost_usd: 0.01 }],
      'POST /v1/intents/{intent_id}/ack': [{}],
      'POST /v1/keys': [
        { role: 'viewer', name: 'fuzz' },
        { role: 'agent', agent: 'agent://fuzz/keys/k1', name: 'fuzz' },
      ],
      'POST /v1/mesh/agents': [{ address: 'agent://fuzz/reg/a1', display_name: 'A', metadata: { team: 'fuzz' } }],
      'POST /v1/mesh/heartbeat': [{ metrics: { intents_total: 1, intents_succeeded: 1, intents_failed: 0, avg_latency_ms: 5, cost_usd: 0 } }],
      'POST /v1/mesh/agents/{address_id}/kill': [{ reason: 'fuzz', cancel_pending: false }],
      'POST /v1/mesh/agents/{address_id}/resume': [{ reason: 'fuzz' }],
      'POST /v1/mesh/agents/{address_id}/policies': policy,
      'PUT /v1/policies/{policy_id}': policy,
      'POST /v1/policies/evaluate': [{ from_agent: SENDER, to_agent: RECEIVER, intent_type: 'fuzz.send.v1' }],
      'POST /v1/alerts/webhooks': [{ url: 'http://127.0.0.1:9/fuzz', event_types: ['agent.killed'], secret: 's'.repeat(16) }],
      'POST /llm/{upstream}/v1/chat/completions': [
        { model: LLM_MODEL, messages: [{ role: 'user', content: 'fuzz' }], max_completion_tokens: 16 },
        { model: LLM_MODEL, messages: [{ role: 'user', content: 'fuzz' }], max_tokens: 8, n: 2, stream: true, stream_options: { include_usage: true } },
        // Fields the gateway reads but does not declare (they pass through): an absurd `n` is a 4xx.
        { model: LLM_MODEL, messages: [{ role: 'user', content: 'fuzz' }], n: 1e300, max_completion_tokens: 1e308 },
      ],
      'POST /llm/{upstream}/v1/embeddings': [{ model: LLM_MODEL, input: ['fuzz', 'box'] }],
    }
    const found = known[route.key]
    if (found) return found
    const generic: Record<string, unknown> = {}
    for (const field of route.fields) {
      if (field.path.length !== 1) continue
      const s = field.schema ?? {}
      generic[field.name] = Array.isArray(s.enum) ? s.enum[0] : s.const ?? (s.type === 'number' || s.type === 'integer' ? 1 : s.type === 'boolean' ? true : s.type === 'array' ? [] : s.type === 'object' ? {} : 'x')
    }
    return [generic]
  }

  base(rng: Rng, route: RouteInfo, field?: FieldInfo): Record<string, unknown> {
    const all = this.bases(route)
    const top = field?.path[0]
    const containing = top === undefined ? all : all.filter((b) => top in b)
    return structuredClone(rng.pick(containing.length > 0 ? containing : all))
  }

  extraHeaders(rng: Rng, route: RouteInfo): [string, string][] {
    const out: [string, string][] = []
    if (READS_INSTANCE_ID.has(route.key) && rng.chance(0.5)) out.push(['x-instance-id', rng.pick(['fuzz-1', 'i', 'x'.repeat(128)])])
    if (route.key === 'PUT /v1/policies/{policy_id}' || (route.key === 'DELETE /v1/policies/{policy_id}' && rng.chance(0.5))) {
      out.push(['if-match', rng.pick(['1', '"1"', 'W/"2"', '3', '*', 'abc', '-1', '', '"1e309"', '99999999999999'])])
    }
    if (route.key === 'POST /v1/intents' && rng.chance(0.3)) out.push(['idempotency-key', rng.pick(['fuzz-a', 'fuzz-b', 'fuzz-c'])])
    return out
  }

  // -- per route ---------------------------------------------------------------------------------

  forRoute(n: number, rng: Rng, target: Target, route: RouteInfo): FuzzRequest {
    const finish = (what: string, role: string, d: Draft, bucket = `${target.kind} ${target.name}`) =>
      requestOf(n, route.key, bucket, what, role, d, this.host)
    const auth = this.auth(rng, route, target.kind === 'role' ? (target.name as Role) : undefined)
    const json: [string, string] = ['content-type', 'application/json']
    const validBody = (): Buffer | undefined => (route.body ? Buffer.from(j(this.base(rng, route))) : undefined)
    const common = (): [string, string][] => [...auth.headers, ...this.extraHeaders(rng, route)]

    switch (target.kind) {
      case 'field': {
        const field = route.fields.find((f) => f.name === target.name) as FieldInfo
        const base = this.base(rng, route, field)
        const mark = '\u0001fuzz\u0001'
        const r = rng.next()
        let what: string
        let text: string
        if (r < 0.1) {
          what = 'missing'
          text = j(setPath(base, field.path, undefined))
        } else if (r < 0.2 && field.path.length === 1) {
          const bad = badValue(rng)
          const first = rng.chance(0.5)
          what = `duplicate key (${first ? 'bad first' : 'bad last'}: ${bad.what})`
          const valid = j(base[field.name] ?? null)
          const rest = j(setPath(base, field.path, undefined))
          const tail = first ? `${j(field.name)}:${bad.text},${j(field.name)}:${valid}` : `${j(field.name)}:${valid},${j(field.name)}:${bad.text}`
          text = rest === '{}' ? `{${tail}}` : `${rest.slice(0, -1)},${tail}}`
        } else {
          const value = r < 0.35 ? edgeValue(rng, field.schema) : r < 0.42 ? { what: 'not JSON', text: rng.pick(NON_JSON_LITERALS) } : badValue(rng)
          what = value.what
          text = j(setPath(base, field.path, mark)).replace(j(mark), () => value.text)
        }
        const body = Buffer.from(text, 'utf8')
        return finish(`${field.name}: ${what}`, auth.role, {
          method: route.method,
          path: this.path(rng, route),
          headers: [...common(), json],
          body,
          ...(rng.chance(0.05) ? { chunked: true } : {}),
        })
      }

      case 'body': {
        const base = j(this.base(rng, route))
        const sub = rng.int(0, 11)
        let what: string
        let body: Buffer
        let ct: string | null = rng.chance(0.5) ? 'application/json' : rng.chance(0.5) ? rng.pick(CONTENT_TYPES) : null
        switch (sub) {
          case 0:
          case 1:
            what = 'random bytes'
            body = rng.bytes(rng.pick([0, 1, 2, rng.int(3, 64), rng.int(64, 4_096), rng.int(4_096, 200_000)]))
            ct = rng.chance(0.3) ? 'application/json' : rng.pick([...CONTENT_TYPES, 'application/octet-stream'])
            break
          case 2:
            what = 'malformed JSON'
            body = Buffer.from(rng.pick(BAD_JSON))
            break
          case 3:
            what = 'truncated JSON'
            body = Buffer.from(base.slice(0, rng.int(1, Math.max(1, base.length - 1))))
            break
          case 4:
            what = 'not an object'
            body = Buffer.from(rng.pick([...NOT_OBJECTS, `[${base}]`]))
            break
          case 5: {
            const depth = rng.pick([129, 1_000, 10_000, 10_000, 100_000, 500_000])
            const shape = rng.pick(['array', 'object', 'mixed'] as const)
            what = `${depth}-level ${shape} body`
            body = Buffer.from(deepText(shape === 'object' ? Math.min(depth, 100_000) : depth, shape))
            break
          }
          case 6:
            what = 'valid JSON, wrong content type'
            body = Buffer.from(base)
            ct = rng.pick(CONTENT_TYPES)
            break
          case 7:
            what = 'other encoding'
            body = rng.pick([
              Buffer.from(base, 'utf16le'),
              Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(base)]),
              Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(base, 'utf16le')]),
              Buffer.from(base.replace(/"([^"]*)"/, '"\xff\xfe$1"'), 'latin1'),
              Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d]),
              Buffer.from([0xc0, 0x80]),
            ])
            break
          case 8: {
            const keys = rng.pick([1_000, 10_000, 50_000])
            what = `${keys} keys`
            body = Buffer.from(`{${base.slice(1, -1)}${base.length > 2 ? ',' : ''}${Array.from({ length: keys }, (_v, i) => `"k${i}":${i}`).join(',')}}`)
            break
          }
          case 9:
            what = 'prototype keys'
            body = Buffer.from(
              rng.pick([
                `{"__proto__":{"admin":true},${base.slice(1)}`,
                `{"constructor":{"prototype":{"x":1}},${base.slice(1)}`,
                '{"__proto__":null}',
                `{"hasOwnProperty":1,"toString":2,${base.slice(1)}`,
              ]),
            )
            break
          case 10:
            what = 'empty or blank body'
            body = Buffer.from(rng.pick(['', ' ', '\r\n\t ', '\u00a0', '\u0000']))
            break
          default:
            what = 'form-encoded body'
            body = Buffer.from(rng.pick(['a=1&b=2', 'intent_type=x&to_agent=agent%3A%2F%2Fa%2Fb%2Fc', '=', '&&&']))
            ct = 'application/x-www-form-urlencoded'
        }
        const headers: [string, string][] = [...common(), ...(ct === null ? [] : ([['content-type', ct]] as [string, string][]))]
        if (rng.chance(0.1)) headers.push(['content-type', rng.pick(CONTENT_TYPES)]) // a second one
        return finish(what, auth.role, {
          method: route.method,
          path: this.path(rng, route),
          headers,
          body,
          ...(rng.chance(0.1) ? { chunked: true } : {}),
        })
      }

      case 'oversize': {
        const r = rng.next()
        const path = this.path(rng, route)
        if (r < 0.55) {
          // Declared: refused from the headers (the body is sent only if no answer came within a second).
          const declared = rng.pick([BODY_LIMIT + 1, BODY_LIMIT + rng.int(2, 1_000_000), 10 * BODY_LIMIT, 9_999_999_999])
          return finish(`declared Content-Length ${declared}`, auth.role, {
            method: route.method,
            path,
            headers: [...common(), ['content-type', 'application/json'], ['content-length', String(declared)]],
            body: Buffer.from('{"a":"'),
            mode: 'early',
            noLength: true,
          })
        }
        if (r < 0.75) {
          const size = BODY_LIMIT + rng.int(1, 64 * 1024)
          return finish(`${size}-byte body`, auth.role, {
            method: route.method,
            path,
            headers: [...common(), ['content-type', 'application/json']],
            body: Buffer.from(`{"s":"${'x'.repeat(size - 9)}"}`),
          })
        }
        const size = BODY_LIMIT + rng.int(1, 256 * 1024)
        return finish(`chunked upload of ${size} bytes`, auth.role, {
          method: route.method,
          path,
          headers: [...common(), ['content-type', 'application/json']],
          body: Buffer.alloc(0),
          chunked: true,
          mode: 'stream',
          streamBytes: size,
        })
      }

      case 'query':
      case 'query-dup': {
        const names = route.query.map((q) => q.name)
        const name = target.kind === 'query' ? target.name : rng.pick(names)
        const value = () => (rng.chance(0.7) ? rng.pick(BAD_QUERY_VALUES) : rng.pick(VALID_QUERY[name] ?? ['1']))
        let what: string
        let query: string
        const sub = target.kind === 'query-dup' ? 1 : rng.int(0, 5)
        if (sub === 0 || sub === 2 || sub === 3) {
          const v = value()
          what = `${name}=${v.slice(0, 40)}`
          const others = names.filter((o) => o !== name && rng.chance(0.3)).map((o) => `${o}=${rng.chance(0.5) ? value() : rng.pick(VALID_QUERY[o] ?? ['1'])}`)
          query = [`${name}=${v}`, ...others].join('&')
        } else if (sub === 1) {
          what = `duplicate ${name}`
          query = Array.from({ length: rng.int(2, 4) }, () => `${name}=${value()}`).join('&')
        } else if (sub === 4) {
          what = `odd syntax for ${name}`
          query = rng.pick([`${name}[]=1`, `${name}[a]=1`, name, `${name}=`, `=${name}`, `${name}==1`, `&&${name}=1&&`, `${name}=1;${name}=2`, `${name}%00=1`, `${name.toUpperCase()}=1`, `${name}=1#x`])
        } else {
          what = `unknown parameters beside ${name}`
          query = `${name}=${value()}&zz=${rng.pick(BAD_QUERY_VALUES)}&${'q'.repeat(rng.int(1, 2_000))}=1`
        }
        return finish(what, auth.role, {
          method: route.method,
          path: `${this.path(rng, route)}?${query}`,
          headers: [...common(), ...(route.body ? ([['content-type', 'application/json']] as [string, string][]) : [])],
          ...(route.body ? { body: validBody() as Buffer } : {}),
        })
      }

      case 'path': {
        const name = target.name
        const pool = name === 'address_id' ? [...BAD_SEGMENTS, ...ADDRESS_SEGMENTS, ...ADDRESS_SEGMENTS] : BAD_SEGMENTS
        const r = rng.next()
        const bad =
          r < 0.75
            ? rng.pick(pool)
            : r < 0.9
              ? percentEncode(rng.text(12))
              : rng.pick(['%2e%2e%2f', '..%2f', '%252e', '%00']).repeat(rng.int(1, 50))
        return finish(`${name} = ${bad.slice(0, 60)}`, auth.role, {
          method: route.method,
          path: this.path(rng, route, { [name]: bad }) + this.validQuery(rng, route),
          headers: [...common(), ...(route.body ? ([['content-type', 'application/json']] as [string, string][]) : [])],
          ...(route.body ? { body: validBody() as Buffer } : {}),
        })
      }

      case 'headers': {
        const sub = rng.int(0, 7)
        const headers = common()
        let what: string
        const path = this.path(rng, route) + this.validQuery(rng, route)
        const body = validBody()
        if (body) headers.push(['content-type', 'application/json'])
        const sizeSoFar = () => headOf({ method: route.method, path, headers, ...(body ? { body } : {}) }, this.host).length
        if (sub === 0) {
          // Just under Node's limit: must still reach the gateway.
          const pad = HEADER_LIMIT - 300 - rng.int(0, 400) - sizeSoFar() - 16
          headers.push(['x-fuzz-pad', 'p'.repeat(Math.max(1, pad))])
          what = 'headers just under the limit'
        } else if (sub === 1) {
          const over = rng.pick([1, 100, 4_096, HEADER_LIMIT, 64 * 1024, 512 * 1024])
          headers.push([rng.pick(['x-fuzz-pad', 'x-api-key', 'cookie', 'x-trace-id']), 'o'.repeat(Math.max(1, HEADER_LIMIT - sizeSoFar() + over))])
          what = `headers ${over} bytes over the limit`
        } else if (sub === 2) {
          const count = rng.pick([100, 500, 1_999, 2_500, 5_000])
          for (let i = 0; i < count; i += 1) headers.push([`x-f${i}`, String(i)])
          what = `${count} headers`
        } else if (sub === 3) {
          const key = this.fx.keys[rng.pick(ROLES)]
          const pairs: [string, string][][] = [
            [['x-api-key', key], ['x-api-key', key]],
            [['x-api-key', key], ['x-api-key', 'cp_garbage']],
            [['x-api-key', 'cp_garbage'], ['authorization', `Bearer ${key}`]],
            [['authorization', `Bearer ${key}`], ['authorization', `Bearer ${key}`]],
            [['x-api-key', ''], ['authorization', `Bearer ${key}`]],
            [['x-instance-id', 'a'], ['x-instance-id', 'b']],
            [['idempotency-key', 'k1'], ['idempotency-key', 'k2']],
            [['content-type', 'application/json'], ['content-type', 'text/plain']],
            [['if-match', '1'], ['if-match', '2']],
            [['last-event-id', '1'], ['last-event-id', '2']],
          ]
          headers.splice(0, auth.headers.length, ...rng.pick(pairs))
          what = 'duplicate headers'
        } else {
          const name = rng.pick(['x-api-key', 'authorization', 'x-instance-id', 'idempotency-key', 'x-trace-id', 'traceparent', 'if-match', 'last-event-id', 'content-type', 'accept', 'user-agent', 'x-forwarded-for', 'cookie'])
          const value = rng.pick([
            '😀🔥',
            '\u202eadmin\u202c',
            'שלום',
            'a\u0000b',
            '\u0000',
            '\u0001\u0002',
            '\u007f',
            '../../etc/passwd',
            '%2e%2e%2f%00',
            '%252e%252e',
            '',
            ' ',
            '\t',
            'x'.repeat(rng.int(129, 8_000)),
            rng.text(30),
            'é'.repeat(200),
            `Bearer ${'😀'.repeat(50)}`,
          ])
          if (name === 'x-api-key' || name === 'authorization') headers.splice(0, auth.headers.length)
          headers.push([name, value])
          what = `${name}: ${JSON.stringify(value.slice(0, 30))}`
        }
        return finish(what, auth.role, { method: route.method, path, headers, ...(body ? { body } : {}) })
      }

      default: {
        // role: a (mostly) valid request with the given role's key: gets past auth to validation and handlers.
        const path = this.path(rng, route) + this.validQuery(rng, route)
        const body = validBody()
        const headers = [...common(), ...(body ? ([['content-type', 'application/json']] as [string, string][]) : [])]
        if (body === undefined && rng.chance(0.15)) {
          // A body where none is read.
          return finish('valid request with a stray body', auth.role, { method: route.method, path, headers, body: rng.bytes(rng.int(1, 300)) })
        }
        return finish('valid request', auth.role, { method: route.method, path, headers, ...(body ? { body } : {}) })
      }
    }
  }

  // -- unknown routes and methods ----------------------------------------------------------------

  unknown(n: number, rng: Rng): FuzzRequest {
    const route = rng.pick(this.routes)
    const known = new Set(this.routes.filter((r) => r.template === route.template).map((r) => r.method))
    const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'PURGE', 'SEARCH'].filter((m) => !known.has(m))
    const paths = [
      this.path(rng, route),
      '/v1',
      '/v1/',
      '/v2/intents',
      '/V1/INTENTS',
      '/v1//intents',
      '//v1/intents',
      '/v1/intents/x/y/z',
      '/v1/../health',
      '/v1/%2e%2e/health',
      '/%2e%2e/%2e%2e/etc/passwd',
      '/health/..',
      '/health%00',
      '/health%2500',
      '/./health',
      '/v1/mesh/agents/agent://fuzz/box/victim/extra/kill',
      '/v1/agents/fuzz/box/intents/stream',
      `/v1/${'a'.repeat(6_000)}`,
      '/v1/%C3%A9',
    ]
    const method = rng.chance(0.5) && methods.length > 0 ? rng.pick(methods) : 'GET'
    const path = method === 'GET' ? rng.pick(paths.slice(1)) : rng.pick(paths)
    const auth = this.auth(rng, route)
    const body = method === 'POST' || method === 'PUT' ? Buffer.from(rng.pick(['{}', ...BAD_JSON])) : undefined
    return requestOf(n, 'unknown', 'unknown route', `${method} ${path.slice(0, 60)}`, auth.role, { method, path, headers: auth.headers, ...(body ? { body } : {}) }, this.host)
  }

  // -- malformed HTTP (raw bytes) ------------------------------------------------------------------

  http(n: number, rng: Rng, sub: (typeof HTTP_CASES)[number]): FuzzRequest {
    const key = this.fx.keys[rng.pick(ROLES)]
    const auth = `x-api-key: ${key}\r\n`
    const host = `host: ${this.host}\r\n`
    const valid = (path = '/health', close = true) => `GET ${path} HTTP/1.1\r\n${host}${auth}${close ? 'connection: close\r\n' : ''}\r\n`
    const post = (extra: string, body: string) => `POST /v1/intents HTTP/1.1\r\n${host}${auth}connection: close\r\ncontent-type: application/json\r\n${extra}\r\n${body}`
    let what: string
    let head: string | Buffer
    let halfClose = rng.chance(0.5)
    let methods = ['GET']
    let expected = 1
    let nodeMay = [400, 431]
    switch (sub) {
      case 'garbage': {
        const bytes = rng.bytes(rng.int(1, 2_000))
        head = rng.chance(0.5) ? Buffer.concat([bytes, Buffer.from('\r\n\r\n')]) : Buffer.concat([Buffer.from(rng.pick(['GET ', 'POST /', 'GET /health HTTP/1.1\r\n', ''])), bytes])
        what = `${bytes.length} random bytes`
        halfClose = true // a prefix of something valid would otherwise wait for more
        break
      }
      case 'request-line': {
        const lines = [
          'GET  /health HTTP/1.1',
          'GET /health  HTTP/1.1',
          'GET /health HTTP/1.1 extra',
          'GET /health HTTP/9.9',
          'GET /health HTTP/1',
          'GET /health HTTP/1.10',
          'GET /health http/1.1',
          'GET\t/health\tHTTP/1.1',
          'get /health HTTP/1.1',
          'FOO /health HTTP/1.1',
          'G@T /health HTTP/1.1',
          'GET health HTTP/1.1',
          'GET * HTTP/1.1',
          'OPTIONS * HTTP/1.1',
          'GET http://evil.example/health HTTP/1.1',
          'GET http://[::1 HTTP/1.1',
          'GET //health HTTP/1.1',
          'GET /health?a=1#frag HTTP/1.1',
          'GET /he alth HTTP/1.1',
          ' GET /health HTTP/1.1',
          'GET',
          'GET /health',
          'PRI * HTTP/2.0\r\n\r\nSM',
          'CONNECT 127.0.0.1:1 HTTP/1.1',
          'CONNECT /health HTTP/1.1',
          'CONNECT evil.example:443 HTTP/1.1',
          'TRACE / HTTP/1.1',
          'PATCH /v1/intents HTTP/1.1',
          'PROPFIND / HTTP/1.1',
          'M-SEARCH * HTTP/1.1',
          'SOURCE / HTTP/1.1',
          'HEAD /v1/intents HTTP/1.1',
          'HEAD /health HTTP/1.1',
          `GET /${'a'.repeat(HEADER_LIMIT + 10)} HTTP/1.1`,
          `GET /v1/mesh/agents?limit=${'9'.repeat(12_000)} HTTP/1.1`,
          '\r\nGET /health HTTP/1.1',
        ]
        const line = rng.pick(lines)
        methods = [line.trim().split(/[\s]/)[0] ?? 'GET']
        head = `${line}\r\n${host}${auth}connection: close\r\n\r\n`
        what = `request line ${JSON.stringify(line.slice(0, 60))}`
        break
      }
      case 'header-syntax': {
        const bad = [
          'x-a b\r\n',
          'x-a : b\r\n',
          ' x-a: b\r\n',
          'x(a): b\r\n',
          ': b\r\n',
          'x-a: b\r\n  folded\r\n',
          'x-a: b\x00c\r\n',
          'x-a: b\x7f\r\n',
          'x-a: b\x01\r\n',
          'x-a: b\rc\r\n',
          `${'n'.repeat(20_000)}: v\r\n`,
          'x-\u00e9: v\r\n',
          'host: a\r\n',
          'host: \r\n',
          'host: a b\r\n',
          'expect: 200-ok\r\n',
          'expect: 100-continue\r\n',
          'connection: Upgrade\r\nupgrade: websocket\r\n',
          'connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n',
          'connection: keep-alive, close, foo\r\n',
          'x-api-key: a\r\nx-api-key: b\r\n',
        ]
        const line = rng.pick(bad)
        if (line.startsWith('expect')) nodeMay = [417]
        const lf = rng.chance(0.1)
        const text = `GET /health HTTP/1.1\r\n${host}${line}${auth}connection: close\r\n\r\n`
        head = lf ? text.replace(/\r\n/g, '\n') : text
        what = `header ${JSON.stringify(line.slice(0, 50))}${lf ? ' with bare LF' : ''}`
        if (lf) nodeMay = [400]
        break
      }
      case 'framing': {
        const body = '{"intent_type":"fuzz.raw.v1","to_agent":"agent://fuzz/box/receiver","payload":{}}'
        const cases: [string, string][] = [
          ['content-length twice', post(`content-length: ${body.length}\r\ncontent-length: ${body.length}\r\n`, body)],
          ['content-lengths differ', post(`content-length: ${body.length}\r\ncontent-length: 1\r\n`, body)],
          ['content-length -1', post('content-length: -1\r\n', body)],
          ['content-length 1e3', post('content-length: 1e3\r\n', body)],
          ['content-length +2', post('content-length: +2\r\n', '{}')],
          ['content-length 0x2', post('content-length: 0x2\r\n', '{}')],
          ['content-length " 2"', post('content-length:  2 \r\n', '{}')],
          ['content-length abc', post('content-length: abc\r\n', '{}')],
          ['content-length 2^64', post('content-length: 18446744073709551617\r\n', '{}')],
          ['content-length too long for the body', post('content-length: 1\r\n', '{}')],
          ['content-length and chunked', post(`content-length: ${body.length}\r\ntransfer-encoding: chunked\r\n`, body)],
          ['transfer-encoding gzip', post('transfer-encoding: gzip\r\n', body)],
          ['transfer-encoding gzip, chunked', post('transfer-encoding: gzip, chunked\r\n', '2\r\n{}\r\n0\r\n\r\n')],
          ['transfer-encoding chunked, gzip', post('transfer-encoding: chunked, gzip\r\n', '2\r\n{}\r\n0\r\n\r\n')],
          ['transfer-encoding twice', post('transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n', '2\r\n{}\r\n0\r\n\r\n')],
          ['transfer-encoding " chunked"', post('transfer-encoding:  chunked\r\n', '2\r\n{}\r\n0\r\n\r\n')],
          ['transfer-encoding identity', post('transfer-encoding: identity\r\n', body)],
          ['content-encoding gzip', post(`content-encoding: gzip\r\ncontent-length: ${body.length}\r\n`, body)],
          ['GET with a body', `GET /health HTTP/1.1\r\n${host}${auth}connection: close\r\ncontent-length: 5\r\n\r\nhello`],
          ['HTTP/1.0 without host', 'GET /health HTTP/1.0\r\n\r\n'],
          ['HTTP/1.1 without host', `GET /health HTTP/1.1\r\n${auth}connection: close\r\n\r\n`],
        ]
        const [name, text] = rng.pick(cases)
        methods = [text.split(' ')[0] ?? 'POST']
        head = text
        what = name
        break
      }
      case 'chunked': {
        const frames = [
          'zz\r\n{}\r\n0\r\n\r\n',
          '-2\r\n{}\r\n0\r\n\r\n',
          'ffffffffffffffffff\r\n{}\r\n0\r\n\r\n',
          '2;ext=1\r\n{}\r\n0\r\n\r\n',
          '2;\x00\r\n{}\r\n0\r\n\r\n',
          '2\r\n{}0\r\n\r\n',
          '1\r\n{}\r\n0\r\n\r\n',
          '2\r\n{}\r\n0\r\nx-trailer: 1\r\n\r\n',
          '2\r\n{}\r\n0\r\nbad trailer\r\n\r\n',
          '2 \r\n{}\r\n0\r\n\r\n',
          '0002\r\n{}\r\n0\r\n\r\n',
          '2\n{}\n0\n\n',
          '2\r\n{}\r\n',
          `${(20).toString(16)}\r\n${'['.repeat(16)}1]]]\r\n0\r\n\r\n`,
        ]
        const frame = rng.pick(frames)
        head = post('transfer-encoding: chunked\r\n', frame)
        methods = ['POST']
        what = `chunked ${JSON.stringify(frame.slice(0, 30))}`
        if (frame === '2\r\n{}\r\n') halfClose = true // unterminated: the FIN ends it
        break
      }
      case 'truncated': {
        const full = post('content-length: 40\r\n', '{"intent_type":"fuzz.raw.v1","to_agent":"agent://fuzz/box/receiver"}')
        const cut = rng.int(1, full.length - 2)
        head = full.slice(0, cut)
        methods = ['POST']
        halfClose = true
        what = `request cut after ${cut} bytes, then FIN`
        break
      }
      case 'pipelined': {
        const count = rng.int(2, 6)
        const parts: string[] = []
        const pipelineMethods: string[] = []
        let broken = false
        for (let i = 0; i < count; i += 1) {
          const last = i === count - 1
          const r = rng.next()
          if (r < 0.15 && !broken) {
            parts.push(rng.pick(['GET /health HTTP/9.9\r\n\r\n', 'GARBAGE\r\n\r\n', `POST /v1/intents HTTP/1.1\r\n${host}content-length: -5\r\n\r\n`]))
            broken = true
          } else if (r < 0.4) {
            const b = rng.pick(['{}', '{"intent_type":"x"}', '[', '{"intent_type":"fuzz.pipe.v1","to_agent":"agent://fuzz/box/receiver","payload":{}}'])
            parts.push(`POST /v1/intents HTTP/1.1\r\n${host}${auth}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(b)}\r\n${last ? 'connection: close\r\n' : ''}\r\n${b}`)
          } else {
            parts.push(valid(rng.pick(['/health', '/v1/mesh/agents?limit=1', '/v1/audit/events?limit=1', '/v1/intents?limit=1', '/nope']), last))
          }
          pipelineMethods.push(parts[parts.length - 1]?.split(' ')[0] ?? 'GET')
        }
        head = parts.join('')
        methods = pipelineMethods
        expected = count
        halfClose = false
        what = `${count} pipelined requests${broken ? ', one malformed' : ''}`
        nodeMay = broken ? [400] : []
        break
      }
      case 'raw-target': {
        const targets = [
          `/v1/mesh/agents/agent://fuzz/box/${rng.pick(['😀', '\u202evictim', 'שלום', 'vic\u0000tim', 'victim\u0000'])}`,
          '/v1/mesh/agents/agent://fuzz/../victim',
          '/v1/mesh/agents/agent://fuzz/box/../victim',
          '/v1/mesh/agents/agent:/fuzz/box/victim',
          '/v1/mesh/agents/agent://fuzz/box/victim/kill/../../x',
          '/v1/agents/fuzz/../sender/intents/stream',
          '/v1/agents/%2e%2e/box/sender/intents/stream',
          '/v1/agents/fuzz/box/sender%00/intents/stream',
          '/v1/agents/fuzz/box/%F0%9F%98%80/intents/stream',
          '/v1/intents/..%2f..%2fhealth',
          '/v1/intents/%252e%252e',
          `/v1/intents/${rng.pick(this.fx.intentIds)}%00`,
          `/v1/intents/${rng.pick(this.fx.intentIds)}/../../health`,
          '/v1/intents/\u00e9',
          '/health\u202e',
          '/v1/mesh/agents?address=agent://fuzz/box/😀',
          '/v1/intents?agent=agent://fuzz/box/sender&agent=agent://fuzz/box/receiver',
          '/v1/audit/events?target=..%2f..%2f&target=%00',
        ]
        const t = rng.pick(targets)
        head = Buffer.from(`GET ${t} HTTP/1.1\r\n${host}${auth}connection: close\r\n\r\n`, 'utf8')
        nodeMay = Buffer.from(t, 'utf8').some((b) => b <= 0x20 || b >= 0x7f) ? [400] : []
        what = `raw target ${JSON.stringify(t.slice(0, 70))}`
        halfClose = false
        break
      }
      default: {
        // Methods on routes that do not take them, bodies where none is read.
        const route = rng.pick(this.routes)
        const path = this.path(rng, route)
        const method = rng.pick(['HEAD', 'OPTIONS', 'PATCH', 'GET', 'DELETE', 'POST'])
        const body = rng.chance(0.5) ? rng.bytes(rng.int(0, 100)) : Buffer.alloc(0)
        head = Buffer.concat([Buffer.from(`${method} ${path} HTTP/1.1\r\n${host}${auth}connection: close\r\ncontent-length: ${body.length}\r\n\r\n`), body])
        methods = [method]
        what = `${method} ${route.template} with a ${body.length}-byte body`
        nodeMay = []
        halfClose = false
      }
    }
    return {
      n,
      route: 'http',
      target: `http ${sub}`,
      what,
      role: 'raw',
      wire: { head: typeof head === 'string' ? Buffer.from(head, 'latin1') : head, body: null, mode: 'inline', streamBytes: 0, halfClose, methods },
      nodeMay,
      expected,
    }
  }
}

/** A copy of `obj` with the value at `path` set (or deleted when `value` is undefined). */
function setPath(obj: Record<string, unknown>, path: string[], value: unknown): Record<string, unknown> {
  const copy = structuredClone(obj)
  let node: any = copy
  for (let i = 0; i < path.length - 1; i += 1) {
    const key = path[i] as string
    const nextIsIndex = /^\d+$/.test(path[i + 1] as string)
    if (node[key] === null || typeof node[key] !== 'object') node[key] = nextIsIndex ? [] : {}
    node = node[key]
  }
  const last = path[path.length - 1] as string
  if (value === undefined) {
    if (Array.isArray(node)) node.splice(Number(last), 1)
    else delete node[last]
  } else node[last] = value
  return copy
}

// ---------------------------------------------------------------------------------------------
// Sending and reading answers
// ---------------------------------------------------------------------------------------------

interface Answer {
  status: number
  headers: Map<string, string>
  body: Buffer
  sse: boolean
  complete: boolean
}

interface Outcome {
  answers: Answer[]
  error: string | null
  timedOut: boolean
  ms: number
  /** Bytes that are not an HTTP response. */
  garbage: boolean
}

/** Parses every response in `buf` (skipping 1xx); stops at a stream, an incomplete body or the end. */
function parseAnswers(buf: Buffer, methods: string[], eof: boolean): { answers: Answer[]; garbage: boolean } {
  const answers: Answer[] = []
  let offset = 0
  while (offset < buf.length) {
    const end = buf.indexOf('\r\n\r\n', offset)
    if (end === -1) return { answers, garbage: eof && !/^HTTP\/1\.[01] /.test(buf.subarray(offset, offset + 9).toString('latin1')) }
    const [statusLine = '', ...lines] = buf.subarray(offset, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)
    if (!m) return { answers, garbage: true }
    const status = Number(m[1])
    const headers = new Map<string, string>()
    for (const line of lines) {
      const i = line.indexOf(':')
      if (i <= 0) continue
      const name = line.slice(0, i).trim().toLowerCase()
      const value = line.slice(i + 1).trim()
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value)
    }
    const start = end + 4
    if (status >= 100 && status < 200) {
      offset = start
      continue
    }
    const method = methods[answers.length] ?? methods[methods.length - 1] ?? 'GET'
    const sse = (headers.get('content-type') ?? '').startsWith('text/event-stream')
    if (sse) {
      answers.push({ status, headers, body: Buffer.alloc(0), sse, complete: true })
      return { answers, garbage: false }
    }
    if (method === 'HEAD' || status === 204 || status === 304) {
      answers.push({ status, headers, body: Buffer.alloc(0), sse, complete: true })
      offset = start
      continue
    }
    if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) {
      const parts: Buffer[] = []
      let at = start
      let complete = false
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', at)
        if (lineEnd === -1) break
        const size = parseInt(buf.subarray(at, lineEnd).toString('latin1'), 16)
        if (!Number.isFinite(size)) return { answers, garbage: true }
        if (size === 0) {
          const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd)
          if (trailerEnd === -1 && buf.indexOf('\r\n', lineEnd + 2) !== lineEnd + 2) break
          at = trailerEnd === -1 ? lineEnd + 4 : trailerEnd + 4
          complete = true
          break
        }
        if (buf.length < lineEnd + 2 + size + 2) break
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size))
        at = lineEnd + 2 + size + 2
      }
      answers.push({ status, headers, body: Buffer.concat(parts), sse, complete })
      if (!complete) return { answers, garbage: false }
      offset = at
      continue
    }
    const declared = headers.get('content-length')
    if (declared !== undefined) {
      const length = Number(declared)
      const complete = buf.length - start >= length
      answers.push({ status, headers, body: buf.subarray(start, Math.min(buf.length, start + length)), sse, complete })
      if (!complete) return { answers, garbage: false }
      offset = start + length
      continue
    }
    answers.push({ status, headers, body: buf.subarray(start), sse, complete: eof })
    return { answers, garbage: false }
  }
  return { answers, garbage: false }
}

function send(port: number, r: FuzzRequest): Promise<Outcome> {
  const w = r.wire
  return new Promise((resolve) => {
    const started = performance.now()
    const socket = net.connect({ host: '127.0.0.1', port })
    const chunks: Buffer[] = []
    let received = 0
    let error: string | null = null
    let settled = false
    const finish = (timedOut: boolean) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      const { answers, garbage } = parseAnswers(Buffer.concat(chunks), w.methods, true)
      resolve({ answers, error, timedOut, ms: performance.now() - started, garbage })
    }
    const timer = setTimeout(() => finish(true), TIMEOUT_MS)
    const doneYet = () => {
      const { answers } = parseAnswers(Buffer.concat(chunks), w.methods, false)
      const finals = answers.filter((a) => a.complete)
      return finals.some((a) => a.sse) || finals.length >= r.expected
    }
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk)
      received += chunk.length
      if (doneYet()) finish(false)
    })
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message
      finish(false)
    })
    socket.on('close', () => finish(false))
    const write = (data: Buffer | string): Promise<void> =>
      new Promise((ok) => {
        if (settled || socket.destroyed) return ok()
        if (socket.write(data)) return ok()
        const done = () => {
          socket.off('drain', done)
          socket.off('close', done)
          ok()
        }
        socket.once('drain', done)
        socket.once('close', done)
      })
    socket.once('connect', () => {
      void (async () => {
        if (w.mode === 'inline') {
          await write(w.body === null ? w.head : Buffer.concat([w.head, w.body]))
        } else if (w.mode === 'early') {
          await write(w.head)
          const deadline = performance.now() + 1_000
          while (!settled && received === 0 && performance.now() < deadline) await new Promise((ok) => setTimeout(ok, 10))
          if (received === 0 && w.body !== null) await write(w.body)
        } else {
          await write(w.head)
          const piece = Buffer.alloc(64 * 1024, 'x')
          let sent = 0
          while (!settled && received === 0 && sent < w.streamBytes) {
            await write(Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]))
            sent += piece.length
          }
          if (received === 0) await write('0\r\n\r\n')
        }
        if (w.halfClose && !settled && !socket.destroyed) socket.end()
      })()
    })
  })
}

// ---------------------------------------------------------------------------------------------
// The contract for one answer
// ---------------------------------------------------------------------------------------------

type Verdict = 'app' | 'node'

function judge(r: FuzzRequest, o: Outcome): { problems: string[]; verdicts: Verdict[] } {
  const problems: string[] = []
  const verdicts: Verdict[] = []
  if (o.timedOut && o.answers.filter((a) => a.complete).length === 0) problems.push(`no answer within ${TIMEOUT_MS} ms`)
  if (o.answers.length === 0 && !o.timedOut) problems.push(`connection closed without an answer${o.error ? ` (${o.error})` : ''}`)
  if (o.garbage) problems.push('bytes that are not an HTTP response')
  o.answers.forEach((a, i) => {
    const requestId = a.headers.get('x-request-id')
    // An HTTP-egress answer is cut mid-body, on purpose, when its agent is killed meanwhile — and
    // the fuzz's own fleet kills can match the fuzz agent (egress-http.test.ts proves the cut).
    const killCut = !a.complete && a.status < 500 && /^[A-Z]+ \/egress\//.test(r.wire.head.toString('latin1', 0, 64))
    if (!a.complete && !killCut) problems.push(`answer ${i + 1} (${a.status}) cut before its end${o.error ? ` (${o.error})` : ''}`)
    if (a.status >= 500) problems.push(`server error ${a.status}: ${a.body.toString('utf8').slice(0, 300)}`)
    if (requestId === undefined) {
      // Node's HTTP layer answered: only for requests built to be refused there.
      verdicts.push('node')
      if (!r.nodeMay.includes(a.status)) problems.push(`status ${a.status} without x-request-id (not from the gateway; allowed here: ${JSON.stringify(r.nodeMay)})`)
      return
    }
    verdicts.push('app')
    if (a.status < 200 || (a.status >= 300 && a.status < 400)) problems.push(`unexpected status ${a.status}`)
    const method = r.wire.methods[i] ?? 'GET'
    if (method === 'HEAD' || a.sse) return
    const contentType = a.headers.get('content-type') ?? ''
    const text = a.body.toString('utf8')
    // Egress passes the upstream's answers through in OpenAI's shapes (a 2xx completion, a 4xx
    // refusal of the provider, marked by its x-upstream-request-id); the gateway's own refusals
    // on those routes are held to the §4 shape like any other.
    const egress = r.route.includes(' /llm/')
    if (egress && a.headers.get('x-upstream-request-id') !== undefined) {
      let body: any
      try {
        body = JSON.parse(text)
      } catch {
        problems.push(`upstream answer is not JSON: ${text.slice(0, 200)}`)
        return
      }
      if (a.status >= 400 && (body?.error === null || typeof body?.error !== 'object')) problems.push(`upstream refusal without an error: ${text.slice(0, 200)}`)
      return
    }
    if (egress && a.status < 300) {
      try {
        if (typeof JSON.parse(text)?.object !== 'string') problems.push(`egress 2xx without an OpenAI object: ${text.slice(0, 200)}`)
      } catch {
        problems.push(`egress 2xx body is not JSON: ${text.slice(0, 200)}`)
      }
      return
    }
    if (a.status < 300) {
      if (contentType.startsWith('text/plain') || contentType.startsWith('application/openmetrics')) return // GET /metrics
      let body: any
      try {
        body = JSON.parse(text)
      } catch {
        problems.push(`2xx body is not JSON: ${text.slice(0, 200)}`)
        return
      }
      if (body?.ok !== true && typeof body?.openapi !== 'string') problems.push(`2xx body without ok: true: ${text.slice(0, 200)}`)
      return
    }
    if (!contentType.startsWith('application/json')) problems.push(`4xx with content-type ${JSON.stringify(contentType)}`)
    let body: any
    try {
      body = JSON.parse(text)
    } catch {
      problems.push(`4xx body is not JSON: ${JSON.stringify(text.slice(0, 200))}`)
      return
    }
    const e = body?.error
    if (body?.ok !== false || e === null || typeof e !== 'object' || Array.isArray(e)) {
      problems.push(`4xx body without the error shape: ${text.slice(0, 200)}`)
      return
    }
    if (typeof e.code !== 'string' || STATUS_OF_CODE[e.code] !== a.status) problems.push(`error.code ${JSON.stringify(e.code)} with status ${a.status}`)
    if (typeof e.message !== 'string' || e.message === '') problems.push('error.message is not a non-empty string')
    if (e.request_id !== requestId) problems.push(`error.request_id ${JSON.stringify(e.request_id)} ≠ x-request-id ${requestId}`)
    if ('details' in e && (e.details === null || typeof e.details !== 'object' || Array.isArray(e.details))) problems.push('error.details is not an object')
  })
  if (o.answers.length > 0 && o.answers.length < r.expected && !o.answers.some((a) => !a.headers.has('x-request-id'))) {
    problems.push(`${o.answers.length} answers to ${r.expected} pipelined requests`)
  }
  return { problems, verdicts }
}

function describeRequest(r: FuzzRequest): string {
  const w = r.wire
  const head = w.head.toString('latin1')
  const shown = head.length > 600 ? `${head.slice(0, 600)}…(${head.length} bytes)` : head
  const body = w.body === null ? '' : ` + ${w.body.length}-byte body ${JSON.stringify(w.body.subarray(0, 200).toString('latin1'))}`
  const stream = w.mode === 'stream' ? ` + chunked upload of ${w.streamBytes} bytes` : ''
  return `#${r.n} [${r.target}] ${r.what} (role ${r.role}, ${w.mode}${w.halfClose ? ', FIN' : ''}): ${JSON.stringify(shown)}${body}${stream}`
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

interface Stats {
  total: number
  byClass: Map<string, number>
  byStatus: Map<string, number>
  byRoute: Map<string, number>
  byTarget: Map<string, number>
  /** `<route> <target>`: coverage of each field, parameter and query of each route. */
  byRouteTarget: Map<string, number>
  byRole: Map<string, number>
  nodeLevel: Map<string, number>
  failures: string[]
  failed: number
  slowest: number
  ms: number
}

const bump = (m: Map<string, number>, k: string, by = 1) => m.set(k, (m.get(k) ?? 0) + by)
const show = (m: Map<string, number>, sortByCount = true) =>
  [...m.entries()]
    .sort((a, b) => (sortByCount ? b[1] - a[1] : a[0] < b[0] ? -1 : 1))
    .map(([k, v]) => `${k} ${v}`)
    .join(' · ')

async function runFuzz(port: number, gen: Generator, numbers: number[]): Promise<Stats> {
  const stats: Stats = {
    total: 0,
    byClass: new Map(),
    byStatus: new Map(),
    byRoute: new Map(),
    byTarget: new Map(),
    byRouteTarget: new Map(),
    byRole: new Map(),
    nodeLevel: new Map(),
    failures: [],
    failed: 0,
    slowest: 0,
    ms: 0,
  }
  const started = performance.now()
  let next = 0
  const worker = async () => {
    for (;;) {
      const i = next
      next += 1
      if (i >= numbers.length) return
      const r = gen.request(numbers[i] as number)
      const o = await send(port, r)
      const { problems, verdicts } = judge(r, o)
      stats.total += 1
      stats.slowest = Math.max(stats.slowest, o.ms)
      bump(stats.byRoute, r.route)
      bump(stats.byTarget, r.target)
      bump(stats.byRouteTarget, `${r.route} ${r.target}`)
      bump(stats.byRole, r.role)
      o.answers.forEach((a, k) => {
        if (verdicts[k] === 'node') {
          bump(stats.byClass, 'node-parser')
          bump(stats.nodeLevel, String(a.status))
        } else bump(stats.byClass, `${Math.floor(a.status / 100)}xx`)
        bump(stats.byStatus, String(a.status))
      })
      if (o.timedOut) bump(stats.byClass, 'timeout')
      if (o.answers.length === 0 && !o.timedOut) bump(stats.byClass, 'closed-unanswered')
      if (problems.length > 0) {
        stats.failed += 1
        if (stats.failures.length < 25) {
          const got = o.answers.map((a) => `${a.status} ${a.body.toString('utf8').slice(0, 200)}`).join(' | ')
          stats.failures.push(`${problems.join('; ')}\n    request: ${describeRequest(r)}\n    answer: ${got || '(none)'} (${Math.round(o.ms)} ms)`)
        }
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  stats.ms = performance.now() - started
  return stats
}

function report(engine: Engine, stats: Stats): void {
  console.log(
    [
      `fuzz[${engine}] FUZZ_SEED=${SEED}: ${stats.total} requests in ${(stats.ms / 1000).toFixed(1)} s ` +
        `(${Math.round(stats.total / (stats.ms / 1000))}/s, concurrency ${CONCURRENCY}, slowest answer ${Math.round(stats.slowest)} ms), ${stats.failed} failed`,
      `  answers by class: ${show(stats.byClass)}`,
      `  refused by Node's HTTP parser (no x-request-id), by status: ${show(stats.nodeLevel) || 'none'}`,
      `  by status: ${show(stats.byStatus, false)}`,
      `  by role: ${show(stats.byRole)}`,
      `  by route: ${show(stats.byRoute)}`,
      `  by target: ${show(stats.byTarget)}`,
    ].join('\n'),
  )
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

console.log(`fuzz: FUZZ_SEED=${SEED}${ONLY.length > 0 ? ` FUZZ_ONLY=${ONLY.join(',')}` : ''} (set them to reproduce)`)

describe.each(testEngines('reliability/fuzz.test.ts'))('fuzz on %s (DESIGN §2.9)', (engine) => {
  let dir: string
  let child: ChildGateway
  let port: number
  let fx: Fixtures
  let routes: RouteInfo[]
  let stats: Stats | null = null
  // The upstream of the HTTP egress routes: reads any request and answers `{ok: true}`.
  let echoed = 0
  const echo = http.createServer((req, res) => {
    echoed += 1
    req.resume()
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'))
  })
  let fake: FakeLlm

  beforeAll(async () => {
    ensureBuilt()
    dir = mkdtempSync(join(tmpdir(), 'chokepoint-fuzz-'))
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve))
    const echoUrl = `http://127.0.0.1:${(echo.address() as net.AddressInfo).port}/api`
    fake = await startFakeLlm({ requestIds: true })
    const egressConfig = join(dir, 'egress.json')
    writeFileSync(
      egressConfig,
      JSON.stringify({
        upstreams: [
          { id: FUZZ_UPSTREAM, kind: 'http', base_url: echoUrl, timeout_ms: 4000 },
          { id: UPSTREAM, kind: 'openai', base_url: fake.url, api_key_env: 'FUZZ_LLM_KEY', models: { [LLM_MODEL]: LLM_PRICE }, timeout_ms: 3_000 },
        ],
      }),
    )
    let databaseUrl: string | undefined
    if (engine === 'postgres') {
      const cluster = await sharedPostgres()
      if (!cluster) throw new Error('PostgreSQL not installed')
      databaseUrl = await cluster.createDatabase()
    }
    child = await startChildGateway({
      dataDir: join(dir, 'data'),
      adminKey: randomAdminKey(),
      ...(databaseUrl === undefined ? {} : { databaseUrl }),
      env: { CHOKEPOINT_EGRESS_CONFIG: egressConfig, FUZZ_LLM_KEY: fake.apiKey },
    })
    port = Number(new URL(child.url).port)
    fx = await createFixtures(child.url, child.adminKey)
    const spec = await api(child.url, null, 'GET', '/openapi.json')
    if (spec.status !== 200) throw new Error(`openapi.json: ${spec.status}`)
    routes = routesFromOpenApi(spec.body)
  }, 60_000)

  afterAll(async () => {
    await child?.stop()
    echo.closeAllConnections()
    await new Promise((resolve) => echo.close(resolve))
    await fake?.close()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it(`answers ${COUNT[engine]} generated requests over every route: never a 5xx, never a hang, always the error shape`, async () => {
    const plan = planOf(routes, SEED)
    const gen = new Generator(routes, fx, `127.0.0.1:${port}`, plan, SEED)
    const numbers = ONLY.length > 0 ? ONLY : Array.from({ length: COUNT[engine] }, (_v, i) => i)
    stats = await runFuzz(port, gen, numbers)
    report(engine, stats)
    if (stats.failed > 0) {
      throw new Error(
        `${stats.failed} of ${stats.total} requests broke the contract (FUZZ_SEED=${SEED}; replay one with FUZZ_ONLY=<#>):\n\n` +
          stats.failures.join('\n\n'),
      )
    }
    if (ONLY.length > 0) return
    expect(stats.total).toBe(COUNT[engine])
    // The HTTP egress routes were fuzzed through to their upstream, not only up to a 404.
    expect(echoed).toBeGreaterThan(0)
    console.log(`fuzz[${engine}]: ${echoed} requests reached the HTTP egress upstream`)
    // Every published route, and every field and query parameter of it, was aimed at.
    const least = Math.max(1, Math.floor(COUNT[engine] / plan.length))
    for (const route of routes) {
      expect(stats.byRoute.get(route.key) ?? 0, `requests at ${route.key}`).toBeGreaterThanOrEqual(least)
      const aimed = (target: string) => stats?.byRouteTarget.get(`${route.key} ${target}`) ?? 0
      for (const f of route.fields) expect(aimed(`field ${f.name}`), `${route.key} field ${f.name}`).toBeGreaterThanOrEqual(least)
      for (const q of route.query) expect(aimed(`query ${q.name}`), `${route.key} query ${q.name}`).toBeGreaterThanOrEqual(least)
      for (const p of route.params) expect(aimed(`path ${p}`), `${route.key} path ${p}`).toBeGreaterThanOrEqual(least)
      if (route.body) expect(aimed('body body'), `${route.key} body`).toBeGreaterThanOrEqual(least)
    }
    for (const role of ROLES) expect(stats.byRole.get(role) ?? 0, `requests with the ${role} key`).toBeGreaterThan(COUNT[engine] / 20)
    // The generator reaches past authentication: most answers are the gateway's own 4xx.
    expect(stats.byClass.get('4xx') ?? 0).toBeGreaterThan(COUNT[engine] / 2)
    // The egress routes were live: calls reached the upstream, never with a Chokepoint key.
    expect(fake.requests.filter((q) => q.path === '/v1/chat/completions').length).toBeGreaterThan(0)
    expect(fake.requests.filter((q) => q.path === '/v1/embeddings').length).toBeGreaterThan(0)
    expect(fake.sawAgentKey).toBe(false)
  }, 180_000)

  it('is still alive, healthy and consistent afterwards', async () => {
    expect(child.proc.exitCode, `gateway exited; stderr:\n${child.stderr().slice(-2_000)}`).toBeNull()
    expect(child.proc.signalCode).toBeNull()
    const health = await api(child.url, null, 'GET', '/health')
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({ ok: true, store: engine })

    const verify = await api(child.url, fx.keys.viewer, 'GET', '/v1/audit/verify')
    expect(verify.status).toBe(200)
    expect(verify.body).toMatchObject({ ok: true, valid: true, first_broken_seq: null })

    // The fuzz may have left standing fleet kills (a selector can match agents that appear later,
    // as it should) and default policies: an operator ends them first, through the API.
    const standing = (await api(child.url, child.adminKey, 'GET', '/v1/mesh/fleet-kills?standing=true')).body.fleet_kills as any[]
    for (const f of standing) {
      const ended = await api(child.url, child.adminKey, 'POST', '/v1/mesh/resume', { selector: f.selector, confirm_all: true })
      expect(ended.status, JSON.stringify(ended.body)).toBe(200)
    }
    expect((await api(child.url, child.adminKey, 'GET', '/v1/mesh/fleet-kills?standing=true')).body.fleet_kills).toEqual([])
    expect((await api(child.url, child.adminKey, 'PUT', '/v1/policies/defaults', { policies: [] })).status).toBe(200)

    // A normal send → stream delivery → resolve, between two agents the fuzz never saw.
    const suffix = `${engine}${Date.now().toString(36)}`
    const from = `agent://fuzz/after/from-${suffix}`
    const to = `agent://fuzz/after/to-${suffix}`
    const key = async (agent: string) => (await must(api(child.url, child.adminKey, 'POST', '/v1/keys', { role: 'agent', agent }), `key for ${agent}`)).key as string
    const [fromKey, toKey] = [await key(from), await key(to)]
    const sent = await api(child.url, fromKey, 'POST', '/v1/intents', { intent_type: 'fuzz.after.v1', to_agent: to, payload: { after: '😀\u202e' } })
    expect(sent.status, JSON.stringify(sent.body)).toBe(200)
    const inbox = `/v1/agents/fuzz/after/to-${suffix}/intents/stream?wait_seconds=5`
    const stream = await readSse(child.url, toKey, inbox, { 'x-instance-id': 'after-1' })
    expect(stream.status).toBe(200)
    const delivered = stream.frames.find((f) => f.event === 'intent.delivered' && f.data.intent_id === sent.body.intent_id)
    expect(delivered?.data.payload).toEqual({ after: '😀\u202e' })
    const resolved = await api(child.url, toKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, { status: 'COMPLETED', result: { done: true } })
    expect(resolved.status).toBe(200)
    const read = await api(child.url, fromKey, 'GET', `/v1/intents/${sent.body.intent_id}`)
    expect(read.body.intent).toMatchObject({ status: 'COMPLETED', result: { done: true } })

    expect((await api(child.url, fx.keys.viewer, 'GET', '/v1/audit/verify')).body).toMatchObject({ valid: true })

    // Egress still meters a call, and the fuzz left no call open (each was settled once).
    const llm = await api(child.url, fromKey, 'POST', `/llm/${UPSTREAM}/v1/chat/completions`, { model: LLM_MODEL, messages: [{ role: 'user', content: 'after' }] })
    expect(llm.status, JSON.stringify(llm.body)).toBe(200)
    expect(llm.body.object).toBe('chat.completion')
    const egressCalls = await api(child.url, fx.keys.viewer, 'GET', '/v1/egress/calls?limit=500')
    expect(egressCalls.status).toBe(200)
    expect((egressCalls.body.calls as any[]).filter((c) => c.state === 'open')).toEqual([])
    expect(child.stderr(), 'the gateway logged unhandled errors').not.toMatch(/unhandled error/)
  }, 30_000)
})
