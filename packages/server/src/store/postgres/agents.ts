/** PostgreSQL engine, agent rows: registration, the per-agent gate and the fleet lock, listing. */
import { GatewayError } from '../../core/errors.js'
import { newAddressId } from '../../core/ids.js'
import { standingKillRule } from '../../core/fleet/fleet-service.js'
import { agentOrderBy, containsPattern, sortsByCounters } from '../agent-page.js'
import {
  type AgentPageQuery,
  type AgentRow,
  type AgentSelection,
  type AgentUpdateInput,
  DEFAULT_POLICY_OWNER,
  type FleetKillRow,
  type HealthStatus,
  type MeshEventDraft,
} from '../store.js'
import { KILL, recordKill } from './kill.js'
import { queueAudit, queueMeshEvent } from './audit.js'
import { LOCK_AGENT, LOCK_CLASS, LOCK_FLEET, type PgDb, type Tx } from './tx.js'

export const AGENT_INSERT = `INSERT INTO agents (address_id, address, display_name, metadata, created_at, killed_at, kill_reason, kill_actor, resumed_at, registered_at, labels)
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (address) DO NOTHING`
/** The agents' own policies, then the defaults (core picks the effective ones per agent). */
export const EFFECTIVE_POLICIES = `SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at FROM (
    SELECT policy_id, address_id, kind, spec, enabled, version, created_at, updated_at, 0 AS src, seqno AS ord
    FROM policies WHERE address_id = ANY($1::text[])
    UNION ALL
    SELECT policy_id, '${DEFAULT_POLICY_OWNER}', kind, spec, enabled, version, created_at, updated_at, 1, position FROM default_policies
  ) p ORDER BY src, ord`

export const AGENTS_BY_PREFIX = 'SELECT * FROM agents WHERE substr(address, 1, $1) = $2 ORDER BY address'

export async function getAgentById(db: PgDb, addressId: string): Promise<AgentRow | undefined> {
  return db.readOne<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [addressId])
}

export async function getAgentByAddress(db: PgDb, address: string): Promise<AgentRow | undefined> {
  return db.readOne<AgentRow>('SELECT * FROM agents WHERE address = $1', [address])
}

export async function registerAgent(db: PgDb, agent: AgentRow, event: MeshEventDraft): Promise<AgentRow | undefined> {
  return db.tx(async (tx) => {
    await fleetShared(db, tx)
    await gate(db, tx, [agent.address], new Set([agent.address]))
    const inserted = await tx.run(AGENT_INSERT, [
      agent.address_id,
      agent.address,
      agent.display_name,
      agent.metadata,
      agent.created_at,
      agent.killed_at,
      agent.kill_reason,
      agent.kill_actor,
      agent.resumed_at,
      agent.registered_at,
      agent.labels,
    ])
    // A row that exists only as a recipient of intents is registered now (keeping its id).
    const row =
      inserted === 1
        ? agent
        : await tx.one<AgentRow>(
            `UPDATE agents SET registered_at = $2, display_name = $3, metadata = $4, labels = $5
             WHERE address = $1 AND registered_at IS NULL RETURNING *`,
            [agent.address, agent.registered_at, agent.display_name, agent.metadata, agent.labels],
          )
    if (row === undefined) return undefined
    queueMeshEvent(db, tx, { ...event, address_id: row.address_id })
    return appeared(db, tx, row, agent.created_at)
  })
}

export function remember(db: PgDb, addresses: readonly string[]): void {
  if (db.known.size > 200_000) db.known.clear()
  for (const a of addresses) db.known.add(a)
}

