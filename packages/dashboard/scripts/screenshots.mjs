#!/usr/bin/env node
// Screenshots of the console for the README, from a real gateway seeded through the SDK, so they
// show what the code does today: `npm run screenshots` (after `npm run build`; needs chromium).
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { Operator } from '@chokepoint/sdk'
import { loadConfig, startGateway } from '@chokepoint/server'

const OUT = fileURLToPath(new URL('../../../docs/img/', import.meta.url))
const BROWSER = [process.env.CHOKEPOINT_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => p && existsSync(p))
if (!BROWSER) {
  console.error('screenshots: no chromium found (apt-get install chromium, or set CHOKEPOINT_CHROMIUM)')
  process.exit(1)
}

const dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-screens-'))
const gateway = await startGateway(loadConfig({ CHOKEPOINT_QUIET: '1' }, { port: '0', data: dataDir }), { log: () => undefined })
const adminKey = gateway.bootstrapKey
const op = new Operator({ baseURL: gateway.url, apiKey: adminKey })
const call = async (key, method, path, body, headers = {}) => {
  const res = await fetch(`${gateway.url}${path}`, {
    method,
    headers: { 'x-api-key': key, 'content-type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  return res.json()
}

try {
  console.log('screenshots: seeding a fleet')
  const fleet = [
    ['agent://acme/prod/planner', 'Planner', 3],
    ['agent://acme/prod/deployer', 'Deployer', 2],
    ['agent://acme/prod/billing', 'Billing', 2],
    ['agent://acme/prod/support-triage', 'Support triage', 4],
    ['agent://acme/prod/researcher', 'Researcher', 1],
    ['agent://acme/staging/deployer', 'Deployer (staging)', 1],
  ]
  const keys = {}
  for (const [address, name, pods] of fleet) {
    keys[address] = (await op.keys.create({ role: 'agent', agent: address })).key
    await op.agents.update(address, { display_name: name })
    for (let i = 1; i <= pods; i++) await call(keys[address], 'POST', '/v1/mesh/heartbeat', {}, { 'x-instance-id': `pod-${i}` })
  }
  await op.policies.create('agent://acme/prod/billing', { kind: 'cost', max_cost_per_day_usd: 50, on_breach: 'kill' })
  await op.policies.create('agent://acme/prod/researcher', { kind: 'cost', max_cost_per_day_usd: 20, on_breach: 'block' })
  await op.policies.create('agent://acme/prod/deployer', { kind: 'action', direction: 'send', mode: 'allowlist', patterns: ['deploy.*.v1', 'status.**'] })
  await op.policies.create('agent://acme/prod/deployer', { kind: 'rate', direction: 'send', max_per_hour: 500, on_breach: 'kill', enforcement: 'monitor' })
  const work = [
    ['agent://acme/prod/planner', 'agent://acme/prod/deployer', 'deploy.service.v1', 0.42, 14],
    ['agent://acme/prod/planner', 'agent://acme/prod/billing', 'invoice.create.v1', 1.55, 12],
    ['agent://acme/prod/planner', 'agent://acme/prod/researcher', 'research.topic.v1', 2.1, 6],
    ['agent://acme/prod/support-triage', 'agent://acme/prod/planner', 'ticket.route.v1', 0.08, 20],
  ]
  for (const [from, to, type, cost, n] of work) {
    for (let i = 0; i < n; i++) {
      const sent = await call(keys[from], 'POST', '/v1/intents', { to_agent: to, intent_type: type, payload: { n: i } })
      await call(keys[to], 'POST', `/v1/intents/${sent.intent_id}/resolve`, { status: 'COMPLETED', cost_usd: cost })
    }
  }
  for (let i = 0; i < 3; i++) await call(keys['agent://acme/prod/planner'], 'POST', '/v1/intents', { to_agent: 'agent://acme/staging/deployer', intent_type: 'deploy.service.v1', payload: {} })
  await op.agents.kill('agent://acme/staging/deployer', { reason: 'deploy loop: 400 rollouts in 10 minutes' })

  const browser = await chromium.launch({ executablePath: BROWSER, headless: true, args: ['--no-sandbox'] })
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, colorScheme: 'light' })
  await page.goto(`${gateway.url}/agents`)
  await page.getByLabel('API key').fill(adminKey)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.locator('tr[data-address="agent://acme/prod/billing"]').waitFor()
  await page.waitForTimeout(300)
  await page.screenshot({ path: join(OUT, 'dashboard-agents.png') })
  await page.getByRole('button', { name: 'Kill agent://acme/prod/researcher' }).click()
  await page.getByLabel('Reason').fill('spending on a loop of searches')
  await page.screenshot({ path: join(OUT, 'dashboard-kill.png') })
  await page.keyboard.press('Escape')
  await page.getByRole('link', { name: 'Deployer', exact: true }).click()
  await page.getByRole('heading', { name: 'Policies' }).waitFor()
  await page.waitForTimeout(300)
  await page.screenshot({ path: join(OUT, 'dashboard-agent.png'), fullPage: true })
  await browser.close()
  console.log(`screenshots: wrote ${['dashboard-agents.png', 'dashboard-kill.png', 'dashboard-agent.png'].map((f) => join('docs/img', f)).join(', ')}`)
} finally {
  await gateway.close()
  rmSync(dataDir, { recursive: true, force: true })
}
