/**
 * Intent-type globs (DESIGN §10): dotted segments of `[a-z0-9_]`; `*` is exactly one segment,
 * `**` one or more, each only as a whole segment. Patterns over 256 characters are refused.
 */
const SEGMENT = /^[a-z0-9_]+$/
const ONE = '[a-z0-9_]+'
const MANY = '[a-z0-9_]+(?:\\.[a-z0-9_]+)*'

/** Why a pattern is invalid, or null when it is valid. */
export function globError(pattern: string): string | null {
  if (pattern.length === 0) return 'is empty'
  if (pattern.length > 256) return 'is longer than 256 characters'
  for (const segment of pattern.split('.')) {
    if (segment === '') return 'has an empty segment'
    if (segment === '*' || segment === '**') continue
    if (segment.includes('*')) return 'uses * inside a segment (only whole segments may be * or **)'
    if (!SEGMENT.test(segment)) return 'has characters other than a-z, 0-9 and _ in a segment'
  }
  return null
}

/** Compiles a valid pattern to an anchored matcher. */
export function compileGlob(pattern: string): (intentType: string) => boolean {
  if (!pattern.includes('*')) return (t) => t === pattern
  const source = pattern
    .split('.')
    .map((seg) => (seg === '**' ? MANY : seg === '*' ? ONE : seg))
    .join('\\.')
  const re = new RegExp(`^${source}$`)
  return (t) => re.test(t)
}
