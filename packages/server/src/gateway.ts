import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync } from 'node:fs'
import { basename } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AgentService } from './core/agents/agent-service.js'
import { DEFAULT_KEY_CACHE, KeyService } from './core/auth/key-service.js'
import { systemClock, type Clock } from './core/clock.js'
import { StreamRegistry } from './core/delivery/stream-registry.js'
import { GatewayError } from './core/errors.js'
import { IntentService } from './core/intents/intent-service.js'
import { Sweeper } from './core/sweeper.js'
import { ConfigError, type GatewayConfig } from './config.js'
import { lockDataDir } from './data-dir-lock.js'
import { createRequestHandler, refuseConnect } from './http/app.js'
import { Router } from './http/router.js'
import { dashboardHandler } from './http/static.js'
import { inboxRoutes } from './http/routes/inbox.js'
import { intentRoutes } from './http/routes/intents.js'
import { keyRoutes } from './http/routes/keys.js'
import { meshRoutes } from './http/routes/mesh.js'
import { auditRoutes } from './http/routes/audit.js'
import { AuditService } from './core/audit/audit-service.js'
import { auditHash } from './core/audit/audit-chain.js'
import { KillSwitchService } from './core/kill-switch/kill-switch-service.js'
import { PolicyEngine } from './core/policies/policy-engine.js'
import { PolicyService } from './core/policies/policy-service.js'
import { policyRoutes } from './http/routes/policies.js'
import { alertRoutes } from './http/routes/alerts.js'
import { alertFor } from './core/alerts/alerts.js'
import { FleetService } from './core/fleet/fleet-service.js'
import { DeadmanService } from './core/policies/deadman.js'
import { EgressService } from './core/egress/egress-service.js'
import { egressRoutes } from './http/routes/egress.js'
import { mcpRoutes } from './http/routes/mcp.js'
import { egressHttpRoutes } from './http/routes/egress-http.js'
import { AlertDispatcher } from './core/alerts/alert-dispatcher.js'
import { WebhookService } from './core/alerts/webhook-service.js'
import { HeartbeatService } from './core/health/heartbeat-service.js'
import { DEFAULT_HEALTH } from './core/health/health.js'
import { Metrics, instrumentStore } from './core/metrics.js'
import { systemRoutes } from './http/routes/system.js'
import type { Services } from './http/services.js'
import { SqliteStore } from './store/sqlite/sqlite-store.js'
import { PostgresStore } from './store/postgres/postgres-store.js'
import type { Store } from './store/store.js'
import { VERSION } from './version.js'

export interface Gateway {
  readonly url: string
  readonly port: number
  readonly store: Store
  readonly services: Services
  /** The bootstrap admin key when this start created one (print it once), else null. */
  readonly bootstrapKey: string | null
  readonly sweeper: Sweeper
  close(): Promise<void>
}

export type Logger = (level: 'info' | 'warn' | 'error', message: string, fields?: Record<string, unknown>) => void

export const stderrLogger: Logger = (level, message, fields) => {
  process.stderr.write(`${JSON.stringify({ at: new Date().toISOString(), level, message, ...fields })}\n`)
}

/** Composition root: config → store → core services → HTTP → listen. */
/** The dashboard built next to this package in the repository (`npm ci` builds it), if any. */
function defaultDashboardDir(): string | null {
  const dir = fileURLToPath(new URL('../../dashboard/dist/', import.meta.url))
  return existsSync(dir) ? dir : null
}

