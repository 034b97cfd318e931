import type { Role } from '../../store/store.js'
import { forbidden } from '../errors.js'

/** Who is calling: the authenticated key. */
export interface Principal {
  key_id: string
  role: Role
  /** For agent keys: the one agent the key acts as. */
  address_id: string | null
  address: string | null
}

/** Route-level access, checked before the body is read. */
export type Access =
  | 'public'
  | 'viewer' // viewer, operator, admin
  | 'operator' // operator, admin
  | 'admin'
  | 'agent' // agent keys only
  | 'agent_or_viewer' // any key; agents further limited to their own resources
  | 'sender' // agent, operator, admin (viewers may not send)

const LEVEL: Record<Role, number> = { agent: 0, viewer: 1, operator: 2, admin: 3 }

export function isStaff(principal: Principal, atLeast: Exclude<Role, 'agent'> = 'viewer'): boolean {
  return principal.role !== 'agent' && LEVEL[principal.role] >= LEVEL[atLeast]
}

export function allows(access: Access, principal: Principal): boolean {
  switch (access) {
    case 'public':
    case 'agent_or_viewer':
      return true
    case 'viewer':
    case 'operator':
    case 'admin':
      return isStaff(principal, access)
    case 'agent':
      return principal.role === 'agent'
    case 'sender':
      return principal.role !== 'viewer'
  }
}

export function assertAccess(access: Access, principal: Principal): void {
  if (!allows(access, principal)) {
    throw forbidden(`${principal.role === 'agent' ? 'an' : 'a'} ${principal.role} key may not call this route`)
  }
}

/** Agent keys may only act on their own address; staff keys pass. */
export function assertActsFor(principal: Principal, addressId: string, what: string): void {
  if (principal.role === 'agent' && principal.address_id !== addressId) {
    throw forbidden(`this agent key is bound to ${principal.address}; it may not ${what}`)
  }
}
