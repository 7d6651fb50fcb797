// swarm.mjs: a swarm of agents talking to one coordinator over QUIC, on loopback.
//
// What it shows:
//   - a listening coordinator and N dial-only agents, each with its own QuicTransport,
//     trusting the coordinator by pinning its certificate fingerprint;
//   - many requests multiplexed on one pooled connection per agent (C in flight each),
//     with replies checked end to end and latency measured per request;
//   - one-way messages both ways: agents send heartbeats on their own stream, and the
//     coordinator pushes `coordination` ticks back over the connections the agents dialled;
//   - getStats(): the pool counters of every agent and the coordinator's connections.
//
// Run: npm run demo -- --agents 20 --seconds 5 --concurrency 4 --payload 256
// Exit status: 0 on a clean run, 1 if any request or message failed, 2 on bad flags.

import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')

const USAGE = `usage: node examples/swarm.mjs [--agents N] [--seconds S] [--concurrency C] [--payload BYTES]

  --agents N        agents, each with its own transport and connection (default 20, 1..1000)
  --seconds S       how long to keep requests in flight (default 5, 0.1..3600)
  --concurrency C   requests each agent keeps in flight (default 4, 1..1000)
  --payload BYTES   size of each task's data string (default 256, 0..8388608)
  --help            print this help`

const HEARTBEAT_MS = 250
const PUSH_MS = 1000
const REQUEST_TIMEOUT_MS = 5000
const DRAIN_MS = REQUEST_TIMEOUT_MS + 1000 // bound on waiting for in-flight requests
const ONE_WAY_GRACE_MS = 500 // bound on waiting for the last one-way messages to land
const CLOSE_MS = 5000
const MAX_SAMPLES = 2_000_000

