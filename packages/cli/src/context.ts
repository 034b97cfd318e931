import { parseArgs, type ParseArgsConfig } from 'node:util'
import {
  APIConnectionError,
  APIError,
  AuthenticationError,
  NotFoundError,
  Operator,
  PermissionDeniedError,
} from '@chokepoint/sdk'
import { EXIT, type CommandResult } from './exit-codes.js'

/** Options every client command takes. */
export const CONNECTION_OPTIONS = {
  url: { type: 'string' },
  key: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies NonNullable<ParseArgsConfig['options']>

export const CONNECTION_HELP = `Connection:
  --url <url>    gateway URL (CHOKEPOINT_URL, default http://127.0.0.1:8420)
  --key <key>    API key (CHOKEPOINT_API_KEY)
  --json         print JSON for scripts instead of tables
  -h, --help     show this help
`

/** A usage mistake: exit 2 with the message and the command's help. */
export class UsageError extends Error {}

export function parse<O extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: O): ReturnType<typeof parseArgs<{ args: string[]; options: typeof CONNECTION_OPTIONS & O; allowPositionals: true; strict: true }>> {
  try {
    return parseArgs({ args: argv, options: { ...CONNECTION_OPTIONS, ...options }, allowPositionals: true, strict: true })
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
}

type ConnectionValues = { url?: string | undefined; key?: string | undefined }

/** `--url`/`--key` over CHOKEPOINT_URL/CHOKEPOINT_API_KEY. */
export function connection(values: ConnectionValues): { baseURL: string; apiKey: string } {
  const baseURL = (values.url ?? process.env['CHOKEPOINT_URL'] ?? 'http://127.0.0.1:8420').replace(/\/+$/, '')
  const apiKey = values.key ?? process.env['CHOKEPOINT_API_KEY']
  if (!apiKey) throw new UsageError('no API key: pass --key or set CHOKEPOINT_API_KEY')
  return { baseURL, apiKey }
}

export function operatorFrom(values: ConnectionValues): Operator {
  return new Operator({ ...connection(values), maxRetries: 1, timeout: 15_000 })
}

/** One clear line per failure, no stack traces, and an exit code that means something. */
export function reportError(command: string, error: unknown): CommandResult {
  const say = (msg: string) => process.stderr.write(`chokepoint ${command}: ${msg}\n`)
  if (error instanceof UsageError) {
    say(error.message)
    say(`run "chokepoint ${command.split(' ')[0]} --help" for usage`)
    return EXIT.usage
  }
  if (error instanceof APIConnectionError) {
    say(`cannot reach the gateway (${error.message}); is it running? check --url / CHOKEPOINT_URL`)
    return EXIT.failure
  }
  if (error instanceof AuthenticationError) {
    say(`the gateway refused the key (401 unauthorized): check --key / CHOKEPOINT_API_KEY`)
    return EXIT.auth
  }
  if (error instanceof PermissionDeniedError) {
    say(`${error.code ?? 'forbidden'}: ${errorMessage(error)}`)
    return EXIT.auth
  }
  if (error instanceof NotFoundError) {
    say(`not found: ${errorMessage(error)}`)
    return EXIT.notFound
  }
  if (error instanceof APIError) {
    say(`${error.code ?? `HTTP ${error.status}`}: ${errorMessage(error)}`)
    return EXIT.failure
  }
  say(error instanceof Error ? error.message : String(error))
  return EXIT.failure
}

function errorMessage(error: APIError): string {
  return error.error?.message ?? error.message
}
