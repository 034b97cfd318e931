// The deployer: receives deploy.service.v1 intents and "deploys" them, one at a time.
// It is slower than the rogue sends, so a backlog builds up; the kill holds that backlog.
import { Agent } from '@chokepoint/sdk'

const deployMs = Number(process.env.DEPLOY_MS ?? 40)
const deployer = new Agent({
  baseURL: process.env.CHOKEPOINT_URL,
  apiKey: process.env.CHOKEPOINT_API_KEY, // agent key bound to agent://acme/prod/deployer
  address: 'agent://acme/prod/deployer',
  instanceId: 'deployer-1',
})

const stats = { type: 'stats', role: 'deployer', deployed: 0, by_source: {}, redelivered: 0 }
setInterval(() => process.stdout.write(`${JSON.stringify(stats)}\n`), 200)
deployer.startHeartbeat({ intervalMs: 1000 })

// listen() reconnects by itself and resumes from the last seq: nothing is lost.
for await (const delivery of deployer.listen({ leaseSeconds: 30 })) {
  await new Promise((resolve) => setTimeout(resolve, deployMs))
  await deployer.resolve(delivery.intent_id, {
    status: 'COMPLETED',
    result: { deployed: delivery.payload.service ?? delivery.intent_type },
    cost_usd: 0.01,
  })
  stats.deployed += 1
  if (delivery.delivery_attempt > 1) stats.redelivered += 1
  const from = delivery.from_agent
  stats.by_source[from] = (stats.by_source[from] ?? 0) + 1
}
