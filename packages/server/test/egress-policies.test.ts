/**
 * Policies over egress, on both stores: `tool` policies (validation and their globs), `rate`
 * policies with `direction: "egress"` counting LLM calls (block, then auto-kill, and the resume
 * baseline), and the reason an egress refusal names.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { compileToolGlob, toolGlobError } from '../src/core/policies/tool-glob.js'
import { FAKE_LLM_KEY, startFakeLlm, type FakeLlm } from './fake-llm.js'
import { agentKey, api, pollUntil, startTestGateway, testEngines, type TestGateway } from './harness.js'

const ENGINES = testEngines('egress-policies.test.ts')
const PRICE = { input_cost_per_token: 0.000001, output_cost_per_token: 0.000002, max_input_tokens: 100_000, max_output_tokens: 100 }

describe('tool-name globs', () => {
  it('* stays within one path segment, ** crosses them, the rest matches itself', () => {
    const github = compileToolGlob('github/*')
    expect(github('github/create_issue')).toBe(true)
    expect(github('github/repos/delete')).toBe(false)
    expect(github('gitlab/create_issue')).toBe(false)
    const deploy = compileToolGlob('deploy-api/POST /v2/services/**')
    expect(deploy('deploy-api/POST /v2/services/web/deploys')).toBe(true)
    expect(deploy('deploy-api/GET /v2/services/web')).toBe(false)
    expect(deploy('deploy-api/POST /v2/servicesX')).toBe(false)
    const anyGet = compileToolGlob('deploy-api/GET /v2/*')
    expect(anyGet('deploy-api/GET /v2/services')).toBe(true)
    expect(anyGet('deploy-api/GET /v2/services/web')).toBe(false)
    // Regex characters are literal.
    expect(compileToolGlob('a/b.c(d)')('a/b.c(d)')).toBe(true)
    expect(compileToolGlob('a/b.c(d)')('a/bXc(d)')).toBe(false)
  })

  it('refuses empty, overlong, control characters, *** and names without an upstream', () => {
    expect(toolGlobError('')).toMatch(/empty/)
    expect(toolGlobError(`a/${'x'.repeat(300)}`)).toMatch(/256/)
    expect(toolGlobError('a/b\u0000')).toMatch(/control/)
    expect(toolGlobError('a/***')).toMatch(/\*\*\*/)
    expect(toolGlobError('create_issue')).toMatch(/upstream/)
    expect(toolGlobError('github/**')).toBeNull()
  })
})

