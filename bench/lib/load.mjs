// The load generator: N closed-loop senders and M receiving instances over keep-alive HTTP.
//
// Each sender POSTs /v1/intents, waits for the answer, and sends again (bounded by a global
// cap on intents created but not yet resolved, so an overloaded target shows up as lower
// throughput rather than an ever-growing queue). Each receiver holds one persistent inbox
// stream (SSE) and resolves every delivery with POST /v1/intents/{id}/resolve COMPLETED as
// soon as its frame arrives. The send time travels in the payload, so end-to-end latency
// (create sent → resolve answered) needs no lookup and works even when the delivery frame
// overtakes the create response.
import http from 'node:http'
import { now, sleep, bump } from './util.mjs'


function request(agent, base, method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: base.hostname,
        port: base.port,
        method,
        path,
        agent,
        headers: body === undefined ? headers : { ...headers, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          text += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode, text }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}


/**
 * Runs the flow against `url` and returns counters, latency samples and timings.
 * `hooks.measureStart()` / `hooks.measureEnd()` run (awaited) at the window's edges.
 */
export async function runFlow(opts) {
  const {
    url,
    senderKey,
    receiverKey,
    toAgent,
    streamPath,
    senders,
    receivers,
    resolveSocketsPerReceiver = 4,
    warmupMs,
    durationMs,
    drainMs,
    maxOutstanding,
    hooks = {},
  } = opts
  // Several gateway replicas: sender s talks to senderUrls[s % n], receiver i (its stream and
  // its resolves) to receiverUrls[i % n]. Default: everything to `url`.
  const senderBases = (opts.senderUrls ?? [url]).map((u) => new URL(u))
  const receiverBases = (opts.receiverUrls ?? [url]).map((u) => new URL(u))
  const sendAgent = new http.Agent({ keepAlive: true, maxSockets: senders })
  const streamAgent = new http.Agent({ keepAlive: false })
  const resolveAgents = Array.from(
    { length: receivers },
    () => new http.Agent({ keepAlive: true, maxSockets: resolveSocketsPerReceiver }),
  )
  const sendHeaders = { 'content-type': 'application/json', 'x-api-key': senderKey }

  let phase = 'warmup' // warmup → measure → drain → done
  const t0 = now()
  let windowStart = 0
  let windowEnd = 0

  const c = {
    create_sent: 0,
    created: 0,
    create_errors: {},
    delivered: 0,
    duplicate_deliveries: 0,
    resolved: 0,
    resolve_errors: {},
    stream_errors: {},
    stream_reconnects: 0,
    created_in_window: 0,
    resolved_in_window: 0,
  }
  const createLatency = []
  const e2eLatency = []
  const perSecond = [] // resolves per second since the start (warm-up included)
  const createdIds = new Set()
  const resolvedIds = new Set()
  const seenDeliveries = new Set()

  // ---- the outstanding cap (created or being created, not yet resolved) ----
  let outstanding = 0
  const slotWaiters = []
  const release = () => {
    outstanding -= 1
    slotWaiters.shift()?.()
  }
  let drained = null
  const checkDrained = () => {
    if (phase === 'drain' && outstanding === 0 && drained) drained()
  }

  // ---- receivers ----
  const streams = []
  function openStream(index, since) {
    return new Promise((resolve, reject) => {
      const state = streams[index] ?? { lastSeq: 0, req: null, closedByUs: false }
      streams[index] = state
      const rbase = receiverBases[index % receiverBases.length]
      const req = http.request({
        host: rbase.hostname,
        port: rbase.port,
        method: 'GET',
        path: since > 0 ? `${streamPath}?since=${since}` : streamPath,
        agent: streamAgent,
        headers: { 'x-api-key': receiverKey, 'x-instance-id': `bench-${index}`, accept: 'text/event-stream' },
      })
      state.req = req
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (chunk) => {
            text += chunk
          })
          res.on('end', () => reject(new Error(`inbox stream ${index}: HTTP ${res.statusCode} ${text.slice(0, 300)}`)))
          return
        }
        resolve()
        let buf = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          buf += chunk
          let cut
          while ((cut = buf.indexOf('\n\n')) !== -1) {
            const block = buf.slice(0, cut)
            buf = buf.slice(cut + 2)
            onFrame(index, state, block)
          }
        })
        res.on('end', () => onStreamEnd(index, state, 'ended'))
        res.on('error', () => onStreamEnd(index, state, 'error'))
      })
      req.on('error', (error) => {
        if (state.closedByUs) return
        if (!state.connected) reject(error)
        else onStreamEnd(index, state, error.code ?? 'error')
      })
      req.on('response', () => {
        state.connected = true
      })
      req.end()
    })
  }

  function onStreamEnd(index, state, why) {
    if (state.closedByUs || state.ending) return
    state.ending = true
    bump(c.stream_errors, why)
    // Reconnect like a real client would, resuming from the last seq seen.
    setTimeout(() => {
      if (state.closedByUs) return
      state.ending = false
      state.connected = false
      c.stream_reconnects += 1
      openStream(index, state.lastSeq).catch((error) => bump(c.stream_errors, `reconnect: ${error.message.slice(0, 80)}`))
    }, 50)
  }

  function onFrame(index, state, block) {
    if (block.startsWith(':')) return // ping comment
    let event = 'message'
    let data = ''
    for (const line of block.split('\n')) {
      if (line.startsWith('data: ')) data += line.slice(6)
      else if (line.startsWith('event: ')) event = line.slice(7)
      else if (line.startsWith('id: ')) {
        const id = Number(line.slice(4))
        if (id > state.lastSeq) state.lastSeq = id
      }
    }
    if (event !== 'intent.delivered') {
      if (event !== 'stream.timeout' && event !== 'stream.end') bump(c.stream_errors, `frame ${event}`)
      return
    }
    const frame = JSON.parse(data)
    c.delivered += 1
    if (seenDeliveries.has(frame.intent_id)) c.duplicate_deliveries += 1
    else seenDeliveries.add(frame.intent_id)
    void resolveOne(index, frame)
  }

  async function resolveOne(index, frame) {
    const sentAt = frame.payload?.t
    try {
      const res = await request(
        resolveAgents[index],
        receiverBases[index % receiverBases.length],
        'POST',
        `/v1/intents/${frame.intent_id}/resolve`,
        { 'content-type': 'application/json', 'x-api-key': receiverKey, 'x-instance-id': `bench-${index}` },
        '{"status":"COMPLETED"}',
      )
      if (res.status !== 200) {
        bump(c.resolve_errors, res.status)
        return
      }
      const t = now()
      c.resolved += 1
      resolvedIds.add(frame.intent_id)
      const second = Math.floor((t - t0) / 1000)
      perSecond[second] = (perSecond[second] ?? 0) + 1
      if (phase === 'measure') {
        c.resolved_in_window += 1
        if (typeof sentAt === 'number') e2eLatency.push(t - sentAt)
      }
      release()
      checkDrained()
    } catch (error) {
      bump(c.resolve_errors, error.code ?? 'error')
    }
  }

  // ---- senders ----
  async function sender(s) {
    let n = 0
    while (phase === 'warmup' || phase === 'measure') {
      if (outstanding >= maxOutstanding) {
        await new Promise((resolve) => slotWaiters.push(resolve))
        continue
      }
      outstanding += 1
      n += 1
      const t = now()
      const body = JSON.stringify({ intent_type: 'bench.e2e.v1', to_agent: toAgent, payload: { s, n, t } })
      c.create_sent += 1
      let ok = false
      try {
        const res = await request(sendAgent, senderBases[s % senderBases.length], 'POST', '/v1/intents', sendHeaders, body)
        const done = now()
        if (res.status === 200) {
          const { intent_id: intentId } = JSON.parse(res.text)
          createdIds.add(intentId)
          c.created += 1
          ok = true
          if (phase === 'measure') {
            c.created_in_window += 1
            createLatency.push(done - t)
          }
        } else {
          bump(c.create_errors, res.status)
        }
      } catch (error) {
        bump(c.create_errors, error.code ?? 'error')
      }
      if (!ok) {
        release()
        checkDrained()
        await sleep(10)
      }
    }
  }

  // ---- run ----
  try {
    await Promise.all(Array.from({ length: receivers }, (_, i) => openStream(i, 0)))
    const senderLoops = Array.from({ length: senders }, (_, s) => sender(s))
    await sleep(warmupMs)
    await hooks.measureStart?.()
    windowStart = now()
    phase = 'measure'
    await sleep(durationMs)
    phase = 'drain'
    windowEnd = now()
    // Wake parked senders so they see the phase change and stop.
    for (const wake of slotWaiters.splice(0)) wake()
    await hooks.measureEnd?.()
    await Promise.all(senderLoops)
    const drainStart = now()
    if (outstanding > 0) {
      await Promise.race([new Promise((resolve) => (drained = resolve)), sleep(drainMs)])
    }
    const drainMsUsed = now() - drainStart
    phase = 'done'

    const missing = []
    for (const id of createdIds) if (!resolvedIds.has(id)) missing.push(id)
    let resolvedUnknown = 0
    for (const id of resolvedIds) if (!createdIds.has(id)) resolvedUnknown += 1
    const windowMs = windowEnd - windowStart
    return {
      window_ms: Math.round(windowMs),
      drain_ms: Math.round(drainMsUsed),
      counters: { ...c, outstanding_after_drain: outstanding, missing: missing.length, resolved_not_created: resolvedUnknown },
      missing_sample: missing.slice(0, 20),
      created_ids: createdIds,
      intents_per_s: (c.resolved_in_window * 1000) / windowMs,
      creates_per_s: (c.created_in_window * 1000) / windowMs,
      create_latency: createLatency,
      e2e_latency: e2eLatency,
      per_second: Array.from(perSecond, (v) => v ?? 0),
      warmup_seconds: Math.floor(warmupMs / 1000),
    }
  } finally {
    phase = 'done'
    for (const wake of slotWaiters.splice(0)) wake()
    for (const state of streams) {
      if (!state) continue
      state.closedByUs = true
      state.req?.destroy()
    }
    sendAgent.destroy()
    streamAgent.destroy()
    for (const a of resolveAgents) a.destroy()
  }
}

/** One HTTP request over `agent` (keep-alive or not); resolves `{status, text}` when the response has ended. */
export { request as httpRequest }
