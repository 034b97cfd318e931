import type { IntentEventRow, IntentRow } from '../../store/store.js'

const isoOrNull = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString())
const parseOrNull = (text: string | null): unknown => (text === null ? null : (JSON.parse(text) as unknown))

/** The intent object of the wire contract (DESIGN §5a, §11). */
export function intentView(row: IntentRow): Record<string, unknown> {
  const view: Record<string, unknown> = {
    intent_id: row.intent_id,
    intent_type: row.intent_type,
    correlation_id: row.correlation_id,
    from_agent: row.from_agent,
    to_agent: row.to_agent,
    payload: JSON.parse(row.payload) as unknown,
    status: row.status,
    delivery_state: row.delivery_state,
    created_at: new Date(row.created_at).toISOString(),
    updated_at: new Date(row.updated_at).toISOString(),
    delivery_attempt: row.delivery_attempt,
    max_delivery_attempts: row.max_delivery_attempts,
    lease_expires_at: isoOrNull(row.lease_expires_at),
    reply_to: row.reply_to,
    deadline_at: isoOrNull(row.deadline_at),
    trace_id: row.trace_id,
  }
  if (row.result !== null) view['result'] = parseOrNull(row.result)
  if (row.error !== null) view['error'] = parseOrNull(row.error)
  if (row.cost_usd !== null) view['cost_usd'] = row.cost_usd
  return view
}

export function eventView(row: IntentEventRow): Record<string, unknown> {
  return {
    intent_id: row.intent_id,
    seq: row.seq,
    event_type: row.event_type,
    status: row.status,
    actor: row.actor,
    at: new Date(row.at).toISOString(),
    details: parseOrNull(row.details),
  }
}

/** The `data` of an inbox `intent.delivered` frame (DESIGN §5b). */
export function deliveryFrame(row: IntentRow, seq: number): Record<string, unknown> {
  return {
    intent_id: row.intent_id,
    seq,
    event_type: 'intent.delivered',
    status: row.status,
    intent_type: row.intent_type,
    from_agent: row.from_agent,
    to_agent: row.to_agent,
    correlation_id: row.correlation_id,
    reply_to: row.reply_to,
    payload: JSON.parse(row.payload) as unknown,
    delivery_attempt: row.delivery_attempt,
    lease_expires_at: isoOrNull(row.lease_expires_at),
    created_at: new Date(row.created_at).toISOString(),
    trace_id: row.trace_id,
  }
}
