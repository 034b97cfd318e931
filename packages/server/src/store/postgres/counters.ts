/** PostgreSQL engine, counters: the locked, exact counts of agents with rate or cost policies, the lock-free shards of the others, and what the views read. */
import type { AgentCounters, AgentRow, CostRule, HourCounters, PolicyRow } from '../store.js'
import { EFFECTIVE_POLICIES } from './agents.js'
import { KILL, recordKill } from './kill.js'
import { queueMeshEvent } from './audit.js'
import { LOCK_CLASS, LOCK_FOLD, NeedsRowLock, type PgDb, type Tx, windowOf } from './tx.js'

/** Policy kinds decided on the counters: their owners' counts are locked and exact (see #countersForDecision). */
export const countsCounters = (p: PolicyRow): boolean => p.kind === 'rate' || p.kind === 'cost'

/** The counters handed to core for a party it does not decide on counters (no rate or cost policy). */
import { thresholdEvent, zeroCounters } from '../rows.js'
export { zeroCounters }

/**
 * Counts of agents without rate or cost policies: this backend's own row per (agent, hour).
 * No other transaction writes it while this one runs, so nothing waits on it.
 */
export const shardUpsert = (p: number): string => `INSERT INTO counter_shards (address_id, hour, shard, sent, received)
  SELECT a, $${p + 1}::text, pg_backend_pid(), s, r FROM unnest($${p}::text[], $${p + 2}::bigint[], $${p + 3}::bigint[]) AS v(a, s, r)
  ON CONFLICT (address_id, hour, shard) DO UPDATE SET sent = counter_shards.sent + excluded.sent,
    received = counter_shards.received + excluded.received`

/**
 * The counters core decides on. Policies hold under concurrency (DESIGN §2.6) because,
 * for every party with a rate or cost policy, its hour and day counter rows are created if
 * missing and locked `FOR UPDATE` before they are read, and stay locked until this
 * transaction has written its increment and committed: concurrent accepts involving that
 * agent, on any replica, read-decide-increment one after the other, so 300 concurrent sends
 * against a limit of 100 accept exactly 100. A single conditional `UPDATE … WHERE sent <
 * limit` cannot express core's decision (several policies, both windows, both parties,
 * resume baselines), which is an opaque callback; the row lock keeps that decision in core.
 * Such an agent's counter_shards rows no longer change: only a transaction that read no such
 * policy (under the agent's shared gate) writes them, and a policy write holds the gate
 * exclusively; purge's fold moves them into the rows locked here, so it waits for this
 * transaction. The exact count is therefore the locked rows plus its shards.
 */
export async function countersForDecision(db: PgDb, tx: Tx, addressIds: string[], lockIds: string[], now: number): Promise<Map<string, AgentCounters>> {
  const { day, hour } = windowOf(now)
  const locked = [...new Set(lockIds)].sort()
  if (locked.length > 0) {
    await tx.run(
      'INSERT INTO counters_day (address_id, day) SELECT unnest($1::text[]), $2::text ON CONFLICT DO NOTHING',
      [locked, day],
    )
    await tx.run(
      'INSERT INTO counters_hour (address_id, hour) SELECT unnest($1::text[]), $2::text ON CONFLICT DO NOTHING',
      [locked, hour],
    )
    await tx.run(
      'SELECT 1 FROM counters_day WHERE address_id = ANY($1::text[]) AND day = $2 ORDER BY address_id FOR UPDATE',
      [locked, day],
    )
    await tx.run(
      'SELECT 1 FROM counters_hour WHERE address_id = ANY($1::text[]) AND hour = $2 ORDER BY address_id FOR UPDATE',
      [locked, hour],
    )
  }
  return readCounters(db, (sql, params) => tx.rows(sql, params), [...new Set(addressIds)], now)
}

