import type { IntentView, MeshAgentDetail, MeshEvent, Operator, PolicyBody } from '@chokepoint/sdk'
import { useEffect, useState } from 'preact/hooks'
import { actor, count, exact, relative, usd } from '../format.js'
import { KillDialog, type KillTarget } from '../kill-dialog.js'
import { onLinkClick } from '../route.js'
import { describeError } from '../session.js'
import { HealthBadge } from './agents.js'
import { EvaluateForm, PolicyEditor, PolicyList } from './policies.js'

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
            {(['action', 'rate', 'cost', 'deadman', 'tool'] as const).map((k) => (
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
