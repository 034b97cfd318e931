/**
 * Error answers that come before the request body is read (401, 413 by Content-Length): the
 * gateway reads and discards the rest of the body before it answers and closes, so the client
 * gets the answer instead of a reset connection (RFC 9112 §9.6) — also when the body takes
 * longer than a moment to arrive — and a body that stalls does not hold the answer back.
 */
import http from 'node:http'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startTestGateway, type TestGateway } from './harness.js'

const BODY_LIMIT = 1024 * 1024

interface Outcome {
  status: number | null
  body: string
  error: string | null
  ms: number
}

/** POSTs `total` bytes in `chunk`-byte writes every `everyMs` (or only `sendOnly` of them, then waits). */
function slowPost(url: string, path: string, key: string, total: number, chunk: number, everyMs: number, sendOnly = total): Promise<Outcome> {
  const started = performance.now()
  return new Promise((resolve) => {
    const out: Outcome = { status: null, body: '', error: null, ms: 0 }
    let settled = false
    const settle = () => {
      if (settled) return
      settled = true
      clearInterval(timer)
      out.ms = performance.now() - started
      resolve(out)
    }
    const req = http.request(url + path, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json', 'content-length': String(total) },
    })
    req.on('response', (res) => {
      out.status = res.statusCode ?? null
      res.setEncoding('utf8')
      res.on('data', (d: string) => (out.body += d))
      res.on('end', () => setTimeout(settle, 50)) // let a reset that follows the answer show
      res.on('error', (e) => (out.error = e.message))
    })
    req.on('error', (e: NodeJS.ErrnoException) => {
      out.error = e.code ?? e.message
      if (out.status === null) settle()
    })
    let sent = 0
    const timer = setInterval(() => {
      if (sent >= sendOnly) return clearInterval(timer)
      const n = Math.min(chunk, sendOnly - sent)
      sent += n
      req.write(Buffer.alloc(n, 0x20))
      if (sent === total) req.end()
    }, everyMs)
  })
}

describe('error answers wait for the rest of the body', () => {
  let gw: TestGateway
  beforeAll(async () => {
    gw = await startTestGateway({ engine: 'sqlite' })
  })
  afterAll(async () => {
    await gw?.close()
  })

  it('a 1.5 MB body arriving over ~1.5 s gets its 413 and no reset', async () => {
    const r = await slowPost(gw.url, '/v1/intents', gw.adminKey, BODY_LIMIT * 1.5, 64 * 1024, 60)
    expect(r.error, `client saw ${r.error} after ${r.ms.toFixed(0)} ms`).toBeNull()
    expect(r.status).toBe(413)
    expect(JSON.parse(r.body)).toMatchObject({ ok: false, error: { code: 'payload_too_large' } })
    expect(r.ms).toBeGreaterThan(1_000) // answered once the body was in, not before
  })

  it('a slow body with an unknown key gets its 401 and no reset', async () => {
    const r = await slowPost(gw.url, '/v1/intents', 'cp_unknown0000000000000000000000000000000000', 256 * 1024, 16 * 1024, 60)
    expect(r.error, `client saw ${r.error}`).toBeNull()
    expect(r.status).toBe(401)
    expect(JSON.parse(r.body)).toMatchObject({ ok: false, error: { code: 'unauthorized' } })
    expect(r.ms).toBeGreaterThan(800)
  })

  it('a body that stalls does not hold the answer back', async () => {
    // Declares 2 MB, sends 64 KB, then nothing: answered within about a second, then closed.
    const r = await slowPost(gw.url, '/v1/intents', gw.adminKey, BODY_LIMIT * 2, 64 * 1024, 10, 64 * 1024)
    expect(r.status).toBe(413)
    expect(r.ms).toBeLessThan(3_000)
  })
})
