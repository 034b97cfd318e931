/**
 * Request schemas. The same objects validate requests and generate `/openapi.json`, so the
 * published contract cannot drift from what the gateway enforces.
 */
import { z } from 'zod'
import { globError } from '../core/policies/glob.js'
import { toolGlobError } from '../core/policies/tool-glob.js'
import { addressPatternError, labelsError } from '../core/fleet/selector.js'

const SEGMENT = '[a-z0-9][a-z0-9_-]{0,62}'
export const ADDRESS_PATTERN = `^agent://${SEGMENT}/${SEGMENT}/${SEGMENT}$`

export const Address = z
  .string()
  .max(255)
  .regex(new RegExp(ADDRESS_PATTERN), 'must be an address like agent://org/workspace/name')
  .describe('Agent address, agent://<org>/<workspace>/<name>')

export const IntentType = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[a-z0-9_]+(\.[a-z0-9_]+)*$/, 'must be a lowercase dotted name like deploy.service.v1')

/**
 * Text stored as given (reasons, names, ids, URLs). JSON may carry lone UTF-16 surrogates
 * (`"\ud800"`), which UTF-8 text columns cannot hold: the store would keep U+FFFD instead, so
 * the value read back would differ from the one accepted, and from the one an audit entry was
 * hashed with (its chain would no longer verify).
 */
const text = () => z.string().refine((value) => !/\p{Cs}/u.test(value), 'must be valid Unicode (no lone surrogates)')

const shortText = (max: number) => text().max(max)

/** A non-negative integer query parameter (query values arrive as strings). */
export const intParam = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d{1,10}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))

export const Role = z.enum(['admin', 'operator', 'viewer', 'agent'])
export const IntentStatus = z.enum([
  'SUBMITTED',
  'DELIVERED',
  'ACKNOWLEDGED',
  'IN_PROGRESS',
  'WAITING',
  'COMPLETED',
  'FAILED',
  'CANCELED',
  'TIMED_OUT',
])

export const CreateIntentBody = z.object({
  intent_type: IntentType,
  to_agent: Address,
  payload: z.record(z.string(), z.unknown()).default({}),
  correlation_id: shortText(256).optional(),
  from_agent: Address.optional(),
  reply_to: Address.optional(),
  deadline_at: z.iso.datetime({ offset: true }).optional(),
  max_delivery_attempts: z.number().int().min(1).max(100).optional(),
})

export const ResolveBody = z.object({
  status: z.enum(['COMPLETED', 'FAILED', 'CANCELED']),
  result: z.unknown().optional(),
  error: z.unknown().optional(),
  reason: shortText(1024).optional(),
  cost_usd: z.number().min(0).max(1_000_000).optional(),
})

export const AckBody = z.object({})

export const EventsQuery = z.object({
  since: intParam(0, 1_000_000_000).optional(),
})

export const EventsStreamQuery = z.object({
  since: intParam(0, 1_000_000_000).optional(),
  wait_seconds: intParam(1, 60).optional(),
})

export const InboxStreamQuery = z.object({
  since: intParam(0, Number.MAX_SAFE_INTEGER).optional(),
  wait_seconds: intParam(1, 60).optional(),
  lease_seconds: intParam(1, 3600).optional(),
  max_in_flight: intParam(1, 1000).optional(),
})

export const ListIntentsQuery = z.object({
  agent: Address.optional(),
  direction: z.enum(['sent', 'received']).optional(),
  status: IntentStatus.optional(),
  limit: intParam(1, 500).optional(),
  after: z.uuid().optional(),
})

export const CreateKeyBody = z.strictObject({
  role: Role,
  agent: Address.optional(),
  name: shortText(128).optional(),
})

function refineError<T>(check: (v: T) => string | null) {
  return (value: T, ctx: { addIssue: (issue: { code: 'custom'; message: string }) => void }) => {
    const error = check(value)
    if (error !== null) ctx.addIssue({ code: 'custom', message: error })
  }
}

export const Labels = z
  .record(z.string(), text())
  .superRefine(refineError<Record<string, unknown>>(labelsError))
  .describe('Labels: up to 32 keys (1–63 of a-z A-Z 0-9 . _ / -) with string values (≤ 256)')

export const RegisterAgentBody = z.strictObject({
  address: Address,
  display_name: shortText(256).optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  labels: Labels.optional(),
})

