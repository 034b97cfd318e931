export { startGateway, stderrLogger, type Gateway, type Logger } from './gateway.js'
export { loadConfig, ConfigError, type GatewayConfig, type ConfigFlags } from './config.js'
export { ManualClock, systemClock, type Clock } from './core/clock.js'
export { VERSION } from './version.js'
