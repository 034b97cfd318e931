/**
 * The one error type core throws. Its `code` is part of the wire contract (DESIGN §4);
 * the HTTP layer maps it to a status through one table (http/errors.ts).
 */
export const ERROR_CODES = [
  'invalid_request',
  'schema_invalid',
  'unauthorized',
  'forbidden',
  'agent_killed',
  'policy_denied',
  'not_found',
  'conflict',
  'payload_too_large',
  'rate_limited',
  'budget_exceeded',
  'store_unavailable',
  'internal_error',
  // Egress (agents' LLM calls through the gateway).
  'model_not_priced',
  'upstream_error',
  'upstream_timeout',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export interface GatewayErrorOptions {
  /** Structured details for the client, e.g. `{ field: 'to_agent' }`. */
  details?: Record<string, unknown>
  /** Extra top-level fields of the error object, e.g. `{ policy_id }`. */
  extra?: Record<string, unknown>
  /** Response headers that belong to this error, e.g. `Retry-After`. */
  headers?: Record<string, string>
  cause?: unknown
}

export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly details: Record<string, unknown> | undefined
  readonly extra: Record<string, unknown> | undefined
  readonly headers: Record<string, string> | undefined

  constructor(code: ErrorCode, message: string, options: GatewayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GatewayError'
    this.code = code
    this.details = options.details
    this.extra = options.extra
    this.headers = options.headers
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError
}

export const notFound = (what: string): GatewayError => new GatewayError('not_found', `${what} not found`)
export const forbidden = (message: string): GatewayError => new GatewayError('forbidden', message)
export const conflict = (message: string, details?: Record<string, unknown>): GatewayError =>
  new GatewayError('conflict', message, details ? { details } : {})