export const PatchAgentBody = z.strictObject({
  display_name: shortText(256).nullable().optional(),
  metadata: z.record(z.string(), z.unknown()).nullable().optional(),
  labels: z
    .record(z.string(), text().nullable())
    .superRefine(refineError<Record<string, unknown>>(labelsError))
    .optional()
    .describe('Merged into the labels (a key set to null is removed)'),
})

export const Selector = z
  .strictObject({
    address: text()
      .superRefine(refineError<string>(addressPatternError))
      .optional()
      .describe('Address glob: agent://acme/prod/* (* = one segment, ** = one or more)'),
    labels: Labels.optional(),
  })
  .describe('Agents whose address matches and that carry every label')

export const FleetKillBody = z.strictObject({
  selector: Selector,
  reason: shortText(1024).optional(),
  dry_run: z.boolean().optional(),
  confirm_all: z.boolean().optional(),
  cancel_pending: z.boolean().optional(),
})

export const FleetResumeBody = z.strictObject({
  selector: Selector,
  reason: shortText(1024).optional(),
  dry_run: z.boolean().optional(),
  confirm_all: z.boolean().optional(),
})

export const FleetKillsQuery = z.object({
  standing: z.enum(['true', 'false']).optional(),
  limit: intParam(1, 500).optional(),
})

export const ListAgentsQuery = z.object({
  limit: intParam(1, 500).optional(),
})

export const KillBody = z.strictObject({
  reason: shortText(1024).optional(),
  cancel_pending: z.boolean().optional(),
})

export const ResumeBody = z.strictObject({
  reason: shortText(1024).optional(),
})

/** Body of an instance's kill (quarantine) and resume. */
export const InstanceControlBody = z.strictObject({
  reason: shortText(1024).optional(),
})

export const AuditQuery = z.object({
  limit: intParam(1, 500).optional(),
  after_seq: intParam(0, Number.MAX_SAFE_INTEGER).optional(),
  action_prefix: shortText(64).optional(),
  target: shortText(300).optional(),
})

export const MeshEventsQuery = z.object({
  limit: intParam(1, 500).optional(),
  event_type: shortText(64).optional(),
  address: Address.optional(),
})

export const MeshEventsStreamQuery = z.object({
  after: z
    .string()
    .regex(/^evt_\d{1,15}$/, 'must be an event_id like evt_42')
    .optional(),
})

const Pattern = z.string().superRefine((value, ctx) => {
  const problem = globError(value)
  if (problem) ctx.addIssue({ code: 'custom', message: `invalid pattern "${value.slice(0, 80)}": it ${problem}` })
})

const ToolPattern = z.string().superRefine((value, ctx) => {
  const problem = toolGlobError(value)
  if (problem) ctx.addIssue({ code: 'custom', message: `invalid pattern "${value.slice(0, 80)}": it ${problem}` })
})

const Direction = z.enum(['send', 'receive'])
const OnBreach = z.enum(['block', 'kill'])
const PolicyMeta = {
  enabled: z.boolean().optional(),
  version: z.number().int().min(1).optional(),
  /** `monitor`: never blocks or kills; records what it would have decided. */
  enforcement: z.enum(['enforce', 'monitor']).optional(),
}

export const ActionPolicyBody = z.strictObject({
  kind: z.literal('action'),
  direction: Direction,
  mode: z.enum(['allowlist', 'denylist']),
  patterns: z.array(Pattern).min(1).max(256),
  ...PolicyMeta,
})

export const RatePolicyBody = z.strictObject({
  kind: z.literal('rate'),
  /** `egress`: counts the agent's calls through `/llm`, `/mcp` and `/egress` upstreams. */
  direction: z.enum(['send', 'receive', 'egress']),
  max_per_hour: z.number().int().min(1).max(1_000_000_000).optional(),
  max_per_day: z.number().int().min(1).max(1_000_000_000).optional(),
  on_breach: OnBreach,
  ...PolicyMeta,
})

export const CostPolicyBody = z.strictObject({
  kind: z.literal('cost'),
  max_cost_per_day_usd: z.number().positive().max(10_000_000),
  on_breach: OnBreach,
  alert_at_percent: z.array(z.number().int().min(1).max(100)).max(10).optional(),
  ...PolicyMeta,
})

export const DeadmanPolicyBody = z.strictObject({
  kind: z.literal('deadman'),
  silent_after_seconds: z.number().int().min(10).max(30 * 86_400),
  on_trigger: z.enum(['kill', 'alert']),
  ...PolicyMeta,
})

