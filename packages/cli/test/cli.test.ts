import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, startTestGateway, type TestGateway } from '../../server/test/harness.js'

const CLI = resolve(import.meta.dirname, '../bin/chokepoint.js')

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { PATH: process.env['PATH'] ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('exit', (code) => done({ code, stdout, stderr }))
  })
}

describe('chokepoint CLI against a real gateway', () => {
  let gw: TestGateway
  let env: Record<string, string>
  const BOT = 'agent://acme/prod/cli-bot'

  beforeAll(async () => {
    gw = await startTestGateway()
    env = { CHOKEPOINT_URL: gw.url, CHOKEPOINT_API_KEY: gw.adminKey }
  })
  afterAll(() => gw.close())

  it('prints help for every command, with examples, and exits 0', async () => {
    for (const command of ['serve', 'agents', 'kill', 'resume', 'policy', 'audit', 'events', 'keys', 'demo']) {
      const run = await cli([command, '--help'])
      expect(run.code, command).toBe(0)
      expect(run.stdout, command).toMatch(/Usage: chokepoint/)
    }
    const top = await cli(['--help'])
    expect(top.code).toBe(0)
    expect(top.stdout).toMatch(/Exit codes: 0 ok, 1 failure, 2 usage, 3 auth/)
  })

  it('keys create prints the key once; list and revoke work; --json has the API shape', async () => {
    const created = await cli(['keys', 'create', '--role', 'agent', '--agent', BOT, '--name', 'bot', '--json'], env)
    expect(created.code).toBe(0)
    const body = JSON.parse(created.stdout)
    expect(body).toMatchObject({ ok: true, role: 'agent', agent: BOT, key: expect.stringMatching(/^cp_/) })
    const plain = await cli(['keys', 'create', '--role', 'viewer'], env)
    expect(plain.stdout.trim()).toMatch(/^cp_[A-Za-z0-9]+$/)
    const list = await cli(['keys', 'list', '--json'], env)
    const keys = JSON.parse(list.stdout).keys as { key_id: string }[]
    expect(keys.some((k) => k.key_id === body.key_id)).toBe(true)
    expect(list.stdout).not.toContain(body.key)
    const table = await cli(['keys', 'list'], env)
    expect(table.stdout).toMatch(/^KEY ID\s+ROLE/)
    const revoked = await cli(['keys', 'revoke', body.key_id], env)
    expect(revoked.code).toBe(0)
    const after = await api(gw.url, body.key, 'GET', `/v1/intents?agent=${encodeURIComponent(BOT)}`)
    expect(after.status).toBe(401)
  })

  it('agents list/show/register, kill and resume, with exit codes and --json', async () => {
    const key = await agentKey(gw, 'agent://acme/prod/cli-target')
    const beat = await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': 'pod-1' })
    expect(beat.status).toBe(200)
    const reg = await cli(['agents', 'register', 'agent://acme/prod/cli-new', '--name', 'New one', '--json'], env)
    expect(reg.code).toBe(0)
    expect(JSON.parse(reg.stdout).agent.display_name).toBe('New one')
    const list = await cli(['agents'], env)
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(/ADDRESS\s+HEALTH\s+INSTANCES\s+LAST HEARTBEAT\s+INTENTS TODAY\s+COST TODAY/)
    expect(list.stdout).toMatch(/agent:\/\/acme\/prod\/cli-target\s+healthy\s+1\/1/)
    const listJson = JSON.parse((await cli(['agents', 'list', '--json'], env)).stdout)
    expect(listJson.summary.total).toBeGreaterThanOrEqual(2)

    const kill = await cli(['kill', 'agent://acme/prod/cli-target', '--reason', 'looping', '--json'], env)
    expect(kill.code).toBe(0)
    expect(JSON.parse(kill.stdout)).toMatchObject({ ok: true, health_status: 'killed', address: 'agent://acme/prod/cli-target' })
    const sent = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'x.y', to_agent: BOT })
    expect(sent.status).toBe(403)
    const show = await cli(['agents', 'show', 'agent://acme/prod/cli-target'], env)
    expect(show.stdout).toMatch(/health:\s+killed/)
    expect(show.stdout).toMatch(/looping/)
    const resume = await cli(['resume', 'agent://acme/prod/cli-target', '--reason', 'fixed'], env)
    expect(resume.code).toBe(0)
    expect(resume.stdout).toMatch(/resumed agent:\/\/acme\/prod\/cli-target/)
  })

  it('agents --search, --sort cost, --offset; the cost column shows the ceiling', async () => {
    const big = 'agent://clisort/prod/big'
    const small = 'agent://clisort/prod/small'
    for (const [address, cost] of [[big, 12.5], [small, 1]] as const) {
      const key = await agentKey(gw, address)
      expect((await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', { metrics: { cost_usd: cost } }, { 'x-instance-id': 'i-1' })).status).toBe(200)
    }
    await cli(['agents', 'register', 'agent://clisort/prod/idle'], env)
    const policy = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(big)}/policies`, {
      kind: 'cost',
      max_cost_per_day_usd: 50,
      on_breach: 'block',
    })
    expect(policy.status).toBe(200)
    const sorted = await cli(['agents', '--search', 'CLISORT/', '--sort', 'cost', '--limit', '2'], env)
    expect(sorted.code, sorted.stderr).toBe(0)
    const rows = sorted.stdout.split('\n').filter((l) => l.startsWith('agent://'))
    expect(rows.map((l) => l.split(/\s+/)[0])).toEqual([big, small])
    expect(rows[0]).toMatch(/\$12\.50 of \$50\.00/)
    expect(sorted.stdout).toMatch(/agents 1–2 of 3 matching \(next: --offset 2\)/)
    const rest = JSON.parse((await cli(['agents', '--search', 'clisort/', '--sort', 'cost', '--limit', '2', '--offset', '2', '--json'], env)).stdout)
    expect(rest).toMatchObject({ total: 3, next_offset: null })
    expect(rest.agents.map((a: { address: string }) => a.address)).toEqual(['agent://clisort/prod/idle'])
    const asc = JSON.parse((await cli(['agents', '--search', 'clisort/', '--sort', 'cost', '--order', 'asc', '--json'], env)).stdout)
    expect(asc.agents.map((a: { address: string }) => a.address)).toEqual(['agent://clisort/prod/idle', small, big])
    const bad = await cli(['agents', '--sort', 'name'], env)
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--sort must be registered, cost, intents, last_heartbeat/)
    expect((await cli(['agents', '--offset', '-3'], env)).code).toBe(2)
  })

  it('kill --instance quarantines one instance, resume --instance lifts it; agents show marks it', async () => {
    const address = 'agent://acme/prod/cli-pods'
    const key = await agentKey(gw, address)
    for (const pod of ['pod-1', 'pod-2']) {
      expect((await api(gw.url, key, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': pod })).status).toBe(200)
    }
    const kill = await cli(['kill', address, '--instance', 'pod-1', '--reason', 'bad node'], env)
    expect(kill.code, kill.stderr).toBe(0)
    expect(kill.stdout).toMatch(/quarantined instance pod-1 of agent:\/\/acme\/prod\/cli-pods; 0 leased intent\(s\) returned/)
    const again = await cli(['kill', address, '--instance', 'pod-1', '--json'], env)
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, instance_id: 'pod-1', quarantined: true, changed: false, reason: 'bad node' })
    // pod-1 is refused, pod-2 is not, and the agent itself is not killed.
    const refused = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'x.y', to_agent: BOT, payload: {} }, { 'x-instance-id': 'pod-1' })
    expect(refused.status).toBe(403)
    expect(refused.body.error).toMatchObject({ code: 'agent_killed', details: { instance_id: 'pod-1', quarantined: true } })
    const ok = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'x.y', to_agent: BOT, payload: {} }, { 'x-instance-id': 'pod-2' })
    expect(ok.status).toBe(200)
    const show = await cli(['agents', 'show', address], env)
    expect(show.stdout).not.toMatch(/health:\s+killed/)
    expect(show.stdout).toMatch(/QUARANTINED/)
    expect(show.stdout).toMatch(/pod-1\s+healthy\s+.*yes/)
    expect(show.stdout).not.toMatch(/pod-2\s+healthy\s+.*yes/)
    const usage = await cli(['kill', address, '--instance', 'pod-1', '--cancel-pending'], env)
    expect(usage.code).toBe(2)
    expect((await cli(['resume', '--selector', 'agent://acme/**', '--instance', 'pod-1'], env)).code).toBe(2)
    expect((await cli(['kill', 'agent://acme/prod/nobody-here', '--instance', 'pod-1'], env)).code).not.toBe(0)
    const resume = await cli(['resume', address, '--instance', 'pod-1'], env)
    expect(resume.code).toBe(0)
    expect(resume.stdout).toMatch(/resumed instance pod-1 of agent:\/\/acme\/prod\/cli-pods/)
    expect((await cli(['resume', address, '--instance', 'pod-1'], env)).stdout).toMatch(/was not quarantined/)
    const sends = await api(gw.url, key, 'POST', '/v1/intents', { intent_type: 'x.y', to_agent: BOT, payload: {} }, { 'x-instance-id': 'pod-1' })
    expect(sends.status).toBe(200)
    const help = await cli(['kill', '--help'], env)
    expect(help.stdout).toMatch(/--instance <instance_id>/)
    expect(help.stdout).toMatch(/Sends without x-instance-id cannot be told/)
  })

  it('labels and kill/resume by selector: agents register --label, agents label, kill --selector --label (--dry-run), resume --selector', async () => {
    const reg = await cli(['agents', 'register', 'agent://fleet/prod/one', '--label', 'team=payments', '--json'], env)
    expect(reg.code, reg.stderr).toBe(0)
    expect(JSON.parse(reg.stdout).agent.labels).toEqual({ team: 'payments' })
    await cli(['agents', 'register', 'agent://fleet/prod/two', '--label', 'team=search'], env)
    const relabel = await cli(['agents', 'label', 'agent://fleet/prod/two', 'team=payments', 'tier=gold'], env)
    expect(relabel.code, relabel.stderr).toBe(0)
    expect(relabel.stdout).toMatch(/labels: team=payments,tier=gold/)
    const removed = await cli(['agents', 'label', 'agent://fleet/prod/two', 'tier-', '--json'], env)
    expect(JSON.parse(removed.stdout).agent.labels).toEqual({ team: 'payments' })

    const dry = await cli(['kill', '--selector', 'agent://fleet/prod/*', '--label', 'team=payments', '--dry-run'], env)
    expect(dry.code, dry.stderr).toBe(0)
    expect(dry.stdout).toMatch(/dry run: would kill 2 agent\(s\)/)
    expect((await cli(['agents', 'show', 'agent://fleet/prod/one'], env)).stdout).not.toMatch(/health:\s+killed/)
    const kill = await cli(['kill', '--selector', 'agent://fleet/prod/*', '--label', 'team=payments', '--reason', 'bad release'], env)
    expect(kill.code, kill.stderr).toBe(0)
    expect(kill.stdout).toMatch(/killed 2 agent\(s\) \(fleet kill fk_/)
    expect((await cli(['agents', 'show', 'agent://fleet/prod/one'], env)).stdout).toMatch(/health:\s+killed/)
    const all = await cli(['kill', '--selector', 'agent://**'], env)
    expect(all.code).not.toBe(0)
    expect(all.stderr).toMatch(/confirm_all/)
    const both = await cli(['kill', 'agent://fleet/prod/one', '--selector', 'agent://fleet/**'], env)
    expect(both.code).not.toBe(0)
    const resume = await cli(['resume', '--selector', 'agent://fleet/prod/*', '--label', 'team=payments', '--json'], env)
    expect(resume.code, resume.stderr).toBe(0)
    const body = JSON.parse(resume.stdout)
    expect(body.resumed).toHaveLength(2)
    expect(body.ended_fleet_kills).toHaveLength(1)
  })

  it('policy set --deadman creates and then replaces the dead-man policy; list shows it', async () => {
    await agentKey(gw, 'agent://acme/prod/dm-cli')
    const set = await cli(['policy', 'set', 'agent://acme/prod/dm-cli', '--deadman', '5m', '--json'], env)
    expect(set.code, set.stderr).toBe(0)
    expect(JSON.parse(set.stdout).policy).toMatchObject({ kind: 'deadman', silent_after_seconds: 300, on_trigger: 'kill', version: 1 })
    const again = await cli(['policy', 'set', 'agent://acme/prod/dm-cli', '--deadman', '1h', '--on-trigger', 'alert', '--json'], env)
    expect(JSON.parse(again.stdout).policy).toMatchObject({ silent_after_seconds: 3600, on_trigger: 'alert', version: 2 })
    const list = await cli(['policy', 'list', 'agent://acme/prod/dm-cli'], env)
    expect(list.stdout).toMatch(/silent ≥ 3600 s → alert/)
    expect((await cli(['policy', 'set', 'agent://acme/prod/dm-cli', '--deadman', 'soon'], env)).code).toBe(2)
  })

  it('policy set --allow-tools and --rate --direction egress; evaluate --agent --upstream answers for egress calls', async () => {
    await agentKey(gw, 'agent://acme/prod/tools-cli')
    const tools = await cli(['policy', 'set', 'agent://acme/prod/tools-cli', '--allow-tools', 'github/*, deploy-api/GET /v2/**', '--json'], env)
    expect(tools.code, tools.stderr).toBe(0)
    expect(JSON.parse(tools.stdout).policy).toMatchObject({ kind: 'tool', mode: 'allowlist', patterns: ['github/*', 'deploy-api/GET /v2/**'] })
    const rate = await cli(['policy', 'set', 'agent://acme/prod/tools-cli', '--rate', '600/h', '--direction', 'egress', '--on-breach', 'kill', '--json'], env)
    expect(rate.code, rate.stderr).toBe(0)
    expect(JSON.parse(rate.stdout).policy).toMatchObject({ kind: 'rate', direction: 'egress', max_per_hour: 600 })
    const list = await cli(['policy', 'list', 'agent://acme/prod/tools-cli'], env)
    expect(list.stdout).toMatch(/tools allowlist github\/\*, deploy-api\/GET \/v2\/\*\*/)
    expect(list.stdout).toMatch(/egress ≤ 600\/h, on breach kill/)
    const denied = await cli(['policy', 'evaluate', '--agent', 'agent://acme/prod/tools-cli', '--upstream', 'deploy-api', '--tool', 'DELETE /v2/services/web'], env)
    expect(denied.stdout).toMatch(/^deny by pol_\w+: deploy-api\/DELETE \/v2\/services\/web is not in the allowlist/)
    const allowed = await cli(['policy', 'evaluate', '--agent', 'agent://acme/prod/tools-cli', '--upstream', 'github', '--tool', 'create_issue', '--worst-case', '0.01'], env)
    expect(allowed.stdout).toMatch(/^allow: allowed/)
    expect((await cli(['policy', 'evaluate', '--agent', 'agent://acme/prod/tools-cli'], env)).code).toBe(2)
    expect((await cli(['policy', 'set', 'agent://acme/prod/tools-cli', '--allow', 'a.b', '--direction', 'egress'], env)).code).toBe(2)
  })

  it('policy set --monitor watches without blocking; set again without it enforces; evaluate shows both', async () => {
    await agentKey(gw, 'agent://acme/prod/mon-cli')
    const set = await cli(['policy', 'set', 'agent://acme/prod/mon-cli', '--deny', 'db.drop.*', '--monitor', '--json'], env)
    expect(set.code, set.stderr).toBe(0)
    expect(JSON.parse(set.stdout).policy).toMatchObject({ kind: 'action', enforcement: 'monitor' })
    expect((await cli(['policy', 'list', 'agent://acme/prod/mon-cli'], env)).stdout).toMatch(/\[monitor only\]/)
    const watched = await cli(['policy', 'evaluate', '--from', 'agent://acme/prod/mon-cli', '--to', 'agent://acme/prod/x', '--type', 'db.drop.users'], env)
    expect(watched.stdout).toMatch(/^allow: allowed\n  monitor only: pol_\w+ would deny \(deny\)/)
    const enforced = await cli(['policy', 'set', 'agent://acme/prod/mon-cli', '--deny', 'db.drop.*', '--json'], env)
    expect(JSON.parse(enforced.stdout).policy).toMatchObject({ enforcement: 'enforce', version: 2 })
    const denied = await cli(['policy', 'evaluate', '--from', 'agent://acme/prod/mon-cli', '--to', 'agent://acme/prod/x', '--type', 'db.drop.users'], env)
    expect(denied.stdout).toMatch(/^deny by pol_\w+: db\.drop\.users is in the denylist/)
  })

  it('policy defaults set/show/clear; list shows the defaults that apply; evaluate names them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-defaults-'))
    try {
      const file = join(dir, 'defaults.json')
      writeFileSync(file, JSON.stringify({ policies: [{ kind: 'action', direction: 'send', mode: 'denylist', patterns: ['rm.rf.*'] }] }))
      const set = await cli(['policy', 'defaults', 'set', file], env)
      expect(set.code, set.stderr).toBe(0)
      expect(set.stdout).toMatch(/replaced: 1 default policy/)
      expect((await cli(['policy', 'defaults', 'set', file], env)).stdout).toMatch(/unchanged: 1 default policy/)
      expect((await cli(['policy', 'defaults'], env)).stdout).toMatch(/action\s+send denylist rm\.rf\.\*/)
      await agentKey(gw, 'agent://acme/prod/dflt-cli')
      const list = await cli(['policy', 'list', 'agent://acme/prod/dflt-cli'], env)
      expect(list.stdout).toMatch(/default\s+action\s+send denylist rm\.rf\.\*\s+yes/)
      const ev = await cli(['policy', 'evaluate', '--from', 'agent://acme/prod/dflt-cli', '--to', 'agent://acme/prod/x', '--type', 'rm.rf.root'], env)
      expect(ev.stdout).toMatch(/^deny by default policy pol_/)
      writeFileSync(file, '{"nope": 1}')
      const bad = await cli(['policy', 'defaults', 'set', file], env)
      expect(bad.code).toBe(2)
      expect(bad.stderr).toMatch(/must hold \{"policies"/)
      expect((await cli(['policy', 'defaults', 'clear'], env)).stdout).toMatch(/replaced: 0 default policies/)
      expect((await cli(['policy', 'defaults'], env)).stdout).toMatch(/no default policies/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('policy set/list/evaluate/rm, audit list/verify/export, events', async () => {
    await agentKey(gw, 'agent://acme/prod/deployer')
    const set = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', '500/h', '--on-breach', 'kill', '--json'], env)
    expect(set.code).toBe(0)
    const policy = JSON.parse(set.stdout).policy
    expect(policy).toMatchObject({ kind: 'rate', max_per_hour: 500, on_breach: 'kill', direction: 'send', version: 1 })
    // "set" again replaces that policy in place (same id, next version) instead of adding a second.
    const again = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', '300/h', '--on-breach', 'kill', '--json'], env)
    expect(again.code).toBe(0)
    expect(JSON.parse(again.stdout).policy).toMatchObject({ policy_id: policy.policy_id, max_per_hour: 300, version: 2 })
    const rates = async () =>
      (await api(gw.url, gw.adminKey, 'GET', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/deployer')}/policies`)).body.policies.filter(
        (p: { kind: string }) => p.kind === 'rate',
      )
    expect(await rates()).toHaveLength(1)
    // A receive-direction rate is another slot; --add makes a second send-direction one.
    expect((await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', '900/h', '--direction', 'receive'], env)).code).toBe(0)
    const added = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', '5000/day', '--add', '--json'], env)
    expect(added.code).toBe(0)
    expect(JSON.parse(added.stdout).policy.policy_id).not.toBe(policy.policy_id)
    expect(await rates()).toHaveLength(3)
    // With two send-direction rates, "set" will not guess which one to replace.
    const ambiguous = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', '100/h'], env)
    expect(ambiguous.code).toBe(1)
    expect(ambiguous.stderr).toMatch(/has 2 rate \(send\) policies/)
    expect((await cli(['policy', 'rm', JSON.parse(added.stdout).policy.policy_id], env)).code).toBe(0)
    const cost = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--cost', '50/day', '--on-breach', 'kill'], env)
    expect(cost.code).toBe(0)
    const allow = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--allow', 'deploy.*.v1'], env)
    expect(allow.code).toBe(0)
    const list = await cli(['policy', 'list', 'agent://acme/prod/deployer'], env)
    expect(list.stdout).toMatch(/send ≤ 300\/h, on breach kill/)
    const evaluation = await cli(
      ['policy', 'evaluate', '--from', 'agent://acme/prod/deployer', '--to', BOT, '--type', 'rm.rf', '--json'],
      env,
    )
    expect(JSON.parse(evaluation.stdout)).toMatchObject({ decision: 'deny' })
    const rm = await cli(['policy', 'rm', policy.policy_id], env)
    expect(rm.code).toBe(0)
    const bad = await cli(['policy', 'set', 'agent://acme/prod/deployer', '--rate', 'lots'], env)
    expect(bad.code).toBe(2)

    const audit = JSON.parse((await cli(['audit', 'list', '--json', '--action', 'policy.'], env)).stdout)
    expect(audit.entries.map((e: { action: string }) => e.action)).toEqual(
      expect.arrayContaining(['policy.create', 'policy.delete']),
    )
    const verify = await cli(['audit', 'verify'], env)
    expect(verify.code).toBe(0)
    expect(verify.stdout).toMatch(/valid: \d+ entries/)
    const jsonl = await cli(['audit', 'export', '--format', 'jsonl'], env)
    const lines = jsonl.stdout.trim().split('\n').map((l) => JSON.parse(l))
    expect(lines[0].seq).toBe(1)
    const csv = await cli(['audit', 'export', '--format', 'csv'], env)
    expect(csv.stdout.split('\n')[0]).toBe('seq,at,actor,action,target,reason,before,after,prev_hash,hash')
    expect(csv.stdout.trim().split('\n')).toHaveLength(lines.length + 1)
    const events = JSON.parse((await cli(['events', '--json', '--type', 'agent.killed'], env)).stdout)
    expect(events.events[0].event_type).toBe('agent.killed')
  })

  it('events --follow streams a kill as it happens', async () => {
    await agentKey(gw, 'agent://acme/prod/followed')
    const child = spawn(process.execPath, [CLI, 'events', '--follow', '--json'], {
      env: { PATH: process.env['PATH'] ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    try {
      // The command says when its stream is open; only events after that are followed.
      const connected = Date.now() + 15_000
      while (!err.includes('following mesh events') && Date.now() < connected) await new Promise((r) => setTimeout(r, 50))
      expect(err).toContain('following mesh events')
      await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent('agent://acme/prod/followed')}/kill`, {})
      const deadline = Date.now() + 5000
      while (!out.includes('agent://acme/prod/followed') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
      const line = out.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.address === 'agent://acme/prod/followed')
      expect(line).toMatchObject({ event_type: 'agent.killed' })
    } finally {
      child.kill('SIGINT')
    }
  })

  it('exit codes: 2 usage, 3 bad key, 4 unknown agent, 1 unreachable gateway; one-line errors', async () => {
    const usage = await cli(['kill'], env)
    expect(usage.code).toBe(2)
    const noKey = await cli(['agents'], { CHOKEPOINT_URL: gw.url })
    expect(noKey.code).toBe(2)
    const badKey = await cli(['agents'], { ...env, CHOKEPOINT_API_KEY: 'cp_wrongwrongwrongwrongwrong' })
    expect(badKey.code).toBe(3)
    expect(badKey.stderr).toMatch(/refused the key/)
    const viewer = JSON.parse((await cli(['keys', 'create', '--role', 'viewer', '--json'], env)).stdout).key
    const forbidden = await cli(['kill', BOT], { ...env, CHOKEPOINT_API_KEY: viewer })
    expect(forbidden.code).toBe(3)
    const unknown = await cli(['kill', 'agent://acme/prod/never-seen'], env)
    expect(unknown.code).toBe(4)
    expect(unknown.stderr.trim().split('\n')).toHaveLength(1)
    const down = await cli(['agents'], { ...env, CHOKEPOINT_URL: 'http://127.0.0.1:9' })
    expect(down.code).toBe(1)
    expect(down.stderr).toMatch(/cannot reach the gateway/)
    for (const run of [badKey, unknown, down]) expect(run.stderr).not.toMatch(/\n\s+at /)
    const unknownCommand = await cli(['frobnicate'])
    expect(unknownCommand.code).toBe(2)
  })

  it('serve refuses bad configuration naming the setting', async () => {
    const run = await cli(['serve', '--port', '99999'], {})
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(/--port/)
    const envRun = await cli(['serve'], { CHOKEPOINT_PORT: 'eighty' })
    expect(envRun.code).toBe(2)
    expect(envRun.stderr).toMatch(/CHOKEPOINT_PORT/)
  })
})
