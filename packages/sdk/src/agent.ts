import { APIClient, type ClientOptions, type RequestOptions } from './core/client.js'
import { AgentKilledError, ChokepointError } from './core/errors.js'
import { listenInbox, type ListenOptions } from './inbox.js'
import { addressSegments } from './internal/address.js'
import { path } from './internal/path.js'
import { linkAbort, unref } from './internal/timers.js'
import { uuid4 } from './internal/uuid.js'
import type {
  Delivery,
  HealthStatus,
  IntentCreateParams,
  IntentCreateResponse,
  IntentEventsParams,
  IntentEventsResponse,
  IntentResolveParams,
  IntentResolveResponse,
  IntentResponse,
} from './types.js'

/** Options of {@link Agent}. */
export interface AgentOptions extends ClientOptions {
  /**
   * This agent's address, `agent://org/workspace/name` (the one its key is bound to).
   * Required by `listen()`: the gateway has no route yet that tells a key its address.
   * A heartbeat answer also fills it in.
   */
  address?: string | undefined
  /**
   * This instance's id (`x-instance-id`, 1–128 printable ASCII), e.g. the pod name. Instances
   * compete for deliveries and a reconnect resumes only this instance's leases, so give each
   * replica its own. Without it the gateway uses `"default"`, shared by every such client.
   */
  instanceId?: string | undefined
}

/** Parameters of {@link Agent.send}. */
export interface AgentSendParams extends IntentCreateParams {
  /**
   * Makes the send safe to repeat: same key + same body → the original intent; different body
   * → 409. Default: a random UUID per call, which lets the SDK retry it safely.
   */
  idempotencyKey?: string | undefined
}

/** Heartbeat metrics: deltas since the previous beat. */
export interface HeartbeatMetrics {
  intents_total?: number | null | undefined
  intents_succeeded?: number | null | undefined
  intents_failed?: number | null | undefined
  avg_latency_ms?: number | null | undefined
  cost_usd?: number | null | undefined
}

export interface HeartbeatParams {
  metrics?: HeartbeatMetrics | undefined
}

/** `POST /v1/mesh/heartbeat` answer; `health_status: "killed"` when the agent is killed. */
export interface HeartbeatResponse {
  ok: true
  address_id: string
  address: string
  instance_id: string
  health_status: HealthStatus
  /** When to beat next, in seconds. */
  next_heartbeat_s: number
}

export interface StartHeartbeatOptions {
  /** Interval in ms. Default: the gateway's `next_heartbeat_s`, else 30 s. */
  intervalMs?: number | undefined
  /** Called before each beat for the metrics to report (deltas since the previous call). */
  metrics?: (() => HeartbeatMetrics | undefined) | undefined
  /** Called with the error of a failed beat; beats continue. */
  onError?: ((error: unknown) => void) | undefined
  /** Stop beating once the gateway says the agent is killed (default: keep beating, so a resume is seen). */
  stopOnKill?: boolean | undefined
}

/** One unit of work for {@link Agent.reportMetric}. */
export interface MetricSample {
  /** Whether the work succeeded (counts toward `intents_succeeded` or `intents_failed`). */
  success: boolean
  latencyMs?: number | undefined
  costUsd?: number | undefined
}

/** How the SDK learned that the agent was killed. */
export interface KilledEvent {
  /** `stream`: the `agent.killed` frame or a refused reconnect; `request`: a 403 on a call; `heartbeat`: `health_status: "killed"`. */
  source: 'stream' | 'request' | 'heartbeat'
  message: string
  requestId: string | undefined
  /** The error the gateway answered with (absent for heartbeats, which succeed). */
  error?: AgentKilledError
}

