import { keyView } from '../../core/auth/key-service.js'
import { route, type Route } from '../router.js'
import { CreateKeyBody } from '../schemas.js'
import type { Services } from '../services.js'
import type { z } from 'zod'

export function keyRoutes(s: Services): Route[] {
  return [
    route<z.output<typeof CreateKeyBody>>({
      method: 'POST',
      path: '/v1/keys',
      access: 'admin',
      control: true,
      tag: 'keys',
      summary: 'Create an API key (shown only in this response); agent keys register their agent',
      body: CreateKeyBody,
      handler: async ({ body, principal }) => {
        const { row, key } = await s.keys.create(body, `key:${principal.key_id}`)
        return { ...keyView(row), key }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/keys',
      access: 'admin',
      tag: 'keys',
      summary: 'List API keys (never the keys themselves)',
      handler: async () => ({ keys: (await s.keys.list()).map(keyView) }),
    }),
    route({
      method: 'DELETE',
      path: '/v1/keys/:key_id',
      access: 'admin',
      control: true,
      tag: 'keys',
      summary: 'Revoke a key; it answers 401 from the next request on',
      handler: async ({ params, principal }) => ({
        key: keyView(await s.keys.revoke(params['key_id'] as string, `key:${principal.key_id}`)),
      }),
    }),
  ]
}
