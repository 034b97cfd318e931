import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, startTestGateway, type TestGateway } from './harness.js'

describe('gateway smoke', () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway()
  })
  afterAll(() => gw.close())

  it('answers /health without a key', async () => {
    const res = await api(gw.url, null, 'GET', '/health')
    expect(res.status).toBe(200)
    expect(res.body).toEqual({ ok: true, version: expect.any(String), store: 'sqlite' })
    expect(res.headers.get('x-request-id')).toMatch(/^req_/)
  })
})
