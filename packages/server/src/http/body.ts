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

/** Parses JSON whatever the content type; an empty body is `{}` (body-less POSTs are valid). */
export function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return {}
  const text = raw.toString('utf8')
  if (text.trim() === '') return {}
  try {
    return JSON.parse(text) as unknown
  } catch (error) {
    throw new GatewayError('invalid_request', `the request body is not valid JSON: ${(error as Error).message}`)
  }
}
