import type { AgentRow } from '../../store/store.js'

/** A never-seen agent: registered, live, no policies, health unknown. */
export function blankAgent(address: string, addressId: string, now: number): AgentRow {
  return {
    address_id: addressId,
    address,
    display_name: null,
    metadata: null,
    created_at: now,
    killed_at: null,
    kill_reason: null,
    kill_actor: null,
    resumed_at: null,
    policy_version: 0,
    auto_kill_policy_id: null,
    enforcement_baseline: null,
    health_status: 'unknown',
    last_heartbeat_at: null,
    registered_at: now,
    labels: null,
  }
}
