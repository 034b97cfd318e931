/** Display helpers: money, counts, relative times. */
export const usd = (n: number): string =>
  `$${n.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: n !== 0 && Math.abs(n) < 0.01 ? 4 : 2 })}`

export const count = (n: number): string => n.toLocaleString('en-US')

export function relative(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never'
  const s = Math.round((now - Date.parse(iso)) / 1000)
  if (s < 5) return 'just now'
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`
  return `${Math.floor(s / 86_400)} d ago`
}

export const exact = (iso: string | null | undefined): string => (iso ? new Date(iso).toLocaleString() : '')

/** `key:key_abc` → `key key_abc`, `policy:pol_x` → `policy pol_x` (who did it). */
export const actor = (a: string | null | undefined): string => (a ? a.replace(':', ' ') : 'unknown')
