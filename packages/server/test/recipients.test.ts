/**
 * A mistyped recipient must not swallow work silently. By default an intent to an address that
 * was never registered (POST /v1/mesh/agents), bound to a key or seen sending is accepted with a
 * `recipient_unregistered` warning (body `warnings` and `x-chokepoint-warning` header); with
 * CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS=1 it is `404 not_found` naming the address, and the
 * refused send leaves no trace. Registering such an address later keeps the queued work.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, readSse, startTestGateway, testEngines, type TestGateway } from './harness.js'

const enc = encodeURIComponent

for (const engine of testEngines('recipients.test.ts')) {
  describe(`unregistered recipients (${engine})`, () => {
    let gw: TestGateway
    let strict: TestGateway
    let sender: string
    let strictSender: string
    const SENDER = 'agent://acme/prod/planner'

    beforeAll(async () => {
      gw = await startTestGateway({ engine })
      strict = await startTestGateway({ engine, env: { CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS: '1' } })
      sender = await agentKey(gw, SENDER)
      strictSender = await agentKey(strict, SENDER)
    })
    afterAll(async () => {
      await gw?.close()
      await strict?.close()
    })

    const send = (g: TestGateway, key: string, to: string) =>
      api(g.url, key, 'POST', '/v1/intents', { intent_type: 'deploy.service.v1', to_agent: to, payload: { n: 1 } })

    it('default mode: accepted with a warning while the address was never registered, and without one after', async () => {
      const typo = 'agent://acme/prod/deplyer'
      const first = await send(gw, sender, typo)
      expect(first.status).toBe(200)
      expect(first.headers.get('x-chokepoint-warning')).toBe('recipient_unregistered')
      expect(first.body.warnings).toEqual([{ code: 'recipient_unregistered', message: expect.stringContaining(typo) }])
      // Still not registered after being sent to: the second send warns too.
      const second = await send(gw, sender, typo)
      expect(second.body.warnings?.[0]?.code).toBe('recipient_unregistered')

      // Registering the address (e.g. it was not a typo) keeps its id and its queued work.
      const before = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(typo)}`)
      const registered = await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: typo, display_name: 'Deplyer' })
      expect(registered.status).toBe(200)
      expect(registered.body.agent.address_id).toBe(before.body.agent.address_id)
      expect(registered.body.agent.display_name).toBe('Deplyer')
      // A second registration is the usual conflict.
      expect((await api(gw.url, gw.adminKey, 'POST', '/v1/mesh/agents', { address: typo })).status).toBe(409)
      const third = await send(gw, sender, typo)
      expect(third.status).toBe(200)
      expect(third.headers.get('x-chokepoint-warning')).toBeNull()
      expect(third.body.warnings).toBeUndefined()
      const key = await agentKey(gw, typo)
      const inbox = await readSse(gw.url, key, '/v1/agents/acme/prod/deplyer/intents/stream?wait_seconds=2&max_in_flight=10', {
        'x-instance-id': 'i-1',
      })
      expect(inbox.frames.filter((f) => f.event === 'intent.delivered').map((f) => f.data.intent_id)).toEqual([
        first.body.intent_id,
        second.body.intent_id,
        third.body.intent_id,
      ])
    })

    it('default mode: agents bound to a key, and agents that have sent, are registered', async () => {
      await agentKey(gw, 'agent://acme/prod/keyed')
      expect((await send(gw, sender, 'agent://acme/prod/keyed')).body.warnings).toBeUndefined()
      // An operator sending on behalf of an agent names it as the sender: that counts as seen.
      const viaOperator = await api(gw.url, gw.adminKey, 'POST', '/v1/intents', {
        intent_type: 'x.v1',
        from_agent: 'agent://acme/prod/ops-sender',
        to_agent: SENDER,
        payload: {},
      })
      expect(viaOperator.body.warnings).toBeUndefined()
      expect((await send(gw, sender, 'agent://acme/prod/ops-sender')).body.warnings).toBeUndefined()
    })

    it('strict mode: 404 naming the address, nothing created; registered and keyed recipients work', async () => {
      const typo = 'agent://acme/prod/nobody'
      const refused = await send(strict, strictSender, typo)
      expect(refused.status).toBe(404)
      expect(refused.body).toMatchObject({ ok: false, error: { code: 'not_found', details: { field: 'to_agent', to_agent: typo } } })
      expect(refused.body.error.message).toContain(typo)
      // The refused send did not create the address.
      expect((await api(strict.url, strict.adminKey, 'GET', `/v1/mesh/agents/${enc(typo)}`)).status).toBe(404)
      const sent = await api(strict.url, strict.adminKey, 'GET', `/v1/intents?agent=${enc(SENDER)}&direction=sent`)
      expect(sent.body.intents).toEqual([])

      expect((await api(strict.url, strict.adminKey, 'POST', '/v1/mesh/agents', { address: typo })).status).toBe(200)
      const ok = await send(strict, strictSender, typo)
      expect(ok.status).toBe(200)
      expect(ok.body.warnings).toBeUndefined()
      await agentKey(strict, 'agent://acme/prod/keyed')
      expect((await send(strict, strictSender, 'agent://acme/prod/keyed')).status).toBe(200)
    })

    it('a bad value of the setting stops the start naming it', async () => {
      await expect(startTestGateway({ engine: 'sqlite', env: { CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS: 'maybe' } })).rejects.toThrow(
        /CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS/,
      )
    })
  })
}
