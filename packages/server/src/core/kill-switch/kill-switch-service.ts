import type { AgentRow, KillInput, ResumeInput, Store } from '../../store/store.js'
import { iso, type Clock } from '../clock.js'
import type { AgentService } from '../agents/agent-service.js'

export interface KillOptions {
  reason?: string | undefined
  cancel_pending?: boolean | undefined
  /** Rechecked on the locked agent row in the kill's transaction (see KillInput.guard). */
  guard?: ((before: AgentRow) => boolean) | undefined
}

/** Who pulls the switch: an operator's key, or a policy (auto-kill). */
export type KillActor = { kind: 'key'; key_id: string } | { kind: 'policy'; policy_id: string }

export const actorId = (actor: KillActor): string =>
  actor.kind === 'key' ? `key:${actor.key_id}` : `policy:${actor.policy_id}`

/** The inverse of actorId (stored actors of fleet kills). */
export const actorOf = (id: string): KillActor =>
  id.startsWith('policy:') ? { kind: 'policy', policy_id: id.slice(7) } : { kind: 'key', key_id: id.replace(/^key:/, '') }

const HOLD_BATCH = 500

/** The audit entry and mesh event of a kill (operator or policy), built from the agent rows. */
export function killRecord(
  actor: KillActor,
  now: number,
  reason: string | null,
  cancelPending: boolean,
  extra: Record<string, unknown> = {},
): KillInput['record'] {
  const auto = actor.kind === 'policy'
  return (before, after) => ({
    audit: {
      at: iso(now),
      actor: actorId(actor),
      action: auto ? 'agent.auto_kill' : 'agent.kill',
      target: after.address,
      reason,
      before: agentState(before),
      after: { ...agentState(after), cancel_pending: cancelPending, ...extra },
    },
    event: {
      address_id: after.address_id,
      address: after.address,
      event_type: auto ? 'agent.auto_killed' : 'agent.killed',
      details: { reason, cancel_pending: cancelPending, ...(auto ? { policy_id: actor.policy_id } : {}), ...extra },
      actor_id: actorId(actor),
      created_at: now,
    },
  })
}

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
    const { agent, changed } = await this.#store.killAgent({
      address_id: addressId,
      now,
      actor: actorId(actor),
      reason,
      policy_id: actor.kind === 'policy' ? actor.policy_id : null,
      clock: () => this.#clock.now(),
      ...(options.guard ? { guard: options.guard } : {}),
      record: killRecord(actor, now, reason, options.cancel_pending === true),
    })
    if (!changed) return { agent, changed, held_intents: 0 }
    const held = await this.hold(addressId, actor, reason, options.cancel_pending === true)
    return { agent, changed, held_intents: held }
  }

  /** Marks a killed agent's backlog held (or cancels its undelivered output), in batches. */
  async hold(addressId: string, actor: KillActor, reason: string | null, cancelPending = false): Promise<number> {
    const now = this.#clock.now()
    let held = 0
    for (;;) {
      const batch = await this.#store.holdBacklog({
        address_id: addressId,
        now,
        actor: actorId(actor),
        reason,
        cancel_pending: cancelPending,
        limit: HOLD_BATCH,
      })
      held += batch.held
      if (batch.held + batch.canceled < HOLD_BATCH) return held
    }
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
      record: resumeRecord(actor, now, reason),
    })
  }

  get resumeRatePerSecond(): number {
    return this.#resumeRate
  }
}

/** The audit entry and mesh event of a resume. */
export function resumeRecord(actor: KillActor, now: number, reason: string | null, extra: Record<string, unknown> = {}): ResumeInput['record'] {
  return (before, after, redelivering) => ({
        audit: {
          at: iso(now),
          actor: actorId(actor),
          action: 'agent.resume',
          target: after.address,
          reason,
          before: agentState(before),
          after: { ...agentState(after), redelivering, ...extra },
        },
        event: {
          address_id: after.address_id,
          address: after.address,
          event_type: 'agent.resumed',
          details: { reason, redelivering, ...extra },
          actor_id: actorId(actor),
          created_at: now,
        },
      })
}
