import { describe, expect, it } from 'vitest'
import { SSEDecoder, iterSSE, type SSEMessage } from '../src/index.js'

const encoder = new TextEncoder()

/** A byte stream that delivers `bytes` in the given pieces. */
function streamOf(pieces: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0
  return new ReadableStream({
    pull(controller) {
      const piece = pieces[i++]
      if (piece === undefined) controller.close()
      else controller.enqueue(piece)
    },
  })
}

async function decode(pieces: Uint8Array[]): Promise<SSEMessage[]> {
  const out: SSEMessage[] = []
  for await (const message of iterSSE(streamOf(pieces))) out.push(message)
  return out
}

/** Every way to cut `bytes` in two, and in three around each position. */
function* chunkings(bytes: Uint8Array): Generator<Uint8Array[]> {
  yield [bytes]
  for (let i = 1; i < bytes.length; i += 1) {
    yield [bytes.slice(0, i), bytes.slice(i)]
    if (i + 1 < bytes.length) yield [bytes.slice(0, i), bytes.slice(i, i + 1), bytes.slice(i + 1)]
  }
  yield Array.from(bytes, (b) => Uint8Array.of(b))
}

// Frames as the gateway writes them, plus what other servers do: CRLF and CR line endings,
// comments, multi-line data, a field without a colon, no space after the colon, a BOM,
// multi-byte UTF-8, an event without data (not dispatched), and an unterminated tail (dropped).
const TRICKY =
  '\uFEFF: ping\n\n' +
  'id: 7\nevent: intent.delivered\ndata: {"seq":7,"payload":{"note":"héllo 🚀"}}\n\n' +
  'event: stream.timeout\r\ndata: {"ok":true,\r\ndata:"next_seq":8}\r\n\r\n' +
  ': comment\rdata: line one\rdata\rdata:  two spaces\r\r' +
  'event: empty\n\n' +
  'retry: 1500\nid: 9\ndata: last\n\n' +
  'data: unterminated'

const EXPECTED: SSEMessage[] = [
  { id: '7', event: 'intent.delivered', data: '{"seq":7,"payload":{"note":"héllo 🚀"}}' },
  { event: 'stream.timeout', data: '{"ok":true,\n"next_seq":8}' },
  { event: 'message', data: 'line one\n\n two spaces' },
  { id: '9', event: 'message', data: 'last', retry: 1500 },
]

describe('SSE decoder', () => {
  it('decodes the gateway frames, CRLF, CR, comments and multi-line data', async () => {
    expect(await decode([encoder.encode(TRICKY)])).toEqual(EXPECTED)
  })

  it('gives the same events for chunks split at every byte boundary', async () => {
    const bytes = encoder.encode(TRICKY)
    let checked = 0
    for (const pieces of chunkings(bytes)) {
      expect(await decode(pieces)).toEqual(EXPECTED)
      checked += 1
    }
    expect(checked).toBeGreaterThan(bytes.length)
  })

  it('treats a CRLF split across pushes as one line ending', () => {
    const decoder = new SSEDecoder()
    expect(decoder.push('data: a\r')).toEqual([])
    expect(decoder.push('\n\r')).toEqual([{ event: 'message', data: 'a' }])
    expect(decoder.push('\n')).toEqual([])
    expect(decoder.push('data: b\n\n')).toEqual([{ event: 'message', data: 'b' }])
  })

  it('keeps the last event id across events', () => {
    const decoder = new SSEDecoder()
    decoder.push('id: 3\ndata: x\n\n')
    const [next] = decoder.push('data: y\n\n')
    expect(next).toEqual({ event: 'message', data: 'y' })
    expect(decoder.lastEventId).toBe('3')
  })

  it('cancels the body when the iteration stops early', async () => {
    let canceled = false
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(encoder.encode('data: 1\n\ndata: 2\n\n'))
      },
      cancel() {
        canceled = true
      },
    })
    for await (const message of iterSSE(body)) {
      expect(message.data).toBe('1')
      break
    }
    expect(canceled).toBe(true)
  })
})
