import { parseArgs } from 'node:util'
import { ConfigError, VERSION, loadConfig, redactDatabaseUrl, startGateway } from '@chokepoint/server'
import { EXIT, type CommandResult } from '../exit-codes.js'

export const SERVE_HELP = `Usage: chokepoint serve [options]

Start the gateway. Flags override CHOKEPOINT_* environment variables.

Options:
  --port <n>           port to listen on (CHOKEPOINT_PORT, default 8420; 0 = any free port)
  --host <addr>        address to bind (CHOKEPOINT_HOST, default 127.0.0.1)
  --data <dir>         SQLite data directory (CHOKEPOINT_DATA_DIR, default ./data)
  --database-url <url> PostgreSQL URL (CHOKEPOINT_DATABASE_URL)
  --durability <mode>  normal (survives kill -9) or full (survives power loss)
  --metrics-key <key>  require this key for GET /metrics (CHOKEPOINT_METRICS_KEY)
  --egress-config <file>
                       upstreams agents' LLM calls go to through the gateway (JSON
                       {"upstreams": [...]}, provider keys from the environment;
                       CHOKEPOINT_EGRESS_CONFIG)
  --policy-defaults <file>
                       default policies from a JSON file {"policies": [...]}, applied at
                       start; the API cannot change them then (CHOKEPOINT_POLICY_DEFAULTS)
  -h, --help           show this help

Environment:
  CHOKEPOINT_ADMIN_KEY   admin key to accept (upserted at every start); without it the
                         first start creates one and prints it once

Examples:
  chokepoint serve
  chokepoint serve --port 9000 --data /var/lib/chokepoint
`

export async function serve(argv: string[]): Promise<CommandResult> {
  const { values } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      data: { type: 'string' },
      'database-url': { type: 'string' },
      durability: { type: 'string' },
      'metrics-key': { type: 'string' },
      'policy-defaults': { type: 'string' },
      'egress-config': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  })
  if (values.help) {
    process.stdout.write(SERVE_HELP)
    return EXIT.ok
  }
  let config
  try {
    const { help: _help, ...flags } = values
    config = loadConfig(process.env, flags)
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`chokepoint: ${error.message}\n`)
      return EXIT.usage
    }
    throw error
  }
  let gateway
  try {
    gateway = await startGateway(config)
  } catch (error) {
    // A default-policy file the gateway refuses (e.g. a rate policy without a limit).
    if (error instanceof ConfigError) {
      process.stderr.write(`chokepoint: ${error.message}\n`)
      return EXIT.usage
    }
    throw error
  }
  const out = process.stdout
  const where = config.databaseUrl === null ? `data: ${config.dataDir}` : `database: ${redactDatabaseUrl(config.databaseUrl)}`
  out.write(`chokepoint ${VERSION} listening on ${gateway.url} (store: ${gateway.store.engine}, ${where})\n`)
  if (gateway.bootstrapKey) {
    out.write(
      `\nFirst start: created an admin key. It is shown only this once; keep it safe:\n\n  ${gateway.bootstrapKey}\n\n` +
        `  export CHOKEPOINT_URL=${gateway.url}\n  export CHOKEPOINT_API_KEY=${gateway.bootstrapKey}\n\n`,
    )
  }
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      out.write(`\n${signal}: shutting down\n`)
      gateway.close().then(resolve, resolve)
    }
    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
  })
  return EXIT.ok
}

