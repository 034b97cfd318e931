import type { AlertMapper, HealthStatus, MeshEventDraft } from '../../store/store.js'

/** Alert types a webhook can subscribe to (DESIGN §7). */
export const ALERT_TYPES = [
  'agent.stale',
  'agent.recovered',
  'agent.killed',
  'agent.auto_killed',
  'agent.resumed',
  'budget.threshold',
  'rate.breach',
  'agent.deadman',
] as const

export type AlertType = (typeof ALERT_TYPES)[number]

/** Which mesh events alert, and as what (written to the outbox in the event's transaction). */
export function alertTypeOf(event: MeshEventDraft): AlertType | null {
  switch (event.event_type) {
    case 'agent.killed':
    case 'agent.auto_killed':
    case 'agent.resumed':
    case 'budget.threshold':
    case 'agent.deadman':
      return event.event_type
    case 'policy.breached':
      return 'rate.breach'
    case 'agent.health_changed': {
      const d = event.details as { from?: HealthStatus; to?: HealthStatus } | null
      if (d?.to === 'unreachable') return 'agent.stale'
      if (d?.from === 'unreachable' && (d.to === 'healthy' || d.to === 'degraded')) return 'agent.recovered'
      return null
    }
    default:
      return null
  }
}

/** `{alert_id, type, agent, details, at}` (DESIGN §7). */
export const alertFor: AlertMapper = (event, alertId) => {
  const type = alertTypeOf(event)
  if (type === null) return null
  const body = {
    alert_id: alertId,
    type,
    agent: event.address,
    details: { ...event.details, actor_id: event.actor_id },
    at: new Date(event.created_at).toISOString(),
  }
  return { type, body: JSON.stringify(body) }
}
