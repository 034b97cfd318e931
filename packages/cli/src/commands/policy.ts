import { readFileSync } from 'node:fs'
import type { PolicyBody } from '@chokepoint/sdk'
import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { printJson, table } from '../output.js'
import { describePolicy } from './agents.js'

export const POLICY_HELP = `Usage: chokepoint policy list <agent>
       chokepoint policy set <agent> --rate <n>/h|<n>/day [--direction send|receive|egress] [--on-breach block|kill]
       chokepoint policy set <agent> --cost <usd>/day [--on-breach block|kill] [--alert-at 50,80,100]
       chokepoint policy set <agent> --allow <glob,…> | --deny <glob,…> [--direction send|receive]
       chokepoint policy set <agent> --deadman <n>s|<n>m|<n>h [--on-trigger kill|alert]
       chokepoint policy set <agent> --allow-tools <glob,…> | --deny-tools <glob,…>
       chokepoint policy set … --add
       chokepoint policy set … --monitor
       chokepoint policy rm <policy_id>
       chokepoint policy evaluate --from <agent> --to <agent> --type <intent_type>
       chokepoint policy evaluate --agent <agent> --upstream <id> [--tool <name>] [--worst-case <usd>]
       chokepoint policy defaults [set <file.json> | clear]

Policies stop an agent before anyone is paged. Globs: "*" is one dotted segment, "**" one or more.
Tool globs (--allow-tools/--deny-tools) are over <upstream>/<tool> (MCP) and <upstream>/<METHOD> <path>
(HTTP): "*" is any run without "/", "**" any run. --direction egress makes --rate count the agent's
LLM, MCP and HTTP calls through the gateway.
"set" creates the policy, or replaces the agent's existing policy of that kind (and direction)
in place; --add creates a second one beside it instead.

--monitor runs the policy in monitor mode: it never blocks or kills, and every decision it
would have made is recorded (policy.would_deny / policy.would_kill events, the metric
chokepoint_policy_would_total). Run the same "set" again without --monitor to enforce it.

"policy defaults" shows the default set: policies every agent without an enabled policy of
that kind gets, including agents that appear later. "defaults set" replaces the set with the
"policies" array of a JSON file ({"policies": [<policy body>, …]}, the format of
--policy-defaults); "defaults clear" removes it. "policy list" shows an agent's own and
effective policies.

Examples:
  chokepoint policy set agent://acme/prod/deployer --rate 500/h --on-breach kill
  chokepoint policy set agent://acme/prod/deployer --cost 50/day --on-breach kill
  chokepoint policy set agent://acme/prod/deployer --allow 'deploy.*.v1'
  chokepoint policy set agent://acme/prod/deployer --deadman 5m --on-trigger kill   (no heartbeat for 5 min → killed)
  chokepoint policy set agent://acme/prod/deployer --rate 100/h --on-breach kill --monitor   (watch it first)
  chokepoint policy set agent://acme/prod/deployer --rate 600/h --direction egress --on-breach kill
  chokepoint policy set agent://acme/prod/deployer --allow-tools 'github/*,deploy-api/GET /v2/**'
  chokepoint policy evaluate --from agent://acme/prod/deployer --to agent://acme/prod/api --type deploy.service.v1
  chokepoint policy evaluate --agent agent://acme/prod/deployer --upstream github --tool delete_repo
  chokepoint policy defaults set ./policy-defaults.json

${CONNECTION_HELP}`

