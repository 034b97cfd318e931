import type { TokenUsage } from './pricing.js'

/**
 * Reads a provider's server-sent-event stream as it passes: each complete frame (up to its blank
 * line) is handed to `frame()`, which records usage and says what to forward. A frame split
 * across reads is kept until complete, so whatever is forwarded ends on a frame boundary and a
 * terminal frame of the gateway's can always follow it.
 */
export abstract class SseReader {
  /** The call's usage, once the stream has reported its final count (else null: the reservation). */
  usage: TokenUsage | null = null
  #pending = ''

  /** The text to forward for this piece of the upstream body. */
  push(text: string): string {
    this.#pending += text
    let out = ''
    for (;;) {
      const m = /\r?\n\r?\n/.exec(this.#pending)
      if (m === null) break
      const frame = this.#pending.slice(0, m.index + m[0].length)
      this.#pending = this.#pending.slice(m.index + m[0].length)
      out += this.#read(frame)
    }
    return out
  }

  /** Whatever is left at the end of the stream (an unterminated last frame). */
  flush(): string {
    const rest = this.#pending
    this.#pending = ''
    return rest === '' ? '' : this.#read(rest)
  }

  /** The one frame that ends a stream cut by a kill, in the provider's own error shape. */
  abstract killFrame(message: string, requestId: string): string

  /** Forwarded text for one frame (the frame itself, or '' to drop it). */
  protected abstract frame(frame: string, event: string | null, json: unknown): string

  #read(frame: string): string {
    const lines = frame.split(/\r?\n/)
    const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? null
    const data = lines
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart())
      .join('\n')
    if (data === '' || data === '[DONE]') return frame
    let json: unknown
    try {
      json = JSON.parse(data)
    } catch {
      return frame
    }
    return this.frame(frame, event, json)
  }
}

export const count = (v: unknown): number | null => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : null)
