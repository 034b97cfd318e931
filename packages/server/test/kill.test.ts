/**
 * The kill switch over real HTTP (DESIGN §2.1, §2.2, §5b, §5c, §10, §11): once
 * `POST /v1/mesh/agents/{id}/kill` has answered 200, the agent can neither send nor receive,
 * cannot settle what it holds, loses its open streams and cannot reopen them. Also the
 * call's own contract: addressing forms, no-op repeat, roles, errors and response shape.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, openSseStream, startTestGateway, testEngines, type SseConnection, type TestGateway } from './harness.js'

/** Every case runs on SQLite and on PostgreSQL (when installed). */
const ENGINES = testEngines('kill.test.ts')

const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

const V = 'agent://acme/prod/kill-victim'
const P = 'agent://acme/prod/kill-peer'
const Q = 'agent://acme/prod/kill-other'

const streamPath = (address: string, query = ''): string =>
  `/v1/agents/${address.slice('agent://'.length)}/intents/stream${query === '' ? '' : `?${query}`}`

async function createKey(gw: TestGateway, role: string, agent?: string): Promise<{ key: string; key_id: string }> {
  const res = await api(gw.url, gw.adminKey, 'POST', '/v1/keys', agent === undefined ? { role } : { role, agent })
  if (res.status !== 200) throw new Error(`key: ${res.status} ${JSON.stringify(res.body)}`)
  return { key: res.body.key, key_id: res.body.key_id }
}

/** Asserts the §4 error shape with the given status and code; request_id matches the header. */
function expectError(res: { status: number; body: any; headers: Headers }, status: number, code: string): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { ok: false, error: { code, message: expect.any(String), request_id: expect.stringMatching(/^req_/) } },
  })
  expect(res.body.error.request_id).toBe(res.headers.get('x-request-id'))
}

