import type { IncomingMessage } from 'node:http'
import type { z } from 'zod'
import { GatewayError } from '../../core/errors.js'
import { policyView } from '../../core/policies/policy-spec.js'
import type { PolicyInput } from '../../core/policies/policy-service.js'
import { route, type Route } from '../router.js'
import { DefaultPoliciesBody, EvaluateBody, PolicyBody } from '../schemas.js'
import type { Services } from '../services.js'

/** `If-Match: 3` or `If-Match: "3"` (DESIGN §11); absent → null. */
function ifMatch(req: IncomingMessage): number | null {
  const raw = req.headers['if-match']
  if (raw === undefined) return null
  const m = typeof raw === 'string' ? /^\s*(?:W\/)?(?:"(\d{1,12})"|(\d{1,12}))\s*$/.exec(raw) : null
  if (!m) throw new GatewayError('invalid_request', 'If-Match must be a policy version, e.g. If-Match: 3')
  return Number(m[1] ?? m[2])
}

export function policyRoutes(s: Services): Route[] {
  const actor = (p: { key_id: string }) => `key:${p.key_id}`
  return [
    route({
      method: 'GET',
      path: '/v1/mesh/agents/:address_id/policies',
      access: 'viewer',
      tag: 'policies',
      summary: "An agent's policies, oldest first",
      handler: async ({ params }) => {
        const { policies, effective } = await s.policies.list(params['address_id'] as string)
        return { policies: policies.map(policyView), effective: effective.map(policyView) }
      },
    }),
    route<z.output<typeof PolicyBody>>({
      method: 'POST',
      path: '/v1/mesh/agents/:address_id/policies',
      access: 'operator',
      control: true,
      tag: 'policies',
      summary: 'Create a policy: action (allowed intent types), rate (per hour/day) or cost (per day)',
      body: PolicyBody,
      handler: async ({ params, body, principal }) => ({
        policy: policyView(await s.policies.create(actor(principal), params['address_id'] as string, body as PolicyInput)),
      }),
    }),
    // Before /v1/policies/:policy_id: the router takes the first match.
    route({
      method: 'GET',
      path: '/v1/policies/defaults',
      access: 'viewer',
      tag: 'policies',
      summary: 'The default policy set: applies to every agent with no enabled policy of the same kind',
      handler: async () => ({
        policies: (await s.policies.defaults()).map(policyView),
        managed_by: s.policies.managedBy,
      }),
    }),
    route<z.output<typeof DefaultPoliciesBody>>({
      method: 'PUT',
      path: '/v1/policies/defaults',
      access: 'operator',
      control: true,
      tag: 'policies',
      summary: 'Replace the default policy set whole (409 when it comes from a --policy-defaults file)',
      body: DefaultPoliciesBody,
      handler: async ({ body, principal }) => {
        const result = await s.policies.replaceDefaults(actor(principal), body.policies as PolicyInput[], 'api')
        return { policies: result.policies.map(policyView), changed: result.changed }
      },
    }),
    route({
      method: 'GET',
      path: '/v1/policies/:policy_id',
      access: 'viewer',
      tag: 'policies',
      summary: 'One policy',
      handler: async ({ params }) => ({ policy: policyView(await s.policies.retrieve(params['policy_id'] as string)) }),
    }),
    route<z.output<typeof PolicyBody>>({
      method: 'PUT',
      path: '/v1/policies/:policy_id',
      access: 'operator',
      control: true,
      tag: 'policies',
      summary: 'Replace a policy; needs If-Match: <version> (409 when stale); kind cannot change',
      body: PolicyBody,
      handler: async ({ params, body, principal, req }) => ({
        policy: policyView(
          await s.policies.update(actor(principal), params['policy_id'] as string, body as PolicyInput, ifMatch(req)),
        ),
      }),
    }),
    route({
      method: 'DELETE',
      path: '/v1/policies/:policy_id',
      access: 'operator',
      control: true,
      tag: 'policies',
      summary: 'Delete a policy (If-Match optional)',
      handler: async ({ params, principal, req }) => {
        await s.policies.delete(actor(principal), params['policy_id'] as string, ifMatch(req))
        return { deleted: params['policy_id'] }
      },
    }),
    route<z.output<typeof EvaluateBody>>({
      method: 'POST',
      path: '/v1/policies/evaluate',
      access: 'viewer',
      tag: 'policies',
      summary: 'Dry run: the decision a send or an egress call (LLM, MCP tool, HTTP) would get now, and which policy decides (no side effects)',
      body: EvaluateBody,
      handler: async ({ body }) =>
        body.agent !== undefined && body.egress !== undefined
          ? s.policies.evaluateEgress({ agent: body.agent, egress: body.egress })
          : s.policies.evaluate(body as { from_agent: string; to_agent: string; intent_type: string }),
    }),
  ]
}
