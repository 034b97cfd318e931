// The SQLite store alone, in this process: the writes of one intent (accept, claim, resolve, as
// the gateway issues them, 8 intents per group-commit batch), CPU time per intent. No HTTP, no
// second process: the figure a shared, busy machine disturbs least, for A/B runs of two builds
// (`--server <other build's dist/index.js>`).
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { SERVER_ENTRY } from './lib/gateway.mjs'
import { num } from './lib/util.mjs'

export const description = 'the SQLite store alone: CPU µs and statements per intent (accept + claim + resolve), in process'

export const options = {
  intents: { type: 'string', help: 'intents per run (default 20000; --quick: 4000)' },
  batch: { type: 'string', help: 'intents per group-commit batch (default 8)' },
  repeat: { type: 'string', help: 'runs, each on a fresh database; the median is reported (default 3)' },
  server: { type: 'string', help: 'server entry whose store to measure (default packages/server/dist/index.js)' },
}

async function once(dist, cfg) {
  const { SqliteStore } = await import(pathToFileURL(join(dist, 'store/sqlite/sqlite-store.js')).href)
  const { acceptRule, deliveryRule, settleRule } = await import(pathToFileURL(join(dist, 'core/kill-switch/rules.js')).href)
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-bench-store-'))
  const store = new SqliteStore({ dataDir: dir, durability: 'normal', hashAudit: () => '0'.repeat(64), alertFor: () => null })
  try {
    const from = 'agent://bench/store/sender'
    const to = 'agent://bench/store/worker'
    let n = 0
    const intent = () => ({
      intent_id: `int_bench${String(++n).padStart(16, '0')}`,
      intent_type: 'bench.store.v1',
      from_agent: from,
      to_agent: to,
      payload: '{"n":1}',
      correlation_id: null,
      reply_to: null,
      deadline_at: null,
      max_delivery_attempts: 3,
      trace_id: null,
    })
    const accept = () =>
      store.acceptIntent({ intent: intent(), actor: 'key:bench', now: Date.now(), idempotency: null, decide: acceptRule, onIdempotencyMismatch: () => {} })
    const round = async () => {
      const accepted = await Promise.all(Array.from({ length: cfg.batch }, accept))
      const worker = accepted[0].intent.to_address_id
      const claim = await store.claimDeliveries({
        address_id: worker,
        instance_id: 'i-0',
        max_in_flight: 1000,
        lease_ms: 60_000,
        max_batch: 64,
        now: Date.now(),
        decide: deliveryRule,
      })
      await Promise.all(
        claim.deliveries.map((d) =>
          store.updateIntent({
            intent_id: d.intent.intent_id,
            now: Date.now(),
            actor: 'key:bench',
            instance_id: 'i-0',
            decide: ({ recipient, quarantine }) => {
              settleRule(recipient, quarantine)
              return { status: 'COMPLETED', delivery_state: 'done', lease_expires_at: null, event_type: 'intent.completed', event_details: null }
            },
          }),
        ),
      )
    }
    for (let i = 0; i < 200; i += 1) await round() // warm-up
    const stats0 = store.stats?.() ?? null
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    const rounds = Math.ceil(cfg.intents / cfg.batch)
    for (let i = 0; i < rounds; i += 1) await round()
    const cpu = process.cpuUsage(cpu0)
    const wall = performance.now() - t0
    const stats1 = store.stats?.() ?? null
    const intents = rounds * cfg.batch
    return {
      intents,
      cpu_us_per_intent: Math.round(((cpu.user + cpu.system) / intents) * 10) / 10,
      wall_us_per_intent: Math.round(((wall * 1000) / intents) * 10) / 10,
      statements_per_intent: stats0 && stats1 ? Math.round(((stats1.statements - stats0.statements) / intents) * 100) / 100 : null,
      transaction_statements_per_intent:
        stats0 && stats1 ? Math.round(((stats1.transaction_statements - stats0.transaction_statements) / intents) * 100) / 100 : null,
    }
  } finally {
    await store.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

export async function run(opts) {
  const entry = resolve(opts.server ?? SERVER_ENTRY)
  const dist = dirname(entry)
  const cfg = {
    intents: num(opts.intents, opts.quick ? 4_000 : 20_000, 'intents'),
    batch: num(opts.batch, 8, 'batch'),
    repeat: Math.round(num(opts.repeat, 3, 'repeat')),
  }
  const runs = []
  for (let i = 0; i < cfg.repeat; i += 1) runs.push(await once(dist, cfg))
  const median = [...runs].sort((a, b) => a.cpu_us_per_intent - b.cpu_us_per_intent)[Math.floor((runs.length - 1) / 2)]
  return {
    benchmark: 'store',
    description,
    config: { ...cfg, server: entry },
    ok: true,
    table: {
      columns: [
        { key: 'build', title: 'build', align: 'left' },
        { key: 'cpu', title: 'CPU µs/intent (median)' },
        { key: 'runs', title: 'runs' },
        { key: 'spi', title: 'statements/intent' },
      ],
      rows: [
        {
          build: entry,
          cpu: median.cpu_us_per_intent,
          runs: runs.map((r) => r.cpu_us_per_intent).join(' / '),
          spi: median.statements_per_intent === null ? '–' : `${median.statements_per_intent} (+${median.transaction_statements_per_intent} tx)`,
        },
      ],
    },
    notes: [`${median.intents} intents per run, ${cfg.batch} per batch; wall ${median.wall_us_per_intent} µs/intent (median run)`],
    runs,
  }
}
