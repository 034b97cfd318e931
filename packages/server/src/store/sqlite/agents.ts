/**
 * SQLite engine: agent rows: registration, updates, listings, the standing fleet kill on appearance.
 * Functions of SqliteStore's context, run inside its write queue where they write.
 */
import { GatewayError } from '../../core/errors.js'
import { standingKillRule } from '../../core/fleet/fleet-service.js'
import type { Change } from '../change-feed.js'
import { agentOrderBy, containsPattern, sortsByCounters } from '../agent-page.js'
import type { AgentPageQuery, AgentSelection, AgentUpdateInput, FleetKillRow, HealthStatus, MeshEventDraft, AgentRow } from '../store.js'
import { newAddressId } from '../../core/ids.js'
import { blankAgent } from '../../core/agents/agent-row.js'
import type { SqliteContext } from './context.js'

// ---- agents ----
export async function getAgentById(ctx: SqliteContext, addressId: string): Promise<AgentRow | undefined> {
  return ctx.agentById(addressId)
}

export async function getAgentByAddress(ctx: SqliteContext, address: string): Promise<AgentRow | undefined> {
  return ctx.agentByAddress(address)
}

export async function registerAgent(ctx: SqliteContext, agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
  return ctx.write((changes) => {
    // A row that exists only as a recipient of intents is registered now (keeping its id).
    const row = ctx.q.insertAgent.run(agent).changes === 1 ? agent : (ctx.q.claimUnregistered.get(agent) as AgentRow | undefined)
    if (row === undefined) return undefined
    ctx.meshEvent({ ...event, address_id: row.address_id }, changes)
    return ctx.appeared(row, agent.created_at, changes)
  })
}

export async function selectAgents(ctx: SqliteContext, selection: AgentSelection): Promise<AgentRow[]> {
  return ctx.select(selection)
}

export function select(ctx: SqliteContext, selection: AgentSelection): AgentRow[] {
  const rows = ctx.q.agentsByPrefix.all(selection.prefix.length, selection.prefix) as AgentRow[]
  return rows.filter(selection.matches)
}

/** A new or relabelled agent under a standing fleet kill is killed in the same transaction. */
/** An agent row that was just written: it takes the default policies and any standing fleet kill. */
export function appeared(ctx: SqliteContext, row: AgentRow, now: number, changes: Change[]): AgentRow {
  const adopted = (ctx.q.adoptDefaults.get(row.address_id) as AgentRow | undefined) ?? row
  return ctx.applyStanding(adopted, now, changes)
}

export function applyStanding(ctx: SqliteContext, row: AgentRow, now: number, changes: Change[]): AgentRow {
  if (row.killed_at !== null) return row
  const standing = ctx.q.standingFleetKills.all() as FleetKillRow[]
  if (standing.length === 0) return row
  const kill = standingKillRule(row, standing, now)
  if (kill === null) return row
  const after = ctx.q.killAgent.get({ address_id: row.address_id, now, reason: kill.reason, actor: kill.actor }) as AgentRow
  return ctx.recordKill(row, after, { policy_id: null, record: kill.record }, changes)
}

export async function updateAgent(ctx: SqliteContext, input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
  return ctx.write((changes) => {
    const before = ctx.agentById(input.address_id)
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const patch = input.build(before)
    if (patch === null) return { agent: before, changed: false }
    const after = ctx.q.updateAgent.get({ ...patch, address_id: before.address_id }) as AgentRow
    const { audit, event } = input.record(before, after)
    ctx.audit(audit)
    ctx.meshEvent(event, changes)
    return { agent: after.labels === before.labels ? after : ctx.applyStanding(after, input.now, changes), changed: true }
  })
}

export async function listAgents(ctx: SqliteContext, limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
  if (health === null) return ctx.q.listAgents.all(limit) as AgentRow[]
  if (health === 'killed') return ctx.q.listAgentsKilled.all(limit) as AgentRow[]
  return ctx.q.listAgentsByHealth.all(health, limit) as AgentRow[]
}

export async function listAgentsPage(ctx: SqliteContext, query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
  const where: string[] = []
  const params: unknown[] = []
  if (query.health === 'killed') where.push('a.killed_at IS NOT NULL')
  else if (query.health !== null) {
    where.push('a.killed_at IS NULL AND a.health_status = ?')
    params.push(query.health)
  }
  if (query.search !== null) {
    // LIKE is case-insensitive (ASCII) in SQLite.
    where.push("(a.address LIKE ? ESCAPE '\\' OR a.display_name LIKE ? ESCAPE '\\')")
    const pattern = containsPattern(query.search)
    params.push(pattern, pattern)
  }
  const filter = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`
  const total = (ctx.adhoc(`SELECT count(*) AS n FROM agents a ${filter}`).get(...params) as { n: number }).n
  const join = sortsByCounters(query)
    ? `LEFT JOIN (SELECT address_id, sum(sent) + sum(received) AS intents, sum(cost_usd) AS cost FROM counters_day
         WHERE day >= ? AND day <= ? GROUP BY address_id) c ON c.address_id = a.address_id`
    : ''
  const agents = ctx.db
    .prepare(`SELECT a.* FROM agents a ${join} ${filter} ORDER BY ${agentOrderBy(query)} LIMIT ? OFFSET ?`)
    .all(...(join === '' ? [] : [query.from_day, query.to_day]), ...params, query.limit, query.offset) as AgentRow[]
  return { agents, total }
}

/** The agent row, created if missing; `register` marks it registered (a recipient alone is not). */
export function ensureAgent(ctx: SqliteContext, address: string, now: number, register: boolean, changes: Change[]): AgentRow {
  const existing = ctx.agentByAddress(address)
  if (existing) {
    if (!register || existing.registered_at !== null) return existing
    ctx.q.markRegistered.run(now, existing.address_id)
    return { ...existing, registered_at: now }
  }
  const row = { ...blankAgent(address, newAddressId(), now), registered_at: register ? now : null }
  ctx.q.insertAgent.run(row)
  return ctx.appeared(row, now, changes)
}
