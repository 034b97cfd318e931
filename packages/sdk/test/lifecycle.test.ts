import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestGateway, type TestGateway } from '../../server/test/harness.js'
import { Agent, AuthenticationError, ConflictError, NotFoundError, Operator, type Delivery } from '../src/index.js'
import { hasRoute, next } from './helpers.js'

const A = 'agent://acme/prod/planner'
const B = 'agent://acme/prod/deployer'

describe('SDK lifecycle against a real gateway', () => {
  let gw: TestGateway
  let operator: Operator
  let a: Agent
  let b: Agent
  let bKeyId: string

  beforeAll(async () => {
    gw = await startTestGateway()
    operator = new Operator({ baseURL: gw.url, apiKey: gw.adminKey })
    const aKey = await operator.keys.create({ role: 'agent', agent: A, name: 'planner' })
    const bKey = await operator.keys.create({ role: 'agent', agent: B })
    expect(aKey).toMatchObject({ ok: true, role: 'agent', agent: A, key: expect.stringMatching(/^cp_/) })
    bKeyId = bKey.key_id
    a = new Agent({ baseURL: gw.url, apiKey: aKey.key, address: A, instanceId: 'planner-1' })
    b = new Agent({ baseURL: gw.url, apiKey: bKey.key, address: B, instanceId: 'deployer-1' })
  })
  afterAll(async () => {
    a?.close()
    b?.close()
    await gw?.close()
  })

  it('sends, delivers, acknowledges, resolves and reads back', async () => {
    const inbox = b.listen()
    const sent = await a.send({
      to_agent: B,
      intent_type: 'deploy.service.v1',
      payload: { service: 'api', version: '1.2.3' },
      correlation_id: 'change-7',
    })
    expect(sent).toMatchObject({ ok: true, intent_id: expect.any(String), status: 'SUBMITTED' })

    const delivery: Delivery = await next(inbox)
    expect(delivery).toMatchObject({
      intent_id: sent.intent_id,
      event_type: 'intent.delivered',
      intent_type: 'deploy.service.v1',
      from_agent: A,
      payload: { service: 'api', version: '1.2.3' },
      delivery_attempt: 1,
      correlation_id: 'change-7',
    })
    expect(delivery.seq).toBeGreaterThanOrEqual(1)
    expect(Date.parse(delivery.lease_expires_at ?? '')).toBeGreaterThan(Date.now())

    const acked = await b.ack(delivery.intent_id)
    expect(acked.intent.status).toBe('ACKNOWLEDGED')
    const resolved = await b.resolve(delivery.intent_id, { status: 'COMPLETED', result: { url: 'https://api' }, cost_usd: 0.25 })
    expect(resolved.intent.status).toBe('COMPLETED')
    expect(resolved.event?.event_type).toBe('intent.completed')
    expect(resolved.completion_delivery).toEqual({ delivered: false, reason: 'reply_to_not_set' })
    await inbox.return()

    const { intent } = await a.get(sent.intent_id)
    expect(intent).toMatchObject({ status: 'COMPLETED', result: { url: 'https://api' }, cost_usd: 0.25, from_agent: A, to_agent: B })
    const { events } = await a.events(sent.intent_id)
    expect(events.map((e) => e.event_type)).toEqual([
      'intent.created',
      'intent.submitted',
      'intent.delivered',
      'intent.acknowledged',
      'intent.completed',
    ])
    const later = await a.events(sent.intent_id, { since: 3 })
    expect(later.events.map((e) => e.seq)).toEqual([4, 5])
  })

  it('sends the outcome to reply_to', async () => {
    const bInbox = b.listen()
    const aInbox = a.listen()
    const sent = await a.send({ to_agent: B, intent_type: 'build.v1', reply_to: A, correlation_id: 'c-9' })
    const delivery = await next(bInbox)
    const resolved = await b.resolve(delivery.intent_id, { status: 'FAILED', error: { message: 'disk full' } })
    expect(resolved.completion_delivery).toMatchObject({ delivered: true, reply_to: A, intent_id: expect.any(String) })
    const completion = await next(aInbox)
    expect(completion).toMatchObject({
      intent_type: 'intent.completion.v1',
      from_agent: B,
      correlation_id: 'c-9',
      payload: { intent_id: sent.intent_id, status: 'FAILED' },
    })
    await a.resolve(completion.intent_id, { status: 'COMPLETED' })
    await Promise.all([bInbox.return(), aInbox.return()])
  })

  it('returns the original intent for a repeated idempotency key', async () => {
    const params = { to_agent: B, intent_type: 'deploy.service.v1', payload: { n: 1 }, idempotencyKey: 'deploy-n-1' }
    const first = await a.send(params)
    const again = await a.send(params)
    expect(again.intent_id).toBe(first.intent_id)
    await expect(a.send({ ...params, payload: { n: 2 } })).rejects.toBeInstanceOf(ConflictError)
  })

  it('lists and shows agents, by address and by id', async () => {
    const list = await operator.agents.list({ limit: 10 })
    expect(list.agents.map((x) => x.address)).toEqual(expect.arrayContaining([A, B]))
    expect(list.summary.total).toBe(list.agents.length)
    const byAddress = await operator.agents.retrieve(B)
    expect(byAddress.agent).toMatchObject({ address: B, address_id: expect.stringMatching(/^addr_/) })
    const byId = await operator.agents.retrieve(byAddress.agent.address_id)
    expect(byId.agent.address).toBe(B)
    await expect(operator.agents.retrieve('agent://acme/prod/nobody')).rejects.toBeInstanceOf(NotFoundError)
  })

  it('registers an agent once', async () => {
    const reg = await operator.agents.register({ address: 'agent://acme/prod/auditor', display_name: 'Auditor', metadata: { team: 'sec' } })
    expect(reg.agent).toMatchObject({ address: 'agent://acme/prod/auditor', display_name: 'Auditor', metadata: { team: 'sec' } })
    await expect(operator.agents.register({ address: 'agent://acme/prod/auditor' })).rejects.toBeInstanceOf(ConflictError)
  })

  it('sends as an agent, lists and cancels as an operator', async () => {
    const sent = await operator.intents.send({ from_agent: A, to_agent: B, intent_type: 'report.v1', payload: { q: 3 } })
    const { intent } = await operator.intents.retrieve(sent.intent_id)
    expect(intent).toMatchObject({ from_agent: A, to_agent: B, status: 'SUBMITTED', delivery_state: 'queued' })
    const listed = await operator.intents.list({ agent: A, direction: 'sent', limit: 50 })
    expect(listed.intents[0]?.intent_id).toBe(sent.intent_id)
    const canceled = await operator.intents.cancel(sent.intent_id, { reason: 'not needed' })
    expect(canceled.intent.status).toBe('CANCELED')
    const { events } = await operator.intents.events(sent.intent_id, { since: 2 })
    expect(events).toEqual([expect.objectContaining({ event_type: 'intent.canceled', details: { reason: 'not needed' } })])
    await expect(operator.intents.cancel(sent.intent_id)).rejects.toBeInstanceOf(ConflictError)
  })

  it('heartbeats (or reports that the route is missing)', async () => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/heartbeat'))) {
      await expect(b.heartbeat()).rejects.toBeInstanceOf(NotFoundError)
      return
    }
    const beat = await b.heartbeat({ metrics: { intents_total: 2, intents_succeeded: 1, intents_failed: 1, avg_latency_ms: 12, cost_usd: 0.01 } })
    expect(beat).toMatchObject({ ok: true, address: B, instance_id: 'deployer-1', health_status: expect.any(String) })
    expect(b.killed).toBe(false)
  })

  it('lists keys and revokes one', async () => {
    const { keys } = await operator.keys.list()
    expect(keys.find((k) => k.key_id === bKeyId)).toMatchObject({ role: 'agent', agent: B, revoked_at: null })
    expect(keys.every((k) => !('key' in k))).toBe(true)
    const revoked = await operator.keys.revoke(bKeyId)
    expect(revoked.key.revoked_at).toEqual(expect.any(String))
    await expect(b.get('00000000-0000-4000-8000-000000000000')).rejects.toBeInstanceOf(AuthenticationError)
  })

  it('reads health', async () => {
    expect(await operator.health()).toMatchObject({ ok: true, store: 'sqlite' })
  })
})
