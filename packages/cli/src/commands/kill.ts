import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { bold, green, printJson, red } from '../output.js'
import type { FleetSelector } from '@chokepoint/sdk'

export const KILL_HELP = `Usage: chokepoint kill <address|addr_id> [--reason "…"] [--cancel-pending]
       chokepoint kill <address|addr_id> --instance <instance_id> [--reason "…"]
       chokepoint kill --selector 'agent://acme/prod/*' [--label team=payments …] [--reason "…"] [--dry-run] [--confirm-all]

Kill an agent on every instance at once. From the moment this returns, the gateway refuses its
sends, deliveries, acks and resolves (403 agent_killed) and closes its open streams. Work to it and
its undelivered output are held for a resume (or, with --cancel-pending, its undelivered output is
canceled).

By selector, every matching agent is killed in one transaction: --selector is a glob over the
address's segments (* = one segment, ** = one or more: agent://acme/** is an org), each --label
key=value must match too. The fleet kill stands until resumed by the same selector: agents that
appear under it later start killed. --dry-run lists what would be killed; a selector that matches
every agent needs --confirm-all.

With --instance, only that instance (its x-instance-id) is quarantined: its streams are cut, it can
no longer receive, ack or resolve, its leased intents go to the agent's other instances at once,
and sends that carry its x-instance-id are refused. Sends without x-instance-id cannot be told
apart and are not refused: kill the agent to stop them all. The instance need not have been seen.

Examples:
  chokepoint kill agent://acme/prod/deployer --reason "deployed 47 services instead of 3"
  chokepoint kill agent://acme/prod/deployer --instance deployer-7f9c --reason "bad node"
  chokepoint kill --selector 'agent://acme/prod/*' --label team=payments --reason "bad release 4.2" --dry-run

${CONNECTION_HELP}`

export const RESUME_HELP = `Usage: chokepoint resume <address|addr_id> [--reason "…"]
       chokepoint resume <address|addr_id> --instance <instance_id> [--reason "…"]
       chokepoint resume --selector 'agent://acme/prod/*' [--label team=payments …] [--reason "…"] [--dry-run] [--confirm-all]

Resume a killed agent: its traffic flows again and held work is redelivered, oldest first, paced.
By selector: every killed agent it matches, and the standing fleet kills with that selector end.
With --instance: lift that instance's quarantine (a no-op when it is not quarantined).

Examples:
  chokepoint resume agent://acme/prod/deployer --reason "config fixed"
  chokepoint resume agent://acme/prod/deployer --instance deployer-7f9c

${CONNECTION_HELP}`

const SELECTOR_OPTIONS = {
  selector: { type: 'string' },
  label: { type: 'string', multiple: true },
  'dry-run': { type: 'boolean' },
  'confirm-all': { type: 'boolean' },
} as const

type SelectorValues = { selector?: string | undefined; label?: string[] | undefined; 'dry-run'?: boolean | undefined; 'confirm-all'?: boolean | undefined }

