import { parseArgs } from 'node:util'
import { MigrateStoreError, migrateStore, redactDatabaseUrl, type MigrateStoreProgress } from '@chokepoint/server'
import { UsageError } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { bold, dim, green, printJson } from '../output.js'

export const MIGRATE_STORE_HELP = `Usage: chokepoint migrate-store --from sqlite:<dir> --to postgres://user:password@host:5432/db [--json]

Copy a SQLite deployment into an empty PostgreSQL database, to run replicas on it. Everything is
copied as it is: agents, API keys (their hashes: the same keys keep working), intents with their
events and delivery state (queued, leased, held by a kill), idempotency keys, policies and their
counters, kills, the audit trail (its hash chain stays valid), mesh events, instances, webhooks
and the alert outbox.

Stop the gateway first: a data directory a running gateway holds is refused, and none can start
on it while the copy runs. The target database must exist and be empty (never start a gateway on
it before the copy); its schema is created by the same migrations "serve" runs. The copy is one
transaction, checked table by table against the source (row counts, a digest of the rows, the
audit chain) before it commits: on any failure the target is left empty. The SQLite data is not
changed; keep it until the PostgreSQL deployment has proven itself.

Options:
  --from sqlite:<dir>  the SQLite data directory (the --data of "serve", e.g. sqlite:./data)
  --to <url>           the PostgreSQL database (postgres:// or postgresql://)
  --json               print the summary as JSON (progress goes to stderr)
  -h, --help           show this help

Examples:
  chokepoint migrate-store --from sqlite:./data --to postgres://chokepoint:secret@db:5432/chokepoint
  chokepoint migrate-store --from sqlite:/var/lib/chokepoint --to "$CHOKEPOINT_DATABASE_URL" --json
  # then: chokepoint serve --database-url postgres://…  (as many replicas as you like)

Exit codes: 0 copied, 1 refused or failed (target not empty, gateway still running, unreachable
database, schema mismatch; nothing is written), 2 usage.
`

export async function migrateStoreCommand(argv: string[]): Promise<CommandResult> {
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }))
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  if (values.help) {
    process.stdout.write(MIGRATE_STORE_HELP)
    return EXIT.ok
  }
  if (values.from === undefined) throw new UsageError('--from sqlite:<dir> is required')
  if (values.to === undefined) throw new UsageError('--to postgres://… is required')
  const m = /^sqlite:(.+)$/.exec(values.from)
  if (!m) throw new UsageError(`--from must be sqlite:<data directory>, got "${values.from}"`)
  const dataDir = m[1] as string
  const databaseUrl = values.to.trim()
  if (!/^postgres(ql)?:\/\//.test(databaseUrl)) throw new UsageError('--to must be a postgres:// URL')
  try {
    new URL(databaseUrl)
  } catch {
    throw new UsageError('--to is not a valid URL (postgres://user:password@host:port/database)')
  }

  const json = Boolean(values.json)
  // Progress: a line per table; on a terminal the current table's count updates in place.
  const progressOut = json ? process.stderr : process.stdout
  const live = Boolean(progressOut.isTTY)
  const line = (p: MigrateStoreProgress): string =>
    `  ${p.table.padEnd(18)} ${p.copied.toLocaleString('en-US').padStart(12)} row${p.copied === 1 ? '' : 's'}`
  const onProgress = (p: MigrateStoreProgress): void => {
    if (p.done) progressOut.write(`${live ? '\r\x1b[K' : ''}${line(p)}\n`)
    else if (live) progressOut.write(`\r\x1b[K${line(p)} of ${p.total.toLocaleString('en-US')}`)
  }
  progressOut.write(`Copying sqlite:${dataDir} → ${redactDatabaseUrl(databaseUrl)}\n`)
  let summary
  try {
    summary = await migrateStore({ dataDir, databaseUrl, onProgress })
  } catch (error) {
    if (live) progressOut.write('\n')
    if (error instanceof MigrateStoreError) {
      process.stderr.write(`chokepoint migrate-store: ${error.message}\n`)
      if (json) printJson({ ok: false, error: { code: error.code, message: error.message } })
      return EXIT.failure
    }
    throw error
  }
  if (json) {
    printJson({
      ok: true,
      from: { engine: 'sqlite', data_dir: dataDir },
      to: { engine: 'postgres', database: redactDatabaseUrl(databaseUrl) },
      ...summary,
    })
    return EXIT.ok
  }
  const out = process.stdout
  const a = summary.audit
  out.write(
    `\n${green('copied')}: ${bold(summary.total_rows.toLocaleString('en-US'))} rows in ${summary.tables.length} tables, ` +
      `schema version ${summary.schema_version}, ${(summary.duration_ms / 1000).toFixed(1)} s\n` +
      `audit trail: ${a.entries} entries, ${a.valid ? 'hash chain intact' : `chain broken at seq ${a.first_broken_seq} (as in the source)`}` +
      `${a.head_hash ? `, head ${a.head_hash.slice(0, 16)}…` : ''}\n` +
      dim('verified before commit: row counts and row digests of every table, the audit chain\n') +
      `\nNext: chokepoint serve --database-url ${redactDatabaseUrl(databaseUrl)}   (keep ${dataDir} until you no longer need it)\n`,
  )
  return EXIT.ok
}
