/**
 * Key-scope matrix (DESIGN §4, §5, §11 "Routes without a key … Viewer … Operator … Admin …
 * Agent …" and the error precedence "404 → 401 → role 403 → … → resource 404/403").
 *
 * Every route that `GET /openapi.json` lists (method + path) is called as each of eight
 * callers — no key, a well-formed `cp_` key that does not exist, a revoked key, the agent key
 * of ANOTHER agent, the agent key of the agent the route is about, viewer, operator, admin —
 * and the HTTP status is compared with the reviewed table below (`MATRIX`: one row per route,
 * giving its access level; `RULES` gives the statuses per access level, `except` the reviewed
 * exceptions). A route in the document without a row fails the suite naming it, so a new route
 * cannot ship with an unreviewed access level; a row without a route fails it too (stale).
 *
 * Path parameters are filled with real ids (an agent, its address_id, intents, a policy, a key,
 * a webhook …) so that an authorized call reaches the handler and, with a valid body, really
 * executes: authorized cells assert their exact status (200) and `ok: true`, refused cells the
 * exact 401/403 (or the reviewed 404) and the DESIGN §4 error shape. Destructive routes (kill,
 * resume, resolve, revoke, delete) get a fresh target per cell, and a check afterwards that a
 * refused call changed nothing and an allowed one did what it says. SSE routes are read with
 * `wait_seconds=1` where the route takes it and are aborted as soon as the headers arrive.
 *
 * Engine: SQLite only. Authorization happens in the HTTP layer and in core, above the store
 * interface, so the PostgreSQL engine adds nothing here that the store contract suite does not
 * already cover, and the file stays well under a minute.
 */
import { createServer, type Server } from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { api, parseSse, startTestGateway, type TestGateway } from '../harness.js'

// ---------------------------------------------------------------------------------------------
// The callers and the reviewed expectations
// ---------------------------------------------------------------------------------------------

const ROLES = ['none', 'bad_key', 'revoked_key', 'other_agent', 'own_agent', 'viewer', 'operator', 'admin'] as const
type Role = (typeof ROLES)[number]

/** Route access levels, as `x-access` in /openapi.json (core/auth/principal.ts). */
type Access = 'public' | 'viewer' | 'operator' | 'admin' | 'agent' | 'agent_or_viewer' | 'sender'

const OK = 200
const U = 401 // unauthorized: no key, unknown key, revoked key
const F = 403 // forbidden: wrong role, or an agent key acting for another agent

/** Positional: none, bad_key, revoked_key, other_agent, own_agent, viewer, operator, admin. */
function row(...statuses: [number, number, number, number, number, number, number, number]): Record<Role, number> {
  return Object.fromEntries(ROLES.map((role, i) => [role, statuses[i]])) as Record<Role, number>
}

/** DESIGN §11: who may call what, per access level. */
const RULES: Record<Access, Record<Role, number>> = {
  //                     none bad revoked other own viewer operator admin
  public: /*          */ row(OK, OK, OK, OK, OK, OK, OK, OK), // no key needed; a key is not even read
  viewer: /*          */ row(U, U, U, F, F, OK, OK, OK), // GETs, evaluate, audit
  operator: /*        */ row(U, U, U, F, F, F, OK, OK), // kill, resume, register, policy writes
  admin: /*           */ row(U, U, U, F, F, F, F, OK), // keys, webhooks
  agent: /*           */ row(U, U, U, F, OK, F, F, F), // its stream, ack, heartbeat
  agent_or_viewer: /* */ row(U, U, U, F, OK, OK, OK, OK), // reads: staff, or the agent itself
  sender: /*          */ row(U, U, U, F, OK, F, OK, OK), // send / resolve: viewers may not
}

/** What one cell sends: path parameters, query, body, and checks of its effect. */
interface Cell {
  params?: Record<string, string>
  query?: Record<string, string>
  body?: unknown
  headers?: Record<string, string>
  /** The "own agent" key for this cell, when the route is about another agent than `S`. */
  ownKey?: string
  /** Runs after the call: `allowed` is whether the table expects 200. */
  after?: (allowed: boolean, what: string) => Promise<void>
}

