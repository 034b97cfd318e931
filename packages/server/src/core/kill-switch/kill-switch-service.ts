import type {
  AgentRow,
  InstanceQuarantineRow,
  KillInput,
  LiftQuarantineInput,
  QuarantineInput,
  ResumeInput,
  Store,
} from '../../store/store.js'
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

  /**
   * Quarantines one instance (kill of one instance): from the commit on, on every replica, its
   * streams are cut and it can no longer receive, ack or resolve, nor send naming itself in
   * `x-instance-id`; its leased intents go back to the queue at once for its siblings. The
   * instance may never have been seen. A repeat is a no-op (`changed: false`, no audit).
   */
  async quarantineInstance(
    actor: KillActor,
    ref: string,
    instanceId: string,
    options: { reason?: string | undefined } = {},
  ): Promise<{ agent: AgentRow; quarantine: InstanceQuarantineRow; changed: boolean; requeued: number }> {
    const target = await this.#agents.resolve(ref)
    const now = this.#clock.now()
    const reason = options.reason ?? null
    return this.#store.quarantineInstance({
      address_id: target.address_id,
      instance_id: instanceId,
      now,
      actor: actorId(actor),
      reason,
      record: quarantineRecord(actor, now, reason),
    })
  }

  /** Lifts an instance's quarantine; lifting one that stands for no one is a no-op. */
  async liftQuarantine(
    actor: KillActor,
    ref: string,
    instanceId: string,
    options: { reason?: string | undefined } = {},
  ): Promise<{ agent: AgentRow; changed: boolean; lifted: InstanceQuarantineRow | null; at: number }> {
    const target = await this.#agents.resolve(ref)
    const now = this.#clock.now()
    const reason = options.reason ?? null
    const result = await this.#store.liftQuarantine({
      address_id: target.address_id,
      instance_id: instanceId,
      now,
      actor: actorId(actor),
      reason,
      record: liftRecord(actor, now, reason),
    })
    return { ...result, at: now }
  }

  /** The standing quarantine of one instance, or null (a read: the transactions re-check). */
  async quarantineOf(addressId: string, instanceId: string): Promise<InstanceQuarantineRow | null> {
    return (await this.#store.getQuarantine(addressId, instanceId)) ?? null
  }

  /** An agent's standing quarantines. */
  async quarantines(addressId: string): Promise<InstanceQuarantineRow[]> {
    return this.#store.listQuarantines(addressId)
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

const quarantineState = (q: InstanceQuarantineRow | null) =>
  q === null
    ? { quarantined: false }
    : { quarantined: true, quarantined_at: iso(q.quarantined_at), actor: q.actor, reason: q.reason }

/** The audit entry (`instance.kill`) and mesh event (`instance.quarantined`) of a quarantine. */
export function quarantineRecord(actor: KillActor, now: number, reason: string | null): QuarantineInput['record'] {
  return (agent, quarantine, requeued) => ({
    audit: {
      at: iso(now),
      actor: actorId(actor),
      action: 'instance.kill',
      target: agent.address,
      reason,
      before: { instance_id: quarantine.instance_id, ...quarantineState(null) },
      after: { instance_id: quarantine.instance_id, ...quarantineState(quarantine), requeued },
    },
    event: {
      address_id: agent.address_id,
      address: agent.address,
      event_type: 'instance.quarantined',
      details: { instance_id: quarantine.instance_id, reason, requeued },
      actor_id: actorId(actor),
      created_at: now,
    },
  })
}

/** The audit entry (`instance.resume`) and mesh event (`instance.resumed`) of a lifted quarantine. */
export function liftRecord(actor: KillActor, now: number, reason: string | null): LiftQuarantineInput['record'] {
  return (agent, lifted) => ({
    audit: {
      at: iso(now),
      actor: actorId(actor),
      action: 'instance.resume',
      target: agent.address,
      reason,
      before: { instance_id: lifted.instance_id, ...quarantineState(lifted) },
      after: { instance_id: lifted.instance_id, ...quarantineState(null) },
    },
    event: {
      address_id: agent.address_id,
      address: agent.address,
      event_type: 'instance.resumed',
      details: { instance_id: lifted.instance_id, reason },
      actor_id: actorId(actor),
      created_at: now,
    },
  })
}
