/**
 * A first start that cannot listen must leave nothing behind: the bootstrap admin key is
 * printed once, so creating it before the port is bound would lock the user out of a gateway
 * that never started. Here port 8420-like is taken by another server; `serve` fails with
 * EADDRINUSE, the data directory holds no database, and the next start (port free) prints the
 * admin key, which works.
 */
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'

const CLI = resolve(import.meta.dirname, '../bin/chokepoint.js')
const dirs: string[] = []

function serve(args: string[], until: RegExp | null): Promise<{ code: number | null; stdout: string; stderr: string; stop: () => void }> {
  return new Promise((done) => {
    const env: Record<string, string> = { PATH: process.env['PATH'] ?? '' }
    const child = spawn(process.execPath, [CLI, 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    const stop = () => child.kill('SIGTERM')
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString()
      if (until !== null && until.test(stdout)) done({ code: null, stdout, stderr, stop })
    })
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    child.on('exit', (code) => done({ code, stdout, stderr, stop }))
  })
}

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

describe('first start', () => {
  it('a start that cannot bind its port creates no state; the next start prints a working admin key', async () => {
    const root = mkdtempSync(join(tmpdir(), 'chokepoint-first-'))
    dirs.push(root)
    const data = join(root, 'data')
    const blocker: Server = createServer((_req, res) => res.end('busy'))
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()))
    const port = String((blocker.address() as AddressInfo).port)

    const failed = await serve(['--port', port, '--data', data], null)
    expect(failed.code).not.toBe(0)
    expect(failed.stderr + failed.stdout).toMatch(/EADDRINUSE/)
    expect(failed.stdout).not.toMatch(/cp_[A-Za-z0-9]{20,}/)
    // No database (and so no unprinted admin key) was written.
    const left = existsSync(data) ? readdirSync(data) : []
    expect(left.filter((f) => !f.startsWith('chokepoint.lock'))).toEqual([])

    await new Promise<void>((r) => blocker.close(() => r()))
    const started = await serve(['--port', port, '--data', data], /export CHOKEPOINT_API_KEY=cp_\w+/)
    try {
      const key = /export CHOKEPOINT_API_KEY=(cp_\w+)/.exec(started.stdout)?.[1]
      expect(key, started.stdout + started.stderr).toBeDefined()
      const res = await fetch(`http://127.0.0.1:${port}/v1/keys`, { headers: { 'x-api-key': key as string } })
      expect(res.status).toBe(200)
    } finally {
      started.stop()
    }
  }, 30_000)
})
