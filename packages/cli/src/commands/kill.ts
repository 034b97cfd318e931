import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { bold, green, printJson, red } from '../output.js'

export const KILL_HELP = `Usage: chokepoint kill <address|addr_id> [--reason "…"] [--cancel-pending]

Kill an agent on every instance at once. From the moment this returns, the gateway refuses its
sends, deliveries, acks and resolves (403 agent_killed) and closes its open streams. Work to it and
its undelivered output are held for a resume (or, with --cancel-pending, its undelivered output is
canceled).

Examples:
  chokepoint kill agent://acme/prod/deployer --reason "deployed 47 services instead of 3"

${CONNECTION_HELP}`

export const RESUME_HELP = `Usage: chokepoint resume <address|addr_id> [--reason "…"]

Resume a killed agent: its traffic flows again and held work is redelivered, oldest first, paced.

Examples:
  chokepoint resume agent://acme/prod/deployer --reason "config fixed"

${CONNECTION_HELP}`

export async function kill(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, { reason: { type: 'string' }, 'cancel-pending': { type: 'boolean' } })
  if (values.help) {
    process.stdout.write(KILL_HELP)
    return EXIT.ok
  }
  const target = single(positionals, 'kill')
  const res = await operatorFrom(values).agents.kill(target, {
    ...(values.reason ? { reason: values.reason } : {}),
    ...(values['cancel-pending'] ? { cancel_pending: true } : {}),
  })
  if (values.json) printJson(res)
  else {
    process.stdout.write(
      `${bold(red('killed'))} ${res.address} at ${res.killed_at}; ${res.held_intents} intent(s) held for resume\n`,
    )
  }
  return EXIT.ok
}

export async function resume(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, { reason: { type: 'string' } })
  if (values.help) {
    process.stdout.write(RESUME_HELP)
    return EXIT.ok
  }
  const target = single(positionals, 'resume')
  const res = await operatorFrom(values).agents.resume(target, values.reason ? { reason: values.reason } : {})
  if (values.json) printJson(res)
  else {
    process.stdout.write(
      `${bold(green('resumed'))} ${res.address}; redelivering ${res.redelivering} held intent(s); health ${res.health_status}\n`,
    )
  }
  return EXIT.ok
}

function single(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} needs exactly one agent (address or addr_ id)`)
  return positionals[0] as string
}
