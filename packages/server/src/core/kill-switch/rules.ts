import type { AgentRow, InstanceQuarantineRow, Parties } from '../../store/store.js'
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

/**
 * The instance quarantine rule, written once: a quarantined instance is refused like a killed
 * agent (`403 agent_killed`, `details.quarantined: true`) while its siblings keep working. Stores
 * read the quarantine row of the acting instance in the same transaction as the agent rows.
 */
export function assertInstanceLive(agent: AgentRow, quarantine: InstanceQuarantineRow | null): void {
  if (quarantine === null) return
  throw new GatewayError(
    'agent_killed',
    `instance ${quarantine.instance_id} of agent ${agent.address} is quarantined; the gateway refuses its traffic (its sibling instances are not affected)`,
    {
      details: {
        address: agent.address,
        address_id: agent.address_id,
        instance_id: quarantine.instance_id,
        quarantined: true,
        quarantined_at: new Date(quarantine.quarantined_at).toISOString(),
      },
    },
  )
}

/** True for the error of assertInstanceLive (streams end with `instance.quarantined`, not `agent.killed`). */
export function isQuarantineError(error: GatewayError): boolean {
  return error.code === 'agent_killed' && error.details?.['quarantined'] === true
}

/**
 * Accepting an intent: neither the sender nor the recipient may be killed, and a send that
 * names its instance (`x-instance-id`) may not come from a quarantined one.
 */
export function acceptRule(parties: Parties): void {
  assertNotKilled(parties.from)
  assertNotKilled(parties.to)
  assertInstanceLive(parties.from, parties.from_quarantine)
}

/**
 * Delivering to a recipient: the recipient may not be killed. The other half of the rule —
 * a killed sender's never-delivered intents (`delivery_attempt = 0`) are not handed out —
 * is the sender filter in each store's claim query, since it applies per candidate row.
 */
export function deliveryRule(recipient: AgentRow, quarantine: InstanceQuarantineRow | null = null): void {
  assertNotKilled(recipient)
  assertInstanceLive(recipient, quarantine)
}

/** Acknowledging or resolving: the recipient doing it may not be killed, nor its instance quarantined. */
export function settleRule(recipient: AgentRow, quarantine: InstanceQuarantineRow | null = null): void {
  assertNotKilled(recipient)
  assertInstanceLive(recipient, quarantine)
}

/** An egress call (an LLM request through the gateway): the calling agent may not be killed. */
export function egressRule(agent: AgentRow): void {
  assertNotKilled(agent)
}
