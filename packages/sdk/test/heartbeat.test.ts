import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Agent, Operator } from '../src/index.js'
import { startTestGateway, type TestGateway } from '../../server/test/harness.js'
import { waitFor } from './helpers.js'

describe('Agent heartbeats against a real gateway', () => {
  let gw: TestGateway
  let operator: Operator
  beforeAll(async () => {
    gw = await startTestGateway()
    operator = new Operator({ baseURL: gw.url, apiKey: gw.adminKey })
  })
  afterAll(() => gw.close())

  it('startHeartbeat reports the deltas buffered by reportMetric, then starts a new buffer', async () => {
    const address = 'agent://acme/prod/metered'
    const { key } = await operator.keys.create({ role: 'agent', agent: address })
    const agent = new Agent({ baseURL: gw.url, apiKey: key, address, instanceId: 'pod-1' })
    agent.reportMetric({ success: true, latencyMs: 10, costUsd: 0.25 })
    agent.reportMetric({ success: false, latencyMs: 30, costUsd: 0.5 })
    agent.startHeartbeat({ intervalMs: 50 })
    try {
      const shown = await waitFor(async () => {
        const { agent: a } = await operator.agents.retrieve(address)
        return a.health_status === 'healthy' && a.cost_period >= 0.75 ? a : undefined
      })
      expect(shown?.instances.map((i) => i.instance_id)).toEqual(['pod-1'])
      // Later beats carry empty buffers: the cost is counted once.
      await new Promise((r) => setTimeout(r, 200))
      expect((await operator.agents.retrieve(address)).agent.cost_period).toBeCloseTo(0.75, 6)
    } finally {
      agent.stopHeartbeat()
    }
  })

  it('a heartbeat answered "killed" fires onKilled, and stopOnKill stops the beats', async () => {
    const address = 'agent://acme/prod/beating'
    const { key } = await operator.keys.create({ role: 'agent', agent: address })
    const agent = new Agent({ baseURL: gw.url, apiKey: key, address, instanceId: 'pod-1' })
    const kills: string[] = []
    agent.onKilled((event) => kills.push(event.source))
    await operator.agents.kill(address, { reason: 'test' })
    let beats = 0
    const counting = new Agent({
      baseURL: gw.url,
      apiKey: key,
      address,
      instanceId: 'pod-1',
      fetch: (url, init) => {
        if (url.endsWith('/v1/mesh/heartbeat')) beats += 1
        return fetch(url, init)
      },
    })
    counting.onKilled((event) => kills.push(event.source))
    counting.startHeartbeat({ intervalMs: 30, stopOnKill: true })
    await waitFor(() => kills.length > 0)
    expect(kills).toEqual(['heartbeat'])
    const after = beats
    await new Promise((r) => setTimeout(r, 200))
    expect(beats).toBe(after)
    agent.close()
    counting.close()
  })
})