/**
 * An agent of the mesh: sends intents, listens to its inbox, acknowledges and resolves what it
 * receives, heartbeats, and learns when an operator kills it.
 *
 * @example
 * ```ts
 * const agent = new Agent({ apiKey: process.env.AGENT_KEY, address: 'agent://acme/prod/deployer', instanceId: 'pod-1' })
 * agent.onKilled(() => process.exit(0))
 * for await (const delivery of agent.listen()) {
 *   await agent.ack(delivery.intent_id)
 *   const result = await deploy(delivery.payload)
 *   await agent.resolve(delivery.intent_id, { status: 'COMPLETED', result })
 * }
 * ```
 */
export class Agent {
  /** The shared request machinery (for routes the SDK does not wrap). */
  readonly client: APIClient
  /** The `x-instance-id` sent with every call, if set. */
  readonly instanceId: string | undefined
  #address: string | undefined
  #killed = false
  readonly #killedCallbacks = new Set<(event: KilledEvent) => void>()
  readonly #listens = new Set<AbortController>()
  #heartbeat: { timer: ReturnType<typeof setTimeout> | undefined } | undefined

  constructor(options: AgentOptions = {}) {
    const { address, instanceId, ...clientOptions } = options
    if (address !== undefined && !addressSegments(address)) {
      throw new ChokepointError(`address must look like agent://org/workspace/name, got ${JSON.stringify(address)}`)
    }
    if (instanceId !== undefined && !/^[\x20-\x7e]{1,128}$/.test(instanceId)) {
      throw new ChokepointError('instanceId must be 1–128 printable ASCII characters')
    }
    this.client = new APIClient(clientOptions)
    this.#address = address
    this.instanceId = instanceId
  }

