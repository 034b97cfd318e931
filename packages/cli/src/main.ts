#!/usr/bin/env node
import { agents } from './commands/agents.js'
import { demo } from './commands/demo.js'
import { audit } from './commands/audit.js'
import { events } from './commands/events.js'
import { keys } from './commands/keys.js'
import { kill, resume } from './commands/kill.js'
import { migrateStoreCommand } from './commands/migrate-store.js'
import { policy } from './commands/policy.js'
import { serve } from './commands/serve.js'
import { reportError } from './context.js'
import { EXIT, type CommandResult } from './exit-codes.js'

const HELP = `Usage: chokepoint <command> [options]

Commands:
  serve                        start the gateway (SQLite under ./data by default)
  agents [list|show|register]  agents with health, instances, intents and cost
  kill <agent>                 kill an agent on every instance (--reason, --cancel-pending);
                               --instance <id>: quarantine one instance only
  resume <agent>               resume a killed agent; held work is redelivered (--instance <id>)
  policy list|set|rm|evaluate  rate, cost and allowed-type policies, with auto-kill
  audit list|verify|export     the tamper-evident audit trail
  events [--follow]            mesh events: kills, resumes, health, budgets
  keys create|list|revoke      API keys and roles
  demo                         the rogue-agent story, end to end
  migrate-store                copy a stopped SQLite deployment into an empty PostgreSQL database

Connection: --url / CHOKEPOINT_URL (default http://127.0.0.1:8420), --key / CHOKEPOINT_API_KEY.
Output: tables by default, --json for scripts.
Exit codes: 0 ok, 1 failure, 2 usage, 3 auth (401/403), 4 not found.

Run "chokepoint <command> --help" for a command's options and examples.
`

const COMMANDS: Record<string, (argv: string[]) => Promise<CommandResult>> = {
  serve,
  agents,
  kill,
  resume,
  policy,
  audit,
  events,
  keys,
  demo,
  'migrate-store': migrateStoreCommand,
}

async function main(argv: string[]): Promise<CommandResult> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(HELP)
    return name === undefined ? EXIT.usage : EXIT.ok
  }
  const command = COMMANDS[name]
  if (!command) {
    process.stderr.write(`chokepoint: unknown command "${name}"\n\n${HELP}`)
    return EXIT.usage
  }
  try {
    return await command(rest)
  } catch (error) {
    const code = (error as { code?: string }).code
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`chokepoint ${name}: ${(error as Error).message}\n`)
      return EXIT.usage
    }
    return reportError(name, error)
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`chokepoint: ${String(error)}\n`)
    process.exitCode = EXIT.failure
  },
)
