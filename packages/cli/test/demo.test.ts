import { spawn } from 'node:child_process'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

const CLI = resolve(import.meta.dirname, '../bin/chokepoint.js')

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
    expect(result.out).toMatch(/valid: \d+ entries, hash chain intact/)
    expect(result.code).toBe(0)
  }, 90_000)
})
