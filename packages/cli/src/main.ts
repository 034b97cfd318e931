#!/usr/bin/env node
import { serve } from './commands/serve.js'
import { EXIT, type CommandResult } from './exit-codes.js'

const HELP = `Usage: chokepoint <command> [options]

Commands:
  serve        start the gateway (SQLite under ./data by default)

Run "chokepoint <command> --help" for a command's options.
`

const COMMANDS: Record<string, (argv: string[]) => Promise<CommandResult>> = {
  serve,
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
    process.stderr.write(`chokepoint ${name}: ${(error as Error).message}\n`)
    return EXIT.failure
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
