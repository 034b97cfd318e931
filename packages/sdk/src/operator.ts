import { APIClient, type ClientOptions, type RequestOptions } from './core/client.js'
import { Agents } from './resources/agents.js'
import { Audit } from './resources/audit.js'
import { Events } from './resources/events.js'
import { Intents } from './resources/intents.js'
import { Keys } from './resources/keys.js'
import { Policies } from './resources/policies.js'

/** Options of {@link Operator}: the shared client options. */
export type OperatorOptions = ClientOptions

/**
 * The gateway seen by an operator, admin or viewer key: agents (list, kill, resume), policies,
 * intents, keys, the audit log and mesh events. What a call may do depends on the key's role.
 *
 * @example
 * ```ts
 * const operator = new Operator({ baseURL: 'http://127.0.0.1:8420', apiKey: process.env.CHOKEPOINT_ADMIN_KEY })
 * const { key } = await operator.keys.create({ role: 'agent', agent: 'agent://acme/prod/deployer' })
 * const { agents, summary } = await operator.agents.list({ window: 'day' })
 * await operator.agents.kill('agent://acme/prod/deployer', { reason: 'deploy loop' })
 * ```
 */
export class Operator {
  /** The shared request machinery (for routes the SDK does not wrap). */
  readonly client: APIClient
  readonly keys: Keys
  readonly agents: Agents
  readonly intents: Intents
  readonly audit: Audit
  readonly events: Events
  readonly policies: Policies

  constructor(options: OperatorOptions = {}) {
    this.client = new APIClient(options)
    this.keys = new Keys(this.client)
    this.agents = new Agents(this.client)
    this.intents = new Intents(this.client)
    this.audit = new Audit(this.client)
    this.events = new Events(this.client)
    this.policies = new Policies(this.client)
  }

  /** `GET /v1/whoami`: the calling key — id, name, role and (agent keys) the bound agent. */
  whoami(options?: RequestOptions): Promise<WhoamiResponse> {
    return this.client.get('/v1/whoami', undefined, options)
  }

  /** `GET /health`: gateway version and store engine (503 when the store is down). */
  health(options?: RequestOptions): Promise<HealthResponse> {
    return this.client.get('/health', undefined, options)
  }
}

export interface WhoamiResponse {
  ok: true
  key_id: string
  name: string | null
  role: 'admin' | 'operator' | 'viewer' | 'agent'
  /** The agent an agent key is bound to; null for staff keys. */
  agent: string | null
  address_id: string | null
}

export interface HealthResponse {
  ok: true
  version: string
  store: 'sqlite' | 'postgres'
}
