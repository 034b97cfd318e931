/**
 * `@chokepoint/sdk`: a zero-dependency client for the Chokepoint gateway.
 * `Agent` for agents (send, listen, ack, resolve, heartbeat, onKilled); `Operator` for
 * operators (agents, kill/resume, policies, intents, keys, audit, events).
 */
export { Agent } from './agent.js'
export type {
  AgentOptions,
  AgentSendParams,
  HeartbeatMetrics,
  HeartbeatParams,
  HeartbeatResponse,
  KilledEvent,
  MetricSample,
  StartHeartbeatOptions,
} from './agent.js'
export type { ListenOptions, ReconnectOptions } from './inbox.js'
export { Operator } from './operator.js'
export type { HealthResponse, OperatorOptions, WhoamiResponse } from './operator.js'
export { APIClient, DEFAULT_BASE_URL } from './core/client.js'
export type { ClientOptions, Fetch, RequestOptions } from './core/client.js'
export {
  APIConnectionError,
  APIConnectionTimeoutError,
  APIError,
  APIUserAbortError,
  AgentKilledError,
  AuthenticationError,
  BadRequestError,
  ChokepointError,
  ConflictError,
  InternalServerError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RateLimitError,
  UnprocessableEntityError,
} from './core/errors.js'
export type { ErrorObject } from './core/errors.js'
export { SSEDecoder, iterSSE } from './core/sse.js'
export type { SSEMessage } from './core/sse.js'
export type * from './types.js'
export type {
  AgentCostHour,
  AgentCostParams,
  AgentCostResponse,
  AgentKillParams,
  AgentKillResponse,
  AgentListParams,
  AgentListResponse,
  AgentSort,
  AgentRegisterParams,
  AgentRegisterResponse,
  AgentResumeParams,
  AgentResumeResponse,
  AgentInstancesResponse,
  InstanceControlParams,
  InstanceKillResponse,
  InstanceResumeResponse,
  AgentRetrieveResponse,
  AgentUpdateParams,
  Agents,
  FleetAgentRef,
  FleetKill,
  FleetKillListResponse,
  FleetKillParams,
  FleetKillResponse,
  FleetResumeParams,
  FleetResumeResponse,
  FleetSelector,
} from './resources/agents.js'
export type { Audit, AuditListParams, AuditListResponse, AuditVerifyResponse } from './resources/audit.js'
export type { EventListParams, EventListResponse, EventStreamParams, Events } from './resources/events.js'
export type {
  IntentCancelParams,
  IntentListParams,
  IntentListResponse,
  Intents,
  OperatorSendParams,
  SendRequestOptions,
} from './resources/intents.js'
export type { KeyCreateParams, KeyCreateResponse, KeyListResponse, KeyRevokeResponse, Keys } from './resources/keys.js'
export type {
  DefaultPoliciesReplaceResponse,
  DefaultPoliciesResponse,
  MonitoredDecision,
  Policies,
  PolicyDeleteResponse,
  PolicyEvaluateParams,
  PolicyEvaluateResponse,
  PolicyListResponse,
  PolicyResponse,
} from './resources/policies.js'
