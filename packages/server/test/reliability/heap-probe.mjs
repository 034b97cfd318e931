// Loaded with `node --expose-gc --import` into a gateway child process by soak.test.ts: on
// SIGUSR2, runs a full garbage collection and prints the heap still in use, so the soak reads
// what the process retains rather than wherever the collector's sawtooth happens to be.
process.on('SIGUSR2', () => {
  globalThis.gc()
  process.stdout.write(`heap-probe ${process.memoryUsage().heapUsed}\n`)
})