export async function fleetShared(db: PgDb, tx: Tx): Promise<void> {
  if (tx.fleetLocked) return
  await tx.run('SELECT pg_advisory_xact_lock_shared($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
  tx.fleetLocked = true
}

/**
 * An agent row that was just written: it takes the default policies (policy_version 1) and any
 * standing fleet kill. The caller holds the fleet lock shared, so the default set cannot
 * change between this read and the commit.
 */
export async function appeared(db: PgDb, tx: Tx, row: AgentRow, now: number): Promise<AgentRow> {
  await fleetShared(db, tx)
  const adopted = await tx.one<AgentRow>(
    `UPDATE agents SET policy_version = 1
     WHERE address_id = $1 AND policy_version = 0 AND EXISTS (SELECT 1 FROM default_policies) RETURNING *`,
    [row.address_id],
  )
  return applyStanding(db, tx, adopted ?? row, now)
}

/** A new or relabelled agent under a standing fleet kill is killed in the same transaction. */
export async function applyStanding(db: PgDb, tx: Tx, row: AgentRow, now: number): Promise<AgentRow> {
  if (row.killed_at !== null) return row
  await fleetShared(db, tx)
  const standing = await tx.rows<FleetKillRow>('SELECT * FROM fleet_kills WHERE ended_at IS NULL ORDER BY created_at, fleet_kill_id')
  if (standing.length === 0) return row
  const kill = standingKillRule(row, standing, now)
  if (kill === null) return row
  const after = (await tx.one<AgentRow>(KILL, [row.address_id, now, kill.reason, kill.actor])) as AgentRow
  return recordKill(db, tx, row, after, { policy_id: null, record: kill.record })
}

export async function selectAgents(db: PgDb, selection: AgentSelection): Promise<AgentRow[]> {
  return (await db.read<AgentRow>(AGENTS_BY_PREFIX, [selection.prefix.length, selection.prefix])).filter(selection.matches)
}

export async function updateAgent(db: PgDb, input: AgentUpdateInput): Promise<{ agent: AgentRow; changed: boolean }> {
  return db.tx(async (tx) => {
    await fleetShared(db, tx)
    await gateById(db, tx, input.address_id, true)
    const before = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [input.address_id])
    if (!before) throw new GatewayError('not_found', `agent ${input.address_id} not found`)
    const patch = input.build(before)
    if (patch === null) return { agent: before, changed: false }
    const after = (await tx.one<AgentRow>(
      'UPDATE agents SET display_name = $2, labels = $3, metadata = $4 WHERE address_id = $1 RETURNING *',
      [before.address_id, patch.display_name, patch.labels, patch.metadata],
    )) as AgentRow
    const { audit, event } = input.record(before, after)
    queueAudit(db, tx, audit)
    queueMeshEvent(db, tx, event)
    return { agent: after.labels === before.labels ? after : await applyStanding(db, tx, after, input.now), changed: true }
  })
}

export async function listAgents(db: PgDb, limit: number, health: HealthStatus | null): Promise<AgentRow[]> {
  if (health === null) return db.read<AgentRow>('SELECT * FROM agents ORDER BY created_at, address LIMIT $1', [limit])
  if (health === 'killed') {
    return db.read<AgentRow>('SELECT * FROM agents WHERE killed_at IS NOT NULL ORDER BY created_at, address LIMIT $1', [limit])
  }
  return db.read<AgentRow>(
    'SELECT * FROM agents WHERE killed_at IS NULL AND health_status = $1 ORDER BY created_at, address LIMIT $2',
    [health, limit],
  )
}

