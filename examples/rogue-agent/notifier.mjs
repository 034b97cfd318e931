// A healthy, well-behaved agent for contrast: it posts a status note every half second and
// stops by itself if the gateway ever tells it that it was killed.
import { Agent, AgentKilledError } from '@chokepoint/sdk'

const notifier = new Agent({
  baseURL: process.env.CHOKEPOINT_URL,
  apiKey: process.env.CHOKEPOINT_API_KEY, // agent key bound to agent://acme/prod/notifier
  address: 'agent://acme/prod/notifier',
  instanceId: 'notifier-1',
})

let stopped = false
notifier.onKilled(() => {
  stopped = true // a cooperative agent stops itself; the gateway would stop it anyway
})
notifier.startHeartbeat({ intervalMs: 1000 })

const stats = { type: 'stats', role: 'notifier', sent: 0, rejected: 0 }
setInterval(() => process.stdout.write(`${JSON.stringify(stats)}\n`), 200)

while (!stopped) {
  try {
    await notifier.send({
      to_agent: 'agent://acme/prod/deployer',
      intent_type: 'notify.status.v1',
      payload: { text: 'all quiet on the notifier front' },
    })
    stats.sent += 1
  } catch (error) {
    stats.rejected += 1
    if (error instanceof AgentKilledError) break
  }
  await new Promise((resolve) => setTimeout(resolve, 500))
}
