import type { MeshAgentDetail, Operator, Policy, PolicyBody, PolicyEvaluateResponse } from '@chokepoint/sdk'
import { useEffect, useState } from 'preact/hooks'
import { usd } from '../format.js'
import { describeError } from '../session.js'

/** The agent page's policies: the list that applies, an editor per kind, and the dry run. */
function describePolicy(p: Policy): string {
  switch (p.kind) {
    case 'action':
      return `${p.direction} ${p.mode} ${p.patterns.join(', ')}`
    case 'rate':
      return `${p.direction} ≤ ${[p.max_per_hour ? `${p.max_per_hour}/h` : '', p.max_per_day ? `${p.max_per_day}/day` : ''].filter(Boolean).join(' and ')}, on breach ${p.on_breach}`
    case 'cost':
      return `≤ ${usd(p.max_cost_per_day_usd)}/day, on breach ${p.on_breach}`
    case 'deadman':
      return `silent ≥ ${p.silent_after_seconds} s → ${p.on_trigger}`
    case 'tool':
      return `${p.mode} ${p.patterns.join(', ')}`
  }
}

export function PolicyList(props: { op: Operator; agent: MeshAgentDetail; canAct: boolean }) {
  const [editing, setEditing] = useState<string | null>(null)
  const [policies, setPolicies] = useState<Policy[]>(props.agent.effective_policies ?? props.agent.policies)
  useEffect(() => setPolicies(props.agent.effective_policies ?? props.agent.policies), [props.agent])
  const own = new Set(props.agent.policies.map((p) => p.policy_id))
  const shown = [...policies, ...props.agent.policies.filter((p) => !policies.some((e) => e.policy_id === p.policy_id))]
  if (shown.length === 0) return <p class="empty">No policies apply to this agent.</p>
  return (
    <ul class="policies">
      {shown.map((p) =>
        editing === p.policy_id ? (
          <li key={p.policy_id}>
            <PolicyEditor
              op={props.op}
              agent={props.agent.address_id}
              policy={p}
              kind={p.kind}
              onSaved={(saved) => {
                setEditing(null)
                if (saved) setPolicies((list) => list.map((x) => (x.policy_id === saved.policy_id ? saved : x)))
              }}
              onCancel={() => setEditing(null)}
            />
          </li>
        ) : (
          <li key={p.policy_id}>
            <strong>{p.kind}</strong> {describePolicy(p)} {p.enforcement === 'monitor' && <span class="tag">monitor only</span>}
            {!own.has(p.policy_id) && <span class="tag">default</span>}
            {!p.enabled && <span class="tag">disabled</span>} <span class="muted">v{p.version}</span>{' '}
            {props.canAct && own.has(p.policy_id) && (
              <button type="button" onClick={() => setEditing(p.policy_id)} aria-label={`Edit ${p.kind} policy ${p.policy_id}`}>
                Edit
              </button>
            )}
          </li>
        ),
      )}
    </ul>
  )
}

type Fields = Record<string, string>

function fieldsOf(kind: PolicyBody['kind'], p: Policy | null): Fields {
  const base: Fields = { enforcement: p?.enforcement ?? 'enforce', enabled: p?.enabled === false ? 'false' : 'true' }
  if (kind === 'action') {
    const a = p as (Policy & { kind: 'action' }) | null
    return { ...base, direction: a?.direction ?? 'send', mode: a?.mode ?? 'allowlist', patterns: a?.patterns.join(', ') ?? '' }
  }
  if (kind === 'rate') {
    const r = p as (Policy & { kind: 'rate' }) | null
    return { ...base, direction: r?.direction ?? 'send', max_per_hour: String(r?.max_per_hour ?? ''), max_per_day: String(r?.max_per_day ?? ''), on_breach: r?.on_breach ?? 'block' }
  }
  if (kind === 'tool') {
    const t = p as (Policy & { kind: 'tool' }) | null
    return { ...base, mode: t?.mode ?? 'allowlist', patterns: t?.patterns.join(', ') ?? '' }
  }
  if (kind === 'cost') {
    const c = p as (Policy & { kind: 'cost' }) | null
    return { ...base, max_cost_per_day_usd: String(c?.max_cost_per_day_usd ?? ''), on_breach: c?.on_breach ?? 'block' }
  }
  const d = p as (Policy & { kind: 'deadman' }) | null
  return { ...base, silent_after_seconds: String(d?.silent_after_seconds ?? '300'), on_trigger: d?.on_trigger ?? 'alert' }
}

