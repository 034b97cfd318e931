import type { ChangeFeed } from '../../store/change-feed.js'
import type { Store } from '../../store/store.js'
import type { Clock } from '../clock.js'
import type { EventSink } from '../delivery/event-sink.js'
import { eventView } from './intent-view.js'
import { isTerminal } from './intent-service.js'

/**
 * `GET /v1/intents/{id}/events/stream`: the intent's events as SSE, from `since`, woken by
 * the change feed. Window mode ends after `windowMs` or once an event was sent; persistent
 * mode ends when the intent reaches a terminal status (nothing more can happen to it).
 */
export async function streamIntentEvents(
  deps: { store: Store; feed: ChangeFeed; clock: Clock },
  sink: EventSink,
  options: { intentId: string; since: number; windowMs: number | null; keyId: string },
): Promise<void> {
  let since = options.since
  let wake: (() => void) | null = null
  let pending = false
  const unsubscribe = deps.feed.subscribe((change) => {
    if (change.type === 'intent.event' && change.intent_id === options.intentId) {
      pending = true
      wake?.()
    }
    // A revoked key reads nothing more.
    if (change.type === 'key.revoked' && change.key_id === options.keyId) sink.end()
  })
  sink.onClose(() => wake?.())
  const deadline = options.windowMs === null ? Infinity : Date.now() + options.windowMs
  let reason: 'terminal' | 'events' | 'timeout' = 'timeout'
  try {
    while (!sink.closed) {
      pending = false
      const events = await deps.store.listIntentEvents(options.intentId, since, 500)
      for (const event of events) {
        if (!sink.send(event.event_type, eventView(event), event.seq)) return
        since = event.seq
      }
      const last = events[events.length - 1]
      if (last && isTerminal(last.status) && last.event_type !== 'intent.redelivered') {
        reason = 'terminal'
        break
      }
      if (options.windowMs !== null && events.length > 0) {
        reason = 'events'
        break
      }
      const remaining = deadline - Date.now()
      if (remaining <= 0) break
      if (pending) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 5_000))
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      wake = null
    }
    // The last frame says why the stream ended: the intent finished, events came, or time ran out.
    if (!sink.closed) sink.send(reason === 'timeout' ? 'stream.timeout' : 'stream.end', { ok: true, next_seq: since + 1, reason })
  } finally {
    unsubscribe()
    sink.end()
  }
}
