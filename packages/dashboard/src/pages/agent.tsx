import type { IntentView, MeshAgentDetail, MeshEvent, Operator, Policy, PolicyBody, PolicyEvaluateResponse } from '@chokepoint/sdk'
import { useEffect, useState } from 'preact/hooks'
import { actor, count, exact, relative, usd } from '../format.js'
import { KillDialog, type KillTarget } from '../kill-dialog.js'
import { onLinkClick } from '../route.js'
import { describeError } from '../session.js'
import { HealthBadge } from './agents.js'

interface Hour {
  hour: string
  cost_usd: number
}

/** One agent: instances, events, intents, cost per hour, policies (editable) and a dry run. */
export function AgentPage(props: { op: Operator; id: string; canAct: boolean; tick: number }) {
  const { op, id } = props
  const [agent, setAgent] = useState<(MeshAgentDetail & { killed_by?: string | null }) | null>(null)
  const [events, setEvents] = useState<MeshEvent[]>([])
  const [intents, setIntents] = useState<IntentView[]>([])
  const [hours, setHours] = useState<Hour[] | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [target, setTarget] = useState<KillTarget | null>(null)
  const [adding, setAdding] = useState<PolicyBody['kind'] | null>(null)

  useEffect(() => {
    let live = true
    op.agents
      .retrieve(id)
      .then(async (res) => {
        if (!live) return
        setAgent(res.agent)
        setEvents(res.events)
        setError(null)
        const [list, cost] = await Promise.all([
          op.intents.list({ agent: res.agent.address, limit: 20 }),
          op.client.get(`/v1/mesh/agents/${encodeURIComponent(id)}/cost`, { hours: 24 }).catch(() => null),
        ])
        if (!live) return
        setIntents(list.intents)
        setHours(cost ? (cost as { hours: Hour[] }).hours : null)
      })
      .catch((e: unknown) => live && setError(describeError(e)))
    return () => {
      live = false
    }
  }, [op, id, props.tick])

  if (error) {
    return (
      <main>
        <p class="banner error" role="alert">
          {error}
        </p>
        <a href="/agents" onClick={(e) => onLinkClick(e, '/agents')}>
          Back to agents
        </a>
      </main>
    )
  }
  if (!agent) return <main aria-busy="true">Loading…</main>
  const killed = agent.health_status === 'killed'
  return (
    <main>
      <p>
        <a href="/agents" onClick={(e) => onLinkClick(e, '/agents')}>
          ← Agents
        </a>
      </p>
      <header class="agent-head">
        <div>
          <h1>{agent.display_name}</h1>
          <p class="address">{agent.address}</p>
        </div>
        <HealthBadge health={agent.health_status} />
        {props.canAct && (
          <button
            type="button"
            class={killed ? 'primary' : 'danger'}
            onClick={() => setTarget({ action: killed ? 'resume' : 'kill', address_id: agent.address_id, address: agent.address, display_name: agent.display_name })}
          >
            {killed ? 'Resume' : 'Kill'}
          </button>
        )}
      </header>
      {killed && (
        <p class="banner killed-note" role="status">
          Killed <time title={exact(agent.killed_at)}>{relative(agent.killed_at)}</time> by {actor(agent.killed_by)}
          {agent.kill_reason ? ` — “${agent.kill_reason}”` : ''}
        </p>
      )}
      <div class="grid">
        <section aria-labelledby="h-instances">
          <h2 id="h-instances">Instances</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Instance</th>
                <th scope="col">Health</th>
                <th scope="col">Last heartbeat</th>
                {props.canAct && <th scope="col">Action</th>}
              </tr>
            </thead>
            <tbody>
              {agent.instances.map((i) => (
                <tr key={i.instance_id}>
                  <td>{i.instance_id}</td>
                  <td>
                    <HealthBadge health={i.quarantined ? 'quarantined' : i.health_status} />
                  </td>
                  <td>
                    <time title={exact(i.last_heartbeat_at)}>{relative(i.last_heartbeat_at)}</time>
                  </td>
                  {props.canAct && (
                    <td>
                      <button
                        type="button"
                        aria-label={`${i.quarantined ? 'Release' : 'Quarantine'} instance ${i.instance_id}`}
                        onClick={() =>
                          setTarget({
                            action: i.quarantined ? 'resume' : 'kill',
                            address_id: agent.address_id,
                            address: agent.address,
                            display_name: agent.display_name,
                            instance_id: i.instance_id,
                          })
                        }
                      >
                        {i.quarantined ? 'Release' : 'Quarantine'}
                      </button>
                    </td>
                  )}
                </tr>
              ))}
              {agent.instances.length === 0 && (
                <tr>
                  <td colSpan={3} class="empty">
                    No heartbeat yet.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </section>
        <section aria-labelledby="h-cost">
          <h2 id="h-cost">Cost per hour, last 24 h</h2>
          {hours ? <CostChart hours={hours} /> : <p class="empty">No hourly cost from this gateway.</p>}
          <p>
            Today: {usd(agent.cost_period)} · {count(agent.intents_period)} intents
          </p>
        </section>
      </div>
      <section aria-labelledby="h-policies">
        <h2 id="h-policies">Policies</h2>
        <PolicyList op={op} agent={agent} canAct={props.canAct} />
        {props.canAct && (
          <div class="actions left">
            {(['action', 'rate', 'cost', 'deadman'] as const).map((k) => (
              <button key={k} type="button" onClick={() => setAdding(k)}>
                Add {k} policy
              </button>
            ))}
          </div>
        )}
        {adding && (
          <PolicyEditor
            op={op}
            agent={agent.address_id}
            policy={null}
            kind={adding}
            onSaved={() => {
              setAdding(null)
              void op.agents.retrieve(id).then((r) => setAgent(r.agent))
            }}
            onCancel={() => setAdding(null)}
          />
        )}
        <EvaluateForm op={op} from={agent.address} />
      </section>
      <div class="grid">
        <section aria-labelledby="h-events">
          <h2 id="h-events">Recent events</h2>
          <ul class="events">
            {events.map((e) => (
              <li key={e.event_id}>
                <time title={exact(e.created_at)}>{relative(e.created_at)}</time> <strong>{e.event_type}</strong> {e.actor_id ? `by ${actor(e.actor_id)}` : ''}
                {e.details && typeof e.details['reason'] === 'string' ? ` — ${e.details['reason']}` : ''}
              </li>
            ))}
            {events.length === 0 && <li class="empty">None yet.</li>}
          </ul>
        </section>
        <section aria-labelledby="h-intents">
          <h2 id="h-intents">Recent intents</h2>
          <table>
            <thead>
              <tr>
                <th scope="col">Type</th>
                <th scope="col">Direction</th>
                <th scope="col">Status</th>
                <th scope="col">When</th>
              </tr>
            </thead>
            <tbody>
              {intents.map((i) => (
                <tr key={i.intent_id}>
                  <td>{i.intent_type}</td>
                  <td>{i.from_agent === agent.address ? `sent to ${i.to_agent}` : `from ${i.from_agent}`}</td>
                  <td>{i.status}</td>
                  <td>
                    <time title={exact(i.created_at)}>{relative(i.created_at)}</time>
                  </td>
                </tr>
              ))}
              {intents.length === 0 && (
                <tr>
                  <td colSpan={4} class="empty">
                    None yet.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </section>
      </div>
      {target && <KillDialog op={op} target={target} onClose={() => setTarget(null)} onDone={() => undefined} />}
    </main>
  )
}

function CostChart(props: { hours: Hour[] }) {
  const max = Math.max(...props.hours.map((h) => h.cost_usd), 0)
  const w = 12
  return (
    <svg class="chart" viewBox={`0 0 ${props.hours.length * w} 60`} role="img" aria-label={`Cost per hour; highest ${usd(max)}`}>
      {props.hours.map((h, i) => {
        const height = max === 0 ? 0 : Math.max(1, (h.cost_usd / max) * 56)
        return (
          <rect key={h.hour} x={i * w + 1} y={60 - height} width={w - 2} height={height}>
            <title>{`${h.hour}:00 UTC — ${usd(h.cost_usd)}`}</title>
          </rect>
        )
      })}
    </svg>
  )
}

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
  }
}

function PolicyList(props: { op: Operator; agent: MeshAgentDetail; canAct: boolean }) {
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
    ['direction', 'Direction', ['send', 'receive']],
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
}

/**
 * Creates or edits a policy. Saves carry the version read (`If-Match`): a policy changed
 * elsewhere meanwhile is a 409, shown as such; a 422 is shown next to its field.
 */
function PolicyEditor(props: {
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
function EvaluateForm(props: { op: Operator; from: string }) {
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
