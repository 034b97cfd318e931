import type { AgentRow, IntentChange, IntentRow, IntentStatus, NewIntent, Store } from '../../store/store.js'
import { assertActsFor, isStaff, type Principal } from '../auth/principal.js'
import { canonicalJson } from '../canonical-json.js'
import type { Clock } from '../clock.js'
import { GatewayError, conflict, forbidden, notFound } from '../errors.js'
import { newIntentId, sha256Hex } from '../ids.js'
import { acceptRule, settleRule } from '../kill-switch/rules.js'
import type { KillSwitchService } from '../kill-switch/kill-switch-service.js'
import { costRule, noFindings } from '../policies/cost-rule.js'
import { handleBreach } from '../policies/breach.js'
import { countWould, recordWouldKills, wouldEvents } from '../policies/monitor.js'
import { PolicyBreach, type PolicyEngine, type WouldDecision } from '../policies/policy-engine.js'
import type { AcceptDecision } from '../../store/store.js'
import type { Metrics } from '../metrics.js'

export interface CreateIntentInput {
  intent_type: string
  to_agent: string
  payload: Record<string, unknown>
  correlation_id?: string | undefined
  from_agent?: string | undefined
  reply_to?: string | undefined
  deadline_at?: string | undefined
  max_delivery_attempts?: number | undefined
}

export interface ResolveInput {
  status: 'COMPLETED' | 'FAILED' | 'CANCELED'
  result?: unknown
  error?: unknown
  reason?: string | undefined
  cost_usd?: number | undefined
}

export interface IntentDefaults {
  maxDeliveryAttempts: number
  leaseMs: number
  /** Sending to an address that was never registered is 404 instead of a warning. */
  requireRegisteredRecipients?: boolean
}

