// The rogue: a deployment agent that should deploy 3 services and keeps going.
// One OS process = one instance (like one pod or one Cloud Run instance).
// It does NOT cooperate with the kill switch: it ignores every error and keeps looping.
// The gateway stops it anyway, because every intent passes through it.
import { Agent, APIError } from '@chokepoint/sdk'

const instanceId = process.env.INSTANCE_ID ?? 'pod-1'
const perSecond = Number(process.env.DEPLOYS_PER_SECOND ?? 10)
const services = ['api', 'web', 'worker', 'billing', 'search', 'auth']

const bot = new Agent({
  baseURL: process.env.CHOKEPOINT_URL,
  apiKey: process.env.CHOKEPOINT_API_KEY, // an agent key bound to agent://acme/prod/deploy-bot
  address: 'agent://acme/prod/deploy-bot',
  instanceId,
  maxRetries: 0,
})

// Before each deploy it asks an LLM what to deploy next — through the gateway (`llmBaseURL`), so
// the gateway meters the spend and the kill stops it too. The provider key lives in the gateway.
const llmUrl = process.env.LLM_UPSTREAM ? `${bot.llmBaseURL(process.env.LLM_UPSTREAM)}/chat/completions` : null

const stats = { type: 'stats', instance: instanceId, ok: 0, rejected: 0, last_ok_at: 0, last_status: 200, last_code: null, llm_ok: 0, llm_rejected: 0, last_llm_ok_at: 0, last_llm_code: null }
setInterval(() => process.stdout.write(`${JSON.stringify(stats)}\n`), 200)
bot.startHeartbeat({ intervalMs: 1000 }) // health for the operator; the bot ignores what it answers

for (let n = 0; ; n += 1) {
  const started = Date.now()
  if (llmUrl) {
    try {
      const res = await fetch(llmUrl, {
        method: 'POST',
        headers: { authorization: `Bearer ${process.env.CHOKEPOINT_API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'planner-large', max_completion_tokens: 400, messages: [{ role: 'user', content: `Deployed ${n} services. What next?` }] }),
      })
      const answer = await res.json()
      if (res.ok) {
        stats.llm_ok += 1
        stats.last_llm_ok_at = Date.now()
        stats.last_llm_code = null
      } else {
        stats.llm_rejected += 1
        stats.last_llm_code = answer?.error?.code ?? String(res.status)
      }
    } catch {
      stats.llm_rejected += 1
      stats.last_llm_code = 'connection_error'
    }
  }
  try {
    await bot.send({
      to_agent: 'agent://acme/prod/deployer',
      intent_type: 'deploy.service.v1',
      payload: { service: services[n % services.length], instance: instanceId, n },
    })
    stats.ok += 1
    stats.last_ok_at = Date.now()
    stats.last_status = 200
    stats.last_code = null
  } catch (error) {
    // A well-behaved agent would stop on AgentKilledError. This one just tries again.
    stats.rejected += 1
    stats.last_status = error instanceof APIError ? error.status : 0
    stats.last_code = error instanceof APIError ? (error.code ?? null) : 'connection_error'
  }
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, 1000 / perSecond - (Date.now() - started))))
}
