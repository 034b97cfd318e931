import type { AgentRow, Parties } from '../../store/store.js'
import { GatewayError } from '../errors.js'

/**
 * The kill rule, written once. Stores call these inside the transaction that accepts,
 * delivers or resolves, on agent rows read in that same transaction (DESIGN §2.1), so a kill
 * that committed first is always seen.
 */
export function assertNotKilled(agent: AgentRow): void {
  if (agent.killed_at !== null) {
    throw new GatewayError('agent_killed', `agent ${agent.address} is killed; the gateway refuses its traffic`, {
      details: { address: agent.address, address_id: agent.address_id },
    })
  }
}

/** Accepting an intent: neither the sender nor the recipient may be killed. */
export function acceptRule(parties: Parties): void {
  assertNotKilled(parties.from)
  assertNotKilled(parties.to)
}

/**
 * Delivering to a recipient: the recipient may not be killed. The other half of the rule —
 * a killed sender's never-delivered intents (`delivery_attempt = 0`) are not handed out —
 * is the sender filter in each store's claim query, since it applies per candidate row.
 */
export function deliveryRule(recipient: AgentRow): void {
  assertNotKilled(recipient)
}

/** Acknowledging or resolving: the recipient doing it may not be killed. */
export function settleRule(recipient: AgentRow): void {
  assertNotKilled(recipient)
}
