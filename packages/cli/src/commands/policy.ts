import type { PolicyBody } from '@chokepoint/sdk'
import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { printJson, table } from '../output.js'
import { describePolicy } from './agents.js'

export const POLICY_HELP = `Usage: chokepoint policy list <agent>
       chokepoint policy set <agent> --rate <n>/h|<n>/day [--direction send|receive] [--on-breach block|kill]
       chokepoint policy set <agent> --cost <usd>/day [--on-breach block|kill] [--alert-at 50,80,100]
       chokepoint policy set <agent> --allow <glob,…> | --deny <glob,…> [--direction send|receive]
       chokepoint policy set <agent> --deadman <n>s|<n>m|<n>h [--on-trigger kill|alert]
       chokepoint policy set … --add
       chokepoint policy rm <policy_id>
       chokepoint policy evaluate --from <agent> --to <agent> --type <intent_type>

Policies stop an agent before anyone is paged. Globs: "*" is one dotted segment, "**" one or more.
"set" creates the policy, or replaces the agent's existing policy of that kind (and direction)
in place; --add creates a second one beside it instead.

Examples:
  chokepoint policy set agent://acme/prod/deployer --rate 500/h --on-breach kill
  chokepoint policy set agent://acme/prod/deployer --cost 50/day --on-breach kill
  chokepoint policy set agent://acme/prod/deployer --allow 'deploy.*.v1'
  chokepoint policy set agent://acme/prod/deployer --deadman 5m --on-trigger kill   (no heartbeat for 5 min → killed)
  chokepoint policy evaluate --from agent://acme/prod/deployer --to agent://acme/prod/api --type deploy.service.v1

${CONNECTION_HELP}`

export async function policy(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    rate: { type: 'string' },
    cost: { type: 'string' },
    deadman: { type: 'string' },
    'on-trigger': { type: 'string' },
    allow: { type: 'string' },
    deny: { type: 'string' },
    direction: { type: 'string' },
    'on-breach': { type: 'string' },
    'alert-at': { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    type: { type: 'string' },
    add: { type: 'boolean' },
  })
  if (values.help) {
    process.stdout.write(POLICY_HELP)
    return EXIT.ok
  }
  const [sub, target] = positionals
  const op = operatorFrom(values)
  switch (sub) {
    case 'list': {
      if (!target) throw new UsageError('policy list needs an agent')
      const res = await op.policies.list(target)
      if (values.json) printJson(res)
      else {
        process.stdout.write(
          table(
            ['policy', 'kind', 'rule', 'enabled', 'version'],
            res.policies.map((p) => [p.policy_id, p.kind, describePolicy(p as never), String(p.enabled), String(p.version)]),
          ),
        )
      }
      return EXIT.ok
    }
    case 'set': {
      if (!target) throw new UsageError('policy set needs an agent')
      const body = policyBody(values)
      // "set" is create-or-replace: the policy of the same kind (and direction) is replaced in
      // place, guarded by its version; --add creates another one beside it.
      const same = values.add ? [] : (await op.policies.list(target)).policies.filter((p) => sameSlot(p, body))
      if (same.length > 1) {
        process.stderr.write(
          `chokepoint policy: ${target} has ${same.length} ${slotName(body)} policies (${same.map((p) => p.policy_id).join(', ')}); ` +
            `remove the extra ones with "chokepoint policy rm <policy_id>", or pass --add to create another\n`,
        )
        return EXIT.failure
      }
      const existing = same[0]
      const res = existing
        ? await op.policies.update(existing.policy_id, body, { version: existing.version })
        : await op.policies.create(target, body)
      if (values.json) printJson(res)
      else {
        const verb = existing ? 'replaced' : 'created'
        process.stdout.write(`${verb} ${res.policy.policy_id} on ${target}: ${describePolicy(res.policy as never)}\n`)
      }
      return EXIT.ok
    }
    case 'rm': {
      if (!target) throw new UsageError('policy rm needs a policy_id')
      const res = await op.policies.delete(target)
      if (values.json) printJson(res)
      else process.stdout.write(`deleted ${target}\n`)
      return EXIT.ok
    }
    case 'evaluate': {
      if (!values.from || !values.to || !values.type) throw new UsageError('policy evaluate needs --from, --to and --type')
      const res = await op.policies.evaluate({ from_agent: values.from, to_agent: values.to, intent_type: values.type })
      if (values.json) printJson(res)
      else process.stdout.write(`${res.decision}${res.policy_id ? ` by ${res.policy_id}` : ''}: ${res.reason}\n`)
      return EXIT.ok
    }
    default:
      throw new UsageError(`unknown or missing subcommand "${sub ?? ''}" (list, set, rm, evaluate)`)
  }
}

