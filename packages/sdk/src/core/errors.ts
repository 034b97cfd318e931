/**
 * Errors thrown by the SDK. Every gateway answer that is not 2xx becomes an {@link APIError}
 * subclass chosen by status (and, for 403, by `error.code`) in one place:
 * {@link APIError.generate}. Failures without an answer are {@link APIConnectionError},
 * {@link APIConnectionTimeoutError} or {@link APIUserAbortError}.
 */

/** The `error` object of the gateway's error body (DESIGN §4). */
export interface ErrorObject {
  code: string
  message: string
  request_id?: string
  details?: Record<string, unknown>
  /** Extra helpful fields such as `retry_after_s` or `policy_id`. */
  [key: string]: unknown
}

/** Base class of every error the SDK throws on purpose. */
export class ChokepointError extends Error {
  override name: string = 'ChokepointError'
}

type HeadersLike = Headers | Record<string, string> | undefined

/** The gateway answered with a non-2xx status. */
export class APIError extends ChokepointError {
  override name: string = 'APIError'
  /** HTTP status of the answer. */
  readonly status: number
  /** The stable snake_case `error.code`, e.g. `not_found`, `agent_killed`. */
  readonly code: string | undefined
  /** `error.request_id` of the body, else the `x-request-id` header. Quote it when reporting a problem. */
  readonly requestId: string | undefined
  /** `error.details`, e.g. `{ field: 'to_agent' }` on a 422. */
  readonly details: Record<string, unknown> | undefined
  /** The `error` object of the body, when the body had one. */
  readonly error: ErrorObject | undefined
  /** The whole parsed body (or its text when it was not JSON). */
  readonly body: unknown
  /** The response headers. */
  readonly headers: Headers

  constructor(status: number, body: unknown, message: string | undefined, headers: HeadersLike) {
    const error = errorObjectOf(body)
    super(message ?? describe(status, error, body))
    this.status = status
    this.body = body
    this.error = error
    this.headers = new Headers(headers)
    this.code = error?.code
    this.requestId = error?.request_id ?? this.headers.get('x-request-id') ?? undefined
    this.details = error?.details
  }

  /** Maps a status (and `error.code`) to the matching error class. The only place that does. */
  static generate(status: number, body: unknown, headers?: HeadersLike): APIError {
    const code = errorObjectOf(body)?.code
    if (status === 400) return new BadRequestError(status, body, undefined, headers)
    if (status === 401) return new AuthenticationError(status, body, undefined, headers)
    if (status === 403) {
      return code === 'agent_killed'
        ? new AgentKilledError(status, body, undefined, headers)
        : new PermissionDeniedError(status, body, undefined, headers)
    }
    if (status === 404) return new NotFoundError(status, body, undefined, headers)
    if (status === 409) return new ConflictError(status, body, undefined, headers)
    if (status === 413) return new PayloadTooLargeError(status, body, undefined, headers)
    if (status === 422) return new UnprocessableEntityError(status, body, undefined, headers)
    if (status === 429) return new RateLimitError(status, body, undefined, headers)
    if (status >= 500) return new InternalServerError(status, body, undefined, headers)
    return new APIError(status, body, undefined, headers)
  }

  /**
   * An error delivered inside a stream (an `event: error` or `event: agent.killed` frame),
   * where there is no status of its own: the status is the one its code maps to.
   */
  static fromFrame(data: unknown, headers?: HeadersLike): APIError {
    const code = errorObjectOf(data)?.code
    return APIError.generate((code === undefined ? undefined : CODE_STATUS[code]) ?? 500, data, headers)
  }
}

/** 400 `invalid_request`: malformed JSON or conflicting parameters. */
export class BadRequestError extends APIError {
  override name: string = 'BadRequestError'
}

/** 401 `unauthorized`: missing, unknown or revoked key. */
export class AuthenticationError extends APIError {
  override name: string = 'AuthenticationError'
}

/** 403: `forbidden`, `policy_denied`, or (as {@link AgentKilledError}) `agent_killed`. */
export class PermissionDeniedError extends APIError {
  override name: string = 'PermissionDeniedError'
}

