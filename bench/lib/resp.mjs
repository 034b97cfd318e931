// A minimal Redis client over node:net (RESP2): enough for GET/SET/DEL/PING in benchmarks.
// Commands are pipelined on one connection and answered in order.
import net from 'node:net'

function encode(args) {
  let out = `*${args.length}\r\n`
  for (const a of args) {
    const s = String(a)
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`
  }
  return out
}

/**
 * Parses one reply at `buf[pos]`. Returns `{value, next}` or null when the buffer does not yet
 * hold the whole reply. Errors come back as `{error: message}`.
 */
function parse(buf, pos) {
  const eol = buf.indexOf('\r\n', pos)
  if (eol === -1) return null
  const type = String.fromCharCode(buf[pos])
  const line = buf.toString('utf8', pos + 1, eol)
  switch (type) {
    case '+':
      return { value: line, next: eol + 2 }
    case '-':
      return { value: { error: line }, next: eol + 2 }
    case ':':
      return { value: Number(line), next: eol + 2 }
    case '$': {
      const len = Number(line)
      if (len < 0) return { value: null, next: eol + 2 }
      if (buf.length < eol + 2 + len + 2) return null
      return { value: buf.toString('utf8', eol + 2, eol + 2 + len), next: eol + 2 + len + 2 }
    }
    case '*': {
      const n = Number(line)
      if (n < 0) return { value: null, next: eol + 2 }
      const items = []
      let at = eol + 2
      for (let i = 0; i < n; i += 1) {
        const item = parse(buf, at)
        if (!item) return null
        items.push(item.value)
        at = item.next
      }
      return { value: items, next: at }
    }
    default:
      throw new Error(`RESP: unexpected reply type ${JSON.stringify(type)}`)
  }
}

/** Connects to `port` on 127.0.0.1. Returns `{command(...args) → Promise, close()}`. */
export function connectRedis(port, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ port, host })
    socket.setNoDelay(true)
    const waiting = []
    let buf = Buffer.alloc(0)
    let closed = false
    const failAll = (error) => {
      closed = true
      for (const w of waiting.splice(0)) w.reject(error)
    }
    socket.on('data', (chunk) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
      let pos = 0
      for (;;) {
        const reply = parse(buf, pos)
        if (!reply) break
        pos = reply.next
        const w = waiting.shift()
        if (!w) continue
        if (reply.value && typeof reply.value === 'object' && 'error' in reply.value) w.reject(new Error(`redis: ${reply.value.error}`))
        else w.resolve(reply.value)
      }
      buf = pos === buf.length ? Buffer.alloc(0) : buf.subarray(pos)
    })
    socket.on('error', (error) => {
      failAll(error)
      reject(error)
    })
    socket.on('close', () => failAll(new Error('redis connection closed')))
    socket.once('connect', () => {
      resolve({
        command(...args) {
          if (closed) return Promise.reject(new Error('redis connection closed'))
          return new Promise((res, rej) => {
            waiting.push({ resolve: res, reject: rej })
            socket.write(encode(args))
          })
        },
        close() {
          closed = true
          socket.destroy()
        },
      })
    })
  })
}
