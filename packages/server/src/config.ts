import { readFileSync } from 'node:fs'
import { isWellFormedKey } from './core/auth/key-service.js'
import type { PolicyInput } from './core/policies/policy-service.js'
import { DefaultPoliciesBody } from './http/schemas.js'
import type { EgressUpstream } from './core/egress/egress-service.js'
import { loadEgressConfig } from './egress-config.js'
import { parseAddressClasses, type AddressClass } from './core/alerts/address-guard.js'

/** Validated, frozen gateway configuration (DESIGN §5e). */
export interface GatewayConfig {
  readonly host: string
  readonly port: number
  readonly dataDir: string
  readonly databaseUrl: string | null
  readonly adminKey: string | undefined
  readonly durability: 'normal' | 'full'
  readonly bodyLimitBytes: number
  readonly leaseSeconds: number
  readonly maxInFlight: number
  readonly maxDeliveryAttempts: number
  readonly sweepIntervalMs: number
  readonly retentionDays: number
  /** Keep-alive comment interval on open streams (DESIGN §5b: 15 s). */
  readonly pingIntervalMs: number
  readonly staleAfterSeconds: number
  readonly heartbeatIntervalSeconds: number
  readonly instanceTtlSeconds: number
  readonly alertRetryBaseMs: number
  /** When set, GET /metrics requires this key (x-api-key or Bearer). */
  readonly metricsKey: string | undefined
  /** Held intents released per second per agent on resume (DESIGN §2.4). */
  readonly resumeRatePerSecond: number
  /** How long a valid API key is remembered between store reads (0: read on every request). */
  readonly keyCacheSeconds: number
  /** SQLite: a heartbeat may wait this long for other writes to share its commit (0: at once). */
  readonly heartbeatBatchMs: number
  /** Strict mode: an intent to an address never registered is 404 instead of a warning. */
  readonly requireRegisteredRecipients: boolean
  /** Address classes alert webhooks may not reach (default: link-local, i.e. cloud metadata). */
  readonly webhookBlock: ReadonlySet<AddressClass>
  /** `--egress-config <file>`: the upstreams agents' LLM calls go to through the gateway. */
  readonly egress: { readonly file: string; readonly upstreams: readonly EgressUpstream[] } | undefined
  /** `--policy-defaults <file>`: the default policy set, applied at start and then read-only. */
  readonly policyDefaults: { readonly file: string; readonly policies: readonly PolicyInput[] } | undefined
  /** PostgreSQL: run statements as named prepared statements (off for poolers without support). */
  readonly pgPreparedStatements: boolean
  readonly quiet: boolean
}

/** Flags as the CLI parsed them (strings), overriding the environment. */
export type ConfigFlags = Partial<
  Record<'port' | 'host' | 'data' | 'database-url' | 'durability' | 'metrics-key' | 'policy-defaults' | 'egress-config', string>
>

export class ConfigError extends Error {
  constructor(readonly setting: string, message: string) {
    super(`invalid configuration: ${setting}: ${message}`)
    this.name = 'ConfigError'
  }
}

function int(setting: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(setting, `expected a whole number, got "${raw}"`)
  const n = Number(raw.trim())
  if (n < min || n > max) throw new ConfigError(setting, `must be between ${min} and ${max}, got ${n}`)
  return n
}

function bool(setting: string, raw: string | undefined, fallback: boolean): boolean {
  const v = raw?.trim().toLowerCase()
  if (v === undefined || v === '') return fallback
  if (v === '1' || v === 'true' || v === 'yes' || v === 'on') return true
  if (v === '0' || v === 'false' || v === 'no' || v === 'off') return false
  throw new ConfigError(setting, `expected 1 or 0 (true or false), got "${raw}"`)
}