const num = (s: string | undefined): number | undefined => (s === undefined || s.trim() === '' ? undefined : Number(s))

function bodyOf(kind: PolicyBody['kind'], f: Fields): PolicyBody {
  const meta = { enforcement: f['enforcement'] as 'enforce' | 'monitor', enabled: f['enabled'] !== 'false' }
  if (kind === 'action') {
    const patterns = (f['patterns'] ?? '').split(',').map((s) => s.trim()).filter(Boolean)
    return { kind, direction: f['direction'] as 'send', mode: f['mode'] as 'allowlist', patterns, ...meta }
  }
  if (kind === 'rate') {
    const body: PolicyBody = { kind, direction: f['direction'] as 'send', on_breach: f['on_breach'] as 'block', ...meta }
    const h = num(f['max_per_hour'])
    const d = num(f['max_per_day'])
    if (h !== undefined) body.max_per_hour = h
    if (d !== undefined) body.max_per_day = d
    return body
  }
  if (kind === 'tool') {
    const patterns = (f['patterns'] ?? '').split(',').map((s) => s.trim()).filter(Boolean)
    return { kind, mode: f['mode'] as 'allowlist', patterns, ...meta }
  }
  if (kind === 'cost') return { kind, max_cost_per_day_usd: num(f['max_cost_per_day_usd']) as number, on_breach: f['on_breach'] as 'block', ...meta }
  return { kind, silent_after_seconds: num(f['silent_after_seconds']) as number, on_trigger: f['on_trigger'] as 'alert', ...meta }
}

const FIELDS: Record<PolicyBody['kind'], [string, string, readonly string[] | null][]> = {
  action: [
    ['direction', 'Direction', ['send', 'receive']],
    ['mode', 'Mode', ['allowlist', 'denylist']],
    ['patterns', 'Intent types (globs, comma-separated)', null],
  ],
  rate: [
    ['direction', 'Counts', ['send', 'receive', 'egress']],
    ['max_per_hour', 'Max per hour', null],
    ['max_per_day', 'Max per day', null],
    ['on_breach', 'On breach', ['block', 'kill']],
  ],
  cost: [
    ['max_cost_per_day_usd', 'Max USD per day', null],
    ['on_breach', 'On breach', ['block', 'kill']],
  ],
  deadman: [
    ['silent_after_seconds', 'Silent after (seconds)', null],
    ['on_trigger', 'On trigger', ['alert', 'kill']],
  ],
  tool: [
    ['mode', 'Mode', ['allowlist', 'denylist']],
    ['patterns', 'Tools (<upstream>/<tool> or <upstream>/<METHOD> <path>, comma-separated)', null],
  ],
}

/**
 * Creates or edits a policy. Saves carry the version read (`If-Match`): a policy changed
 * elsewhere meanwhile is a 409, shown as such; a 422 is shown next to its field.
 */
