// Loaded with `node --import` into a gateway child process by chaos-postgres.test.ts: shifts
// this process's wall clock (Date.now(), new Date()) by SKEWED_CLOCK_MS, as a replica on a
// machine whose clock is off would see it. performance.now() and timers are unaffected.
const skew = Number(process.env.SKEWED_CLOCK_MS ?? 0)
const RealDate = globalThis.Date
const realNow = RealDate.now

class SkewedDate extends RealDate {
  constructor(...args) {
    if (args.length === 0) super(realNow() + skew)
    else super(...args)
  }
  static now() {
    return realNow() + skew
  }
  static [Symbol.hasInstance](value) {
    return value instanceof RealDate
  }
}

globalThis.Date = SkewedDate
