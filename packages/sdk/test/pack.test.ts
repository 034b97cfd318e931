/**
 * The SDK is installable outside this repository: `npm pack` builds a tarball with only the
 * compiled package, a fresh project installs it (offline: it has no dependencies), and the
 * README's quickstart snippet, pasted as-is into a file there, runs against a real gateway.
 */
import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestGateway, type TestGateway } from '../../server/test/harness.js'

const SDK_DIR = resolve(import.meta.dirname, '..')
const README = resolve(import.meta.dirname, '../../../README.md')

describe('the SDK as an npm tarball', () => {
  let gw: TestGateway
  let work: string
  let tarball: string

  beforeAll(async () => {
    gw = await startTestGateway()
    work = mkdtempSync(join(tmpdir(), 'chokepoint-sdk-pack-'))
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: SDK_DIR, encoding: 'utf8' })
    const [info] = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[]
    tarball = join(work, (info as { filename: string }).filename)
    files = (info as { files: { path: string }[] }).files.map((f) => f.path)
  }, 120_000)
  afterAll(async () => {
    await gw?.close()
    if (work) rmSync(work, { recursive: true, force: true })
  })
  let files: string[] = []

  it('packs the compiled package only: no sources, tests or build info', () => {
    expect(files).toContain('dist/index.js')
    expect(files).toContain('dist/index.d.ts')
    expect(files).toContain('package.json')
    expect(files.filter((f) => f.startsWith('src/') || f.startsWith('test/') || f.endsWith('.tsbuildinfo'))).toEqual([])
  })

  it('installs into a fresh project and the README quickstart runs as pasted', async () => {
    const project = join(work, 'my-agent')
    execFileSync('mkdir', ['-p', project])
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'my-agent', private: true, type: 'module' }))
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], { cwd: project, stdio: 'pipe' })
    expect(readdirSync(join(project, 'node_modules/@chokepoint/sdk'))).toContain('dist')

    const readme = readFileSync(README, 'utf8')
    const block = /<!-- sdk-quickstart:start -->\s*```js\n([\s\S]*?)```\s*<!-- sdk-quickstart:end -->/.exec(readme)
    expect(block, 'README has the sdk-quickstart block').not.toBeNull()
    writeFileSync(join(project, 'quickstart.mjs'), (block as RegExpExecArray)[1] as string)
    // Asynchronously: the gateway runs in this process and must keep answering.
    const run = await new Promise<{ status: number | null; stdout: string; stderr: string }>((done) => {
      const child = spawn(process.execPath, ['quickstart.mjs'], {
        cwd: project,
        env: { PATH: process.env['PATH'] ?? '', CHOKEPOINT_URL: gw.url, ADMIN: gw.adminKey },
      })
      let stdout = ''
      let stderr = ''
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
      child.on('exit', (status) => {
        clearTimeout(timer)
        done({ status, stdout, stderr })
      })
    })
    expect(run.status, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`).toBe(0)
    const sent = /sent (\S+)/.exec(run.stdout)?.[1]
    expect(sent).toBeDefined()
    expect(run.stdout).toContain(`resolved ${sent}`)
  }, 60_000)
})
