/**
 * A kill by selector holds on every replica: three gateway processes on one PostgreSQL
 * database, 20 agents sending through all three, a fleet kill of 10 of them (address glob +
 * label) through one replica. After the call returns, no send of a matching agent is accepted
 * anywhere, nothing it had accepted is dated after its kill, and the 10 others never see a
 * refusal; an agent registered afterwards under the selector, on another replica, starts killed.
 * Skipped (with a message) when PostgreSQL is not installed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChildGateway } from './child-gateway.js'
import { api, sharedPostgres, testEngines } from './harness.js'
import { clusterQuery, createKey, reportReplicasOnFailure, sendLoops, sleep, startFleet, type Fleet } from './replica-fleet.js'
import type { PostgresCluster } from './postgres.js'

const HAVE_POSTGRES = testEngines('fleet-kill-replicas.test.ts').includes('postgres')
const AGENTS = 20

describe.skipIf(!HAVE_POSTGRES)('kill by selector across three PostgreSQL replicas', () => {
  let cluster: PostgresCluster
  let fleet: Fleet
  let r: ChildGateway[]

  beforeAll(async () => {
    const c = await sharedPostgres()
    if (!c) throw new Error('PostgreSQL is installed but did not start')
    cluster = c
    fleet = await startFleet(cluster, 3)
    r = fleet.replicas
  }, 90_000)
  afterAll(async () => {
    await fleet?.stop()
  })

  it('20 agents sending on 3 replicas: 0 of the 10 matching accepted after the call returned, the 10 others never refused', async () => {
    reportReplicasOnFailure(() => r)
    const admin = fleet.adminKey
    const operator = await createKey(r[0]!.url, admin, 'operator')
    const sink = 'agent://race/sinks/sink'
    await createKey(r[0]!.url, admin, 'agent', sink)
    const addresses = Array.from({ length: AGENTS }, (_, i) => `agent://race/ws/a${String(i).padStart(2, '0')}`)
    const matching = (i: number) => i % 2 === 0
    const keys: string[] = []
    for (const [i, address] of addresses.entries()) {
      const reg = await api(r[i % 3]!.url, operator, 'POST', '/v1/mesh/agents', {
        address,
        labels: { group: matching(i) ? 'x' : 'y' },
      })
      expect(reg.status).toBe(200)
      keys.push(await createKey(r[i % 3]!.url, admin, 'agent', address))
    }
    const loops = sendLoops({
      loops: AGENTS,
      pick: (turn, loop) => (turn + loop) % 3,
      url: (replica) => r[replica]!.url,
      key: (loop) => keys[loop]!,
      to: sink,
    })
    await sleep(500)
    const killStart = performance.now()
    const kill = await api(r[0]!.url, operator, 'POST', '/v1/mesh/kill', {
      selector: { address: 'agent://race/ws/*', labels: { group: 'x' } },
      reason: 'race',
    })
    const killReturned = performance.now()
    expect(kill.status, JSON.stringify(kill.body)).toBe(200)
    // Registered after the kill, on the other replicas: under the selector → killed; outside → live.
    const late = await api(r[1]!.url, operator, 'POST', '/v1/mesh/agents', { address: 'agent://race/ws/late', labels: { group: 'x' } })
    const other = await api(r[2]!.url, operator, 'POST', '/v1/mesh/agents', { address: 'agent://race/ws/other', labels: { group: 'y' } })
    await sleep(600)
    await loops.stop()

    expect(kill.body.killed.map((k: any) => k.address).sort()).toEqual(addresses.filter((_, i) => matching(i)))
    expect(late.body.agent.health_status).toBe('killed')
    expect(other.body.agent.health_status).not.toBe('killed')

    const after = loops.sends.filter((s) => matching(s.loop) && s.start > killReturned)
    const acceptedAfter = after.filter((s) => s.status === 200)
    const unexpected = loops.sends.filter((s) => s.status !== 200 && !(matching(s.loop) && s.code === 'agent_killed'))
    const othersRefused = loops.sends.filter((s) => !matching(s.loop) && s.status !== 200)
    expect(after.length, 'sends of matching agents after the kill returned').toBeGreaterThan(30)
    expect(after.every((s) => s.code === 'agent_killed')).toBe(true)
    expect(acceptedAfter, 'matching agents accepted after the kill returned').toEqual([])
    expect(othersRefused, 'non-matching agents refused').toEqual([])
    expect(unexpected).toEqual([])
    // Nothing a matching agent had accepted is dated after its kill.
    const late_rows = await clusterQuery(
      fleet.databaseUrl,
      `SELECT count(*)::int AS n FROM intents i JOIN agents a ON a.address_id = i.from_address_id
       WHERE a.killed_at IS NOT NULL AND i.created_at > a.killed_at`,
    )
    expect(late_rows[0].n).toBe(0)
    const perReplica = [0, 1, 2].map((k) => after.filter((s) => s.replica === k).length)
    console.log(
      `fleet kill: ${kill.body.killed.length} agents killed in ${(killReturned - killStart).toFixed(0)} ms over 3 replicas; ` +
        `${loops.sends.length} sends, ${after.length} by matching agents after the call returned (per replica ${perReplica.join('/')}): 0 accepted; ` +
        `${loops.sends.filter((s) => !matching(s.loop)).length} by the others: 0 refused`,
    )
  }, 120_000)
})
