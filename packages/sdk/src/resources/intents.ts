import type { RequestOptions } from '../core/client.js'
import { APIResource } from '../core/resource.js'
import { path } from '../internal/path.js'
import { uuid4 } from '../internal/uuid.js'
import type {
  IntentCreateParams,
  IntentCreateResponse,
  IntentEventsParams,
  IntentEventsResponse,
  IntentResolveResponse,
  IntentResponse,
  IntentStatus,
  IntentView,
} from '../types.js'

/** Intents, seen from an operator key. */
export class Intents extends APIResource {
  /**
   * Sends an intent as `from_agent` (operator and admin keys may send as any agent, under the
   * same kill and policy checks). An `Idempotency-Key` is generated unless given, so retries
   * never create a second intent.
   */
  send(params: OperatorSendParams, options?: SendRequestOptions): Promise<IntentCreateResponse> {
    const { idempotencyKey, ...rest } = options ?? {}
    const headers = { 'Idempotency-Key': idempotencyKey ?? uuid4(), ...rest.headers }
    return this._client.post('/v1/intents', params, { ...rest, headers })
  }

  /** One intent, with its status, delivery state and outcome. */
  retrieve(intentId: string, options?: RequestOptions): Promise<IntentResponse> {
    return this._client.get(path`/v1/intents/${intentId}`, undefined, options)
  }

  /** An agent's intents, newest first; page with `after: next_after`. */
  list(params: IntentListParams, options?: RequestOptions): Promise<IntentListResponse> {
    return this._client.get('/v1/intents', { ...params }, options)
  }

  /** An intent's events with `seq > since`, ascending. */
  events(intentId: string, params: IntentEventsParams = {}, options?: RequestOptions): Promise<IntentEventsResponse> {
    return this._client.get(path`/v1/intents/${intentId}/events`, { ...params }, options)
  }

  /** Cancels an intent (resolves it `CANCELED`, the only status an operator may set). */
  cancel(intentId: string, params: IntentCancelParams = {}, options?: RequestOptions): Promise<IntentResolveResponse> {
    return this._client.post(path`/v1/intents/${intentId}/resolve`, { ...params, status: 'CANCELED' }, options)
  }
}

export interface OperatorSendParams extends IntentCreateParams {
  /** The sending agent's address. */
  from_agent: string
}

export interface SendRequestOptions extends RequestOptions {
  /** Makes the send safe to repeat: same key + same body → the original intent. Default: a random UUID. */
  idempotencyKey?: string | undefined
}

export interface IntentListParams {
  /** The agent's address (agent keys may omit it: their own). */
  agent?: string | undefined
  direction?: 'sent' | 'received' | undefined
  status?: IntentStatus | undefined
  limit?: number | undefined
  /** `next_after` of the previous page. */
  after?: string | undefined
}

export interface IntentListResponse {
  ok: true
  intents: IntentView[]
  next_after: string | null
}

export interface IntentCancelParams {
  reason?: string | undefined
}