describe.each(ENGINES)('kill switch (%s)', (engine) => {
  let gw: TestGateway
  let operator: { key: string; key_id: string }
  let viewer: { key: string; key_id: string }
  let victim: { key: string; key_id: string }
  let peerKey: string
  let otherKey: string
  let victimId: string
  const open: SseConnection[] = []

  const send = (key: string, to: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}) =>
    api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: to, payload: { n: 1 }, ...extra }, headers)

  beforeAll(async () => {
    gw = await startTestGateway({ engine })
    operator = await createKey(gw, 'operator')
    viewer = await createKey(gw, 'viewer')
    victim = await createKey(gw, 'agent', V)
    peerKey = await agentKey(gw, P)
    otherKey = await agentKey(gw, Q)
    const show = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent(V)}`)
    victimId = show.body.agent.address_id
  })
  afterAll(async () => {
    for (const s of open) s.close()
    await gw?.close()
  })

  describe('after kill returns 200 the agent is cut off in every direction', () => {
    let leasedId: string
    let replyId: string
    let idemOriginal: string
    let stream: SseConnection
    let streamEndedAt = 0
    let kill: { status: number; body: any; headers: Headers }
    let killStartedAt = 0
    let killReturnedAt = 0

    beforeAll(async () => {
      // Before the kill: the victim holds a lease on one intent (delivered on its open stream)...
      stream = await openSseStream(gw.url, victim.key, streamPath(V, 'lease_seconds=300'), { 'x-instance-id': 'v-1' })
      open.push(stream)
      expect(stream.status).toBe(200)
      void stream.done.then(() => {
        streamEndedAt = performance.now()
      })
      const sent = await send(peerKey, V)
      expect(sent.status).toBe(200)
      leasedId = sent.body.intent_id
      await stream.waitFor((f) => f.some((x) => x.event === 'intent.delivered' && x.data.intent_id === leasedId), 5_000, 'the delivery')
      // ...the peer holds an intent whose reply_to is the victim...
      const forPeer = await send(otherKey, P, { reply_to: V })
      expect(forPeer.status).toBe(200)
      replyId = forPeer.body.intent_id
      // ...and the victim sent one with an Idempotency-Key.
      const idem = await send(victim.key, Q, {}, { 'idempotency-key': 'kill-idem-1' })
      expect(idem.status).toBe(200)
      idemOriginal = idem.body.intent_id

      killStartedAt = performance.now()
      kill = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${victimId}/kill`, { reason: 'runaway deploys' })
      killReturnedAt = performance.now()
    })

    it('answers 200 with {ok, address_id, address, health_status: killed, killed_at, held_intents}', () => {
      expect(kill.status).toBe(200)
      expect(kill.body).toMatchObject({
        ok: true,
        address_id: victimId,
        address: V,
        health_status: 'killed',
        killed_at: expect.stringMatching(ISO_MS),
        held_intents: expect.any(Number),
      })
      // The leased intent is the only work addressed to the victim; the one it sent to Q is queued.
      expect(kill.body.held_intents).toBe(2)
      const killedAt = Date.parse(kill.body.killed_at)
      expect(killedAt).toBeLessThanOrEqual(Date.now())
      expect(killedAt).toBeGreaterThan(Date.now() - 60_000)
    })

    it('rejects new intents TO the agent with 403 agent_killed (agent and operator senders)', async () => {
      expectError(await send(peerKey, V), 403, 'agent_killed')
      expectError(await send(operator.key, V, { from_agent: P }), 403, 'agent_killed')
      const res = await send(peerKey, V)
      expect(res.body.error.details).toMatchObject({ address: V, address_id: victimId })
    })

    it('rejects new intents FROM the agent with 403 agent_killed (its own key and an operator sending as it)', async () => {
      expectError(await send(victim.key, P), 403, 'agent_killed')
      expectError(await send(victim.key, 'agent://acme/prod/kill-never-seen'), 403, 'agent_killed')
      expectError(await send(operator.key, P, { from_agent: V }), 403, 'agent_killed')
      // Nothing partial: the refused send did not register its unknown recipient.
      const unseen = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/kill-never-seen')}`)
      expect(unseen.status).toBe(404)
    })

    it('accepts nothing new under an Idempotency-Key, but a replay returns the original 200', async () => {
      const replay = await send(victim.key, Q, {}, { 'idempotency-key': 'kill-idem-1' })
      expect(replay.status).toBe(200)
      expect(replay.body.intent_id).toBe(idemOriginal)
      expectError(await send(victim.key, Q, {}, { 'idempotency-key': 'kill-idem-2' }), 403, 'agent_killed')
    })

    it('rejects ack and resolve of an intent leased before the kill with 403 agent_killed', async () => {
      expectError(await api(gw.url, victim.key, 'POST', `/v1/intents/${leasedId}/ack`, {}, { 'x-instance-id': 'v-1' }), 403, 'agent_killed')
      expectError(
        await api(gw.url, victim.key, 'POST', `/v1/intents/${leasedId}/resolve`, { status: 'COMPLETED', result: { done: true } }),
        403,
        'agent_killed',
      )
      expectError(await api(gw.url, victim.key, 'POST', `/v1/intents/${leasedId}/resolve`, { status: 'FAILED' }), 403, 'agent_killed')
      // Nothing changed: the intent is held, not settled.
      const got = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${leasedId}`)
      expect(got.body.intent).toMatchObject({ status: 'DELIVERED', delivery_state: 'held', delivery_attempt: 1 })
      const events = await api(gw.url, gw.adminKey, 'GET', `/v1/intents/${leasedId}/events`)
      const types = events.body.events.map((e: any) => e.event_type)
      expect(types).toContain('intent.held')
      expect(types).not.toContain('intent.acknowledged')
      expect(types).not.toContain('intent.completed')
      expect(types).not.toContain('intent.failed')
    })

    it('a reply_to completion for the killed agent is not accepted (the resolve itself succeeds)', async () => {
      const peerStream = await openSseStream(gw.url, peerKey, streamPath(P, 'wait_seconds=5'), { 'x-instance-id': 'p-1' })
      open.push(peerStream)
      await peerStream.waitFor((f) => f.some((x) => x.data?.intent_id === replyId), 5_000, 'the reply_to intent')
      const resolved = await api(gw.url, peerKey, 'POST', `/v1/intents/${replyId}/resolve`, { status: 'COMPLETED', result: { ok: 1 } })
      expect(resolved.status).toBe(200)
      expect(resolved.body.intent.status).toBe('COMPLETED')
      expect(resolved.body.completion_delivery).toEqual({ delivered: false, reply_to: V, reason: 'agent_killed' })
      const inbox = await api(gw.url, gw.adminKey, 'GET', `/v1/intents?agent=${encodeURIComponent(V)}&direction=received`)
      expect(inbox.body.intents.filter((i: any) => i.intent_type === 'intent.completion.v1')).toEqual([])
    })

    it('its open inbox stream receives `agent.killed` as its last frame and then ends, within 1 s', async () => {
      await stream.done
      expect(stream.ended).toBe(true)
      const last = stream.frames[stream.frames.length - 1]!
      expect(last.event).toBe('agent.killed')
      expect(last.data).toMatchObject({ ok: false, error: { code: 'agent_killed', message: expect.any(String), request_id: expect.any(String) } })
      expect(stream.frames.filter((f) => f.event === 'agent.killed')).toHaveLength(1)
      expect(streamEndedAt).toBeGreaterThan(0)
      expect(streamEndedAt - killReturnedAt).toBeLessThan(1_000)
      console.log(`kill.test: stream ended ${(streamEndedAt - killStartedAt).toFixed(1)} ms after the kill call started`)
    })

    it('reconnecting (persistent, windowed, another instance, since=) is refused 403 agent_killed', async () => {
      for (const [query, instance] of [
        ['', 'v-1'],
        ['wait_seconds=2', 'v-1'],
        ['since=0&lease_seconds=300', 'v-2'],
        ['', undefined],
      ] as const) {
        const res = await api(gw.url, victim.key, 'GET', streamPath(V, query), undefined, instance ? { 'x-instance-id': instance } : {})
        expectError(res, 403, 'agent_killed')
      }
      const conn = await openSseStream(gw.url, victim.key, streamPath(V), { 'x-instance-id': 'v-3' })
      expect(conn.status).toBe(403)
      expect(conn.body.error.code).toBe('agent_killed')
    })

    it('its heartbeats are still recorded and answered with health_status: killed (§2.2)', async () => {
      const beat = await api(gw.url, victim.key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'v-1' })
      expect(beat.status).toBe(200)
      expect(beat.body).toMatchObject({ ok: true, address_id: victimId, address: V, instance_id: 'v-1', health_status: 'killed' })
      // Body-less, as the AXME SDK sends it.
      const res = await fetch(`${gw.url}/v1/mesh/heartbeat`, {
        method: 'POST',
        headers: { 'x-api-key': victim.key, 'content-type': 'application/json', 'x-instance-id': 'v-2' },
      })
      expect(res.status).toBe(200)
      expect(((await res.json()) as any).health_status).toBe('killed')
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${victimId}`)
      const instances = show.body.agent.instances.map((i: any) => [i.instance_id, i.health_status]).sort()
      expect(instances).toEqual([
        ['v-1', 'killed'],
        ['v-2', 'killed'],
      ])
    })

    it('shows the agent as killed, with killed_at and reason', async () => {
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${victimId}`)
      expect(show.status).toBe(200)
      expect(show.body.agent).toMatchObject({
        address_id: victimId,
        health_status: 'killed',
        killed_at: kill.body.killed_at,
        kill_reason: 'runaway deploys',
      })
    })

    it('killing again is a 200 no-op: same killed_at, no second audit entry or mesh event', async () => {
      const again = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${victimId}/kill`, { reason: 'second time' })
      expect(again.status).toBe(200)
      expect(again.body).toMatchObject({ ok: true, address_id: victimId, address: V, health_status: 'killed', killed_at: kill.body.killed_at })
      expect(again.body.held_intents).toBe(0)
      const byAddress = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(V)}/kill`)
      expect(byAddress.status).toBe(200)
      expect(byAddress.body.killed_at).toBe(kill.body.killed_at)

      const audit = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?action_prefix=agent.&target=${encodeURIComponent(V)}`)
      expect(audit.status).toBe(200)
      expect(audit.body.entries).toHaveLength(1)
      expect(audit.body.entries[0]).toMatchObject({ action: 'agent.kill', actor: `key:${operator.key_id}`, target: V, reason: 'runaway deploys' })
      const events = await api(gw.url, viewer.key, 'GET', `/v1/mesh/events?event_type=agent.killed&address=${encodeURIComponent(V)}`)
      expect(events.body.events).toHaveLength(1)
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${victimId}`)
      expect(show.body.agent.kill_reason).toBe('runaway deploys')
    })
  })

  describe('addressing and body forms', () => {
    it('kills by addr_ id', async () => {
      const address = 'agent://acme/prod/kill-by-id'
      await agentKey(gw, address)
      const id = (await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)).body.agent.address_id
      expect(id).toMatch(/^addr_[0-9A-Za-z]+$/)
      const res = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${id}/kill`, {})
      expect(res.status).toBe(200)
      expect(res.body).toMatchObject({ ok: true, address_id: id, address, health_status: 'killed', held_intents: 0 })
    })

    it('kills by URL-encoded address (and by raw address)', async () => {
      for (const [name, path] of [
        ['kill-by-encoded', (a: string) => encodeURIComponent(a)],
        ['kill-by-raw', (a: string) => a],
      ] as const) {
        const address = `agent://acme/prod/${name}`
        const key = await agentKey(gw, address)
        const res = await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${path(address)}/kill`, { reason: name })
        expect(res.status).toBe(200)
        expect(res.body).toMatchObject({ ok: true, address, health_status: 'killed', killed_at: expect.stringMatching(ISO_MS) })
        expect(res.body.address_id).toMatch(/^addr_/)
        expectError(await send(key, P), 403, 'agent_killed')
      }
    })

    it('accepts a body-less POST that says content-type: application/json (as the AXME SDK sends it)', async () => {
      const address = 'agent://acme/prod/kill-bodyless'
      const key = await agentKey(gw, address)
      const res = await fetch(`${gw.url}/v1/mesh/agents/${encodeURIComponent(address)}/kill`, {
        method: 'POST',
        headers: { 'x-api-key': operator.key, 'content-type': 'application/json' },
      })
      const body = (await res.json()) as any
      expect(res.status).toBe(200)
      expect(body).toMatchObject({ ok: true, address, health_status: 'killed', held_intents: 0 })
      expectError(await send(key, P), 403, 'agent_killed')
      // Also with Authorization: Bearer instead of x-api-key.
      const again = await fetch(`${gw.url}/v1/mesh/agents/${encodeURIComponent(address)}/kill`, {
        method: 'POST',
        headers: { authorization: `Bearer ${operator.key}`, 'content-type': 'application/json' },
      })
      expect(again.status).toBe(200)
      expect(((await again.json()) as any).killed_at).toBe(body.killed_at)
    })
  })

  describe('who may kill, and bad requests', () => {
    it('an agent key is refused 403 forbidden (even for itself) and the attempt is audited as auth.denied', async () => {
      const address = 'agent://acme/prod/kill-self'
      const self = await createKey(gw, 'agent', address)
      for (const target of [address, P]) {
        const res = await api(gw.url, self.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(target)}/kill`, { reason: 'x' })
        expectError(res, 403, 'forbidden')
      }
      // Still alive.
      expect((await send(self.key, P)).status).toBe(200)
      expect((await send(peerKey, address)).status).toBe(200)
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
      expect(show.body.agent.health_status).not.toBe('killed')

      const audit = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?action_prefix=auth.denied&target=${self.key_id}`)
      expect(audit.status).toBe(200)
      expect(audit.body.entries.length).toBeGreaterThanOrEqual(1)
      expect(audit.body.entries[0]).toMatchObject({
        action: 'auth.denied',
        actor: `key:${self.key_id}`,
        target: self.key_id,
        reason: expect.any(String),
      })
      expect(JSON.stringify(audit.body.entries[0].after)).toContain('/kill')
    })

    it('a viewer key is refused 403 forbidden (audited too), and so is resume', async () => {
      const address = 'agent://acme/prod/kill-viewer-target'
      await agentKey(gw, address)
      expectError(await api(gw.url, viewer.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, {}), 403, 'forbidden')
      expectError(await api(gw.url, viewer.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/resume`, {}), 403, 'forbidden')
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
      expect(show.body.agent.health_status).not.toBe('killed')
      const audit = await api(gw.url, viewer.key, 'GET', `/v1/audit/events?action_prefix=auth.denied&target=${viewer.key_id}`)
      expect(audit.body.entries.length).toBeGreaterThanOrEqual(1)
      expect(audit.body.entries[0]).toMatchObject({ action: 'auth.denied', actor: `key:${viewer.key_id}` })
    })

    it('no key → 401; a bad key → 401 (not audited)', async () => {
      expectError(await api(gw.url, null, 'POST', `/v1/mesh/agents/${victimId}/kill`, {}), 401, 'unauthorized')
      expectError(await api(gw.url, 'cp_notarealkey0000000000000000000', 'POST', `/v1/mesh/agents/${victimId}/kill`, {}), 401, 'unauthorized')
    })

    it('an unknown agent → 404 not_found, and the kill does not register it', async () => {
      const ghost = 'agent://acme/prod/kill-ghost'
      expectError(await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(ghost)}/kill`, {}), 404, 'not_found')
      expectError(await api(gw.url, operator.key, 'POST', '/v1/mesh/agents/addr_doesnotexist000000/kill', {}), 404, 'not_found')
      expectError(await api(gw.url, operator.key, 'POST', `/v1/mesh/agents/${encodeURIComponent(ghost)}/resume`, {}), 404, 'not_found')
      expect((await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${encodeURIComponent(ghost)}`)).status).toBe(404)
      // Sending to it later works: it was never killed.
      expect((await send(peerKey, ghost)).status).toBe(200)
    })

    it('an unknown field or a wrong type in the kill body → 422 schema_invalid, and nothing is killed', async () => {
      const address = 'agent://acme/prod/kill-bad-body'
      const key = await agentKey(gw, address)
      const path = `/v1/mesh/agents/${encodeURIComponent(address)}/kill`
      const unknown = await api(gw.url, operator.key, 'POST', path, { reason: 'x', force: true })
      expectError(unknown, 422, 'schema_invalid')
      expect(JSON.stringify(unknown.body.error.details)).toContain('force')
      expectError(await api(gw.url, operator.key, 'POST', path, { cancel_pending: 'yes' }), 422, 'schema_invalid')
      expectError(await api(gw.url, operator.key, 'POST', path, { reason: 42 }), 422, 'schema_invalid')
      expectError(await api(gw.url, operator.key, 'POST', path, '{"reason": '), 400, 'invalid_request')
      expect((await send(key, P)).status).toBe(200)
      const show = await api(gw.url, viewer.key, 'GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
      expect(show.body.agent.health_status).not.toBe('killed')
    })
  })
})