/** The fleet request of --selector/--label, or null when neither is given (one agent). */
function fleetRequest(values: SelectorValues, positionals: string[], command: string): { selector: FleetSelector; dry_run?: true; confirm_all?: true } | null {
  if (values.selector === undefined && values.label === undefined) {
    if (values['dry-run'] || values['confirm-all']) throw new UsageError('--dry-run and --confirm-all need --selector or --label')
    return null
  }
  if (positionals.length > 0) throw new UsageError(`${command} takes an agent or --selector/--label, not both`)
  const labels: Record<string, string> = {}
  for (const pair of values.label ?? []) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new UsageError(`--label needs key=value (got "${pair}")`)
    labels[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return {
    selector: {
      ...(values.selector === undefined ? {} : { address: values.selector }),
      ...(Object.keys(labels).length === 0 ? {} : { labels }),
    },
    ...(values['dry-run'] ? { dry_run: true as const } : {}),
    ...(values['confirm-all'] ? { confirm_all: true as const } : {}),
  }
}

const list = (refs: { address: string }[], extra: (r: never) => string = () => ''): string =>
  refs.map((r) => `  ${r.address}${extra(r as never)}\n`).join('')

export async function kill(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    reason: { type: 'string' },
    'cancel-pending': { type: 'boolean' },
    instance: { type: 'string' },
    ...SELECTOR_OPTIONS,
  })
  if (values.help) {
    process.stdout.write(KILL_HELP)
    return EXIT.ok
  }
  if (values.instance !== undefined) {
    if (values['cancel-pending']) throw new UsageError('--cancel-pending applies to a whole agent, not to --instance')
    instanceOnly(values, 'kill')
    const target = single(positionals, 'kill')
    const res = await operatorFrom(values).agents.killInstance(target, values.instance, values.reason ? { reason: values.reason } : {})
    if (values.json) printJson(res)
    else {
      process.stdout.write(
        res.changed
          ? `${bold(red('quarantined'))} instance ${res.instance_id} of ${res.address}; ${res.requeued} leased intent(s) returned to its other instances
`
          : `instance ${res.instance_id} of ${res.address} was already quarantined (since ${res.quarantined_at})
`,
      )
    }
    return EXIT.ok
  }
  const fleet = fleetRequest(values, positionals, 'kill')
  if (fleet) {
    const res = await operatorFrom(values).agents.killSelector({
      ...fleet,
      ...(values.reason ? { reason: values.reason } : {}),
      ...(values['cancel-pending'] ? { cancel_pending: true } : {}),
    })
    if (values.json) printJson(res)
    else if (res.dry_run) {
      process.stdout.write(
        `dry run: would kill ${res.killed.length} agent(s), ${res.already_killed.length} already killed` +
          `${res.requires_confirm_all ? ' (matches every agent: needs --confirm-all)' : ''}\n${list(res.killed)}`,
      )
    } else {
      process.stdout.write(
        `${bold(red('killed'))} ${res.killed.length} agent(s) (fleet kill ${res.fleet_kill_id}, standing until resumed); ` +
          `${res.already_killed.length} already killed\n` +
          list(res.killed, (r: { held_intents?: number }) => `: ${r.held_intents ?? 0} intent(s) held`),
      )
    }
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
  const { values, positionals } = parse(argv, { reason: { type: 'string' }, instance: { type: 'string' }, ...SELECTOR_OPTIONS })
  if (values.help) {
    process.stdout.write(RESUME_HELP)
    return EXIT.ok
  }
  if (values.instance !== undefined) {
    instanceOnly(values, 'resume')
    const target = single(positionals, 'resume')
    const res = await operatorFrom(values).agents.resumeInstance(target, values.instance, values.reason ? { reason: values.reason } : {})
    if (values.json) printJson(res)
    else {
      process.stdout.write(
        res.changed
          ? `${bold(green('resumed'))} instance ${res.instance_id} of ${res.address}
`
          : `instance ${res.instance_id} of ${res.address} was not quarantined
`,
      )
    }
    return EXIT.ok
  }
  const fleet = fleetRequest(values, positionals, 'resume')
  if (fleet) {
    const res = await operatorFrom(values).agents.resumeSelector({ ...fleet, ...(values.reason ? { reason: values.reason } : {}) })
    if (values.json) printJson(res)
    else {
      const verb = res.dry_run ? 'dry run: would resume' : bold(green('resumed'))
      process.stdout.write(
        `${verb} ${res.resumed.length} agent(s); fleet kills ended: ${res.ended_fleet_kills.join(', ') || 'none'}` +
          `${res.requires_confirm_all ? ' (matches every agent: needs --confirm-all)' : ''}\n` +
          list(res.resumed, (r: { redelivering?: number }) => (r.redelivering === undefined ? '' : `: redelivering ${r.redelivering}`)),
      )
    }
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

/** --instance names one instance of one agent: no selector. */
function instanceOnly(values: SelectorValues, command: string): void {
  if (values.selector !== undefined || values.label !== undefined || values['dry-run'] || values['confirm-all']) {
    throw new UsageError(`${command} --instance takes one agent, not --selector/--label/--dry-run/--confirm-all`)
  }
}

function single(positionals: string[], command: string): string {
  if (positionals.length !== 1) throw new UsageError(`${command} needs exactly one agent (address or addr_ id)`)
  return positionals[0] as string
}
