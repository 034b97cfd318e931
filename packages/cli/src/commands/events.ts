import { iterSSE } from '@chokepoint/sdk'
import { CONNECTION_HELP, UsageError, connection, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { ago, dim, printJson, table } from '../output.js'

export const EVENTS_HELP = `Usage: chokepoint events [--follow] [--type <event_type>] [--agent <address>] [--limit n]

Mesh events (kills, resumes, auto-kills, health changes, policy changes, budget thresholds),
newest first; --follow streams new ones as they happen (Ctrl-C to stop).

Examples:
  chokepoint events --type agent.killed
  chokepoint events --follow

${CONNECTION_HELP}`

export async function events(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    follow: { type: 'boolean', short: 'f' },
    type: { type: 'string' },
    agent: { type: 'string' },
    limit: { type: 'string' },
  })
  if (values.help) {
    process.stdout.write(EVENTS_HELP)
    return EXIT.ok
  }
  if (positionals.length > 0) throw new UsageError(`unexpected arguments: ${positionals.join(' ')}`)
  const op = operatorFrom(values)
  if (!values.follow) {
    const res = await op.events.list({
      limit: values.limit === undefined ? 50 : Number(values.limit),
      ...(values.type ? { event_type: values.type } : {}),
      ...(values.agent ? { address: values.agent } : {}),
    })
    if (values.json) printJson(res)
    else {
      process.stdout.write(
        table(
          ['when', 'event', 'agent', 'by', 'details'],
          res.events.map((e) => [ago(e.created_at), e.event_type, e.address ?? '-', e.actor_id, JSON.stringify(e.details ?? {})]),
        ),
      )
    }
    return EXIT.ok
  }
  const controller = new AbortController()
  process.once('SIGINT', () => controller.abort())
  const { baseURL, apiKey } = connection(values)
  const res = await fetch(`${baseURL}/v1/mesh/events/stream`, {
    headers: { 'x-api-key': apiKey },
    signal: controller.signal,
  })
  if (!res.ok || !res.body) {
    await op.events.list({ limit: 1 }) // surfaces the typed error (401/403) with its message
    throw new Error(`the event stream answered HTTP ${res.status}`)
  }
  process.stderr.write(dim(`following mesh events on ${baseURL} (Ctrl-C to stop)\n`))
  try {
    for await (const message of iterSSE(res.body)) {
      const e = JSON.parse(message.data) as { event_type: string; address: string | null; actor_id: string; details: unknown; created_at: string }
      if (values.type && e.event_type !== values.type) continue
      if (values.agent && e.address !== values.agent) continue
      if (values.json) process.stdout.write(`${JSON.stringify(e)}\n`)
      else process.stdout.write(`${e.created_at}  ${e.event_type.padEnd(22)} ${(e.address ?? '-').padEnd(34)} ${e.actor_id}  ${JSON.stringify(e.details ?? {})}\n`)
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error
  }
  return EXIT.ok
}