/** Reads flags > environment > defaults; throws ConfigError naming the bad setting. */
export function loadConfig(env: NodeJS.ProcessEnv, flags: ConfigFlags = {}): GatewayConfig {
  const pick = (flag: keyof ConfigFlags, name: string): [string, string | undefined] =>
    flags[flag] !== undefined ? [`--${flag}`, flags[flag]] : [name, env[name]]

  const [portName, portRaw] = pick('port', 'CHOKEPOINT_PORT')
  const port = int(portName, portRaw, 8420, 0, 65535)
  const [hostName, hostRaw] = pick('host', 'CHOKEPOINT_HOST')
  const host = (hostRaw ?? '127.0.0.1').trim()
  if (host === '' || /\s|\//.test(host)) throw new ConfigError(hostName, `"${hostRaw}" is not a host name or address`)
  const [, dataRaw] = pick('data', 'CHOKEPOINT_DATA_DIR')
  const dataDir = dataRaw === undefined || dataRaw.trim() === '' ? './data' : dataRaw.trim()
  const [urlName, urlRaw] = pick('database-url', 'CHOKEPOINT_DATABASE_URL')
  const databaseUrl = urlRaw === undefined || urlRaw.trim() === '' ? null : urlRaw.trim()
  if (databaseUrl !== null) {
    if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
      throw new ConfigError(urlName, 'expected a postgres:// URL')
    }
    try {
      new URL(databaseUrl)
    } catch {
      throw new ConfigError(urlName, 'is not a valid URL (postgres://user:password@host:port/database)')
    }
  }
  const adminKey = env['CHOKEPOINT_ADMIN_KEY']?.trim() || undefined
  if (adminKey !== undefined && !isWellFormedKey(adminKey)) {
    throw new ConfigError('CHOKEPOINT_ADMIN_KEY', 'must look like cp_ followed by 20–128 letters and digits')
  }
  const [durName, durRaw] = pick('durability', 'CHOKEPOINT_DURABILITY')
  const durability = (durRaw ?? 'normal').trim()
  if (durability !== 'normal' && durability !== 'full') {
    throw new ConfigError(durName, `expected "normal" or "full", got "${durRaw}"`)
  }
  return Object.freeze({
    host,
    port,
    dataDir,
    databaseUrl,
    adminKey,
    durability,
    bodyLimitBytes: int('CHOKEPOINT_BODY_LIMIT_BYTES', env['CHOKEPOINT_BODY_LIMIT_BYTES'], 1024 * 1024, 1024, 64 * 1024 * 1024),
    leaseSeconds: int('CHOKEPOINT_LEASE_SECONDS', env['CHOKEPOINT_LEASE_SECONDS'], 30, 1, 3600),
    maxInFlight: int('CHOKEPOINT_MAX_IN_FLIGHT', env['CHOKEPOINT_MAX_IN_FLIGHT'], 32, 1, 1000),
    maxDeliveryAttempts: int('CHOKEPOINT_MAX_DELIVERY_ATTEMPTS', env['CHOKEPOINT_MAX_DELIVERY_ATTEMPTS'], 10, 1, 100),
    sweepIntervalMs: int('CHOKEPOINT_SWEEP_INTERVAL_MS', env['CHOKEPOINT_SWEEP_INTERVAL_MS'], 500, 10, 60_000),
    retentionDays: int('CHOKEPOINT_RETENTION_DAYS', env['CHOKEPOINT_RETENTION_DAYS'], 7, 1, 3650),
    pingIntervalMs: int('CHOKEPOINT_PING_INTERVAL_MS', env['CHOKEPOINT_PING_INTERVAL_MS'], 15_000, 100, 300_000),
    staleAfterSeconds: int('CHOKEPOINT_STALE_AFTER_SECONDS', env['CHOKEPOINT_STALE_AFTER_SECONDS'], 90, 1, 86_400),
    heartbeatIntervalSeconds: int('CHOKEPOINT_HEARTBEAT_INTERVAL_SECONDS', env['CHOKEPOINT_HEARTBEAT_INTERVAL_SECONDS'], 30, 1, 3600),
    instanceTtlSeconds: int('CHOKEPOINT_INSTANCE_TTL_SECONDS', env['CHOKEPOINT_INSTANCE_TTL_SECONDS'], 600, 1, 30 * 86_400),
    alertRetryBaseMs: int('CHOKEPOINT_ALERT_RETRY_BASE_MS', env['CHOKEPOINT_ALERT_RETRY_BASE_MS'], 1000, 10, 3_600_000),
    metricsKey: metricsKeyOf(flags, env),
    resumeRatePerSecond: int('CHOKEPOINT_RESUME_RATE', env['CHOKEPOINT_RESUME_RATE'], 50, 1, 100_000),
    keyCacheSeconds: int('CHOKEPOINT_KEY_CACHE_SECONDS', env['CHOKEPOINT_KEY_CACHE_SECONDS'], 300, 0, 86_400),
    heartbeatBatchMs: int('CHOKEPOINT_HEARTBEAT_BATCH_MS', env['CHOKEPOINT_HEARTBEAT_BATCH_MS'], 20, 0, 10_000),
    requireRegisteredRecipients: bool('CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS', env['CHOKEPOINT_REQUIRE_REGISTERED_RECIPIENTS'], false),
    webhookBlock: webhookBlockOf(env['CHOKEPOINT_WEBHOOK_BLOCK']),
    policyDefaults: policyDefaultsOf(flags, env),
    egress: egressOf(flags, env),
    pgPreparedStatements: bool('CHOKEPOINT_PG_PREPARED_STATEMENTS', env['CHOKEPOINT_PG_PREPARED_STATEMENTS'], true),
    quiet: env['CHOKEPOINT_QUIET'] === '1',
  })
}

