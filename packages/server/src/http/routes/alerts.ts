import type { z } from 'zod'
import { alertView, webhookView } from '../../core/alerts/webhook-service.js'
import { route, type Route } from '../router.js'
import { CreateWebhookBody, DeliveriesQuery } from '../schemas.js'
import type { Services } from '../services.js'

export function alertRoutes(s: Services): Route[] {
  return [
    route<z.output<typeof CreateWebhookBody>>({
      method: 'POST',
      path: '/v1/alerts/webhooks',
      access: 'admin',
      control: true,
      tag: 'alerts',
      summary: 'Register a webhook for alerts; the signing secret is shown only here',
      body: CreateWebhookBody,
      handler: async ({ body, principal }) => {
        const { webhook, secret } = await s.webhooks.create(`key:${principal.key_id}`, body)
        return { webhook: webhookView(webhook), secret }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/alerts/webhooks',
      access: 'admin',
      tag: 'alerts',
      summary: 'Registered webhooks (never their secrets)',
      handler: async () => ({ webhooks: (await s.webhooks.list()).map(webhookView) }),
    }),
    route({
      method: 'DELETE',
      path: '/v1/alerts/webhooks/:webhook_id',
      access: 'admin',
      control: true,
      tag: 'alerts',
      summary: 'Remove a webhook',
      handler: async ({ params, principal }) => ({
        webhook: webhookView(await s.webhooks.delete(`key:${principal.key_id}`, params['webhook_id'] as string)),
      }),
    }),
    route<undefined, z.output<typeof DeliveriesQuery>>({
      method: 'GET',
      path: '/v1/alerts/deliveries',
      access: 'admin',
      tag: 'alerts',
      summary: 'Alert deliveries, newest first: attempts, last status, failures',
      query: DeliveriesQuery,
      handler: async ({ query }) => ({
        deliveries: (await s.webhooks.deliveries(query.limit ?? 100, query.webhook_id ?? null)).map(alertView),
      }),
    }),
  ]
}
