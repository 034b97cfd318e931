import { readFileSync } from 'node:fs'
import { z } from 'zod'
import type { EgressUpstream } from './core/egress/egress-service.js'

const Price = z.strictObject({
  input_cost_per_token: z.number().min(0).max(1),
  output_cost_per_token: z.number().min(0).max(1),
  cache_read_input_token_cost: z.number().min(0).max(1).optional(),
  cache_creation_input_token_cost: z.number().min(0).max(1).optional(),
  max_input_tokens: z.number().int().min(1).max(100_000_000),
  max_output_tokens: z.number().int().min(1).max(100_000_000),
  // Accepted and ignored, so a LiteLLM entry can be pasted whole.
  litellm_provider: z.string().optional(),
  mode: z.string().optional(),
  max_tokens: z.number().optional(),
  supports_function_calling: z.boolean().optional(),
  supports_vision: z.boolean().optional(),
  supports_prompt_caching: z.boolean().optional(),
  supports_response_schema: z.boolean().optional(),
  supports_system_messages: z.boolean().optional(),
  supports_tool_choice: z.boolean().optional(),
  supports_parallel_function_calling: z.boolean().optional(),
  supports_reasoning: z.boolean().optional(),
  supports_audio_input: z.boolean().optional(),
  supports_audio_output: z.boolean().optional(),
  supports_pdf_input: z.boolean().optional(),
  supports_web_search: z.boolean().optional(),
  supports_native_streaming: z.boolean().optional(),
  deprecation_date: z.string().optional(),
  source: z.string().optional(),
})

const Id = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, - and _, at most 64')
const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name')
/** Upstream answer deadline (headers and each chunk), ms. */
const TimeoutMs = z.number().int().min(1000).max(3_600_000).optional()
/** Credentials injected upstream: `{"<header name>": "<ENV VAR holding its value>"}`. */
const HeadersEnv = z.record(z.string().regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$/, 'an HTTP header name'), EnvName).optional()
/** What one call costs when the upstream reports no usage (MCP tools, HTTP APIs), USD. */
const CostPerCall = z.number().min(0).max(1000).optional()

const LlmUpstream = {
  id: Id,
  base_url: z.url({ protocol: /^https?$/ }),
  api_key_env: EnvName,
  models: z.record(z.string().min(1).max(256), Price),
  timeout_ms: TimeoutMs,
}

const Upstream = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('openai'), ...LlmUpstream }),
  z.strictObject({ kind: z.literal('anthropic'), ...LlmUpstream, anthropic_version: z.string().min(1).max(32).optional() }),
  z.strictObject({ kind: z.literal('mcp'), id: Id, url: z.url({ protocol: /^https?$/ }), headers_env: HeadersEnv, cost_per_call_usd: CostPerCall, timeout_ms: TimeoutMs }),
  z.strictObject({ kind: z.literal('http'), id: Id, base_url: z.url({ protocol: /^https?$/ }), headers_env: HeadersEnv, cost_per_call_usd: CostPerCall, timeout_ms: TimeoutMs }),
])

export const EgressConfigFile = z.strictObject({ upstreams: z.array(Upstream).min(1).max(64) })

/**
 * Reads `--egress-config` / `CHOKEPOINT_EGRESS_CONFIG`: validated at start, and the provider key
 * of every upstream must be set in the environment (fail closed). Throws `Error` with a message
 * naming the file and the field.
 */
export function loadEgressConfig(file: string, env: NodeJS.ProcessEnv): EgressUpstream[] {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (error) {
    const e = error as NodeJS.ErrnoException
    throw new Error(e.code ? `cannot read ${file}: ${e.code}` : `${file} is not JSON: ${e.message}`)
  }
  const parsed = EgressConfigFile.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new Error(`${file}: ${issue?.path.join('.') || '(top level)'}: ${issue?.message ?? 'invalid'}`)
  }
  const seen = new Set<string>()
  const fromEnv = (name: string, field: string): string => {
    const value = env[name]
    if (value === undefined || value.trim() === '') throw new Error(`${file}: ${field}: ${name} is not set in the environment`)
    return value.trim()
  }
  return parsed.data.upstreams.map((u, i): EgressUpstream => {
    if (seen.has(u.id)) throw new Error(`${file}: upstreams.${i}.id: "${u.id}" appears twice`)
    seen.add(u.id)
    const timeout_ms = u.timeout_ms ?? 600_000
    if (u.kind === 'openai' || u.kind === 'anthropic') {
      return {
        id: u.id,
        kind: u.kind,
        base_url: u.base_url.replace(/\/+$/, ''),
        api_key: fromEnv(u.api_key_env, `upstreams.${i}.api_key_env`),
        models: new Map(Object.entries(u.models)),
        timeout_ms,
        anthropic_version: (u.kind === 'anthropic' ? u.anthropic_version : undefined) ?? '2023-06-01',
      }
    }
    const headers: Record<string, string> = {}
    for (const [name, envName] of Object.entries(u.headers_env ?? {})) {
      headers[name.toLowerCase()] = fromEnv(envName, `upstreams.${i}.headers_env.${name}`)
    }
    const cost_per_call_micro = Math.round((u.cost_per_call_usd ?? 0) * 1_000_000)
    if (u.kind === 'mcp') return { id: u.id, kind: 'mcp', url: u.url, headers, cost_per_call_micro, timeout_ms }
    return { id: u.id, kind: 'http', base_url: u.base_url.replace(/\/+$/, ''), headers, cost_per_call_micro, timeout_ms }
  })
}
