import type { HealthStatus, MeshAgent, Operator } from '@chokepoint/sdk'
import { useEffect, useRef, useState } from 'preact/hooks'
import { KillDialog, type KillTarget } from '../kill-dialog.js'
import { actor, count, exact, relative, usd } from '../format.js'
import { navigate, onLinkClick, withParams, type Route } from '../route.js'
import { describeError } from '../session.js'

/** A list row as the console reads it (`GET /v1/mesh/agents`). */
interface Row extends MeshAgent {
  cost_ceiling_usd?: number | null
  killed_by?: string | null
}

interface ListAnswer {
  agents: Row[]
  summary: Record<'total' | 'healthy' | 'degraded' | 'unreachable' | 'killed' | 'unknown' | 'intents_period' | 'cost_period', number>
  total?: number
  next_offset?: number | null
}

const HEALTH: HealthStatus[] = ['healthy', 'degraded', 'unreachable', 'killed', 'unknown']
const WINDOWS = [
  ['day', 'Today'],
  ['week', '7 days'],
  ['month', '30 days'],
] as const
const SORTS = [
  ['registered', 'Registration'],
  ['cost', 'Cost'],
  ['intents', 'Intents'],
  ['last_heartbeat', 'Last heartbeat'],
] as const
const PAGE = 50

export function HealthBadge(props: { health: string }) {
  return (
    <span class={`health ${props.health}`}>
      <span class="dot" aria-hidden="true" />
      {props.health}
    </span>
  )
}