function parseFlags(argv) {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      agents: { type: 'string', default: '20' },
      seconds: { type: 'string', default: '5' },
      concurrency: { type: 'string', default: '4' },
      payload: { type: 'string', default: '256' },
      help: { type: 'boolean', default: false },
    },
  })
  if (values.help) return null
  const int = (name, min, max) => {
    const text = values[name]
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
      throw new Error(`--${name} must be an integer from ${min} to ${max}, got '${text}'`)
    }
    return Number(text)
  }
  const seconds = Number(values.seconds)
  if (!/^\d+(\.\d+)?$/.test(values.seconds) || seconds < 0.1 || seconds > 3600) {
    throw new Error(`--seconds must be a number from 0.1 to 3600, got '${values.seconds}'`)
  }
  return {
    agents: int('agents', 1, 1000),
    seconds,
    concurrency: int('concurrency', 1, 1000),
    payload: int('payload', 0, 8 * 1024 * 1024),
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves to true if `promise` settles within `ms`, false otherwise; leaves no timer. */
async function within(promise, ms) {
  let timer
  const timeout = new Promise((resolve) => (timer = setTimeout(resolve, ms, false)))
  try {
    return await Promise.race([promise.then(() => true, () => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** The coordinator's "task": a small Fletcher-16 checksum of the data. */
function checksum(text) {
  let a = 0
  let b = 0
  for (let i = 0; i < text.length; i++) {
    a = (a + text.charCodeAt(i)) % 255
    b = (b + a) % 255
  }
  return (b << 8) | a
}

/** Latency samples in ms: every one up to MAX_SAMPLES, then a uniform reservoir. */
class Latencies {
  samples = new Float64Array(1024)
  length = 0
  seen = 0
  max = 0
  add(ms) {
    this.seen++
    if (ms > this.max) this.max = ms
    if (this.length < MAX_SAMPLES) {
      if (this.length === this.samples.length) {
        const grown = new Float64Array(Math.min(this.samples.length * 2, MAX_SAMPLES))
        grown.set(this.samples)
        this.samples = grown
      }
      this.samples[this.length++] = ms
    } else {
      const j = Math.floor(Math.random() * this.seen)
      if (j < MAX_SAMPLES) this.samples[j] = ms
    }
  }
  /** Nearest-rank percentiles from the sorted samples. */
  percentiles(...ps) {
    const sorted = this.samples.subarray(0, this.length).sort()
    return ps.map((p) => (sorted.length ? sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)] : NaN))
  }
}

async function main() {
  let flags
  try {
    flags = parseFlags(process.argv.slice(2))
  } catch (err) {
    console.error(`swarm: ${err.message}\n\n${USAGE}`)
    process.exitCode = 2
    return
  }
  if (!flags) return console.log(USAGE)

  const transports = []
  const intervals = []
  let errors = 0
  try {
    errors = await run(flags, transports, intervals)
  } finally {
    // Also on failure: an open transport or a running interval keeps the process alive.
    for (const interval of intervals) clearInterval(interval)
    await closeAll(transports)
  }
  if (errors > 0) process.exitCode = 1
}

/** Runs the swarm and prints the report; returns the number of errors. */
async function run({ agents: agentCount, seconds, concurrency, payload }, transports, intervals) {
  const stats = { completed: 0, errors: 0, heartbeatsSent: 0, heartbeats: 0, pushesSent: 0, pushes: 0 }
  const errorKinds = new Map() // 'where: code message' -> count, summarised on stderr
  const fail = (where, err, count = 1) => {
    stats.errors += count
    const key = `${where}: ${err?.code ?? 'ERR'} ${err?.message ?? err}`
    errorKinds.set(key, (errorKinds.get(key) ?? 0) + count)
  }
  const latencies = new Latencies()

  // The coordinator: answers tasks, counts heartbeats, remembers every agent it has seen.
  const coordinator = await QuicTransport.create({ listen: { host: '127.0.0.1', port: 0 } })
  transports.push(coordinator)
  const coordAddr = `${coordinator.address.host}:${coordinator.address.port}`
  const seenPeers = new Set()
  coordinator.onRequest(async (msg, peer) => {
    seenPeers.add(peer.address)
    const { agent, seq, data } = msg.payload
    return { kind: 'result', agent, seq, length: data.length, checksum: checksum(data) }
  })
  coordinator.onMessage((msg, peer) => {
    seenPeers.add(peer.address)
    if (msg.type === 'heartbeat') stats.heartbeats++
  })

  // The agents: dial-only, pinning the coordinator's certificate; they count pushes.
  const agents = []
  for (let i = 0; i < agentCount; i++) {
    const t = await QuicTransport.create({ tls: { pinnedFingerprints: [coordinator.fingerprint] } })
    transports.push(t)
    t.onMessage((msg) => {
      if (msg.type === 'coordination') stats.pushes++
    })
    agents.push(t)
  }
  await Promise.all(agents.map((t) => t.connect(coordAddr)))

  let stopping = false
  // One worker keeps one request in flight until the deadline, checking every reply.
  // The C workers of an agent share its transport (one pooled connection) and its seq.
  const seqs = new Array(agentCount).fill(0)
  async function worker(t, id) {
    const fill = String.fromCharCode(97 + (id % 26)) // varies the data between agents
    while (!stopping) {
      const seq = ++seqs[id]
      const data = fill.repeat(payload)
      const start = process.hrtime.bigint()
      try {
        const task = { type: 'task', payload: { agent: id, seq, data } }
        const reply = await t.request(coordAddr, task, { timeoutMs: REQUEST_TIMEOUT_MS })
        latencies.add(Number(process.hrtime.bigint() - start) / 1e6)
        const r = reply.payload
        const ok = r?.kind === 'result' && r.agent === id && r.seq === seq
        if (ok && r.length === payload && r.checksum === checksum(data)) stats.completed++
        else fail('reply', new Error('result does not match the task'))
      } catch (err) {
        fail('request', err)
        if (!stopping) await sleep(10) // don't spin if the transport fails fast
      }
    }
  }

  // Heartbeats from every agent, pushes from the coordinator to every agent it has seen.
  // "sent" counts the sends QUIC accepted; each of those must arrive.
  intervals.push(setInterval(() => {
    agents.forEach((t, id) => {
      const beat = { type: 'heartbeat', streamId: 'heartbeat', payload: { agent: id, at: Date.now() } }
      t.send(coordAddr, beat).then(() => stats.heartbeatsSent++, (err) => fail('heartbeat', err))
    })
  }, HEARTBEAT_MS))
  let tick = 0
  intervals.push(setInterval(() => {
    tick++
    for (const addr of seenPeers) {
      const push = { type: 'coordination', payload: { tick } }
      coordinator.send(addr, push).then(() => stats.pushesSent++, (err) => fail('push', err))
    }
  }, PUSH_MS))

  // Progress on stderr: an overwritten line on a terminal, plain lines once a second otherwise.
  const started = performance.now()
  const tty = process.stderr.isTTY
  let last = { at: started, completed: 0 }
  intervals.push(setInterval(() => {
    const now = performance.now()
    const rate = ((stats.completed - last.completed) * 1000) / (now - last.at)
    last = { at: now, completed: stats.completed }
    const secs = ((now - started) / 1000).toFixed(1)
    const line = `${secs}s  ${stats.completed} requests  ${Math.round(rate)} req/s  ${stats.errors} errors`
    process.stderr.write(tty ? `\r${line.padEnd(64)}` : `${line}\n`)
  }, tty ? 250 : 1000))

  // Work until the deadline (Ctrl-C ends it early), then drain in-flight requests, bounded.
  const workers = agents.flatMap((t, id) => Array.from({ length: concurrency }, () => worker(t, id)))
  let stop
  const stopped = new Promise((resolve) => (stop = () => resolve((stopping = true))))
  const deadline = setTimeout(stop, seconds * 1000)
  process.once('SIGINT', stop)
  await stopped
  clearTimeout(deadline)
  process.removeListener('SIGINT', stop)
  if (!(await within(Promise.all(workers), DRAIN_MS))) {
    fail('drain', new Error(`requests still in flight after ${DRAIN_MS} ms`))
  }
  const duration = (performance.now() - started) / 1000 // includes the drain
  for (const interval of intervals.splice(0)) clearInterval(interval)
  // Let the last heartbeats and pushes land; any still missing then counts as an error.
  const missing = () => stats.heartbeatsSent - stats.heartbeats + (stats.pushesSent - stats.pushes)
  const graceEnd = performance.now() + ONE_WAY_GRACE_MS
  while (missing() > 0 && performance.now() < graceEnd) await sleep(20)
  if (missing() > 0) fail('one-way', new Error(`not received within ${ONE_WAY_GRACE_MS} ms`), missing())
  if (tty) process.stderr.write('\n')

  // Statistics before closing: a closed transport has nothing left to report.
  const pool = { created: 0, hits: 0, misses: 0, active: 0, idle: 0, closed: 0 }
  for (const t of agents) {
    const p = t.getStats().pool
    for (const key of Object.keys(pool)) pool[key] += p[key]
  }
  const coordConnections = coordinator.getStats().connections.length

  const [p50, p99] = latencies.percentiles(0.5, 0.99)
  const ms = (v) => (Number.isFinite(v) ? `${v.toFixed(2)} ms` : 'n/a')
  const sampled = latencies.seen > latencies.length ? ` (p50/p99 from ${latencies.length} samples)` : ''
  const rows = [
    ['agents', `${agentCount} (x ${concurrency} in flight, ${payload} B payload)`],
    ['duration', `${duration.toFixed(2)} s`],
    ['requests completed', stats.completed],
    ['one-way messages', stats.heartbeats + stats.pushes],
    ['  heartbeats recv/sent', `${stats.heartbeats} / ${stats.heartbeatsSent}`],
    ['  pushes recv/sent', `${stats.pushes} / ${stats.pushesSent}`],
    ['errors', stats.errors],
    ['latency p50', ms(p50) + sampled],
    ['latency p99', ms(p99)],
    ['latency max', ms(latencies.seen ? latencies.max : NaN)],
    ['requests/s', Math.round(stats.completed / duration)],
    ['pool created', pool.created],
    ['pool hits / misses', `${pool.hits} / ${pool.misses}`],
    ['pool active / idle', `${pool.active} / ${pool.idle}`],
    ['pool closed', pool.closed],
    ['coordinator conns', coordConnections],
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  console.log(rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n'))
  const flags = `--agents ${agentCount} --seconds ${seconds} --concurrency ${concurrency} --payload ${payload}`
  console.log(`\nreproduce: node examples/swarm.mjs ${flags}`)
  for (const [kind, count] of errorKinds) console.error(`error x${count}  ${kind}`)
  return stats.errors
}

/** Closes every transport; a close that never finishes would keep the process alive. */
async function closeAll(transports) {
  const closing = Promise.allSettled(transports.map((t) => t.close()))
  if (!(await within(closing, CLOSE_MS))) {
    console.error(`swarm: transports did not close within ${CLOSE_MS} ms`)
    process.exit(1)
  }
  for (const r of await closing) {
    if (r.status === 'rejected') {
      console.error(`swarm: close failed: ${r.reason?.message ?? r.reason}`)
      process.exitCode = 1
    }
  }
}

main().catch((err) => {
  console.error(`swarm: ${err?.code ? `${err.code}: ${err.message}` : err?.stack ?? err}`)
  process.exitCode = 1
})
