/**
 * Alert webhooks cannot be turned against the gateway's own network. CHOKEPOINT_WEBHOOK_BLOCK
 * (default `link-local`: the cloud metadata service) lists address classes alerts may not reach:
 *  - a URL whose host is an address literal in a blocked class is refused at create (422 on url);
 *  - a host *name* is checked on the address it resolves to at each send, so `localhost` under
 *    a loopback block never connects, and the delivery records why;
 *  - redirects are never followed, so a receiver cannot bounce an alert elsewhere.
 */
import { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { classifyAddress } from '../src/core/alerts/address-guard.js'
import { agentKey, api, pollUntil, startTestGateway, type TestGateway } from './harness.js'

interface Receiver {
  server: Server
  port: number
  hits: number
}

async function receiver(handler: (res: ServerResponse) => void): Promise<Receiver> {
  const r: Receiver = { server: createServer(), port: 0, hits: 0 }
  r.server.on('request', (req, res) => {
    r.hits += 1
    req.resume()
    handler(res)
  })
  await new Promise<void>((resolve) => r.server.listen(0, '127.0.0.1', () => resolve()))
  r.port = (r.server.address() as AddressInfo).port
  return r
}

const receivers: Receiver[] = []
const gateways: TestGateway[] = []
afterAll(async () => {
  for (const g of gateways) await g.close()
  for (const r of receivers) await new Promise<void>((resolve) => r.server.close(() => resolve()))
})

async function gateway(env: Record<string, string> = {}): Promise<TestGateway> {
  const gw = await startTestGateway({ env: { CHOKEPOINT_ALERT_RETRY_BASE_MS: '50', ...env } })
  gateways.push(gw)
  return gw
}

async function killSomeone(gw: TestGateway, address: string): Promise<void> {
  await agentKey(gw, address)
  const res = await api(gw.url, gw.adminKey, 'POST', `/v1/mesh/agents/${encodeURIComponent(address)}/kill`, { reason: 'alert please' })
  expect(res.status).toBe(200)
}

describe('address classes', () => {
  it('classifies loopback, link-local (metadata), private and public addresses, IPv4 and IPv6', () => {
    expect(classifyAddress('127.0.0.1')).toBe('loopback')
    expect(classifyAddress('127.9.9.9')).toBe('loopback')
    expect(classifyAddress('0.0.0.0')).toBe('loopback')
    expect(classifyAddress('::1')).toBe('loopback')
    expect(classifyAddress('[::1]')).toBe('loopback')
    expect(classifyAddress('::ffff:127.0.0.1')).toBe('loopback')
    expect(classifyAddress('169.254.169.254')).toBe('link-local')
    expect(classifyAddress('fe80::1')).toBe('link-local')
    expect(classifyAddress('fd00:ec2::254')).toBe('link-local')
    expect(classifyAddress('10.0.0.1')).toBe('private')
    expect(classifyAddress('172.31.255.255')).toBe('private')
    expect(classifyAddress('192.168.1.1')).toBe('private')
    expect(classifyAddress('fd12:3456::1')).toBe('private')
    expect(classifyAddress('::ffff:10.1.2.3')).toBe('private')
    expect(classifyAddress('8.8.8.8')).toBeNull()
    expect(classifyAddress('172.32.0.1')).toBeNull()
    expect(classifyAddress('2001:4860:4860::8888')).toBeNull()
    expect(classifyAddress('example.com')).toBeNull()
  })
})

describe('webhook safety', () => {
  let strict: TestGateway
  let open: TestGateway

  beforeAll(async () => {
    strict = await gateway({ CHOKEPOINT_WEBHOOK_BLOCK: 'loopback,link-local,private' })
    open = await gateway()
  })

  it('refuses blocked address literals at create with 422 on url; the default blocks only link-local', async () => {
    const blocked = [
      'http://127.0.0.1:9/hook',
      'http://[::1]:9/hook',
      'http://[::ffff:127.0.0.1]:9/',
      'http://2130706433/', // 127.0.0.1 as one number: normalised by the URL parser
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.7/hook',
      'https://192.168.0.1/hook',
    ]
    for (const url of blocked) {
      const res = await api(strict.url, strict.adminKey, 'POST', '/v1/alerts/webhooks', { url })
      expect(res.status, url).toBe(422)
      expect(res.body.error).toMatchObject({ code: 'schema_invalid', details: { field: 'url' } })
      expect(res.body.error.message).toMatch(/CHOKEPOINT_WEBHOOK_BLOCK/)
    }
    const metadata = await api(open.url, open.adminKey, 'POST', '/v1/alerts/webhooks', { url: 'http://169.254.169.254/' })
    expect(metadata.status).toBe(422)
    const loopback = await api(open.url, open.adminKey, 'POST', '/v1/alerts/webhooks', { url: 'http://127.0.0.1:9/hook' })
    expect(loopback.status).toBe(200)
    await api(open.url, open.adminKey, 'DELETE', `/v1/alerts/webhooks/${loopback.body.webhook.webhook_id}`)
  })

  it('checks a host name on the address it resolves to at send time: localhost under a loopback block never connects', async () => {
    const target = await receiver((res) => res.end('ok'))
    receivers.push(target)
    const created = await api(strict.url, strict.adminKey, 'POST', '/v1/alerts/webhooks', { url: `http://localhost:${target.port}/hook` })
    expect(created.status).toBe(200)
    await killSomeone(strict, 'agent://acme/prod/ssrf-1')
    const failed = await pollUntil(
      async () => {
        const res = await api(strict.url, strict.adminKey, 'GET', `/v1/alerts/deliveries?webhook_id=${created.body.webhook.webhook_id}`)
        return res.body.deliveries.find((d: any) => d.attempts >= 2)
      },
      { timeoutMs: 10_000 },
    )
    expect(failed.last_error).toMatch(/localhost.*resolved to .*loopback.*CHOKEPOINT_WEBHOOK_BLOCK/)
    expect(failed.status).toBe('retrying')
    expect(target.hits).toBe(0)
  })

  it('never follows a redirect: the alert is a failed attempt and the redirect target gets nothing', async () => {
    const elsewhere = await receiver((res) => res.end('ok'))
    const bouncer = await receiver((res) => {
      res.writeHead(302, { location: `http://127.0.0.1:${elsewhere.port}/stolen` })
      res.end()
    })
    receivers.push(elsewhere, bouncer)
    const created = await api(open.url, open.adminKey, 'POST', '/v1/alerts/webhooks', { url: `http://127.0.0.1:${bouncer.port}/hook` })
    expect(created.status).toBe(200)
    await killSomeone(open, 'agent://acme/prod/ssrf-2')
    const failed = await pollUntil(
      async () => {
        const res = await api(open.url, open.adminKey, 'GET', `/v1/alerts/deliveries?webhook_id=${created.body.webhook.webhook_id}`)
        return res.body.deliveries.find((d: any) => d.attempts >= 2)
      },
      { timeoutMs: 10_000 },
    )
    expect(failed).toMatchObject({ last_status: 302, last_error: 'HTTP 302', status: 'retrying' })
    expect(bouncer.hits).toBeGreaterThanOrEqual(2)
    expect(elsewhere.hits).toBe(0)
  })

  it('a bad CHOKEPOINT_WEBHOOK_BLOCK stops the start naming it', async () => {
    await expect(startTestGateway({ env: { CHOKEPOINT_WEBHOOK_BLOCK: 'loopback,intranet' } })).rejects.toThrow(
      /CHOKEPOINT_WEBHOOK_BLOCK: unknown address class "intranet"/,
    )
  })
})
