import type { ChangeFeed } from '../../store/change-feed.js'
import type { Store } from '../../store/store.js'
import type { EventSink } from '../delivery/event-sink.js'
import { meshEventId, meshEventView } from './mesh-events.js'

/**
 * `GET /v1/mesh/events/stream`: one frame per mesh event as it happens. Without `after` it
 * starts at the newest event (live only); with `after` it first replays what followed it.
 * The stream is opened (`openSink`: the 200 and its headers) only once its starting point is
 * read, so every event committed after the client has its 200 reaches it; a store that cannot
 * be read answers an error instead of a stream.
 */
export async function streamMeshEvents(
  deps: { store: Store; feed: ChangeFeed },
  openSink: () => EventSink,
  options: { after: number | null; keyId: string },
): Promise<void> {
  let wake: (() => void) | null = null
  let pending = false
  let sink: EventSink | null = null
  let revoked = false
  const unsubscribe = deps.feed.subscribe((change) => {
    if (change.type === 'mesh.event') {
      pending = true
      wake?.()
    }
    // A revoked key reads nothing more.
    if (change.type === 'key.revoked' && change.key_id === options.keyId) {
      revoked = true
      sink?.end()
    }
  })
  let cursor = options.after
  try {
    if (cursor === null) {
      const [newest] = await deps.store.listMeshEvents({ limit: 1, event_type: null, address: null, before_seqno: null })
      cursor = newest?.seqno ?? 0
    }
  } catch (error) {
    unsubscribe()
    throw error
  }
  sink = openSink()
  if (revoked) sink.end()
  sink.onClose(() => wake?.())
  try {
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
