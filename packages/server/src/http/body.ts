import type { IncomingMessage } from 'node:http'
import { GatewayError } from '../core/errors.js'

/** Reads the request body up to `limit` bytes; over it → 413 without buffering the rest. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    return Promise.reject(tooLarge(limit))
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let done = false
    req.on('data', (chunk: Buffer) => {
      if (done) return
      size += chunk.length
      if (size > limit) {
        done = true
        reject(tooLarge(limit))
        return
      }
      chunks.push(chunk)
    })
    req.on('end', () => {
      if (done) return
      done = true
      resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks))
    })
    req.on('error', (error) => {
      if (done) return
      done = true
      reject(new GatewayError('invalid_request', 'the request body could not be read', { cause: error }))
    })
  })
}

const tooLarge = (limit: number): GatewayError =>
  new GatewayError('payload_too_large', `the request body is larger than the limit of ${limit} bytes`, {
    details: { limit_bytes: limit },
  })

/** Deeper documents are refused: re-serializing them would exhaust the stack. */
export const MAX_JSON_DEPTH = 128

/** Parses JSON whatever the content type; an empty body is `{}` (body-less POSTs are valid). */
export function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return {}
  const text = raw.toString('utf8')
  if (text.trim() === '') return {}
  let value: unknown
  try {
    value = JSON.parse(text) as unknown
  } catch (error) {
    throw new GatewayError('invalid_request', `the request body is not valid JSON: ${(error as Error).message}`)
  }
  // A literal too large for a double parses to Infinity, which JSON cannot carry back out.
  if (/\d{309}|[eE]\+?0*[1-9]\d{2}/.test(text) && hasNonFinite(value)) {
    throw new GatewayError('schema_invalid', 'the request body has a number too large to represent', {
      details: { field: 'body' },
    })
  }
  if (nestingDepth(text) > MAX_JSON_DEPTH) {
    throw new GatewayError('schema_invalid', `the request body is nested deeper than ${MAX_JSON_DEPTH} levels`, {
      details: { field: 'body', max_depth: MAX_JSON_DEPTH },
    })
  }
  return value
}

/** Maximum bracket depth of valid JSON text, skipping strings. */
function nestingDepth(text: string): number {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92) i += 1 // backslash: skip the escaped character
      else if (c === 34) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91) {
      depth += 1
      if (depth > max) max = depth
    } else if (c === 125 || c === 93) depth -= 1
  }
  return max
}

function hasNonFinite(value: unknown): boolean {
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'number' && !Number.isFinite(v)) return true
    if (v !== null && typeof v === 'object') stack.push(...Object.values(v))
  }
  return false
}
