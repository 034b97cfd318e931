import type { MeshEvent, Operator } from '@chokepoint/sdk'

export type LiveStatus = 'connecting' | 'live' | 'reconnecting'

/**
 * One subscription to `GET /v1/mesh/events/stream` for the whole console (read with fetch:
 * EventSource cannot send the key). Reconnects with backoff, resuming after the last event
 * seen, so a kill made elsewhere (CLI, another tab, a policy) arrives once, within a second.
 */
export function subscribe(
  op: Operator,
  onEvent: (event: MeshEvent) => void,
  onStatus: (status: LiveStatus) => void,
): () => void {
  const stop = new AbortController()
  let after: string | undefined
  void (async () => {
    let delay = 250
    onStatus('connecting')
    while (!stop.signal.aborted) {
      try {
        const events = op.events.stream(after === undefined ? {} : { after }, { signal: stop.signal, maxRetries: 0 })
        onStatus('live')
        delay = 250
        for await (const event of events) {
          after = event.event_id
          onEvent(event)
        }
      } catch {
        // Dropped, gateway restarting, or a network blip: try again.
      }
      if (stop.signal.aborted) return
      onStatus('reconnecting')
      await new Promise((resolve) => setTimeout(resolve, delay))
      delay = Math.min(delay * 2, 5_000)
    }
  })()
  return () => stop.abort()
}
