/** PostgreSQL engine, egress calls: admission and settlement. */
import { GatewayError } from '../../core/errors.js'
import type { AgentCounters, AgentRow, EgressAdmitInput, EgressCallRow, EgressSettleInput, PolicyRow } from '../store.js'
import { EFFECTIVE_POLICIES, gateById } from './agents.js'
import { applyCost, countersForDecision } from './counters.js'
import { type PgDb, windowOf } from './tx.js'

export async function admitEgress(db: PgDb, input: EgressAdmitInput): Promise<EgressCallRow> {
  return db.tx(async (tx) => {
    const { call } = input
    // The kill ordering of every other transaction: the gate shared, the row read after it.
    await gateById(db, tx, call.address_id, false)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1', [call.address_id])
    if (!agent) throw new GatewayError('not_found', 'agent not found')
    const id = agent.address_id
    const withPolicies = agent.policy_version !== 0
    const policies = withPolicies ? await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [[id]]) : []
    // With policies, the agent's counter rows are locked before anything is read: admissions
    // and settlements of this agent, on any replica, read-decide-write one after the other.
    const counters = (await countersForDecision(db, tx, [id], policies.length > 0 ? [id] : [], input.now)).get(id) as AgentCounters
    const reserved =
      policies.length === 0
        ? 0
        : ((await tx.one<{ n: number }>(
            "SELECT coalesce(sum(reserved_micro), 0)::bigint AS n FROM egress_calls WHERE address_id = $1 AND day = $2 AND state = 'open'",
            [id, call.day],
          ))?.n ?? 0)
    input.decide({ agent, policies, counters, reserved_micro: Number(reserved) })
    const { day, hour } = windowOf(input.now)
    // The call's row, and — while the agent has policies — its count for egress `rate` policies
    // (the counter rows are locked above then). Without policies nothing is decided on the
    // count, and an upsert of the agent's counter rows would serialize its calls.
    const insert = `INSERT INTO egress_calls (call_id, address_id, upstream, kind, endpoint, model, tool, day, reserved_micro, cost_micro, state, outcome, usage, status, started_at, deadline_at, settled_at)
         VALUES ($1, $2, $3, $10, $4, $5, $11, $6, $7, NULL, 'open', NULL, NULL, NULL, $8, $9, NULL)`
    const params = [call.call_id, id, call.upstream, call.endpoint, call.model, call.day, call.reserved_micro, call.started_at, call.deadline_at, call.kind, call.tool]
    if (policies.length === 0) {
      await tx.run(insert, params)
      return call
    }
    await tx.run(
      `WITH c AS (${insert}), d AS (
         INSERT INTO counters_day (address_id, day, egress) VALUES ($2, $12, 1)
         ON CONFLICT (address_id, day) DO UPDATE SET egress = counters_day.egress + 1
       )
       INSERT INTO counters_hour (address_id, hour, egress) VALUES ($2, $13, 1)
       ON CONFLICT (address_id, hour) DO UPDATE SET egress = counters_hour.egress + 1`,
      [...params, day, hour],
    )
    return call
  })
}

export async function settleEgress(db: PgDb, input: EgressSettleInput): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
  return db.tx(async (tx) => {
    const open = await tx.one<EgressCallRow>("SELECT * FROM egress_calls WHERE call_id = $1 AND state = 'open'", [input.call_id])
    if (!open) return { call: await tx.one<EgressCallRow>('SELECT * FROM egress_calls WHERE call_id = $1', [input.call_id]), changed: false }
    // Lock order of a resolve with cost: gate, agent row, then the counters (in #applyCost).
    await gateById(db, tx, open.address_id, tx.lockForCost)
    const agent = await tx.one<AgentRow>(
      `SELECT * FROM agents WHERE address_id = $1${tx.lockForCost ? ' FOR NO KEY UPDATE' : ''}`,
      [open.address_id],
    )
    const call = await tx.one<EgressCallRow>(
      `UPDATE egress_calls SET state = 'settled', cost_micro = $2, outcome = $3, usage = $4, status = $5, settled_at = $6
       WHERE call_id = $1 AND state = 'open' RETURNING *`,
      [input.call_id, input.cost_micro, input.outcome, input.usage, input.status, input.now],
    )
    if (!call) return { call: await tx.one<EgressCallRow>('SELECT * FROM egress_calls WHERE call_id = $1', [input.call_id]), changed: false }
    // Charged to the day it was reserved on, so that day's `spent + reserved` never grows.
    if (input.cost_micro > 0 && agent) {
      await applyCost(db, tx, agent, input.cost_micro / 1_000_000, call.started_at, input.cost_rule, tx.lockForCost)
    }
    return { call, changed: true }
  })
}

export async function overdueEgressCalls(db: PgDb, now: number, limit: number): Promise<EgressCallRow[]> {
  return db.read<EgressCallRow>("SELECT * FROM egress_calls WHERE state = 'open' AND deadline_at < $1 ORDER BY deadline_at LIMIT $2", [now, limit])
}

export async function listEgressCalls(db: PgDb, addressId: string | null, limit: number, before: string | null): Promise<EgressCallRow[]> {
  return db.read<EgressCallRow>(
    `SELECT * FROM egress_calls
     WHERE ($1::text IS NULL OR address_id = $1)
       AND ($2::text IS NULL OR seqno < coalesce((SELECT seqno FROM egress_calls WHERE call_id = $2), 0))
     ORDER BY seqno DESC LIMIT $3`,
    [addressId, before, limit],
  )
}
