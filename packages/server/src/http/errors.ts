import type { ServerResponse } from 'node:http'
import type { ErrorCode } from '../core/errors.js'

/** The one table from error code to HTTP status (DESIGN §4). */
export const CODE_TO_STATUS: Record<ErrorCode, number> = {
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
  internal_error: 500,
  model_not_priced: 422,
  upstream_error: 502,
  upstream_timeout: 504,
}

export interface ErrorPayload {
  code: ErrorCode
  message: string
  details?: Record<string, unknown> | undefined
  extra?: Record<string, unknown> | undefined
  headers?: Record<string, string> | undefined
}

/** Writes `{ok: false, error: {code, message, request_id, details?}}` with the mapped status. */
export function sendError(res: ServerResponse, requestId: string, error: ErrorPayload): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = {
    ok: false,
    error: {
      ...error.extra,
      code: error.code,
      message: error.message,
      request_id: requestId,
      ...(error.details ? { details: error.details } : {}),
    },
  }
  for (const [name, value] of Object.entries(error.headers ?? {})) res.setHeader(name, value)
  sendJson(res, CODE_TO_STATUS[error.code], body)
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.statusCode = status
  res.setHeader('content-type', 'application/json; charset=utf-8')
  res.setHeader('content-length', Buffer.byteLength(text))
  res.end(text)
}
