import type { APIClient } from './core/client.js'
import { AgentKilledError, APIConnectionError, APIError, ChokepointError } from './core/errors.js'
import { iterSSE } from './core/sse.js'
import { backoffMs, linkAbort, retryAfterMs, sleep, unref } from './internal/timers.js'
import type { Delivery } from './types.js'

/** Options of `Agent.listen()`. */
export interface ListenOptions {
  /** Ends the iteration (without an error) when aborted, closing the stream. */
  signal?: AbortSignal | undefined
  /** Lease per delivery, 1–3600 s (server default 30): resolve or `ack` within it, or it is delivered again. */
  leaseSeconds?: number | undefined
  /** At most this many unresolved deliveries leased to the stream at once (server default 32). */
  maxInFlight?: number | undefined
  /**
   * Windowed mode (1–60): each response ends after this many seconds or shortly after a
   * delivery, and the SDK reconnects at once. Default: one long-lived stream.
   */
  waitSeconds?: number | undefined
  /**
   * Resume point: the gateway re-sends this instance's still-leased deliveries with a higher
   * `seq`. Default 0, which re-sends all of them (what a restarted process wants).
   */
  since?: number | undefined
  reconnect?: ReconnectOptions | undefined
}

/** How `listen()` reconnects after a network error or an unexpected end of the stream. */
export interface ReconnectOptions {
  /** First delay, ms; doubles per consecutive failure, with jitter. @default 500 */
  initialDelayMs?: number | undefined
  /** @default 10000 */
  maxDelayMs?: number | undefined
  /** Consecutive failed attempts before `listen()` throws the last error. @default Infinity */
  maxAttempts?: number | undefined
  /** Reconnect when nothing (not even a `: ping`) arrived for this long, ms. @default 45000 */
  idleTimeoutMs?: number | undefined
}

/** What the inbox loop needs from its agent. */
export interface InboxContext {
  client: APIClient
  path: string
  headers: Record<string, string>
  /** The gateway accepted the stream (so the agent is not killed). */
  onConnected(): void
  /** The gateway said the agent is killed. */
  onKilled(error: AgentKilledError): void
}

/**
 * The inbox as an async generator of deliveries. Reconnects with backoff on network errors,
 * idle streams, 429/5xx and unexpected ends; resumes with `since` = the highest `seq` yielded,
 * so a delivery leased but never yielded is re-sent with its original `seq`. Ends by throwing
 * `AgentKilledError` on the `agent.killed` frame or a 403 `agent_killed`, and throws other
 * 4xx errors (401, 403, 404, 422…) without reconnecting.
 */
export async function* listenInbox(ctx: InboxContext, options: ListenOptions): AsyncGenerator<Delivery, void, undefined> {
  const { signal } = options
  const initialDelayMs = options.reconnect?.initialDelayMs ?? 500
  const maxDelayMs = options.reconnect?.maxDelayMs ?? 10_000
  const maxAttempts = options.reconnect?.maxAttempts ?? Infinity
  const idleTimeoutMs = options.reconnect?.idleTimeoutMs ?? 45_000
  let since = options.since ?? 0
  let failures = 0
  while (!signal?.aborted) {
    const connection = new AbortController()
    const unlink = linkAbort(signal, connection)
    let idleTimer: ReturnType<typeof setTimeout> | undefined
    let idle = false
    const touch = (): void => {
      clearTimeout(idleTimer)
      idleTimer = setTimeout(() => {
        idle = true
        connection.abort()
      }, idleTimeoutMs)
      unref(idleTimer)
    }
    let windowClosed = false
    let lastError: ChokepointError
    let delayMs: number | undefined
    try {
      const response = await ctx.client.stream({
        method: 'GET',
        path: ctx.path,
        query: {
          since,
          wait_seconds: options.waitSeconds,
          lease_seconds: options.leaseSeconds,
          max_in_flight: options.maxInFlight,
        },
        options: { signal: connection.signal, headers: ctx.headers },
      })
      ctx.onConnected()
      touch()
      for await (const message of iterSSE(response.body as ReadableStream<Uint8Array>, {
        onChunk: touch,
        signal: connection.signal,
      })) {
        switch (message.event) {
          case 'intent.delivered': {
            const delivery = parseFrame(message.data) as Delivery
            failures = 0
            if (delivery.seq > since) since = delivery.seq
            // Time spent by the consumer is not silence on the wire.
            clearTimeout(idleTimer)
            yield delivery
            touch()
            break
          }
          case 'stream.timeout':
          case 'stream.end':
            windowClosed = true
            break
          case 'agent.killed':
          // This instance was quarantined (the agent's other instances keep working).
          case 'instance.quarantined':
          case 'error':
            throw APIError.fromFrame(parseFrame(message.data), response.headers)
          default:
            break
        }
      }
      lastError = new APIConnectionError(
        idle ? `no data on the inbox stream for ${idleTimeoutMs} ms` : 'the inbox stream ended unexpectedly',
      )
    } catch (error) {
      if (signal?.aborted) return
      if (error instanceof AgentKilledError) {
        ctx.onKilled(error)
        throw error
      }
      if (error instanceof APIError) {
        if (!isTransient(error)) throw error
        delayMs = retryAfterMs(error.headers)
      } else if (error instanceof ChokepointError && !(error instanceof APIConnectionError)) {
        throw error
      }
      lastError =
        error instanceof ChokepointError
          ? error
          : new APIConnectionError(idle ? `no data on the inbox stream for ${idleTimeoutMs} ms` : describe(error), {
              cause: error,
            })
    } finally {
      clearTimeout(idleTimer)
      unlink()
      connection.abort()
    }
    if (signal?.aborted) return
    if (windowClosed) {
      failures = 0
      continue
    }
    failures += 1
    if (failures > maxAttempts) throw lastError
    await sleep(delayMs ?? backoffMs(failures - 1, initialDelayMs, maxDelayMs), signal)
  }
}

/** Worth reconnecting after: the gateway is busy or briefly unavailable. */
function isTransient(error: APIError): boolean {
  return error.status === 408 || error.status === 429 || error.status >= 500
}

function parseFrame(data: string): unknown {
  try {
    return JSON.parse(data) as unknown
  } catch {
    throw new ChokepointError(`the inbox stream sent a frame that is not JSON: ${data.slice(0, 200)}`)
  }
}

function describe(error: unknown): string {
  return `Connection error: ${error instanceof Error ? error.message : String(error)}`
}
