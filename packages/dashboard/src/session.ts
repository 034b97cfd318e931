import { Operator, type APIError } from '@chokepoint/sdk'

/** What `GET /v1/whoami` says about the signed-in key. */
export interface Me {
  key_id: string
  name: string | null
  role: 'admin' | 'operator' | 'viewer' | 'agent'
  agent: string | null
}

const STORAGE = 'chokepoint.key'

/** The key lives in sessionStorage: gone when the tab closes, never in a cookie or the URL. */
export function storedKey(): string | null {
  try {
    return sessionStorage.getItem(STORAGE)
  } catch {
    return null
  }
}

export function storeKey(key: string | null): void {
  try {
    if (key === null) sessionStorage.removeItem(STORAGE)
    else sessionStorage.setItem(STORAGE, key)
  } catch {
    // Storage disabled: the session lasts as long as the page.
  }
}

/** A client for the gateway that served this page, sending the key as `x-api-key`. */
export function operatorFor(key: string): Operator {
  return new Operator({ baseURL: location.origin, apiKey: key, maxRetries: 0, timeout: 15_000 })
}

export async function whoami(op: Operator): Promise<Me> {
  return op.whoami()
}

export const canAct = (me: Me | null): boolean => me !== null && (me.role === 'operator' || me.role === 'admin')

/** A one-line message for an API failure, with the gateway's code. */
export function describeError(error: unknown): string {
  const e = error as Partial<APIError> & { message?: string }
  if (typeof e?.status === 'number') {
    if (e.status === 401) return 'This key was not accepted (401 unauthorized): it is unknown or revoked. Sign in again.'
    if (e.status === 403 && e.code !== 'agent_killed') return `Not allowed for this key (403 ${e.code ?? 'forbidden'}): ${e.message ?? ''}`
    return `${e.message ?? 'request failed'} (${e.status} ${e.code ?? ''})`.trim()
  }
  return `The gateway cannot be reached: ${e?.message ?? String(error)}`
}