export async function policy(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    rate: { type: 'string' },
    cost: { type: 'string' },
    deadman: { type: 'string' },
    'on-trigger': { type: 'string' },
    allow: { type: 'string' },
    deny: { type: 'string' },
    'allow-tools': { type: 'string' },
    'deny-tools': { type: 'string' },
    agent: { type: 'string' },
    upstream: { type: 'string' },
    tool: { type: 'string' },
    'worst-case': { type: 'string' },
    direction: { type: 'string' },
    'on-breach': { type: 'string' },
    'alert-at': { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    type: { type: 'string' },
    add: { type: 'boolean' },
    monitor: { type: 'boolean' },
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
        // Its own policies (applied or not), then the defaults that apply to it.
        const applied = new Set(res.effective.map((p) => p.policy_id))
        const rows = [...res.policies, ...res.effective.filter((p) => p.default)]
        process.stdout.write(
          table(
            ['policy', 'source', 'kind', 'rule', 'applies', 'version'],
            rows.map((p) => [
              p.policy_id,
              p.default ? 'default' : 'own',
              p.kind,
              describePolicy(p as never),
              applied.has(p.policy_id) ? 'yes' : p.enabled ? 'no' : 'no (disabled)',
              String(p.version),
            ]),
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
      let res
      if (values.agent !== undefined || values.upstream !== undefined) {
        if (!values.agent || !values.upstream) throw new UsageError('policy evaluate for an egress call needs --agent and --upstream')
        const worst = values['worst-case'] === undefined ? undefined : Number(String(values['worst-case']).replace(/^\$/, ''))
        if (worst !== undefined && !(worst >= 0)) throw new UsageError('--worst-case looks like 0.02 (USD)')
        res = await op.policies.evaluate({
          agent: values.agent,
          egress: { upstream: values.upstream, ...(values.tool ? { tool: values.tool } : {}), ...(worst === undefined ? {} : { worst_case_usd: worst }) },
        })
      } else {
        if (!values.from || !values.to || !values.type) throw new UsageError('policy evaluate needs --from, --to and --type (or --agent and --upstream for an egress call)')
        res = await op.policies.evaluate({ from_agent: values.from, to_agent: values.to, intent_type: values.type })
      }
      if (values.json) printJson(res)
      else {
        const by = res.policy_id ? ` by ${res.decided_by === 'default' ? 'default policy ' : ''}${res.policy_id}` : ''
        process.stdout.write(`${res.decision}${by}: ${res.reason}\n`)
        for (const m of res.monitored ?? []) {
          process.stdout.write(`  monitor only: ${m.policy_id} would ${m.would} (${m.decision}): ${m.reason}\n`)
        }
      }
      return EXIT.ok
    }
    case 'defaults':
      return defaults(op, positionals.slice(1), Boolean(values.json))
    default:
      throw new UsageError(`unknown or missing subcommand "${sub ?? ''}" (list, set, rm, evaluate, defaults)`)
  }
}

/** `policy defaults`, `policy defaults set <file>`, `policy defaults clear`. */
async function defaults(op: ReturnType<typeof operatorFrom>, args: string[], json: boolean): Promise<CommandResult> {
  const [action, file] = args
  if (action === 'set' || action === 'clear') {
    let policies: PolicyBody[] = []
    if (action === 'set') {
      if (!file) throw new UsageError('policy defaults set needs a JSON file ({"policies": [...]})')
      let parsed: unknown
      try {
        parsed = JSON.parse(readFileSync(file, 'utf8'))
      } catch (error) {
        throw new UsageError(`cannot read ${file} as JSON: ${(error as Error).message}`)
      }
      const list = (parsed as { policies?: unknown } | null)?.policies
      if (!Array.isArray(list)) throw new UsageError(`${file} must hold {"policies": [<policy body>, …]}`)
      policies = list as PolicyBody[]
    }
    const res = await op.policies.replaceDefaults(policies)
    if (json) printJson(res)
    else process.stdout.write(`${res.changed ? 'replaced' : 'unchanged'}: ${res.policies.length} default ${res.policies.length === 1 ? 'policy' : 'policies'}\n`)
    return EXIT.ok
  }
  if (action !== undefined) throw new UsageError(`unknown "policy defaults ${action}" (set <file>, clear)`)
  const res = await op.policies.defaults()
  if (json) printJson(res)
  else if (res.policies.length === 0) process.stdout.write('no default policies\n')
  else {
    if (res.managed_by) process.stdout.write(`from ${res.managed_by} (--policy-defaults)\n`)
    process.stdout.write(
      table(
        ['policy', 'kind', 'rule', 'enabled', 'version'],
        res.policies.map((p) => [p.policy_id, p.kind, describePolicy(p as never), String(p.enabled), String(p.version)]),
      ),
    )
  }
  return EXIT.ok
}

function policyBody(v: Record<string, string | boolean | undefined>): PolicyBody {
  const body = ruleBody(v)
  return v['monitor'] ? { ...body, enforcement: 'monitor' } : body
}

function ruleBody(v: Record<string, string | boolean | undefined>): PolicyBody {
  const chosen = ['rate', 'cost', 'allow', 'deny', 'deadman', 'allow-tools', 'deny-tools'].filter((k) => v[k] !== undefined)
  if (chosen.length !== 1) throw new UsageError('policy set needs exactly one of --rate, --cost, --allow, --deny, --deadman, --allow-tools, --deny-tools')
  if (v['allow-tools'] !== undefined || v['deny-tools'] !== undefined) {
    const allowTools = v['allow-tools'] !== undefined
    const patterns = String(allowTools ? v['allow-tools'] : v['deny-tools']).split(',').map((p) => p.trim()).filter(Boolean)
    return { kind: 'tool', mode: allowTools ? 'allowlist' : 'denylist', patterns }
  }
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
  if (direction !== 'send' && direction !== 'receive' && !(direction === 'egress' && v['rate'] !== undefined)) {
    throw new UsageError('--direction must be send or receive (or egress, for --rate)')
  }
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
  if (body.kind === 'cost' || body.kind === 'deadman' || body.kind === 'tool') return true
  return (existing.direction ?? 'send') === ((body as { direction?: string }).direction ?? 'send')
}

function slotName(body: PolicyBody): string {
  return body.kind === 'cost' || body.kind === 'deadman' || body.kind === 'tool' ? body.kind : `${body.kind} (${(body as { direction?: string }).direction ?? 'send'})`
}
