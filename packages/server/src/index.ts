export { startGateway, stderrLogger, type Gateway, type Logger } from './gateway.js'
export { loadConfig, ConfigError, type GatewayConfig, type ConfigFlags } from './config.js'
export { ManualClock, systemClock, type Clock } from './core/clock.js'
export { VERSION } from './version.js'
export {
  migrateStore,
  MigrateStoreError,
  MIGRATED_TABLES,
  redactDatabaseUrl,
  type MigrateStoreErrorCode,
  type MigrateStoreOptions,
  type MigrateStoreProgress,
  type MigrateStoreSummary,
} from './store/migrate-store.js'
