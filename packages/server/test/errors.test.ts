/**
 * Errors and input handling (DESIGN §2.9, §4, §5, §11): the one error shape, status-code
 * precedence, body limits, malformed JSON, schema errors naming the field, instance ids,
 * the OpenAPI document, and agent lookups by id or address.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, readSse, startTestGateway, type ApiResponse, type TestGateway } from './harness.js'

const MiB = 1024 * 1024
const A = 'agent://acme/prod/err-a'
const B = 'agent://acme/prod/err-b'

const streamPath = (address: string, query = 'wait_seconds=1'): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

/** Asserts the §4 error shape exactly: `{ok: false, error: {code, message, request_id, details?}}`. */
function expectError(res: ApiResponse<any>, status: number, code: string): void {
  const where = `${status} ${code}: got ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`
  expect(res.status, where).toBe(status)
  expect(res.headers.get('content-type'), where).toMatch(/^application\/json/)
  expect(res.body, where).toBeTypeOf('object')
  expect(Object.keys(res.body).sort(), where).toEqual(['error', 'ok'])
  expect(res.body.ok, where).toBe(false)
  const error = res.body.error
  for (const k of Object.keys(error)) expect(['code', 'message', 'request_id', 'details'], `error.${k} (${where})`).toContain(k)
  expect(error.code, where).toBe(code)
  expect(error.code).toMatch(/^[a-z]+(_[a-z]+)*$/)
  expect(typeof error.message).toBe('string')
  expect(error.message.length).toBeGreaterThan(0)
  expect(error.request_id).toBe(res.headers.get('x-request-id'))
  if ('details' in error) {
    expect(error.details).toBeTypeOf('object')
    expect(error.details).not.toBeNull()
    expect(Array.isArray(error.details)).toBe(false)
  }
}

/** A raw request (string or stream body, any headers) parsed like `api`. */
async function raw(
  url: string,
  method: string,
  path: string,
  init: { headers?: Record<string, string>; body?: string | Buffer | ReadableStream<Uint8Array> } = {},
): Promise<ApiResponse<any>> {
  const res = await fetch(url + path, {
    method,
    headers: init.headers ?? {},
    ...(init.body === undefined ? {} : { body: init.body as any }),
    ...(init.body instanceof ReadableStream ? { duplex: 'half' } : {}),
  } as RequestInit)
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // keep the text
  }
  return { status: res.status, body, headers: res.headers }
}

function bigJson(bytes: number): string {
  const head = `{"intent_type":"big.v1","to_agent":"${B}","payload":{"blob":"`
  const tail = '"}}'
  return head + 'x'.repeat(bytes - head.length - tail.length) + tail
}

