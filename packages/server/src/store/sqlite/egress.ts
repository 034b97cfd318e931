/**
 * SQLite engine: egress calls: admission and settlement. Functions of SqliteStore's context, run
 * inside its write queue where they write.
 */
import { GatewayError } from '../../core/errors.js'
import type { PolicyRow, AgentRow } from '../store.js'
import type { EgressAdmitInput, EgressCallRow, EgressSettleInput } from '../store.js'
import type { SqliteContext } from './context.js'

// ---- egress ----
export async function admitEgress(ctx: SqliteContext, input: EgressAdmitInput): Promise<EgressCallRow> {
  return ctx.write(() => {
    const { call } = input
    const agent = ctx.agentById(call.address_id)
    if (!agent) throw new GatewayError('not_found', 'agent not found')
    const policies = agent.policy_version === 0 ? [] : (ctx.q.effectivePolicies.all(agent.address_id) as PolicyRow[])
    const reserved =
      policies.length === 0
        ? 0
        : (ctx.q.egressReserved.get(call.address_id, call.day) as { n: number }).n
    // The single writer makes read (spent + reserved) → decide → reserve atomic.
    input.decide({ agent, policies, counters: ctx.counters(agent.address_id, input.now), reserved_micro: reserved })
    ctx.q.egressInsert.run(call)
    // Counted for egress `rate` policies while the agent has policies (as on PostgreSQL, where
    // counting without them would serialize the agent's calls on its counter rows).
    if (policies.length > 0) {
      const at = new Date(input.now).toISOString()
      ctx.q.countEgressDay.run(call.address_id, at.slice(0, 10))
      ctx.q.countEgressHour.run(call.address_id, at.slice(0, 13))
    }
    return call
  })
}

export async function settleEgress(
  ctx: SqliteContext,
  input: EgressSettleInput,
): Promise<{ call: EgressCallRow | undefined; changed: boolean }> {
  return ctx.write((changes) => {
    const call = ctx.q.egressSettle.get(input.cost_micro, input.outcome, input.usage, input.status, input.now, input.call_id) as
      | EgressCallRow
      | undefined
    if (!call) return { call: ctx.q.egressById.get(input.call_id) as EgressCallRow | undefined, changed: false }
    // Charged to the day it was reserved on, so that day's `spent + reserved` never grows.
    if (input.cost_micro > 0) {
      const agent = ctx.agentById(call.address_id) as AgentRow
      ctx.applyCost(agent, input.cost_micro / 1_000_000, call.started_at, input.cost_rule, changes)
    }
    return { call, changed: true }
  })
}

export async function overdueEgressCalls(ctx: SqliteContext, now: number, limit: number): Promise<EgressCallRow[]> {
  return ctx.q.egressOverdue.all(now, limit) as EgressCallRow[]
}

export async function listEgressCalls(
  ctx: SqliteContext,
  addressId: string | null,
  limit: number,
  before: string | null,
): Promise<EgressCallRow[]> {
  const where: string[] = []
  const params: unknown[] = []
  if (addressId !== null) {
    where.push('address_id = ?')
    params.push(addressId)
  }
  if (before !== null) {
    where.push('seqno < coalesce((SELECT seqno FROM egress_calls WHERE call_id = ?), 0)')
    params.push(before)
  }
  params.push(limit)
  const sql = `SELECT * FROM egress_calls ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seqno DESC LIMIT ?`
  return (ctx.adhoc(sql).all(...params) as (EgressCallRow & { seqno?: number })[]).map(({ seqno: _s, ...row }) => row)
}
