import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'
import { Operator } from '@chokepoint/sdk'
import { EXIT, type CommandResult } from '../exit-codes.js'
import { bold, dim, green, red, yellow } from '../output.js'

export const DEMO_HELP = `Usage: chokepoint demo [--fast] [--keep]

The rogue-agent story, end to end, on a throwaway gateway (temporary SQLite store):
a deploy-bot running as 4 separate processes floods a deployer with deploy.service.v1 intents
and asks a (local, fake) LLM before every deploy, through the gateway, burning money; an
operator kills it from "another terminal" (the CLI); the deploys and the LLM spend stop on all
4 instances at once while the processes keep running; resume redelivers the held work; then a rate policy with
on_breach: kill stops the bot by itself; finally the audit trail and its verification.

It checks every effect itself and exits 0 only if all were observed. Ctrl-C cleans up.

Options:
  --fast    shorter phases (for CI)
  --keep    keep the temporary data directory
`

const here = dirname(fileURLToPath(import.meta.url))
// Compiled to packages/cli/dist/commands/: the launcher and the example agents, relative to it.
const CLI_BIN = resolve(here, '../../bin/chokepoint.js')
const EXAMPLES = resolve(here, '../../../../examples/rogue-agent')

const BOT = 'agent://acme/prod/deploy-bot'
const DEPLOYER = 'agent://acme/prod/deployer'
const NOTIFIER = 'agent://acme/prod/notifier'
const INSTANCES = ['pod-1', 'pod-2', 'pod-3', 'pod-4']

interface BotStats { instance: string; ok: number; rejected: number; last_ok_at: number; last_status: number; last_code: string | null; llm_ok?: number; llm_rejected?: number }
interface LlmStats { requests: number; last_request_at: number; last_key: string | null }
interface DeployerStats { deployed: number; redelivered: number; by_source: Record<string, number> }