interface MatrixRow {
  access: Access
  /** Reviewed exceptions to `RULES[access]`, each with its reason in a comment. */
  except?: Partial<Record<Role, number>>
  /** The 200 answer is not a `{ok: true}` JSON object (Prometheus text, the OpenAPI document). */
  raw?: boolean
  cell: (role: Role) => Promise<Cell> | Cell
}

// Fixtures, filled in beforeAll.
interface Agent {
  address: string
  address_id: string
  key: string
  key_id: string
}
let gw: TestGateway
let hook: Server
let hookUrl: string
const keys = {} as Record<'viewer' | 'operator' | 'admin' | 'revoked' | 'bad', string>
/** S: the agent most routes are about. O: another agent. T: a peer S talks to. P: has policies. */
let S: Agent
let O: Agent
let T: Agent
let P: Agent
/** An intent T → S (reads) and one T → S leased to S (ack). */
let readIntent: string
let leasedIntent: string
let policyId: string
let seq = 0
const unique = (prefix: string): string => `${prefix}-${(seq += 1)}`

/** Calls made by fixtures and checks, with the bootstrap admin key (never a matrix caller). */
const setup = <R = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
  api<R>(gw.url, gw.adminKey, method, path, body, headers)

async function must(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<any> {
  const res = await setup(method, path, body, headers)
  if (res.status !== 200) throw new Error(`fixture ${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`)
  return res.body
}

async function newAgent(name: string): Promise<Agent> {
  const address = `agent://matrix/prod/${name}`
  const body = await must('POST', '/v1/keys', { role: 'agent', agent: address, name: `matrix ${name}` })
  return { address, address_id: body.address_id, key: body.key, key_id: body.key_id }
}

async function sendToS(): Promise<string> {
  const body = await must('POST', '/v1/intents', {
    intent_type: 'matrix.work.v1',
    from_agent: T.address,
    to_agent: S.address,
    payload: { n: (seq += 1) },
  })
  return body.intent_id as string
}

async function agentRow(addressId: string): Promise<any> {
  return (await must('GET', `/v1/mesh/agents/${addressId}`)).agent
}

const RATE_POLICY = { kind: 'rate', direction: 'send', max_per_day: 1_000_000, on_breach: 'block' } as const
const inboxParams = (a: Agent): Record<string, string> => {
  const [org, workspace, name] = a.address.slice('agent://'.length).split('/') as [string, string, string]
  return { org, workspace, name }
}

/**
 * One row per route, keyed "METHOD /path" as in /openapi.json. Reviewing a new route means
 * choosing its access level here (and any exception, with its reason).
 */
const MATRIX: Record<string, MatrixRow> = {
  // --- system (no key) -----------------------------------------------------------------------
  'GET /health': { access: 'public', cell: () => ({}) },
  'GET /metrics': { access: 'public', raw: true, cell: () => ({}) },
  'GET /openapi.json': { access: 'public', raw: true, cell: () => ({}) },
  // Any valid key learns who it is; it is about the caller, so there is no "other agent".
  'GET /v1/whoami': { access: 'agent_or_viewer', except: { other_agent: OK }, cell: () => ({}) },

  // --- egress (agent keys; this gateway has no --egress-config, so an allowed caller reaches
  // the upstream lookup and gets its 404: the access check before it is what is reviewed) ------
  'POST /llm/{upstream}/v1/chat/completions': {
    access: 'agent',
    except: { own_agent: 404, other_agent: 404 },
    cell: () => ({ params: { upstream: 'none' }, body: { model: 'm', messages: [] } }),
  },
  'POST /llm/{upstream}/v1/embeddings': {
    access: 'agent',
    except: { own_agent: 404, other_agent: 404 },
    cell: () => ({ params: { upstream: 'none' }, body: { model: 'm', input: 'x' } }),
  },
  'POST /llm/{upstream}/v1/responses': {
    access: 'agent',
    except: { own_agent: 404, other_agent: 404 },
    cell: () => ({ params: { upstream: 'none' }, body: { model: 'm', input: 'x' } }),
  },
  'POST /llm/{upstream}/v1/messages': {
    access: 'agent',
    except: { own_agent: 404, other_agent: 404 },
    cell: () => ({ params: { upstream: 'none' }, body: { model: 'm', max_tokens: 1, messages: [] } }),
  },
  'GET /llm/{upstream}/v1/models': { access: 'agent', except: { own_agent: 404, other_agent: 404 }, cell: () => ({ params: { upstream: 'none' } }) },
  // HTTP-tool egress: one row per method of the catch-all `/egress/{upstream}/{path…}`. HEAD
  // answers carry no body: only the status and x-request-id are compared.
  ...Object.fromEntries(
    (['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] as const).map((method): [string, MatrixRow] => [
      `${method} /egress/{upstream}/{path}`,
      {
        access: 'agent',
        except: { own_agent: 404, other_agent: 404 },
        cell: () => ({ params: { upstream: 'none', path: 'v2/services' }, ...(method === 'POST' || method === 'PUT' || method === 'PATCH' ? { body: { x: 1 } } : {}) }),
      },
    ]),
  ),
  // MCP (Streamable HTTP) through the gateway: the same access as the LLM routes.
  'POST /mcp/{upstream}': {
    access: 'agent',
    except: { own_agent: 404, other_agent: 404 },
    cell: () => ({ params: { upstream: 'none' }, body: { jsonrpc: '2.0', id: 1, method: 'tools/list' } }),
  },
  'GET /mcp/{upstream}': { access: 'agent', except: { own_agent: 404, other_agent: 404 }, cell: () => ({ params: { upstream: 'none' } }) },
  'DELETE /mcp/{upstream}': { access: 'agent', except: { own_agent: 404, other_agent: 404 }, cell: () => ({ params: { upstream: 'none' } }) },
  // Without ?agent= an agent key lists its own calls, so there is no "other agent" here.
  'GET /v1/egress/calls': { access: 'agent_or_viewer', except: { other_agent: OK }, cell: () => ({}) },

  // --- keys (admin) --------------------------------------------------------------------------
  'POST /v1/keys': {
    access: 'admin',
    // S asking for another key for itself: still admin-only.
    cell: () => ({ body: { role: 'agent', agent: S.address, name: unique('matrix-extra') } }),
  },
  'GET /v1/keys': { access: 'admin', cell: () => ({}) },
  'DELETE /v1/keys/{key_id}': {
    access: 'admin',
    cell: async () => {
      // A fresh key of S per cell; its "own agent" caller is that very key (revoking itself).
      const target = await must('POST', '/v1/keys', { role: 'agent', agent: S.address, name: unique('matrix-revoke') })
      return {
        params: { key_id: target.key_id },
        ownKey: target.key,
        after: async (allowed, what) => {
          const list = await must('GET', '/v1/keys')
          const k = (list.keys as any[]).find((x) => x.key_id === target.key_id)
          expect.soft(k, `${what}: the key is still listed`).toBeDefined()
          if (!allowed) expect.soft(k?.revoked_at ?? null, `${what}: a refused revoke must not revoke`).toBeNull()
          else expect.soft(k?.revoked_at, `${what}: the key is revoked`).toEqual(expect.any(String))
        },
      }
    },
  },

  // --- intents -------------------------------------------------------------------------------
  'POST /v1/intents': {
    access: 'sender',
    // from_agent S: S's key may send as itself; O's key may not send as S (act as another agent).
    cell: () => ({
      body: { intent_type: 'matrix.send.v1', from_agent: S.address, to_agent: T.address, payload: { n: (seq += 1) } },
    }),
  },
  'GET /v1/intents': {
    access: 'agent_or_viewer',
    // O's key listing S's intents → 403 (assertActsFor).
    cell: () => ({ query: { agent: S.address } }),
  },
  'GET /v1/intents/{intent_id}': {
    access: 'agent_or_viewer',
    // Another agent's intent answers like a missing one (intent-service.get), so an agent key
    // cannot probe intent ids: 404 not_found, no content (DESIGN §11 precedence "resource 404/403").
    except: { other_agent: 404 },
    cell: () => ({ params: { intent_id: readIntent } }),
  },
  'GET /v1/intents/{intent_id}/events': {
    access: 'agent_or_viewer',
    except: { other_agent: 404 }, // as GET /v1/intents/{intent_id}
    cell: () => ({ params: { intent_id: readIntent } }),
  },
  'GET /v1/intents/{intent_id}/events/stream': {
    access: 'agent_or_viewer',
    except: { other_agent: 404 }, // as GET /v1/intents/{intent_id}, before the stream opens
    cell: () => ({ params: { intent_id: readIntent } }),
  },
  'POST /v1/intents/{intent_id}/ack': {
    access: 'agent',
    // Leased to S; ack may be repeated (keep-alive), so one shared intent serves every cell.
    cell: () => ({ params: { intent_id: leasedIntent }, body: {} }),
  },
  'POST /v1/intents/{intent_id}/resolve': {
    access: 'sender',
    cell: async (role) => {
      // A fresh intent T → S per cell (a resolve is terminal). Agents complete; operators and
      // admins may only cancel (DESIGN §11), so staff send CANCELED.
      const intentId = await sendToS()
      const status = role === 'viewer' || role === 'operator' || role === 'admin' ? 'CANCELED' : 'COMPLETED'
      return {
        params: { intent_id: intentId },
        body: { status, reason: 'key-scope matrix' },
        after: async (allowed, what) => {
          const intent = (await must('GET', `/v1/intents/${intentId}`)).intent
          expect.soft(intent.status, `${what}: status afterwards`).toBe(allowed ? status : 'SUBMITTED')
        },
      }
    },
  },

  // --- inbox stream (agent) ------------------------------------------------------------------
  'GET /v1/agents/{org}/{workspace}/{name}/intents/stream': {
    access: 'agent',
    // Staff keys may not lease an agent's work; O's key may not read S's inbox (DESIGN §4).
    cell: () => ({
      params: inboxParams(S),
      query: { lease_seconds: '1' },
      headers: { 'x-instance-id': 'matrix-stream' },
    }),
  },

  // --- mesh ----------------------------------------------------------------------------------
  'POST /v1/mesh/agents': {
    access: 'operator',
    cell: () => {
      const address = `agent://matrix/prod/${unique('registered')}`
      return {
        body: { address, display_name: 'matrix' },
        after: async (allowed, what) => {
          const res = await setup('GET', `/v1/mesh/agents/${encodeURIComponent(address)}`)
          expect.soft(res.status, `${what}: the agent is ${allowed ? '' : 'not '}registered`).toBe(allowed ? 200 : 404)
        },
      }
    },
  },
  'GET /v1/mesh/agents': { access: 'viewer', cell: () => ({}) },
  'GET /v1/mesh/agents/{address_id}': {
    access: 'viewer', // "who: viewer" (§5c); an agent key reads nothing else, not even its own row
    cell: () => ({ params: { address_id: S.address_id } }),
  },
  'POST /v1/mesh/heartbeat': {
    access: 'agent',
    // A heartbeat is always for the key's own agent (nothing in the request names another),
    // so O's key beats for O: 200, and S is untouched.
    except: { other_agent: OK },
    cell: () => ({ body: { metrics: { intents_total: 1, intents_succeeded: 1 } }, headers: { 'x-instance-id': 'matrix-hb' } }),
  },
  'POST /v1/mesh/agents/{address_id}/kill': {
    access: 'operator',
    cell: async () => {
      // A fresh victim per cell; its own key is the "own agent" caller (an agent cannot kill, even itself).
      const victim = await newAgent(unique('kill'))
      return {
        params: { address_id: victim.address_id },
        body: { reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const agent = await agentRow(victim.address_id)
          expect.soft(agent.health_status === 'killed', `${what}: killed afterwards`).toBe(allowed)
        },
      }
    },
  },
  'POST /v1/mesh/agents/{address_id}/resume': {
    access: 'operator',
    cell: async () => {
      // A fresh killed agent per cell; its own key is the "own agent" caller (a killed agent
      // cannot resume itself: the role 403 comes before agent_killed).
      const victim = await newAgent(unique('resume'))
      await must('POST', `/v1/mesh/agents/${victim.address_id}/kill`, { reason: 'matrix fixture' })
      return {
        params: { address_id: victim.address_id },
        body: { reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const agent = await agentRow(victim.address_id)
          expect.soft(agent.health_status === 'killed', `${what}: still killed afterwards`).toBe(!allowed)
        },
      }
    },
  },
  'POST /v1/mesh/agents/{address_id}/instances/{instance_id}/kill': {
    access: 'operator',
    cell: async () => {
      // A fresh agent per cell; its own key is the "own agent" caller (an agent cannot
      // quarantine an instance, even its own). The instance was never seen (allowed).
      const victim = await newAgent(unique('quarantine'))
      return {
        params: { address_id: victim.address_id, instance_id: 'pod-1' },
        body: { reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const list = (await must('GET', `/v1/mesh/agents/${victim.address_id}/instances`)).instances as any[]
          const pod = list.find((i) => i.instance_id === 'pod-1')
          expect.soft(pod?.quarantined === true, `${what}: quarantined afterwards`).toBe(allowed)
        },
      }
    },
  },
  'POST /v1/mesh/agents/{address_id}/instances/{instance_id}/resume': {
    access: 'operator',
    cell: async () => {
      const victim = await newAgent(unique('unquarantine'))
      await must('POST', `/v1/mesh/agents/${victim.address_id}/instances/pod-1/kill`, { reason: 'matrix fixture' })
      return {
        params: { address_id: victim.address_id, instance_id: 'pod-1' },
        body: { reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const list = (await must('GET', `/v1/mesh/agents/${victim.address_id}/instances`)).instances as any[]
          const pod = list.find((i) => i.instance_id === 'pod-1')
          expect.soft(pod?.quarantined === true, `${what}: still quarantined afterwards`).toBe(!allowed)
        },
      }
    },
  },
  'GET /v1/mesh/agents/{address_id}/instances': {
    access: 'viewer', // like GET /v1/mesh/agents/{address_id}
    cell: () => ({ params: { address_id: S.address_id } }),
  },
  'GET /v1/mesh/agents/{address_id}/cost': {
    access: 'viewer', // like GET /v1/mesh/agents/{address_id}: operator views read it, the agent itself does not
    cell: () => ({ params: { address_id: S.address_id }, query: { hours: '2' } }),
  },
  'PATCH /v1/mesh/agents/{address_id}': {
    access: 'operator',
    cell: async () => {
      const agent = await newAgent(unique('patch'))
      return {
        params: { address_id: agent.address_id },
        body: { labels: { matrix: 'patched' } },
        ownKey: agent.key,
        after: async (allowed, what) => {
          const row = await agentRow(agent.address_id)
          expect.soft(row.labels.matrix === 'patched', `${what}: labelled afterwards`).toBe(allowed)
        },
      }
    },
  },
  'POST /v1/mesh/kill': {
    access: 'operator',
    cell: async () => {
      const victim = await newAgent(unique('fleetkill'))
      return {
        body: { selector: { address: victim.address }, reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const agent = await agentRow(victim.address_id)
          expect.soft(agent.health_status === 'killed', `${what}: killed afterwards`).toBe(allowed)
        },
      }
    },
  },
  'POST /v1/mesh/resume': {
    access: 'operator',
    cell: async () => {
      const victim = await newAgent(unique('fleetresume'))
      await must('POST', `/v1/mesh/agents/${victim.address_id}/kill`, { reason: 'matrix fixture' })
      return {
        body: { selector: { address: victim.address }, reason: 'key-scope matrix' },
        ownKey: victim.key,
        after: async (allowed, what) => {
          const agent = await agentRow(victim.address_id)
          expect.soft(agent.health_status === 'killed', `${what}: still killed afterwards`).toBe(!allowed)
        },
      }
    },
  },
  'GET /v1/mesh/fleet-kills': { access: 'viewer', cell: () => ({}) },
  'GET /v1/mesh/events': { access: 'viewer', cell: () => ({}) },
  'GET /v1/mesh/events/stream': { access: 'viewer', cell: () => ({}) },

  // --- audit (viewer) ------------------------------------------------------------------------
  'GET /v1/audit/events': { access: 'viewer', cell: () => ({}) },
  'GET /v1/audit/verify': { access: 'viewer', cell: () => ({}) },

  // --- policies ------------------------------------------------------------------------------
  'GET /v1/mesh/agents/{address_id}/policies': {
    access: 'viewer',
    cell: () => ({ params: { address_id: P.address_id }, ownKey: P.key }),
  },
  'POST /v1/mesh/agents/{address_id}/policies': {
    access: 'operator',
    // A generous rate policy on P (nothing else sends as P): harmless to later rows.
    cell: () => ({ params: { address_id: P.address_id }, body: RATE_POLICY, ownKey: P.key }),
  },
  'GET /v1/policies/{policy_id}': {
    access: 'viewer',
    cell: () => ({ params: { policy_id: policyId }, ownKey: P.key }),
  },
  'PUT /v1/policies/{policy_id}': {
    access: 'operator',
    cell: async () => {
      const created = (await must('POST', `/v1/mesh/agents/${P.address_id}/policies`, RATE_POLICY)).policy
      return {
        params: { policy_id: created.policy_id },
        headers: { 'if-match': String(created.version) },
        body: { ...RATE_POLICY, max_per_day: 999_999 },
        ownKey: P.key,
        after: async (allowed, what) => {
          const policy = (await must('GET', `/v1/policies/${created.policy_id}`)).policy
          expect.soft(policy.version, `${what}: version afterwards`).toBe(allowed ? created.version + 1 : created.version)
        },
      }
    },
  },
  'DELETE /v1/policies/{policy_id}': {
    access: 'operator',
    cell: async () => {
      const created = (await must('POST', `/v1/mesh/agents/${P.address_id}/policies`, RATE_POLICY)).policy
      return {
        params: { policy_id: created.policy_id },
        ownKey: P.key,
        after: async (allowed, what) => {
          const res = await setup('GET', `/v1/policies/${created.policy_id}`)
          expect.soft(res.status, `${what}: the policy ${allowed ? 'is gone' : 'is still there'}`).toBe(allowed ? 404 : 200)
        },
      }
    },
  },
  'GET /v1/policies/defaults': { access: 'viewer', cell: () => ({}) },
  'PUT /v1/policies/defaults': {
    access: 'operator',
    // The empty set: replacing none with none changes nothing for the other cells.
    cell: () => ({ body: { policies: [] } }),
  },
  'POST /v1/policies/evaluate': {
    access: 'viewer',
    cell: () => ({ body: { from_agent: S.address, to_agent: T.address, intent_type: 'matrix.send.v1' } }),
  },

  // --- alerts (admin) ------------------------------------------------------------------------
  'POST /v1/alerts/webhooks': {
    access: 'admin',
    // Only rate.breach, which nothing here triggers: kills in this file send no alerts to it.
    cell: () => ({ body: { url: hookUrl, event_types: ['rate.breach'] } }),
  },
  'GET /v1/alerts/webhooks': { access: 'admin', cell: () => ({}) },
  'DELETE /v1/alerts/webhooks/{webhook_id}': {
    access: 'admin',
    cell: async () => {
      const created = (await must('POST', '/v1/alerts/webhooks', { url: hookUrl, event_types: ['rate.breach'] })).webhook
      return {
        params: { webhook_id: created.webhook_id },
        after: async (allowed, what) => {
          const list = await must('GET', '/v1/alerts/webhooks')
          const present = (list.webhooks as any[]).some((w) => w.webhook_id === created.webhook_id)
          expect.soft(present, `${what}: the webhook is ${allowed ? 'gone' : 'still there'}`).toBe(!allowed)
        },
      }
    },
  },
  'GET /v1/alerts/deliveries': { access: 'admin', cell: () => ({}) },
}

// ---------------------------------------------------------------------------------------------
// The document and the calls
// ---------------------------------------------------------------------------------------------

interface DocRoute {
  key: string
  method: string
  path: string
  access: string | undefined
  pathParams: string[]
  queryParams: string[]
  stream: boolean
}

let doc: DocRoute[] = []

async function readOpenApi(): Promise<DocRoute[]> {
  const res = await fetch(`${gw.url}/openapi.json`)
  if (res.status !== 200) throw new Error(`/openapi.json answered ${res.status}`)
  const spec = (await res.json()) as { paths: Record<string, Record<string, any>> }
  const out: DocRoute[] = []
  for (const [path, operations] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const params = (op.parameters ?? []) as { name: string; in: string }[]
      out.push({
        key: `${method.toUpperCase()} ${path}`,
        method: method.toUpperCase(),
        path,
        access: op['x-access'],
        pathParams: params.filter((p) => p.in === 'path').map((p) => p.name),
        queryParams: params.filter((p) => p.in === 'query').map((p) => p.name),
        stream: op.responses?.['200']?.content?.['text/event-stream'] !== undefined,
      })
    }
  }
  return out
}

