import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ZodType } from 'zod'
import type { Access, Principal } from '../core/auth/principal.js'

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS'

export interface RouteContext<TBody, TQuery> {
  req: IncomingMessage
  res: ServerResponse
  requestId: string
  /** The authenticated key; a placeholder for public routes. */
  principal: Principal
  params: Record<string, string>
  query: TQuery
  body: TBody
  traceId: string | undefined
}

/** Returned by handlers that wrote the response themselves (SSE). */
export const STREAMED = Symbol('streamed')

export interface Route<TBody = unknown, TQuery = unknown> {
  method: Method
  path: string
  access: Access
  /** Control routes (keys, kill, resume, policies, webhooks): authenticated 403s are audited. */
  control?: boolean
  summary: string
  tag: string
  body?: ZodType<TBody>
  query?: ZodType<TQuery>
  /** SSE routes: documented as text/event-stream. */
  stream?: boolean
  /**
   * Proxy routes: the body is not parsed as JSON; the handler gets the raw bytes as `body` (a
   * Buffer, at most the gateway's body limit, for every method).
   */
  raw?: boolean
  /** Request headers this route reads; validated (400) before the body and query (DESIGN §11 precedence). */
  headers?: readonly ('x-instance-id' | 'idempotency-key')[]
  handler: (ctx: RouteContext<TBody, TQuery>) => Promise<Record<string, unknown> | typeof STREAMED>
}

/** Typed helper: infers body and query types from the schemas. */
export function route<TBody = undefined, TQuery = Record<string, never>>(r: Route<TBody, TQuery>): Route {
  return r as unknown as Route
}

interface Compiled {
  route: Route
  segments: string[]
  /** The name of a trailing `*name` segment: it matches the rest of the path (zero or more segments). */
  tail: string | null
}

/**
 * A small exact-segment router: `/v1/intents/:intent_id`. A last segment `*name` is a catch-all:
 * `/egress/:upstream/*path` matches `/egress/a`, `/egress/a/` and `/egress/a/b/c`, with
 * `params.path` the rest as it came (`b/c`, not decoded: the handler decides what it means).
 */
export class Router {
  readonly routes: Route[] = []
  readonly #compiled: Compiled[] = []

  add(...routes: Route[]): this {
    for (const r of routes) {
      this.routes.push(r)
      const segments = r.path.split('/').slice(1)
      const last = segments.at(-1) ?? ''
      const tail = last.startsWith('*') ? last.slice(1) : null
      this.#compiled.push({ route: r, segments: tail === null ? segments : segments.slice(0, -1), tail })
    }
    return this
  }

  /** The route for method + path and its params; `undefined` for an unknown route (404). */
  match(method: string, path: string): { route: Route; params: Record<string, string> } | undefined {
    const parts = path.split('/').slice(1)
    for (const { route: r, segments, tail } of this.#compiled) {
      if (r.method !== method) continue
      if (tail === null ? segments.length !== parts.length : parts.length < segments.length) continue
      const params: Record<string, string> = {}
      if (tail !== null) params[tail] = parts.slice(segments.length).join('/')
      let ok = true
      for (let i = 0; i < segments.length; i += 1) {
        const seg = segments[i] as string
        const part = parts[i] as string
        if (seg.startsWith(':')) {
          if (part === '') {
            ok = false
            break
          }
          let decoded: string
          try {
            decoded = decodeURIComponent(part)
          } catch {
            ok = false
            break
          }
          params[seg.slice(1)] = decoded
        } else if (seg !== part) {
          ok = false
          break
        }
      }
      if (ok) return { route: r, params }
    }
    return undefined
  }
}

/**
 * Raw `agent://org/ws/name` inside a path (DESIGN §11: path parameters accept the raw
 * address) becomes one percent-encoded segment before matching.
 */
export function normalizePath(path: string): string {
  return path.replace(/agent:\/\/?([^/?#]+)\/([^/?#]+)\/([^/?#]+)/g, (_m, a: string, b: string, c: string) =>
    encodeURIComponent(`agent://${a}/${b}/${c}`),
  )
}
