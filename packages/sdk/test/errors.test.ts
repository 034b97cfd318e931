import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, startTestGateway, type TestGateway } from '../../server/test/harness.js'
import {
  APIError,
  Agent,
  AgentKilledError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  Operator,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  UnprocessableEntityError,
  type Fetch,
} from '../src/index.js'
import { next } from './helpers.js'

const A = 'agent://acme/prod/a'
const B = 'agent://acme/prod/b'

/** Runs `fn` and returns what it threw. */
async function thrown(fn: () => Promise<unknown>): Promise<APIError> {
  try {
    await fn()
  } catch (error) {
    return error as APIError
  }
  throw new Error('expected an error')
}

describe('error mapping', () => {
  it('maps status and code to classes', () => {
    const body = (code: string) => ({ ok: false, error: { code, message: 'm', request_id: 'req_x', details: { field: 'f' } } })
    const cases: [number, string, new (...args: never[]) => APIError][] = [
      [400, 'invalid_request', BadRequestError],
      [401, 'unauthorized', AuthenticationError],
      [403, 'forbidden', PermissionDeniedError],
      [403, 'policy_denied', PermissionDeniedError],
      [403, 'agent_killed', AgentKilledError],
      [404, 'not_found', NotFoundError],
      [409, 'conflict', ConflictError],
      [413, 'payload_too_large', PayloadTooLargeError],
      [422, 'schema_invalid', UnprocessableEntityError],
      [429, 'rate_limited', RateLimitError],
      [503, 'store_unavailable', InternalServerError],
      [500, 'internal_error', InternalServerError],
    ]
    for (const [status, code, cls] of cases) {
      const error = APIError.generate(status, body(code), { 'x-request-id': 'req_header' })
      expect(error).toBeInstanceOf(cls)
      expect(error).toMatchObject({ status, code, requestId: 'req_x', details: { field: 'f' } })
      expect(error.message).toBe(`${status} ${code}: m`)
    }
    expect(APIError.generate(403, body('agent_killed'))).toBeInstanceOf(PermissionDeniedError)
    const bare = APIError.generate(418, 'teapot', { 'x-request-id': 'req_h' })
    expect(bare.constructor).toBe(APIError)
    expect(bare).toMatchObject({ status: 418, code: undefined, requestId: 'req_h', body: 'teapot' })
    const limited = APIError.generate(429, body('rate_limited'), { 'retry-after': '17' }) as RateLimitError
    expect(limited.retryAfterSeconds).toBe(17)
  })
})

describe('errors from a real gateway', () => {
  let gw: TestGateway
  let a: Agent
  let b: Agent

  beforeAll(async () => {
    gw = await startTestGateway()
    a = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, A), address: A })
    b = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, B), address: B })
  })
  afterAll(async () => {
    a?.close()
    b?.close()
    await gw?.close()
  })

  it('401 with a bad key: AuthenticationError carrying the x-request-id', async () => {
    const error = await thrown(() => new Operator({ baseURL: gw.url, apiKey: 'cp_not_a_real_key_000000000000' }).keys.list())
    expect(error).toBeInstanceOf(AuthenticationError)
    expect(error.status).toBe(401)
    expect(error.code).toBe('unauthorized')
    expect(error.requestId).toMatch(/^req_/)
    expect(error.requestId).toBe(error.headers.get('x-request-id'))
    expect(error.message).toMatch(/^401 unauthorized: /)
  })

  it('401 also fails listen() at once, without reconnecting', async () => {
    let streams = 0
    const counting: Fetch = (url, init) => {
      if (url.includes('/intents/stream')) streams += 1
      return fetch(url, init)
    }
    const stranger = new Agent({ baseURL: gw.url, apiKey: 'cp_revoked0000000000000000000', address: B, fetch: counting })
    await expect(next(stranger.listen({ reconnect: { initialDelayMs: 1 } }))).rejects.toBeInstanceOf(AuthenticationError)
    expect(streams).toBe(1)
  })

  it("403 forbidden: an agent key reading another agent's inbox or an admin route", async () => {
    const posing = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, 'agent://acme/prod/c'), address: B })
    const error = await thrown(() => next(posing.listen({ reconnect: { initialDelayMs: 1 } })))
    expect(error).toBeInstanceOf(PermissionDeniedError)
    expect(error).not.toBeInstanceOf(AgentKilledError)
    expect(error.code).toBe('forbidden')
    const asOperator = new Operator({ baseURL: gw.url, apiKey: await agentKey(gw, 'agent://acme/prod/d') })
    expect(await thrown(() => asOperator.keys.list())).toBeInstanceOf(PermissionDeniedError)
  })

  it('404 for an unknown intent', async () => {
    const error = await thrown(() => a.get('00000000-0000-4000-8000-000000000000'))
    expect(error).toBeInstanceOf(NotFoundError)
    expect(error).toMatchObject({ status: 404, code: 'not_found' })
    expect(error.requestId).toBe(error.headers.get('x-request-id'))
  })

  it('409 on a second terminal resolve', async () => {
    const inbox = b.listen()
    const sent = await a.send({ to_agent: B, intent_type: 'job.v1' })
    const delivery = await next(inbox)
    expect(delivery.intent_id).toBe(sent.intent_id)
    await b.resolve(sent.intent_id, { status: 'COMPLETED' })
    const error = await thrown(() => b.resolve(sent.intent_id, { status: 'FAILED' }))
    expect(error).toBeInstanceOf(ConflictError)
    expect(error).toMatchObject({ status: 409, code: 'conflict', details: { status: 'COMPLETED' } })
    await inbox.return()
  })

  it('422 names the field in details', async () => {
    const error = await thrown(() => a.send({ to_agent: 'not-an-address', intent_type: 'job.v1' }))
    expect(error).toBeInstanceOf(UnprocessableEntityError)
    expect(error.code).toBe('schema_invalid')
    expect(error.details?.['field']).toBe('to_agent')
    const upper = await thrown(() => a.send({ to_agent: B, intent_type: 'Job.V1' }))
    expect(upper.details?.['field']).toBe('intent_type')
  })

  it('400 for a malformed header', async () => {
    const error = await thrown(() =>
      a.client.post('/v1/intents', { to_agent: B, intent_type: 'job.v1' }, { headers: { 'Idempotency-Key': 'has spaces' } }),
    )
    expect(error).toBeInstanceOf(BadRequestError)
    expect(error.code).toBe('invalid_request')
  })

  it('413 for an oversize body', async () => {
    const error = await thrown(() => a.send({ to_agent: B, intent_type: 'job.v1', payload: { blob: 'x'.repeat(1_100_000) } }))
    expect(error).toBeInstanceOf(PayloadTooLargeError)
    expect(error.code).toBe('payload_too_large')
  })

  it('403 when an agent sends as someone else', async () => {
    const error = await thrown(() => a.client.post('/v1/intents', { from_agent: B, to_agent: B, intent_type: 'job.v1' }))
    expect(error).toBeInstanceOf(PermissionDeniedError)
    expect(error.code).toBe('forbidden')
  })
})
