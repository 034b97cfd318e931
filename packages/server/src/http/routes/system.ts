import type { Store } from '../../store/store.js'
import { sendJson } from '../errors.js'
import { STREAMED, route, type Route, type Router } from '../router.js'
import { buildOpenApi } from '../openapi.js'

export function systemRoutes(deps: { store: Store; version: string; router: () => Router }): Route[] {
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
