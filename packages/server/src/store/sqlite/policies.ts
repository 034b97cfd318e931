/** SQLite engine: policies and the default set. Functions of SqliteStore's context, run inside its write queue where they write. */
import { GatewayError } from '../../core/errors.js'
import type { PolicyKind, PolicyRow, PolicyWrite } from '../store.js'
import { assertPolicyVersion } from '../rows.js'
import type { DefaultPoliciesWrite } from '../store.js'
import type { SqliteContext } from './context.js'

export async function listPolicies(ctx: SqliteContext, addressId: string): Promise<PolicyRow[]> {
  return ctx.q.policiesOf.all(addressId) as PolicyRow[]
}

export async function listDefaultPolicies(ctx: SqliteContext): Promise<PolicyRow[]> {
  return ctx.q.defaultPolicies.all() as PolicyRow[]
}

export async function listPoliciesOf(ctx: SqliteContext, addressIds: readonly string[]): Promise<PolicyRow[]> {
  return ctx.q.policiesOfMany.all(JSON.stringify(addressIds)) as PolicyRow[]
}

export async function replaceDefaultPolicies(
  ctx: SqliteContext,
  input: DefaultPoliciesWrite,
): Promise<{ policies: PolicyRow[]; changed: boolean }> {
  return ctx.write((changes) => {
    const before = ctx.q.defaultPolicies.all() as PolicyRow[]
    const after = input.build(before)
    if (after === null) return { policies: before, changed: false }
    ctx.adhoc('DELETE FROM default_policies').run()
    after.forEach((row, position) => ctx.q.insertDefaultPolicy.run({ ...row, position }))
    // Every compiled policy set includes the defaults: each agent's version moves on.
    ctx.adhoc('UPDATE agents SET policy_version = policy_version + 1').run()
    const { audit, event } = input.record(before, after)
    ctx.audit(audit)
    ctx.meshEvent(event, changes)
    return { policies: ctx.q.defaultPolicies.all() as PolicyRow[], changed: true }
  })
}

export async function listEnabledPolicies(ctx: SqliteContext, kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
  return ctx.adhoc('SELECT * FROM policies WHERE kind = ? AND enabled = 1 ORDER BY seqno LIMIT ?').all(kind, limit) as PolicyRow[]
}

export async function getPolicy(ctx: SqliteContext, policyId: string): Promise<PolicyRow | undefined> {
  return ctx.q.policyById.get(policyId) as PolicyRow | undefined
}

export async function writePolicy(ctx: SqliteContext, input: PolicyWrite): Promise<PolicyRow | null> {
  return ctx.write((changes) => {
    const current = ctx.q.policyById.get(input.policy_id) as PolicyRow | undefined
    assertPolicyVersion(current, input)
    const next = input.build(current)
    const addressId = next?.address_id ?? current?.address_id
    const agent = addressId === undefined ? undefined : ctx.agentById(addressId)
    if (!agent) throw new GatewayError('not_found', `agent ${addressId} not found`)
    if (input.op === 'create' && next) ctx.q.insertPolicy.run(next)
    else if (input.op === 'update' && next) ctx.q.updatePolicy.run(next)
    else ctx.q.deletePolicy.run(input.policy_id)
    ctx.q.bumpPolicyVersion.run(agent.address_id)
    const { audit, event } = input.record(current, next, agent)
    ctx.audit(audit)
    ctx.meshEvent(event, changes)
    changes.push({ type: 'policy.changed', address_id: agent.address_id })
    return next
  })
}