export async function readCounters(
  db: PgDb,
  query: <R>(sql: string, params: unknown[]) => Promise<R[]>,
  addressIds: string[],
  now: number,
): Promise<Map<string, AgentCounters>> {
  const { day, hour } = windowOf(now)
  type Row = { id: string; sd: number; rd: number; ed: number; cd: number; sh: number; rh: number; eh: number }
  const rows = await query<Row>(
    `SELECT a.id, coalesce(d.sent, 0) + coalesce(s.sd, 0) AS sd, coalesce(d.received, 0) + coalesce(s.rd, 0) AS rd,
       coalesce(d.egress, 0) AS ed, coalesce(d.cost_usd, 0) AS cd, coalesce(h.sent, 0) + coalesce(s.sh, 0) AS sh,
       coalesce(h.received, 0) + coalesce(s.rh, 0) AS rh, coalesce(h.egress, 0) AS eh
     FROM unnest($1::text[]) AS a(id)
     LEFT JOIN counters_day d ON d.address_id = a.id AND d.day = $2
     LEFT JOIN counters_hour h ON h.address_id = a.id AND h.hour = $3
     LEFT JOIN LATERAL (
       SELECT sum(sent) AS sd, sum(received) AS rd, sum(sent) FILTER (WHERE hour = $3) AS sh, sum(received) FILTER (WHERE hour = $3) AS rh
       FROM counter_shards WHERE address_id = a.id AND hour >= $2 || 'T00' AND hour <= $2 || 'T23') s ON true`,
    [addressIds, day, hour],
  )
  return new Map(
    rows.map((r) => [
      r.id,
      {
        day,
        hour,
        sent_hour: r.sh,
        sent_day: r.sd,
        received_hour: r.rh,
        received_day: r.rd,
        egress_hour: r.eh,
        egress_day: r.ed,
        cost_day: r.cd,
      },
    ]),
  )
}

/**
 * Moves the counter shards of finished hours (before the previous one) into counters_day and
 * counters_hour: views read the sum of both, so the totals do not change. One replica at a
 * time; counter rows in the writers' order (day rows, then hour rows, by address_id).
 */
export async function foldShards(db: PgDb, tx: Tx, limit: number): Promise<void> {
  const got = await tx.one<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1::int, $2::int) AS ok', [LOCK_CLASS, LOCK_FOLD])
  if (!got?.ok) return
  const { hour } = windowOf(db.clock.now() - 3_600_000)
  await tx.run(
    `WITH moved AS (
       DELETE FROM counter_shards WHERE (address_id, hour, shard) IN (
         SELECT address_id, hour, shard FROM counter_shards WHERE hour < $1 LIMIT $2)
       RETURNING address_id, hour, sent, received),
     h AS (SELECT address_id, hour, sum(sent) AS s, sum(received) AS r FROM moved GROUP BY address_id, hour),
     d AS (
       INSERT INTO counters_day (address_id, day, sent, received)
       SELECT address_id, substr(hour, 1, 10), sum(s), sum(r) FROM h GROUP BY 1, 2 ORDER BY 1, 2
       ON CONFLICT (address_id, day) DO UPDATE SET sent = counters_day.sent + excluded.sent, received = counters_day.received + excluded.received)
     INSERT INTO counters_hour (address_id, hour, sent, received) SELECT address_id, hour, s, r FROM h ORDER BY 1, 2
     ON CONFLICT (address_id, hour) DO UPDATE SET sent = counters_hour.sent + excluded.sent, received = counters_hour.received + excluded.received`,
    [hour, limit * 10],
  )
}

/**
 * Counts reported cost for an agent and applies core's budget rule, in the caller's
 * transaction. `rowLocked`: the caller holds the agent row for update, so a kill may flip
 * it; otherwise a kill asks for the transaction to be rerun with that lock (NeedsRowLock).
 */