const TERMINAL = new Set<IntentStatus>(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'])
export const isTerminal = (status: IntentStatus): boolean => TERMINAL.has(status)

const RESOLVE_EVENT = { COMPLETED: 'intent.completed', FAILED: 'intent.failed', CANCELED: 'intent.canceled' } as const

const actorOf = (p: Principal): string => `key:${p.key_id}`

/** Intents: accept, read, acknowledge, resolve. Every write is one store transaction. */
export class IntentService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #defaults: IntentDefaults
  readonly #policies: PolicyEngine
  readonly #killSwitch: KillSwitchService

  readonly #metrics: Metrics | undefined

  constructor(
    deps: { store: Store; clock: Clock; policies: PolicyEngine; killSwitch: KillSwitchService; metrics?: Metrics },
    defaults: IntentDefaults,
  ) {
    this.#metrics = deps.metrics
    this.#store = deps.store
    this.#clock = deps.clock
    this.#policies = deps.policies
    this.#killSwitch = deps.killSwitch
    this.#defaults = defaults
  }

  /**
   * The accept decision, run inside the accepting transaction: the recipient rule, the kill rule,
   * then policies. `seen` learns whether the recipient was ever registered; without it (the
   * reply_to completion of a resolve) the recipient rule does not apply: the sender chose it.
   * `monitored` receives the would-be decisions of monitored policies of the last run; their
   * mesh events are written with the intent.
   */
  #acceptDecision(
    intentType: string,
    now: number,
    monitored: WouldDecision[],
    seen?: (registered: boolean) => void,
  ): AcceptDecision {
    return (parties) => {
      monitored.length = 0
      const registered = parties.to.registered_at !== null
      if (seen && !registered && this.#defaults.requireRegisteredRecipients) {
        // Rolled back with the transaction: a refused send does not create the address either.
        throw new GatewayError(
          'not_found',
          `recipient ${parties.to.address} is not a registered agent (CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS is on); register it or bind a key to it first`,
          { details: { field: 'to_agent', to_agent: parties.to.address } },
        )
      }
      seen?.(registered)
      acceptRule(parties)
      monitored.push(...this.#policies.enforce(parties, intentType, now))
      return wouldEvents(monitored, { intent_type: intentType }, now)
    }
  }

  /**
   * Counts the outcome; a breach with `on_breach: kill` auto-kills the policy's owner (its own
   * transaction) before the rejection is answered; a blocking breach is noted once per window.
   */
  async #autoKillOn<T>(work: Promise<T>, now: number, intentType: string, monitored: readonly WouldDecision[]): Promise<T> {
    try {
      const result = await work
      this.#metrics?.intents.inc({ result: 'accepted', reason: '' })
      countWould(this.#metrics, monitored)
      return result
    } catch (error) {
      this.#metrics?.intents.inc({ result: 'rejected', reason: error instanceof GatewayError ? error.code : 'error' })
      // Refused by an enforced policy: the monitored policies' verdicts were rolled back with the
      // transaction, so they are recorded after it.
      if (error instanceof PolicyBreach) await this.#onBreach(error, now, intentType)
      throw error
    }
  }

  async #onBreach(breach: PolicyBreach, now: number, intentType: string): Promise<void> {
    await handleBreach({ store: this.#store, killSwitch: this.#killSwitch, metrics: this.#metrics }, breach, now, { intent_type: intentType })
  }

  async create(
    principal: Principal,
    input: CreateIntentInput,
    meta: {
      idempotencyKey?: string | undefined
      traceId?: string | undefined
      /** `x-instance-id` of the send when the request carried one (null: not attributable). */
      instanceId?: string | null | undefined
    },
  ): Promise<{ intent: IntentRow; replayed: boolean; recipientRegistered: boolean }> {
    const from = this.#sender(principal, input.from_agent)
    const now = this.#clock.now()
    const intent: NewIntent = {
      intent_id: newIntentId(),
      intent_type: input.intent_type,
      from_agent: from,
      to_agent: input.to_agent,
      payload: JSON.stringify(input.payload),
      correlation_id: input.correlation_id ?? null,
      reply_to: input.reply_to ?? null,
      deadline_at: input.deadline_at === undefined ? null : Date.parse(input.deadline_at),
      max_delivery_attempts: input.max_delivery_attempts ?? this.#defaults.maxDeliveryAttempts,
      trace_id: meta.traceId ?? null,
    }
    const idempotency =
      meta.idempotencyKey === undefined
        ? null
        : { key: meta.idempotencyKey, request_hash: sha256Hex(canonicalJson({ ...input, from_agent: from })) }
    let recipientRegistered = true
    const monitored: WouldDecision[] = []
    const accepted = await this.#autoKillOn(
      this.#store.acceptIntent({
        intent,
        actor: actorOf(principal),
        now,
        idempotency,
        // Only an agent key's send is an instance's; staff keys send as the agent, not as a pod.
        from_instance: principal.role === 'agent' ? (meta.instanceId ?? null) : null,
        decide: this.#acceptDecision(intent.intent_type, now, monitored, (registered) => (recipientRegistered = registered)),
        onIdempotencyMismatch: () => {
          throw conflict('this Idempotency-Key was already used with a different request body', {
            idempotency_key: meta.idempotencyKey,
          })
        },
      }),
      now,
      intent.intent_type,
      monitored,
    )
    return { ...accepted, recipientRegistered }
  }

  /** The sending agent: derived from an agent key; named explicitly by staff keys. */
  #sender(principal: Principal, fromAgent: string | undefined): string {
    if (principal.role === 'agent') {
      if (fromAgent !== undefined && fromAgent !== principal.address) {
        throw forbidden(`this agent key sends as ${principal.address}; it may not send as ${fromAgent}`)
      }
      return principal.address as string
    }
    if (principal.role === 'viewer') throw forbidden('a viewer key may not send intents')
    if (fromAgent === undefined) {
      throw new GatewayError('schema_invalid', 'operator and admin keys must name from_agent', {
        details: { field: 'from_agent' },
      })
    }
    return fromAgent
  }

  /** A killed agent reads nothing through the gateway either: not even its held work. */
  async #assertReaderLive(principal: Principal): Promise<void> {
    if (principal.role !== 'agent' || principal.address_id === null) return
    const agent = await this.#store.getAgentById(principal.address_id)
    if (agent) settleRule(agent)
  }

  /** Reads an intent the principal may see: staff, its sender or its recipient. */
  async get(principal: Principal, intentId: string): Promise<IntentRow> {
    await this.#assertReaderLive(principal)
    const row = await this.#store.getIntent(intentId)
    if (!row) throw notFound(`intent ${intentId}`)
    if (
      principal.role === 'agent' &&
      principal.address_id !== row.from_address_id &&
      principal.address_id !== row.to_address_id
    ) {
      // Same answer as a missing intent: an agent key cannot probe others' intent ids.
      throw notFound(`intent ${intentId}`)
    }
    return row
  }

  async events(principal: Principal, intentId: string, since: number, limit = 500) {
    await this.get(principal, intentId)
    return this.#store.listIntentEvents(intentId, since, limit)
  }

  async list(
    principal: Principal,
    query: {
      agent?: string | undefined
      direction?: 'sent' | 'received' | undefined
      status?: IntentStatus | undefined
      limit: number
      after?: string | undefined
    },
  ): Promise<IntentRow[]> {
    await this.#assertReaderLive(principal)
    let addressId: string
    if (query.agent === undefined) {
      if (principal.role !== 'agent') {
        throw new GatewayError('schema_invalid', 'agent is required', { details: { field: 'agent' } })
      }
      addressId = principal.address_id as string
    } else {
      const agent = await this.#store.getAgentByAddress(query.agent)
      if (!agent) throw notFound(`agent ${query.agent}`)
      assertActsFor(principal, agent.address_id, "read another agent's intents")
      addressId = agent.address_id
    }
    return this.#store.listIntents({
      address_id: addressId,
      direction: query.direction ?? 'both',
      status: query.status ?? null,
      limit: query.limit,
      after: query.after ?? null,
    })
  }

  /**
   * `instanceId` is the acting instance (`x-instance-id`, "default" when absent) of an agent key;
   * a quarantined one is refused in the transaction (settleRule).
   */
  async ack(principal: Principal, intentId: string, instanceId: string | null = null) {
    const now = this.#clock.now()
    return this.#store.updateIntent({
      intent_id: intentId,
      now,
      actor: actorOf(principal),
      instance_id: principal.role === 'agent' ? instanceId : null,
      decide: ({ intent, recipient, quarantine }): IntentChange => {
        this.#assertRecipient(principal, intent)
        // The refusal comes before the intent's state: a quarantined instance acking an intent
        // its sibling already finished is told it is quarantined, not that the intent is done.
        settleRule(recipient, quarantine)
        if (isTerminal(intent.status)) throw conflict(`intent is already ${intent.status}`)
        if (intent.delivery_state !== 'leased') {
          throw conflict(`intent is ${intent.delivery_state}, not delivered: only a delivered intent can be acknowledged`)
        }
        const first = intent.status !== 'ACKNOWLEDGED'
        return {
          status: 'ACKNOWLEDGED',
          delivery_state: 'leased',
          lease_expires_at: now + (intent.lease_ms ?? this.#defaults.leaseMs),
          event_type: first ? 'intent.acknowledged' : null,
          event_details: first ? { instance_id: intent.lease_instance } : null,
        }
      },
    })
  }

  async resolve(principal: Principal, intentId: string, input: ResolveInput, instanceId: string | null = null) {
    const now = this.#clock.now()
    if (principal.role !== 'agent' && input.status !== 'CANCELED') {
      throw forbidden('operator keys may only resolve an intent with status CANCELED')
    }
    const found = noFindings()
    const followUpMonitored: WouldDecision[] = []
    let resolver: AgentRow | null = null
    const result = await this.#store.updateIntent({
      intent_id: intentId,
      now,
      actor: actorOf(principal),
      instance_id: principal.role === 'agent' ? instanceId : null,
      cost_rule: costRule(this.#policies, now, found),
      decide: ({ intent, recipient, quarantine }): IntentChange => {
        this.#assertRecipient(principal, intent)
        resolver = recipient
        // Killed or quarantined first, as for ack: the sibling that took over a quarantined
        // instance's intent may have resolved it before the quarantined instance's resolve
        // arrives, and that instance must still get `agent_killed` (its SDK stops on it), not 409.
        if (principal.role === 'agent') settleRule(recipient, quarantine)
        if (isTerminal(intent.status)) {
          throw conflict(`intent is already ${intent.status}; a terminal status cannot change`, { status: intent.status })
        }
        // Held work (a killed sender's undelivered output, or work held for a resume) is not
        // the recipient's to act on until it is delivered.
        if (principal.role === 'agent' && intent.delivery_state === 'held') {
          throw conflict('this intent is held by a kill and has not been delivered; it cannot be resolved yet')
        }
        const result = input.result === undefined ? null : JSON.stringify(input.result)
        const error = input.error === undefined ? null : JSON.stringify(input.error)
        return {
          status: input.status,
          delivery_state: 'done',
          lease_expires_at: null,
          event_type: RESOLVE_EVENT[input.status],
          event_details: input.reason === undefined ? null : { reason: input.reason },
          result,
          error,
          cost_usd: input.cost_usd ?? null,
          follow_up: intent.reply_to === null ? undefined : this.#completion(intent, input, now, followUpMonitored),
        }
      },
    })
    const k = found.kill
    if (k) await this.#killSwitch.hold(k.address_id, { kind: 'policy', policy_id: k.policy_id }, k.reason)
    const r = resolver as AgentRow | null
    if (r && found.would_kill.length > 0) await recordWouldKills(this.#store, this.#metrics, r, found.would_kill, now)
    // A reply_to completion is the resolver's send: its breach auto-kills or is noted like any other.
    const followUp = result.follow_up
    if (followUp?.accepted) countWould(this.#metrics, followUpMonitored)
    if (followUp && !followUp.accepted && followUp.error instanceof PolicyBreach) {
      await this.#onBreach(followUp.error, now, 'intent.completion.v1')
    }
    return result
  }

  /** The reply_to completion intent, accepted under the same rules as any send. */
  #completion(original: IntentRow, input: ResolveInput, now: number, monitored: WouldDecision[]): IntentChange['follow_up'] {
    const payload: Record<string, unknown> = { intent_id: original.intent_id, status: input.status }
    if (input.status === 'COMPLETED') payload['result'] = input.result ?? null
    else payload['error'] = input.error ?? input.reason ?? null
    return {
      intent: {
        intent_id: newIntentId(),
        intent_type: 'intent.completion.v1',
        from_agent: original.to_agent,
        to_agent: original.reply_to as string,
        payload: JSON.stringify(payload),
        correlation_id: original.correlation_id,
        reply_to: null,
        deadline_at: null,
        max_delivery_attempts: this.#defaults.maxDeliveryAttempts,
        trace_id: original.trace_id,
      },
      decide: this.#acceptDecision('intent.completion.v1', now, monitored),
    }
  }

  #assertRecipient(principal: Principal, intent: IntentRow): void {
    if (principal.role === 'agent' && principal.address_id !== intent.to_address_id) {
      throw forbidden('this intent is not addressed to the agent of this key')
    }
    if (principal.role !== 'agent' && !isStaff(principal, 'operator')) {
      throw forbidden('a viewer key may not change intents')
    }
  }
}
