import type { AgentRow, AgentSelection, FleetKillRow, StandingKillRule, Store } from '../../store/store.js'
import { iso, type Clock } from '../clock.js'
import { GatewayError } from '../errors.js'
import { randomBase62 } from '../ids.js'
import { actorId, actorOf, killRecord, resumeRecord, type KillActor, type KillSwitchService } from '../kill-switch/kill-switch-service.js'
import { compileSelector, describeSelector, type CompiledSelector, type Selector } from './selector.js'

/** At most this many addresses are listed in a fleet audit entry (the count is always exact). */
const AUDIT_LIST_MAX = 1000

/** The rows a selector can match: those starting with its literal address prefix. */
export function selectionOf(compiled: CompiledSelector): AgentSelection {
  const address = compiled.selector.address ?? 'agent://**'
  const star = address.indexOf('*')
  return {
    prefix: star === -1 ? address : address.slice(0, star),
    matches: (agent) => compiled.matches(agent),
  }
}

/**
 * The standing fleet kill an agent falls under when it appears or is relabelled: the oldest
 * standing one whose selector matches it. Stores call this in the transaction writing the row.
 */
export const standingKillRule: StandingKillRule = (agent, standing, now) => {
  if (agent.killed_at !== null) return null
  for (const fk of standing) {
    if (fk.ended_at !== null) continue
    if (!compileSelector(JSON.parse(fk.selector) as Selector).matches(agent)) continue
    return {
      fleet_kill_id: fk.fleet_kill_id,
      actor: fk.actor,
      reason: fk.reason,
      record: killRecord(actorOf(fk.actor), now, fk.reason, false, { fleet_kill_id: fk.fleet_kill_id, standing: true }),
    }
  }
  return null
}

export interface FleetRequest {
  selector: Selector
  reason?: string | undefined
  dry_run?: boolean | undefined
  confirm_all?: boolean | undefined
  cancel_pending?: boolean | undefined
}

const brief = (a: AgentRow) => ({ address_id: a.address_id, address: a.address })

/** Fleet kill rows as the API shows them. */
export function fleetKillView(fk: FleetKillRow): Record<string, unknown> {
  return {
    fleet_kill_id: fk.fleet_kill_id,
    selector: JSON.parse(fk.selector) as Selector,
    reason: fk.reason,
    actor: fk.actor,
    created_at: iso(fk.created_at),
    ended_at: fk.ended_at === null ? null : iso(fk.ended_at),
    ended_by: fk.ended_by,
    standing: fk.ended_at === null,
  }
}

/**
 * Kill and resume by selector (address glob and labels). One transaction kills the whole
 * selection and records the standing fleet kill; the backlogs are held afterwards, per agent,
 * as a single kill does.
 */
export class FleetService {
  readonly #store: Store
  readonly #clock: Clock
  readonly #killSwitch: KillSwitchService

  constructor(store: Store, clock: Clock, killSwitch: KillSwitchService) {
    this.#store = store
    this.#clock = clock
    this.#killSwitch = killSwitch
  }

