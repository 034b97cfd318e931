import { useEffect, useState } from 'preact/hooks'

/** The console's state lives in the URL: reload, Back and shared links show the same view. */
export interface Route {
  page: 'agents' | 'agent' | 'audit'
  /** The agent of the agent page (`addr_…`). */
  id: string | null
  params: URLSearchParams
}

export function parseRoute(loc: Location = location): Route {
  const params = new URLSearchParams(loc.search)
  const parts = loc.pathname.split('/').filter(Boolean)
  if (parts[0] === 'audit') return { page: 'audit', id: null, params }
  if (parts[0] === 'agents' && parts[1]) return { page: 'agent', id: decodeURIComponent(parts[1]), params }
  return { page: 'agents', id: null, params }
}

const listeners = new Set<() => void>()

/** Goes to `href` (path + query) as a new history entry, or in place with `replace`. */
export function navigate(href: string, replace = false): void {
  if (href === location.pathname + location.search) return
  if (replace) history.replaceState(null, '', href)
  else history.pushState(null, '', href)
  for (const l of listeners) l()
}

/** `base` with the query changed: empty values are dropped, so URLs stay short. */
export function withParams(base: string, current: URLSearchParams, changes: Record<string, string | null>): string {
  const next = new URLSearchParams(current)
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === '') next.delete(k)
    else next.set(k, v)
  }
  const q = next.toString()
  return q ? `${base}?${q}` : base
}

export function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute)
  useEffect(() => {
    const update = (): void => setRoute(parseRoute())
    listeners.add(update)
    addEventListener('popstate', update)
    return () => {
      listeners.delete(update)
      removeEventListener('popstate', update)
    }
  }, [])
  return route
}

/** A same-origin link that navigates without a page load (ctrl/cmd-click still opens a tab). */
export function onLinkClick(event: MouseEvent, href: string): void {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return
  event.preventDefault()
  navigate(href)
}
