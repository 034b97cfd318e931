#!/usr/bin/env node
// Benchmark dispatcher: `npm run bench [-- <name>...] [--quick] [options]`.
//
// A benchmark is a module `bench/<name>.mjs` that exports
//   async function run(options) → result object
// and optionally `description` (one line) and `options` (node:util parseArgs specs with a
// `help` string). `options` holds the parsed flags plus `quick`, `stamp`, `resultsDir` and
// `log(line)`. The result should carry `benchmark`, `ok` (false makes the exit code 1),
// `table: {columns: [{key, title, align?}], rows: [...]}` and `notes: [lines]`; everything
// else is kept in the JSON file. For each benchmark this script prints the table and notes
// and writes bench/results/<name>-<timestamp>.json (with machine info).
import { execFileSync } from 'node:child_process'
import { mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { renderTable } from './lib/stats.mjs'
import { stopAll } from './lib/children.mjs'

const HERE = fileURLToPath(new URL('.', import.meta.url))
const DEFAULT = ['e2e']

const COMMON = {
  quick: { type: 'boolean', help: 'short run to smoke-test the script' },
  out: { type: 'string', help: 'directory for the JSON results (default bench/results)' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
}

function available() {
  return readdirSync(HERE)
    .filter((f) => f.endsWith('.mjs') && f !== 'run.mjs')
    .map((f) => f.slice(0, -4))
    .sort()
}

async function load(name) {
  const mod = await import(pathToFileURL(join(HERE, `${name}.mjs`)).href)
  if (typeof mod.run !== 'function') throw new Error(`bench/${name}.mjs does not export run(options)`)
  return mod
}

function specs(defs) {
  return Object.fromEntries(Object.entries(defs).map(([k, { help: _help, ...spec }]) => [k, spec]))
}

function optionLines(defs) {
  return Object.entries(defs).map(([k, d]) => {
    const flag = `${d.short ? `-${d.short}, ` : '    '}--${k}${d.type === 'string' ? ' <v>' : ''}`
    return `  ${flag.padEnd(28)}${d.help ?? ''}`
  })
}

async function help(modules) {
  const lines = [
    'Usage: npm run bench [-- <name>...] [--quick] [options]',
    '       node bench/run.mjs [<name>...] [--quick] [options]',
    '',
    `Runs the named benchmarks (default: ${DEFAULT.join(' ')}), prints a table for each and writes`,
    'bench/results/<name>-<timestamp>.json. Build first: npm run build.',
    '',
    'Benchmarks:',
  ]
  for (const [name, mod] of modules) lines.push(`  ${name.padEnd(12)}${mod.description ?? ''}`)
  lines.push('', 'Options:', ...optionLines(COMMON))
  for (const [name, mod] of modules) {
    if (mod.options && Object.keys(mod.options).length) lines.push('', `Options of ${name}:`, ...optionLines(mod.options))
  }
  lines.push('', 'Examples:', '  npm run bench', '  npm run bench -- e2e --quick', '  npm run bench -- e2e --profile')
  process.stdout.write(`${lines.join('\n')}\n`)
}

/** Which code was measured: commit, whether the tree had local changes, when dist was built. */
function source() {
  const git = (...args) => {
    try {
      return execFileSync('git', args, { cwd: HERE, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    } catch {
      return null
    }
  }
  // The newest compiled file: when the measured build was made.
  let newest = 0
  const walk = (dir) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.js')) newest = Math.max(newest, statSync(path).mtimeMs)
    }
  }
  try {
    walk(join(HERE, '../packages/server/dist'))
  } catch {
    // not built
  }
  const distBuiltAt = newest ? new Date(newest).toISOString() : null
  const status = git('status', '--porcelain', '--', '../packages')
  return { commit: git('rev-parse', '--short', 'HEAD'), packages_modified: status === null ? null : status !== '', server_dist_built_at: distBuiltAt }
}

function machine() {
  const cpus = os.cpus()
  return {
    cpu_model: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    total_mem_gb: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    loadavg_at_start: os.loadavg().map((v) => Math.round(v * 100) / 100),
  }
}

async function main(argv) {
  const all = await Promise.all(available().map(async (n) => [n, await load(n)]))
  const names = all.map(([n]) => n)
  // Every benchmark's options are known here, so `--duration 5` never reads as a name.
  const defs = { ...COMMON }
  for (const [, mod] of all) Object.assign(defs, mod.options ?? {})
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: specs(defs), strict: true, allowPositionals: true })
  } catch (error) {
    process.stderr.write(`bench: ${error.message}\nRun "npm run bench -- --help" for the options.\n`)
    return 2
  }
  if (parsed.values.help) {
    await help(all)
    return 0
  }
  const wanted = parsed.positionals.length ? parsed.positionals : DEFAULT
  const unknown = wanted.filter((n) => !names.includes(n))
  if (unknown.length) {
    process.stderr.write(`bench: unknown benchmark ${unknown.join(', ')} (available: ${names.join(', ')})\n`)
    return 2
  }
  const modules = wanted.map((n) => all.find(([name]) => name === n))
  const resultsDir = parsed.values.out ?? join(HERE, 'results')
  mkdirSync(resultsDir, { recursive: true })
  const info = machine()
  const code = source()
  process.stdout.write(`machine: ${info.cpu_model}, ${info.cores} cores, Node ${info.node}, ${info.os}, load ${info.loadavg_at_start.join(' ')}\n`)

  let failed = false
  for (const [name, mod] of modules) {
    const started = new Date()
    const stamp = started.toISOString().replace(/[:.]/g, '-')
    process.stdout.write(`\n== ${name}${parsed.values.quick ? ' (quick)' : ''} ==\n`)
    const result = await mod.run({
      ...parsed.values,
      quick: Boolean(parsed.values.quick),
      stamp,
      resultsDir,
      log: (line) => process.stdout.write(`${line}\n`),
    })
    const record = { benchmark: name, date: started.toISOString(), machine: info, source: code, argv, ...result }
    if (result.table) process.stdout.write(`\n${renderTable(result.table)}\n`)
    if (result.notes?.length) process.stdout.write(`\n${result.notes.join('\n')}\n`)
    const file = join(resultsDir, `${name}-${stamp}.json`)
    writeFileSync(file, `${JSON.stringify(record, null, 2)}\n`)
    process.stdout.write(`\nresults: ${relative(process.cwd(), file) || file}\n`)
    if (result.ok === false) {
      failed = true
      process.stdout.write(`${name}: FAILED (see the problems above)\n`)
    }
  }
  return failed ? 1 : 0
}

main(process.argv.slice(2)).then(
  async (code) => {
    await stopAll()
    process.exitCode = code
  },
  async (error) => {
    process.stderr.write(`bench: ${error?.stack ?? error}\n`)
    await stopAll()
    process.exitCode = 1
  },
)
