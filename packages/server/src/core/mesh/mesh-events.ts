import type { MeshEventRow } from '../../store/store.js'

/** `MeshEvent = {event_id, address, event_type, details, actor_id, created_at}` (DESIGN §5c). */
export function meshEventView(row: MeshEventRow): Record<string, unknown> {
  return {
    event_id: meshEventId(row.seqno),
    address: row.address,
    event_type: row.event_type,
    details: row.details === null ? null : (JSON.parse(row.details) as unknown),
    actor_id: row.actor_id,
    created_at: new Date(row.created_at).toISOString(),
  }
}

export const meshEventId = (seqno: number): string => `evt_${seqno}`

/** Parses `evt_<n>`; undefined when malformed. */
export function parseMeshEventId(id: string): number | undefined {
  const m = /^evt_(\d{1,15})$/.exec(id)
  return m ? Number(m[1]) : undefined
}
