/**
 * A real MCP server (the official TypeScript SDK's `McpServer` over its
 * `StreamableHTTPServerTransport`, stateful sessions) on 127.0.0.1, for the MCP egress tests and
 * bench/egress.mjs. It records every HTTP request it receives (method, headers, JSON-RPC body)
 * and whether the client aborted it before the answer was complete.
 *
 * Tools: `echo {text}`, `add {a, b}`, `deploy {service}` (the one policies deny), and `slow
 * {steps}`, which sends a progress notification every `stepMs` (so its answer is a slow SSE
 * stream) and answers after the last step.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js'
import { z } from 'zod'

export interface SeenRequest {
  method: string
  headers: IncomingHttpHeaders
  /** The parsed JSON-RPC body of a POST (one message or a batch). */
  body: unknown
  /** JSON-RPC methods in the body (`tools/call` …); a response from the client has none. */
  rpc: string[]
  /** The tool names of the body's tools/call requests. */
  tools: string[]
  /** The client went away (or the gateway aborted) before the answer was complete. */
  aborted: boolean
  /** When it was received (its body read), ms since the epoch. */
  at: number
}

export interface McpServerOptions {
  /** Answer POSTs with application/json instead of an SSE stream (the transport's `enableJsonResponse`). */
  json?: boolean
  /** Required `Authorization: Bearer <token>` (or `<tokenHeader>: <token>`); 401 without it. */
  token?: string
  tokenHeader?: string
  /** Delay between the progress notifications of `slow`, ms. */
  stepMs?: number
}

export class TestMcpServer {
  server!: Server
  url = ''
  readonly requests: SeenRequest[] = []
  readonly sessions = new Map<string, StreamableHTTPServerTransport>()
  readonly options: McpServerOptions

  constructor(options: McpServerOptions = {}) {
    this.options = options
  }

  get aborted(): number {
    return this.requests.filter((r) => r.aborted).length
  }

  /** tools/call requests received, by tool name. */
  calls(tool?: string): number {
    return this.requests.reduce((n, r) => n + r.tools.filter((t) => tool === undefined || t === tool).length, 0)
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void (async () => {
        let raw = ''
        for await (const chunk of req) raw += chunk
        let body: unknown = undefined
        try {
          body = raw === '' ? undefined : (JSON.parse(raw) as unknown)
        } catch {
          body = raw
        }
        const messages = (Array.isArray(body) ? body : body === undefined ? [] : [body]) as Record<string, any>[]
        const seen: SeenRequest = {
          method: req.method ?? '',
          headers: req.headers,
          body,
          rpc: messages.filter((m) => typeof m?.['method'] === 'string').map((m) => m['method'] as string),
          tools: messages.filter((m) => m?.['method'] === 'tools/call').map((m) => String(m['params']?.['name'])),
          aborted: false,
          at: Date.now(),
        }
        this.requests.push(seen)
        res.on('close', () => {
          if (!res.writableFinished) seen.aborted = true
        })
        const { token, tokenHeader } = this.options
        const presented = tokenHeader === undefined ? req.headers.authorization : req.headers[tokenHeader.toLowerCase()]
        if (token !== undefined && presented !== (tokenHeader === undefined ? `Bearer ${token}` : token)) {
          res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'unauthorized' }))
          return
        }
        const sessionId = req.headers['mcp-session-id']
        let transport: StreamableHTTPServerTransport | undefined
        if (typeof sessionId === 'string') {
          transport = this.sessions.get(sessionId)
          if (!transport) {
            res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32001, message: 'Session not found' } }))
            return
          }
        } else if (req.method === 'POST' && isInitializeRequest(body)) {
          transport = await this.#newSession()
        } else {
          res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Bad Request: no session' } }))
          return
        }
        await transport.handleRequest(req, res, body)
      })().catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(error))
      })
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mcp`
  }

  async #newSession(): Promise<StreamableHTTPServerTransport> {
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: this.options.json === true,
      onsessioninitialized: (id) => {
        this.sessions.set(id, transport)
      },
    })
    transport.onclose = () => {
      if (transport.sessionId !== undefined) this.sessions.delete(transport.sessionId)
    }
    const mcp = new McpServer({ name: 'test-mcp', version: '1.0.0' })
    mcp.registerTool('echo', { description: 'Echoes the text', inputSchema: { text: z.string() } }, ({ text }) => ({ content: [{ type: 'text', text }] }))
    mcp.registerTool('add', { description: 'Adds two numbers', inputSchema: { a: z.number(), b: z.number() } }, ({ a, b }) => ({
      content: [{ type: 'text', text: String(a + b) }],
    }))
    mcp.registerTool('deploy', { description: 'Deploys a service to production', inputSchema: { service: z.string() } }, ({ service }) => ({
      content: [{ type: 'text', text: `deployed ${service}` }],
    }))
    mcp.registerTool('slow', { description: 'Reports progress for a while', inputSchema: { steps: z.number().int().min(1) } }, async ({ steps }, extra) => {
      const token = extra._meta?.progressToken
      for (let i = 1; i <= steps; i++) {
        if (extra.signal.aborted) break
        if (token !== undefined) await extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: i, total: steps } })
        await new Promise((resolve) => setTimeout(resolve, this.options.stepMs ?? 50))
      }
      return { content: [{ type: 'text', text: `done after ${steps} steps` }] }
    })
    await mcp.connect(transport)
    return transport
  }

  async close(): Promise<void> {
    for (const transport of this.sessions.values()) await transport.close().catch(() => undefined)
    this.server.closeAllConnections()
    await new Promise((resolve) => this.server.close(() => resolve(undefined)))
  }
}
