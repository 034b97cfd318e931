import { GatewayError } from '../../core/errors.js'

/** Socket-level error codes of Node that mean "the database cannot be reached". */
const NODE_CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOENT',
])

/** SQLSTATEs that mean the server is going away, not that the statement was wrong. */
const SERVER_UNAVAILABLE_STATES = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down, recovery)
  '57014', // query_canceled (statement_timeout)
  '25P03', // idle_in_transaction_session_timeout (this replica stalled mid-transaction)
  '53300', // too_many_connections
  '53000', // insufficient_resources
  '58000', // system_error
  '58030', // io_error
])

/** Messages of node-postgres for failures that carry no code. */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Query read timeout',
  'Client has encountered a connection error',
  'Client was closed',
  'Cannot use a pool after calling end',
  'Connection closed',
  'not queryable',
]

const codeOf = (error: unknown): string | undefined => {
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' ? code : undefined
}

/** True when `error` says the database is unreachable or going away (→ 503 store_unavailable). */
export function isConnectionError(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const code = codeOf(error)
  if (code !== undefined) {
    if (NODE_CONNECTION_CODES.has(code) || SERVER_UNAVAILABLE_STATES.has(code) || code.startsWith('08')) return true
  }
  if (error instanceof AggregateError && error.errors.some(isConnectionError)) return true
  return CONNECTION_MESSAGES.some((m) => error.message.includes(m))
}

/** lock_timeout: a row lock stayed taken too long (a replica frozen mid-transaction holds it). */
const LOCK_NOT_AVAILABLE = '55P03'

/** Serialization failures, deadlocks and lock timeouts: the transaction may simply be run again. */
export function isRetryableConflict(error: unknown): boolean {
  const code = codeOf(error)
  return code === '40001' || code === '40P01' || code === LOCK_NOT_AVAILABLE
}

/**
 * A named prepared statement this connection can no longer run: a migration changed the result
 * type of a table it selects from (`cached plan must not change result type`, on replicas still
 * running the old version during a rolling upgrade), or a pooler gave the session another
 * backend (`prepared statement … does not exist`). The connection is discarded and the statement
 * run again on a fresh one, which prepares it anew.
 */
export function isStalePlan(error: unknown): boolean {
  return codeOf(error) === '26000' || changesResultType(error)
}

/** The stale-plan error of a schema change (every connection that prepared the statement has it). */
export function changesResultType(error: unknown): boolean {
  return codeOf(error) === '0A000' && error instanceof Error && error.message.includes('cached plan must not change result type')
}

/**
 * Values PostgreSQL cannot hold that SQLite stores as given: a NUL character in text
 * (22021), numbers out of the column's range (22003), an over-long index entry (54000).
 * They come from the request, so they are the client's error, not the gateway's.
 */
function isUnstorableValue(error: unknown): boolean {
  const code = codeOf(error)
  return code === '22021' || code === '22P05' || code === '22003' || code === '22008' || code === '54000'
}

/**
 * The error a store method surfaces: connection failures become `store_unavailable`
 * (503; the gateway accepts nothing without its store), unstorable values `invalid_request`.
 */
export function toStoreError(error: unknown): unknown {
  if (error instanceof GatewayError) return error
  if (isConnectionError(error) || codeOf(error) === LOCK_NOT_AVAILABLE) {
    return new GatewayError('store_unavailable', 'the store (PostgreSQL) cannot be reached; nothing was accepted', {
      cause: error,
    })
  }
  if (isUnstorableValue(error)) {
    const message = error instanceof Error ? error.message : String(error)
    return new GatewayError('invalid_request', `a value in this request cannot be stored: ${message}`, { cause: error })
  }
  return error
}