export async function startGateway(
  config: GatewayConfig,
  options: {
    clock?: Clock
    log?: Logger
    /** The built dashboard to serve at `/` (null: none); default packages/dashboard/dist. */
    dashboardDir?: string | null
  } = {},
): Promise<Gateway> {
  const log = options.log ?? stderrLogger
  // The port is bound before any state exists: a start that cannot listen (EADDRINUSE, EACCES)
  // must not leave behind a database with a bootstrap admin key nobody saw. Until the gateway
  // is ready, requests get 503 `store_unavailable`.
  let ready: ((req: IncomingMessage, res: ServerResponse) => void) | null = null
  const server: Server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0, headersTimeout: 30_000 }, (req, res) => {
    if (ready !== null) return ready(req, res)
    req.resume()
    res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '1' })
    res.end(JSON.stringify({ ok: false, error: { code: 'store_unavailable', message: 'the gateway is starting' } }))
  })
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
  })
  server.on('connect', refuseConnect)
  // A client that half-closes (FIN) after its request still reads the answer; by default Node
  // aborts the request instead, so the answer (maybe to an accepted intent) is lost.
  Object.assign(server, { httpAllowHalfOpen: true })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(config.port, config.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const closeServer = () => new Promise<void>((resolve) => server.close(() => resolve()))
  // PostgreSQL serves any number of replicas; the SQLite data directory takes one (its feed is in-process).
  let unlock: () => void
  try {
    unlock = config.databaseUrl !== null || config.dataDir === ':memory:' ? () => undefined : lockDataDir(config.dataDir)
  } catch (error) {
    await closeServer()
    throw error
  }
  let store: Store
  try {
    store =
      config.databaseUrl !== null
        ? await PostgresStore.open({ url: config.databaseUrl, hashAudit: auditHash, alertFor, log, preparedStatements: config.pgPreparedStatements })
        : new SqliteStore({
            dataDir: config.dataDir,
            durability: config.durability,
            hashAudit: auditHash,
            alertFor,
            heartbeatBatchMs: config.heartbeatBatchMs,
          })
  } catch (error) {
    unlock()
    await closeServer()
    throw error
  }
  // Replicas on one database decide with its clock (leases, windows, staleness), not their own.
  const clock = options.clock ?? store.clock ?? systemClock
  const streams = new StreamRegistry(store.feed, config.pingIntervalMs)
  const metrics = new Metrics({ store, openStreams: () => streams.openStreams })
  store = instrumentStore(store, metrics)
  const keys = new KeyService(store, clock, { ...DEFAULT_KEY_CACHE, ttlMs: config.keyCacheSeconds * 1000 })
  let printedKey: string | null
  try {
    ;({ printedKey } = await keys.bootstrap(config.adminKey))
  } catch (error) {
    await store.close()
    unlock()
    await closeServer()
    throw error
  }
  const leaseMs = config.leaseSeconds * 1000
  const agents = new AgentService(store, clock)
  const audit = new AuditService(store, clock)
  const policyEngine = new PolicyEngine()
  // The cache is keyed by the agent's policy_version, read in each transaction, so a stale entry
  // can never decide; the feed only frees memory early (and tells other replicas on PostgreSQL).
  store.feed.subscribe((change) => {
    if (change.type === 'policy.changed') policyEngine.invalidate(change.address_id)
  })
  const killSwitch = new KillSwitchService(store, clock, agents, { resumeRatePerSecond: config.resumeRatePerSecond })
  const fleet = new FleetService(store, clock, killSwitch)
  const deadman = new DeadmanService(store, clock, killSwitch, metrics)
  const egress = new EgressService({ store, clock, engine: policyEngine, killSwitch, metrics }, config.egress?.upstreams ?? [])
  const services: Services = {
    store,
    clock,
    fleet,
    keys,
    agents,
    audit,
    killSwitch,
    policies: new PolicyService(store, clock, agents, policyEngine),
    intents: new IntentService(
      { store, clock, policies: policyEngine, killSwitch, metrics },
      { maxDeliveryAttempts: config.maxDeliveryAttempts, leaseMs, requireRegisteredRecipients: config.requireRegisteredRecipients },
    ),
    streams,
    metrics,
    heartbeats: new HeartbeatService(
      { store, clock, policies: policyEngine, killSwitch, metrics },
      {
        ...DEFAULT_HEALTH,
        staleAfterMs: config.staleAfterSeconds * 1000,
        intervalS: config.heartbeatIntervalSeconds,
        forgetAfterMs: config.instanceTtlSeconds * 1000,
      },
    ),
    webhooks: new WebhookService(store, clock, { blocked: config.webhookBlock }),
    egress,
    defaults: { leaseMs, maxInFlight: config.maxInFlight },
  }
  if (config.policyDefaults) {
    // The file is the source of truth on this replica: applied now (unchanged entries keep their
    // ids, so restarts change nothing), and PUT /v1/policies/defaults is refused here.
    const { file, policies } = config.policyDefaults
    try {
      const applied = await services.policies.replaceDefaults(`config:${basename(file)}`, policies)
      services.policies.managedBy = file
      log('info', applied.changed ? 'default policies applied' : 'default policies unchanged', { file, count: applied.policies.length })
    } catch (error) {
      await store.close()
      unlock()
      await closeServer()
      if (error instanceof GatewayError) {
        const field = (error.details as { field?: string } | undefined)?.field
        throw new ConfigError('--policy-defaults', `${file}: ${field ? `${field}: ` : ''}${error.message}`)
      }
      throw error
    }
  }
  const router = new Router()
  router.add(
    ...systemRoutes({ store, version: VERSION, router: () => router, metrics, metricsKey: config.metricsKey }),
    ...keyRoutes(services),
    ...intentRoutes(services),
    ...inboxRoutes(services),
    ...meshRoutes(services),
    ...auditRoutes(services),
    ...policyRoutes(services),
    ...alertRoutes(services),
    ...egressRoutes(services),
    ...mcpRoutes(services),
    ...egressHttpRoutes(services),
  )
  const onDispatchError = (error: unknown) => log('error', 'alert delivery pass failed', { error: String(error) })
  const dispatcher = new AlertDispatcher(store, clock, {
    retryBaseMs: config.alertRetryBaseMs,
    giveUpAfterMs: 86_400_000,
    timeoutMs: 10_000,
    blocked: config.webhookBlock,
    onResult: (result) => metrics.alertDeliveries.inc({ result }),
  })
  const sweeper = new Sweeper(store, clock, {
    intervalMs: config.sweepIntervalMs,
    retentionMs: config.retentionDays * 86_400_000,
    onError: (error) => log('error', 'sweeper pass failed', { error: String(error) }),
    onLeasesExpired: (n) => metrics.leasesExpired.inc(n),
    // Alert sends run beside the sweep, never inside it: a slow receiver must not delay lease expiry.
    tasks: [() => services.heartbeats.sweep(), () => deadman.sweep(), () => egress.sweep(), async () => void dispatcher.tick().catch(onDispatchError)],
  })
  const fallback = dashboardHandler(options.dashboardDir === undefined ? defaultDashboardDir() : options.dashboardDir)
  ready = createRequestHandler({ router, keys, audit, bodyLimitBytes: config.bodyLimitBytes, fallback, log })
  sweeper.start()
  const port = (server.address() as AddressInfo).port
  const shownHost = config.host.includes(':') ? `[${config.host}]` : config.host
  let closed = false
  return {
    url: `http://${shownHost}:${port}`,
    port,
    store,
    services,
    bootstrapKey: printedKey,
    sweeper,
    async close() {
      if (closed) return
      closed = true
      sweeper.stop()
      services.streams.close()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await store.close()
      unlock()
    },
  }
}
