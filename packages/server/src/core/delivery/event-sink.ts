/** Where a live stream writes its frames; the HTTP layer implements it over SSE. */
export interface EventSink {
  /** Writes one frame; returns false when the client is gone or too far behind. */
  send(event: string, data: unknown, id?: number | string): boolean
  /** Keep-alive comment line. */
  ping(): void
  end(): void
  readonly closed: boolean
  /** Called once when the client disconnects or the sink is ended. */
  onClose(listener: () => void): void
}
