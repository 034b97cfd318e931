/**
 * SQLite engine: delivery: claims (leases), reconnect re-sends, expired leases. Functions of
 * SqliteStore's context, run inside its write queue where they write.
 */
import { GatewayError } from '../../core/errors.js'
import type { AgentRow, ClaimInput, ClaimResult, Delivery, ExpireLeasesResult, IntentRow, IntentStatus } from '../store.js'
import type { SqliteContext } from './context.js'

const TERMINAL = new Set<IntentStatus>(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'])

export async function claimDeliveries(ctx: SqliteContext, input: ClaimInput): Promise<ClaimResult> {
  return ctx.write((changes) => {
    const recipient = ctx.agentById(input.address_id)
    if (!recipient) throw new GatewayError('not_found', 'agent not found')
    input.decide(recipient, ctx.quarantine(input.address_id, input.instance_id))
    const inFlight = (ctx.q.inFlight.get(input.address_id, input.instance_id) as { n: number }).n
    const room = Math.min(input.max_in_flight - inFlight, input.max_batch)
    if (room <= 0) return { deliveries: [], has_room: false, next_due_at: null }
    // A literal LIMIT: a bound one makes SQLite re-prepare this hot statement on every run.
    const candidates: IntentRow[] = []
    let due: number | null = null
    for (const row of ctx.q.queued.iterate({ address_id: input.address_id, now: input.now }) as IterableIterator<IntentRow>) {
      if (row.available_at > input.now) {
        // During a paced resume more held work becomes due later: tell the stream when.
        due = row.available_at
        break
      }
      candidates.push(row)
      if (candidates.length >= room) break
    }
    if (candidates.length === 0) return { deliveries: [], has_room: true, next_due_at: due }
    const last = (ctx.q.nextSeq.get(input.address_id, candidates.length) as { last_seq: number }).last_seq
    let seq = last - candidates.length
    const deliveries: Delivery[] = []
    for (const candidate of candidates) {
      seq += 1
      const leased = ctx.q.lease.get({
        intent_id: candidate.intent_id,
        seq,
        instance: input.instance_id,
        expires: input.now + input.lease_ms,
        lease_ms: input.lease_ms,
        now: input.now,
      }) as IntentRow
      const eventType = leased.delivery_attempt > 1 ? 'intent.redelivered' : 'intent.delivered'
      ctx.q.insertEvent.run(
        leased.intent_id,
        leased.last_event_seq,
        eventType,
        'DELIVERED',
        'system',
        input.now,
        JSON.stringify({ instance_id: input.instance_id, delivery_seq: seq, delivery_attempt: leased.delivery_attempt }),
      )
      changes.push({ type: 'intent.event', intent_id: leased.intent_id })
      deliveries.push({ intent: leased, seq, event_type: eventType })
    }
    const hasRoom = inFlight + deliveries.length < input.max_in_flight
    return { deliveries, has_room: hasRoom, next_due_at: hasRoom ? due : null }
  })
}

export async function leasedDeliveries(
  ctx: SqliteContext,
  addressId: string,
  instanceId: string,
  since: number,
  now: number,
): Promise<IntentRow[]> {
  return ctx.q.leasedSince.all(addressId, instanceId, since, now) as IntentRow[]
}

export async function expireLeases(ctx: SqliteContext, now: number, limit: number): Promise<ExpireLeasesResult> {
  return ctx.write((changes) => {
    const rows = ctx.q.expired.all(now, limit) as IntentRow[]
    let requeued = 0
    let failed = 0
    for (const row of rows) {
      if (TERMINAL.has(row.status)) continue
      if (row.delivery_attempt - row.kill_dropped >= row.max_delivery_attempts) {
        const seq = (ctx.q.bumpEventSeq.get(row.intent_id) as { last_event_seq: number }).last_event_seq
        const error = JSON.stringify({
          code: 'delivery_failed',
          message: `not resolved after ${row.delivery_attempt} delivery attempts`,
        })
        ctx.q.failExpired.run({ intent_id: row.intent_id, error, now })
        ctx.q.insertEvent.run(row.intent_id, seq, 'intent.delivery_failed', 'FAILED', 'system', now, error)
        failed += 1
      } else if ((ctx.agentById(row.to_address_id) as AgentRow).killed_at !== null) {
        // The recipient was killed meanwhile: the work is held for its resume, not requeued.
        const r = ctx.q.hold.get({ intent_id: row.intent_id, now }) as { last_event_seq: number; status: string }
        ctx.q.insertEvent.run(row.intent_id, r.last_event_seq, 'intent.held', r.status, 'system', now, null)
      } else {
        // Back in the queue; the next delivery records `intent.redelivered` with a new seq.
        ctx.q.requeue.run({ intent_id: row.intent_id, now })
        changes.push({ type: 'intent.available', address_id: row.to_address_id })
        requeued += 1
      }
      changes.push({ type: 'intent.event', intent_id: row.intent_id })
      if (row.lease_instance) {
        changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
      }
    }
    return { requeued, failed }
  })
}
