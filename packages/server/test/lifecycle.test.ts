/**
 * The intent lifecycle over real HTTP (DESIGN §4, §5, §5a, §5b): send, read, events,
 * inbox delivery, ack, resolve, reply_to completions, trace ids, key headers and push
 * delivery latency.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  agentKey,
  api,
  openSseStream,
  readSse,
  startTestGateway,
  testEngines,
  type SseConnection,
  type TestGateway,
} from './harness.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/

const A = 'agent://acme/prod/lc-sender'
const B = 'agent://acme/prod/lc-worker'
const R = 'agent://acme/prod/lc-reply-sink'

const streamPath = (address: string, query: string): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream?${query}`

describe.each(testEngines('lifecycle.test.ts'))('intent lifecycle (%s)', (engine) => {
  let gw: TestGateway
  let keyA: string
  let keyB: string
  let keyR: string
  const open: SseConnection[] = []

  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    keyA = await agentKey(gw, A)
    keyB = await agentKey(gw, B)
    keyR = await agentKey(gw, R)
  })
  afterAll(async () => {
    for (const s of open) s.close()
    await gw.close()
  })

  it('registers the agent of a new agent key', async () => {
    for (const address of [A, B]) {
      const res = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
      expect(res.status).toBe(200)
      expect(res.body.ok).toBe(true)
      expect(res.body.agent.address).toBe(address)
      expect(res.body.agent.address_id).toMatch(/^addr_[0-9A-Za-z]+$/)
    }
  })

  it('runs send → read → deliver → ack → resolve, with events and a second resolve refused', async () => {
    // Send: from_agent is derived from the agent key.
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', {
      intent_type: 'deploy.service.v1',
      to_agent: B,
      payload: { service: 'api', version: '1.2.3' },
      correlation_id: 'corr-lifecycle-1',
    })
    expect(sent.status).toBe(200)
    expect(sent.body).toEqual({ ok: true, intent_id: expect.stringMatching(UUID), status: 'SUBMITTED', created_at: expect.stringMatching(ISO) })
    const id = sent.body.intent_id as string

    // Read it back.
    const got = await api(gw.url, keyA, 'GET', `/v1/intents/${id}`)
    expect(got.status).toBe(200)
    expect(got.body.ok).toBe(true)
    expect(got.body.intent).toMatchObject({
      intent_id: id,
      intent_type: 'deploy.service.v1',
      correlation_id: 'corr-lifecycle-1',
      from_agent: A,
      to_agent: B,
      payload: { service: 'api', version: '1.2.3' },
      status: 'SUBMITTED',
      delivery_attempt: 0,
    })
    expect(got.body.intent.created_at).toBe(sent.body.created_at)
    expect(got.body.intent.updated_at).toMatch(ISO)

    // A new intent already has events 1 and 2.
    const ev0 = await api(gw.url, keyA, 'GET', `/v1/intents/${id}/events`)
    expect(ev0.status).toBe(200)
    expect(ev0.body.events.map((e: any) => [e.seq, e.event_type, e.status])).toEqual([
      [1, 'intent.created', 'SUBMITTED'],
      [2, 'intent.submitted', 'SUBMITTED'],
    ])
    for (const e of ev0.body.events) {
      expect(e).toMatchObject({ intent_id: id, actor: expect.any(String), at: expect.stringMatching(ISO) })
      expect(e).toHaveProperty('details')
    }

    // B's inbox stream (window mode) delivers it with seq 1, then ends with stream.end (reason: delivered).
    const t0 = performance.now()
    const inbox = await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=5'), { 'x-instance-id': 'worker-1' })
    const elapsed = performance.now() - t0
    expect(inbox.status).toBe(200)
    expect(elapsed).toBeLessThan(2_500) // ends shortly after a delivery, not after the whole 5 s window
    expect(inbox.frames.map((f) => f.event)).toEqual(['intent.delivered', 'stream.end'])
    const [delivered, timeout] = inbox.frames as [any, any]
    expect(delivered.id).toBe('1')
    expect(delivered.data).toMatchObject({
      intent_id: id,
      seq: 1,
      event_type: 'intent.delivered',
      status: 'DELIVERED',
      intent_type: 'deploy.service.v1',
      from_agent: A,
      payload: { service: 'api', version: '1.2.3' },
      delivery_attempt: 1,
      lease_expires_at: expect.stringMatching(ISO),
    })
    const leaseAtDelivery = Date.parse(delivered.data.lease_expires_at)
    expect(leaseAtDelivery).toBeGreaterThan(Date.now())
    expect(timeout.data).toEqual({ ok: true, next_seq: 2, reason: 'delivered' })

    const afterDelivery = await api(gw.url, keyB, 'GET', `/v1/intents/${id}`)
    expect(afterDelivery.body.intent).toMatchObject({ status: 'DELIVERED', delivery_state: 'leased', delivery_attempt: 1 })

    // Ack: ACKNOWLEDGED, lease extended from now.
    await new Promise((resolve) => setTimeout(resolve, 30))
    const acked = await api(gw.url, keyB, 'POST', `/v1/intents/${id}/ack`, {}, { 'x-instance-id': 'worker-1' })
    expect(acked.status).toBe(200)
    expect(acked.body.ok).toBe(true)
    expect(acked.body.intent).toMatchObject({ intent_id: id, status: 'ACKNOWLEDGED', delivery_state: 'leased' })
    expect(Date.parse(acked.body.intent.lease_expires_at)).toBeGreaterThan(leaseAtDelivery)

    // Resolve COMPLETED with a result and a cost.
    const resolved = await api(gw.url, keyB, 'POST', `/v1/intents/${id}/resolve`, {
      status: 'COMPLETED',
      result: { deployed: true, url: 'https://api.example' },
      cost_usd: 0.25,
    })
    expect(resolved.status).toBe(200)
    expect(resolved.body.ok).toBe(true)
    expect(resolved.body.intent).toMatchObject({
      intent_id: id,
      status: 'COMPLETED',
      result: { deployed: true, url: 'https://api.example' },
      cost_usd: 0.25,
    })
    expect(resolved.body.event).toMatchObject({ intent_id: id, seq: 5, event_type: 'intent.completed', status: 'COMPLETED' })
    expect(resolved.body.completion_delivery).toEqual({ delivered: false, reason: 'reply_to_not_set' })

    // A second terminal resolve is a conflict and changes nothing.
    const again = await api(gw.url, keyB, 'POST', `/v1/intents/${id}/resolve`, { status: 'FAILED', error: { why: 'late' } })
    expect(again.status).toBe(409)
    expect(again.body.error.code).toBe('conflict')
    const final = await api(gw.url, keyA, 'GET', `/v1/intents/${id}`)
    expect(final.body.intent).toMatchObject({ status: 'COMPLETED', result: { deployed: true, url: 'https://api.example' }, cost_usd: 0.25 })
    expect(final.body.intent.error ?? null).toBeNull()

    // The whole event log, and `since` filtering.
    const all = await api(gw.url, keyA, 'GET', `/v1/intents/${id}/events`)
    expect(all.body.events.map((e: any) => e.event_type)).toEqual([
      'intent.created',
      'intent.submitted',
      'intent.delivered',
      'intent.acknowledged',
      'intent.completed',
    ])
    expect(all.body.events.map((e: any) => e.seq)).toEqual([1, 2, 3, 4, 5])
    const since2 = await api(gw.url, keyA, 'GET', `/v1/intents/${id}/events?since=2`)
    expect(since2.status).toBe(200)
    expect(since2.body.events.map((e: any) => e.seq)).toEqual([3, 4, 5])
    expect(since2.body.events).toEqual(all.body.events.slice(2))
    const since5 = await api(gw.url, keyA, 'GET', `/v1/intents/${id}/events?since=5`)
    expect(since5.body.events).toEqual([])

    // The events stream gives the same events, as SSE frames with ids, then a stream.end that says why.
    const es = await readSse(gw.url, keyA, `/v1/intents/${id}/events/stream?wait_seconds=2&since=0`)
    expect(es.status).toBe(200)
    const eventFrames = es.frames.filter((f) => !f.event.startsWith('stream.'))
    expect(eventFrames.map((f) => f.data)).toEqual(all.body.events)
    expect(eventFrames.map((f) => f.event)).toEqual(all.body.events.map((e: any) => e.event_type))
    expect(eventFrames.map((f) => f.id)).toEqual(['1', '2', '3', '4', '5'])
    const esTimeout = es.frames[es.frames.length - 1]
    expect(esTimeout?.event).toBe('stream.end')
    expect(esTimeout?.data).toEqual({ ok: true, next_seq: 6, reason: 'terminal' })

    const esSince = await readSse(gw.url, keyA, `/v1/intents/${id}/events/stream?wait_seconds=2&since=3`)
    expect(esSince.frames.filter((f) => !f.event.startsWith('stream.')).map((f) => f.data.seq)).toEqual([4, 5])
  })

  it('reply_to: resolving sends an intent.completion.v1 intent to the reply_to agent', async () => {
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', {
      intent_type: 'build.image.v1',
      to_agent: B,
      payload: { image: 'web' },
      correlation_id: 'corr-reply-1',
      reply_to: R,
    })
    expect(sent.status).toBe(200)
    const id = sent.body.intent_id as string
    const inbox = await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=5'), { 'x-instance-id': 'worker-1' })
    expect(inbox.frames.some((f) => f.event === 'intent.delivered' && f.data.intent_id === id)).toBe(true)

    const resolved = await api(gw.url, keyB, 'POST', `/v1/intents/${id}/resolve`, {
      status: 'COMPLETED',
      result: { digest: 'sha256:abc' },
    })
    expect(resolved.status).toBe(200)
    const cd = resolved.body.completion_delivery
    expect(cd).toMatchObject({ delivered: true, reply_to: R, intent_id: expect.stringMatching(UUID) })
    expect(cd.intent_id).not.toBe(id)

    const completion = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${cd.intent_id}`)
    expect(completion.status).toBe(200)
    expect(completion.body.intent).toMatchObject({
      intent_id: cd.intent_id,
      intent_type: 'intent.completion.v1',
      from_agent: B,
      to_agent: R,
      correlation_id: 'corr-reply-1',
      payload: { intent_id: id, status: 'COMPLETED', result: { digest: 'sha256:abc' } },
      status: 'SUBMITTED',
    })
    const events = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${cd.intent_id}/events`)
    expect(events.body.events.map((e: any) => e.event_type)).toEqual(['intent.created', 'intent.submitted'])

    // It really is in R's inbox.
    const rInbox = await readSse(gw.url, keyR, streamPath(R, 'wait_seconds=5'), { 'x-instance-id': 'sink-1' })
    const frame = rInbox.frames.find((f) => f.event === 'intent.delivered')
    expect(frame?.data).toMatchObject({
      intent_id: cd.intent_id,
      intent_type: 'intent.completion.v1',
      from_agent: B,
      payload: { intent_id: id, status: 'COMPLETED', result: { digest: 'sha256:abc' } },
    })
  })

  it('reply_to on a FAILED resolve carries the error', async () => {
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', {
      intent_type: 'build.image.v1',
      to_agent: B,
      payload: {},
      correlation_id: 'corr-reply-2',
      reply_to: R,
    })
    const id = sent.body.intent_id as string
    await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=5'), { 'x-instance-id': 'worker-1' })
    const resolved = await api(gw.url, keyB, 'POST', `/v1/intents/${id}/resolve`, {
      status: 'FAILED',
      error: { code: 'build_broken' },
    })
    expect(resolved.status).toBe(200)
    expect(resolved.body.intent.error).toEqual({ code: 'build_broken' })
    const cd = resolved.body.completion_delivery
    expect(cd.delivered).toBe(true)
    const completion = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${cd.intent_id}`)
    expect(completion.body.intent.correlation_id).toBe('corr-reply-2')
    expect(completion.body.intent.payload).toEqual({ intent_id: id, status: 'FAILED', error: { code: 'build_broken' } })
  })

  it('staff senders: operators must name from_agent (422), viewers may not send (403)', async () => {
    const op = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'operator' })
    const viewer = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', { role: 'viewer' })
    expect(op.status).toBe(200)
    expect(viewer.status).toBe(200)

    const noFrom = await api(gw.url, op.body.key, 'POST', '/v1/intents', { intent_type: 'ops.note.v1', to_agent: B, payload: {} })
    expect(noFrom.status).toBe(422)
    expect(noFrom.body.error.code).toBe('schema_invalid')
    expect(noFrom.body.error.details.field).toBe('from_agent')

    const withFrom = await api(gw.url, op.body.key, 'POST', '/v1/intents', {
      intent_type: 'ops.note.v1',
      to_agent: B,
      from_agent: A,
      payload: {},
    })
    expect(withFrom.status).toBe(200)
    const stored = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${withFrom.body.intent_id}`)
    expect(stored.body.intent.from_agent).toBe(A)
    // Viewers may read intents and their events.
    const read = await api(gw.url, viewer.body.key, 'GET', `/v1/intents/${withFrom.body.intent_id}`)
    expect(read.status).toBe(200)
    expect(read.body.intent.intent_id).toBe(withFrom.body.intent_id)
    expect((await api(gw.url, viewer.body.key, 'GET', `/v1/intents/${withFrom.body.intent_id}/events`)).status).toBe(200)

    const adminNoFrom = await api(gw.url, gw.adminKey, 'POST', '/v1/intents', { intent_type: 'ops.note.v1', to_agent: B, payload: {} })
    expect(adminNoFrom.status).toBe(422)
    expect(adminNoFrom.body.error.details.field).toBe('from_agent')

    const byViewer = await api(gw.url, viewer.body.key, 'POST', '/v1/intents', {
      intent_type: 'ops.note.v1',
      to_agent: B,
      from_agent: A,
      payload: {},
    })
    expect(byViewer.status).toBe(403)
    expect(byViewer.body.error.code).toBe('forbidden')
  })

  it('x-request-id is on every response and equals error.request_id on errors', async () => {
    const responses = [
      await api(gw.url, null, 'GET', '/health'),
      await api(gw.url, keyA, 'GET', `/v1/intents?agent=${encodeURIComponent(A)}`),
      await api(gw.url, null, 'GET', '/v1/intents'),
      await api(gw.url, keyA, 'GET', '/v1/keys'),
      await api(gw.url, keyA, 'GET', '/v1/intents/00000000-0000-4000-8000-000000000000'),
      await api(gw.url, keyA, 'POST', '/v1/intents', '{"broken'),
      await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'x', to_agent: 'nope' }),
      await api(gw.url, keyA, 'GET', '/no/such/route'),
    ]
    const ids = new Set<string>()
    for (const res of responses) {
      const rid = res.headers.get('x-request-id')
      expect(rid, `x-request-id on a ${res.status}`).toMatch(/^\S+$/)
      ids.add(rid as string)
      if (res.status >= 400) {
        expect(res.body.ok).toBe(false)
        expect(res.body.error.request_id).toBe(rid)
      }
    }
    expect(ids.size).toBe(responses.length) // one id per request
    const stream = await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=1'))
    expect(stream.status).toBe(200)
    const raw = await fetch(`${gw.url}${streamPath(B, 'wait_seconds=1')}`, { headers: { 'x-api-key': keyB } })
    expect(raw.headers.get('x-request-id')).toMatch(/^\S+$/)
    await raw.text()
  })

  it('X-Trace-Id is echoed and stored as trace_id on the intent', async () => {
    const trace = 'trace-4bf92f3577b34da6a3ce929d0e0e4736'
    const sent = await api(
      gw.url,
      keyA,
      'POST',
      '/v1/intents',
      { intent_type: 'trace.test.v1', to_agent: B, payload: {} },
      { 'X-Trace-Id': trace },
    )
    expect(sent.status).toBe(200)
    expect(sent.headers.get('x-trace-id')).toBe(trace)
    const got = await api(gw.url, keyA, 'GET', `/v1/intents/${sent.body.intent_id}`, undefined, { 'x-trace-id': 'other' })
    expect(got.headers.get('x-trace-id')).toBe('other')
    expect(got.body.intent.trace_id).toBe(trace)
    // Also echoed on errors.
    const err = await api(gw.url, null, 'GET', '/v1/intents', undefined, { 'x-trace-id': trace })
    expect(err.status).toBe(401)
    expect(err.headers.get('x-trace-id')).toBe(trace)
  })

  it('traceparent is echoed and stored when there is no X-Trace-Id', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'trace.test.v1', to_agent: B, payload: {} }, { traceparent: tp })
    expect(sent.status).toBe(200)
    expect(sent.headers.get('traceparent')).toBe(tp)
    const got = await api(gw.url, keyA, 'GET', `/v1/intents/${sent.body.intent_id}`)
    expect(got.body.intent.trace_id).toBe(tp)
  })

  it('Authorization: Bearer works; x-api-key wins when both are present', async () => {
    const path = `/v1/intents?agent=${encodeURIComponent(A)}`
    const bearer = await api(gw.url, null, 'GET', path, undefined, { authorization: `Bearer ${keyA}` })
    expect(bearer.status).toBe(200)
    expect(bearer.body.ok).toBe(true)

    const sent = await api(gw.url, null, 'POST', '/v1/intents', { intent_type: 'bearer.test.v1', to_agent: B, payload: {} }, {
      authorization: `Bearer ${keyA}`,
    })
    expect(sent.status).toBe(200)
    const got = await api(gw.url, keyA, 'GET', `/v1/intents/${sent.body.intent_id}`)
    expect(got.body.intent.from_agent).toBe(A)

    // Valid Bearer, invalid x-api-key: the x-api-key is the key → 401.
    const bad = await api(gw.url, 'cp_notavalidkeyatallnotavalidkey000', 'GET', path, undefined, { authorization: `Bearer ${keyA}` })
    expect(bad.status).toBe(401)
    expect(bad.body.error.code).toBe('unauthorized')
    // Invalid Bearer, valid x-api-key → 200.
    const good = await api(gw.url, keyA, 'GET', path, undefined, { authorization: 'Bearer cp_garbagegarbagegarbagegarbage' })
    expect(good.status).toBe(200)
    // Both valid, different agents: the x-api-key decides who sends.
    const both = await api(gw.url, keyB, 'POST', '/v1/intents', { intent_type: 'bearer.test.v1', to_agent: A, payload: {} }, {
      authorization: `Bearer ${keyA}`,
    })
    expect(both.status).toBe(200)
    const bothGot = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${both.body.intent_id}`)
    expect(bothGot.body.intent.from_agent).toBe(B)
  })

  it('a body-less POST /v1/intents with content-type json is 422 schema_invalid', async () => {
    const res = await fetch(`${gw.url}/v1/intents`, {
      method: 'POST',
      headers: { 'x-api-key': keyA, 'content-type': 'application/json' },
    })
    expect(res.status).toBe(422)
    const body = (await res.json()) as any
    expect(body.ok).toBe(false)
    expect(body.error.code).toBe('schema_invalid')
    expect(body.error.details).toBeTypeOf('object')
    expect(body.error.request_id).toBe(res.headers.get('x-request-id'))
  })

  it('body-less POSTs with content-type json work for ack (as the AXME SDK sends them)', async () => {
    const W = 'agent://acme/prod/lc-bodyless'
    const keyW = await agentKey(gw, W)
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'bodyless.v1', to_agent: W, payload: {} })
    await readSse(gw.url, keyW, streamPath(W, 'wait_seconds=5'), { 'x-instance-id': 'bl-1' })
    const res = await fetch(`${gw.url}/v1/intents/${sent.body.intent_id}/ack`, {
      method: 'POST',
      headers: { 'x-api-key': keyW, 'content-type': 'application/json' },
    })
    expect(res.status).toBe(200)
    const body = (await res.json()) as any
    expect(body.intent.status).toBe('ACKNOWLEDGED')
  })

  it('operators may resolve only with CANCELED; the reason is recorded', async () => {
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'cancel.me.v1', to_agent: B, payload: {} })
    const id = sent.body.intent_id as string
    const completed = await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED' })
    expect(completed.status).toBe(403)
    expect(completed.body.error.code).toBe('forbidden')
    const canceled = await api(gw.url, gw.adminKey, 'POST', `/v1/intents/${id}/resolve`, { status: 'CANCELED', reason: 'no longer needed' })
    expect(canceled.status).toBe(200)
    expect(canceled.body.intent).toMatchObject({ status: 'CANCELED', delivery_state: 'done' })
    expect(canceled.body.event).toMatchObject({ event_type: 'intent.canceled', status: 'CANCELED', details: { reason: 'no longer needed' } })
    // A canceled intent is never delivered.
    const inbox = await readSse(gw.url, keyB, streamPath(B, 'wait_seconds=1'), { 'x-instance-id': 'worker-9' })
    expect(inbox.frames.filter((f) => f.event === 'intent.delivered' && f.data.intent_id === id)).toEqual([])
  })

  it('a persistent events stream shows each event as it happens and ends at the terminal one', async () => {
    const W = 'agent://acme/prod/lc-watch'
    const keyW = await agentKey(gw, W)
    const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'watch.v1', to_agent: W, payload: {} })
    const id = sent.body.intent_id as string
    const events = await openSseStream(gw.url, keyA, `/v1/intents/${id}/events/stream?since=0`)
    open.push(events)
    expect(events.status).toBe(200)
    await events.waitFor((fs) => fs.length >= 2, 5_000, 'created + submitted')
    expect(events.frames.map((f) => f.event)).toEqual(['intent.created', 'intent.submitted'])

    await readSse(gw.url, keyW, streamPath(W, 'wait_seconds=5'), { 'x-instance-id': 'watch-1' })
    await events.waitFor((fs) => fs.some((f) => f.event === 'intent.delivered'), 2_000, 'intent.delivered')
    const t0 = performance.now()
    await api(gw.url, keyW, 'POST', `/v1/intents/${id}/ack`, {})
    await events.waitFor((fs) => fs.some((f) => f.event === 'intent.acknowledged'), 2_000, 'intent.acknowledged')
    expect(performance.now() - t0).toBeLessThan(500)
    await api(gw.url, keyW, 'POST', `/v1/intents/${id}/resolve`, { status: 'COMPLETED', result: { ok: 1 } })
    await events.waitFor((fs) => fs.some((f) => f.event === 'intent.completed'), 2_000, 'intent.completed')
    await events.done // the stream ends by itself after the terminal event
    const seqs = events.frames.filter((f) => f.event.startsWith('intent.')).map((f) => f.data.seq)
    expect(seqs).toEqual([1, 2, 3, 4, 5])
  })

  it('push: a waiting persistent stream receives a new intent within a bound, not on a polling tick', async () => {
    const P = 'agent://acme/prod/lc-push'
    const keyP = await agentKey(gw, P)
    const stream = await openSseStream(gw.url, keyP, streamPath(P, 'lease_seconds=30'), { 'x-instance-id': 'push-1' })
    open.push(stream)
    expect(stream.status).toBe(200)
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/)
    // Let the stream settle into its idle wait (its first claim finds nothing).
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(stream.frames).toEqual([])

    const latencies: number[] = []
    for (let i = 0; i < 3; i += 1) {
      const before = performance.now()
      const sent = await api(gw.url, keyA, 'POST', '/v1/intents', { intent_type: 'push.test.v1', to_agent: P, payload: { i } })
      expect(sent.status).toBe(200)
      const frames = await stream.waitFor(
        (fs) => fs.some((f) => f.event === 'intent.delivered' && f.data.intent_id === sent.body.intent_id),
        5_000,
        `delivery ${i}`,
      )
      const frame = frames.find((f) => f.data.intent_id === sent.body.intent_id)!
      latencies.push(frame.receivedAt - before)
      expect(frame.data).toMatchObject({ payload: { i }, delivery_attempt: 1, seq: i + 1 })
      // Idle again before the next send, away from any periodic tick.
      await new Promise((resolve) => setTimeout(resolve, 350))
    }
    // Goal 200 ms; bound 500 ms. A polling fallback would show up as ~1-2 s.
    for (const ms of latencies) expect(ms).toBeLessThan(500)
    expect(stream.ended).toBe(false)
    stream.close()
  })
})
