import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { extname, join, normalize, sep } from 'node:path'

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
}

/** The dashboard's pages may load only what the gateway serves: no CDN, no inline script. */
export const DASHBOARD_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

/** The console's own pages (it routes them in the browser): `/`, `/agents[/<id>]`, `/audit`. */
const APP_PATH = /^\/(?:agents(?:\/[^/]+)?|audit)?\/?$/

/**
 * Serves the built dashboard (`packages/dashboard/dist`): hashed files under `/assets/` with a
 * year of immutable caching, and `index.html` (never cached) for the console's pages, so a
 * reload or a shared link works. Any other path — API paths (`/v1/…`), typos — is not the
 * console's: the caller answers its JSON 404.
 */
export function dashboardHandler(dir: string | null): (req: IncomingMessage, res: ServerResponse, path: string) => boolean {
  const index = dir !== null && existsSync(join(dir, 'index.html')) ? readFileSync(join(dir, 'index.html')) : null
  return (req, res, path) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    if (index === null || dir === null) return false
    if (!path.startsWith('/assets/') && !APP_PATH.test(path)) return false
    res.setHeader('content-security-policy', DASHBOARD_CSP)
    res.setHeader('x-content-type-options', 'nosniff')
    res.setHeader('referrer-policy', 'no-referrer')
    if (path.startsWith('/assets/')) {
      const file = normalize(join(dir, decodeURIComponentSafe(path)))
      if (!file.startsWith(join(dir, 'assets') + sep) || !existsSync(file) || !statSync(file).isFile()) return false
      res.statusCode = 200
      res.setHeader('content-type', TYPES[extname(file)] ?? 'application/octet-stream')
      res.setHeader('cache-control', 'public, max-age=31536000, immutable')
      res.setHeader('content-length', statSync(file).size)
      if (req.method === 'HEAD') res.end()
      else createReadStream(file).pipe(res)
      return true
    }
    res.statusCode = 200
    res.setHeader('content-type', TYPES['.html'] as string)
    res.setHeader('cache-control', 'no-cache')
    res.setHeader('content-length', index.length)
    res.end(req.method === 'HEAD' ? undefined : index)
    return true
  }
}

function decodeURIComponentSafe(path: string): string {
  try {
    return decodeURIComponent(path)
  } catch {
    return '/invalid'
  }
}