function keyFor(role: Role, cell: Cell): string | null {
  switch (role) {
    case 'none':
      return null
    case 'bad_key':
      return keys.bad
    case 'revoked_key':
      return keys.revoked
    case 'other_agent':
      return O.key
    case 'own_agent':
      return cell.ownKey ?? S.key
    default:
      return keys[role]
  }
}

/** The URL of a cell, built from the document's path template and its path parameters. */
function urlOf(route: DocRoute, cell: Cell): string {
  let path = route.path
  for (const name of route.pathParams) {
    const value = cell.params?.[name]
    if (value === undefined) throw new Error(`${route.key}: the matrix row gives no value for path parameter {${name}}`)
    path = path.replace(`{${name}}`, encodeURIComponent(value))
  }
  const query = new URLSearchParams(cell.query)
  // Windowed SSE where the route supports it, so even an unaborted stream ends by itself.
  if (route.stream && route.queryParams.includes('wait_seconds') && !query.has('wait_seconds')) query.set('wait_seconds', '1')
  const qs = query.toString()
  return `${gw.url}${path}${qs === '' ? '' : `?${qs}`}`
}

interface Answer {
  status: number
  headers: Headers
  body: any
}

/** One call; an SSE 200 is aborted as soon as its headers are in. */
async function call(route: DocRoute, cell: Cell, key: string | null): Promise<Answer> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), 10_000)
  try {
    const res = await fetch(urlOf(route, cell), {
      method: route.method,
      headers: {
        ...(key === null ? {} : { 'x-api-key': key }),
        ...(cell.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...cell.headers,
      },
      ...(cell.body === undefined ? {} : { body: JSON.stringify(cell.body) }),
      signal: controller.signal,
    })
    if (res.status === 200 && (res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      controller.abort()
      return { status: res.status, headers: res.headers, body: null }
    }
    const text = await res.text()
    let body: unknown = text
    try {
      body = JSON.parse(text)
    } catch {
      // Prometheus text
    }
    return { status: res.status, headers: res.headers, body }
  } finally {
    clearTimeout(timer)
  }
}

const ERROR_CODE: Record<number, string> = { 401: 'unauthorized', 403: 'forbidden', 404: 'not_found' }

function expectAnswer(route: DocRoute, row: MatrixRow, role: Role, expected: number, res: Answer): void {
  const what = `${route.key} as ${role}`
  expect.soft(res.status, `${what}: status (body ${JSON.stringify(res.body).slice(0, 300)})`).toBe(expected)
  if (res.status !== expected) return
  expect.soft(res.headers.get('x-request-id'), `${what}: x-request-id`).toMatch(/^req_/)
  if (route.method === 'HEAD') return // no body to read
  if (expected !== 200) {
    expect.soft(res.body, `${what}: DESIGN §4 error shape`).toMatchObject({
      ok: false,
      error: { code: ERROR_CODE[expected], message: expect.any(String), request_id: res.headers.get('x-request-id') },
    })
    return
  }
  if (route.stream) {
    expect.soft(res.headers.get('content-type'), `${what}: an event stream`).toMatch(/^text\/event-stream/)
  } else if (!row.raw) {
    expect.soft(res.body?.ok, `${what}: {ok: true}`).toBe(true)
  }
}

// ---------------------------------------------------------------------------------------------

describe('key-scope matrix over /openapi.json (sqlite)', () => {
  beforeAll(async () => {
    hook = createServer((req, res) => {
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve))
    const port = (hook.address() as { port: number }).port
    hookUrl = `http://127.0.0.1:${port}/matrix-hook`

    gw = await startTestGateway({ engine: 'sqlite' })
    for (const role of ['viewer', 'operator', 'admin'] as const) {
      keys[role] = (await must('POST', '/v1/keys', { role, name: `matrix ${role}` })).key
    }
    // A revoked admin key: the strongest role, so a 401 here means revocation, not role.
    // Used once before the revoke, so a cached lookup has to be dropped too.
    const revoked = await must('POST', '/v1/keys', { role: 'admin', name: 'matrix revoked' })
    const used = await api(gw.url, revoked.key, 'GET', '/v1/keys')
    if (used.status !== 200) throw new Error(`fixture: the admin key to revoke answered ${used.status}`)
    await must('DELETE', `/v1/keys/${revoked.key_id}`)
    keys.revoked = revoked.key
    // Well-formed (cp_ + 43 base62) and stored nowhere.
    keys.bad = `cp_${'Zz9'.repeat(15).slice(0, 43)}`

    S = await newAgent('subject')
    O = await newAgent('other')
    T = await newAgent('peer')
    P = await newAgent('policied')
    policyId = (await must('POST', `/v1/mesh/agents/${P.address_id}/policies`, RATE_POLICY)).policy.policy_id

    readIntent = await sendToS()
    leasedIntent = await sendToS()
    // Lease both to S (instance matrix-ack) for an hour, so the ack row acks a delivered intent.
    const inbox = await fetch(`${gw.url}/v1/agents/matrix/prod/subject/intents/stream?wait_seconds=5&lease_seconds=3600`, {
      headers: { 'x-api-key': S.key, 'x-instance-id': 'matrix-ack' },
    })
    const frames = parseSse(await inbox.text())
    const leased = frames.filter((f) => f.event === 'intent.delivered').map((f) => f.data.intent_id)
    if (!leased.includes(leasedIntent)) throw new Error(`fixture: ${leasedIntent} not leased (${JSON.stringify(frames)})`)

    doc = await readOpenApi()
  }, 30_000)

  afterAll(async () => {
    await gw?.close()
    await new Promise<void>((resolve) => (hook ? hook.close(() => resolve()) : resolve()))
  })

  it('every route in /openapi.json has a reviewed row in the matrix', () => {
    expect(doc.length).toBeGreaterThan(0)
    const missing = doc.filter((r) => !(r.key in MATRIX)).map((r) => `${r.key} (x-access: ${r.access})`)
    expect(
      missing,
      `routes in /openapi.json with no row in MATRIX (key-scope-matrix.test.ts): review who may call each and add it: ${missing.join('; ')}`,
    ).toEqual([])
  })

  it('no stale rows: every row in the matrix is a route in /openapi.json', () => {
    const listed = new Set(doc.map((r) => r.key))
    const stale = Object.keys(MATRIX).filter((key) => !listed.has(key))
    expect(stale, `rows in MATRIX for routes /openapi.json does not list (removed or renamed?): ${stale.join('; ')}`).toEqual([])
  })

  it("each row's access level is the route's x-access in /openapi.json", () => {
    const differ = doc
      .filter((r) => MATRIX[r.key] !== undefined && MATRIX[r.key]!.access !== r.access)
      .map((r) => `${r.key}: the matrix says ${MATRIX[r.key]!.access}, /openapi.json says ${r.access}`)
    expect(differ, differ.join('; ')).toEqual([])
  })

  it('every route × every caller answers the reviewed status', async () => {
    let cells = 0
    const started = performance.now()
    for (const route of doc) {
      const row = MATRIX[route.key]
      if (!row) continue // reported by the first test
      const expected = { ...RULES[row.access], ...row.except }
      for (const role of ROLES) {
        const what = `${route.key} as ${role}`
        try {
          const cell = await row.cell(role)
          const res = await call(route, cell, keyFor(role, cell))
          expectAnswer(route, row, role, expected[role], res)
          await cell.after?.(expected[role] === 200, what)
        } catch (error) {
          expect.soft(String(error), `${what}: threw`).toBe('')
        }
        cells += 1
      }
    }
    const routes = doc.filter((r) => MATRIX[r.key] !== undefined).length
    expect(cells).toBe(routes * ROLES.length)
    console.log(
      `key-scope matrix: ${routes} routes × ${ROLES.length} callers = ${cells} cells in ${Math.round(performance.now() - started)} ms`,
    )
    // The refused calls above wrote auth.denied entries; the chain must still verify.
    const verify = await must('GET', '/v1/audit/verify')
    expect(verify).toMatchObject({ valid: true, first_broken_seq: null })
  }, 60_000)
})
