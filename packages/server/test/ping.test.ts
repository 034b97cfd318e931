import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, startTestGateway, type TestGateway } from './harness.js'

describe('persistent inbox streams', () => {
  let gw: TestGateway
  beforeAll(async () => {
    // 15 s in production (DESIGN §5b); shortened here so the test sees several.
    gw = await startTestGateway({ env: { CHOKEPOINT_PING_INTERVAL_MS: '200' } })
  })
  afterAll(() => gw.close())

  it('stay open without wait_seconds and carry ": ping" comments', async () => {
    const key = await agentKey(gw, 'agent://ping/prod/listener')
    const controller = new AbortController()
    const res = await fetch(`${gw.url}/v1/agents/ping/prod/listener/intents/stream`, {
      headers: { 'x-api-key': key, 'x-instance-id': 'i1' },
      signal: controller.signal,
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/)
    const reader = (res.body as ReadableStream<Uint8Array>).getReader()
    const decoder = new TextDecoder()
    let text = ''
    const deadline = Date.now() + 5_000
    while ((text.match(/^: ping$/gm) ?? []).length < 2 && Date.now() < deadline) {
      const { value, done } = await reader.read()
      if (done) break
      text += decoder.decode(value, { stream: true })
    }
    controller.abort()
    expect((text.match(/^: ping$/gm) ?? []).length).toBeGreaterThanOrEqual(2)
    expect(text).not.toMatch(/stream\.timeout/)
  })
})
