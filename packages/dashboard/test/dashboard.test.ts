/**
 * The console in a real headless browser (Debian's chromium through playwright-core) against a
 * real gateway on SQLite, seeded through the SDK — no mocked API. Assertions are on text and
 * roles. Skips, saying so, only when no browser is installed (`.ci/run` installs chromium).
 */
import { existsSync } from 'node:fs'
import http from 'node:http'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { Operator } from '@chokepoint/sdk'
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { agentKey, api, startTestGateway, type TestGateway } from '../../server/test/harness.js'

const CHROMIUM = [process.env['CHOKEPOINT_CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'].find(
  (p): p is string => typeof p === 'string' && existsSync(p),
)
const DIST = join(import.meta.dirname, '..', 'dist', 'index.html')
if (!CHROMIUM) console.warn('dashboard browser tests SKIPPED: no chromium found (apt-get install chromium, or set CHOKEPOINT_CHROMIUM)')

const PLANNER = 'agent://acme/prod/planner'
const DEPLOYER = 'agent://acme/prod/deployer'
const BILLING = 'agent://acme/prod/billing'
const enc = encodeURIComponent

describe.skipIf(!CHROMIUM)('dashboard in a real browser', () => {
  let gw: TestGateway
  let op: Operator
  let browser: Browser
  let context: BrowserContext
  let keys: Record<string, string>
  let viewerKey: string

  beforeAll(async () => {
    expect(existsSync(DIST), 'the dashboard is built (npm run build)').toBe(true)
    gw = await startTestGateway({ env: { CHOKEPOINT_SWEEP_INTERVAL_MS: '1000' } })
    op = new Operator({ baseURL: gw.url, apiKey: gw.adminKey })
    keys = {}
    for (const a of [PLANNER, DEPLOYER, BILLING]) keys[a] = await agentKey(gw, a)
    await op.agents.update(DEPLOYER, { display_name: 'Deployer' })
    await op.policies.create(BILLING, { kind: 'cost', max_cost_per_day_usd: 50, on_breach: 'block' })
    // Some traffic: the planner sends work, billing resolves one with a cost, heartbeats from two instances.
    const send = (to: string, type: string) => api(gw.url, keys[PLANNER] as string, 'POST', '/v1/intents', { to_agent: to, intent_type: type, payload: {} })
    for (let i = 0; i < 3; i++) expect((await send(DEPLOYER, 'deploy.service.v1')).status).toBe(200)
    const bill = await send(BILLING, 'invoice.create.v1')
    await api(gw.url, keys[BILLING] as string, 'POST', `/v1/intents/${bill.body.intent_id}/resolve`, { status: 'COMPLETED', cost_usd: 18.6 })
    for (const [a, i] of [[DEPLOYER, 'pod-1'], [DEPLOYER, 'pod-2'], [PLANNER, 'pod-1']] as const) {
      await api(gw.url, keys[a] as string, 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': i })
    }
    viewerKey = (await op.keys.create({ role: 'viewer', name: 'night-viewer' })).key
    browser = await chromium.launch({ executablePath: CHROMIUM as string, headless: true, args: ['--no-sandbox'] })
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
  })
  afterAll(async () => {
    await browser?.close()
    await gw?.close()
  })

  async function signedIn(path = '/agents', key = gw.adminKey, ctx = context): Promise<Page> {
    const page = await ctx.newPage()
    await page.goto(`${gw.url}${path}`)
    await page.getByLabel('API key').fill(key)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('button', { name: 'Sign out' }).waitFor()
    return page
  }
  const row = (page: Page, address: string) => page.locator(`tr[data-address="${address}"]`)

  it('is served at / with a strict CSP, hashed long-cached assets and an SPA fallback; /v1 never falls back', async () => {
    const index = await fetch(`${gw.url}/`)
    expect(index.status).toBe(200)
    expect(index.headers.get('content-security-policy')).toMatch(/^default-src 'self'/)
    expect(index.headers.get('cache-control')).toBe('no-cache')
    const html = await index.text()
    expect(html).not.toMatch(/<script>(?!<)/) // no inline script
    const asset = /src="(\/assets\/app-[A-Z0-9]+\.js)"/.exec(html)?.[1] as string
    const js = await fetch(`${gw.url}${asset}`)
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable')
    expect(js.headers.get('content-type')).toMatch(/text\/javascript/)
    expect((await fetch(`${gw.url}/agents/addr_x?window=week`)).headers.get('content-type')).toMatch(/text\/html/)
    const api404 = await fetch(`${gw.url}/v1/nope`)
    expect(api404.status).toBe(404)
    expect(((await api404.json()) as any).error.code).toBe('not_found')
    // A path that climbs out of assets/ (sent raw: fetch would normalise the dots away).
    const climbed = await new Promise<number>((resolve, reject) => {
      http
        .get(`${gw.url}/assets/..%2f..%2fpackage.json`, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        })
        .on('error', reject)
    })
    expect(climbed).toBe(404)
  })

  it('a bad key gets a clear banner, not a blank page', async () => {
    const page = await context.newPage()
    await page.goto(`${gw.url}/agents`)
    await page.getByLabel('API key').fill('cp_notARealKey0123456789abcdef')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/not accepted \(401 unauthorized\)/)
    await page.close()
  })

  it("signs in; the agents table's numbers are the API's", async () => {
    const page = await signedIn()
    const list = await op.agents.list({ window: 'day' })
    await row(page, DEPLOYER).waitFor()
    const summary = page.getByRole('region', { name: 'Summary' })
    await expect.poll(() => summary.textContent()).toContain(`Total${list.summary.total}`)
    expect(await summary.textContent()).toContain(`Intents · Today${list.summary.intents_period}`)
    expect(await summary.textContent()).toContain(`Cost · Today$${list.summary.cost_period.toFixed(2)}`)
    for (const a of list.agents) {
      const text = (await row(page, a.address).textContent()) as string
      expect(text).toContain(a.display_name)
      expect(text).toContain(`${a.instances_healthy}/${a.instances_total}`)
    }
    expect(await row(page, BILLING).textContent()).toContain('$18.60 of $50.00 today')
    expect(await row(page, DEPLOYER).textContent()).toContain('Deployer')
    expect(await row(page, DEPLOYER).textContent()).toContain('2/2')
    await page.close()
  })

  it('kill with a reason: the row shows killed, the next send is 403 agent_killed, the audit names actor and reason; another tab sees it within 1 s; resume shows redelivering', async () => {
    const other = await signedIn()
    const page = await signedIn()
    await row(page, DEPLOYER).getByRole('button', { name: `Kill ${DEPLOYER}` }).click()
    const dialog = page.getByRole('dialog', { name: 'Kill Deployer?' })
    await expect.poll(() => dialog.textContent()).toContain(DEPLOYER)
    await dialog.getByLabel('Reason').fill('deploy loop at 3 a.m.')
    const clicked = Date.now()
    await dialog.getByRole('button', { name: 'Kill agent' }).click()
    await expect.poll(() => dialog.getByRole('status').textContent()).toMatch(/^Killed at .*: 3 intents held\.$/)
    await dialog.getByRole('button', { name: 'Close' }).click()
    await expect.poll(() => row(page, DEPLOYER).textContent()).toMatch(/Killed .* by key key_\w+ — “deploy loop at 3 a\.m\.”/)
    // The other tab, which did nothing, shows it from the live stream.
    await row(other, DEPLOYER).getByText(/Killed .* by key/).waitFor({ timeout: 1_000 })
    console.log(`dashboard: a kill in one tab showed in another after ${Date.now() - clicked} ms`)
    const refused = await api(gw.url, keys[DEPLOYER] as string, 'POST', '/v1/intents', { intent_type: 'x.v1', to_agent: PLANNER, payload: {} })
    expect(refused.status).toBe(403)
    expect(refused.body.error.code).toBe('agent_killed')
    const audit = (await op.audit.list({ action_prefix: 'agent.kill', target: DEPLOYER })).entries
    expect(audit).toHaveLength(1)
    expect(audit[0]).toMatchObject({ reason: 'deploy loop at 3 a.m.' })
    expect(audit[0]?.actor).toMatch(/^key:/)

    await row(page, DEPLOYER).getByRole('button', { name: `Resume ${DEPLOYER}` }).click()
    const resume = page.getByRole('dialog', { name: 'Resume Deployer?' })
    await resume.getByRole('button', { name: 'Resume agent' }).click()
    await expect.poll(() => resume.getByRole('status').textContent()).toBe('Resumed: 3 held intents redelivering.')
    await page.close()
    await other.close()
  })

  it('an open Kill modal keeps its typed reason through 5 live updates', async () => {
    const page = await signedIn()
    await row(page, PLANNER).getByRole('button', { name: `Kill ${PLANNER}` }).click()
    const dialog = page.getByRole('dialog')
    await dialog.getByLabel('Reason').fill('half-typed reas')
    for (let i = 0; i < 5; i++) {
      // Each kill/resume of another agent is a mesh event the page refreshes on.
      await op.agents[i % 2 === 0 ? 'kill' : 'resume'](BILLING, { reason: `live update ${i}` })
      await page.waitForTimeout(250)
    }
    await expect.poll(() => row(page, BILLING).textContent()).toMatch(/killed/)
    expect(await dialog.isVisible()).toBe(true)
    expect(await dialog.getByLabel('Reason').inputValue()).toBe('half-typed reas')
    await page.keyboard.press('Escape')
    await expect.poll(() => page.getByRole('dialog').count()).toBe(0)
    expect((await op.agents.retrieve(PLANNER)).agent.health_status).not.toBe('killed')
    await op.agents.resume(BILLING)
    await page.close()
  })

  it('one list request per refresh, never one per row', async () => {
    const page = await signedIn()
    await row(page, PLANNER).waitFor()
    const calls: string[] = []
    page.on('request', (r) => {
      const path = new URL(r.url()).pathname
      if (path.startsWith('/v1/')) calls.push(path)
    })
    await op.agents.kill(BILLING, { reason: 'count the requests' })
    await expect.poll(() => row(page, BILLING).textContent()).toMatch(/count the requests/)
    expect(calls.filter((p) => p.startsWith('/v1/mesh/agents'))).toEqual(['/v1/mesh/agents'])
    await op.agents.resume(BILLING)
    await page.close()
  })

  it('keyboard: Tab stays inside the Kill modal; phone width still shows every agent and its Kill button', async () => {
    const page = await signedIn()
    await row(page, PLANNER).getByRole('button', { name: `Kill ${PLANNER}` }).click()
    const dialog = page.getByRole('dialog')
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press('Tab')
      expect(await dialog.evaluate((d) => d.contains((globalThis as any).document.activeElement))).toBe(true)
    }
    await page.keyboard.press('Escape')
    await expect.poll(() => page.getByRole('dialog').count()).toBe(0)
    // Focus goes back to the button that opened it.
    await expect.poll(() => page.evaluate(() => (globalThis as any).document.activeElement?.getAttribute('aria-label'))).toBe(`Kill ${PLANNER}`)
    await page.setViewportSize({ width: 390, height: 844 })
    for (const a of [PLANNER, DEPLOYER, BILLING]) expect(await row(page, a).isVisible()).toBe(true)
    expect(await row(page, PLANNER).getByRole('button', { name: `Kill ${PLANNER}` }).isVisible()).toBe(true)
    await page.close()
  })

  it('quarantines one instance from the agent page, and releases it', async () => {
    const deployer = (await op.agents.retrieve(DEPLOYER)).agent
    const page = await signedIn(`/agents/${enc(deployer.address_id)}`)
    await page.getByRole('button', { name: 'Quarantine instance pod-2' }).click()
    const dialog = page.getByRole('dialog', { name: 'Quarantine pod-2 of Deployer?' })
    await dialog.getByLabel('Reason').fill('bad node')
    await dialog.getByRole('button', { name: 'Quarantine instance' }).click()
    await expect.poll(() => dialog.getByRole('status').textContent()).toMatch(/^Quarantined pod-2: \d+ leased intents? went back to the other instances\.$/)
    await dialog.getByRole('button', { name: 'Close' }).click()
    const instances = (await op.agents.retrieve(DEPLOYER)).agent.instances
    expect(instances.find((i) => i.instance_id === 'pod-2')?.quarantined).toBe(true)
    expect(instances.find((i) => i.instance_id === 'pod-1')?.quarantined ?? false).toBe(false)
    await page.getByRole('button', { name: 'Release instance pod-2' }).click()
    await page.getByRole('dialog').getByRole('button', { name: 'Release instance' }).click()
    await expect.poll(() => page.getByRole('dialog').getByRole('status').textContent()).toBe('pod-2 may work again.')
    expect((await op.agents.retrieve(DEPLOYER)).agent.instances.find((i) => i.instance_id === 'pod-2')?.quarantined ?? false).toBe(false)
    await page.close()
  })

  it('an agent key is told it cannot use the console', async () => {
    const page = await context.newPage()
    await page.goto(`${gw.url}/agents`)
    await page.getByLabel('API key').fill(keys[PLANNER] as string)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/agent key/)
    await page.close()
  })

  it('a viewer sees no Kill or Resume and no editors', async () => {
    const page = await signedIn('/agents', viewerKey)
    await row(page, PLANNER).waitFor()
    expect(await page.getByText('Read-only').count()).toBe(1)
    expect(await page.getByRole('button', { name: /^(Kill|Resume) / }).count()).toBe(0)
    await page.getByRole('link', { name: 'planner' }).click()
    await page.getByRole('heading', { name: 'Policies' }).waitFor()
    expect(await page.getByRole('button', { name: /Add .* policy|Edit/ }).count()).toBe(0)
    await page.close()
  })

  it('policy editor: save, then a stale version says changed elsewhere; a bad glob shows next to its field', async () => {
    const created = await op.policies.create(PLANNER, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['db.drop.*'] })
    const id = created.policy.policy_id
    const planner = (await op.agents.retrieve(PLANNER)).agent
    const page = await signedIn(`/agents/${enc(planner.address_id)}`)
    await page.getByRole('button', { name: `Edit action policy ${id}` }).click()
    const editor = page.getByRole('form', { name: 'Edit action policy' })
    await editor.getByLabel('Intent types (globs, comma-separated)').fill('db.drop.*, rm.rf.*')
    await editor.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => page.getByRole('listitem').filter({ hasText: id.slice(0, 0) + 'rm.rf.*' }).count()).toBe(1)
    expect((await op.policies.retrieve(id)).policy).toMatchObject({ version: 2, patterns: ['db.drop.*', 'rm.rf.*'] })

    // Someone else changes it; this page still holds version 2.
    await page.getByRole('button', { name: `Edit action policy ${id}` }).click()
    await op.policies.update(id, { kind: 'action', direction: 'send', mode: 'denylist', patterns: ['other.*'] }, { version: 2 })
    const stale = page.getByRole('form', { name: 'Edit action policy' })
    await stale.getByLabel('Intent types (globs, comma-separated)').fill('mine.*')
    await stale.getByRole('button', { name: 'Save' }).click()
    await expect.poll(() => stale.getByRole('alert').textContent()).toMatch(/Changed elsewhere — reload/)
    expect((await op.policies.retrieve(id)).policy).toMatchObject({ patterns: ['other.*'] })
    await stale.getByRole('button', { name: 'Cancel' }).click()

    await page.getByRole('button', { name: 'Add action policy' }).click()
    const fresh = page.getByRole('form', { name: 'New action policy' })
    await fresh.getByLabel('Intent types (globs, comma-separated)').fill('Bad Glob!')
    await fresh.getByRole('button', { name: 'Save' }).click()
    const field = fresh.getByLabel('Intent types (globs, comma-separated)')
    await expect.poll(() => field.getAttribute('aria-invalid')).toBe('true')
    expect(await fresh.getByRole('alert').textContent()).toMatch(/invalid pattern "Bad Glob!"/)

    // "Why would this be denied?"
    await page.getByLabel('To agent').fill(DEPLOYER)
    await page.getByLabel('Intent type', { exact: true }).fill('other.thing')
    await page.getByRole('button', { name: 'Evaluate' }).click()
    await expect.poll(() => page.getByRole('form', { name: 'Why would this be denied?' }).getByRole('status').textContent()).toMatch(
      new RegExp(`^deny by ${id}: other\\.thing is in the denylist`),
    )
    await page.close()
  })

  it('audit: verify is valid, then after a tampered row it points at the broken entry; the diff shows before and after', async () => {
    const page = await signedIn('/audit?action=agent.kill')
    await page.getByRole('button', { name: 'Verify chain' }).click()
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'valid' }).textContent()).toMatch(/^valid ✓ \(\d+ entries\)$/)
    const first = (await op.audit.list({ action_prefix: 'agent.kill', target: DEPLOYER })).entries[0]
    await page.getByRole('row').filter({ hasText: 'deploy loop at 3 a.m.' }).getByRole('button', { name: 'Diff' }).click()
    await expect.poll(() => page.locator('table.diff').textContent()).toMatch(/health_status \(changed\)/)

    const db = new Database(join(gw.dataDir, 'chokepoint.db'))
    db.prepare('UPDATE audit_log SET reason = ? WHERE seq = ?').run('nothing to see here', first?.seq)
    db.close()
    await page.getByRole('button', { name: 'Verify chain' }).click()
    await expect.poll(() => page.getByRole('status').filter({ hasText: 'broken' }).textContent()).toBe(
      `broken ✗ at entry #${first?.seq}: its hash does not match its content or the chain before it`,
    )
    await page.close()
  })

  it('audit pages by cursor (the URL keeps it) and exports CSV and JSONL', async () => {
    for (let i = 0; i < 30; i++) {
      await op.agents.kill(PLANNER, { reason: `page filler ${i}` })
      await op.agents.resume(PLANNER)
    }
    const page = await signedIn('/audit')
    await page.getByRole('row').filter({ hasText: 'page filler 0' }).waitFor()
    await page.getByRole('button', { name: 'Next page' }).click()
    await expect.poll(() => new URL(page.url()).searchParams.get('after_seq')).toMatch(/^\d+$/)
    const after = Number(new URL(page.url()).searchParams.get('after_seq'))
    const firstSeq = async () => Number(await page.locator('table.audit tbody tr').first().locator('td').first().textContent())
    await expect.poll(firstSeq).toBe(after + 1)
    await page.reload()
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
    await expect.poll(firstSeq).toBe(after + 1)

    const [csv] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()])
    const text = await (await csv.createReadStream()).toArray().then((chunks) => Buffer.concat(chunks).toString('utf8'))
    let total = 0
    for (let after = 0; ; ) {
      const res = await op.audit.list({ after_seq: after, limit: 500 })
      total += res.entries.length
      if (res.next_after_seq === null || res.entries.length === 0) break
      after = res.next_after_seq
    }
    expect(text.split('\n')[0]).toBe('seq,at,actor,action,target,reason,before,after,prev_hash,hash')
    expect(text.trim().split('\n')).toHaveLength(total + 1)
    const [jsonl] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export JSONL' }).click()])
    expect(jsonl.suggestedFilename()).toBe('chokepoint-audit.jsonl')
    const lines = (await (await jsonl.createReadStream()).toArray().then((c) => Buffer.concat(c).toString('utf8'))).trim().split('\n')
    expect(lines).toHaveLength(total)
    expect(JSON.parse(lines[0] as string).seq).toBe(1)
    await page.close()
  })

  it('the URL holds the state: reload and Back keep page, window and filters', async () => {
    const page = await signedIn('/agents?window=week&health=healthy')
    await expect.poll(() => page.getByRole('button', { name: '7 days' }).getAttribute('aria-pressed')).toBe('true')
    await page.reload()
    await page.getByRole('button', { name: 'Sign out' }).waitFor() // the key survives a reload (sessionStorage)
    await expect.poll(() => page.getByRole('button', { name: /^healthy/ }).getAttribute('aria-pressed')).toBe('true')
    expect(await page.getByRole('button', { name: '7 days' }).getAttribute('aria-pressed')).toBe('true')
    await page.getByRole('link', { name: 'Audit' }).click()
    await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
    await page.goBack()
    await page.getByRole('heading', { name: 'Agents' }).waitFor()
    expect(new URL(page.url()).search).toBe('?window=week&health=healthy')
    await page.close()
  })
})
