import type { z } from 'zod'
import { agentView } from '../../core/agents/agent-service.js'
import { route, type Route } from '../router.js'
import { ListAgentsQuery, RegisterAgentBody } from '../schemas.js'
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
      handler: async ({ body }) => ({ agent: agentView(await s.agents.register(body)) }),
    }),
    route<undefined, z.output<typeof ListAgentsQuery>>({
      method: 'GET',
      path: '/v1/mesh/agents',
      access: 'viewer',
      tag: 'mesh',
      summary: 'List agents',
      query: ListAgentsQuery,
      handler: async ({ query }) => {
        const agents = (await s.agents.list(query.limit ?? 100)).map(agentView)
        const summary = { total: agents.length, healthy: 0, degraded: 0, unreachable: 0, killed: 0, unknown: 0 }
        for (const a of agents) summary[a['health_status'] as 'killed' | 'unknown'] += 1
        return { agents, summary }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/mesh/agents/:address_id',
      access: 'viewer',
      tag: 'mesh',
      summary: 'One agent by addr_… id or (URL-encoded) address',
      handler: async ({ params }) => ({
        agent: { ...agentView(await s.agents.resolve(params['address_id'] as string)), instances: [], policies: [] },
        events: [],
      }),
    }),
  ]
}