  /** This agent's address, if known (from the options or a heartbeat answer). */
  /**
   * The base URL to give an OpenAI client so that this agent's LLM calls go through the gateway
   * (metered, under its kill switch and cost ceilings), with this agent's key as the API key:
   * `new OpenAI({ baseURL: agent.llmBaseURL('openai'), apiKey: <the agent key> })`.
   * `upstream` is an `id` of the gateway's `--egress-config`.
   */
  llmBaseURL(upstream: string): string {
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(upstream)) throw new ChokepointError(`not an upstream id: ${JSON.stringify(upstream)}`)
    return `${this.client.baseURL}/llm/${upstream}/v1`
  }

  get address(): string | undefined {
    return this.#address
  }

  /** Whether the SDK's latest word from the gateway is that this agent is killed. */
  get killed(): boolean {
    return this.#killed
  }

  /**
   * Sends an intent as this agent. Retries are safe: an `Idempotency-Key` is generated unless
   * `idempotencyKey` is given.
   */
  async send(params: AgentSendParams, options?: RequestOptions): Promise<IntentCreateResponse> {
    const { idempotencyKey, ...body } = params
    const headers = { 'Idempotency-Key': idempotencyKey ?? uuid4() }
    const response = await this.#call(this.client.post<IntentCreateResponse>('/v1/intents', body, this.#options(options, headers)), (error) =>
      this.#isSelf(error, body.to_agent),
    )
    this.#killed = false
    return response
  }

  /**
   * The inbox: an async iterable of deliveries, over one long-lived SSE stream (or windowed
   * responses with `waitSeconds`). It reconnects by itself with backoff and resumes from the
   * highest `seq` it yielded, so nothing is lost; a delivery that is not resolved within its
   * lease is delivered again. Stop it with `break`, `options.signal` or {@link Agent.close}.
   *
   * @throws AgentKilledError when the agent is killed (the `agent.killed` frame or a 403 on reconnect).
   * @throws AuthenticationError / PermissionDeniedError on 401 / 403, without reconnecting.
   */
  listen(options: ListenOptions = {}): AsyncGenerator<Delivery, void, undefined> {
    const segments = this.#address === undefined ? undefined : addressSegments(this.#address)
    if (!segments) {
      throw new ChokepointError(
        'Agent.listen() needs the agent address: pass { address: "agent://org/workspace/name" } to new Agent(). ' +
          'An agent key is bound to one address, but the gateway has no route yet that tells a key which one.',
      )
    }
    const [org, workspace, name] = segments
    const controller = new AbortController()
    const unlink = linkAbort(options.signal, controller)
    this.#listens.add(controller)
    const inner = listenInbox(
      {
        client: this.client,
        path: path`/v1/agents/${org}/${workspace}/${name}/intents/stream`,
        headers: this.#headers(),
        onConnected: () => {
          this.#killed = false
        },
        onKilled: (error) => this.#markKilled({ source: 'stream', message: error.message, requestId: error.requestId, error }),
      },
      { ...options, signal: controller.signal },
    )
    const listens = this.#listens
    return (async function* () {
      try {
        yield* inner
      } finally {
        unlink()
        listens.delete(controller)
      }
    })()
  }

  /** Acknowledges a delivery: status `ACKNOWLEDGED`, lease extended (repeat as a keep-alive). */
  async ack(intentId: string, options?: RequestOptions): Promise<IntentResponse> {
    return this.#settled(this.client.post<IntentResponse>(path`/v1/intents/${intentId}/ack`, {}, this.#options(options)))
  }

  /** Resolves a delivery `COMPLETED`, `FAILED` or `CANCELED`; a second terminal resolve is a 409. */
  async resolve(intentId: string, params: IntentResolveParams, options?: RequestOptions): Promise<IntentResolveResponse> {
    return this.#settled(
      this.client.post<IntentResolveResponse>(path`/v1/intents/${intentId}/resolve`, params, this.#options(options)),
    )
  }

  /** Reads an intent this agent sent or received. */
  get(intentId: string, options?: RequestOptions): Promise<IntentResponse> {
    return this.#call(this.client.get(path`/v1/intents/${intentId}`, undefined, this.#options(options)))
  }

  /** An intent's events with `seq > since`, ascending. */
  events(intentId: string, params: IntentEventsParams = {}, options?: RequestOptions): Promise<IntentEventsResponse> {
    return this.#call(this.client.get(path`/v1/intents/${intentId}/events`, { ...params }, this.#options(options)))
  }

  /** Reports this instance alive (with optional metric deltas). A killed agent is answered `health_status: "killed"`. */
  async heartbeat(params: HeartbeatParams = {}, options?: RequestOptions): Promise<HeartbeatResponse> {
    const response = await this.#call(
      this.client.post<HeartbeatResponse>('/v1/mesh/heartbeat', params, this.#options(options)),
    )
    if (this.#address === undefined && typeof response.address === 'string' && addressSegments(response.address)) {
      this.#address = response.address
    }
    if (response.health_status === 'killed') {
      this.#markKilled({ source: 'heartbeat', message: `agent ${response.address} is killed`, requestId: undefined })
    } else {
      this.#killed = false
    }
    return response
  }

  /** Heartbeats now and then every interval until {@link Agent.stopHeartbeat} or {@link Agent.close}. */
  startHeartbeat(options: StartHeartbeatOptions = {}): void {
    this.stopHeartbeat()
    const state: { timer: ReturnType<typeof setTimeout> | undefined } = { timer: undefined }
    this.#heartbeat = state
    const beat = async (): Promise<void> => {
      let next = options.intervalMs ?? 30_000
      try {
        const metrics = options.metrics?.() ?? this.#takeMetrics()
        const response = await this.heartbeat(metrics ? { metrics } : {})
        if (response.health_status === 'killed' && options.stopOnKill) {
          this.stopHeartbeat()
          return
        }
        if (options.intervalMs === undefined && response.next_heartbeat_s > 0) next = response.next_heartbeat_s * 1000
      } catch (error) {
        options.onError?.(error)
      }
      if (this.#heartbeat !== state) return
      state.timer = setTimeout(() => void beat(), next)
      unref(state.timer)
    }
    void beat()
  }

  /**
   * Buffers one unit of work; the next automatic heartbeat reports the buffered deltas
   * (`intents_total`, `intents_succeeded`, `intents_failed`, `avg_latency_ms`, `cost_usd`)
   * and starts a new buffer. Cost reported here counts toward the agent's cost policies.
   *
   * @example
   * ```ts
   * const started = Date.now()
   * const ok = await doWork()
   * agent.reportMetric({ success: ok, latencyMs: Date.now() - started, costUsd: 0.002 })
   * ```
   */
  reportMetric(sample: MetricSample): void {
    const m = this.#metrics
    m.total += 1
    if (sample.success) m.succeeded += 1
    else m.failed += 1
    if (sample.latencyMs !== undefined && Number.isFinite(sample.latencyMs)) {
      m.latencySum += sample.latencyMs
      m.latencyN += 1
    }
    if (sample.costUsd !== undefined && Number.isFinite(sample.costUsd) && sample.costUsd > 0) m.cost += sample.costUsd
  }

  /** The buffered deltas since the last beat, or undefined when nothing was reported. */
  #takeMetrics(): HeartbeatMetrics | undefined {
    const m = this.#metrics
    if (m.total === 0 && m.cost === 0) return undefined
    this.#metrics = { total: 0, succeeded: 0, failed: 0, latencySum: 0, latencyN: 0, cost: 0 }
    return {
      intents_total: m.total,
      intents_succeeded: m.succeeded,
      intents_failed: m.failed,
      avg_latency_ms: m.latencyN === 0 ? null : m.latencySum / m.latencyN,
      cost_usd: m.cost,
    }
  }

  #metrics = { total: 0, succeeded: 0, failed: 0, latencySum: 0, latencyN: 0, cost: 0 }

  /** Stops the heartbeats started by {@link Agent.startHeartbeat}. */
  stopHeartbeat(): void {
    clearTimeout(this.#heartbeat?.timer)
    this.#heartbeat = undefined
  }

  /**
   * Registers `callback` for when the SDK learns this agent was killed: the stream's
   * `agent.killed` frame, a 403 `agent_killed` on a call, or a heartbeat answered `killed`.
   * It fires once per kill (again only after the gateway has shown the agent alive).
   * A callback that throws does not stop the others; its error is rethrown asynchronously.
   * @returns a function that unregisters the callback.
   */
  onKilled(callback: (event: KilledEvent) => void): () => void {
    this.#killedCallbacks.add(callback)
    return () => {
      this.#killedCallbacks.delete(callback)
    }
  }

  /** Stops heartbeats and ends every `listen()` iteration of this agent. */
  close(): void {
    this.stopHeartbeat()
    for (const controller of this.#listens) controller.abort()
  }

  #headers(extra?: Record<string, string>): Record<string, string> {
    return { ...(this.instanceId === undefined ? {} : { 'x-instance-id': this.instanceId }), ...extra }
  }

  #options(options: RequestOptions | undefined, extra?: Record<string, string>): RequestOptions {
    return { ...options, headers: { ...this.#headers(extra), ...options?.headers } }
  }

  /** ack/resolve: only the recipient's own kill refuses them, so a 403 `agent_killed` is ours. */
  async #settled<T>(promise: Promise<T>): Promise<T> {
    const response = await this.#call(promise)
    this.#killed = false
    return response
  }

  async #call<T>(promise: Promise<T>, isSelf: (error: AgentKilledError) => boolean = () => true): Promise<T> {
    try {
      return await promise
    } catch (error) {
      if (error instanceof AgentKilledError && isSelf(error)) {
        this.#markKilled({ source: 'request', message: error.message, requestId: error.requestId, error })
      }
      throw error
    }
  }

  /** A send is refused `agent_killed` when either party is killed: it is ours only if the gateway names us. */
  #isSelf(error: AgentKilledError, toAgent: string): boolean {
    const killed = error.address
    if (killed === undefined) return false
    return this.#address !== undefined ? killed === this.#address : killed !== toAgent
  }

  #markKilled(event: KilledEvent): void {
    if (this.#killed) return
    this.#killed = true
    for (const callback of [...this.#killedCallbacks]) {
      try {
        callback(event)
      } catch (error) {
        queueMicrotask(() => {
          throw error
        })
      }
    }
  }
}
