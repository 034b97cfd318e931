// CPU accounting from /proc (Linux): another process's CPU time without its cooperation, and
// the machine's CPU pressure as a noise gauge.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

let clockTicks = null

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat (almost always 100). */
export function clockTicksPerSecond() {
  if (clockTicks !== null) return clockTicks
  try {
    clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    clockTicks = 100
  }
  return clockTicks
}

/**
 * utime + stime of `pid` (all its threads) in µs, from /proc/<pid>/stat; null when unreadable.
 * Resolution is one clock tick (10 ms at USER_HZ 100): measure over seconds, not milliseconds.
 */
export function procCpuUs(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    const ticks = Number(fields[11]) + Number(fields[12])
    return (ticks * 1e6) / clockTicksPerSecond()
  } catch {
    return null
  }
}

/** Linux pressure stall information: µs during which some runnable task waited for a CPU. */
export function cpuPressureUs() {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'))
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

/**
 * Measures, between `start()` and `stop()`: CPU of process `pid` (from /proc) and of this
 * process, as % of one core over the wall time, plus the CPU pressure of the machine.
 */
export function cpuWindow(pid) {
  let start = null
  return {
    start() {
      start = { target: procCpuUs(pid), self: process.cpuUsage(), at: performance.now(), psi: cpuPressureUs() }
    },
    stop() {
      const target = procCpuUs(pid)
      const self = process.cpuUsage()
      const psi = cpuPressureUs()
      const wallUs = (performance.now() - start.at) * 1000
      const pct = (us) => Math.round((us / wallUs) * 10_000) / 100
      const targetUs = target === null || start.target === null ? null : target - start.target
      const selfUs = self.user - start.self.user + (self.system - start.self.system)
      return {
        wall_ms: Math.round(wallUs / 1000),
        target_cpu_us: targetUs,
        target_cpu_pct: targetUs === null ? null : pct(targetUs),
        self_cpu_us: selfUs,
        self_cpu_pct: pct(selfUs),
        cpu_pressure_pct: psi === null || start.psi === null ? null : Math.round(((psi - start.psi) / wallUs) * 1000) / 10,
      }
    },
  }
}
