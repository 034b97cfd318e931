#!/usr/bin/env node
// Builds the console into dist/: index.html plus content-hashed assets (long-cacheable), no
// inline script (the gateway serves it under Content-Security-Policy: default-src 'self').
import { build } from 'esbuild'
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const dist = join(here, 'dist')
rmSync(dist, { recursive: true, force: true })
mkdirSync(join(dist, 'assets'), { recursive: true })

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.tsx' },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['chrome111', 'firefox115', 'safari16'],
  outdir: 'dist/assets',
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
})

const outputs = Object.keys(result.metafile.outputs)
const js = outputs.find((f) => f.endsWith('.js'))
const css = outputs.find((f) => f.endsWith('.css'))
if (!js || !css) throw new Error(`dashboard build: expected a .js and a .css output, got ${outputs.join(', ')}`)
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Chokepoint</title>
<link rel="stylesheet" href="/assets/${basename(css)}">
<script type="module" src="/assets/${basename(js)}"></script>
</head>
<body>
<div id="app"><noscript>The Chokepoint console needs JavaScript.</noscript></div>
</body>
</html>
`
writeFileSync(join(dist, 'index.html'), html)
const kb = (f) => (statSync(join(here, f)).size / 1024).toFixed(1)
console.log(`dashboard: dist/assets/${basename(js)} ${kb(js)} KiB, dist/assets/${basename(css)} ${kb(css)} KiB`)
