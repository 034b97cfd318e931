import type { ChangeFeed } from '../../store/change-feed.js'
import type { Store } from '../../store/store.js'
import type { EventSink } from '../delivery/event-sink.js'
import { meshEventId, meshEventView } from './mesh-events.js'

/**
 * `GET /v1/mesh/events/stream`: one frame per mesh event as it happens. Without `after` it
 * starts at the newest event (live only); with `after` it first replays what followed it.
 */
export async function streamMeshEvents(
  deps: { store: Store; feed: ChangeFeed },
  sink: EventSink,
  options: { after: number | null; keyId: string },
): Promise<void> {
  let wake: (() => void) | null = null
  let pending = false
  const unsubscribe = deps.feed.subscribe((change) => {
    if (change.type === 'mesh.event') {
      pending = true
      wake?.()
    }
    // A revoked key reads nothing more.
    if (change.type === 'key.revoked' && change.key_id === options.keyId) sink.end()
  })
  sink.onClose(() => wake?.())
  try {
    let cursor = options.after
    if (cursor === null) {
      const [newest] = await deps.store.listMeshEvents({ limit: 1, event_type: null, address: null, before_seqno: null })
      cursor = newest?.seqno ?? 0
    }
    sink.ping()
    while (!sink.closed) {
      pending = false
      const rows = await deps.store.meshEventsAfter(cursor, 500)
      for (const row of rows) {
        if (!sink.send(row.event_type, meshEventView(row), meshEventId(row.seqno))) return
        cursor = row.seqno
      }
      if (rows.length === 500 || pending) continue
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 15_000)
        wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      wake = null
      sink.ping()
    }
  } finally {
    unsubscribe()
    sink.end()
  }
}