function policyBody(v: Record<string, string | boolean | undefined>): PolicyBody {
  const chosen = ['rate', 'cost', 'allow', 'deny', 'deadman'].filter((k) => v[k] !== undefined)
  if (chosen.length !== 1) throw new UsageError('policy set needs exactly one of --rate, --cost, --allow, --deny, --deadman')
  if (v['deadman'] !== undefined) {
    const m = /^(\d+)\s*(s|m|h)?$/.exec(String(v['deadman']))
    if (!m) throw new UsageError('--deadman looks like 300s, 5m or 1h')
    const seconds = Number(m[1]) * ({ s: 1, m: 60, h: 3600 } as const)[(m[2] ?? 's') as 's' | 'm' | 'h']
    const onTrigger = (v['on-trigger'] as string | undefined) ?? 'kill'
    if (onTrigger !== 'kill' && onTrigger !== 'alert') throw new UsageError('--on-trigger must be kill or alert')
    return { kind: 'deadman', silent_after_seconds: seconds, on_trigger: onTrigger }
  }
  const onBreach = (v['on-breach'] as string | undefined) ?? 'block'
  if (onBreach !== 'block' && onBreach !== 'kill') throw new UsageError('--on-breach must be block or kill')
  const direction = (v['direction'] as string | undefined) ?? 'send'
  if (direction !== 'send' && direction !== 'receive') throw new UsageError('--direction must be send or receive')
  if (v['rate'] !== undefined) {
    const m = /^(\d+)\s*\/\s*(h|hour|d|day)$/.exec(String(v['rate']))
    if (!m) throw new UsageError('--rate looks like 500/h or 10000/day')
    const n = Number(m[1])
    return {
      kind: 'rate',
      direction,
      on_breach: onBreach,
      ...(m[2]?.startsWith('h') ? { max_per_hour: n } : { max_per_day: n }),
    } as PolicyBody
  }
  if (v['cost'] !== undefined) {
    const m = /^\$?(\d+(?:\.\d+)?)\s*(?:\/\s*(?:d|day))?$/.exec(String(v['cost']))
    if (!m) throw new UsageError('--cost looks like 50/day')
    const alertAt = v['alert-at'] === undefined ? undefined : String(v['alert-at']).split(',').map(Number)
    if (alertAt?.some((p) => !Number.isInteger(p))) throw new UsageError('--alert-at looks like 50,80,100')
    return {
      kind: 'cost',
      max_cost_per_day_usd: Number(m[1]),
      on_breach: onBreach,
      ...(alertAt ? { alert_at_percent: alertAt } : {}),
    } as PolicyBody
  }
  const allow = v['allow'] !== undefined
  const patterns = String(allow ? v['allow'] : v['deny']).split(',').map((p) => p.trim()).filter(Boolean)
  return { kind: 'action', direction, mode: allow ? 'allowlist' : 'denylist', patterns } as PolicyBody
}

/** The policy "slot" set replaces: same kind, and for rate and action policies the same direction. */
function sameSlot(existing: { kind: string; direction?: string | undefined }, body: PolicyBody): boolean {
  if (existing.kind !== body.kind) return false
  if (body.kind === 'cost' || body.kind === 'deadman') return true
  return (existing.direction ?? 'send') === ((body as { direction?: string }).direction ?? 'send')
}

function slotName(body: PolicyBody): string {
  return body.kind === 'cost' || body.kind === 'deadman' ? body.kind : `${body.kind} (${(body as { direction?: string }).direction ?? 'send'})`
}