export function PolicyEditor(props: {
  op: Operator
  agent: string
  policy: Policy | null
  kind: PolicyBody['kind']
  onSaved: (p: Policy | null) => void
  onCancel: () => void
}) {
  const [fields, setFields] = useState<Fields>(() => fieldsOf(props.kind, props.policy))
  const [fieldError, setFieldError] = useState<{ field: string; message: string } | null>(null)
  const [error, setError] = useState<string | null>(null)
  const set = (k: string, v: string): void => setFields((f) => ({ ...f, [k]: v }))
  const prefix = `pol-${props.policy?.policy_id ?? `new-${props.kind}`}`

  async function save(event: Event): Promise<void> {
    event.preventDefault()
    setError(null)
    setFieldError(null)
    try {
      const body = bodyOf(props.kind, fields)
      const res = props.policy
        ? await props.op.policies.update(props.policy.policy_id, body, { version: props.policy.version })
        : await props.op.policies.create(props.agent, body)
      props.onSaved(res.policy)
    } catch (e) {
      const err = e as { status?: number; details?: { field?: string }; message?: string }
      if (err.status === 409) setError('Changed elsewhere — reload to see the current version before saving.')
      else if (err.status === 422 && err.details?.field) setFieldError({ field: String(err.details.field).split('.')[0] as string, message: err.message ?? 'invalid' })
      else setError(describeError(e))
    }
  }

  return (
    <form class="editor" onSubmit={(e) => void save(e)} aria-label={`${props.policy ? 'Edit' : 'New'} ${props.kind} policy`}>
      {FIELDS[props.kind].map(([key, label, options]) => (
        <div class="field" key={key}>
          <label for={`${prefix}-${key}`}>{label}</label>
          {options ? (
            <select id={`${prefix}-${key}`} value={fields[key]} onChange={(e) => set(key, (e.target as HTMLSelectElement).value)}>
              {options.map((o) => (
                <option key={o}>{o}</option>
              ))}
            </select>
          ) : (
            <input
              id={`${prefix}-${key}`}
              value={fields[key]}
              aria-invalid={fieldError?.field === key}
              aria-describedby={fieldError?.field === key ? `${prefix}-${key}-error` : undefined}
              onInput={(e) => set(key, (e.target as HTMLInputElement).value)}
            />
          )}
          {fieldError?.field === key && (
            <span class="field-error" id={`${prefix}-${key}-error`} role="alert">
              {fieldError.message}
            </span>
          )}
        </div>
      ))}
      <div class="field">
        <label for={`${prefix}-enforcement`}>Enforcement</label>
        <select id={`${prefix}-enforcement`} value={fields['enforcement']} onChange={(e) => set('enforcement', (e.target as HTMLSelectElement).value)}>
          <option value="enforce">enforce</option>
          <option value="monitor">monitor only</option>
        </select>
      </div>
      {fieldError && !FIELDS[props.kind].some(([k]) => k === fieldError.field) && (
        <p class="error" role="alert">
          {fieldError.message}
        </p>
      )}
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <div class="actions left">
        <button type="submit" class="primary">
          Save
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </form>
  )
}

/** "Why would this be denied?": `POST /v1/policies/evaluate`, no side effects. */
export function EvaluateForm(props: { op: Operator; from: string }) {
  const [to, setTo] = useState('')
  const [type, setType] = useState('')
  const [answer, setAnswer] = useState<PolicyEvaluateResponse | null>(null)
  const [error, setError] = useState<string | null>(null)
  async function run(event: Event): Promise<void> {
    event.preventDefault()
    setError(null)
    try {
      setAnswer(await props.op.policies.evaluate({ from_agent: props.from, to_agent: to.trim(), intent_type: type.trim() }))
    } catch (e) {
      setAnswer(null)
      setError(describeError(e))
    }
  }
  return (
    <form class="evaluate" onSubmit={(e) => void run(e)} aria-label="Why would this be denied?">
      <h3>Why would this be denied?</h3>
      <div class="field">
        <label for="eval-to">To agent</label>
        <input id="eval-to" placeholder="agent://org/workspace/name" value={to} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
      </div>
      <div class="field">
        <label for="eval-type">Intent type</label>
        <input id="eval-type" placeholder="deploy.service.v1" value={type} onInput={(e) => setType((e.target as HTMLInputElement).value)} />
      </div>
      <button type="submit">Evaluate</button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {answer && (
        <div class="answer" role="status">
          <strong>{answer.decision}</strong>
          {answer.policy_id ? ` by ${answer.decided_by === 'default' ? 'default policy ' : ''}${answer.policy_id}` : ''}: {answer.reason}
          {(answer.monitored ?? []).map((m) => (
            <div key={m.policy_id}>
              monitor only: {m.policy_id} would {m.would} ({m.decision}): {m.reason}
            </div>
          ))}
        </div>
      )}
    </form>
  )
}
