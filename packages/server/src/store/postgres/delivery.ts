/** PostgreSQL engine, delivery: claims (leases, per-address seqs) and lease expiry. */
import { GatewayError } from '../../core/errors.js'
import type {
  AgentRow,
  ClaimInput,
  ClaimResult,
  Delivery,
  ExpireLeasesResult,
  InstanceQuarantineRow,
  IntentRow,
  IntentStatus,
} from '../store.js'
import { bumpEventSeq } from './intents.js'
import { HOLD } from './kill.js'
import { EventBatch, LOCK_AGENT, LOCK_CLAIM, LOCK_CLASS, type PgDb, type Tx } from './tx.js'

/** A claim that left intents queued because their sender's gate was busy (a kill) looks again this soon. */
export const BUSY_SENDER_RETRY_MS = 50

export const TERMINAL = new Set<IntentStatus>(['COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT'])

export async function claimDeliveries(db: PgDb, input: ClaimInput): Promise<ClaimResult> {
  return db.tx(async (tx) => {
    // The agent's gate (shared), then the claim lock: one claim at a time per (address,
    // instance), so max_in_flight holds across replicas.
    tx.lock('SELECT pg_advisory_xact_lock_shared($1::int, hashtext(address)), pg_advisory_xact_lock($3::int, hashtext($4)) FROM agents WHERE address_id = $2', [
      LOCK_AGENT,
      input.address_id,
      LOCK_CLASS + LOCK_CLAIM,
      `${input.address_id}\n${input.instance_id}`,
    ])
    // One statement after both: the agent, the instance's quarantine (one that committed while
    // this transaction waited is seen; one that starts now waits for this transaction, then
    // requeues whatever this claim leases) and what the instance holds.
    type Read = AgentRow & { _quarantine: InstanceQuarantineRow | null; _in_flight: number }
    const read = await tx.one<Read>(
      `SELECT a.*, (SELECT row_to_json(q) FROM instance_quarantines q WHERE q.address_id = a.address_id AND q.instance_id = $2) AS _quarantine,
         (SELECT count(*) FROM intents WHERE to_address_id = a.address_id AND delivery_state = 'leased' AND lease_instance = $2) AS _in_flight
       FROM agents a WHERE a.address_id = $1`,
      [input.address_id, input.instance_id],
    )
    if (!read) throw new GatewayError('not_found', 'agent not found')
    const { _quarantine: quarantine, _in_flight: inFlight, ...recipient } = read
    input.decide(recipient, quarantine)
    const room = Math.min(input.max_in_flight - inFlight, input.max_batch)
    if (room <= 0) return { deliveries: [], has_room: false, next_due_at: null }
    // Competing consumers skip each other's rows. The sender filter is the store half of
    // core's delivery rule (a killed sender's undelivered output is not delivered).
    const candidates = await tx.rows<IntentRow>(
      `SELECT i.* FROM intents i JOIN agents f ON f.address_id = i.from_address_id
       WHERE i.to_address_id = $1 AND i.delivery_state = 'queued' AND i.available_at <= $2
         AND (f.killed_at IS NULL OR i.delivery_attempt > 0)
         AND (i.deadline_at IS NULL OR i.deadline_at > $2)
       ORDER BY i.available_at, i.seqno LIMIT $3
       FOR UPDATE OF i SKIP LOCKED`,
      [input.address_id, input.now, room],
    )
    if (candidates.length === 0) return { deliveries: [], has_room: true, next_due_at: await nextDue(db, tx, input) }
    // A kill of a sender must either be seen here or wait for this claim: its gate, shared.
    // Taken without waiting (this transaction already holds the recipient's gate, and gates
    // are taken in address order); a sender whose gate is busy — a kill of it is waiting or
    // running — keeps its intents queued for the next claim, which comes soon (next_due_at).
    const senders = [...new Set(candidates.filter((c) => c.delivery_attempt === 0 && c.from_agent !== recipient.address).map((c) => c.from_agent))].sort()
    let busy = new Set<string>()
    if (senders.length > 0) {
      const gated = await tx.rows<{ a: string; ok: boolean }>(
        'SELECT a, pg_try_advisory_xact_lock_shared($1::int, hashtext(a)) AS ok FROM unnest($2::text[]) AS a',
        [LOCK_AGENT, senders],
      )
      busy = new Set(gated.filter((g) => !g.ok).map((g) => g.a))
    }
    const ready = candidates.filter((c) => !busy.has(c.from_agent) || c.delivery_attempt > 0)
    // One statement after the sender gates, so its snapshot sees every kill that committed
    // before them: re-checks the senders, numbers what is left from the per-address counter
    // row (locked until commit: seqs are commit-ordered, DESIGN §11), leases it, writes the
    // delivery events (details as JSON.stringify writes them) and reads when more is due.
    type Leased = IntentRow & { _next_due: number | null }
    const leased =
      ready.length === 0
        ? []
        : await tx.rows<Leased>(
            `WITH ok AS (
               SELECT i.intent_id, row_number() OVER (ORDER BY v.k) AS k
               FROM unnest($1::text[]) WITH ORDINALITY AS v(intent_id, k) JOIN intents i ON i.intent_id = v.intent_id
               WHERE i.delivery_attempt > 0 OR NOT EXISTS (
                 SELECT 1 FROM agents f WHERE f.address_id = i.from_address_id AND f.killed_at IS NOT NULL)),
             n AS (SELECT count(*)::bigint AS c FROM ok),
             s AS (
               INSERT INTO address_seq (address_id, last_seq) SELECT $2, c FROM n WHERE c > 0
               ON CONFLICT (address_id) DO UPDATE SET last_seq = address_seq.last_seq + excluded.last_seq RETURNING last_seq),
             u AS (
               UPDATE intents i SET status = 'DELIVERED', delivery_state = 'leased', delivery_attempt = i.delivery_attempt + 1,
                 delivery_seq = s.last_seq - n.c + ok.k, lease_instance = $3, lease_expires_at = $4, lease_ms = $5,
                 updated_at = $6, last_event_seq = i.last_event_seq + 1
               FROM ok, n, s WHERE i.intent_id = ok.intent_id RETURNING i.*),
             e AS (
               INSERT INTO intent_events (intent_id, seq, event_type, status, actor, at, details)
               SELECT intent_id, last_event_seq, CASE WHEN delivery_attempt > 1 THEN 'intent.redelivered' ELSE 'intent.delivered' END,
                 'DELIVERED', 'system', $6,
                 '{"instance_id":' || to_json($3::text)::text || ',"delivery_seq":' || delivery_seq || ',"delivery_attempt":' || delivery_attempt || '}'
               FROM u)
             SELECT u.*, (SELECT min(available_at) FROM intents q
               WHERE q.to_address_id = $2 AND q.delivery_state = 'queued' AND q.available_at > $6) AS _next_due
             FROM u ORDER BY u.delivery_seq`,
            [ready.map((c) => c.intent_id), input.address_id, input.instance_id, input.now + input.lease_ms, input.lease_ms, input.now],
          )
    const deliveries: Delivery[] = []
    let dueAfter: number | null | undefined
    for (const { _next_due, ...row } of leased) {
      dueAfter = _next_due
      tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
      deliveries.push({ intent: row, seq: row.delivery_seq as number, event_type: row.delivery_attempt > 1 ? 'intent.redelivered' : 'intent.delivered' })
    }
    const hasRoom = inFlight + deliveries.length < input.max_in_flight
    // During a paced resume more held work becomes due later: tell the stream when.
    const due = !hasRoom ? null : dueAfter !== undefined ? dueAfter : await nextDue(db, tx, input)
    const retry = busy.size > 0 ? input.now + BUSY_SENDER_RETRY_MS : null
    return { deliveries, has_room: hasRoom, next_due_at: due === null ? retry : retry === null ? due : Math.min(due, retry) }
  })
}

