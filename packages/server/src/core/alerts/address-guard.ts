import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns'
import { BlockList, isIP } from 'node:net'

/**
 * Where alert webhooks may not go (CHOKEPOINT_WEBHOOK_BLOCK). A gateway holds operator power,
 * so a webhook URL must not become a way to reach the cloud metadata service or other internal
 * endpoints from inside the cluster (server-side request forgery).
 */
export const ADDRESS_CLASSES = ['loopback', 'link-local', 'private'] as const
export type AddressClass = (typeof ADDRESS_CLASSES)[number]

const RANGES: Record<AddressClass, BlockList> = {
  loopback: blockList([['127.0.0.0', 8, 'ipv4'], ['0.0.0.0', 8, 'ipv4'], ['::1', 128, 'ipv6'], ['::', 128, 'ipv6']]),
  // Includes 169.254.169.254, the metadata service of AWS, GCP and Azure.
  'link-local': blockList([['169.254.0.0', 16, 'ipv4'], ['fe80::', 10, 'ipv6'], ['fd00:ec2::', 32, 'ipv6']]),
  private: blockList([
    ['10.0.0.0', 8, 'ipv4'],
    ['172.16.0.0', 12, 'ipv4'],
    ['192.168.0.0', 16, 'ipv4'],
    ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT, also used by some clusters
    ['fc00::', 7, 'ipv6'],
  ]),
}

function blockList(ranges: [string, number, 'ipv4' | 'ipv6'][]): BlockList {
  const list = new BlockList()
  for (const [net, prefix, family] of ranges) list.addSubnet(net, prefix, family)
  return list
}

/** The class of an IP address literal, or null when it is public (or not an IP). */
export function classifyAddress(ip: string): AddressClass | null {
  let address = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip
  // IPv4-mapped IPv6 (::ffff:127.0.0.1) is the IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped) address = mapped[1] as string
  const family = isIP(address)
  if (family === 0) return null
  const type = family === 4 ? 'ipv4' : 'ipv6'
  for (const name of ADDRESS_CLASSES) if (RANGES[name].check(address, type)) return name
  return null
}

/** Parses CHOKEPOINT_WEBHOOK_BLOCK: a comma list of classes, or `none`. Throws naming the bad word. */
export function parseAddressClasses(raw: string): Set<AddressClass> {
  const words = raw.split(',').map((w) => w.trim().toLowerCase()).filter(Boolean)
  if (words.length === 1 && words[0] === 'none') return new Set()
  const out = new Set<AddressClass>()
  for (const w of words) {
    if (!(ADDRESS_CLASSES as readonly string[]).includes(w)) {
      throw new Error(`unknown address class "${w}" (expected ${ADDRESS_CLASSES.join(', ')} or none)`)
    }
    out.add(w as AddressClass)
  }
  return out
}

export class BlockedAddressError extends Error {
  constructor(host: string, address: string, kind: AddressClass) {
    super(`${host} is ${address === host ? '' : `resolved to ${address}, `}a ${kind} address, which CHOKEPOINT_WEBHOOK_BLOCK forbids`)
    this.name = 'BlockedAddressError'
  }
}

/** Throws BlockedAddressError when `host` is an IP literal in a blocked class. */
export function assertHostAllowed(host: string, blocked: ReadonlySet<AddressClass>): void {
  const kind = classifyAddress(host)
  if (kind !== null && blocked.has(kind)) throw new BlockedAddressError(host, host, kind)
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void

/**
 * A `lookup` for http.request that refuses blocked addresses after resolution, so the check
 * holds for the address actually connected to (a DNS answer that changes between a check and
 * the connection cannot slip through).
 */
export function guardedLookup(blocked: ReadonlySet<AddressClass>) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, [])
      for (const { address } of addresses) {
        const kind = classifyAddress(address)
        if (kind !== null && blocked.has(kind)) return callback(new BlockedAddressError(hostname, address, kind), [])
      }
      if (options.all) return callback(null, addresses)
      const first = addresses[0]
      if (!first) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), [])
      callback(null, first.address, first.family)
    })
  }
}
