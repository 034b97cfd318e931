/** Terminal output: tables, colours only on a TTY (and never with NO_COLOR), JSON for scripts. */
const useColor = (): boolean => Boolean(process.stdout.isTTY) && process.env['NO_COLOR'] === undefined

const paint = (code: string) => (text: string): string => (useColor() ? `\x1b[${code}m${text}\x1b[0m` : text)
export const red = paint('31')
export const green = paint('32')
export const yellow = paint('33')
export const dim = paint('2')
export const bold = paint('1')

const HEALTH_COLOR: Record<string, (t: string) => string> = {
  healthy: green,
  degraded: yellow,
  unreachable: red,
  killed: (t) => bold(red(t)),
  unknown: dim,
}

export const health = (status: string): string => (HEALTH_COLOR[status] ?? ((t: string) => t))(status)

const visibleLength = (s: string): number => s.replace(/\x1b\[[0-9;]*m/g, '').length

/** A `kubectl get`-style table: upper-case headers, columns padded to their widest cell. */
export function table(headers: string[], cells: (string | null | undefined)[][]): string {
  const rows = cells.map((r) => r.map((c) => c ?? '-'))
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visibleLength(r[i] ?? ''))))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + ' '.repeat((widths[i] ?? 0) - visibleLength(c))))
      .join('   ')
      .trimEnd()
  return [line(headers.map((h) => h.toUpperCase())), ...rows.map(line)].join('\n') + '\n'
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
}

/** "3m ago" style ages for timestamps. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '-'
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.floor(s / 60)}m ago`
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`
  return `${Math.floor(s / 86400)}d ago`
}

export const usd = (n: number | null | undefined): string => `$${(n ?? 0).toFixed(2)}`
