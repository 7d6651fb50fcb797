// A benchmark client process: `node bench/client.mjs <transport> <host> <port> <ca.pem> <scenario> [key=value …]`.
// Runs one scenario against a server started by bench/server.mjs and prints one JSON line.
// Scenarios (parameters with defaults):
//   connect  count=20          new connection + first 64 B reply, each time: latency samples
//   resume   count=20 gap=0    one transport reconnecting (its connection just closed
//                              with disconnect(), then `gap` ms idle) + first 64 B reply,
//                              each time: latency samples, and how many reconnects
//                              resumed their session (adapters with connectResuming:
//                              quic in 0-RTT, tcp-tls with TLS session resumption)
//   rtt      seconds=3 size=64 one request in flight: latency samples
//   idle     count=40 gap=55   one 64 B request after `gap` ms with nothing to do, each
//                              time: latency samples (what waking from idle costs; not
//                              in `npm run bench`: bash bench/ab.sh 3 idle <dir>:quic
//                              <dir>:tcp-tls -- gap=55)
//   rps      seconds=3 size=1024 concurrency=64: requests/s
//   oneway   count=200000 size=1024 window=4096: sends (the receiver counts; see run.mjs)
//   bulk     size=67108864 count=3: one payload echoed, MB/s each way
//   spawn10  count=5 agents=10: that many fresh agents connect and request at once: wall ms
//   memory   count=1000: open that many connections, print OPEN, wait for a stdin line, close
//   requests count=20000 size=1024 concurrency=64: exactly that many requests, no warm-up
//            (for instruction counts: bench/callgrind.sh)
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { latencySummary } from './stats.mjs'

const [transportName, host, portText, caPath, scenario, ...rest] = process.argv.slice(2)
const params = Object.fromEntries(rest.map((kv) => kv.split('=')).map(([k, v]) => [k, Number(v)]))
const transport = await import(`./transports/${transportName}.mjs`)
const target = { host, port: Number(portText), ca: readFileSync(caPath, 'utf8') }
const connect = () => transport.connect(target)
const now = () => process.hrtime.bigint()
const msSince = (start) => Number(now() - start) / 1e6
// The process's CPU time so far (user + system, both threads, start-up included), in ms:
// with the client pinned to one core, what a change costs when throughput is too noisy.
const cpuMs = () => {
  const { user, system } = process.cpuUsage()
  return Math.round((user + system) / 1000)
}
const param = (key, fallback) => (params[key] === undefined ? fallback : params[key])

async function timed(seconds, body) {
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) await body()
}

