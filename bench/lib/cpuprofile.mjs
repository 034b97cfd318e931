// Summarises a V8 .cpuprofile (as written by `node --cpu-prof` or the inspector): self time
// by function (name + file:line), self time by category, and inclusive time of the gateway's
// own functions (so native work such as SQLite calls is charged to the code that made it).
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

function shortUrl(url) {
  if (!url) return ''
  let u = url.startsWith('file://') ? fileURLToPath(url) : url
  if (u.startsWith(ROOT)) u = u.slice(ROOT.length)
  return u.replace(/^node_modules\//, '')
}

const SQLITE_NATIVE = new Set(['run', 'get', 'all', 'iterate', 'exec', 'prepare', 'pragma', 'raw', 'pluck'])
const SOCKET_NATIVE = new Set(['writev', 'writeUtf8String', 'writeBuffer', 'writeLatin1String', 'writeAsciiString', 'shutdown', 'close', 'readStop', 'readStart'])

/** A coarse bucket for one frame's self time. */
export function categorize(name, url) {
  if (name === '(idle)') return 'idle'
  if (name === '(garbage collector)') return 'garbage collection'
  if (name === '(program)') return 'V8/native (unattributed)'
  if (name === '(root)') return 'V8/native (unattributed)'
  if (url.includes('better-sqlite3') || (url === '' && SQLITE_NATIVE.has(name))) return 'SQLite (better-sqlite3)'
  if (url === '' && (name === 'parse' || name === 'stringify')) return 'JSON parse/stringify'
  if (url === '' && SOCKET_NATIVE.has(name)) return 'socket writes (libuv)'
  if (url === '' && /^(createHash|digest|update|randomBytes|randomUUID|timingSafeEqual|Hash|HashJob)$/.test(name)) return 'crypto'
  if (url.includes('node_modules/zod') || url.includes('/zod/') || url.startsWith('zod/')) return 'zod validation'
  if (url.includes('prom-client')) return 'metrics (prom-client)'
  if (/packages\/server\/(dist|src)\/store\//.test(url)) return 'gateway: store (JS)'
  if (/packages\/server\/(dist|src)\/http\//.test(url)) return 'gateway: http layer (JS)'
  if (/packages\/server\/(dist|src)\/core\//.test(url)) return 'gateway: core (JS)'
  if (/packages\/server\//.test(url)) return 'gateway: other (JS)'
  if (/^node:(_http_|http|internal\/http)/.test(url) || /^parserOn/.test(name) || name === 'execute') return 'node http (parse/serialize)'
  if (/^node:(net|internal\/stream_base_commons|internal\/net)/.test(url)) return 'node net/sockets'
  if (/^node:(stream|internal\/streams)/.test(url)) return 'node streams'
  if (/^node:(internal\/crypto|crypto)/.test(url)) return 'crypto'
  if (/^node:(internal\/url|url|internal\/idna|querystring)/.test(url)) return 'node url'
  if (/^node:internal\/(timers|process\/task_queues|async_hooks|process\/promises)/.test(url)) return 'node timers/promises/microtasks'
  if (/^node:(events|internal\/events)/.test(url)) return 'node events'
  if (url.startsWith('node:')) return 'node other'
  if (url === '') return 'V8 builtins/native (other)'
  return 'other JS'
}

/**
 * Returns {samples, interval_us, idle_pct, busy_samples, top_self, categories, top_inclusive}.
 * Percentages are of busy (non-idle) samples.
 */
export function summarizeProfile(file, { top = 25 } = {}) {
  const profile = JSON.parse(readFileSync(file, 'utf8'))
  const byId = new Map()
  const parent = new Map()
  for (const node of profile.nodes) byId.set(node.id, node)
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)

  const keyOf = new Map()
  const info = new Map()
  for (const node of profile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame
    const name = functionName || '(anonymous)'
    const u = shortUrl(url)
    const key = u ? `${name} ${u}:${lineNumber + 1}` : name
    keyOf.set(node.id, key)
    if (!info.has(key)) info.set(key, { function: name, location: u ? `${u}:${lineNumber + 1}` : '(native)', category: categorize(name, u) })
  }

  const self = new Map()
  const inclusive = new Map()
  const counts = new Map()
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1)
  let total = 0
  let idle = 0
  for (const [id, n] of counts) {
    total += n
    const key = keyOf.get(id)
    self.set(key, (self.get(key) ?? 0) + n)
    if (info.get(key).category === 'idle') {
      idle += n
      continue
    }
    const seen = new Set()
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const k = keyOf.get(cur)
      if (seen.has(k)) continue
      seen.add(k)
      inclusive.set(k, (inclusive.get(k) ?? 0) + n)
    }
  }
  const busy = total - idle
  const pct = (n) => Math.round((n * 1000) / Math.max(1, busy)) / 10
  const intervalUs = profile.samples.length > 1 ? (profile.endTime - profile.startTime) / profile.samples.length : null

  const topSelf = [...self]
    .filter(([k]) => info.get(k).category !== 'idle')
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, n]) => ({ ...info.get(k), samples: n, pct: pct(n) }))

  const categories = new Map()
  for (const [k, n] of self) {
    const cat = info.get(k).category
    if (cat === 'idle') continue
    categories.set(cat, (categories.get(cat) ?? 0) + n)
  }

  const topInclusive = [...inclusive]
    .filter(([k]) => /packages\/server\//.test(info.get(k).location))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([k, n]) => ({ function: info.get(k).function, location: info.get(k).location, samples: n, pct: pct(n) }))

  return {
    file,
    samples: total,
    interval_us: intervalUs === null ? null : Math.round(intervalUs),
    duration_ms: Math.round((profile.endTime - profile.startTime) / 1000),
    idle_pct: Math.round((idle * 1000) / Math.max(1, total)) / 10,
    busy_samples: busy,
    top_self: topSelf,
    categories: [...categories].sort((a, b) => b[1] - a[1]).map(([category, n]) => ({ category, samples: n, pct: pct(n) })),
    top_inclusive: topInclusive,
  }
}
