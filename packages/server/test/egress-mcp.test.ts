/**
 * MCP egress: agents call MCP servers (Streamable HTTP) through `/mcp/{upstream}` with their
 * Chokepoint key. A real `McpServer` of the official SDK (stateful sessions; one answering with
 * SSE streams, one with JSON) on 127.0.0.1, and the SDK's `Client` with its
 * `StreamableHTTPClientTransport` pointed at the gateway, on both stores: the credential injected
 * and the agent key never forwarded, denied tools answered in-band and hidden from tools/list
 * (denylist and allowlist), cost per call and a ceiling, the kill refusing everything and cutting
 * in-flight streams (a POST's and the server's GET stream) with one terminal frame while the
 * upstream request is aborted, quarantined instances, session DELETE, and 404/401/403/422.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { LATEST_PROTOCOL_VERSION, McpError } from '@modelcontextprotocol/sdk/types.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, openSseStream, parseSse, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'
import { TestMcpServer } from './mcp-server.js'

const ENGINES = testEngines('egress-mcp.test.ts')
const MCP_TOKEN = 'mcp-upstream-secret-0123456789'
const ACCEPT = 'application/json, text/event-stream'
/** The gateway's in-band JSON-RPC error code (core/egress/mcp.ts). */
const GATEWAY_RPC_ERROR = -32010

