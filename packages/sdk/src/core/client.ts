import {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  ChokepointError,
  RateLimitError,
} from './errors.js'
import { readEnv } from '../internal/env.js'
import { backoffMs, linkAbort, retryAfterMs, sleep } from '../internal/timers.js'

/** The `fetch` the SDK calls; defaults to the global one. */
export type Fetch = (url: string, init: RequestInit) => Promise<Response>

/** Where the gateway listens when neither `baseURL` nor `CHOKEPOINT_URL` says otherwise (DESIGN §5e). */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:8420'

/** Options shared by `Agent` and `Operator`. */
export interface ClientOptions {
  /** Gateway URL. Defaults to `CHOKEPOINT_URL`, else `http://127.0.0.1:8420`. */
  baseURL?: string | undefined
  /** API key, sent as `x-api-key`. Defaults to `CHOKEPOINT_API_KEY`. */
  apiKey?: string | undefined
  /**
   * Per-attempt time limit in ms: the whole exchange for JSON calls, until the response
   * headers for streams.
   * @default 60000
   */
  timeout?: number | undefined
  /**
   * Retries of a failed call when retrying is safe: connection errors, 408, 429 and 5xx, for
   * `GET` and for requests that carry an `Idempotency-Key`.
   * @default 2
   */
  maxRetries?: number | undefined
  /** A `fetch` implementation, e.g. one with a proxy agent. Defaults to `globalThis.fetch`. */
  fetch?: Fetch | undefined
  /** Headers sent with every request. */
  defaultHeaders?: Record<string, string> | undefined
}

/** Per-call options; the last parameter of every method. */
export interface RequestOptions {
  /** Aborts the call; it then rejects with `APIUserAbortError`. */
  signal?: AbortSignal | undefined
  /** Overrides the client's `timeout` (ms) for this call. */
  timeout?: number | undefined
  /** Overrides the client's `maxRetries` for this call. */
  maxRetries?: number | undefined
  /** Extra headers for this call. */
  headers?: Record<string, string> | undefined
}

export type HTTPMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'
/** Query values; `undefined` and `null` are left out of the URL. */
export type QueryValue = string | number | boolean | undefined | null

/** One request for {@link APIClient.request} / {@link APIClient.stream}. */
export interface APIRequest {
  method: HTTPMethod
  path: string
  query?: Record<string, QueryValue> | undefined
  body?: unknown
  options?: RequestOptions | undefined
}

/** Retry-After above this is not waited for: the error is thrown instead. */
const MAX_RETRY_AFTER_MS = 60_000

/**
 * The request machinery `Agent`, `Operator` and the resources share: URL and headers, JSON
 * in and out, timeouts, retries with backoff, and error mapping. Not meant to be used
 * directly; it is exported for advanced use (custom routes).
 */
export class APIClient {
  /** The gateway URL, without a trailing slash. */
  readonly baseURL: string
  /** Per-attempt time limit, ms. */
  readonly timeout: number
  /** Retries of a call when retrying is safe. */
  readonly maxRetries: number
  readonly #apiKey: string
  readonly #fetch: Fetch
  readonly #defaultHeaders: Record<string, string>

  constructor(options: ClientOptions = {}) {
    const apiKey = options.apiKey ?? readEnv('CHOKEPOINT_API_KEY')
    if (!apiKey) {
      throw new ChokepointError('missing API key: pass { apiKey } or set the CHOKEPOINT_API_KEY environment variable')
    }
    const baseURL = options.baseURL ?? readEnv('CHOKEPOINT_URL') ?? DEFAULT_BASE_URL
    if (!/^https?:\/\//i.test(baseURL)) {
      throw new ChokepointError(`baseURL must start with http:// or https://, got ${JSON.stringify(baseURL)}`)
    }
    if (!options.fetch && typeof globalThis.fetch !== 'function') {
      throw new ChokepointError('no global fetch: pass { fetch } (Node ≥ 20 and browsers have one)')
    }
    this.baseURL = baseURL.replace(/\/+$/, '')
    this.timeout = options.timeout ?? 60_000
    this.maxRetries = options.maxRetries ?? 2
    this.#apiKey = apiKey
    this.#fetch = options.fetch ?? ((url, init) => globalThis.fetch(url, init))
    this.#defaultHeaders = { ...options.defaultHeaders }
  }

  /** `GET path?query`, retried when it fails transiently. */
  get<T>(path: string, query?: Record<string, QueryValue>, options?: RequestOptions): Promise<T> {
    return this.request<T>({ method: 'GET', path, query, options })
  }

