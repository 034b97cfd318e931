import type { AgentService } from '../core/agents/agent-service.js'
import type { KeyService } from '../core/auth/key-service.js'
import type { Clock } from '../core/clock.js'
import type { StreamRegistry } from '../core/delivery/stream-registry.js'
import type { IntentService } from '../core/intents/intent-service.js'
import type { AuditService } from '../core/audit/audit-service.js'
import type { KillSwitchService } from '../core/kill-switch/kill-switch-service.js'
import type { FleetService } from '../core/fleet/fleet-service.js'
import type { PolicyService } from '../core/policies/policy-service.js'
import type { HeartbeatService } from '../core/health/heartbeat-service.js'
import type { WebhookService } from '../core/alerts/webhook-service.js'
import type { Metrics } from '../core/metrics.js'
import type { Store } from '../store/store.js'
import type { EgressService } from '../core/egress/egress-service.js'

/** What routes may call: core services (and the store only for feed/ping). */
export interface Services {
  store: Store
  clock: Clock
  keys: KeyService
  agents: AgentService
  intents: IntentService
  streams: StreamRegistry
  killSwitch: KillSwitchService
  fleet: FleetService
  audit: AuditService
  policies: PolicyService
  heartbeats: HeartbeatService
  webhooks: WebhookService
  metrics: Metrics
  egress: EgressService
  defaults: { leaseMs: number; maxInFlight: number }
}
