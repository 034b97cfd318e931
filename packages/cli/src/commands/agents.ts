import type { AgentListResponse, AgentSort, MeshAgent } from '@chokepoint/sdk'
import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { ago, bold, dim, health, printJson, table, usd } from '../output.js'

export const AGENTS_HELP = `Usage: chokepoint agents [list] [--health <status>] [--window day|week|month] [--limit n] [--offset n]
                         [--search <text>] [--sort registered|cost|intents|last_heartbeat] [--order asc|desc]
       chokepoint agents show <address|addr_id>
       chokepoint agents register <address> [--name <display name>] [--metadata <json>] [--label key=value …]
       chokepoint agents label <address|addr_id> key=value … key- …

List agents like "kubectl get pods": address, health, instances, last heartbeat, intents and cost
(with the daily cost ceiling, "$18.60 of $50.00"). --search matches the address or the display
name; --sort orders every match (cost and intents over --window), then --limit/--offset page.

Examples:
  chokepoint agents
  chokepoint agents --health unreachable
  chokepoint agents --sort cost --limit 10                 (the ten most expensive today)
  chokepoint agents --search payments --sort last_heartbeat --order asc
  chokepoint agents show agent://acme/prod/deployer
  chokepoint agents register agent://acme/prod/deployer --name "Deployer" --label team=platform
  chokepoint agents label agent://acme/prod/deployer tier=gold team-     (set tier, remove team)

${CONNECTION_HELP}`

