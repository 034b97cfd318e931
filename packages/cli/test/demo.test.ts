import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const CLI = resolve(import.meta.dirname, '../bin/chokepoint.js')
const EXAMPLES = resolve(import.meta.dirname, '../../../examples/rogue-agent')

describe('chokepoint demo', () => {
  it('runs the rogue-agent story and passes its own checks', async () => {
    const result = await new Promise<{ code: number | null; out: string }>((done) => {
      const child = spawn(process.execPath, [CLI, 'demo', '--fast'], {
        env: { ...process.env, NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let out = ''
      child.stdout.on('data', (c: Buffer) => (out += c.toString()))
      child.stderr.on('data', (c: Buffer) => (out += c.toString()))
      child.on('exit', (code) => done({ code, out }))
    })
    expect(result.out, result.out).toMatch(/Every effect observed \(\d+ checks\)/)
    expect(result.out).not.toMatch(/✘/)
    expect(result.out).toMatch(/no instance got a send accepted after the kill returned/)
    expect(result.out).toMatch(/the rate policy auto-killed the bot/)
    expect(result.out).toMatch(/✔ not one LLM call reached the provider after the kill returned/)
    expect(result.out).toMatch(/✔ the bot's LLM spend stopped with the kill — \$\d+\.\d{4} metered/)
    expect(result.out).toMatch(/valid: \d+ entries, hash chain intact/)
    expect(result.code).toBe(0)
  }, 90_000)
})

describe('chokepoint demo on Ctrl-C', () => {
  it('stops every process it started and removes its temporary store', async () => {
    const child = spawn(process.execPath, [CLI, 'demo', '--fast'], {
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)))
    const deadline = Date.now() + 30_000
    while (!out.includes('deploys ') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    expect(out).toContain('deploys ')
    const dataDir = /temporary store in (\S+)\)/.exec(out)?.[1]
    expect(dataDir).toBeDefined()
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    // Nothing the demo started survives it: no gateway on its store, no example agent.
    const left = await new Promise<string>((done) => {
      const ps = spawn('ps', ['-eo', 'pid,args'], { stdio: ['ignore', 'pipe', 'ignore'] })
      let text = ''
      ps.stdout.on('data', (c: Buffer) => (text += c.toString()))
      ps.on('exit', () => done(text))
    })
    const survivors = left
      .split('\n')
      .filter((line) => line.includes(dataDir as string) || line.includes(EXAMPLES))
    expect(survivors).toEqual([])
    expect(existsSync(dataDir as string)).toBe(false)
  }, 60_000)
})
