import type { AgentRow, Store } from '../../store/store.js'
import { iso, type Clock } from '../clock.js'
import type { AgentService } from '../agents/agent-service.js'

export interface KillOptions {
  reason?: string | undefined
  cancel_pending?: boolean | undefined
}

/** Who pulls the switch: an operator's key, or a policy (auto-kill). */
export type KillActor = { kind: 'key'; key_id: string } | { kind: 'policy'; policy_id: string }

const actorId = (actor: KillActor): string =>
  actor.kind === 'key' ? `key:${actor.key_id}` : `policy:${actor.policy_id}`

const HOLD_BATCH = 500

const agentState = (a: AgentRow) => ({
  health_status: a.killed_at === null ? 'unknown' : 'killed',
  killed_at: a.killed_at === null ? null : iso(a.killed_at),
  kill_reason: a.kill_reason,
})

/**
 * Kill and resume (DESIGN §2.1, §2.4, §2.5). The kill commits in one transaction (agent row,
 * audit entry, mesh event, change notification); from that commit on, every accept, delivery,
 * ack and resolve transaction sees it. Holding the backlog follows in batches; correctness
 * never depends on it because those transactions read the agent rows.
 */
export class KillSwitchService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #agents: AgentService
  readonly #resumeRate: number

  constructor(store: Store, clock: Clock, agents: AgentService, options: { resumeRatePerSecond: number }) {
    this.#store = store
    this.#clock = clock
    this.#agents = agents
    this.#resumeRate = options.resumeRatePerSecond
  }

  async kill(
    actor: KillActor,
    ref: string,
    options: KillOptions = {},
  ): Promise<{ agent: AgentRow; changed: boolean; held_intents: number }> {
    const target = await this.#agents.resolve(ref)
    return this.killAgent(actor, target.address_id, options)
  }

  /** Kill by address_id (also the auto-kill path of policies). */
  async killAgent(
    actor: KillActor,
    addressId: string,
    options: KillOptions = {},
  ): Promise<{ agent: AgentRow; changed: boolean; held_intents: number }> {
    const now = this.#clock.now()
    const reason = options.reason ?? null
    const auto = actor.kind === 'policy'
    const { agent, changed } = await this.#store.killAgent({
      address_id: addressId,
      now,
      actor: actorId(actor),
      reason,
      record: (before, after) => ({
        audit: {
          at: iso(now),
          actor: actorId(actor),
          action: auto ? 'agent.auto_kill' : 'agent.kill',
          target: after.address,
          reason,
          before: agentState(before),
          after: { ...agentState(after), cancel_pending: options.cancel_pending === true },
        },
        event: {
          address_id: after.address_id,
          address: after.address,
          event_type: auto ? 'agent.auto_killed' : 'agent.killed',
          details: { reason, cancel_pending: options.cancel_pending === true },
          actor_id: actorId(actor),
          created_at: now,
        },
      }),
    })
    if (!changed) return { agent, changed, held_intents: 0 }
    let held = 0
    for (;;) {
      const batch = await this.#store.holdBacklog({
        address_id: addressId,
        now,
        actor: actorId(actor),
        reason,
        cancel_pending: options.cancel_pending === true,
        limit: HOLD_BATCH,
      })
      held += batch.held
      if (batch.held + batch.canceled < HOLD_BATCH) break
    }
    return { agent, changed, held_intents: held }
  }

  async resume(
    actor: KillActor,
    ref: string,
    options: { reason?: string | undefined } = {},
  ): Promise<{ agent: AgentRow; changed: boolean; redelivering: number }> {
    const target = await this.#agents.resolve(ref)
    const now = this.#clock.now()
    const reason = options.reason ?? null
    return this.#store.resumeAgent({
      address_id: target.address_id,
      now,
      actor: actorId(actor),
      reason,
      rate_per_second: this.#resumeRate,
      record: (before, after, redelivering) => ({
        audit: {
          at: iso(now),
          actor: actorId(actor),
          action: 'agent.resume',
          target: after.address,
          reason,
          before: agentState(before),
          after: { ...agentState(after), redelivering },
        },
        event: {
          address_id: after.address_id,
          address: after.address,
          event_type: 'agent.resumed',
          details: { reason, redelivering },
          actor_id: actorId(actor),
          created_at: now,
        },
      }),
    })
  }
}
