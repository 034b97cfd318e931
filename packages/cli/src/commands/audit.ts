import type { AuditEntry } from '@chokepoint/sdk'
import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { green, printJson, red, table } from '../output.js'

export const AUDIT_HELP = `Usage: chokepoint audit list [--action <prefix>] [--target <t>] [--limit n] [--after-seq n]
       chokepoint audit verify
       chokepoint audit export [--format jsonl|csv]

The tamper-evident audit trail: every kill, resume, policy and key change. "verify" recomputes the
hash chain and names the first broken entry (exit 1 when broken). "export" writes every entry.

Examples:
  chokepoint audit list --action agent.
  chokepoint audit verify
  chokepoint audit export --format csv > audit.csv

${CONNECTION_HELP}`

export async function audit(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    action: { type: 'string' },
    target: { type: 'string' },
    limit: { type: 'string' },
    'after-seq': { type: 'string' },
    format: { type: 'string' },
  })
  if (values.help) {
    process.stdout.write(AUDIT_HELP)
    return EXIT.ok
  }
  const [sub = 'list'] = positionals
  const op = operatorFrom(values)
  if (sub === 'list') {
    const res = await op.audit.list({
      limit: values.limit === undefined ? 100 : Number(values.limit),
      ...(values['after-seq'] ? { after_seq: Number(values['after-seq']) } : {}),
      ...(values.action ? { action_prefix: values.action } : {}),
      ...(values.target ? { target: values.target } : {}),
    })
    if (values.json) printJson(res)
    else {
      process.stdout.write(
        table(
          ['seq', 'at', 'actor', 'action', 'target', 'reason'],
          res.entries.map((e) => [String(e.seq), e.at, e.actor, e.action, e.target, e.reason ?? '']),
        ),
      )
    }
    return EXIT.ok
  }
  if (sub === 'verify') {
    const res = await op.audit.verify()
    if (values.json) printJson(res)
    else if (res.valid) process.stdout.write(`${green('valid')}: ${res.entries} entries, hash chain intact\n`)
    else process.stdout.write(`${red('BROKEN')}: the chain breaks at seq ${res.first_broken_seq} (${res.entries} entries checked)\n`)
    return res.valid ? EXIT.ok : EXIT.failure
  }
  if (sub === 'export') {
    const format = values.format ?? 'jsonl'
    if (format !== 'jsonl' && format !== 'csv') throw new UsageError('--format must be jsonl or csv')
    const columns = ['seq', 'at', 'actor', 'action', 'target', 'reason', 'before', 'after', 'prev_hash', 'hash'] as const
    if (format === 'csv') process.stdout.write(`${columns.join(',')}\n`)
    let after = 0
    for (;;) {
      const page = await op.audit.list({ limit: 500, after_seq: after })
      for (const e of page.entries) {
        process.stdout.write(format === 'jsonl' ? `${JSON.stringify(e)}\n` : `${columns.map((c) => csvCell(e, c)).join(',')}\n`)
        after = e.seq
      }
      if (page.entries.length < 500) break
    }
    return EXIT.ok
  }
  throw new UsageError(`unknown subcommand "${sub}" (list, verify, export)`)
}

function csvCell(entry: AuditEntry, column: keyof AuditEntry): string {
  const value = entry[column]
  const text = value === null || value === undefined ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value)
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}