describe.each(ENGINES)('egress policies (%s)', (engine) => {
  let fake: FakeLlm
  let gw: TestGateway
  const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-policies-'))
  beforeAll(async () => {
    fake = await startFakeLlm()
    const file = join(dir, 'egress.json')
    writeFileSync(file, JSON.stringify({ upstreams: [{ id: 'llm', kind: 'openai', base_url: fake.url, api_key_env: 'FAKE_KEY', models: { 'fake-model': PRICE } }] }))
    gw = await startTestGateway({ engine, env: { CHOKEPOINT_EGRESS_CONFIG: file, FAKE_KEY: FAKE_LLM_KEY } })
  })
  afterAll(async () => {
    await gw?.close()
    await fake?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const chat = (key: string) => api(gw.url, key, 'POST', '/llm/llm/v1/chat/completions', { model: 'fake-model', messages: [{ role: 'user', content: 'hi' }] })
  const policy = (address: string, body: unknown) => api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/policies`, body)

  it('a tool policy is validated like any policy: bad patterns are a 422 naming the field', async () => {
    const address = `agent://egress-pol-${engine}/prod/validated`
    await agentKey(gw, address)
    const bad = await policy(address, { kind: 'tool', mode: 'allowlist', patterns: ['create_issue'] })
    expect(bad.status).toBe(422)
    expect(bad.body.error.code).toBe('schema_invalid')
    expect(JSON.stringify(bad.body.error)).toMatch(/patterns/)
    const good = await policy(address, { kind: 'tool', mode: 'denylist', patterns: ['github/delete_*', 'deploy-api/DELETE /**'] })
    expect(good.status).toBe(200)
    expect(good.body.policy).toMatchObject({ kind: 'tool', mode: 'denylist', patterns: ['github/delete_*', 'deploy-api/DELETE /**'], enforcement: 'enforce' })
    // A tool policy says nothing about LLM calls (they name no tool).
    const key = await agentKey(gw, address)
    expect((await chat(key)).status).toBe(200)
  })

  it('rate direction egress blocks the call past the limit without reaching the upstream, and counts only egress calls', async () => {
    const address = `agent://egress-pol-${engine}/prod/limited`
    const key = await agentKey(gw, address)
    expect((await policy(address, { kind: 'rate', direction: 'egress', max_per_hour: 3, on_breach: 'block' })).status).toBe(200)
    // Intents are not egress calls: sending does not use the egress allowance.
    const peer = `agent://egress-pol-${engine}/prod/peer`
    await agentKey(gw, peer)
    for (let i = 0; i < 5; i++) {
      expect((await api(gw.url, key, 'POST', '/v1/intents', { to_agent: peer, intent_type: 'note.v1', payload: {} })).status).toBe(200)
    }
    for (let i = 0; i < 3; i++) expect((await chat(key)).status).toBe(200)
    const before = fake.requests.length
    const refused = await chat(key)
    expect(refused.status).toBe(429)
    expect(refused.body.error).toMatchObject({ code: 'rate_limited', type: 'rate_limited' })
    expect(refused.body.error.message).toMatch(/3 egress calls per hour/)
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/)
    expect(fake.requests.length).toBe(before)
    // Noted once per window as a breach on the agent.
    const events = await pollUntil(
      async () => {
        const r = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?address=${encodeURIComponent(address)}&event_type=policy.breached`)
        return r.body.events.length > 0 ? r.body.events : null
      },
      { timeoutMs: 5000, what: 'policy.breached event' },
    )
    expect(events[0].details).toMatchObject({ upstream: 'llm', window: 'hour' })
  })

  it('rate direction egress with on_breach kill kills the agent; after resume it counts from the resume', async () => {
    const address = `agent://egress-pol-${engine}/prod/looper`
    const key = await agentKey(gw, address)
    const created = await policy(address, { kind: 'rate', direction: 'egress', max_per_day: 2, on_breach: 'kill' })
    expect(created.status).toBe(200)
    expect((await chat(key)).status).toBe(200)
    expect((await chat(key)).status).toBe(200)
    const breach = await chat(key)
    expect(breach.status).toBe(429)
    const agentPath = `/v1/mesh/agents/${encodeURIComponent(address)}`
    const killed = (await api(gw.url, gw.adminKey, 'GET', agentPath)).body.agent
    expect(killed.health_status).toBe('killed')
    expect(killed.killed_by).toBe(`policy:${created.body.policy.policy_id}`)
    const after = await chat(key)
    expect(after.status).toBe(403)
    expect(after.body.error.code).toBe('agent_killed')
    expect((await api(gw.url, gw.adminKey, 'POST', `${agentPath}/resume`, { reason: 'fixed the loop' })).status).toBe(200)
    // The resume baseline: the 2 calls before the kill no longer count today.
    expect((await chat(key)).status).toBe(200)
    expect((await chat(key)).status).toBe(200)
    expect((await chat(key)).status).toBe(429)
  })

  it('a monitored egress rate policy blocks nothing and records policy.would_deny', async () => {
    const address = `agent://egress-pol-${engine}/prod/watched`
    const key = await agentKey(gw, address)
    expect((await policy(address, { kind: 'rate', direction: 'egress', max_per_hour: 1, on_breach: 'block', enforcement: 'monitor' })).status).toBe(200)
    for (let i = 0; i < 3; i++) expect((await chat(key)).status).toBe(200)
    const r = await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/events?address=${encodeURIComponent(address)}&event_type=policy.would_deny`)
    expect(r.body.events.length).toBe(2)
    expect(r.body.events[0].details).toMatchObject({ upstream: 'llm', decision: 'rate_limited', enforcement: 'monitor' })
  })

  it('POST /v1/policies/evaluate answers for egress calls: tool policies, egress rate, the ceiling with the worst case', async () => {
    const address = `agent://egress-pol-${engine}/prod/evaluated`
    const key = await agentKey(gw, address)
    const evaluate = (egress: unknown) => api(gw.url, gw.adminKey, 'POST', '/v1/policies/evaluate', { agent: address, egress })
    expect((await evaluate({ upstream: 'github', tool: 'create_issue' })).body).toMatchObject({ decision: 'allow', tool: 'github/create_issue' })
    const tool = await policy(address, { kind: 'tool', mode: 'allowlist', patterns: ['github/*', 'deploy-api/GET /**'] })
    const denied = await evaluate({ upstream: 'github', tool: 'repos/delete' })
    expect(denied.status).toBe(200)
    expect(denied.body).toMatchObject({ decision: 'deny', policy_id: tool.body.policy.policy_id, decided_by: 'agent' })
    expect(denied.body.reason).toMatch(/github\/repos\/delete is not in the allowlist/)
    expect((await evaluate({ upstream: 'deploy-api', tool: 'GET /v2/services/web' })).body.decision).toBe('allow')
    expect((await evaluate({ upstream: 'deploy-api', tool: 'POST /v2/services/web' })).body.decision).toBe('deny')
    // An LLM call names no tool: the allowlist says nothing about it.
    expect((await evaluate({ upstream: 'llm' })).body.decision).toBe('allow')
    // The ceiling: $0.0003 a day; a call that may cost $0.0004 would not fit, $0.0002 would.
    const cost = await policy(address, { kind: 'cost', max_cost_per_day_usd: 0.0003, on_breach: 'block' })
    const over = await evaluate({ upstream: 'llm', worst_case_usd: 0.0004 })
    expect(over.body).toMatchObject({ decision: 'budget_exceeded', policy_id: cost.body.policy.policy_id })
    expect((await evaluate({ upstream: 'llm', worst_case_usd: 0.0002 })).body.decision).toBe('allow')
    // Egress counts come from the admitted calls.
    expect((await chat(key)).status).toBe(200)
    expect((await evaluate({ upstream: 'llm' })).body.counters).toMatchObject({ egress_this_hour: 1, egress_today: 1, reserved_usd: 0 })
    // Bad bodies: both forms at once, or half of one, are 422 naming the field.
    const both = await api(gw.url, gw.adminKey, 'POST', '/v1/policies/evaluate', { agent: address, egress: { upstream: 'llm' }, intent_type: 'a.b' })
    expect(both.status).toBe(422)
    const half = await api(gw.url, gw.adminKey, 'POST', '/v1/policies/evaluate', { agent: address })
    expect(half.status).toBe(422)
    expect(JSON.stringify(half.body.error)).toMatch(/egress/)
    // Killed: denied as killed.
    await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'test' })
    expect((await evaluate({ upstream: 'llm' })).body).toMatchObject({ decision: 'deny', killed: true })
  })
})