/** Which MCP tools and HTTP endpoints an agent may call through the gateway. */
export const ToolPolicyBody = z.strictObject({
  kind: z.literal('tool'),
  mode: z.enum(['allowlist', 'denylist']),
  patterns: z.array(ToolPattern).min(1).max(256),
  ...PolicyMeta,
})

/** Flat policy bodies (DESIGN §10), told apart by `kind`. */
export const PolicyBody = z.discriminatedUnion('kind', [ActionPolicyBody, RatePolicyBody, CostPolicyBody, DeadmanPolicyBody, ToolPolicyBody])

/** `PUT /v1/policies/defaults` and the `--policy-defaults` file: the whole default set. */
export const DefaultPoliciesBody = z.strictObject({
  policies: z.array(PolicyBody).max(64),
})

/**
 * A dry run: a send (`from_agent`, `to_agent`, `intent_type`), or an egress call of an agent
 * (`agent`, `egress: {upstream, tool?, worst_case_usd?}`; `tool` is the MCP tool name or
 * `<METHOD> <path>` of an HTTP upstream).
 */
export const EvaluateBody = z
  .strictObject({
    from_agent: Address.optional(),
    to_agent: Address.optional(),
    intent_type: IntentType.optional(),
    agent: Address.optional(),
    egress: z
      .strictObject({
        upstream: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'an upstream id'),
        tool: z.string().min(1).max(512).optional(),
        worst_case_usd: z.number().finite().min(0).max(1_000_000).optional(),
      })
      .optional(),
  })
  .superRefine((b, ctx) => {
    const send = b.from_agent !== undefined || b.to_agent !== undefined || b.intent_type !== undefined
    const egress = b.agent !== undefined || b.egress !== undefined
    if (send && egress) ctx.addIssue({ code: 'custom', path: ['agent'], message: 'evaluate either a send (from_agent, to_agent, intent_type) or an egress call (agent, egress), not both' })
    else if (egress) {
      for (const f of ['agent', 'egress'] as const) if (b[f] === undefined) ctx.addIssue({ code: 'custom', path: [f], message: `${f} is required for an egress call` })
    } else {
      for (const f of ['from_agent', 'to_agent', 'intent_type'] as const) if (b[f] === undefined) ctx.addIssue({ code: 'custom', path: [f], message: `${f} is required` })
    }
  })

const metric = z.number().finite().min(0).max(1e12).nullable().optional()
/** Intent counts are whole numbers (PostgreSQL keeps them in bigint columns, which refuse 1.5). */
const count = z.number().int().min(0).max(1e12).nullable().optional()

/** Heartbeat metrics are deltas since the previous beat; fields may be null (DESIGN §11). */
export const HeartbeatBody = z.object({
  metrics: z
    .object({
      intents_total: count,
      intents_succeeded: count,
      intents_failed: count,
      avg_latency_ms: metric,
      cost_usd: z.number().finite().min(0).max(1_000_000).nullable().optional(),
    })
    .nullable()
    .optional(),
})

export const MeshAgentsQuery = z.object({
  limit: intParam(1, 500).optional(),
  offset: intParam(0, 1_000_000).optional(),
  health: z.enum(['healthy', 'degraded', 'unreachable', 'killed', 'unknown']).optional(),
  window: z.enum(['day', 'week', 'month']).optional(),
  q: shortText(200).min(1).optional().describe('Case-insensitive substring of the address or the display name'),
  sort: z.enum(['registered', 'cost', 'intents', 'last_heartbeat']).optional(),
  order: z.enum(['asc', 'desc']).optional(),
})

export const AgentCostQuery = z.object({
  hours: intParam(1, 168).optional(),
})

export const CreateWebhookBody = z.strictObject({
  url: text()
    .max(2048)
    .regex(/^https?:\/\/[^\s]+$/, 'must be an http:// or https:// URL'),
  event_types: z
    .array(z.enum(['agent.stale', 'agent.recovered', 'agent.killed', 'agent.auto_killed', 'agent.resumed', 'budget.threshold', 'rate.breach']))
    .min(1)
    .max(7)
    .optional(),
  secret: text().min(16).max(256).optional(),
})

export const DeliveriesQuery = z.object({
  limit: intParam(1, 500).optional(),
  webhook_id: z.string().max(64).optional(),
})
