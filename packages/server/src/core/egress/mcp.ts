import type { Store } from '../../store/store.js'
import type { Principal } from '../auth/principal.js'
import { GatewayError } from '../errors.js'
import { assertInstanceLive, egressRule } from '../kill-switch/rules.js'

/**
 * MCP (Streamable HTTP) inspection helpers for the egress proxy: what a JSON-RPC message is,
 * the gateway's in-band errors, SSE framing, and hiding denied tools from `tools/list` results.
 * The proxy itself is http/routes/mcp.ts.
 */

/** A JSON-RPC 2.0 message as it arrives (MCP adds nothing to the envelope). */
export type RpcMessage = Record<string, unknown>
export type RpcId = string | number

/**
 * The JSON-RPC error code of every refusal the gateway answers in-band (`data.code` says which:
 * `policy_denied`, `budget_exceeded`, `rate_limited`, `agent_killed`, `upstream_timeout`). In the
 * implementation-defined server range; not -32001, which the TypeScript SDK uses for its own
 * client-side request timeouts, nor -32000 (its "connection closed").
 */
export const GATEWAY_RPC_ERROR = -32010

/** A request (method and id): it expects a response. */
export function isRequest(m: RpcMessage): boolean {
  return typeof m['method'] === 'string' && isId(m['id'])
}

/** A response (result or error for an id, no method). */
export function isResponse(m: RpcMessage): boolean {
  return m['method'] === undefined && isId(m['id']) && ('result' in m || 'error' in m)
}

export function isId(v: unknown): v is RpcId {
  return typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))
}

/** A key for an id: `1` and `"1"` are different ids. */
export const idKey = (id: RpcId): string => (typeof id === 'number' ? `n:${id}` : `s:${id}`)

/** The tool a `tools/call` names; a schema error without one (no tool name, no policy decision). */
export function toolName(m: RpcMessage): string {
  const params = m['params']
  const name = params !== null && typeof params === 'object' ? (params as Record<string, unknown>)['name'] : undefined
  if (typeof name !== 'string' || name === '' || name.length > 512) {
    throw new GatewayError('schema_invalid', 'a tools/call needs params.name (a tool name, 1–512 characters)', { details: { field: 'params.name' } })
  }
  return name
}

/** The gateway's in-band JSON-RPC error for one request. */
export function rpcError(id: RpcId, code: string, message: string, data: Record<string, unknown> = {}): RpcMessage {
  return { jsonrpc: '2.0', id, error: { code: GATEWAY_RPC_ERROR, message, data: { ...data, code } } }
}

/** One SSE event with the given JSON-RPC message (the SDKs read `event: message` or none). */
export function sseMessage(message: RpcMessage): string {
  return `event: message\ndata: ${JSON.stringify(message)}\n\n`
}

/** An SSE event as its lines (without the blank line that ends it). */
export type SseEvent = string[]

/**
 * Cuts an SSE byte stream (decoded) into events as they complete: lines end with CRLF, LF or CR
 * (a CR at the end of a chunk waits for the next one: it may be half of a CRLF). Nothing else is
 * held back, so each event goes on the moment its blank line arrives.
 */
export class SseFramer {
  #buf = ''
  #lines: string[] = []

  push(text: string): SseEvent[] {
    const buf = this.#buf + text
    const events: SseEvent[] = []
    const eol = /\r\n|\n|\r/g
    let start = 0
    for (let m = eol.exec(buf); m !== null; m = eol.exec(buf)) {
      // A CR as the last character may be the first half of a CRLF split across chunks.
      if (m[0] === '\r' && m.index === buf.length - 1) break
      const line = buf.slice(start, m.index)
      start = m.index + m[0].length
      if (line === '') {
        if (this.#lines.length > 0) events.push(this.#lines)
        this.#lines = []
      } else this.#lines.push(line)
    }
    this.#buf = buf.slice(start)
    return events
  }
}

/** The data of an event (its `data:` lines joined by LF), or null when it has none. */
export function eventData(event: SseEvent): string | null {
  let data: string | null = null
  for (const line of event) {
    if (line !== 'data' && !line.startsWith('data:')) continue
    const value = line === 'data' ? '' : line.slice(line[5] === ' ' ? 6 : 5)
    data = data === null ? value : `${data}\n${value}`
  }
  return data
}

/** The event as text; with `data`, its data lines replaced by that one (other fields kept in place). */
export function serializeEvent(event: SseEvent, data?: string): string {
  if (data === undefined) return `${event.join('\n')}\n\n`
  const out: string[] = []
  let placed = false
  for (const line of event) {
    if (line === 'data' || line.startsWith('data:')) {
      if (!placed) out.push(`data: ${data}`)
      placed = true
    } else out.push(line)
  }
  return `${out.join('\n')}\n\n`
}

/** Parses an event's data or a JSON body into messages; null when it is not JSON-RPC. */
export function parseMessages(text: string): { messages: RpcMessage[]; batch: boolean } | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (Array.isArray(value)) return value.every(isObject) ? { messages: value as RpcMessage[], batch: true } : null
  return isObject(value) ? { messages: [value as RpcMessage], batch: false } : null
}

const isObject = (v: unknown): boolean => v !== null && typeof v === 'object' && !Array.isArray(v)

/**
 * Hides denied tools from a result that lists tools (`tools/list`, whatever request it answers:
 * a resumed stream replays responses to earlier POSTs). Returns true when it removed any.
 */
export async function hideDeniedTools(message: RpcMessage, denied: (name: string) => Promise<boolean>): Promise<boolean> {
  const result = message['result']
  if (!isObject(result)) return false
  const tools = (result as Record<string, unknown>)['tools']
  if (!Array.isArray(tools)) return false
  const keep = await Promise.all(
    tools.map(async (tool: unknown) => {
      const name = isObject(tool) ? (tool as Record<string, unknown>)['name'] : undefined
      // A tool without a usable name cannot be called by name, nor allowed by a pattern: hidden.
      return typeof name === 'string' && !(await denied(name))
    }),
  )
  if (keep.every(Boolean)) return false
  ;(result as Record<string, unknown>)['tools'] = tools.filter((_t, i) => keep[i])
  return true
}

/**
 * The kill check of MCP traffic that is not a metered call (initialize, tools/list,
 * notifications, the GET stream, DELETE): a killed agent, or a quarantined instance when the
 * request names one (`x-instance-id`), is refused `403 agent_killed`. A read, not a transaction:
 * the proxy registers the request for abort before it, so a kill that lands after the read still
 * cuts it. `tools/call` is checked in its admission transaction instead.
 */
export class McpGate {
  readonly #store: Store

  constructor(store: Store) {
    this.#store = store
  }

  async check(principal: Principal, instanceId: string | undefined, killCheck = true): Promise<void> {
    const addressId = principal.address_id as string
    const [agent, quarantine] = await Promise.all([
      killCheck || instanceId !== undefined ? this.#store.getAgentById(addressId) : undefined,
      instanceId === undefined ? undefined : this.#store.getQuarantine(addressId, instanceId),
    ])
    if (!agent) return
    if (killCheck) egressRule(agent)
    assertInstanceLive(agent, quarantine ?? null)
  }
}
