/**
 * Tool-name globs for `tool` policies, over `<upstream>/<tool>` (MCP) and
 * `<upstream>/<METHOD> <path>` (HTTP): `*` is any run of characters without `/`, `**` any run
 * including `/`; everything else matches itself. Patterns over 256 characters are refused.
 */

/** Why a pattern is invalid, or null when it is valid. */
export function toolGlobError(pattern: string): string | null {
  if (pattern.length === 0) return 'is empty'
  if (pattern.length > 256) return 'is longer than 256 characters'
  if (/[\u0000-\u001f\u007f]/.test(pattern)) return 'has control characters'
  if (/\*{3,}/.test(pattern)) return 'has *** (use * or **)'
  if (!pattern.includes('/')) return 'needs <upstream>/<tool> (e.g. github/* or deploy-api/POST /v2/**)'
  return null
}

/** Compiles a valid pattern to an anchored matcher. */
export function compileToolGlob(pattern: string): (name: string) => boolean {
  if (!pattern.includes('*')) return (name) => name === pattern
  const source = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
    .join('')
  const re = new RegExp(`^${source}$`, 's')
  return (name) => re.test(name)
}