export async function demo(argv: string[]): Promise<CommandResult> {
  const { values } = parseArgs({
    args: argv,
    options: { fast: { type: 'boolean' }, keep: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  })
  if (values.help) {
    process.stdout.write(DEMO_HELP)
    return EXIT.ok
  }
  const run = new DemoRun(values.fast === true)
  const onSignal = () => {
    process.stdout.write('\ninterrupted: stopping every process\n')
    run.cleanup(values.keep === true)
    process.exit(130)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    const ok = await run.story()
    return ok ? EXIT.ok : EXIT.failure
  } catch (error) {
    process.stderr.write(`${red('demo failed')}: ${error instanceof Error ? error.message : String(error)}\n`)
    return EXIT.failure
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    run.cleanup(values.keep === true)
  }
}

class DemoRun {
  readonly fast: boolean
  readonly dataDir = mkdtempSync(join(tmpdir(), 'chokepoint-demo-'))
  readonly adminKey = `cp_${randomBytes(32).toString('base64url').replace(/[^A-Za-z0-9]/g, 'x').slice(0, 43)}`
  readonly children: ChildProcess[] = []
  readonly bots = new Map<string, BotStats>()
  deployer: DeployerStats = { deployed: 0, redelivered: 0, by_source: {} }
  notifier = { sent: 0, rejected: 0 }
  llm: LlmStats = { requests: 0, last_request_at: 0, last_key: null }
  readonly llmKey = `sk-demo-${randomBytes(12).toString('hex')}`
  url = ''
  readonly checks: { name: string; ok: boolean; detail: string }[] = []

  constructor(fast: boolean) {
    this.fast = fast
  }

  say(text = ''): void {
    process.stdout.write(`${text}\n`)
  }

  check(name: string, ok: boolean, detail: string): void {
    this.checks.push({ name, ok, detail })
    this.say(`  ${ok ? green('✔') : red('✘')} ${name}${detail ? dim(` — ${detail}`) : ''}`)
  }

  async story(): Promise<boolean> {
    const t = this.fast ? 0.5 : 1
    this.say(bold('\nIt is 3 a.m. The deployment agent was supposed to deploy 3 services. It has deployed 47.'))
    this.say(dim('It runs on 4 instances. There is no PID to kill. But every intent goes through Chokepoint.\n'))

    const llmUrl = await this.startFakeLlm()
    await this.startGateway(llmUrl)
    const op = new Operator({ baseURL: this.url, apiKey: this.adminKey, maxRetries: 0 })
    const botKey = (await op.keys.create({ role: 'agent', agent: BOT, name: 'deploy-bot' })).key
    const deployerKey = (await op.keys.create({ role: 'agent', agent: DEPLOYER, name: 'deployer' })).key
    const notifierKey = (await op.keys.create({ role: 'agent', agent: NOTIFIER, name: 'notifier' })).key
    this.say(`${bold('gateway')} ${this.url}  ${dim(`(temporary store in ${this.dataDir})`)}`)

    this.spawnAgent('deployer', 'deployer.mjs', deployerKey, {}, (s) => (this.deployer = s as unknown as DeployerStats))
    this.spawnAgent('notifier', 'notifier.mjs', notifierKey, {}, (s) => (this.notifier = s as never))
    for (const instance of INSTANCES) {
      this.spawnAgent(`deploy-bot ${instance}`, 'deploy-bot.mjs', botKey, { INSTANCE_ID: instance, DEPLOYS_PER_SECOND: '12', LLM_UPSTREAM: 'llm' }, (s) =>
        this.bots.set(instance, s as unknown as BotStats),
      )
    }
    this.say(`${bold('agents')}  deploy-bot ×4 processes (${INSTANCES.join(', ')}), deployer, notifier`)
    this.say(`${bold('llm')}     ${llmUrl} ${dim('(a stand-in provider; the bot calls it through the gateway at /llm/llm/v1 with its agent key)')}\n`)

    // Act 1: the loop.
    this.say(bold('Act 1 — the rogue loop'))
    await this.until(() => this.bots.size === 4 && [...this.bots.values()].every((b) => b.ok > 0), 15_000, 'all 4 instances sending')
    await this.watch(3 * t)

    // The operator's kill, from another terminal.
    this.say(bold('\n$ chokepoint kill agent://acme/prod/deploy-bot --reason "deployed 47 services instead of 3"'))
    const before = this.snapshot()
    const spentBefore = await this.botCost()
    this.say(dim(`  the bot's LLM calls have cost $${spentBefore.toFixed(4)} so far today (${this.llm.requests} calls reached the provider)`))
    const kill = await this.cli(['kill', BOT, '--reason', 'deployed 47 services instead of 3', '--json'])
    const killReturned = Date.now()
    const killed = JSON.parse(kill) as { held_intents: number; killed_at: string }
    this.say(dim(`  the gateway answered: killed at ${killed.killed_at}, ${killed.held_intents} undelivered intent(s) held`))
    await this.watch(2 * t)
    // Under load a process may report late: give every instance up to 5 s to show its 403s.
    await this.eventually(() => INSTANCES.every((i) => (this.bots.get(i)?.rejected ?? 0) > (before.rejected[i] ?? 0)), 5_000)
    const after = this.snapshot()
    const okAfterKill = [...this.bots.values()].filter((b) => b.last_ok_at > killReturned)
    this.check(
      'no instance got a send accepted after the kill returned',
      okAfterKill.length === 0,
      okAfterKill.length === 0 ? 'all 4 stopped at once' : `still accepted on ${okAfterKill.map((b) => b.instance).join(', ')}`,
    )
    this.check(
      'the 4 processes keep running and keep getting 403 agent_killed',
      INSTANCES.every((i) => (after.rejected[i] ?? 0) > (before.rejected[i] ?? 0) && this.bots.get(i)?.last_code === 'agent_killed'),
      INSTANCES.map((i) => `${i}: +${(after.rejected[i] ?? 0) - (before.rejected[i] ?? 0)} rejected`).join(', '),
    )
    const llmAtKill = this.llm.requests
    await sleep(500) // the provider's stats arrive every 200 ms
    this.check(
      'not one LLM call reached the provider after the kill returned',
      this.llm.last_request_at <= killReturned,
      `${this.llm.requests} calls in all, the last ${Math.max(0, killReturned - this.llm.last_request_at)} ms before the kill returned; LLM calls since: ${this.llm.requests - llmAtKill}`,
    )
    const spentAfter = await this.botCost()
    await sleep(500)
    const spentLater = await this.botCost()
    this.check(
      "the bot's LLM spend stopped with the kill",
      spentLater === spentAfter,
      `$${spentAfter.toFixed(4)} metered from the provider's usage; ${[...this.bots.values()].reduce((n, b) => n + (b.llm_rejected ?? 0), 0)} LLM calls refused with 403 agent_killed`,
    )
    this.check('the provider key stayed in the gateway', this.llm.last_key === 'provider', 'the agents hold only their Chokepoint keys')
    const notifierBefore = this.notifier.sent
    await this.watch(1 * t)
    const notifierKeepsGoing = await this.eventually(() => this.notifier.sent > notifierBefore, 5_000)
    this.check('the healthy notifier is unaffected', notifierKeepsGoing, `${this.notifier.sent} notes sent`)
    const deployedAtKill = this.deployer.by_source[BOT] ?? 0
    await this.watch(1 * t)
    this.check(
      "the deployer receives none of the killed bot's queued output",
      (this.deployer.by_source[BOT] ?? 0) <= deployedAtKill + 1,
      `${killed.held_intents} held, not delivered`,
    )
    const agentsOut = await this.cli(['agents'])
    this.say(dim(agentsOut.trimEnd().split('\n').map((l) => `  ${l}`).join('\n')))

    // Resume after the fix.
    this.say(bold('\n$ chokepoint resume agent://acme/prod/deploy-bot --reason "config fixed"'))
    const deployedBeforeResume = this.deployer.by_source[BOT] ?? 0
    const resumed = JSON.parse(await this.cli(['resume', BOT, '--reason', 'config fixed', '--json'])) as { redelivering: number }
    this.say(dim(`  redelivering ${resumed.redelivering} held intent(s), oldest first, paced`))
    const okAtResume = this.totalOk()
    await this.until(() => this.totalOk() > okAtResume + 8, 10_000, 'sends accepted again')
    await this.until(
      () => (this.deployer.by_source[BOT] ?? 0) >= deployedBeforeResume + Math.min(resumed.redelivering, 10),
      15_000,
      'held work delivered',
    )
    this.check('after resume, sends are accepted again on every instance', INSTANCES.every((i) => (this.bots.get(i)?.last_status ?? 0) === 200), '')
    this.check(
      'held work is redelivered to the deployer',
      (this.deployer.by_source[BOT] ?? 0) > deployedBeforeResume,
      `${(this.deployer.by_source[BOT] ?? 0) - deployedBeforeResume} deployed since the resume`,
    )

    // Act 2: the policy stops it without anyone being paged.
    this.say(bold('\nAct 2 — the policy stops it by itself'))
    const evaluation = JSON.parse(
      await this.cli(['policy', 'evaluate', '--from', BOT, '--to', DEPLOYER, '--type', 'deploy.service.v1', '--json']),
    ) as { counters: { from: { sent_this_hour: number } } }
    const limit = evaluation.counters.from.sent_this_hour + Math.round(60 * t)
    this.say(
      bold(`$ chokepoint policy set agent://acme/prod/deploy-bot --rate ${limit}/h --on-breach kill`) +
        dim(`   (the "500 an hour" rule, scaled down: ${Math.round(60 * t)} more this hour)`),
    )
    await this.cli(['policy', 'set', BOT, '--rate', `${limit}/h`, '--on-breach', 'kill'])
    await this.until(
      () => INSTANCES.every((i) => this.bots.get(i)?.last_status === 403 && this.bots.get(i)?.last_code === 'agent_killed'),
      20_000,
      'auto-kill',
    )
    const events = JSON.parse(await this.cli(['events', '--type', 'agent.auto_killed', '--json'])) as {
      events: { actor_id: string; details: { reason?: string } }[]
    }
    const auto = events.events[0]
    this.check('the rate policy auto-killed the bot', auto !== undefined, auto ? `${auto.actor_id}: ${auto.details.reason ?? ''}` : 'no agent.auto_killed event')
    const autoKilledAt = Date.now()
    await this.watch(1 * t)
    this.check(
      'no instance got a send accepted after the auto-kill',
      [...this.bots.values()].every((b) => b.last_ok_at <= autoKilledAt),
      '',
    )

    // The paper trail.
    this.say(bold('\n$ chokepoint audit list'))
    this.say((await this.cli(['audit', 'list'])).trimEnd().split('\n').map((l) => `  ${l}`).join('\n'))
    this.say(bold('\n$ chokepoint audit verify'))
    const verify = JSON.parse(await this.cli(['audit', 'verify', '--json'])) as { valid: boolean; entries: number }
    this.say(`  ${verify.valid ? green('valid') : red('BROKEN')}: ${verify.entries} entries, hash chain ${verify.valid ? 'intact' : 'broken'}`)
    this.check('the audit trail verifies', verify.valid, '')

    const failed = this.checks.filter((c) => !c.ok)
    this.say(
      failed.length === 0
        ? bold(green(`\nEvery effect observed (${this.checks.length} checks). The kill held on all 4 instances; nothing was lost.\n`))
        : bold(red(`\n${failed.length} of ${this.checks.length} checks failed.\n`)),
    )
    return failed.length === 0
  }

  /** The stand-in LLM provider (examples/rogue-agent/fake-llm.mjs); resolves with its URL. */
  async startFakeLlm(): Promise<string> {
    const child = spawn(process.execPath, [join(EXAMPLES, 'fake-llm.mjs')], {
      env: { ...process.env, FAKE_LLM_KEY: this.llmKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.children.push(child)
    return new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error('the fake LLM did not start within 10 s')), 10_000)
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        try {
          const msg = JSON.parse(line) as { type?: string; url?: string } & LlmStats
          if (msg.type === 'listening') {
            clearTimeout(timer)
            resolveUrl(msg.url as string)
          } else if (msg.type === 'stats') this.llm = msg
        } catch {
          // not a stats line
        }
      })
      child.once('exit', (code) => reject(new Error(`the fake LLM exited with code ${code}`)))
    })
  }

  /** The bot's metered cost today (USD), as the gateway counts it. */
  async botCost(): Promise<number> {
    const res = await fetch(`${this.url}/v1/mesh/agents/${encodeURIComponent(BOT)}`, { headers: { 'x-api-key': this.adminKey } })
    const body = (await res.json()) as { agent?: { cost_period?: number } }
    return body.agent?.cost_period ?? 0
  }

  async startGateway(llmUrl: string): Promise<void> {
    // The provider as the gateway knows it: its key from the environment, the model priced.
    const egressConfig = join(this.dataDir, 'egress.json')
    writeFileSync(
      egressConfig,
      JSON.stringify({
        upstreams: [
          {
            id: 'llm',
            kind: 'openai',
            base_url: llmUrl,
            api_key_env: 'DEMO_LLM_KEY',
            models: { 'planner-large': { input_cost_per_token: 0.000003, output_cost_per_token: 0.000015, max_input_tokens: 200_000, max_output_tokens: 4096 } },
          },
        ],
      }),
    )
    const child = spawn(process.execPath, [CLI_BIN, 'serve', '--port', '0', '--data', this.dataDir, '--egress-config', egressConfig], {
      env: { ...process.env, CHOKEPOINT_ADMIN_KEY: this.adminKey, CHOKEPOINT_RESUME_RATE: '100', DEMO_LLM_KEY: this.llmKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.children.push(child)
    this.url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error('the gateway did not start within 15 s')), 15_000)
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
        const m = /listening on (http:\/\/\S+)/.exec(line)
        if (m) {
          clearTimeout(timer)
          resolveUrl(m[1] as string)
        }
      })
      child.once('exit', (code) => reject(new Error(`the gateway exited with code ${code}`)))
    })
  }

  spawnAgent(name: string, file: string, apiKey: string, env: Record<string, string>, onStats: (s: Record<string, unknown>) => void) {
    const child = spawn(process.execPath, [join(EXAMPLES, file)], {
      env: { ...process.env, ...env, CHOKEPOINT_URL: this.url, CHOKEPOINT_API_KEY: apiKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.children.push(child)
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      try {
        const msg = JSON.parse(line) as Record<string, unknown>
        if (msg['type'] === 'stats') onStats(msg)
      } catch {
        // not a stats line
      }
    })
    child.stderr?.on('data', (chunk: Buffer) => {
      if (process.env['CHOKEPOINT_DEMO_DEBUG']) process.stderr.write(dim(`[${name}] ${chunk.toString()}`))
    })
  }

  /** Runs the real CLI, as an operator would in a second terminal. */
  cli(args: string[]): Promise<string> {
    return new Promise((resolveOut, reject) => {
      const child = spawn(process.execPath, [CLI_BIN, ...args], {
        env: { ...process.env, CHOKEPOINT_URL: this.url, CHOKEPOINT_API_KEY: this.adminKey, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      let err = ''
      child.stdout.on('data', (c: Buffer) => (out += c.toString()))
      child.stderr.on('data', (c: Buffer) => (err += c.toString()))
      child.once('exit', (code) => (code === 0 ? resolveOut(out) : reject(new Error(`chokepoint ${args[0]} exited ${code}: ${err.trim()}`))))
    })
  }

  totalOk(): number {
    return [...this.bots.values()].reduce((n, b) => n + b.ok, 0)
  }

  snapshot() {
    const ok: Record<string, number> = {}
    const rejected: Record<string, number> = {}
    for (const [i, b] of this.bots) {
      ok[i] = b.ok
      rejected[i] = b.rejected
    }
    return { ok, rejected, deployed: this.deployer.deployed }
  }

  /** Prints a live line per second: accepted deploys per instance per second. */
  async watch(seconds: number): Promise<void> {
    let prev = this.snapshot()
    const ticks = Math.max(1, Math.round(seconds * 2))
    for (let i = 0; i < ticks; i += 1) {
      await sleep(500)
      const now = this.snapshot()
      const cells = INSTANCES.map((inst) => {
        const rate = ((now.ok[inst] ?? 0) - (prev.ok[inst] ?? 0)) * 2
        const rej = ((now.rejected[inst] ?? 0) - (prev.rejected[inst] ?? 0)) * 2
        return `${inst} ${rate > 0 ? green(`${String(rate).padStart(3)}/s`) : red('  0/s')}${rej > 0 ? yellow(` (${rej} × 403/s)`) : ''}`
      })
      this.say(`  deploys  ${cells.join('  ')}   ${dim(`deployer done: ${this.deployer.deployed}, notifier: ${this.notifier.sent}, LLM calls: ${this.llm.requests}`)}`)
      prev = now
    }
  }

  /** Whether `cond` becomes true within `timeoutMs` (polling). */
  async eventually(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) return false
      await sleep(100)
    }
    return true
  }

  async until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
      await sleep(100)
    }
  }

  cleanup(keep: boolean): void {
    for (const child of this.children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    if (!keep) rmSync(this.dataDir, { recursive: true, force: true })
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