export async function nextDue(db: PgDb, tx: Tx, input: ClaimInput): Promise<number | null> {
  const due = await tx.one<{ at: number | null }>(
    `SELECT min(available_at) AS at FROM intents WHERE to_address_id = $1 AND delivery_state = 'queued' AND available_at > $2`,
    [input.address_id, input.now],
  )
  return due?.at ?? null
}

export async function leasedDeliveries(db: PgDb, addressId: string, instanceId: string, since: number, now: number): Promise<IntentRow[]> {
  return db.read<IntentRow>(
    `SELECT * FROM intents WHERE to_address_id = $1 AND lease_instance = $2 AND delivery_state = 'leased'
       AND delivery_seq > $3 AND lease_expires_at > $4 ORDER BY delivery_seq`,
    [addressId, instanceId, since, now],
  )
}

export async function expireLeases(db: PgDb, now: number, limit: number): Promise<ExpireLeasesResult> {
  return db.tx(async (tx) => {
    // Every replica sweeps; SKIP LOCKED hands each expired lease to one of them.
    const rows = await tx.rows<IntentRow>(
      `SELECT * FROM intents WHERE delivery_state = 'leased' AND lease_expires_at <= $1
       ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
      [now, limit],
    )
    let requeued = 0
    let failed = 0
    const events = new EventBatch()
    for (const row of rows) {
      if (TERMINAL.has(row.status)) continue
      if (row.delivery_attempt - row.kill_dropped >= row.max_delivery_attempts) {
        const seq = await bumpEventSeq(db, tx, row.intent_id)
        const error = JSON.stringify({
          code: 'delivery_failed',
          message: `not resolved after ${row.delivery_attempt} delivery attempts`,
        })
        await tx.run(
          `UPDATE intents SET status = 'FAILED', delivery_state = 'done', lease_instance = NULL, lease_expires_at = NULL,
             error = $2, updated_at = $3 WHERE intent_id = $1`,
          [row.intent_id, error, now],
        )
        events.add({ intent_id: row.intent_id, seq, event_type: 'intent.delivery_failed', status: 'FAILED', actor: 'system', at: now, details: error })
        failed += 1
      } else if (await isKilled(db, tx, row.to_address_id)) {
        // The recipient was killed meanwhile: the work is held for its resume, not requeued.
        const [r] = await tx.rows<{ last_event_seq: number; status: IntentStatus }>(HOLD, [[row.intent_id], now])
        if (r) events.add({ intent_id: row.intent_id, seq: r.last_event_seq, event_type: 'intent.held', status: r.status, actor: 'system', at: now, details: null })
      } else {
        // Back in the queue; the next delivery records `intent.redelivered` with a new seq.
        await tx.run(
          `UPDATE intents SET delivery_state = 'queued', lease_instance = NULL, lease_expires_at = NULL,
             available_at = $2, updated_at = $2 WHERE intent_id = $1`,
          [row.intent_id, now],
        )
        tx.changes.push({ type: 'intent.available', address_id: row.to_address_id })
        requeued += 1
      }
      tx.changes.push({ type: 'intent.event', intent_id: row.intent_id })
      if (row.lease_instance) {
        tx.changes.push({ type: 'slot.freed', address_id: row.to_address_id, instance_id: row.lease_instance })
      }
    }
    await events.write(tx)
    return { requeued, failed }
  })
}

export async function isKilled(db: PgDb, tx: Tx, addressId: string): Promise<boolean> {
  const row = await tx.one<{ killed_at: number | null }>('SELECT killed_at FROM agents WHERE address_id = $1', [addressId])
  return (row?.killed_at ?? null) !== null
}