describe.each(ENGINES)('MCP egress through the gateway (%s)', (engine) => {
  const sse = new TestMcpServer({ token: MCP_TOKEN, stepMs: 50 })
  const json = new TestMcpServer({ token: MCP_TOKEN, tokenHeader: 'X-Mcp-Token', json: true })
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-mcp-'))
  let gw: TestGateway
  let gwEnv: Record<string, string> = {}
  const clients: Client[] = []

  beforeAll(async () => {
    await sse.start()
    await json.start()
    const file = join(dir, 'egress.json')
    writeFileSync(
      file,
      JSON.stringify({
        upstreams: [
          { id: 'tools', kind: 'mcp', url: sse.url, headers_env: { Authorization: 'MCP_AUTH', 'X-Tenant': 'MCP_TENANT' }, cost_per_call_usd: 0.01, timeout_ms: 20_000 },
          { id: 'jsontools', kind: 'mcp', url: json.url, headers_env: { 'X-Mcp-Token': 'MCP_TOKEN' }, cost_per_call_usd: 0.01 },
          { id: 'llm', kind: 'openai', base_url: 'http://127.0.0.1:9', api_key_env: 'MCP_AUTH', models: {} },
        ],
      }),
    )
    gwEnv = { CHOKEPOINT_EGRESS_CONFIG: file, MCP_AUTH: `Bearer ${MCP_TOKEN}`, MCP_TOKEN, MCP_TENANT: 'acme' }
    gw = await startTestGateway({ engine, env: gwEnv })
  })
  afterAll(async () => {
    for (const client of clients) await client.close().catch(() => undefined)
    await gw?.close()
    await sse.close()
    await json.close()
    rmSync(dir, { recursive: true, force: true })
  })

  /** The SDK's client, pointed at the gateway with the agent's key (the recipe in the README). */
  const connect = async (key: string, upstream = 'tools', gatewayUrl = gw.url) => {
    const client = new Client({ name: 'test-agent', version: '1.0.0' })
    const transport = new StreamableHTTPClientTransport(new URL(`${gatewayUrl}/mcp/${upstream}`), {
      requestInit: { headers: { Authorization: `Bearer ${key}` } },
      reconnectionOptions: { maxReconnectionDelay: 1000, initialReconnectionDelay: 100, reconnectionDelayGrowFactor: 1, maxRetries: 1 },
    })
    transport.onerror = () => undefined
    await client.connect(transport)
    clients.push(client)
    return { client, transport }
  }
  const enc = (address: string) => encodeURIComponent(address)
  const calls = async (address: string) => (await api(gw.url, gw.adminKey, 'GET', `/v1/egress/calls?agent=${enc(address)}`)).body.calls as any[]
  const policy = async (address: string, body: Record<string, unknown>) => {
    const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/policies`, body)
    expect(res.status, JSON.stringify(res.body)).toBe(200)
    return res.body.policy.policy_id as string
  }
  /** A raw POST of JSON-RPC to the gateway's MCP route (for what the SDK client does not send). */
  const post = (key: string, upstream: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${gw.url}/mcp/${upstream}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, accept: ACCEPT, 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  /** A raw session: initialize + initialized; returns its id. */
  const rawSession = async (key: string, upstream = 'tools', headers: Record<string, string> = {}) => {
    const init = await post(key, upstream, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }, headers)
    expect(init.status).toBe(200)
    await init.text()
    const sid = init.headers.get('mcp-session-id') as string
    expect(sid).toBeTruthy()
    const initialized = await post(key, upstream, { jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-session-id': sid, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION, ...headers })
    expect(initialized.status).toBe(202)
    return sid
  }
  /**
   * Requests both servers received in one session, or without one (undefined): the clients of
   * earlier tests stay connected and may reconnect their GET streams in the background.
   */
  const ofSession = (sid: string | undefined) => [...sse.requests, ...json.requests].filter((r) => r.headers['mcp-session-id'] === sid).length
  /** The JSON-RPC messages of an answer, JSON or SSE. */
  const messagesOf = async (res: Response): Promise<any[]> => {
    const text = await res.text()
    if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) return parseSse(text).map((f) => f.data)
    const value = JSON.parse(text)
    return Array.isArray(value) ? value : [value]
  }

  it('initialize, tools/list and tools/call pass through (SSE and JSON servers); the credential is injected, the agent key never forwarded; only tools/call is an egress call', async () => {
    const address = `agent://mcp-${engine}/prod/basic`
    const key = await agentKey(gw, address)
    for (const [upstream, server] of [['tools', sse], ['jsontools', json]] as const) {
      const before = server.requests.length
      const { client, transport } = await connect(key, upstream)
      const { tools } = await client.listTools()
      expect(tools.map((t) => t.name).sort()).toEqual(['add', 'deploy', 'echo', 'slow'])
      const answer = await client.callTool({ name: 'echo', arguments: { text: `hi ${upstream}` } })
      expect(answer.content).toEqual([{ type: 'text', text: `hi ${upstream}` }])
      // The server's GET stream is opened through the gateway too.
      await pollUntil(() => server.requests.slice(before).some((r) => r.method === 'GET' && r.headers['mcp-session-id'] === transport.sessionId), { what: 'the GET stream upstream' })
      const mine = server.requests.slice(before)
      expect(mine.map((r) => r.rpc).flat()).toEqual(expect.arrayContaining(['initialize', 'notifications/initialized', 'tools/list', 'tools/call']))
      // A raw request with the key in x-api-key and Authorization both: neither goes on.
      const raw = await post(key, upstream, { jsonrpc: '2.0', id: 'raw-1', method: 'tools/list' }, { 'x-api-key': key, 'mcp-session-id': transport.sessionId as string, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION })
      expect(raw.status).toBe(200)
      expect((await messagesOf(raw))[0]).toMatchObject({ id: 'raw-1', result: { tools: expect.any(Array) } })
      mine.push(server.requests.at(-1) as (typeof mine)[number])
      for (const seen of mine) {
        if (upstream === 'tools') expect(seen.headers.authorization).toBe(`Bearer ${MCP_TOKEN}`)
        else expect([seen.headers.authorization, seen.headers['x-mcp-token']]).toEqual([undefined, MCP_TOKEN])
        expect(seen.headers['x-api-key']).toBeUndefined()
        expect(JSON.stringify(seen.headers)).not.toContain('cp_')
        expect(JSON.stringify(seen.headers)).not.toContain(key)
        expect(seen.headers['x-tenant']).toBe(upstream === 'tools' ? 'acme' : undefined)
      }
      const call = mine.find((r) => r.rpc.includes('tools/call'))
      expect(call?.headers['mcp-session-id']).toBe(transport.sessionId)
      expect(call?.headers['mcp-protocol-version']).toBe(LATEST_PROTOCOL_VERSION)
      expect(call?.headers['accept']).toContain('text/event-stream')
    }
    // One row per tools/call; initialize, tools/list and notifications are kill-checked, not metered.
    const list = await calls(address)
    expect(list).toHaveLength(2)
    expect(list[0]).toMatchObject({ kind: 'mcp', upstream: 'jsontools', endpoint: 'tools/call', tool: 'jsontools/echo', model: null, state: 'settled', outcome: 'usage', cost_usd: 0.01 })
    expect(list[1]).toMatchObject({ kind: 'mcp', upstream: 'tools', tool: 'tools/echo', state: 'settled', outcome: 'usage', cost_usd: 0.01 })
    const agent = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
    expect(agent.cost_period).toBeCloseTo(0.02, 9)
  })

  it('a denylisted tool is answered in-band with the policy id and never reaches the server; tools/list hides it (SSE and JSON); batches get one answer per request', async () => {
    const address = `agent://mcp-${engine}/prod/denied`
    const key = await agentKey(gw, address)
    const policyId = await policy(address, { kind: 'tool', mode: 'denylist', patterns: ['tools/deploy', 'jsontools/dep*'] })
    for (const [upstream, server] of [['tools', sse], ['jsontools', json]] as const) {
      const { client, transport } = await connect(key, upstream)
      expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['add', 'echo', 'slow'])
      const deploysBefore = server.calls('deploy')
      const error = await client.callTool({ name: 'deploy', arguments: { service: 'api' } }).catch((e: unknown) => e)
      expect(error).toBeInstanceOf(McpError)
      expect((error as McpError).code).toBe(GATEWAY_RPC_ERROR)
      expect((error as McpError).data).toMatchObject({ code: 'policy_denied', policy_id: policyId })
      expect(server.calls('deploy')).toBe(deploysBefore)
      // The session stays usable for the other tools.
      expect((await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } })).content).toEqual([{ type: 'text', text: '5' }])

      // Raw: HTTP 200 with the JSON-RPC error for that id.
      const headers = { 'mcp-session-id': transport.sessionId as string, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION }
      const raw = await post(key, upstream, { jsonrpc: '2.0', id: 'd-1', method: 'tools/call', params: { name: 'deploy', arguments: { service: 'x' } } }, headers)
      expect(raw.status).toBe(200)
      expect(await raw.json()).toMatchObject({ jsonrpc: '2.0', id: 'd-1', error: { code: GATEWAY_RPC_ERROR, data: { code: 'policy_denied', policy_id: policyId } } })
      // A 2025-03-26 batch: the allowed call goes on, the denied one is answered by the gateway.
      const batch = await post(
        key,
        upstream,
        [
          { jsonrpc: '2.0', id: 101, method: 'tools/call', params: { name: 'echo', arguments: { text: 'in a batch' } } },
          { jsonrpc: '2.0', id: 102, method: 'tools/call', params: { name: 'deploy', arguments: { service: 'x' } } },
        ],
        { ...headers, 'mcp-protocol-version': '2025-03-26' },
      )
      expect(batch.status).toBe(200)
      const answers = await messagesOf(batch)
      expect(answers.find((m) => m.id === 101)?.result?.content).toEqual([{ type: 'text', text: 'in a batch' }])
      expect(answers.find((m) => m.id === 102)?.error).toMatchObject({ code: GATEWAY_RPC_ERROR, data: { code: 'policy_denied', policy_id: policyId } })
      expect(server.calls('deploy')).toBe(deploysBefore)
    }
    // Denied calls are not egress calls: add, echo (batch) on each upstream.
    expect((await calls(address)).map((c) => c.tool).sort()).toEqual(['jsontools/add', 'jsontools/echo', 'tools/add', 'tools/echo'])
  })

  it('allowlist: only the listed tools are listed and callable', async () => {
    const address = `agent://mcp-${engine}/prod/allowed`
    const key = await agentKey(gw, address)
    const policyId = await policy(address, { kind: 'tool', mode: 'allowlist', patterns: ['tools/echo', 'tools/a*'] })
    const { client } = await connect(key)
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(['add', 'echo'])
    const slowBefore = sse.calls('slow')
    const error = (await client.callTool({ name: 'slow', arguments: { steps: 1 } }).catch((e: unknown) => e)) as McpError
    expect(error.code).toBe(GATEWAY_RPC_ERROR)
    expect(error.data).toMatchObject({ code: 'policy_denied', policy_id: policyId })
    expect(sse.calls('slow')).toBe(slowBefore)
    expect((await client.callTool({ name: 'add', arguments: { a: 1, b: 1 } })).content).toEqual([{ type: 'text', text: '2' }])
    // Another upstream's tools are not on the list: its listing is empty, its calls refused.
    const other = await connect(key, 'jsontools')
    expect((await other.client.listTools()).tools).toEqual([])
    expect(((await other.client.callTool({ name: 'echo', arguments: { text: 'x' } }).catch((e: unknown) => e)) as McpError).data).toMatchObject({ code: 'policy_denied' })
  })

  it('each tools/call costs cost_per_call_usd; a $0.03 ceiling lets 3 calls through and refuses the 4th with 429 budget_exceeded before the server', async () => {
    const address = `agent://mcp-${engine}/prod/spender`
    const key = await agentKey(gw, address)
    const policyId = await policy(address, { kind: 'cost', max_cost_per_day_usd: 0.03, on_breach: 'block' })
    const { client, transport } = await connect(key)
    const before = sse.calls('echo')
    for (let i = 0; i < 3; i++) expect((await client.callTool({ name: 'echo', arguments: { text: `#${i}` } })).content).toEqual([{ type: 'text', text: `#${i}` }])
    const error = await client.callTool({ name: 'echo', arguments: { text: '#3' } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(StreamableHTTPError)
    expect((error as StreamableHTTPError).code).toBe(429)
    expect(String((error as Error).message)).toContain('budget_exceeded')
    const raw = await post(key, 'tools', { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }, { 'mcp-session-id': transport.sessionId as string })
    expect(raw.status).toBe(429)
    expect(raw.headers.get('x-should-retry')).toBe('false')
    expect(((await raw.json()) as any).error).toMatchObject({ code: 'budget_exceeded', policy_id: policyId })
    // In a batch the refusal is in-band, and the rest of the batch goes on.
    const batch = await post(
      key,
      'tools',
      [
        { jsonrpc: '2.0', id: 'l', method: 'tools/list' },
        { jsonrpc: '2.0', id: 'c', method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } },
      ],
      { 'mcp-session-id': transport.sessionId as string, 'mcp-protocol-version': '2025-03-26' },
    )
    expect(batch.status).toBe(200)
    const answers = await messagesOf(batch)
    expect(answers.find((m) => m.id === 'l')?.result?.tools).toHaveLength(4)
    expect(answers.find((m) => m.id === 'c')?.error).toMatchObject({ code: GATEWAY_RPC_ERROR, data: { code: 'budget_exceeded', policy_id: policyId } })
    expect(sse.calls('echo') - before).toBe(3)
    // Listing costs nothing and is not refused by the ceiling.
    expect((await client.listTools()).tools.length).toBe(4)
    const agent = (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${enc(address)}`)).body.agent
    expect(agent.cost_period).toBeCloseTo(0.03, 9)
    expect((await calls(address)).map((c) => [c.outcome, c.cost_usd])).toEqual([['usage', 0.01], ['usage', 0.01], ['usage', 0.01]])
  })

  it('a killed agent is refused 403 agent_killed on every method; nothing reaches the server', async () => {
    const address = `agent://mcp-${engine}/prod/killed`
    const key = await agentKey(gw, address)
    const { client, transport } = await connect(key)
    await client.callTool({ name: 'echo', arguments: { text: 'before' } })
    const sid = transport.sessionId as string
    expect((await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'test' })).status).toBe(200)
    // The client's GET stream is cut by the kill; wait until it is gone upstream, then count.
    await pollUntil(() => sse.requests.filter((r) => r.method === 'GET' && r.headers['mcp-session-id'] === sid).every((r) => r.aborted), { what: 'the GET stream cut' })
    const seen = ofSession(sid)
    const error = await client.callTool({ name: 'echo', arguments: { text: 'after' } }).catch((e: unknown) => e)
    expect((error as StreamableHTTPError).code).toBe(403)
    expect(String((error as Error).message)).toContain('agent_killed')
    const headers = { 'mcp-session-id': sid, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION }
    for (const res of [
      await post(key, 'tools', { jsonrpc: '2.0', id: 1, method: 'tools/list' }, headers),
      await post(key, 'tools', { jsonrpc: '2.0', method: 'notifications/initialized' }, headers),
      await post(key, 'tools', { jsonrpc: '2.0', id: 2, method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'x', version: '1' } } }),
      await fetch(`${gw.url}/mcp/tools`, { headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream', ...headers } }),
      await fetch(`${gw.url}/mcp/tools`, { method: 'DELETE', headers: { 'x-api-key': key, ...headers } }),
    ]) {
      expect(res.status).toBe(403)
      expect(((await res.json()) as any).error).toMatchObject({ code: 'agent_killed' })
    }
    expect(ofSession(sid)).toBe(seen)
    expect(sse.sessions.has(sid)).toBe(true) // the DELETE did not get through either
  })

  it('a kill mid-stream ends the POST stream with an agent_killed JSON-RPC error for the pending call, and the GET stream with a log message; both upstream requests are aborted', async () => {
    const address = `agent://mcp-${engine}/prod/looper`
    const key = await agentKey(gw, address)
    const { client } = await connect(key)
    // A second session of the same agent, whose server stream is read raw.
    const sid = await rawSession(key)
    const stream = await openSseStream(gw.url, key, '/mcp/tools', { accept: 'text/event-stream', 'mcp-session-id': sid, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION })
    expect(stream.status).toBe(200)
    await pollUntil(() => sse.requests.some((r) => r.method === 'GET' && r.headers['mcp-session-id'] === sid), { what: 'the raw GET stream upstream' })

    const seenBefore = sse.requests.length
    let progress = 0
    let killedAt = 0
    let kill: Promise<{ status: number }> | undefined
    const error = await client
      .callTool({ name: 'slow', arguments: { steps: 400 } }, undefined, {
        timeout: 60_000,
        onprogress: () => {
          progress += 1
          if (progress === 3) {
            killedAt = Date.now()
            kill = api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'looping' })
          }
        },
      })
      .catch((e: unknown) => e)
    const cutMs = Date.now() - killedAt
    expect((await kill)?.status).toBe(200)
    expect(error).toBeInstanceOf(McpError)
    expect((error as McpError).code).toBe(GATEWAY_RPC_ERROR)
    expect((error as McpError).data).toMatchObject({ code: 'agent_killed' })
    expect(progress).toBeGreaterThanOrEqual(3)
    expect(progress).toBeLessThan(400)
    expect(cutMs).toBeLessThan(1000)
    const slowCalls = sse.requests.slice(seenBefore).filter((r) => r.tools.includes('slow'))
    expect(slowCalls).toHaveLength(1)
    await expect.poll(() => slowCalls[0]?.aborted, { timeout: 1000 }).toBe(true)

    // The server's stream: one MCP log message naming the kill, then the end.
    await stream.done
    const last = stream.frames.at(-1)
    expect(last?.data).toMatchObject({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'error', data: { code: 'agent_killed' } } })
    await expect.poll(() => sse.requests.filter((r) => r.method === 'GET' && r.headers['mcp-session-id'] === sid).every((r) => r.aborted), { timeout: 1000 }).toBe(true)
    // Settled at the reservation (the server may have run it) once the cut stream has unwound.
    const call = await pollUntil(async () => (await calls(address)).find((c) => c.state === 'settled'), { what: 'the cut call settled' })
    expect(call).toMatchObject({ tool: 'tools/slow', outcome: 'reservation', cost_usd: 0.01 })
    console.log(`mcp egress (${engine}): stream cut ${cutMs} ms after the kill call started, after ${progress} progress notifications`)
  })

  it.runIf(engine === 'postgres')('a kill through one replica cuts the stream another replica serves (the change feed)', async () => {
    const replica = await startTestGateway({ databaseUrl: gw.databaseUrl as string, env: { ...gwEnv, CHOKEPOINT_ADMIN_KEY: gw.adminKey } })
    try {
      const address = `agent://mcp-${engine}/prod/elsewhere`
      const key = await agentKey(gw, address)
      const { client } = await connect(key, 'tools', replica.url)
      const seenBefore = sse.requests.length
      let progress = 0
      let kill: Promise<{ status: number }> | undefined
      const error = await client
        .callTool({ name: 'slow', arguments: { steps: 400 } }, undefined, {
          timeout: 60_000,
          onprogress: () => {
            progress += 1
            if (progress === 2) kill = api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/kill`, { reason: 'elsewhere' })
          },
        })
        .catch((e: unknown) => e)
      expect((await kill)?.status).toBe(200)
      expect((error as McpError).code).toBe(GATEWAY_RPC_ERROR)
      expect((error as McpError).data).toMatchObject({ code: 'agent_killed' })
      expect(progress).toBeLessThan(400)
      const upstreamCall = sse.requests.slice(seenBefore).find((r) => r.tools.includes('slow'))
      expect(upstreamCall).toBeDefined()
      await expect.poll(() => upstreamCall?.aborted, { timeout: 1000 }).toBe(true)
      await client.close()
    } finally {
      await replica.close()
    }
  })

  it('a quarantined instance is refused 403 (details.quarantined); its siblings are not', async () => {
    const address = `agent://mcp-${engine}/prod/pods`
    const key = await agentKey(gw, address)
    const q = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${enc(address)}/instances/pod-bad/kill`, { reason: 'bad pod' })
    expect(q.status, JSON.stringify(q.body)).toBe(200)
    const seen = ofSession(undefined)
    const init = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } }
    const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x' } } }
    for (const body of [init, call]) {
      const res = await post(key, 'tools', body, { 'x-instance-id': 'pod-bad' })
      expect(res.status).toBe(403)
      expect(((await res.json()) as any).error).toMatchObject({ code: 'agent_killed', details: { quarantined: true, instance_id: 'pod-bad' } })
    }
    expect(ofSession(undefined)).toBe(seen)
    const sid = await rawSession(key, 'tools', { 'x-instance-id': 'pod-good' })
    const ok = await post(key, 'tools', call, { 'x-instance-id': 'pod-good', 'mcp-session-id': sid, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION })
    expect(ok.status).toBe(200)
    expect((await messagesOf(ok))[0]).toMatchObject({ id: 1, result: { content: [{ type: 'text', text: 'x' }] } })
  })

  it('DELETE ends the session on the server; a later request on it gets the server 404 passed through', async () => {
    const address = `agent://mcp-${engine}/prod/leaver`
    const key = await agentKey(gw, address)
    const { client, transport } = await connect(key)
    const sid = transport.sessionId as string
    expect(sse.sessions.has(sid)).toBe(true)
    await transport.terminateSession()
    // The client would reconnect its GET stream, now without a session id: it is done here.
    await client.close()
    const del = sse.requests.find((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sid)
    expect(del?.headers.authorization).toBe(`Bearer ${MCP_TOKEN}`)
    expect(JSON.stringify(del?.headers)).not.toContain('cp_')
    expect(sse.sessions.has(sid)).toBe(false)
    const after = await post(key, 'tools', { jsonrpc: '2.0', id: 1, method: 'tools/list' }, { 'mcp-session-id': sid, 'mcp-protocol-version': LATEST_PROTOCOL_VERSION })
    expect(after.status).toBe(404)
    expect(await after.json()).toMatchObject({ jsonrpc: '2.0', error: { message: 'Session not found' } })
  })

  it('fails closed: unknown upstream or one of another kind 404, staff keys 403, no key 401, a body that is not JSON-RPC 422 — nothing reaches a server', async () => {
    const key = await agentKey(gw, `agent://mcp-${engine}/prod/careless`)
    const before = ofSession(undefined)
    const list = { jsonrpc: '2.0', id: 1, method: 'tools/list' }
    expect((await post(key, 'nope', list)).status).toBe(404)
    const llm = await post(key, 'llm', list)
    expect(llm.status).toBe(404)
    expect(((await llm.json()) as any).error.code).toBe('not_found')
    expect((await post(gw.adminKey, 'tools', list)).status).toBe(403)
    expect((await fetch(`${gw.url}/mcp/tools`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(list) })).status).toBe(401)
    expect((await fetch(`${gw.url}/mcp/tools`, { headers: { accept: 'text/event-stream' } })).status).toBe(401)
    expect((await post(key, 'tools', { hello: 'world' })).status).toBe(422)
    expect((await post(key, 'tools', [])).status).toBe(422)
    const noName = await post(key, 'tools', { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { arguments: {} } })
    expect(noName.status).toBe(422)
    expect(((await noName.json()) as any).error.details.field).toBe('params.name')
    expect((await post(key, 'tools', { jsonrpc: '2.0', method: 'tools/call', params: { name: 'echo' } })).status).toBe(422)
    // The gateway's body limit (1 MiB by default) holds here too.
    const big = await post(key, 'tools', { jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'echo', arguments: { text: 'x'.repeat(1_100_000) } } })
    expect(big.status).toBe(413)
    expect(ofSession(undefined)).toBe(before)
  })
})
