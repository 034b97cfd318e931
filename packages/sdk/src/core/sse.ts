/**
 * Server-sent events, decoded by the rules of the HTML standard's event-stream parser:
 * lines end in CRLF, LF or CR; `data:` lines of one event are joined with `\n`; lines that
 * start with `:` are comments (`: ping`); an event is dispatched on a blank line, and only if
 * it has data; an incomplete event at the end of the stream is dropped. Chunks may be split
 * anywhere, even inside a line ending or a multi-byte character.
 */

/** One decoded event. */
export interface SSEMessage {
  /** The `id:` given in this event, if any. */
  id?: string
  /** The `event:` name; `message` when the event named none. */
  event: string
  /** The `data:` lines joined with `\n`. */
  data: string
  /** The `retry:` reconnection time in ms, if the event carried one. */
  retry?: number
}

/** Incremental decoder: feed text with {@link SSEDecoder.push}, get the completed events back. */
export class SSEDecoder {
  #line = ''
  #afterCR = false
  #data: string[] = []
  #event = ''
  #id: string | undefined
  #retry: number | undefined
  #lastEventId = ''

  /** The last `id:` seen on the stream (persists across events, like `EventSource.lastEventId`). */
  get lastEventId(): string {
    return this.#lastEventId
  }

  /** Decodes one chunk of text; returns the events it completed. */
  push(text: string): SSEMessage[] {
    const out: SSEMessage[] = []
    let start = 0
    if (this.#afterCR) {
      this.#afterCR = false
      if (text.charCodeAt(0) === 10) start = 1 // the LF of a CRLF split across chunks
    }
    for (let i = start; i < text.length; i += 1) {
      const c = text.charCodeAt(i)
      if (c !== 10 && c !== 13) continue
      const line = this.#line + text.slice(start, i)
      this.#line = ''
      if (c === 13) {
        if (i + 1 === text.length) this.#afterCR = true
        else if (text.charCodeAt(i + 1) === 10) i += 1
      }
      start = i + 1
      const message = this.#onLine(line)
      if (message) out.push(message)
    }
    this.#line += text.slice(start)
    return out
  }

  #onLine(line: string): SSEMessage | undefined {
    if (line === '') return this.#dispatch()
    if (line.charCodeAt(0) === 58) return undefined // ':' comment, e.g. ': ping'
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.charCodeAt(0) === 32) value = value.slice(1)
    switch (field) {
      case 'data':
        this.#data.push(value)
        break
      case 'event':
        this.#event = value
        break
      case 'id':
        if (!value.includes('\u0000')) {
          this.#id = value
          this.#lastEventId = value
        }
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.#retry = Number(value)
        break
      default:
        break
    }
    return undefined
  }

  #dispatch(): SSEMessage | undefined {
    const hasData = this.#data.length > 0
    const message: SSEMessage = { event: this.#event || 'message', data: this.#data.join('\n') }
    if (this.#id !== undefined) message.id = this.#id
    if (this.#retry !== undefined) message.retry = this.#retry
    this.#data = []
    this.#event = ''
    this.#id = undefined
    this.#retry = undefined
    return hasData ? message : undefined
  }
}

/**
 * Reads a byte stream (a `fetch` response body) as SSE events. Cancelling the iteration
 * (`break`, `return`) cancels the stream, which closes the connection.
 * `onChunk` is called for every chunk received, comments included (a liveness signal).
 * Aborting `signal` cancels the body, which ends the iteration, even with a `fetch` that does
 * not tie its body to the request's signal.
 */
export async function* iterSSE(
  body: ReadableStream<Uint8Array>,
  options: { onChunk?: () => void; signal?: AbortSignal } = {},
): AsyncGenerator<SSEMessage, void, undefined> {
  const reader = body.getReader()
  const text = new TextDecoder()
  const decoder = new SSEDecoder()
  let finished = false
  const onAbort = (): void => void reader.cancel(options.signal?.reason).catch(() => undefined)
  if (options.signal?.aborted) onAbort()
  options.signal?.addEventListener('abort', onAbort, { once: true })
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      options.onChunk?.()
      yield* decoder.push(text.decode(value, { stream: true }))
    }
    finished = true
    yield* decoder.push(text.decode())
  } finally {
    options.signal?.removeEventListener('abort', onAbort)
    // Cancelling closes the connection; nothing to wait for.
    if (!finished) reader.cancel().catch(() => undefined)
    reader.releaseLock()
  }
}
