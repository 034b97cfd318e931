// Child side of the benchmark IPC: ready/fatal reports, RPCs (cpu usage, profiling), stop.
//
// Profiling uses the in-process inspector (the same V8 sampling profiler as `node --cpu-prof`)
// so the profile covers exactly the measurement window, not start-up, warm-up or drain.
import { Session } from 'node:inspector/promises'
import { writeFileSync } from 'node:fs'

/**
 * `commands` adds the child's own RPCs (name → async (msg) => result).
 * `onStop(reason)` closes the server (reason `orphaned` when the parent vanished); the process then exits. The child also exits when the IPC
 * channel closes (the parent died) and on SIGINT/SIGTERM (Ctrl-C reaches the whole group).
 */
export function serveIpc({ onStop, commands: extra = {} }) {
  let session = null
  let stopping = false
  const stop = async (code = 0, reason = 'stop') => {
    if (stopping) return
    stopping = true
    const force = setTimeout(() => process.exit(code), 5_000)
    force.unref()
    try {
      if (session) session.disconnect()
      await onStop(reason)
    } catch (error) {
      process.stderr.write(`bench child: shutdown failed: ${String(error)}\n`)
    }
    process.exit(code)
  }

  const commands = {
    cpu: async () => ({ ...process.cpuUsage(), at_ms: performance.now(), rss: process.memoryUsage.rss() }),
    'profile-start': async ({ interval_us = 1000 }) => {
      session = new Session()
      session.connect()
      await session.post('Profiler.enable')
      await session.post('Profiler.setSamplingInterval', { interval: interval_us })
      await session.post('Profiler.start')
      return { started: true }
    },
    'profile-stop': async ({ file }) => {
      if (!session) throw new Error('the profiler was not started')
      const { profile } = await session.post('Profiler.stop')
      await session.post('Profiler.disable')
      session.disconnect()
      session = null
      writeFileSync(file, JSON.stringify(profile))
      return { file }
    },
    ...extra,
  }

  process.on('message', (msg) => {
    if (msg?.type === 'stop') {
      void stop(0)
      return
    }
    if (msg?.type !== 'rpc') return
    const fn = commands[msg.cmd]
    const reply = (body) => {
      if (process.connected) process.send({ type: 'rpc-result', id: msg.id, ...body })
    }
    if (!fn) {
      reply({ error: `unknown command ${msg.cmd}` })
      return
    }
    fn(msg).then(
      (result) => reply({ result }),
      (error) => reply({ error: String(error?.message ?? error) }),
    )
  })
  // The parent is gone (e.g. killed with SIGKILL): nobody else will clean up after us.
  process.on('disconnect', () => void stop(0, 'orphaned'))
  process.once('SIGINT', () => void stop(130))
  process.once('SIGTERM', () => void stop(143))

  return {
    ready: (info) => process.send?.({ type: 'ready', ...info }),
    fatal: (error) => {
      process.send?.({ type: 'fatal', error: String(error?.stack ?? error) })
      process.exit(1)
    },
  }
}
