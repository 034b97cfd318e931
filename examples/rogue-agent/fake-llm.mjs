// A stand-in for an LLM provider, on 127.0.0.1 (the demo needs no network and no provider key).
// It speaks enough of OpenAI's chat completions API for the deploy-bot's "planning" calls,
// reports usage like a real provider, and prints which callers it answered, so the demo can
// show that after the kill not one more request reached it.
import http from 'node:http'

const expectedKey = process.env.FAKE_LLM_KEY ?? ''
const stats = { type: 'stats', requests: 0, last_request_at: 0, last_key: null }

const server = http.createServer(async (req, res) => {
  let body = ''
  for await (const chunk of req) body += chunk
  if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"message":"not found","type":"invalid_request_error"}}')
    return
  }
  stats.requests += 1
  stats.last_request_at = Date.now()
  // The provider key is the gateway's; the agent's cp_ key never arrives here.
  stats.last_key = req.headers.authorization === `Bearer ${expectedKey}` ? 'provider' : 'other'
  const request = JSON.parse(body || '{}')
  const completion = Math.min(request.max_completion_tokens ?? request.max_tokens ?? 400, 400)
  res.writeHead(200, { 'content-type': 'application/json' }).end(
    JSON.stringify({
      id: `chatcmpl-${stats.requests}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: request.model,
      choices: [{ index: 0, message: { role: 'assistant', content: 'Deploy the next service.' }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 1200, completion_tokens: completion, total_tokens: 1200 + completion },
    }),
  )
})

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ type: 'listening', url: `http://127.0.0.1:${server.address().port}` })}\n`)
})
setInterval(() => process.stdout.write(`${JSON.stringify(stats)}\n`), 200)
