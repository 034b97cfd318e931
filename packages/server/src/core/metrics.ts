import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { Store } from '../store/store.js'

/**
 * Prometheus metrics (DESIGN §7, §10). Names start `chokepoint_`. Core records events through
 * this object; gauges that describe state are read at scrape time.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly intents = new Counter({
    name: 'chokepoint_intents_total',
    help: 'Intent creations by result (accepted, rejected) and rejection reason (error code)',
    labelNames: ['result', 'reason'] as const,
    registers: [this.registry],
  })
  readonly deliveries = new Counter({
    name: 'chokepoint_deliveries_total',
    help: 'Deliveries written to inbox streams, first or repeated',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  })
  readonly leasesExpired = new Counter({
    name: 'chokepoint_leases_expired_total',
    help: 'Leases that expired unresolved (requeued or failed)',
    registers: [this.registry],
  })
  readonly heartbeats = new Counter({
    name: 'chokepoint_heartbeats_total',
    help: 'Heartbeats received',
    registers: [this.registry],
  })
  readonly killLatency = new Histogram({
    name: 'chokepoint_kill_enforcement_seconds',
    help: 'Kill call to committed kill with this replica\'s streams of the agent closed',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  })
  readonly storeLatency = new Histogram({
    name: 'chokepoint_store_transaction_seconds',
    help: 'Store operation latency by operation',
    labelNames: ['op'] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5],
    registers: [this.registry],
  })
  readonly policyWould = new Counter({
    name: 'chokepoint_policy_would_total',
    help: 'Decisions monitored policies would have made (deny, kill), by policy; none was enforced',
    labelNames: ['policy_id', 'decision'] as const,
    registers: [this.registry],
  })
  readonly egressRequests = new Counter({
    name: 'chokepoint_egress_requests_total',
    help: 'Egress calls (agents to upstreams) by kind and admission result (admitted, or the refusal code)',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  })
  readonly egressCost = new Counter({
    name: 'chokepoint_egress_cost_usd_total',
    help: 'USD charged for settled egress calls',
    registers: [this.registry],
  })
  readonly egressReserved = new Gauge({
    name: 'chokepoint_egress_reserved_usd',
    help: 'USD reserved by open egress calls admitted on this replica',
    registers: [this.registry],
  })
  readonly egressUnderestimates = new Counter({
    name: 'chokepoint_egress_underestimates_total',
    help: 'Settled egress calls whose reported usage cost more than their reservation (an upstream past its cap)',
    registers: [this.registry],
  })
  readonly alertDeliveries = new Counter({
    name: 'chokepoint_alert_deliveries_total',
    help: 'Webhook alert delivery attempts by result (delivered, failed, gave_up)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  })

  /**
   * The exposition text. prom-client writes a value that is not a number as `Nan` (the event-loop
   * lag before its first sample); the text format's spelling is `NaN`.
   */
  async exposition(): Promise<string> {
    return (await this.registry.metrics()).replace(/ Nan$/gm, ' NaN')
  }

  constructor(sources: { store: Store; openStreams: () => number }) {
    // The process's own health, for the same scrape: resident memory, heap, open descriptors,
    // event-loop lag, GC (`chokepoint_process_*`, `chokepoint_nodejs_*`).
    collectDefaultMetrics({ register: this.registry, prefix: 'chokepoint_' })
    new Gauge({
      name: 'chokepoint_open_streams',
      help: 'Open inbox streams on this replica',
      registers: [this.registry],
      collect() {
        this.set(sources.openStreams())
      },
    })
    new Gauge({
      name: 'chokepoint_agents',
      help: 'Agents by health status',
      labelNames: ['health'] as const,
      registers: [this.registry],
      async collect() {
        const counts = await sources.store.countAgentsByHealth()
        for (const health of ['healthy', 'degraded', 'unreachable', 'killed', 'unknown']) {
          this.set({ health }, counts[health] ?? 0)
        }
      },
    })
  }
}

/** Wraps every async store method to time it into `chokepoint_store_transaction_seconds{op}`. */
export function instrumentStore<S extends Store>(store: S, metrics: Metrics): S {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      if (typeof value !== 'function' || typeof prop !== 'string' || prop === 'constructor') return value
      return (...args: unknown[]) => {
        const start = process.hrtime.bigint()
        const result = (value as (...a: unknown[]) => unknown).apply(target, args)
        if (result instanceof Promise) {
          const done = () => metrics.storeLatency.observe({ op: prop }, Number(process.hrtime.bigint() - start) / 1e9)
          result.then(done, done)
        }
        return result
      }
    },
  })
}
