import type { RequestOptions } from '../core/client.js'
import { ChokepointError } from '../core/errors.js'
import { APIResource } from '../core/resource.js'
import { iterSSE } from '../core/sse.js'
import type { MeshEvent } from '../types.js'

/** The operator-facing mesh event feed (kills, resumes, breaches, health changes). */
export class Events extends APIResource {
  /** Mesh events, newest first. */
  list(params: EventListParams = {}, options?: RequestOptions): Promise<EventListResponse> {
    return this._client.get('/v1/mesh/events', { ...params }, options)
  }

  /**
   * Mesh events live, oldest first, as they happen (after `after`, else from now on). One
   * connection, no automatic reconnect: to resume, call again with `after` = the last
   * `event_id` seen. Aborting `options.signal` (or `break`) ends the iteration quietly.
   */
  async *stream(params: EventStreamParams = {}, options?: RequestOptions): AsyncGenerator<MeshEvent, void, undefined> {
    const connection = new AbortController()
    const signal = options?.signal
    const onAbort = (): void => connection.abort()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (signal?.aborted) return
      const response = await this._client.stream({
        method: 'GET',
        path: '/v1/mesh/events/stream',
        query: { ...params },
        options: { ...options, signal: connection.signal },
      })
      for await (const message of iterSSE(response.body as ReadableStream<Uint8Array>, { signal: connection.signal })) {
        yield parseEvent(message.data)
      }
    } catch (error) {
      if (signal?.aborted) return
      throw error
    } finally {
      signal?.removeEventListener('abort', onAbort)
      connection.abort()
    }
  }
}

export interface EventListParams {
  /** 1–500, default 100. */
  limit?: number | undefined
  /** e.g. `agent.killed`. */
  event_type?: string | undefined
  /** Only events of this agent. */
  address?: string | undefined
}

export interface EventListResponse {
  ok: true
  events: MeshEvent[]
}

export interface EventStreamParams {
  /** Replay what followed this `event_id` (`evt_…`) first. */
  after?: string | undefined
}

function parseEvent(data: string): MeshEvent {
  try {
    return JSON.parse(data) as MeshEvent
  } catch {
    throw new ChokepointError(`the event stream sent a frame that is not JSON: ${data.slice(0, 200)}`)
  }
}