/** The agents page: summary, filters, one list request per refresh, Kill/Resume per row. */
export function AgentsPage(props: { op: Operator; route: Route; canAct: boolean; tick: number }) {
  const p = props.route.params
  const window = p.get('window') ?? 'day'
  const health = p.get('health') ?? ''
  const q = p.get('q') ?? ''
  const sort = p.get('sort') ?? 'registered'
  const offset = Number(p.get('offset') ?? '0') || 0
  const [data, setData] = useState<ListAnswer | null>(null)
  const [error, setError] = useState<string | null>(null)
  const [target, setTarget] = useState<KillTarget | null>(null)
  const [search, setSearch] = useState(q)
  const seq = useRef(0)

  useEffect(() => setSearch(q), [q])

  useEffect(() => {
    const mine = ++seq.current
    const query: Record<string, string | number> = { window, limit: PAGE }
    if (offset > 0) query['offset'] = offset
    if (health) query['health'] = health
    if (q) query['q'] = q
    if (sort !== 'registered') query['sort'] = sort
    props.op.client
      .get('/v1/mesh/agents', query)
      .then((answer) => {
        if (mine !== seq.current) return
        setData(answer as ListAnswer)
        setError(null)
      })
      .catch((e: unknown) => mine === seq.current && setError(describeError(e)))
  }, [props.op, window, health, q, sort, offset, props.tick])

  const go = (changes: Record<string, string | null>): void => navigate(withParams('/agents', p, { offset: null, ...changes }))
  // Typing filters after a short pause; the URL keeps the search (replace: no history entry per key).
  useEffect(() => {
    if (search === q) return
    const t = setTimeout(() => navigate(withParams('/agents', p, { q: search, offset: null }), true), 300)
    return () => clearTimeout(t)
  }, [search])

  const summary = data?.summary
  const total = data?.total ?? data?.agents.length ?? 0
  const windowLabel = WINDOWS.find(([w]) => w === window)?.[1] ?? 'Today'
  return (
    <main>
      <h1>Agents</h1>
      {error && (
        <p class="banner error" role="alert">
          {error}
        </p>
      )}
      <section class="cards" aria-label="Summary">
        <Card label="Total" value={summary?.total} />
        {HEALTH.map((h) => (
          <Card key={h} label={h[0]?.toUpperCase() + h.slice(1)} value={summary?.[h as keyof typeof summary]} tone={h} />
        ))}
        <Card label={`Intents · ${windowLabel}`} value={summary?.intents_period} />
        <Card label={`Cost · ${windowLabel}`} text={summary ? usd(summary.cost_period) : undefined} />
      </section>

      <div class="toolbar">
        <div role="group" aria-label="Health filter" class="chips">
          <button type="button" aria-pressed={health === ''} onClick={() => go({ health: null })}>
            All {summary ? `(${count(summary.total)})` : ''}
          </button>
          {HEALTH.map((h) => (
            <button key={h} type="button" aria-pressed={health === h} onClick={() => go({ health: h })}>
              {h} {summary ? `(${count(summary[h as keyof typeof summary] ?? 0)})` : ''}
            </button>
          ))}
        </div>
        <label class="search">
          <span>Search</span>
          <input type="search" placeholder="address or name" value={search} onInput={(e) => setSearch((e.target as HTMLInputElement).value)} />
        </label>
        <div role="group" aria-label="Window" class="chips">
          {WINDOWS.map(([w, label]) => (
            <button key={w} type="button" aria-pressed={window === w} onClick={() => go({ window: w === 'day' ? null : w })}>
              {label}
            </button>
          ))}
        </div>
        <label>
          <span>Sort by</span>
          <select value={sort} onChange={(e) => go({ sort: (e.target as HTMLSelectElement).value })}>
            {SORTS.map(([s, label]) => (
              <option key={s} value={s}>
                {label}
              </option>
            ))}
          </select>
        </label>
      </div>

      <div class="table-wrap">
        <table class="agents">
          <caption class="sr-only">Agents</caption>
          <thead>
            <tr>
              <th scope="col">Agent</th>
              <th scope="col">Health</th>
              <th scope="col">Instances</th>
              <th scope="col">Last heartbeat</th>
              <th scope="col">Intents</th>
              <th scope="col">Cost</th>
              {props.canAct && <th scope="col">Action</th>}
            </tr>
          </thead>
          <tbody>
            {data?.agents.map((a) => (
              <AgentRow key={a.address_id} agent={a} window={window} canAct={props.canAct} onAct={setTarget} />
            ))}
            {data && data.agents.length === 0 && (
              <tr>
                <td colSpan={7} class="empty">
                  No agents {q || health ? 'match these filters' : 'yet'}.
                </td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {data && (
        <nav class="pager" aria-label="Pages">
          <span>
            {total === 0 ? 0 : offset + 1}–{offset + data.agents.length} of {count(total)}
          </span>
          <button type="button" disabled={offset === 0} onClick={() => go({ offset: String(Math.max(0, offset - PAGE)) })}>
            Previous
          </button>
          <button
            type="button"
            disabled={data.next_offset === null || data.next_offset === undefined}
            onClick={() => go({ offset: String(data.next_offset ?? offset + PAGE) })}
          >
            Next
          </button>
        </nav>
      )}
      {target && <KillDialog op={props.op} target={target} onClose={() => setTarget(null)} onDone={() => undefined} />}
    </main>
  )
}

function Card(props: { label: string; value?: number | undefined; text?: string | undefined; tone?: string }) {
  return (
    <div class={`card ${props.tone ?? ''}`}>
      <div class="card-label">{props.label}</div>
      <div class="card-value">{props.text ?? (props.value === undefined ? '…' : count(props.value))}</div>
    </div>
  )
}

function AgentRow(props: { agent: Row; window: string; canAct: boolean; onAct: (t: KillTarget) => void }) {
  const a = props.agent
  const href = `/agents/${encodeURIComponent(a.address_id)}`
  const killed = a.health_status === 'killed'
  const ceiling = a.cost_ceiling_usd
  const cost =
    props.window === 'day' && typeof ceiling === 'number' ? `${usd(a.cost_period)} of ${usd(ceiling)} today` : usd(a.cost_period)
  return (
    <tr class={killed ? 'killed' : ''} data-address={a.address}>
      <td>
        <a href={href} onClick={(e) => onLinkClick(e, href)} class="name">
          {a.display_name}
        </a>
        <div class="address">{a.address}</div>
        {killed && (
          <div class="killed-note">
            Killed <time title={exact(a.killed_at)}>{relative(a.killed_at)}</time> by {actor(a.killed_by)}
            {a.kill_reason ? ` — “${a.kill_reason}”` : ''}
          </div>
        )}
      </td>
      <td>
        <HealthBadge health={a.health_status} />
      </td>
      <td>
        {a.instances_healthy}/{a.instances_total}
      </td>
      <td>
        <time title={exact(a.last_heartbeat_at)}>{relative(a.last_heartbeat_at)}</time>
      </td>
      <td>{count(a.intents_period)}</td>
      <td>{cost}</td>
      {props.canAct && (
        <td>
          <button
            type="button"
            class={killed ? '' : 'danger'}
            aria-label={`${killed ? 'Resume' : 'Kill'} ${a.address}`}
            onClick={() => props.onAct({ action: killed ? 'resume' : 'kill', address_id: a.address_id, address: a.address, display_name: a.display_name })}
          >
            {killed ? 'Resume' : 'Kill'}
          </button>
        </td>
      )}
    </tr>
  )
}