/** Reads and validates the egress config; a bad file (or a missing provider key) stops the start. */
function egressOf(flags: ConfigFlags, env: NodeJS.ProcessEnv): GatewayConfig['egress'] {
  const [name, raw] =
    flags['egress-config'] !== undefined ? ['--egress-config', flags['egress-config']] : ['CHOKEPOINT_EGRESS_CONFIG', env['CHOKEPOINT_EGRESS_CONFIG']]
  if (raw === undefined || raw.trim() === '') return undefined
  try {
    return { file: raw.trim(), upstreams: loadEgressConfig(raw.trim(), env) }
  } catch (error) {
    throw new ConfigError(name, (error as Error).message)
  }
}

/** Reads and validates the default-policy file; a bad one stops the start naming the field. */
function policyDefaultsOf(flags: ConfigFlags, env: NodeJS.ProcessEnv): GatewayConfig['policyDefaults'] {
  const [name, raw] =
    flags['policy-defaults'] !== undefined
      ? ['--policy-defaults', flags['policy-defaults']]
      : ['CHOKEPOINT_POLICY_DEFAULTS', env['CHOKEPOINT_POLICY_DEFAULTS']]
  if (raw === undefined || raw.trim() === '') return undefined
  const file = raw.trim()
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    throw new ConfigError(name, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(name, `${file} is not JSON: ${(error as Error).message}`)
  }
  const parsed = DefaultPoliciesBody.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const field = issue?.path.length ? issue.path.join('.') : '(top level)'
    throw new ConfigError(name, `${file}: ${field}: ${issue?.message ?? 'invalid'} (expected {"policies": [<policy body>, …]})`)
  }
  return { file, policies: parsed.data.policies as PolicyInput[] }
}

function webhookBlockOf(raw: string | undefined): ReadonlySet<AddressClass> {
  if (raw === undefined || raw.trim() === '') return new Set(['link-local'])
  try {
    return parseAddressClasses(raw)
  } catch (error) {
    throw new ConfigError('CHOKEPOINT_WEBHOOK_BLOCK', (error as Error).message)
  }
}

function metricsKeyOf(flags: ConfigFlags, env: NodeJS.ProcessEnv): string | undefined {
  const [name, raw] = flags['metrics-key'] !== undefined ? ['--metrics-key', flags['metrics-key']] : ['CHOKEPOINT_METRICS_KEY', env['CHOKEPOINT_METRICS_KEY']]
  if (raw === undefined || raw.trim() === '') return undefined
  if (raw.trim().length < 16) throw new ConfigError(name, 'must be at least 16 characters')
  return raw.trim()
}