  /** `POST` with a JSON body (`{}` when none); retried only with an `Idempotency-Key` header. */
  post<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.request<T>({ method: 'POST', path, body: body ?? {}, options })
  }

  /** `PUT` with a JSON body. */
  put<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.request<T>({ method: 'PUT', path, body: body ?? {}, options })
  }

  /** `PATCH` with a JSON body. */
  patch<T>(path: string, body?: unknown, options?: RequestOptions): Promise<T> {
    return this.request<T>({ method: 'PATCH', path, body: body ?? {}, options })
  }

  /** `DELETE path`. */
  delete<T>(path: string, options?: RequestOptions): Promise<T> {
    return this.request<T>({ method: 'DELETE', path, options })
  }

  /** Sends a JSON request and returns the parsed 2xx body; retries what is safe to retry. */
  async request<T>(req: APIRequest): Promise<T> {
    const maxRetries = req.options?.maxRetries ?? this.maxRetries
    const retryable = isRetryable(req)
    for (let attempt = 0; ; attempt += 1) {
      const canRetry = retryable && attempt < maxRetries
      let result: { status: number; headers: Headers; text: string }
      try {
        result = await this.#attempt(req)
      } catch (error) {
        if (!canRetry || !(error instanceof APIConnectionError)) throw error
        await sleep(backoffMs(attempt), req.options?.signal)
        continue
      }
      const body = parseBody(result.text)
      if (result.status >= 200 && result.status < 300) {
        if (typeof body === 'string' && body !== '') {
          throw new ChokepointError(`the gateway answered ${result.status} with a body that is not JSON`)
        }
        return (body === '' ? {} : body) as T
      }
      const error = APIError.generate(result.status, body, result.headers)
      const delay = canRetry ? retryDelayMs(error, attempt) : undefined
      if (delay === undefined) throw error
      await sleep(delay, req.options?.signal)
    }
  }

  /**
   * Opens a streaming response (SSE): one attempt, no retries (the caller owns reconnects).
   * Resolves with the 2xx response; rejects with an `APIError` for any other status. The
   * timeout covers only the wait for the headers; abort `options.signal` to close the stream.
   */
  async stream(req: APIRequest): Promise<Response> {
    const controller = new AbortController()
    linkAbort(req.options?.signal, controller)
    const timeoutMs = req.options?.timeout ?? this.timeout
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      controller.abort()
    }, timeoutMs)
    let response: Response
    try {
      response = await this.#fetch(this.buildURL(req.path, req.query), {
        ...this.#init(req, { accept: 'text/event-stream' }),
        signal: controller.signal,
      })
    } catch (error) {
      throw toConnectionError(error, req.options?.signal, timedOut)
    } finally {
      clearTimeout(timer)
    }
    if (response.ok && response.body) return response
    const text = await response.text().catch(() => '')
    throw APIError.generate(response.status, parseBody(text), response.headers)
  }

  /** `baseURL + path`, with the defined query parameters. */
  buildURL(path: string, query?: Record<string, QueryValue>): string {
    const params = new URLSearchParams()
    for (const [name, value] of Object.entries(query ?? {})) {
      if (value !== undefined && value !== null) params.append(name, String(value))
    }
    const search = params.toString()
    return `${this.baseURL}${path}${search ? `?${search}` : ''}`
  }

  async #attempt(req: APIRequest): Promise<{ status: number; headers: Headers; text: string }> {
    const controller = new AbortController()
    const unlink = linkAbort(req.options?.signal, controller)
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      controller.abort()
    }, req.options?.timeout ?? this.timeout)
    try {
      const response = await this.#fetch(this.buildURL(req.path, req.query), {
        ...this.#init(req, { accept: 'application/json' }),
        signal: controller.signal,
      })
      return { status: response.status, headers: response.headers, text: await response.text() }
    } catch (error) {
      throw toConnectionError(error, req.options?.signal, timedOut)
    } finally {
      clearTimeout(timer)
      unlink()
    }
  }

  #init(req: APIRequest, extra: Record<string, string>): RequestInit {
    const headers: Record<string, string> = { ...extra, ...this.#defaultHeaders, 'x-api-key': this.#apiKey }
    const init: RequestInit = { method: req.method }
    if (req.body !== undefined) {
      headers['content-type'] = 'application/json'
      init.body = JSON.stringify(req.body)
    }
    init.headers = { ...headers, ...req.options?.headers }
    return init
  }
}

/** GETs are safe to repeat; other methods only when an Idempotency-Key makes them so. */
function isRetryable(req: APIRequest): boolean {
  if (req.method === 'GET') return true
  return Object.keys(req.options?.headers ?? {}).some((name) => name.toLowerCase() === 'idempotency-key')
}

/** How long to wait before retrying after `error`; `undefined` = do not retry. */
function retryDelayMs(error: APIError, attempt: number): number | undefined {
  const retryable = error.status === 408 || error.status === 429 || error.status >= 500
  if (!retryable) return undefined
  if (error instanceof RateLimitError) {
    // A spent budget or a policy that just auto-killed the agent will not pass on retry.
    if (error.code === 'budget_exceeded' || error.details?.['auto_killed'] === true) return undefined
  }
  const after = retryAfterMs(error.headers)
  if (after === undefined) return backoffMs(attempt)
  return after <= MAX_RETRY_AFTER_MS ? after : undefined
}

function toConnectionError(error: unknown, signal: AbortSignal | undefined, timedOut: boolean): Error {
  if (error instanceof ChokepointError) return error
  if (signal?.aborted) return new APIUserAbortError()
  if (timedOut) return new APIConnectionTimeoutError()
  return new APIConnectionError(`Connection error: ${error instanceof Error ? error.message : String(error)}`, {
    cause: error,
  })
}

function parseBody(text: string): unknown {
  if (text === '') return ''
  try {
    return JSON.parse(text) as unknown
  } catch {
    return text
  }
}
