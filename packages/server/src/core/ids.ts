import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'

/** CSPRNG bytes drawn in blocks: one call to the generator serves many ids (as randomUUID does). */
const POOL_BYTES = 4096
let pool = randomBytes(POOL_BYTES)
let poolAt = 0

function nextRandomByte(): number {
  if (poolAt === POOL_BYTES) {
    pool = randomBytes(POOL_BYTES)
    poolAt = 0
  }
  const byte = pool[poolAt] as number
  // Each byte is used once: wipe it so that no value lingers in memory after use.
  pool[poolAt] = 0
  poolAt += 1
  return byte
}

/** Unbiased base62 string from the CSPRNG. */
export function randomBase62(length: number): string {
  let out = ''
  while (out.length < length) {
    const byte = nextRandomByte()
    // 248 = 62 * 4: reject the top values so every symbol is equally likely.
    if (byte < 248) out += BASE62[byte % 62]
  }
  return out
}

export const newIntentId = (): string => randomUUID()
export const newAddressId = (): string => `addr_${randomBase62(22)}`
export const newKeyId = (): string => `key_${randomBase62(16)}`

/** An API key: `cp_` + 43 base62 chars (≈ 256 bits). */
export const newApiKey = (): string => `cp_${randomBase62(43)}`

export const sha256Hex = (text: string): string => createHash('sha256').update(text).digest('hex')

/** Constant-time comparison of two hex digests of equal length. */
export function digestsEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'hex')
  const bb = Buffer.from(b, 'hex')
  return ab.length === bb.length && timingSafeEqual(ab, bb)
}

const SEGMENT = '[a-z0-9][a-z0-9_-]{0,62}'
const ADDRESS_RE = new RegExp(`^agent://${SEGMENT}/${SEGMENT}/${SEGMENT}$`)
const ADDRESS_ID_RE = /^addr_[0-9A-Za-z]{1,64}$/

/** `agent://<org>/<workspace>/<name>`, three segments of `[a-z0-9][a-z0-9_-]{0,62}`, ≤ 255 chars. */
export const isAddress = (value: string): boolean => value.length <= 255 && ADDRESS_RE.test(value)
export const isAddressId = (value: string): boolean => ADDRESS_ID_RE.test(value)

const INTENT_TYPE_RE = /^[a-z0-9_]+(\.[a-z0-9_]+)*$/
/** Lowercase dotted name, e.g. `deploy.service.v1`. */
export const isIntentType = (value: string): boolean => value.length <= 128 && INTENT_TYPE_RE.test(value)

/** `x-instance-id`: printable ASCII, 1–128 chars. */
export const isInstanceId = (value: string): boolean => /^[\x20-\x7e]{1,128}$/.test(value)