export async function agents(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, {
    health: { type: 'string' },
    window: { type: 'string' },
    limit: { type: 'string' },
    offset: { type: 'string' },
    search: { type: 'string' },
    sort: { type: 'string' },
    order: { type: 'string' },
    name: { type: 'string' },
    metadata: { type: 'string' },
    label: { type: 'string', multiple: true },
  })
  if (values.help) {
    process.stdout.write(AGENTS_HELP)
    return EXIT.ok
  }
  const [sub = 'list', target, ...extra] = positionals
  if (sub === 'label') {
    if (!target || extra.length === 0) throw new UsageError('agents label needs an agent and key=value or key- arguments')
    const labels: Record<string, string | null> = {}
    for (const arg of extra) {
      if (arg.endsWith('-') && !arg.includes('=')) labels[arg.slice(0, -1)] = null
      else if (arg.indexOf('=') > 0) labels[arg.slice(0, arg.indexOf('='))] = arg.slice(arg.indexOf('=') + 1)
      else throw new UsageError(`expected key=value or key- (got "${arg}")`)
    }
    const res = await operatorFrom(values).agents.update(target, { labels })
    if (values.json) printJson(res)
    else process.stdout.write(`${res.agent.address} labels: ${formatLabels(res.agent.labels) || 'none'}${res.agent.health_status === 'killed' ? `  ${bold('killed')} (${res.agent.kill_reason ?? 'standing fleet kill'})` : ''}\n`)
    return EXIT.ok
  }
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`)
  const op = operatorFrom(values)
  if (sub === 'list') {
    const window = values.window ?? 'day'
    if (!['day', 'week', 'month'].includes(window)) throw new UsageError('--window must be day, week or month')
    const limit = values.limit === undefined ? undefined : Number(values.limit)
    if (limit !== undefined && !(Number.isInteger(limit) && limit > 0)) throw new UsageError('--limit must be a positive integer')
    const offset = values.offset === undefined ? undefined : Number(values.offset)
    if (offset !== undefined && !(Number.isInteger(offset) && offset >= 0)) throw new UsageError('--offset must be a whole number')
    if (values.sort !== undefined && !SORTS.includes(values.sort as AgentSort)) throw new UsageError(`--sort must be ${SORTS.join(', ')}`)
    if (values.order !== undefined && values.order !== 'asc' && values.order !== 'desc') throw new UsageError('--order must be asc or desc')
    if (values.search === '') throw new UsageError('--search needs some text')
    const res = await op.agents.list({
      window: window as 'day',
      ...(values.health ? { health: values.health as 'healthy' } : {}),
      ...(limit ? { limit } : {}),
      ...(offset ? { offset } : {}),
      ...(values.search !== undefined ? { q: values.search } : {}),
      ...(values.sort !== undefined ? { sort: values.sort as AgentSort } : {}),
      ...(values.order !== undefined ? { order: values.order as 'asc' } : {}),
    })
    if (values.json) printJson(res)
    else process.stdout.write(agentsTable(res.agents, window) + pageLine(res, offset ?? 0) + summaryLine(res.summary))
    return EXIT.ok
  }
  if (sub === 'show') {
    if (!target) throw new UsageError('agents show needs an agent address or addr_ id')
    const res = await op.agents.retrieve(target)
    if (values.json) {
      printJson(res)
      return EXIT.ok
    }
    const a = res.agent
    const lines = [
      `${bold(a.address)}  ${dim(a.address_id)}`,
      `health:          ${health(a.health_status)}${a.killed_at ? `  (killed ${ago(a.killed_at)}: ${a.kill_reason ?? 'no reason given'})` : ''}`,
      `last heartbeat:  ${ago(a.last_heartbeat_at)}`,
      `today:           ${a.intents_period} intents, ${usd(a.cost_period)}`,
      `instances:       ${a.instances_healthy}/${a.instances_total} healthy`,
      `labels:          ${formatLabels(a.labels) || 'none'}`,
    ]
    let out = lines.join('\n') + '\n'
    if (a.instances.length > 0) {
      out +=
        '\n' +
        table(
          ['instance', 'health', 'last heartbeat', 'quarantined'],
          a.instances.map((i) => [i.instance_id, health(i.health_status), ago(i.last_heartbeat_at), i.quarantined ? 'yes' : '']),
        )
    }
    if (a.policies.length > 0) {
      out += '\n' + table(['policy', 'kind', 'rule', 'version'], a.policies.map((p) => [p.policy_id, p.kind, describePolicy(p as never), String(p.version)]))
    }
    if (res.events.length > 0) {
      out += '\n' + table(['when', 'event', 'by', 'details'], res.events.slice(0, 10).map((e) => [ago(e.created_at), e.event_type, e.actor_id, JSON.stringify(e.details ?? {})]))
    }
    process.stdout.write(out)
    return EXIT.ok
  }
  if (sub === 'register') {
    if (!target) throw new UsageError('agents register needs an agent address')
    let metadata: Record<string, unknown> | undefined
    if (values.metadata !== undefined) {
      try {
        metadata = JSON.parse(values.metadata) as Record<string, unknown>
      } catch {
        throw new UsageError('--metadata must be a JSON object')
      }
    }
    const labels: Record<string, string> = {}
    for (const pair of values.label ?? []) {
      if (pair.indexOf('=') <= 0) throw new UsageError(`--label needs key=value (got "${pair}")`)
      labels[pair.slice(0, pair.indexOf('='))] = pair.slice(pair.indexOf('=') + 1)
    }
    const res = await op.agents.register({
      address: target,
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...(values.name ? { display_name: values.name } : {}),
      ...(metadata ? { metadata } : {}),
    })
    if (values.json) printJson(res)
    else process.stdout.write(`registered ${res.agent.address} (${res.agent.address_id})\n`)
    return EXIT.ok
  }
  throw new UsageError(`unknown subcommand "${sub}" (list, show, register, label)`)
}

const formatLabels = (labels: Record<string, string> | undefined): string =>
  Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',')

export function agentsTable(rows: MeshAgent[], window: string): string {
  const period = window === 'day' ? 'today' : `this ${window}`
  return table(
    ['address', 'health', 'instances', 'last heartbeat', `intents ${period}`, `cost ${period}`],
    rows.map((a) => [
      a.address,
      health(a.health_status),
      `${a.instances_healthy}/${a.instances_total}`,
      ago(a.last_heartbeat_at),
      String(a.intents_period),
      typeof a.cost_ceiling_usd === 'number' ? `${usd(a.cost_period)} of ${usd(a.cost_ceiling_usd)}` : usd(a.cost_period),
    ]),
  )
}

const SORTS: readonly AgentSort[] = ['registered', 'cost', 'intents', 'last_heartbeat']

/** "agents 11–20 of 42 matching (next: --offset 20)" when the list is one page of several. */
function pageLine(res: AgentListResponse, offset: number): string {
  if (offset === 0 && res.next_offset === null) return ''
  const range = res.agents.length === 0 ? 'none' : `${offset + 1}–${offset + res.agents.length}`
  return dim(`\nagents ${range} of ${res.total} matching${res.next_offset === null ? '' : ` (next: --offset ${res.next_offset})`}`)
}

function summaryLine(s: { total: number; healthy: number; degraded: number; unreachable: number; killed: number; unknown: number }): string {
  return dim(`\n${s.total} agents: ${s.healthy} healthy, ${s.degraded} degraded, ${s.unreachable} unreachable, ${s.killed} killed, ${s.unknown} unknown\n`)
}

export function describePolicy(p: Record<string, unknown>): string {
  const rule = describeRule(p)
  return p['enforcement'] === 'monitor' ? `${rule} [monitor only]` : rule
}

function describeRule(p: Record<string, unknown>): string {
  if (p['kind'] === 'action') return `${p['direction']} ${p['mode']} ${(p['patterns'] as string[]).join(', ')}`
  if (p['kind'] === 'rate') {
    const parts = [p['max_per_hour'] ? `${p['max_per_hour']}/h` : '', p['max_per_day'] ? `${p['max_per_day']}/day` : ''].filter(Boolean)
    return `${p['direction']} ≤ ${parts.join(' and ')}, on breach ${p['on_breach']}`
  }
  if (p['kind'] === 'deadman') return `silent ≥ ${p['silent_after_seconds']} s → ${p['on_trigger']}`
  if (p['kind'] === 'tool') return `tools ${p['mode']} ${(p['patterns'] as string[]).join(', ')}`
  return `≤ $${p['max_cost_per_day_usd']}/day, on breach ${p['on_breach']}`
}