export async function applyCost(db: PgDb, tx: Tx, agent: AgentRow, amount: number, now: number, rule: CostRule, rowLocked: boolean): Promise<void> {
  const { day, hour } = windowOf(now)
  // The upsert's row lock makes read-add atomic: `before` is exactly what this amount follows.
  const added = (await tx.one<{ cost_usd: number }>(
    `INSERT INTO counters_day (address_id, day, cost_usd) VALUES ($1, $2, $3)
     ON CONFLICT (address_id, day) DO UPDATE SET cost_usd = counters_day.cost_usd + excluded.cost_usd RETURNING cost_usd`,
    [agent.address_id, day, amount],
  )) as { cost_usd: number }
  // Also by hour (the per-hour chart): after the day row, the order every counter writer uses.
  await tx.run(
    `INSERT INTO counters_hour (address_id, hour, cost_usd) VALUES ($1, $2, $3)
     ON CONFLICT (address_id, hour) DO UPDATE SET cost_usd = counters_hour.cost_usd + excluded.cost_usd`,
    [agent.address_id, hour, amount],
  )
  if (agent.policy_version === 0) return
  const policies = await tx.rows<PolicyRow>(EFFECTIVE_POLICIES, [[agent.address_id]])
  if (policies.length === 0) return
  const counters = (await readCounters(db, (sql, params) => tx.rows(sql, params), [agent.address_id], now)).get(
    agent.address_id,
  ) as AgentCounters
  const outcome = rule({
    agent,
    policies,
    counters: { ...counters, cost_day: added.cost_usd },
    cost_before: added.cost_usd - amount,
    now,
  })
  if (outcome.kill && agent.killed_at === null && !rowLocked) throw new NeedsRowLock('cost ceiling kill needs the agent row')
  for (const t of outcome.thresholds) {
    const inserted = await tx.run(
      'INSERT INTO budget_alerts (policy_id, day, percent, at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING',
      [t.policy_id, day, t.percent, now],
    )
    if (inserted === 1) {
      queueMeshEvent(db, tx, thresholdEvent(agent, t, now))
    }
  }
  if (outcome.kill) {
    const actor = `policy:${outcome.kill.policy_id}`
    const after = await tx.one<AgentRow>(KILL, [agent.address_id, now, outcome.kill.reason, actor])
    if (after) {
      await recordKill(db, tx, agent, after, { policy_id: outcome.kill.policy_id, record: outcome.kill.record })
    }
  }
}

export async function getCounters(db: PgDb, addressId: string, now: number): Promise<AgentCounters> {
  const counters = await readCounters(db, (sql, params) => db.read(sql, params), [addressId], now)
  return counters.get(addressId) as AgentCounters
}

export async function fleetTotals(db: PgDb, fromDay: string, toDay: string): Promise<{ sent: number; cost_usd: number }> {
  const row = await db.readOne<{ sent: number; cost_usd: number }>(
    `SELECT coalesce(sum(sent), 0)::bigint AS sent, coalesce(sum(cost_usd), 0)::double precision AS cost_usd FROM (
       SELECT sent, cost_usd FROM counters_day WHERE day BETWEEN $1 AND $2
       UNION ALL
       SELECT sent, 0 FROM counter_shards WHERE hour >= $1 || 'T00' AND hour <= $2 || 'T23') c`,
    [fromDay, toDay],
  )
  return { sent: Number(row?.sent ?? 0), cost_usd: Number(row?.cost_usd ?? 0) }
}

export async function sumCounters(db: PgDb, fromDay: string, toDay: string, addressIds: readonly string[]) {
  const rows = await db.read<{ address_id: string; sent: number; received: number; cost_usd: number }>(
    `SELECT address_id, sum(sent)::bigint AS sent, sum(received)::bigint AS received, sum(cost_usd) AS cost_usd FROM (
       SELECT address_id, sent, received, cost_usd FROM counters_day WHERE address_id = ANY($3::text[]) AND day >= $1 AND day <= $2
       UNION ALL
       SELECT address_id, sent, received, 0 FROM counter_shards
       WHERE address_id = ANY($3::text[]) AND hour >= $1 || 'T00' AND hour <= $2 || 'T23') c
     GROUP BY address_id`,
    [fromDay, toDay, addressIds],
  )
  return new Map(rows.map((r) => [r.address_id, { sent: r.sent, received: r.received, cost_usd: r.cost_usd }]))
}

export async function listHourCounters(db: PgDb, addressId: string, fromHour: string, toHour: string): Promise<HourCounters[]> {
  return db.read<HourCounters>(
    `SELECT hour, sum(sent)::bigint AS sent, sum(received)::bigint AS received, sum(cost_usd)::double precision AS cost_usd FROM (
       SELECT hour, sent, received, cost_usd FROM counters_hour WHERE address_id = $1 AND hour >= $2 AND hour <= $3
       UNION ALL
       SELECT hour, sent, received, 0 FROM counter_shards WHERE address_id = $1 AND hour >= $2 AND hour <= $3) c
     GROUP BY hour ORDER BY hour`,
    [addressId, fromHour, toHour],
  )
}
