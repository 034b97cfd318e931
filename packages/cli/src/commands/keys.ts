import { CONNECTION_HELP, UsageError, operatorFrom, parse } from '../context.js'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { ago, dim, printJson, table } from '../output.js'

export const KEYS_HELP = `Usage: chokepoint keys create --role admin|operator|viewer|agent [--agent <address>] [--name <name>]
       chokepoint keys list
       chokepoint keys revoke <key_id>

Manage API keys (admin key required). The key is printed only once, at creation.

Examples:
  chokepoint keys create --role agent --agent agent://acme/prod/deployer --name deployer
  chokepoint keys create --role viewer --name grafana
  chokepoint keys revoke key_3EgXn2JYyTwIUAtG

${CONNECTION_HELP}`

export async function keys(argv: string[]): Promise<CommandResult> {
  const { values, positionals } = parse(argv, { role: { type: 'string' }, agent: { type: 'string' }, name: { type: 'string' } })
  if (values.help) {
    process.stdout.write(KEYS_HELP)
    return EXIT.ok
  }
  const [sub = 'list', arg] = positionals
  const op = operatorFrom(values)
  if (sub === 'create') {
    if (!values.role) throw new UsageError('keys create needs --role')
    if (!['admin', 'operator', 'viewer', 'agent'].includes(values.role)) {
      throw new UsageError('--role must be admin, operator, viewer or agent')
    }
    const res = await op.keys.create({
      role: values.role as 'agent',
      ...(values.agent ? { agent: values.agent } : {}),
      ...(values.name ? { name: values.name } : {}),
    })
    if (values.json) printJson(res)
    else {
      process.stdout.write(`${res.key}\n`)
      process.stderr.write(dim(`created ${res.role} key ${res.key_id}${res.agent ? ` for ${res.agent}` : ''}; it is shown only now\n`))
    }
    return EXIT.ok
  }
  if (sub === 'list') {
    const res = await op.keys.list()
    if (values.json) printJson(res)
    else {
      process.stdout.write(
        table(
          ['key id', 'role', 'agent', 'name', 'created', 'revoked'],
          res.keys.map((k) => [k.key_id, k.role, k.agent ?? '-', k.name ?? '-', ago(k.created_at), k.revoked_at ? ago(k.revoked_at) : '-']),
        ),
      )
    }
    return EXIT.ok
  }
  if (sub === 'revoke') {
    if (!arg) throw new UsageError('keys revoke needs a key_id')
    const res = await op.keys.revoke(arg)
    if (values.json) printJson(res)
    else process.stdout.write(`revoked ${arg}\n`)
    return EXIT.ok
  }
  throw new UsageError(`unknown subcommand "${sub}" (create, list, revoke)`)
}
