import type { z } from 'zod'
import { GatewayError } from '../../core/errors.js'
import { streamIntentEvents } from '../../core/intents/intent-event-stream.js'
import { eventView, intentView } from '../../core/intents/intent-view.js'
import { SseSink } from '../sse.js'
import { STREAMED, route, type Route } from '../router.js'
import {
  AckBody,
  CreateIntentBody,
  EventsQuery,
  EventsStreamQuery,
  ListIntentsQuery,
  ResolveBody,
} from '../schemas.js'
import type { Services } from '../services.js'
import { instanceIdOf, sendingInstanceOf } from './inbox.js'

export function intentRoutes(s: Services): Route[] {
  return [
    route<z.output<typeof CreateIntentBody>>({
      method: 'POST',
      path: '/v1/intents',
      access: 'sender',
      tag: 'intents',
      summary: 'Send an intent (durable before the 200); Idempotency-Key makes retries safe',
      body: CreateIntentBody,
      headers: ['idempotency-key', 'x-instance-id'],
      handler: async ({ req, res, principal, body, traceId }) => {
        const key = req.headers['idempotency-key'] as string | undefined
        const { intent, recipientRegistered } = await s.intents.create(principal, body, {
          idempotencyKey: key,
          traceId,
          instanceId: sendingInstanceOf(req),
        })
        const answer = { intent_id: intent.intent_id, status: intent.status, created_at: new Date(intent.created_at).toISOString() }
        if (recipientRegistered) return answer
        // Accepted and kept, but the address was never registered, bound to a key or seen sending:
        // most likely a typo. Said in the body and in a header a proxy or SDK can log.
        const warning = `recipient ${intent.to_agent} is not a registered agent; the intent is queued until an agent with that address connects`
        res.setHeader('x-chokepoint-warning', 'recipient_unregistered')
        return { ...answer, warnings: [{ code: 'recipient_unregistered', message: warning }] }
      },
    }),
    route<undefined, z.output<typeof ListIntentsQuery>>({
      method: 'GET',
      path: '/v1/intents',
      access: 'agent_or_viewer',
      tag: 'intents',
      summary: "An agent's intents, newest first (agents may list only their own)",
      query: ListIntentsQuery,
      handler: async ({ principal, query }) => {
        const limit = query.limit ?? 100
        const rows = await s.intents.list(principal, { ...query, limit })
        const last = rows[rows.length - 1]
        return { intents: rows.map(intentView), next_after: rows.length === limit && last ? last.intent_id : null }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/intents/:intent_id',
      access: 'agent_or_viewer',
      tag: 'intents',
      summary: 'Read one intent',
      handler: async ({ principal, params }) => ({
        intent: intentView(await s.intents.get(principal, params['intent_id'] as string)),
      }),
    }),
    route<undefined, z.output<typeof EventsQuery>>({
      method: 'GET',
      path: '/v1/intents/:intent_id/events',
      access: 'agent_or_viewer',
      tag: 'intents',
      summary: "An intent's events with seq > since, ascending",
      query: EventsQuery,
      handler: async ({ principal, params, query }) => {
        const events = await s.intents.events(principal, params['intent_id'] as string, query.since ?? 0)
        return { events: events.map(eventView) }
      },
    }),
    route<undefined, z.output<typeof EventsStreamQuery>>({
      method: 'GET',
      path: '/v1/intents/:intent_id/events/stream',
      access: 'agent_or_viewer',
      tag: 'intents',
      summary: "An intent's events as server-sent events (wait_seconds for a bounded window)",
      query: EventsStreamQuery,
      stream: true,
      handler: async ({ principal, params, query, req, res }) => {
        const intentId = params['intent_id'] as string
        await s.intents.get(principal, intentId)
        const since = query.since ?? lastEventId(req.headers['last-event-id']) ?? 0
        const sink = new SseSink(res)
        await streamIntentEvents({ store: s.store, feed: s.store.feed, clock: s.clock }, sink, {
          intentId,
          since,
          windowMs: query.wait_seconds === undefined ? null : query.wait_seconds * 1000,
          keyId: principal.key_id,
        })
        return STREAMED
      },
    }),
    route<z.output<typeof AckBody>>({
      method: 'POST',
      path: '/v1/intents/:intent_id/ack',
      access: 'agent',
      tag: 'intents',
      summary: 'Acknowledge a delivered intent; extends its lease (repeat as a keep-alive)',
      body: AckBody,
      headers: ['x-instance-id'],
      handler: async ({ req, principal, params }) => {
        const { intent } = await s.intents.ack(principal, params['intent_id'] as string, instanceIdOf(req))
        return { intent: intentView(intent) }
      },
    }),
    route<z.output<typeof ResolveBody>>({
      method: 'POST',
      path: '/v1/intents/:intent_id/resolve',
      access: 'sender',
      tag: 'intents',
      summary: 'Resolve an intent: COMPLETED, FAILED or CANCELED (operators: CANCELED only)',
      body: ResolveBody,
      headers: ['x-instance-id'],
      handler: async ({ req, principal, params, body }) => {
        const { intent, event, follow_up } = await s.intents.resolve(
          principal,
          params['intent_id'] as string,
          body,
          instanceIdOf(req),
        )
        let completion: Record<string, unknown>
        if (intent.reply_to === null) completion = { delivered: false, reason: 'reply_to_not_set' }
        else if (follow_up?.accepted) {
          completion = { delivered: true, reply_to: intent.reply_to, intent_id: follow_up.intent.intent_id }
        } else {
          const err = follow_up?.error
          completion = {
            delivered: false,
            reply_to: intent.reply_to,
            reason: err instanceof GatewayError ? err.code : 'not_accepted',
          }
        }
        return {
          intent: intentView(intent),
          event: event ? eventView(event) : null,
          completion_delivery: completion,
        }
      },
    }),
  ]
}

export function lastEventId(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string' || !/^\d{1,15}$/.test(header)) return undefined
  return Number(header)
}
