import type { Store } from '../../store/store.js'
import type { KillSwitchService } from '../kill-switch/kill-switch-service.js'
import type { Metrics } from '../metrics.js'
import { countWould, wouldEvents } from './monitor.js'
import type { PolicyBreach } from './policy-engine.js'

/**
 * After an enforced policy refused an intent or an egress call (its transaction rolled back):
 * records the monitored policies' would-be decisions, auto-kills the policy's owner when the
 * policy says `on_breach: kill`, else notes a blocking rate breach once per window
 * (`policy.breached`). `subject` names what was refused (`{intent_type}` or `{tool, upstream}`).
 */
export async function handleBreach(
  deps: { store: Store; killSwitch: KillSwitchService; metrics?: Metrics | undefined },
  breach: PolicyBreach,
  now: number,
  subject: Record<string, unknown>,
): Promise<void> {
  const monitored = breach.decision.monitored
  for (const event of wouldEvents(monitored, subject, now)) await deps.store.appendMeshEvent(event)
  countWould(deps.metrics, monitored)
  const target = breach.autoKill
  if (target) {
    await deps.killSwitch.killAgent({ kind: 'policy', policy_id: target.policy_id }, target.address_id, { reason: breach.message })
    return
  }
  const d = breach.decision
  if (d.decision !== 'rate_limited' || !d.owner || !d.policy_id) return
  const at = new Date(now).toISOString()
  await deps.store.recordBreach(d.policy_id, d.window === 'hour' ? at.slice(0, 13) : at.slice(0, 10), {
    address_id: d.owner.address_id,
    address: d.owner.address,
    event_type: 'policy.breached',
    details: { policy_id: d.policy_id, reason: d.reason, limit: d.limit ?? null, window: d.window ?? null, on_breach: 'block', ...subject },
    actor_id: `policy:${d.policy_id}`,
    created_at: now,
  })
}
