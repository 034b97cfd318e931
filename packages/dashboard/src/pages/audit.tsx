import type { AuditEntry, AuditVerifyResponse, Operator } from '@chokepoint/sdk'
import { Fragment } from 'preact'
import { useEffect, useState } from 'preact/hooks'
import { actor, exact } from '../format.js'
import { navigate, withParams, type Route } from '../route.js'
import { describeError } from '../session.js'

const PAGE = 50

/** The audit trail: paged by `after_seq`, filtered by action and target, with a diff and verify. */
export function AuditPage(props: { op: Operator; route: Route; tick: number }) {
  const p = props.route.params
  const afterSeq = Number(p.get('after_seq') ?? '0') || 0
  const action = p.get('action') ?? ''
  const target = p.get('target') ?? ''
  const [entries, setEntries] = useState<AuditEntry[] | null>(null)
  const [next, setNext] = useState<number | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [open, setOpen] = useState<number | null>(null)
  const [verify, setVerify] = useState<AuditVerifyResponse | null>(null)
  const [actionInput, setActionInput] = useState(action)
  const [targetInput, setTargetInput] = useState(target)
  const [exporting, setExporting] = useState(false)

  useEffect(() => {
    setActionInput(action)
    setTargetInput(target)
  }, [action, target])

  const query = (after: number) => ({
    limit: PAGE,
    after_seq: after,
    ...(action ? { action_prefix: action } : {}),
    ...(target ? { target } : {}),
  })

  useEffect(() => {
    let live = true
    props.op.audit
      .list(query(afterSeq))
      .then((res) => {
        if (!live) return
        setEntries(res.entries)
        setNext(res.next_after_seq)
        setError(null)
      })
      .catch((e: unknown) => live && setError(describeError(e)))
    return () => {
      live = false
    }
  }, [props.op, afterSeq, action, target, props.tick])

  async function runVerify(): Promise<void> {
    setVerify(null)
    try {
      setVerify(await props.op.audit.verify())
    } catch (e) {
      setError(describeError(e))
    }
  }

  async function exportAs(format: 'csv' | 'jsonl'): Promise<void> {
    setExporting(true)
    try {
      const all: AuditEntry[] = []
      let after = 0
      for (;;) {
        const res = await props.op.audit.list({ ...query(after), limit: 500 })
        all.push(...res.entries)
        if (res.next_after_seq === null || res.entries.length === 0) break
        after = res.next_after_seq
      }
      const text = format === 'jsonl' ? all.map((e) => JSON.stringify(e)).join('\n') + '\n' : toCsv(all)
      const url = URL.createObjectURL(new Blob([text], { type: format === 'csv' ? 'text/csv' : 'application/x-ndjson' }))
      const a = document.createElement('a')
      a.href = url
      a.download = `chokepoint-audit.${format}`
      a.click()
      setTimeout(() => URL.revokeObjectURL(url), 10_000)
    } catch (e) {
      setError(describeError(e))
    } finally {
      setExporting(false)
    }
  }

  const filter = (event: Event): void => {
    event.preventDefault()
    navigate(withParams('/audit', p, { action: actionInput.trim(), target: targetInput.trim(), after_seq: null }))
  }

  return (
    <main>
      <h1>Audit trail</h1>
      {error && (
        <p class="banner error" role="alert">
          {error}
        </p>
      )}
      <div class="toolbar">
        <form class="filters" onSubmit={filter} aria-label="Filter the audit trail">
          <label>
            <span>Action</span>
            <input placeholder="agent.kill, policy." value={actionInput} onInput={(e) => setActionInput((e.target as HTMLInputElement).value)} />
          </label>
          <label>
            <span>Target</span>
            <input placeholder="agent://… or pol_…" value={targetInput} onInput={(e) => setTargetInput((e.target as HTMLInputElement).value)} />
          </label>
          <button type="submit">Filter</button>
        </form>
        <button type="button" onClick={() => void runVerify()}>
          Verify chain
        </button>
        <button type="button" disabled={exporting} onClick={() => void exportAs('csv')}>
          Export CSV
        </button>
        <button type="button" disabled={exporting} onClick={() => void exportAs('jsonl')}>
          Export JSONL
        </button>
      </div>
      {verify && (
        <p class={`banner ${verify.valid ? 'ok' : 'error'}`} role="status">
          {verify.valid
            ? `valid ✓ (${verify.entries} entries)`
            : `broken ✗ at entry #${verify.first_broken_seq}: its hash does not match its content or the chain before it`}
        </p>
      )}
      <div class="table-wrap">
        <table class="audit">
          <thead>
            <tr>
              <th scope="col">#</th>
              <th scope="col">When</th>
              <th scope="col">Actor</th>
              <th scope="col">Action</th>
              <th scope="col">Target</th>
              <th scope="col">Reason</th>
              <th scope="col">Change</th>
            </tr>
          </thead>
          <tbody>
            {entries?.map((e) => (
              <Fragment key={e.seq}>
                <tr class={verify && !verify.valid && verify.first_broken_seq === e.seq ? 'broken' : ''}>
                  <td>{e.seq}</td>
                  <td>
                    <time title={e.at}>{exact(e.at)}</time>
                  </td>
                  <td>{actor(e.actor)}</td>
                  <td>{e.action}</td>
                  <td class="address">{e.target}</td>
                  <td>{e.reason ?? ''}</td>
                  <td>
                    <button type="button" aria-expanded={open === e.seq} onClick={() => setOpen(open === e.seq ? null : e.seq)}>
                      {open === e.seq ? 'Hide' : 'Diff'}
                    </button>
                  </td>
                </tr>
                {open === e.seq && (
                  <tr class="diff-row">
                    <td colSpan={7}>
                      <Diff before={e.before} after={e.after} />
                    </td>
                  </tr>
                )}
              </Fragment>
            ))}
            {entries && entries.length === 0 && (
              <tr>
                <td colSpan={7} class="empty">
                  No entries.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={afterSeq === 0} onClick={() => navigate(withParams('/audit', p, { after_seq: null }))}>
          First page
        </button>
        <button type="button" disabled={next === null} onClick={() => navigate(withParams('/audit', p, { after_seq: String(next) }))}>
          Next page
        </button>
      </nav>
    </main>
  )
}

/** Before/after, field by field: changed fields are marked. */
function Diff(props: { before: unknown; after: unknown }) {
  const b = (props.before ?? {}) as Record<string, unknown>
  const a = (props.after ?? {}) as Record<string, unknown>
  const keys = [...new Set([...Object.keys(b), ...Object.keys(a)])]
  if (typeof props.before !== 'object' || typeof props.after !== 'object') {
    return <pre>{JSON.stringify({ before: props.before, after: props.after }, null, 2)}</pre>
  }
  return (
    <table class="diff">
      <thead>
        <tr>
          <th scope="col">Field</th>
          <th scope="col">Before</th>
          <th scope="col">After</th>
        </tr>
      </thead>
      <tbody>
        {keys.map((k) => {
          const before = JSON.stringify(b[k])
          const after = JSON.stringify(a[k])
          const changed = before !== after
          return (
            <tr key={k} class={changed ? 'changed' : ''}>
              <th scope="row">
                {k}
                {changed ? ' (changed)' : ''}
              </th>
              <td>
                <code>{before ?? '—'}</code>
              </td>
              <td>
                <code>{after ?? '—'}</code>
              </td>
            </tr>
          )
        })}
      </tbody>
    </table>
  )
}

function toCsv(entries: AuditEntry[]): string {
  const cell = (v: unknown): string => {
    const s = v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v)
    return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s
  }
  const cols = ['seq', 'at', 'actor', 'action', 'target', 'reason', 'before', 'after', 'prev_hash', 'hash'] as const
  return [cols.join(','), ...entries.map((e) => cols.map((c) => cell(e[c])).join(','))].join('\n') + '\n'
}
