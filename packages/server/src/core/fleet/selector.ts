/**
 * Fleet selectors (kill and resume by selector): an address glob over the three path segments
 * of `agent://<org>/<workspace>/<name>` and labels that must all match. Written once here;
 * stores load candidate rows and ask `matches`.
 */

export interface Selector {
  /** `agent://acme/prod/*`: `*` is exactly one segment, `**` one or more, each a whole segment. */
  address?: string | undefined
  /** Every label must be present with exactly this value. */
  labels?: Record<string, string> | undefined
}

export interface CompiledSelector {
  readonly selector: Selector
  /** Canonical JSON (sorted labels): equal selectors have equal keys. */
  readonly key: string
  /** True when it matches any agent whatever its address and labels. */
  readonly universal: boolean
  matches(agent: { address: string; labels: string | null }): boolean
}

const SEGMENT = /^[a-z0-9][a-z0-9_-]{0,62}$/
const ONE = '[a-z0-9][a-z0-9_-]*'
const MANY = `${ONE}(?:/${ONE})*`
export const LABEL_KEY = /^[a-zA-Z0-9](?:[a-zA-Z0-9._/-]{0,61}[a-zA-Z0-9])?$/
export const MAX_LABELS = 32
export const MAX_LABEL_VALUE = 256

/** Why an address pattern is invalid, or null. */
export function addressPatternError(pattern: string): string | null {
  if (!pattern.startsWith('agent://')) return 'must start with agent://'
  if (pattern.length > 255) return 'is longer than 255 characters'
  const segments = pattern.slice('agent://'.length).split('/')
  let fixed = 0
  let many = false
  for (const segment of segments) {
    if (segment === '') return 'has an empty segment'
    if (segment === '**') many = true
    else if (segment === '*' || SEGMENT.test(segment)) fixed += 1
    else if (segment.includes('*')) return 'uses * inside a segment (only whole segments may be * or **)'
    else return `has an invalid segment "${segment}" (a-z, 0-9, _ and -, starting with a letter or digit)`
  }
  // An address has exactly three segments; a pattern that can never match one is a mistake.
  if (many ? fixed > 2 : fixed !== 3) {
    return `can never match an address (agent://<org>/<workspace>/<name> has 3 segments)`
  }
  return null
}

/** Why a labels map is invalid (as a selector or as an agent's labels), or null. */
export function labelsError(labels: Record<string, unknown>): string | null {
  const entries = Object.entries(labels)
  if (entries.length > MAX_LABELS) return `has more than ${MAX_LABELS} labels`
  for (const [key, value] of entries) {
    if (!LABEL_KEY.test(key)) return `has an invalid key "${key.slice(0, 80)}" (1–63 of a-z A-Z 0-9 . _ / -, starting and ending alphanumeric)`
    if (value === null) continue
    if (typeof value !== 'string') return `label "${key}" must be a string`
    if (value.length > MAX_LABEL_VALUE) return `label "${key}" is longer than ${MAX_LABEL_VALUE} characters`
  }
  return null
}

function compileAddress(pattern: string): (address: string) => boolean {
  if (!pattern.includes('*')) return (a) => a === pattern
  const source = pattern
    .slice('agent://'.length)
    .split('/')
    .map((seg) => (seg === '**' ? MANY : seg === '*' ? ONE : seg))
    .join('/')
  const re = new RegExp(`^agent://${source}$`)
  return (a) => re.test(a)
}

/** Sorted labels, so equal maps serialize equally. */
export function canonicalLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

export function parseLabels(json: string | null): Record<string, string> {
  if (json === null) return {}
  return JSON.parse(json) as Record<string, string>
}

/** Compiles a selector whose parts were validated (schemas call the *Error functions). */
export function compileSelector(selector: Selector): CompiledSelector {
  const address = selector.address
  const labels = selector.labels === undefined ? {} : canonicalLabels(selector.labels)
  const matchAddress = address === undefined ? () => true : compileAddress(address)
  const wanted = Object.entries(labels)
  const canonical: Selector = {
    ...(address === undefined ? {} : { address }),
    ...(wanted.length === 0 ? {} : { labels }),
  }
  const universalAddress = address === undefined || address === 'agent://**'
  return {
    selector: canonical,
    key: JSON.stringify(canonical),
    universal: universalAddress && wanted.length === 0,
    matches(agent) {
      if (!matchAddress(agent.address)) return false
      if (wanted.length === 0) return true
      const have = parseLabels(agent.labels)
      return wanted.every(([k, v]) => have[k] === v)
    },
  }
}

/** `agent://acme/prod/* {team=payments}`: the selector as an audit target and in messages. */
export function describeSelector(selector: Selector): string {
  const labels = Object.entries(selector.labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',')
  const address = selector.address ?? 'agent://**'
  return labels === '' ? address : `${address} {${labels}}`
}
