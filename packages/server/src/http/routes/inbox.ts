import type { IncomingMessage } from 'node:http'
import type { z } from 'zod'
import { assertActsFor } from '../../core/auth/principal.js'
import { InboxStream } from '../../core/delivery/inbox-stream.js'
import { GatewayError, notFound } from '../../core/errors.js'
import { isAddress, isInstanceId } from '../../core/ids.js'
import { deliveryRule } from '../../core/kill-switch/rules.js'
import { SseSink } from '../sse.js'
import { STREAMED, route, type Route } from '../router.js'
import { InboxStreamQuery } from '../schemas.js'
import type { Services } from '../services.js'
import { lastEventId } from './intents.js'

/** `x-instance-id`: printable ASCII, 1–128 chars (DESIGN §11); absent → "default". */
export function instanceIdOf(req: IncomingMessage): string {
  const header = req.headers['x-instance-id']
  if (header === undefined) return 'default'
  if (typeof header !== 'string' || !isInstanceId(header)) {
    throw new GatewayError('invalid_request', 'x-instance-id must be 1–128 printable ASCII characters')
  }
  return header
}

/**
 * The sending instance of `POST /v1/intents`: the `x-instance-id` header, or null when absent. A
 * send without the header is not attributed to any instance (not even "default"), so a
 * quarantine cannot refuse it: only the agent kill stops all of an agent's sends.
 */
export function sendingInstanceOf(req: IncomingMessage): string | null {
  return req.headers['x-instance-id'] === undefined ? null : instanceIdOf(req)
}

export function inboxRoutes(s: Services): Route[] {
  return [
    route<undefined, z.output<typeof InboxStreamQuery>>({
      method: 'GET',
      path: '/v1/agents/:org/:workspace/:name/intents/stream',
      access: 'agent',
      tag: 'delivery',
      summary: "The agent's inbox as server-sent events; instances compete, each intent leased to one",
      query: InboxStreamQuery,
      stream: true,
      headers: ['x-instance-id'],
      handler: async ({ req, res, principal, params, query, requestId }) => {
        const instanceId = instanceIdOf(req)
        const address = `agent://${params['org']}/${params['workspace']}/${params['name']}`
        if (!isAddress(address)) {
          throw new GatewayError('schema_invalid', `${address.slice(0, 300)} is not a valid agent address`, {
            details: { field: 'address' },
          })
        }
        const agent = await s.agents.resolve(address).catch((error: unknown) => {
          throw error instanceof GatewayError && error.code === 'not_found' ? notFound(`agent ${address}`) : error
        })
        assertActsFor(principal, agent.address_id, "read another agent's inbox")
        // A killed agent's or quarantined instance's reconnect is refused before the stream opens.
        deliveryRule(agent, await s.killSwitch.quarantineOf(agent.address_id, instanceId))
        const stream = new InboxStream(s.store, s.clock, new SseSink(res), {
          agent,
          instanceId,
          since: query.since ?? lastEventId(req.headers['last-event-id']) ?? 0,
          windowMs: query.wait_seconds === undefined ? null : query.wait_seconds * 1000,
          leaseMs: query.lease_seconds === undefined ? s.defaults.leaseMs : query.lease_seconds * 1000,
          maxInFlight: query.max_in_flight ?? s.defaults.maxInFlight,
          requestId,
          keyId: principal.key_id,
          onDelivered: (kind) => s.metrics.deliveries.inc({ kind }),
        })
        s.streams.add(stream)
        try {
          await stream.run()
        } finally {
          s.streams.remove(stream)
        }
        return STREAMED
      },
    }),
  ]
}
