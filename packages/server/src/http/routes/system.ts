import type { Store } from '../../store/store.js'
import type { Metrics } from '../../core/metrics.js'
import { GatewayError } from '../../core/errors.js'
import { digestsEqual, sha256Hex } from '../../core/ids.js'
import { sendJson } from '../errors.js'
import { STREAMED, route, type Route, type Router } from '../router.js'
import { buildOpenApi } from '../openapi.js'

export function systemRoutes(deps: {
  store: Store
  version: string
  router: () => Router
  metrics: Metrics
  metricsKey: string | undefined
}): Route[] {
  let spec: Record<string, unknown> | null = null
  return [
    route({
      method: 'GET',
      path: '/health',
      access: 'public',
      tag: 'system',
      summary: 'Liveness and store reachability (503 store_unavailable when the store is down)',
      handler: async () => {
        await deps.store.ping()
        return { version: deps.version, store: deps.store.engine }
      },
    }),
    route({
      method: 'GET',
      path: '/metrics',
      access: 'public',
      tag: 'system',
      summary: 'Prometheus metrics (no key unless the gateway runs with --metrics-key)',
      handler: async ({ req, res }) => {
        if (deps.metricsKey !== undefined) {
          const given = req.headers['x-api-key'] ?? /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]
          if (typeof given !== 'string' || !digestsEqual(sha256Hex(given), sha256Hex(deps.metricsKey))) {
            throw new GatewayError('unauthorized', 'GET /metrics needs the metrics key')
          }
        }
        const text = await deps.metrics.exposition()
        res.statusCode = 200
        res.setHeader('content-type', deps.metrics.registry.contentType)
        res.end(text)
        return STREAMED
      },
    }),
    route({
      method: 'GET',
      path: '/v1/whoami',
      access: 'agent_or_viewer',
      tag: 'system',
      summary: "The calling key: its id, name, role and (agent keys) bound agent — what a console may show",
      handler: async ({ principal }) => {
        const key = await deps.store.getKey(principal.key_id)
        return {
          key_id: principal.key_id,
          name: key?.name ?? null,
          role: principal.role,
          agent: principal.address,
          address_id: principal.address_id,
        }
      },
    }),
    route({
      method: 'GET',
      path: '/openapi.json',
      access: 'public',
      tag: 'system',
      summary: 'This API as OpenAPI 3.1, generated from the schemas that validate requests',
      handler: async ({ res }) => {
        spec ??= buildOpenApi(deps.router().routes, deps.version)
        sendJson(res, 200, spec)
        return STREAMED
      },
    }),
  ]
}