export async function listAgentsPage(db: PgDb, query: AgentPageQuery): Promise<{ agents: AgentRow[]; total: number }> {
  const where: string[] = []
  const params: unknown[] = []
  if (query.health === 'killed') where.push('a.killed_at IS NOT NULL')
  else if (query.health !== null) {
    params.push(query.health)
    where.push(`a.killed_at IS NULL AND a.health_status = $${params.length}`)
  }
  if (query.search !== null) {
    params.push(containsPattern(query.search))
    where.push(`(a.address ILIKE $${params.length} ESCAPE '\\' OR a.display_name ILIKE $${params.length} ESCAPE '\\')`)
  }
  const filter = where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`
  const page = [...params]
  let join = ''
  if (sortsByCounters(query)) {
    page.push(query.from_day, query.to_day)
    const [from, to] = [`$${page.length - 1}`, `$${page.length}`]
    join = `LEFT JOIN (SELECT address_id, sum(sent) + sum(received) AS intents, sum(cost_usd) AS cost FROM (
          SELECT address_id, sent, received, cost_usd FROM counters_day WHERE day >= ${from} AND day <= ${to}
          UNION ALL
          SELECT address_id, sent, received, 0 FROM counter_shards WHERE hour >= ${from} || 'T00' AND hour <= ${to} || 'T23') u
        GROUP BY address_id) c ON c.address_id = a.address_id`
  }
  page.push(query.limit, query.offset)
  const [agents, counted] = await Promise.all([
    db.read<AgentRow>(
      `SELECT a.* FROM agents a ${join} ${filter} ORDER BY ${agentOrderBy(query)} LIMIT $${page.length - 1} OFFSET $${page.length}`,
      page,
    ),
    db.readOne<{ n: number }>(`SELECT count(*) AS n FROM agents a ${filter}`, params),
  ])
  return { agents, total: (counted as { n: number }).n }
}

/**
 * The fair gate in front of agent rows: a transaction advisory lock per agent (keyed by
 * address) — shared for accepts, deliveries, resolves and holds, exclusive for kill, resume,
 * policy writes, quarantines and heartbeats — always in address order. Advisory locks are
 * queued fairly: once a kill asks, later accepts wait behind it, and it runs as soon as the
 * in-flight ones commit. It is the only lock readers take on an agent: they read the row in
 * a statement after the gate, so they see every write committed before it (READ COMMITTED
 * takes a new snapshot per statement), and no writer can commit while they hold it.
 * A shared gate goes with the transaction's next statement (Tx#lock: same round trip, still
 * before that statement's snapshot); readers do nothing between but decide on what they read.
 * An exclusive gate is waited for here: writers read the clock once they hold it (a kill's
 * killed_at must not be before anything committed ahead of it).
 */
export async function gate(db: PgDb, tx: Tx, addresses: string[], exclusive: ReadonlySet<string> = new Set()): Promise<void> {
  const sorted = [...new Set(addresses)].sort()
  if (exclusive.size === 0) {
    tx.lock('SELECT pg_advisory_xact_lock_shared($1::int, hashtext(a)) FROM unnest($2::text[]) AS a', [LOCK_AGENT, sorted])
    return
  }
  for (const address of sorted) {
    const fn = exclusive.has(address) ? 'pg_advisory_xact_lock' : 'pg_advisory_xact_lock_shared'
    await tx.run(`SELECT ${fn}($1::int, hashtext($2))`, [LOCK_AGENT, address])
  }
}

/** `#gate` for one agent known by address_id (nothing is locked when it does not exist). */
export async function gateById(db: PgDb, tx: Tx, addressId: string, exclusive: boolean): Promise<void> {
  if (!exclusive) {
    tx.lock('SELECT pg_advisory_xact_lock_shared($1::int, hashtext(address)) FROM agents WHERE address_id = $2', [LOCK_AGENT, addressId])
    return
  }
  await tx.run('SELECT pg_advisory_xact_lock($1::int, hashtext(address)) FROM agents WHERE address_id = $2', [LOCK_AGENT, addressId])
}

/**
 * Registers the addresses that are new (in address order, so concurrent first sends
 * between two new agents cannot deadlock) and returns the rows. Read after the caller's
 * gate: a kill that committed first is seen, a later one waits for this transaction.
 */
export async function ensureAgents(db: PgDb, tx: Tx, addresses: string[], now: number, register: readonly string[] = []): Promise<Map<string, AgentRow>> {
  const unique = [...new Set(addresses)].sort()
  const select = 'SELECT * FROM agents WHERE address = ANY($1::text[])'
  const found = new Map((await tx.rows<AgentRow>(select, [unique])).map((r) => [r.address, r]))
  // A recipient alone is not registered; a sender or a key's agent is (once).
  const unmarked = register.filter((a) => found.get(a)?.registered_at === null)
  if (unmarked.length > 0) {
    await tx.run('UPDATE agents SET registered_at = $2 WHERE address = ANY($1::text[]) AND registered_at IS NULL', [unmarked, now])
    for (const a of unmarked) found.set(a, { ...(found.get(a) as AgentRow), registered_at: now })
  }
  const missing = unique.filter((a) => !found.has(a))
  remember(db, [...found.keys()])
  if (missing.length === 0) return found
  // Callers take the fleet lock before their gates when an address is not known to exist;
  // this is the safety net for a caller that did not (its order could deadlock, then retry).
  await fleetShared(db, tx)
  // New rows are invisible to others until commit; a concurrent insert of the same address
  // waits for this transaction and then does nothing.
  const inserted = new Set(
    (
      await tx.rows<{ address: string }>(
        `INSERT INTO agents (address_id, address, created_at, registered_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) ON CONFLICT (address) DO NOTHING
         RETURNING address`,
        [missing.map(() => newAddressId()), missing, missing.map(() => now), missing.map((a) => (register.includes(a) ? now : null))],
      )
    ).map((r) => r.address),
  )
  for (const row of await tx.rows<AgentRow>(select, [missing])) {
    found.set(row.address, inserted.has(row.address) ? await appeared(db, tx, row, now) : row)
  }
  // A concurrent send inserted one of them first, as a mere recipient.
  const late = register.filter((a) => found.get(a)?.registered_at === null)
  if (late.length > 0) {
    await tx.run('UPDATE agents SET registered_at = $2 WHERE address = ANY($1::text[]) AND registered_at IS NULL', [late, now])
    for (const a of late) found.set(a, { ...(found.get(a) as AgentRow), registered_at: now })
  }
  return found
}
