import type { ServerResponse } from 'node:http'
import type { EventSink } from '../core/delivery/event-sink.js'

/** Streams buffering more than this are dropped (their leases expire and are redelivered). */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024

/** Server-sent events over a Node response: headers, frames with ids, pings, close detection. */
export class SseSink implements EventSink {
  readonly #res: ServerResponse
  #closed = false
  readonly #listeners: (() => void)[] = []

  constructor(res: ServerResponse) {
    this.#res = res
    res.statusCode = 200
    res.setHeader('content-type', 'text/event-stream; charset=utf-8')
    res.setHeader('cache-control', 'no-cache, no-transform')
    res.setHeader('x-accel-buffering', 'no')
    res.flushHeaders()
    res.socket?.setNoDelay(true)
    res.on('close', () => this.#markClosed())
    // A client that left before the stream opened (e.g. while its starting point was read):
    // its 'close' has already fired and will not again.
    if (res.destroyed || !res.socket || res.socket.destroyed) this.#markClosed()
    // The gateway keeps half-open connections (a request followed by a FIN still gets its
    // answer), but a stream whose client half-closed has nobody left to stream to.
    const socket = res.socket
    if (socket?.readableEnded) res.destroy()
    else if (socket) {
      const gone = (): void => void res.destroy()
      socket.once('end', gone)
      res.once('close', () => socket.off('end', gone))
    }
  }

  get closed(): boolean {
    return this.#closed
  }

  send(event: string, data: unknown, id?: number | string): boolean {
    if (this.#closed) return false
    if (this.#res.writableLength > MAX_BUFFERED_BYTES) {
      this.#res.destroy()
      this.#markClosed()
      return false
    }
    const head = id === undefined ? '' : `id: ${id}\n`
    this.#res.write(`${head}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    return true
  }

  ping(): void {
    if (!this.#closed) this.#res.write(': ping\n\n')
  }

  end(): void {
    if (!this.#closed) this.#res.end()
    this.#markClosed()
  }

  onClose(listener: () => void): void {
    if (this.#closed) listener()
    else this.#listeners.push(listener)
  }

  #markClosed(): void {
    if (this.#closed) return
    this.#closed = true
    for (const listener of this.#listeners.splice(0)) listener()
  }
}
