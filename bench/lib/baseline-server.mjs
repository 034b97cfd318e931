// Baseline: the same message flow between two plain Node HTTP servers, with nothing of the
// gateway's work (no durability, no auth, no validation, no leases). The receiving server
// accepts `POST /v1/intents`, pushes each message as one SSE frame to its subscribers round
// robin, and takes `POST /v1/intents/{id}/resolve` back. Same paths, bodies and frame shape
// as the gateway, so the load generator and the HTTP request pattern are identical.
import { createServer } from 'node:http'
import { randomUUID } from 'node:crypto'
import { serveIpc } from './child-ipc.mjs'

const subscribers = []
const backlog = [] // frames that arrived while nobody was subscribed
const pending = new Map() // intent_id -> true until resolved
let rr = 0
let seq = 0

function readJson(req) {
  return new Promise((resolve) => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => {
      text += chunk
    })
    req.on('end', () => {
      try {
        resolve(text === '' ? {} : JSON.parse(text))
      } catch {
        resolve(undefined)
      }
    })
  })
}

function json(res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

function push(frame) {
  if (subscribers.length === 0) {
    backlog.push(frame)
    return
  }
  rr = (rr + 1) % subscribers.length
  subscribers[rr].write(frame)
}

const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 0 }, async (req, res) => {
  const url = req.url ?? '/'
  if (req.method === 'GET' && url.includes('/intents/stream')) {
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' })
    res.flushHeaders()
    res.socket?.setNoDelay(true)
    subscribers.push(res)
    for (const frame of backlog.splice(0)) push(frame)
    res.on('close', () => {
      const i = subscribers.indexOf(res)
      if (i !== -1) subscribers.splice(i, 1)
    })
    return
  }
  if (req.method === 'POST' && url === '/v1/intents') {
    const body = await readJson(req)
    if (body === undefined) return json(res, 400, { ok: false })
    const intentId = randomUUID()
    const now = new Date().toISOString()
    seq += 1
    pending.set(intentId, true)
    const data = {
      intent_id: intentId,
      seq,
      event_type: 'intent.delivered',
      status: 'DELIVERED',
      intent_type: body.intent_type,
      from_agent: body.from_agent ?? null,
      to_agent: body.to_agent,
      payload: body.payload ?? {},
      delivery_attempt: 1,
      created_at: now,
    }
    push(`id: ${seq}\nevent: intent.delivered\ndata: ${JSON.stringify(data)}\n\n`)
    return json(res, 200, { ok: true, intent_id: intentId, status: 'SUBMITTED', created_at: now })
  }
  const m = req.method === 'POST' ? /^\/v1\/intents\/([^/]+)\/resolve$/.exec(url) : null
  if (m) {
    const body = await readJson(req)
    if (body === undefined) return json(res, 400, { ok: false })
    if (!pending.delete(m[1])) return json(res, 409, { ok: false })
    return json(res, 200, { ok: true, intent: { intent_id: m[1], status: body.status } })
  }
  req.resume()
  json(res, 404, { ok: false })
})

const ipc = serveIpc({
  onStop: async () => {
    for (const res of subscribers.splice(0)) res.end()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(() => resolve()))
  },
})
server.listen(0, '127.0.0.1', () => ipc.ready({ url: `http://127.0.0.1:${server.address().port}`, pid: process.pid }))
server.on('error', (error) => ipc.fatal(error))