const scenarios = {
  async connect() {
    const samples = []
    for (let i = 0; i < param('count', 20); i++) {
      const start = now()
      const client = await connect()
      await client.request(Buffer.alloc(64, 1))
      samples.push(msSince(start))
      await client.close()
    }
    return latencySummary(samples)
  },

  async resume() {
    if (!transport.connectResuming) throw new Error(`${transportName} has no resuming connect`)
    const client = await transport.connectResuming(target)
    const payload = Buffer.alloc(64, 1)
    await client.request(payload) // the first connection: a full handshake, and a session
    const samples = []
    let resumed = 0
    for (let i = 0; i < param('count', 20); i++) {
      await client.disconnect() // not timed, as `connect` does not time closing
      if (param('gap', 0) > 0) await new Promise((resolve) => setTimeout(resolve, param('gap', 0)))
      const start = now()
      await client.request(payload)
      samples.push(msSince(start))
      if (await client.resumed()) resumed++
    }
    await client.close()
    return { ...latencySummary(samples), resumed }
  },

  async idle() {
    const client = await connect()
    const payload = Buffer.alloc(64, 7)
    await client.request(payload)
    const samples = []
    for (let i = 0; i < param('count', 40); i++) {
      await new Promise((resolve) => setTimeout(resolve, param('gap', 55)))
      const start = now()
      await client.request(payload)
      samples.push(msSince(start))
    }
    await client.close()
    return latencySummary(samples)
  },

  async rtt() {
    const client = await connect()
    const payload = Buffer.alloc(param('size', 64), 7)
    await timed(0.5, () => client.request(payload)) // warm-up
    const samples = []
    await timed(param('seconds', 3), async () => {
      const start = now()
      await client.request(payload)
      samples.push(msSince(start))
    })
    await client.close()
    return latencySummary(samples)
  },

  async rps() {
    const client = await connect()
    const payload = Buffer.alloc(param('size', 1024), 7)
    const concurrency = param('concurrency', 64)
    const workers = (seconds, counter) =>
      Promise.all(
        Array.from({ length: concurrency }, () =>
          timed(seconds, async () => {
            const start = now()
            await client.request(payload)
            counter.samples.push(msSince(start))
            counter.requests++
          }),
        ),
      )
    await workers(0.5, { requests: 0, samples: [] }) // warm-up
    const counter = { requests: 0, samples: [] }
    const start = now()
    await workers(param('seconds', 3), counter)
    const seconds = msSince(start) / 1000
    await client.close()
    return { requests: counter.requests, seconds, rps: counter.requests / seconds, ...latencySummary(counter.samples) }
  },

  async oneway() {
    const client = await connect()
    const payload = Buffer.alloc(param('size', 1024), 7)
    const count = param('count', 200000)
    const window = param('window', 4096)
    // At most `window` sends pending; a counter and one waiter keep this O(1) per send.
    let inFlight = 0
    let failure = null
    let wake = null
    const settle = () => {
      inFlight--
      if (wake) {
        const resume = wake
        wake = null
        resume()
      }
    }
    const start = now()
    for (let i = 0; i < count && !failure; i++) {
      inFlight++
      client.send(payload).then(settle, (err) => {
        failure = err
        settle()
      })
      while (inFlight >= window) await new Promise((resolve) => (wake = resolve))
    }
    while (inFlight > 0) await new Promise((resolve) => (wake = resolve))
    if (failure) throw failure
    const seconds = msSince(start) / 1000
    // Close only after the run's driver has read the receiver's count.
    process.stdout.write(`${JSON.stringify({ sent: count, seconds, sendRate: count / seconds, cpuMs: cpuMs() })}\n`)
    await waitForLine()
    await client.close()
    return null
  },

  async bulk() {
    const client = await connect()
    const payload = Buffer.alloc(param('size', 64 << 20), 3)
    const seconds = []
    for (let i = 0; i < param('count', 3); i++) {
      const start = now()
      const reply = await client.request(payload)
      seconds.push(msSince(start) / 1000)
      if (reply.length !== payload.length) throw new Error(`bulk reply of ${reply.length} bytes`)
    }
    await client.close()
    seconds.sort((a, b) => a - b)
    const median = seconds[Math.floor(seconds.length / 2)]
    // Each way: the payload travels out and back within one round trip.
    return { bytes: payload.length, medianSeconds: median, mbPerSec: payload.length / median / 1e6 }
  },

  async spawn10() {
    const walls = []
    for (let i = 0; i < param('count', 5); i++) {
      const start = now()
      const agents = await Promise.all(
        Array.from({ length: param('agents', 10) }, async () => {
          const client = await connect()
          await client.request(Buffer.alloc(64, 1))
          return client
        }),
      )
      walls.push(msSince(start))
      await Promise.all(agents.map((a) => a.close()))
    }
    return { ...latencySummary(walls), wallMs: latencySummary(walls).p50Ms }
  },

  async requests() {
    const client = await connect()
    const payload = Buffer.alloc(param('size', 1024), 7)
    let left = param('count', 20000)
    const start = now()
    await Promise.all(
      Array.from({ length: param('concurrency', 64) }, async () => {
        while (left-- > 0) await client.request(payload)
      }),
    )
    const seconds = msSince(start) / 1000
    await client.close()
    return { requests: param('count', 20000), seconds }
  },

  async memory() {
    const count = param('count', 1000)
    const clients = []
    for (let i = 0; i < count; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, count - i) }, async () => {
          const client = await connect()
          await client.request(Buffer.alloc(16, 1))
          return client
        }),
      )
      clients.push(...batch)
    }
    process.stdout.write(`OPEN ${clients.length}\n`)
    await waitForLine()
    await Promise.all(clients.map((c) => c.close()))
    return null
  },
}

function waitForLine() {
  return new Promise((resolve) => {
    const lines = createInterface({ input: process.stdin })
    lines.once('line', () => {
      lines.close()
      resolve()
    })
    lines.once('close', resolve)
  })
}

if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`)
const result = await scenarios[scenario]()
if (result) process.stdout.write(`${JSON.stringify({ ...result, cpuMs: cpuMs() })}\n`)
