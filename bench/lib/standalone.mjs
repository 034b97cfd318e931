// Running one benchmark file on its own (`node bench/<name>.mjs`): parse its options, print the
// machine, the table and the notes, write the JSON result, stop every child. The dispatcher
// (`npm run bench`) does the same for several at once.
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { stopAll } from './children.mjs'
import { renderTable } from './stats.mjs'

const RESULTS = fileURLToPath(new URL('../results/', import.meta.url))

export function machine() {
  const cpus = os.cpus()
  return { cpu_model: cpus[0]?.model ?? 'unknown', cores: cpus.length, node: process.version, os: `${os.type()} ${os.release()} ${os.arch()}` }
}

/**
 * Runs `run` when `moduleUrl` is the script node was started with; `extra` adds standalone-only
 * options (`quick` and `out` are always there).
 */
export function runStandalone(name, moduleUrl, options, run, extra = {}) {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(resolve(process.argv[1])).href) return
  const main = async () => {
    const parsed = parseArgs({
      args: process.argv.slice(2),
      options: {
        ...Object.fromEntries(Object.entries(options).map(([k, { help: _h, ...spec }]) => [k, spec])),
        quick: { type: 'boolean' },
        out: { type: 'string' },
        ...extra,
      },
      strict: true,
    })
    const info = machine()
    process.stdout.write(`machine: ${info.cpu_model}, ${info.cores} cores, Node ${info.node}, ${info.os}\n`)
    const started = new Date()
    const result = await run({ ...parsed.values, log: (line) => process.stdout.write(`${line}\n`) })
    process.stdout.write(`\n${renderTable(result.table)}\n\n${result.notes.join('\n')}\n`)
    const dir = parsed.values.out ?? RESULTS
    mkdirSync(dir, { recursive: true })
    const file = join(dir, `${name}-${started.toISOString().replace(/[:.]/g, '-')}.json`)
    writeFileSync(file, `${JSON.stringify({ benchmark: name, date: started.toISOString(), machine: info, ...result }, null, 2)}\n`)
    process.stdout.write(`\nresults: ${relative(process.cwd(), file) || file}\n`)
    return result.ok ? 0 : 1
  }
  main().then(
    async (code) => {
      await stopAll()
      process.exitCode = code
    },
    async (error) => {
      process.stderr.write(`bench/${name}: ${error?.stack ?? error}\n`)
      await stopAll()
      process.exitCode = 1
    },
  )
}
