import type { z } from 'zod'
import { agentView } from '../../core/agents/agent-service.js'
import { route, type Route } from '../router.js'
import {
  AgentCostQuery,
  FleetKillBody,
  FleetKillsQuery,
  FleetResumeBody,
  HeartbeatBody,
  InstanceControlBody,
  KillBody,
  MeshAgentsQuery,
  MeshEventsQuery,
  MeshEventsStreamQuery,
  PatchAgentBody,
  RegisterAgentBody,
  ResumeBody,
} from '../schemas.js'
import { fleetKillView } from '../../core/fleet/fleet-service.js'
import { meshEventView, parseMeshEventId } from '../../core/mesh/mesh-events.js'
import { streamMeshEvents } from '../../core/mesh/mesh-event-stream.js'
import { SseSink } from '../sse.js'
import { STREAMED } from '../router.js'
import { iso } from '../../core/clock.js'
import { policyView } from '../../core/policies/policy-spec.js'
import { instanceIdOf } from './inbox.js'
import { GatewayError } from '../../core/errors.js'
import { isInstanceId } from '../../core/ids.js'

/** The `{instance_id}` path parameter: the same rule as `x-instance-id` (DESIGN §11), else 400. */
function instanceParam(params: Record<string, string>): string {
  const id = params['instance_id'] as string
  if (!isInstanceId(id)) throw new GatewayError('invalid_request', 'instance_id must be 1–128 printable ASCII characters')
  return id
}
import type { Services } from '../services.js'