describe('errors and input', () => {
  let gw: TestGateway
  let keyA: string
  let viewerKey: string

  beforeAll(async () => {
    gw = await startTestGateway()
    keyA = await agentKey(gw, A)
    await agentKey(gw, B)
    viewerKey = (await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer' })).body.key
  })
  afterAll(() => gw.close())

  describe('unknown routes', () => {
    it('404 not_found with and without a key (the unknown route wins over 401)', async () => {
      for (const key of [null, 'cp_bogusbogusbogusbogusbogus', keyA, gw.adminKey]) {
        expectError(await api(gw.url, key, 'GET', '/v1/nope'), 404, 'not_found')
        expectError(await api(gw.url, key, 'POST', '/v1/intents/x/y/z', {}), 404, 'not_found')
        expectError(await api(gw.url, key, 'DELETE', '/v1/intents'), 404, 'not_found') // known path, unknown method
        expectError(await api(gw.url, key, 'PUT', '/v1/keys'), 404, 'not_found')
      }
      // With an oversize body too: still the route decides first.
      expectError(await raw(gw.url, 'POST', '/v1/nope', { body: 'x'.repeat(2 * MiB) }), 404, 'not_found')
    })
  })

  describe('precedence: 404 route → 401 → 403 → 413 → 400 → 422 → resource', () => {
    it('401 before 403, 413, 400, 422', async () => {
      expectError(await api(gw.url, null, 'GET', '/v1/keys'), 401, 'unauthorized')
      expectError(await api(gw.url, 'cp_bogusbogusbogusbogusbogus', 'POST', '/v1/keys', { role: 'nope' }), 401, 'unauthorized')
      expectError(await raw(gw.url, 'POST', '/v1/intents', { body: bigJson(2 * MiB) }), 401, 'unauthorized')
      expectError(await raw(gw.url, 'POST', '/v1/intents', { body: '{"broken', headers: { 'content-type': 'application/json' } }), 401, 'unauthorized')
      expectError(await api(gw.url, null, 'POST', '/v1/intents', { intent_type: 'BAD' }), 401, 'unauthorized')
    })

    it('403 (role) before 413, 400, 422', async () => {
      expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': viewerKey }, body: bigJson(2 * MiB) }), 403, 'forbidden')
      expectError(await raw(gw.url, 'POST', '/v1/keys', { headers: { 'x-api-key': keyA }, body: 'y'.repeat(2 * MiB) }), 403, 'forbidden')
      expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': viewerKey }, body: '{"broken' }), 403, 'forbidden')
      expectError(await api(gw.url, keyA, 'POST', '/v1/keys', { role: 'superuser', extra: 1 }), 403, 'forbidden')
      expectError(await api(gw.url, viewerKey, 'POST', '/v1/intents', { intent_type: 'BAD', to_agent: 'nope' }), 403, 'forbidden')
    })

    it('413 before 400 and 422', async () => {
      const malformed = `{${'"k":'.repeat(10)}${' '.repeat(2 * MiB)}`
      expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA }, body: malformed }), 413, 'payload_too_large')
      const schemaBad = `{"intent_type":"BAD","to_agent":"nope","payload":"${'z'.repeat(2 * MiB)}"}`
      expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA }, body: schemaBad }), 413, 'payload_too_large')
    })

    it('400 before 422: malformed JSON', async () => {
      expectError(await api(gw.url, keyA, 'POST', '/v1/intents', '{"intent_type": "BAD", '), 400, 'invalid_request')
    })

    it('400 before 422: a malformed Idempotency-Key with a schema-invalid body is 400', async () => {
      const res = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'BAD' }, { 'Idempotency-Key': 'k'.repeat(300) })
      expectError(res, 400, 'invalid_request')
    })

    it('400 before 422: a bad x-instance-id with an out-of-range query parameter is 400', async () => {
      const res = await api(gw.url, keyA, 'GET', streamPath(A, 'wait_seconds=0'), undefined, { 'x-instance-id': 'i'.repeat(200) })
      expectError(res, 400, 'invalid_request')
    })

    it('400 before 422: a bad x-instance-id with an invalid address in the path is 400', async () => {
      const res = await api(gw.url, keyA, 'GET', '/v1/agents/ACME/prod/x/intents/stream?wait_seconds=1', undefined, {
        'x-instance-id': 'i'.repeat(200),
      })
      expectError(res, 400, 'invalid_request')
    })

    it('422 before resource 404/403 and 409', async () => {
      const missing = '00000000-0000-4000-8000-000000000000'
      expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${missing}/resolve`, { status: 'DONE' }), 422, 'schema_invalid')
      expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${missing}/resolve`, { status: 'COMPLETED' }), 404, 'not_found')
      expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${missing}/ack`, {}), 404, 'not_found')
      // An intent addressed to B: A's invalid resolve is 422, its valid one 403.
      const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'prec.v1', to_agent: B, payload: {} })
      const id = sent.body.intent_id as string
      expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${id}/resolve`, { status: 42 }), 422, 'schema_invalid')
      expectError(await api(gw.url, keyA, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' }), 403, 'forbidden')
      // Operator cancel, then: a schema-invalid resolve is still 422, a valid one 409.
      expect((await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'CANCELED', reason: 'test' })).status).toBe(200)
      expectError(await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'CANCELED', cost_usd: -1 }), 422, 'schema_invalid')
      expectError(await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'CANCELED' }), 409, 'conflict')
    })
  })

  describe('bodies', () => {
    it('413 payload_too_large for a 2 MiB body (declared length), and nothing is stored', async () => {
      const res = await raw(gw.url, 'POST', '/v1/intents', {
        headers: { 'x-api-key': keyA, 'content-type': 'application/json' },
        body: bigJson(2 * MiB),
      })
      expectError(res, 413, 'payload_too_large')
      const list = await api(gw.url, keyA, 'GET', '/v1/intents')
      expect((list.body.intents as any[]).some((i) => i.intent_type === 'big.v1')).toBe(false)
      // The gateway is fine afterwards.
      expect((await api(gw.url, null, 'GET', '/health')).status).toBe(200)
    })

    it('413 for a chunked body without content-length that grows over the limit', async () => {
      const chunk = new TextEncoder().encode('x'.repeat(64 * 1024))
      let sent = 0
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= 2 * MiB) controller.close()
          else {
            sent += chunk.length
            controller.enqueue(chunk)
          }
        },
      })
      const res = await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA, 'content-type': 'application/json' }, body }).catch(
        (error: unknown) => ({ status: -1, body: String(error), headers: new Headers() }),
      )
      expectError(res as ApiResponse<any>, 413, 'payload_too_large')
    })

    it('the limit is exactly 1 MiB: 1,048,576 bytes pass, one more byte is 413', async () => {
      const at = await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA }, body: bigJson(MiB) })
      expect(at.status, JSON.stringify(at.body).slice(0, 200)).toBe(200)
      expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA }, body: bigJson(MiB + 1) }), 413, 'payload_too_large')
    })

    it('a body just under 1 MiB is accepted', async () => {
      const res = await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA }, body: bigJson(MiB - 1024) })
      expect(res.status, JSON.stringify(res.body).slice(0, 200)).toBe(200)
    })

    it('400 invalid_request for malformed JSON, whatever the content type', async () => {
      for (const text of ['{', '{"a":}', "{'a':1}", 'nul', '{"intent_type":"a.b",}', '\u0000']) {
        expectError(await api(gw.url, keyA, 'POST', '/v1/intents', text), 400, 'invalid_request')
        expectError(await raw(gw.url, 'POST', '/v1/intents', { headers: { 'x-api-key': keyA, 'content-type': 'text/plain' }, body: text }), 400, 'invalid_request')
      }
      expectError(await api(gw.url, gw.adminKey, 'POST', '/v1/keys', '{"role":'), 400, 'invalid_request')
    })

    it('well-formed JSON that is not an object → 422 schema_invalid', async () => {
      for (const text of ['[]', '"text"', '42', 'null', 'true']) {
        expectError(await api(gw.url, keyA, 'POST', '/v1/intents', text), 422, 'schema_invalid')
      }
    })

    it('422 names the failing field in error.details.field', async () => {
      const base = { intent_type: 'deploy.service.v1', to_agent: B, payload: {} }
      const cases: [Record<string, unknown>, string][] = [
        [{ ...base, to_agent: 'agent://acme/prod' }, 'to_agent'],
        [{ ...base, to_agent: 'http://acme/prod/x' }, 'to_agent'],
        [{ ...base, to_agent: 'agent://Acme/prod/x' }, 'to_agent'],
        [{ ...base, to_agent: `agent://acme/prod/${'x'.repeat(64)}` }, 'to_agent'],
        [{ ...base, to_agent: 42 }, 'to_agent'],
        [{ ...base, intent_type: 'Deploy.Service.v1' }, 'intent_type'],
        [{ ...base, intent_type: 'deploy..service' }, 'intent_type'],
        [{ ...base, intent_type: '' }, 'intent_type'],
        [{ ...base, payload: 'not an object' }, 'payload'],
        [{ ...base, payload: [1, 2] }, 'payload'],
        [{ ...base, payload: null }, 'payload'],
        [{ ...base, reply_to: 'somewhere' }, 'reply_to'],
        [{ ...base, from_agent: 'agent://acme' }, 'from_agent'],
        [{ ...base, max_delivery_attempts: 0 }, 'max_delivery_attempts'],
        [{ ...base, max_delivery_attempts: 1e12 }, 'max_delivery_attempts'],
        [{ ...base, deadline_at: 'tomorrow' }, 'deadline_at'],
        [{ to_agent: B, payload: {} }, 'intent_type'],
        [{ intent_type: 'a.b', payload: {} }, 'to_agent'],
      ]
      for (const [body, field] of cases) {
        const res = await api(gw.url, keyA, 'POST', '/v1/intents', body)
        expectError(res, 422, 'schema_invalid')
        expect(res.body.error.details.field, JSON.stringify(body).slice(0, 120)).toBe(field)
      }
      // Nothing was stored and no address was registered by a refused send.
      const list = await api(gw.url, keyA, 'GET', '/v1/intents')
      expect((list.body.intents as any[]).filter((i) => i.intent_type === 'deploy.service.v1')).toEqual([])
      expectError(await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod')}`), 422, 'schema_invalid')
    })

    it('422 in resolve bodies names the field', async () => {
      const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'field.v1', to_agent: B, payload: {} })
      const id = sent.body.intent_id as string
      for (const [body, field] of [
        [{ status: 'DONE' }, 'status'],
        [{}, 'status'],
        [{ status: 'COMPLETED', cost_usd: 'free' }, 'cost_usd'],
        [{ status: 'COMPLETED', cost_usd: -0.5 }, 'cost_usd'],
      ] as const) {
        const res = await api(gw.url, keyA, 'POST', `/v1/intents/${id}/resolve`, body)
        expectError(res, 422, 'schema_invalid')
        expect(res.body.error.details.field).toBe(field)
      }
    })

    it('unknown fields: ignored in intents, 422 in control objects', async () => {
      const ok = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'extra.v1', to_agent: B, payload: {}, surprise: true })
      expect(ok.status).toBe(200)
      const reg = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: 'agent://acme/prod/err-reg', colour: 'red' })
      expectError(reg, 422, 'schema_invalid')
      expect(JSON.stringify(reg.body.error.details)).toContain('colour')
      expectError(
        await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/err-reg')}`),
        404,
        'not_found',
      )
    })

    it('bad input never yields 5xx: a sample of odd bodies and parameters', async () => {
      const bodies = [
        '{"intent_type":"a.b","to_agent":"' + B + '","payload":{"deep":' + '['.repeat(500) + ']'.repeat(500) + '}}',
        '{"intent_type":"a.b","to_agent":"' + B + '","payload":{},"correlation_id":' + JSON.stringify('c'.repeat(10_000)) + '}',
        '{"__proto__":{"admin":true},"intent_type":"a.b","to_agent":"' + B + '","payload":{}}',
        '{"intent_type":"a.b","to_agent":"' + B + '","payload":{},"deadline_at":"2030-13-45T99:99:99Z"}',
        '{"intent_type":"a.b","to_agent":"' + B + '","payload":{},"max_delivery_attempts":1.5}',
        '\ufeff{}',
      ]
      for (const text of bodies) {
        const res = await api(gw.url, keyA, 'POST', '/v1/intents', text)
        expect(res.status, text.slice(0, 80)).toBeLessThan(500)
        if (res.status >= 400) expect(res.body.ok).toBe(false)
      }
      for (const q of ['since=1e3', 'since=99999999999999999999', 'since=', 'since=1&since=2', 'limit=%00']) {
        const res = await api(gw.url, keyA, 'GET', `/v1/intents/00000000-0000-4000-8000-000000000000/events?${q}`)
        expect(res.status, q).toBeGreaterThanOrEqual(400)
        expect(res.status, q).toBeLessThan(500)
      }
      expectError(await api(gw.url, keyA, 'GET', '/v1/intents?limit=501'), 422, 'schema_invalid')
      expectError(await api(gw.url, keyA, 'GET', '/v1/intents?limit=10&limit=20'), 400, 'invalid_request')
      expect((await api(gw.url, null, 'GET', '/health')).status).toBe(200)
    })
    it('deeply nested JSON well under the size limit is a 4xx, never a 500', async () => {
      const depth = 10_000 // a 20 KB body
      const deep = '['.repeat(depth) + ']'.repeat(depth)
      const send = await api(gw.url, keyA, 'POST', '/v1/intents', `{"intent_type":"deep.v1","to_agent":"${B}","payload":{"deep":${deep}}}`)
      expect(send.status, JSON.stringify(send.body)).toBeGreaterThanOrEqual(400)
      expect(send.status, JSON.stringify(send.body)).toBeLessThan(500)
      expect(send.body.ok).toBe(false)

      const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'deep.v1', to_agent: B, payload: {} })
      const resolve = await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${sent.body.intent_id}/resolve`, `{"status":"CANCELED","result":${deep}}`)
      expect(resolve.status, JSON.stringify(resolve.body)).toBeGreaterThanOrEqual(400)
      expect(resolve.status, JSON.stringify(resolve.body)).toBeLessThan(500)
      // The refused resolve changed nothing.
      const got = await api(gw.url, keyA, 'GET', `/v1/intents/${sent.body.intent_id}`)
      expect(got.body.intent.status).toBe('SUBMITTED')

      const register = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', `{"address":"agent://acme/prod/err-deep","metadata":{"x":${deep}}}`)
      expect(register.status, JSON.stringify(register.body)).toBeGreaterThanOrEqual(400)
      expect(register.status, JSON.stringify(register.body)).toBeLessThan(500)
      expect((await api(gw.url, null, 'GET', '/health')).status).toBe(200)
    })
  })

  describe('x-instance-id', () => {
    it('a bad x-instance-id on the inbox stream → 400 invalid_request', async () => {
      for (const id of ['i'.repeat(129), 'i'.repeat(200), '']) {
        const res = await api(gw.url, keyA, 'GET', streamPath(A), undefined, { 'x-instance-id': id })
        expectError(res, 400, 'invalid_request')
      }
    })

    it('128 printable ASCII characters are fine', async () => {
      const res = await readSse(gw.url, keyA, streamPath(A), { 'x-instance-id': `${'i'.repeat(120)} ~!@#$%^` })
      expect(res.status).toBe(200)
      expect(res.frames[res.frames.length - 1]?.event).toBe('stream.timeout')
    })
  })

  describe('GET /openapi.json', () => {
    const EXPECTED: [string, string][] = [
      ['get', '/health'],
      ['get', '/openapi.json'],
      ['get', '/egress/{upstream}/{path}'],
      ['head', '/egress/{upstream}/{path}'],
      ['options', '/egress/{upstream}/{path}'],
      ['post', '/v1/keys'],
      ['get', '/v1/keys'],
      ['delete', '/v1/keys/{key_id}'],
      ['post', '/v1/intents'],
      ['get', '/v1/intents'],
      ['get', '/v1/intents/{intent_id}'],
      ['get', '/v1/intents/{intent_id}/events'],
      ['get', '/v1/intents/{intent_id}/events/stream'],
      ['post', '/v1/intents/{intent_id}/ack'],
      ['post', '/v1/intents/{intent_id}/resolve'],
      ['get', '/v1/agents/{org}/{workspace}/{name}/intents/stream'],
      ['post', '/v1/mesh/agents'],
      ['get', '/v1/mesh/agents'],
      ['get', '/v1/mesh/agents/{address_id}'],
    ]
    let spec: any

    beforeAll(async () => {
      const res = await api(gw.url, null, 'GET', '/openapi.json')
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^application\/json/)
      spec = res.body
    })

    it('is an OpenAPI 3.1 document', () => {
      expect(spec.openapi).toMatch(/^3\.1\.\d+$/)
      expect(spec.info).toMatchObject({ title: expect.any(String), version: expect.any(String) })
      expect(spec.paths).toBeTypeOf('object')
      for (const [path, item] of Object.entries<any>(spec.paths)) {
        expect(path.startsWith('/'), path).toBe(true)
        expect(path, 'OpenAPI templates use {param}, not :param').not.toMatch(/:/)
        for (const [method, op] of Object.entries<any>(item)) {
          // HEAD and OPTIONS: the HTTP egress routes forward every method.
          expect(['get', 'post', 'put', 'delete', 'patch', 'head', 'options']).toContain(method)
          expect(op.responses, `${method} ${path}`).toBeTypeOf('object')
          for (const p of (path.match(/\{([a-z_]+)\}/g) ?? []).map((s) => s.slice(1, -1))) {
            expect(op.parameters.some((x: any) => x.in === 'path' && x.name === p && x.required === true), `${method} ${path} ${p}`).toBe(true)
          }
        }
      }
      expect(JSON.stringify(spec.components?.securitySchemes ?? {})).toContain('x-api-key')
    })

    it('lists every registered route', () => {
      for (const [method, path] of EXPECTED) {
        expect(spec.paths[path]?.[method], `${method.toUpperCase()} ${path}`).toBeTypeOf('object')
      }
    })

    it('every documented operation is really served (no-key probe: 401 for keyed routes, never 404)', async () => {
      const fill: Record<string, string> = {
        intent_id: '00000000-0000-4000-8000-000000000000',
        address_id: 'addr_probe',
        key_id: 'key_probe',
        org: 'acme',
        workspace: 'prod',
        name: 'probe',
      }
      for (const [path, item] of Object.entries<any>(spec.paths)) {
        for (const [method, op] of Object.entries<any>(item)) {
          const concrete = path.replace(/\{([a-z_]+)\}/g, (_m: string, p: string) => fill[p] ?? 'probe')
          const res = await raw(gw.url, method.toUpperCase(), concrete, method === 'get' || method === 'delete' || method === 'head' ? {} : { body: '{}' })
          const keyed = Array.isArray(op.security) && op.security.length > 0
          if (keyed) expect(res.status, `${method.toUpperCase()} ${path}`).toBe(401)
          else expect(res.status, `${method.toUpperCase()} ${path}`).not.toBe(404)
        }
      }
    })

    it('documents the POST /v1/intents request body with intent_type and to_agent', () => {
      const op = spec.paths['/v1/intents'].post
      const schema = op.requestBody.content['application/json'].schema
      expect(schema.type).toBe('object')
      expect(schema.properties).toHaveProperty('intent_type')
      expect(schema.properties).toHaveProperty('to_agent')
      expect(schema.properties).toHaveProperty('payload')
      expect(schema.required).toEqual(expect.arrayContaining(['intent_type', 'to_agent']))
      expect(schema.properties.intent_type.pattern ?? '').not.toBe('')
      const resolve = spec.paths['/v1/intents/{intent_id}/resolve'].post.requestBody.content['application/json'].schema
      expect(resolve.properties.status.enum).toEqual(expect.arrayContaining(['COMPLETED', 'FAILED', 'CANCELED']))
      const keys = spec.paths['/v1/keys'].post.requestBody.content['application/json'].schema
      expect(keys.properties).toHaveProperty('role')
      expect(keys.additionalProperties).toBe(false)
    })
  })

  describe('agent lookup by address_id or address', () => {
    it('accepts addr_ ids, URL-encoded addresses and raw addresses; unknown → 404', async () => {
      const byEncoded = await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(A)}`)
      expect(byEncoded.status).toBe(200)
      expect(byEncoded.body.ok).toBe(true)
      expect(byEncoded.body.agent).toMatchObject({ address: A, address_id: expect.stringMatching(/^addr_[0-9A-Za-z]+$/) })
      const id = byEncoded.body.agent.address_id as string

      const byId = await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${id}`)
      expect(byId.status).toBe(200)
      expect(byId.body.agent.address).toBe(A)
      expect(byId.body.agent.address_id).toBe(id)

      const byRaw = await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${A}`)
      expect(byRaw.status).toBe(200)
      expect(byRaw.body.agent.address_id).toBe(id)

      expectError(await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/never-seen')}`), 404, 'not_found')
      expectError(await api(gw.url, viewerKey, 'GET', '/v1/mesh/agents/addr_doesnotexist000000'), 404, 'not_found')
      const garbage = await api(gw.url, viewerKey, 'GET', '/v1/mesh/agents/not-an-address')
      expect([404, 422]).toContain(garbage.status)
      expectError(garbage, garbage.status, garbage.status === 404 ? 'not_found' : 'schema_invalid')

      // A show never registers the address.
      const list = await api(gw.url, viewerKey, 'GET', '/v1/mesh/agents')
      expect((list.body.agents as any[]).map((a) => a.address)).not.toContain('agent://acme/prod/never-seen')
    })

    it('sending to an unknown address registers it with health unknown', async () => {
      const fresh = 'agent://acme/prod/err-fresh-target'
      expectError(await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(fresh)}`), 404, 'not_found')
      const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'hello.v1', to_agent: fresh, payload: {} })
      expect(sent.status).toBe(200)
      const shown = await api(gw.url, viewerKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(fresh)}`)
      expect(shown.status).toBe(200)
      expect(shown.body.agent).toMatchObject({ address: fresh, health_status: 'unknown' })
    })
  })
})