/**
 * 403 `agent_killed`: an agent involved is killed. Also thrown by `Agent.listen()` when the
 * inbox stream receives the `agent.killed` frame.
 */
export class AgentKilledError extends PermissionDeniedError {
  override name: string = 'AgentKilledError'

  /** The killed agent's address, when the gateway named it (`error.details.address`). */
  get address(): string | undefined {
    const value = this.details?.['address']
    return typeof value === 'string' ? value : undefined
  }

  /** True when only this instance was quarantined (`details.quarantined`); the agent's others work on. */
  get quarantined(): boolean {
    return this.details?.['quarantined'] === true
  }

  /** The quarantined instance (`details.instance_id`), when it is a quarantine. */
  get instanceId(): string | undefined {
    const value = this.details?.['instance_id']
    return typeof value === 'string' ? value : undefined
  }
}

/** 404 `not_found`. */
export class NotFoundError extends APIError {
  override name: string = 'NotFoundError'
}

/** 409 `conflict`: e.g. a second terminal resolve, a reused Idempotency-Key, a stale `If-Match`. */
export class ConflictError extends APIError {
  override name: string = 'ConflictError'
}

/** 413 `payload_too_large`. */
export class PayloadTooLargeError extends APIError {
  override name: string = 'PayloadTooLargeError'
}

/** 422 `schema_invalid`: `details.field` names the offending field. */
export class UnprocessableEntityError extends APIError {
  override name: string = 'UnprocessableEntityError'
}

/** 429 `rate_limited` or `budget_exceeded`. */
export class RateLimitError extends APIError {
  override name: string = 'RateLimitError'
  /** Seconds to wait before trying again, from `Retry-After` (else `error.retry_after_s`). */
  readonly retryAfterSeconds: number | undefined

  constructor(status: number, body: unknown, message: string | undefined, headers: HeadersLike) {
    super(status, body, message, headers)
    const header = this.headers.get('retry-after')
    const fromHeader = header === null || header.trim() === '' ? NaN : Number(header)
    const fromBody = this.error?.['retry_after_s']
    this.retryAfterSeconds = Number.isFinite(fromHeader)
      ? fromHeader
      : typeof fromBody === 'number'
        ? fromBody
        : undefined
  }
}

/** Any status ≥ 500, e.g. 503 `store_unavailable`. */
export class InternalServerError extends APIError {
  override name: string = 'InternalServerError'
}

/** No answer: the connection failed (DNS, refused, reset, TLS…). `cause` holds the original error. */
export class APIConnectionError extends ChokepointError {
  override name: string = 'APIConnectionError'

  constructor(message = 'Connection error.', options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** No answer within the request's `timeout`. */
export class APIConnectionTimeoutError extends APIConnectionError {
  override name: string = 'APIConnectionTimeoutError'

  constructor(message = 'Request timed out.') {
    super(message)
  }
}

/** The caller's `AbortSignal` aborted the request. */
export class APIUserAbortError extends ChokepointError {
  override name: string = 'APIUserAbortError'

  constructor(message = 'Request was aborted.') {
    super(message)
  }
}

/** DESIGN §4: error code → status, for errors that arrive inside a stream. */
const CODE_STATUS: Record<string, number> = {
  invalid_request: 400,
  schema_invalid: 422,
  unauthorized: 401,
  forbidden: 403,
  agent_killed: 403,
  policy_denied: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  budget_exceeded: 429,
  store_unavailable: 503,
}

function errorObjectOf(body: unknown): ErrorObject | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const error = (body as { error?: unknown }).error
  if (typeof error !== 'object' || error === null) return undefined
  const { code, message } = error as { code?: unknown; message?: unknown }
  if (typeof code !== 'string') return undefined
  return { ...(error as Record<string, unknown>), code, message: typeof message === 'string' ? message : '' }
}

function describe(status: number, error: ErrorObject | undefined, body: unknown): string {
  if (error) return `${status} ${error.code}: ${error.message}`
  if (typeof body === 'string' && body.trim() !== '') return `${status} ${body.trim().slice(0, 200)}`
  return `${status} status code (no body)`
}
