/** PostgreSQL engine, policies and the default policies. */
import { GatewayError } from '../../core/errors.js'
import {
  type AgentRow,
  DEFAULT_POLICY_OWNER,
  type DefaultPoliciesWrite,
  type MeshEventDraft,
  type PolicyKind,
  type PolicyRow,
  type PolicyWrite,
} from '../store.js'
import { EFFECTIVE_POLICIES, gateById } from './agents.js'
import { queueAudit, queueMeshEvent } from './audit.js'
import { LOCK_AGENT, LOCK_CLASS, LOCK_FLEET, type PgDb } from './tx.js'
import { assertPolicyVersion } from '../rows.js'

export const DEFAULT_POLICIES = `SELECT policy_id, '${DEFAULT_POLICY_OWNER}' AS address_id, kind, spec, enabled, version, created_at, updated_at
  FROM default_policies ORDER BY position`

export async function listPolicies(db: PgDb, addressId: string): Promise<PolicyRow[]> {
  return db.read<PolicyRow>('SELECT * FROM policies WHERE address_id = $1 ORDER BY seqno', [addressId])
}

export async function listDefaultPolicies(db: PgDb): Promise<PolicyRow[]> {
  return db.read<PolicyRow>(DEFAULT_POLICIES)
}

export async function listPoliciesOf(db: PgDb, addressIds: readonly string[]): Promise<PolicyRow[]> {
  return db.read<PolicyRow>(EFFECTIVE_POLICIES, [addressIds])
}

export async function replaceDefaultPolicies(db: PgDb, input: DefaultPoliciesWrite): Promise<{ policies: PolicyRow[]; changed: boolean }> {
  return db.tx(async (tx) => {
    // Exclusive fleet lock: no agent is being created meanwhile (they hold it shared), so each
    // new agent sees either the old set or this one committed, never neither.
    await tx.run('SELECT pg_advisory_xact_lock($1::int, $2::int)', [LOCK_CLASS, LOCK_FLEET])
    tx.fleetLocked = true
    const before = await tx.rows<PolicyRow>(`${DEFAULT_POLICIES} FOR UPDATE`)
    const after = input.build(before)
    if (after === null) return { policies: before, changed: false }
    await tx.run('DELETE FROM default_policies')
    if (after.length > 0) {
      await tx.run(
        `INSERT INTO default_policies (policy_id, position, kind, spec, enabled, version, created_at, updated_at)
         SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::int[], $6::int[], $7::bigint[], $8::bigint[])`,
        [
          after.map((r) => r.policy_id),
          after.map((_, i) => i),
          after.map((r) => r.kind),
          after.map((r) => r.spec),
          after.map((r) => r.enabled),
          after.map((r) => r.version),
          after.map((r) => r.created_at),
          after.map((r) => r.updated_at),
        ],
      )
    }
    // Every agent's gate, exclusively, in address order: waits for the in-flight accepts that
    // read the old version, and every later one reads the new.
    const all = (await tx.rows<{ address: string }>('SELECT address FROM agents ORDER BY address')).map((r) => r.address)
    await tx.run('SELECT pg_advisory_xact_lock($1::int, hashtext(a)) FROM unnest($2::text[]) AS a', [LOCK_AGENT, all])
    await tx.run(
      `UPDATE agents SET policy_version = policy_version + 1
       WHERE address_id IN (SELECT address_id FROM agents ORDER BY address_id FOR NO KEY UPDATE)`,
    )
    const { audit, event } = input.record(before, after)
    queueAudit(db, tx, audit)
    queueMeshEvent(db, tx, event)
    return { policies: await tx.rows<PolicyRow>(DEFAULT_POLICIES), changed: true }
  })
}

export async function listEnabledPolicies(db: PgDb, kind: PolicyKind, limit: number): Promise<PolicyRow[]> {
  return db.read<PolicyRow>('SELECT * FROM policies WHERE kind = $1 AND enabled = 1 ORDER BY seqno LIMIT $2', [kind, limit])
}

export async function getPolicy(db: PgDb, policyId: string): Promise<PolicyRow | undefined> {
  return db.readOne<PolicyRow>('SELECT * FROM policies WHERE policy_id = $1', [policyId])
}

export async function writePolicy(db: PgDb, input: PolicyWrite): Promise<PolicyRow | null> {
  return db.tx(async (tx) => {
    const current = await tx.one<PolicyRow>('SELECT * FROM policies WHERE policy_id = $1 FOR UPDATE', [input.policy_id])
    assertPolicyVersion(current ?? undefined, input)
    const next = input.build(current)
    const addressId = next?.address_id ?? current?.address_id
    // Waits for in-flight accepts that read the old policy_version (their shared gates).
    if (addressId !== undefined) await gateById(db, tx, addressId, true)
    const agent = await tx.one<AgentRow>('SELECT * FROM agents WHERE address_id = $1 FOR NO KEY UPDATE', [addressId])
    if (!agent) throw new GatewayError('not_found', `agent ${addressId} not found`)
    if (input.op === 'create' && next) {
      await tx.run(
        `INSERT INTO policies (policy_id, address_id, kind, spec, enabled, version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [next.policy_id, next.address_id, next.kind, next.spec, next.enabled, next.version, next.created_at, next.updated_at],
      )
    } else if (input.op === 'update' && next) {
      await tx.run('UPDATE policies SET spec = $2, enabled = $3, version = $4, updated_at = $5 WHERE policy_id = $1', [
        next.policy_id,
        next.spec,
        next.enabled,
        next.version,
        next.updated_at,
      ])
    } else {
      await tx.run('DELETE FROM policies WHERE policy_id = $1', [input.policy_id])
    }
    await tx.run('UPDATE agents SET policy_version = policy_version + 1 WHERE address_id = $1', [agent.address_id])
    const { audit, event } = input.record(current, next, agent)
    queueAudit(db, tx, audit)
    queueMeshEvent(db, tx, event)
    tx.changes.push({ type: 'policy.changed', address_id: agent.address_id })
    return next
  })
}

export async function recordBreach(db: PgDb, policyId: string, windowKey: string, event: MeshEventDraft): Promise<boolean> {
  return db.tx(async (tx) => {
    const inserted = await tx.run(
      'INSERT INTO policy_breaches (policy_id, window_key, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [policyId, windowKey, event.created_at],
    )
    if (inserted === 0) return false
    queueMeshEvent(db, tx, event)
    return true
  })
}
