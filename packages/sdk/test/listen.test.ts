import { createServer, connect, type Socket } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, startTestGateway, type TestGateway } from '../../server/test/harness.js'
import { Agent, AgentKilledError, Operator, type Delivery, type Fetch, type KilledEvent } from '../src/index.js'
import { hasRoute, next, waitFor } from './helpers.js'

const SENDER = 'agent://acme/prod/sender'

/** A plain TCP proxy in front of the gateway whose connections can be cut at any moment. */
async function startProxy(target: string): Promise<{ url: string; cut(): void; close(): Promise<void> }> {
  const { hostname, port } = new URL(target)
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => s.destroy())
      s.on('close', () => {
        sockets.delete(s)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('proxy has no port')
  return {
    url: `http://127.0.0.1:${address.port}`,
    cut: () => {
      for (const s of sockets) s.destroy()
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** Passes requests to the real gateway and records the inbox stream URLs. */
function recording(): { fetch: Fetch; streams: URL[] } {
  const streams: URL[] = []
  return {
    streams,
    fetch: (url, init) => {
      if (url.includes('/intents/stream')) streams.push(new URL(url))
      return fetch(url, init)
    },
  }
}

describe('listen() against a real gateway', () => {
  let gw: TestGateway
  let operator: Operator
  let sender: Agent
  let n = 0

  /** A fresh recipient address with its key. */
  async function recipient(): Promise<{ address: string; apiKey: string }> {
    n += 1
    const address = `agent://acme/prod/worker-${n}`
    return { address, apiKey: await agentKey(gw, address) }
  }

  beforeAll(async () => {
    gw = await startTestGateway()
    operator = new Operator({ baseURL: gw.url, apiKey: gw.adminKey })
    sender = new Agent({ baseURL: gw.url, apiKey: await agentKey(gw, SENDER), address: SENDER })
  })
  afterAll(async () => {
    sender?.close()
    await gw?.close()
  })

  it('windowed: reconnects after each response and resumes with since', async () => {
    const { address, apiKey } = await recipient()
    const rec = recording()
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'w-1', fetch: rec.fetch })
    const inbox = agent.listen({ waitSeconds: 1 })
    const first = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 1 } })
    const d1 = await next(inbox)
    expect(d1.intent_id).toBe(first.intent_id)
    // The window ends after a delivery; the next response must start after d1.seq. (The
    // iteration is pull-based: it reconnects while someone waits for the next delivery.)
    const pending = next(inbox)
    await waitFor(() => rec.streams.some((u) => u.searchParams.get('since') === String(d1.seq)), 5_000, 'a reconnect with since')
    const second = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 2 } })
    const d2 = await pending
    expect(d2.intent_id).toBe(second.intent_id) // d1 is still leased but not re-sent
    expect(d2.seq).toBeGreaterThan(d1.seq)
    // An empty window ends with stream.timeout and is reopened at once, still from d2.seq.
    const count = rec.streams.length
    const third = next(inbox)
    await waitFor(() => rec.streams.length >= count + 2, 5_000, 'a reopened window')
    expect(rec.streams.at(-1)?.searchParams.get('since')).toBe(String(d2.seq))
    expect(rec.streams.every((u) => u.searchParams.get('wait_seconds') === '1')).toBe(true)
    const last = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 3 } })
    expect((await third).intent_id).toBe(last.intent_id)
    await inbox.return()
  })

  it('re-sends a delivery lost with a dropped stream, with the same seq', async () => {
    const { address, apiKey } = await recipient()
    let lostFrame = ''
    let streams = 0
    // Cuts the first inbox response in the middle of its first delivery frame, as a network
    // failure would: the gateway has leased and written the delivery, the client never read it.
    const cutting: Fetch = async (url, init) => {
      const res = await fetch(url, init)
      if (!url.includes('/intents/stream') || streams++ > 0 || !res.body) return res
      const reader = res.body.getReader()
      const text = new TextDecoder()
      let seen = ''
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { done, value } = await reader.read()
          if (done) return controller.close()
          seen += text.decode(value, { stream: true })
          const at = seen.indexOf('event: intent.delivered')
          if (at === -1) return
          lostFrame = seen
          controller.enqueue(new TextEncoder().encode(seen.slice(0, at + 10)))
          await reader.cancel()
          controller.error(new TypeError('terminated'))
        },
        cancel: (reason) => reader.cancel(reason),
      })
      return new Response(body, { status: res.status, headers: res.headers })
    }
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'cut-1', fetch: cutting })
    const inbox = agent.listen({ reconnect: { initialDelayMs: 10 } })
    const first = next(inbox)
    const sent = await sender.send({ to_agent: address, intent_type: 'job.v1' })
    const delivery = await first
    expect(lostFrame).toContain(`"intent_id":"${sent.intent_id}"`)
    const lostSeq = Number(/^id: (\d+)$/m.exec(lostFrame)?.[1])
    expect(delivery).toMatchObject({ intent_id: sent.intent_id, seq: lostSeq, delivery_attempt: 1 })
    expect(streams).toBe(2)
    await agent.resolve(delivery.intent_id, { status: 'COMPLETED' })
    await inbox.return()
  })

  it('reconnects after the connection is cut and continues after the last seq', async () => {
    const { address, apiKey } = await recipient()
    const proxy = await startProxy(gw.url)
    const rec = recording()
    const agent = new Agent({ baseURL: proxy.url, apiKey, address, instanceId: 'proxy-1', fetch: rec.fetch })
    try {
      const inbox = agent.listen({ reconnect: { initialDelayMs: 10, maxDelayMs: 50 } })
      const pending = next(inbox)
      const one = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 1 } })
      const d1 = await pending
      expect(d1.intent_id).toBe(one.intent_id)
      await agent.resolve(d1.intent_id, { status: 'COMPLETED' })
      const second = next(inbox)
      await waitFor(() => gw.gateway.services.streams.openStreams === 1, 5_000, 'the stream to be idle')
      proxy.cut()
      const two = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 2 } })
      const d2 = await second
      expect(d2).toMatchObject({ intent_id: two.intent_id, delivery_attempt: 1 })
      expect(d2.seq).toBeGreaterThan(d1.seq)
      expect(rec.streams.length).toBeGreaterThanOrEqual(2)
      expect(rec.streams.at(-1)?.searchParams.get('since')).toBe(String(d1.seq))
      await inbox.return()
    } finally {
      await proxy.close()
    }
  })

  it('a new listen() re-sends unresolved leases with their seq; since skips them', async () => {
    const { address, apiKey } = await recipient()
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'restart-1' })
    const firstRun = agent.listen()
    const sent = await sender.send({ to_agent: address, intent_type: 'job.v1' })
    const original: Delivery = await next(firstRun)
    await firstRun.return() // the process "dies" holding an unresolved lease

    const secondRun = agent.listen()
    const again = await next(secondRun)
    expect(again).toMatchObject({ intent_id: sent.intent_id, seq: original.seq, delivery_attempt: 1 })
    await secondRun.return()

    const resumed = agent.listen({ since: original.seq })
    const later = await sender.send({ to_agent: address, intent_type: 'job.v1' })
    expect((await next(resumed)).intent_id).toBe(later.intent_id)
    await resumed.return()
    // Another instance never sees this instance's leases. (Wait until the gateway has noticed
    // the closed stream, or it could still hand the next intent to it.)
    await waitFor(() => gw.gateway.services.streams.openStreams === 0, 5_000, 'the old stream to close')
    const other = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'restart-2' })
    const otherRun = other.listen()
    const pending = next(otherRun) // iteration opens the stream
    await waitFor(() => gw.gateway.services.streams.openStreams === 1, 5_000, 'only the new stream to be open')
    const third = await sender.send({ to_agent: address, intent_type: 'job.v1' })
    expect((await pending).intent_id).toBe(third.intent_id)
    await otherRun.return()
  })

  it('delivers again after an expired lease, with a new seq; maxInFlight holds the rest back', async () => {
    const { address, apiKey } = await recipient()
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'lease-1' })
    const inbox = agent.listen({ leaseSeconds: 1, maxInFlight: 1 })
    const first = next(inbox)
    const one = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 1 } })
    const two = await sender.send({ to_agent: address, intent_type: 'job.v1', payload: { n: 2 } })
    const d1 = await first
    const leasedAt = Date.now()
    expect(d1).toMatchObject({ intent_id: one.intent_id, delivery_attempt: 1 })
    // d1 is never resolved: its one slot frees only when the 1 s lease expires. Then both the
    // queued intent and the expired one arrive (in the gateway's order), each resolved in turn.
    const seen: Delivery[] = []
    while (!seen.some((d) => d.intent_id === one.intent_id) || !seen.some((d) => d.intent_id === two.intent_id)) {
      const delivery = await next(inbox, 5_000)
      if (seen.length === 0) expect(Date.now() - leasedAt).toBeGreaterThanOrEqual(900)
      seen.push(delivery)
      await agent.resolve(delivery.intent_id, { status: 'COMPLETED' })
    }
    expect(seen.find((d) => d.intent_id === two.intent_id)?.delivery_attempt).toBe(1)
    const again = seen.find((d) => d.intent_id === one.intent_id)
    expect(again?.delivery_attempt).toBe(2)
    expect(again?.seq).toBeGreaterThan(d1.seq)
    const { events } = await sender.events(one.intent_id)
    expect(events.map((e) => e.event_type)).toContain('intent.redelivered')
    await inbox.return()
  })

  it('ends with AgentKilledError on the agent.killed frame and fires onKilled once', async () => {
    const { address, apiKey } = await recipient()
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'frame-1' })
    const events: KilledEvent[] = []
    const unsubscribe = agent.onKilled((event) => events.push(event))
    const ignored: KilledEvent[] = []
    agent.onKilled((event) => ignored.push(event))() // unsubscribed at once
    const { agent: row } = await operator.agents.retrieve(address)
    const inbox = agent.listen()
    const ended = next(inbox).catch((error: unknown) => error)
    // The gateway's own stream cut, as its kill path uses it; retried until the stream is open.
    await waitFor(() => gw.gateway.services.streams.cut(row.address_id, 'this agent was killed by an operator') > 0)
    const started = Date.now()
    const error = await ended
    expect(Date.now() - started).toBeLessThan(1_000)
    expect(error).toBeInstanceOf(AgentKilledError)
    expect(error).toMatchObject({ status: 403, code: 'agent_killed', requestId: expect.stringMatching(/^req_/) })
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ source: 'stream', error })
    expect(ignored).toHaveLength(0)
    expect(agent.killed).toBe(true)
    unsubscribe()
  })

  it('honours a real kill: stream closed, calls refused, reconnect refused, resume', async (ctx) => {
    if (!(await hasRoute(gw, 'POST', '/v1/mesh/agents/addr_none/kill', {}))) {
      ctx.skip('POST /v1/mesh/agents/{id}/kill is not served yet')
      return
    }
    const { address, apiKey } = await recipient()
    const agent = new Agent({ baseURL: gw.url, apiKey, address, instanceId: 'kill-1' })
    const events: KilledEvent[] = []
    agent.onKilled((event) => events.push(event))
    const senderEvents: KilledEvent[] = []
    sender.onKilled((event) => senderEvents.push(event))
    const inbox = agent.listen()
    const sent = await sender.send({ to_agent: address, intent_type: 'job.v1' })
    const delivery = await next(inbox)
    const ended = next(inbox).catch((error: unknown) => error)

    const killed = await operator.agents.kill(address, { reason: 'runaway loop' })
    expect(killed).toMatchObject({ ok: true, address, health_status: 'killed' })
    expect(await ended).toBeInstanceOf(AgentKilledError)
    await expect(agent.resolve(delivery.intent_id, { status: 'COMPLETED' })).rejects.toBeInstanceOf(AgentKilledError)
    await expect(next(agent.listen())).rejects.toBeInstanceOf(AgentKilledError)
    expect(events).toHaveLength(1)

    const refused = await sender.send({ to_agent: address, intent_type: 'job.v1' }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(AgentKilledError)
    expect(senderEvents).toHaveLength(0) // the recipient is killed, not the sender
    expect(sender.killed).toBe(false)

    if (!(await hasRoute(gw, 'POST', '/v1/mesh/agents/addr_none/resume', {}))) return
    await operator.agents.resume(address, { reason: 'fixed' })
    const again = agent.listen()
    const redelivered = await next(again)
    expect(redelivered.intent_id).toBe(sent.intent_id)
    expect(agent.killed).toBe(false)
    await again.return()
  })
})