export function meshRoutes(s: Services): Route[] {
  return [
    route<z.output<typeof RegisterAgentBody>>({
      method: 'POST',
      path: '/v1/mesh/agents',
      access: 'operator',
      tag: 'mesh',
      summary: 'Register an agent by address (409 if it exists)',
      body: RegisterAgentBody,
      handler: async ({ body, principal }) => ({ agent: agentView(await s.agents.register(`key:${principal.key_id}`, body)) }),
    }),
    route<z.output<typeof PatchAgentBody>>({
      method: 'PATCH',
      path: '/v1/mesh/agents/:address_id',
      access: 'operator',
      control: true,
      tag: 'mesh',
      summary: 'Change an agent\'s display name, metadata or labels (labels are merged; null removes a key)',
      body: PatchAgentBody,
      handler: async ({ params, principal, body }) => ({
        agent: agentView(await s.agents.update(`key:${principal.key_id}`, params['address_id'] as string, body)),
      }),
    }),
    route<z.output<typeof FleetKillBody>>({
      method: 'POST',
      path: '/v1/mesh/kill',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary: 'Kill every agent a selector matches, in one transaction; the fleet kill stands for agents that appear later',
      body: FleetKillBody,
      handler: async ({ principal, body }) => {
        const stop = body.dry_run === true ? null : s.metrics.killLatency.startTimer()
        const answer = await s.fleet.kill({ kind: 'key', key_id: principal.key_id }, body)
        stop?.()
        return answer
      },
    }),
    route<z.output<typeof FleetResumeBody>>({
      method: 'POST',
      path: '/v1/mesh/resume',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary: 'Resume every killed agent a selector matches and end the fleet kills with that selector',
      body: FleetResumeBody,
      handler: async ({ principal, body }) => s.fleet.resume({ kind: 'key', key_id: principal.key_id }, body),
    }),
    route<undefined, z.output<typeof FleetKillsQuery>>({
      method: 'GET',
      path: '/v1/mesh/fleet-kills',
      access: 'viewer',
      tag: 'kill-switch',
      summary: 'Fleet kills (kills by selector), newest first; standing=true keeps those not resumed',
      query: FleetKillsQuery,
      handler: async ({ query }) => ({
        fleet_kills: (await s.fleet.list(query.standing === 'true', query.limit ?? 100)).map(fleetKillView),
      }),
    }),
    route<undefined, z.output<typeof MeshAgentsQuery>>({
      method: 'GET',
      path: '/v1/mesh/agents',
      access: 'viewer',
      tag: 'mesh',
      summary:
        'Agents with health, instances, intents, cost for the window and cost ceiling, searched (q), sorted over all matches and paged (offset); a summary by health',
      query: MeshAgentsQuery,
      handler: async ({ query }) => {
        const window = query.window ?? 'day'
        const [page, counts] = await Promise.all([
          s.agents.page({
            limit: query.limit ?? 100,
            offset: query.offset ?? 0,
            health: query.health ?? null,
            search: query.q ?? null,
            sort: query.sort ?? 'registered',
            order: query.order ?? null,
            window,
          }),
          s.store.countAgentsByHealth(),
        ])
        const [stats, totals] = await Promise.all([
          s.agents.stats(page.agents, window, s.heartbeats.options.staleAfterMs),
          s.agents.fleetTotals(window),
        ])
        const summary = {
          total: 0,
          healthy: 0,
          degraded: 0,
          unreachable: 0,
          killed: 0,
          unknown: 0,
          // The whole fleet over the window: intents sent (each once) and cost.
          intents_period: totals.sent,
          cost_period: Math.round(totals.cost_usd * 1e6) / 1e6,
        }
        for (const [health, n] of Object.entries(counts)) {
          if (health in summary) summary[health as keyof typeof summary] += n
          summary.total += n
        }
        return {
          agents: page.agents.map((row) => agentView(row, stats(row))),
          summary,
          total: page.total,
          next_offset: page.next_offset,
        }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/mesh/agents/:address_id',
      access: 'viewer',
      tag: 'mesh',
      summary: 'One agent by addr_… id or (URL-encoded) address, with instances, policies and recent events',
      handler: async ({ params }) => {
        const agent = await s.agents.resolve(params['address_id'] as string)
        const [events, { policies, effective }, instances, stats] = await Promise.all([
          s.store.listMeshEvents({ limit: 20, event_type: null, address: agent.address, before_seqno: null }),
          s.policies.list(agent.address_id),
          s.heartbeats.instances(agent),
          s.agents.stats([agent], 'day', s.heartbeats.options.staleAfterMs),
        ])
        return {
          agent: {
            ...agentView(agent, stats(agent)),
            instances,
            policies: policies.map(policyView),
            // What applies: its own policies plus the defaults of kinds it has none of.
            effective_policies: effective.map(policyView),
          },
          events: events.map(meshEventView),
        }
      },
    }),
    route<undefined, z.output<typeof AgentCostQuery>>({
      method: 'GET',
      path: '/v1/mesh/agents/:address_id/cost',
      access: 'viewer',
      tag: 'mesh',
      summary: "An agent's cost and intents sent and received per UTC hour, oldest first, ending with the current hour (zeros where none)",
      query: AgentCostQuery,
      handler: async ({ params, query }) => {
        const agent = await s.agents.resolve(params['address_id'] as string)
        return { address_id: agent.address_id, hours: await s.agents.costByHour(agent, query.hours ?? 24) }
      },
    }),
    route<z.output<typeof HeartbeatBody>>({
      method: 'POST',
      path: '/v1/mesh/heartbeat',
      access: 'agent',
      tag: 'mesh',
      summary: 'Heartbeat of one instance, with optional metric deltas; answers the health (killed when killed)',
      body: HeartbeatBody,
      headers: ['x-instance-id'],
      handler: async ({ req, principal, body }) => {
        const instanceId = instanceIdOf(req)
        s.metrics.heartbeats.inc()
        const m = body.metrics
        const { agent, health_status } = await s.heartbeats.beat(
          principal,
          instanceId,
          m
            ? {
                intents_total: m.intents_total ?? 0,
                intents_succeeded: m.intents_succeeded ?? 0,
                intents_failed: m.intents_failed ?? 0,
                avg_latency_ms: m.avg_latency_ms ?? null,
                cost_usd: m.cost_usd ?? 0,
              }
            : null,
        )
        return {
          address_id: agent.address_id,
          address: agent.address,
          instance_id: instanceId,
          health_status,
          next_heartbeat_s: s.heartbeats.options.intervalS,
        }
      },
    }),
    route<z.output<typeof KillBody>>({
      method: 'POST',
      path: '/v1/mesh/agents/:address_id/kill',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary: 'Kill an agent on every instance: sends, deliveries, acks and resolves are refused from now on',
      body: KillBody,
      handler: async ({ params, principal, body }) => {
        const stop = s.metrics.killLatency.startTimer()
        const { agent, held_intents } = await s.killSwitch.kill(
          { kind: 'key', key_id: principal.key_id },
          params['address_id'] as string,
          body,
        )
        stop()
        return {
          address_id: agent.address_id,
          address: agent.address,
          health_status: 'killed',
          killed_at: iso(agent.killed_at as number),
          kill_reason: agent.kill_reason,
          held_intents,
        }
      },
    }),
    route<z.output<typeof ResumeBody>>({
      method: 'POST',
      path: '/v1/mesh/agents/:address_id/resume',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary: 'Resume a killed agent; its held work is redelivered, oldest first, paced',
      body: ResumeBody,
      handler: async ({ params, principal, body }) => {
        const { agent, redelivering } = await s.killSwitch.resume(
          { kind: 'key', key_id: principal.key_id },
          params['address_id'] as string,
          body,
        )
        return {
          address_id: agent.address_id,
          address: agent.address,
          health_status: agentView(agent)['health_status'],
          resumed_at: agent.resumed_at === null ? null : iso(agent.resumed_at),
          redelivering,
        }
      },
    }),
    route<z.output<typeof InstanceControlBody>>({
      method: 'POST',
      path: '/v1/mesh/agents/:address_id/instances/:instance_id/kill',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary:
        "Quarantine one instance: its streams are cut, it can no longer receive, ack or resolve (nor send with its x-instance-id), its leased intents go to its siblings at once",
      body: InstanceControlBody,
      handler: async ({ params, principal, body }) => {
        const instanceId = instanceParam(params)
        const { agent, quarantine, changed, requeued } = await s.killSwitch.quarantineInstance(
          { kind: 'key', key_id: principal.key_id },
          params['address_id'] as string,
          instanceId,
          body,
        )
        return {
          address_id: agent.address_id,
          address: agent.address,
          instance_id: instanceId,
          quarantined: true,
          quarantined_at: iso(quarantine.quarantined_at),
          reason: quarantine.reason,
          changed,
          requeued,
        }
      },
    }),
    route<z.output<typeof InstanceControlBody>>({
      method: 'POST',
      path: '/v1/mesh/agents/:address_id/instances/:instance_id/resume',
      access: 'operator',
      control: true,
      tag: 'kill-switch',
      summary: "Lift an instance's quarantine; resuming an instance that is not quarantined is a no-op",
      body: InstanceControlBody,
      handler: async ({ params, principal, body }) => {
        const instanceId = instanceParam(params)
        const { agent, changed, at } = await s.killSwitch.liftQuarantine(
          { kind: 'key', key_id: principal.key_id },
          params['address_id'] as string,
          instanceId,
          body,
        )
        return {
          address_id: agent.address_id,
          address: agent.address,
          instance_id: instanceId,
          quarantined: false,
          changed,
          resumed_at: changed ? iso(at) : null,
        }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/mesh/agents/:address_id/instances',
      access: 'viewer',
      tag: 'mesh',
      summary: "An agent's instances (from heartbeats) with health and quarantine flag, plus quarantined instances never seen",
      handler: async ({ params }) => {
        const agent = await s.agents.resolve(params['address_id'] as string)
        return { address_id: agent.address_id, address: agent.address, instances: await s.heartbeats.instances(agent) }
      },
    }),
    route<undefined, z.output<typeof MeshEventsQuery>>({
      method: 'GET',
      path: '/v1/mesh/events',
      access: 'viewer',
      tag: 'mesh',
      summary: 'Mesh events (kills, resumes, …), newest first',
      query: MeshEventsQuery,
      handler: async ({ query }) => {
        const rows = await s.store.listMeshEvents({
          limit: query.limit ?? 100,
          event_type: query.event_type ?? null,
          address: query.address ?? null,
          before_seqno: null,
        })
        return { events: rows.map(meshEventView) }
      },
    }),
    route<undefined, z.output<typeof MeshEventsStreamQuery>>({
      method: 'GET',
      path: '/v1/mesh/events/stream',
      access: 'viewer',
      tag: 'mesh',
      summary: 'Mesh events live, as server-sent events, after an event_id',
      query: MeshEventsStreamQuery,
      stream: true,
      handler: async ({ query, res, principal }) => {
        const after = query.after === undefined ? null : (parseMeshEventId(query.after) ?? 0)
        await streamMeshEvents({ store: s.store, feed: s.store.feed }, () => new SseSink(res), { after, keyId: principal.key_id })
        return STREAMED
      },
    }),
  ]
}
