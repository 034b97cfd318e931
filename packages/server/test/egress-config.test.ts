/**
 * `--egress-config`: the four upstream kinds, validated at start; a bad file names the field, a
 * missing credential variable stops the start (fail closed).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { loadEgressConfig } from '../src/egress-config.js'

const dir = mkdtempSync(join(tmpdir(), 'chokepoint-egress-config-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))
let n = 0
const load = (json: unknown, env: Record<string, string> = {}) => {
  const file = join(dir, `egress-${n++}.json`)
  writeFileSync(file, JSON.stringify(json))
  return loadEgressConfig(file, env)
}
const PRICE = { input_cost_per_token: 0.000003, output_cost_per_token: 0.000015, max_input_tokens: 200_000, max_output_tokens: 8192 }

describe('egress config', () => {
  it('reads openai, anthropic, mcp and http upstreams with their credentials from the environment', () => {
    const upstreams = load(
      {
        upstreams: [
          { id: 'openai', kind: 'openai', base_url: 'https://api.openai.com/', api_key_env: 'OPENAI_KEY', models: { 'gpt-4o-mini': PRICE } },
          { id: 'claude', kind: 'anthropic', base_url: 'https://api.anthropic.com', api_key_env: 'ANTHROPIC_KEY', models: { 'claude-sonnet-4-5': { ...PRICE, litellm_provider: 'anthropic', mode: 'chat' } } },
          { id: 'github', kind: 'mcp', url: 'https://mcp.example.com/mcp', headers_env: { Authorization: 'GITHUB_MCP_AUTH' }, cost_per_call_usd: 0.001 },
          { id: 'deploy-api', kind: 'http', base_url: 'https://deploy.example.com/api/', headers_env: { 'X-Api-Token': 'DEPLOY_TOKEN' }, cost_per_call_usd: 0.05, timeout_ms: 30_000 },
        ],
      },
      { OPENAI_KEY: 'sk-1', ANTHROPIC_KEY: ' sk-ant-2 ', GITHUB_MCP_AUTH: 'Bearer ghp_3', DEPLOY_TOKEN: 'tok-4' },
    )
    expect(upstreams.map((u) => [u.id, u.kind])).toEqual([
      ['openai', 'openai'],
      ['claude', 'anthropic'],
      ['github', 'mcp'],
      ['deploy-api', 'http'],
    ])
    expect(upstreams[0]).toMatchObject({ base_url: 'https://api.openai.com', api_key: 'sk-1', timeout_ms: 600_000 })
    expect(upstreams[1]).toMatchObject({ api_key: 'sk-ant-2', anthropic_version: '2023-06-01' })
    expect(upstreams[2]).toMatchObject({ url: 'https://mcp.example.com/mcp', headers: { authorization: 'Bearer ghp_3' }, cost_per_call_micro: 1000 })
    expect(upstreams[3]).toMatchObject({ base_url: 'https://deploy.example.com/api', headers: { 'x-api-token': 'tok-4' }, cost_per_call_micro: 50_000, timeout_ms: 30_000 })
  })

  it('names the field of a bad entry, a missing variable, a duplicate id and an unknown kind', () => {
    expect(() => load({ upstreams: [{ id: 'x', kind: 'mcp', url: 'ftp://nope' }] })).toThrow(/upstreams\.0\.url/)
    expect(() => load({ upstreams: [{ id: 'x', kind: 'mcp', url: 'http://127.0.0.1:1/mcp', headers_env: { Authorization: 'MISSING_VAR' } }] })).toThrow(
      /upstreams\.0\.headers_env\.Authorization: MISSING_VAR is not set/,
    )
    expect(() => load({ upstreams: [{ id: 'x', kind: 'http', base_url: 'http://127.0.0.1:1', headers_env: { 'bad header': 'V' } }] }, { V: 'v' })).toThrow(
      /upstreams\.0\.headers_env/,
    )
    expect(() => load({ upstreams: [{ id: 'x', kind: 'http', base_url: 'http://127.0.0.1:1', cost_per_call_usd: -1 }] })).toThrow(/cost_per_call_usd/)
    expect(() =>
      load({
        upstreams: [
          { id: 'x', kind: 'http', base_url: 'http://127.0.0.1:1' },
          { id: 'x', kind: 'mcp', url: 'http://127.0.0.1:2/mcp' },
        ],
      }),
    ).toThrow(/upstreams\.1\.id: "x" appears twice/)
    expect(() => load({ upstreams: [{ id: 'x', kind: 'bedrock', base_url: 'http://127.0.0.1:1' }] })).toThrow(/upstreams\.0\.kind/)
    expect(() => load({ upstreams: [{ id: 'x', kind: 'openai', base_url: 'http://127.0.0.1:1', api_key_env: 'K', models: {} }] })).toThrow(/api_key_env: K is not set/)
  })
})
