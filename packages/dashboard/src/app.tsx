import type { Operator } from '@chokepoint/sdk'
import { useEffect, useRef, useState } from 'preact/hooks'
import { subscribe, type LiveStatus } from './live.js'
import { AgentPage } from './pages/agent.js'
import { AgentsPage } from './pages/agents.js'
import { AuditPage } from './pages/audit.js'
import { onLinkClick, useRoute } from './route.js'
import { canAct, describeError, operatorFor, storeKey, storedKey, whoami, type Me } from './session.js'

/** Counters refresh this often while the tab is visible; mesh events refresh at once. */
const SLOW_REFRESH_MS = 10_000

export function App() {
  const [session, setSession] = useState<{ op: Operator; me: Me } | null>(null)
  const [checking, setChecking] = useState(storedKey() !== null)
  const [banner, setBanner] = useState<string | null>(null)

  useEffect(() => {
    const key = storedKey()
    if (key === null) return
    void signIn(key).finally(() => setChecking(false))
  }, [])

  async function signIn(key: string): Promise<void> {
    const op = operatorFor(key)
    try {
      const me = await whoami(op)
      if (me.role === 'agent') {
        setBanner('This is an agent key. The console needs a viewer, operator or admin key.')
        return
      }
      storeKey(key)
      setBanner(null)
      setSession({ op, me })
    } catch (e) {
      storeKey(null)
      setBanner(describeError(e))
    }
  }

  if (checking) return <main aria-busy="true">Signing in…</main>
  if (!session) return <SignIn onKey={signIn} banner={banner} />
  return (
    <Console
      op={session.op}
      me={session.me}
      onSignOut={() => {
        storeKey(null)
        setSession(null)
      }}
    />
  )
}

function SignIn(props: { onKey: (key: string) => Promise<void>; banner: string | null }) {
  const [key, setKey] = useState('')
  const [busy, setBusy] = useState(false)
  return (
    <main class="signin">
      <h1>Chokepoint</h1>
      <p>Sign in with an API key (viewer, operator or admin). It is kept in this tab only.</p>
      {props.banner && (
        <p class="banner error" role="alert">
          {props.banner}
        </p>
      )}
      <form
        onSubmit={(e) => {
          e.preventDefault()
          setBusy(true)
          void props.onKey(key.trim()).finally(() => setBusy(false))
        }}
      >
        <label for="api-key">API key</label>
        <input id="api-key" type="password" autoComplete="off" spellcheck={false} value={key} onInput={(e) => setKey((e.target as HTMLInputElement).value)} required />
        <button type="submit" class="primary" disabled={busy || key.trim() === ''}>
          Sign in
        </button>
      </form>
    </main>
  )
}

function Console(props: { op: Operator; me: Me; onSignOut: () => void }) {
  const route = useRoute()
  const [status, setStatus] = useState<LiveStatus>('connecting')
  const [tick, setTick] = useState(0)
  const [updated, setUpdated] = useState(() => new Date())
  const pending = useRef<ReturnType<typeof setTimeout> | null>(null)

  // One live subscription; a burst of events causes one refresh.
  useEffect(
    () =>
      subscribe(
        props.op,
        () => {
          if (pending.current !== null) return
          pending.current = setTimeout(() => {
            pending.current = null
            setTick((t) => t + 1)
            setUpdated(new Date())
          }, 150)
        },
        setStatus,
      ),
    [props.op],
  )
  // Slow refresh of counters, only while the tab is visible.
  useEffect(() => {
    const timer = setInterval(() => {
      if (document.visibilityState !== 'visible') return
      setTick((t) => t + 1)
      setUpdated(new Date())
    }, SLOW_REFRESH_MS)
    return () => clearInterval(timer)
  }, [])

  const act = canAct(props.me)
  const nav = (href: string, label: string, current: boolean) => (
    <a href={href} aria-current={current ? 'page' : undefined} onClick={(e) => onLinkClick(e, href)}>
      {label}
    </a>
  )
  return (
    <>
      <header class="top">
        <strong class="brand">Chokepoint</strong>
        <nav aria-label="Main">
          {nav('/agents', 'Agents', route.page !== 'audit')}
          {nav('/audit', 'Audit', route.page === 'audit')}
        </nav>
        <span class={`live ${status}`} role="status" aria-live="polite">
          <span class="dot" aria-hidden="true" />
          {status === 'live' ? 'live' : status === 'connecting' ? 'connecting…' : 'reconnecting…'}
        </span>
        <span class="muted">
          updated <time dateTime={updated.toISOString()}>{updated.toLocaleTimeString()}</time>
        </span>
        <span class="whoami">
          {props.me.name ?? props.me.key_id} · <span class="role">{props.me.role}</span>
        </span>
        <button type="button" onClick={props.onSignOut}>
          Sign out
        </button>
      </header>
      {!act && <p class="banner info">Read-only: this {props.me.role} key cannot kill, resume or change policies.</p>}
      {route.page === 'agents' && <AgentsPage op={props.op} route={route} canAct={act} tick={tick} />}
      {route.page === 'agent' && route.id && <AgentPage op={props.op} id={route.id} canAct={act} tick={tick} />}
      {route.page === 'audit' && <AuditPage op={props.op} route={route} tick={tick} />}
    </>
  )
}