  /** A selector that matches every agent there is (or could be) needs `confirm_all`. */
  #guard(compiled: CompiledSelector, request: FleetRequest, total: number): (matching: readonly AgentRow[]) => void {
    return (matching) => {
      if (request.confirm_all === true) return
      if (this.#needsConfirm(compiled, matching, total)) {
        throw new GatewayError(
          'invalid_request',
          `the selector ${describeSelector(compiled.selector)} matches every agent (${matching.length}); send confirm_all: true to act on all of them`,
          { details: { field: 'confirm_all', matching: matching.length } },
        )
      }
    }
  }

  async #total(): Promise<number> {
    return Object.values(await this.#store.countAgentsByHealth()).reduce((a, b) => a + b, 0)
  }

  #needsConfirm(compiled: CompiledSelector, matching: readonly AgentRow[], total: number): boolean {
    return compiled.universal || (matching.length > 1 && matching.length >= total)
  }

  async kill(actor: KillActor, request: FleetRequest): Promise<Record<string, unknown>> {
    const compiled = compileSelector(request.selector)
    const selection = selectionOf(compiled)
    const reason = request.reason ?? null
    const total = await this.#total()
    if (request.dry_run === true) {
      const matching = await this.#store.selectAgents(selection)
      return {
        dry_run: true,
        selector: compiled.selector,
        killed: matching.filter((a) => a.killed_at === null).map(brief),
        already_killed: matching.filter((a) => a.killed_at !== null).map(brief),
        requires_confirm_all: this.#needsConfirm(compiled, matching, total),
        fleet_kill_id: null,
      }
    }
    const now = this.#clock.now()
    const fleetKillId = `fk_${randomBase62(20)}`
    const cancelPending = request.cancel_pending === true
    const extra = { fleet_kill_id: fleetKillId }
    const result = await this.#store.killFleet({
      selection,
      now,
      clock: () => this.#clock.now(),
      fleet_kill: {
        fleet_kill_id: fleetKillId,
        selector: compiled.key,
        reason,
        actor: actorId(actor),
        created_at: now,
        ended_at: null,
        ended_by: null,
      },
      guard: this.#guard(compiled, request, total),
      record: killRecord(actor, now, reason, cancelPending, extra),
      summary: (killed, already) => ({
        at: iso(now),
        actor: actorId(actor),
        action: 'fleet.kill',
        target: describeSelector(compiled.selector),
        reason,
        before: null,
        after: {
          fleet_kill_id: fleetKillId,
          selector: compiled.selector,
          killed_count: killed.length,
          already_killed_count: already.length,
          killed: killed.slice(0, AUDIT_LIST_MAX).map((a) => a.address),
          cancel_pending: cancelPending,
        },
      }),
    })
    const killed: Record<string, unknown>[] = []
    for (const agent of result.killed) {
      const held = await this.#killSwitch.hold(agent.address_id, actor, reason, cancelPending)
      killed.push({ ...brief(agent), held_intents: held })
    }
    return { killed, already_killed: result.already_killed.map(brief), fleet_kill_id: fleetKillId }
  }

  async resume(actor: KillActor, request: FleetRequest): Promise<Record<string, unknown>> {
    const compiled = compileSelector(request.selector)
    const selection = selectionOf(compiled)
    const reason = request.reason ?? null
    const total = await this.#total()
    const ends = (fk: FleetKillRow) => fk.selector === compiled.key
    if (request.dry_run === true) {
      const [matching, standing] = await Promise.all([this.#store.selectAgents(selection), this.#store.listFleetKills(true, 1000)])
      return {
        dry_run: true,
        selector: compiled.selector,
        resumed: matching.filter((a) => a.killed_at !== null).map(brief),
        ended_fleet_kills: standing.filter(ends).map((fk) => fk.fleet_kill_id),
        requires_confirm_all: this.#needsConfirm(compiled, matching, total),
      }
    }
    const now = this.#clock.now()
    const result = await this.#store.resumeFleet({
      selection,
      now,
      actor: actorId(actor),
      rate_per_second: this.#killSwitch.resumeRatePerSecond,
      guard: this.#guard(compiled, request, total),
      ends,
      record: resumeRecord(actor, now, reason, { selector: compiled.selector }),
      summary: (resumed, ended) => ({
        at: iso(now),
        actor: actorId(actor),
        action: 'fleet.resume',
        target: describeSelector(compiled.selector),
        reason,
        before: null,
        after: {
          selector: compiled.selector,
          resumed_count: resumed.length,
          resumed: resumed.slice(0, AUDIT_LIST_MAX).map((r) => r.agent.address),
          ended_fleet_kills: ended.map((fk) => fk.fleet_kill_id),
        },
      }),
    })
    return {
      resumed: result.resumed.map((r) => ({ ...brief(r.agent), redelivering: r.redelivering })),
      ended_fleet_kills: result.ended.map((fk) => fk.fleet_kill_id),
    }
  }

  list(standing: boolean, limit: number): Promise<FleetKillRow[]> {
    return this.#store.listFleetKills(standing, limit)
  }
}
