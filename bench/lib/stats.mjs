// Small helpers: percentiles, number formatting, text tables.

/** Nearest-rank percentiles of `samples` (ms). Returns {count, min, p50, p90, p99, p999, max, mean}. */
export function summarize(samples) {
  const n = samples.length
  if (n === 0) return { count: 0, min: null, p50: null, p90: null, p99: null, p999: null, max: null, mean: null }
  const sorted = Float64Array.from(samples).sort()
  const at = (q) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]
  let sum = 0
  for (const v of sorted) sum += v
  const r = (v) => Math.round(v * 1000) / 1000
  return {
    count: n,
    min: r(sorted[0]),
    p50: r(at(0.5)),
    p90: r(at(0.9)),
    p99: r(at(0.99)),
    p999: r(at(0.999)),
    max: r(sorted[n - 1]),
    mean: r(sum / n),
  }
}

export const fmt = {
  int: (v) => (v === null || v === undefined ? '–' : Math.round(v).toLocaleString('en-US')),
  ms: (v) => (v === null || v === undefined ? '–' : v < 10 ? v.toFixed(2) : v.toFixed(1)),
  ratio: (v) => (v === null || v === undefined ? '–' : `${v.toFixed(2)}×`),
  pct: (v) => (v === null || v === undefined ? '–' : `${v.toFixed(1)} %`),
}

/** Renders `{columns: [{key, title, align?}], rows: [{...}]}` as a text table. */
export function renderTable({ columns, rows }) {
  const cells = rows.map((row) => columns.map((c) => String(row[c.key] ?? '–')))
  const widths = columns.map((c, i) => Math.max(c.title.length, ...cells.map((r) => r[i].length)))
  const line = (values) =>
    values
      .map((v, i) => (columns[i].align === 'left' ? v.padEnd(widths[i]) : v.padStart(widths[i])))
      .join('  ')
      .trimEnd()
  return [line(columns.map((c) => c.title)), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n')
}
