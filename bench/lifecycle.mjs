// Costs of a transport's life cycle, in one process (no network beyond loopback):
//   taskset -c 0 node --expose-gc bench/lifecycle.mjs
// create(): p50 of 300 create() + close() pairs (the create() part); close(): p50 of 100
// dial-only transports closed right after a request to a listener in this process; and a
// JS -> runtime -> JS crossing (connect() to a connected peer) and the process's RSS,
// before and after 2,000 more create()/close() pairs (with a full GC, so only memory
// that is still referenced counts).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')

const now = () => process.hrtime.bigint()
const us = (start) => Number(now() - start) / 1000
const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const server = await QuicTransport.create({ listen: { host: '127.0.0.1', port: 0 } })
server.onRequest((m) => m.payload)
const addr = `127.0.0.1:${server.address.port}`
const dial = () => QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })

const creates = []
for (let i = 0; i < 300; i++) {
  const start = now()
  const t = await QuicTransport.create({})
  creates.push(us(start))
  await t.close()
}

const closes = []
for (let i = 0; i < 100; i++) {
  const t = await dial()
  await t.request(addr, { type: 'echo', payload: i })
  const start = now()
  await t.close()
  closes.push(us(start))
}

const client = await dial()
await client.connect(addr)
async function crossing() {
  for (let i = 0; i < 2000; i++) await client.connect(addr)
  const start = now()
  for (let i = 0; i < 5000; i++) await client.connect(addr)
  return us(start) / 5000
}
async function rssMiB() {
  for (let i = 0; i < 3; i++) {
    globalThis.gc?.()
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return process.memoryUsage().rss / 2 ** 20
}
const before = { crossingUs: await crossing(), rssMiB: await rssMiB() }
for (let i = 0; i < 2000; i++) await (await QuicTransport.create({})).close()
const after = { crossingUs: await crossing(), rssMiB: await rssMiB() }
await client.close()
await server.close()

const f = (x) => Number(x.toFixed(1))
console.log(JSON.stringify({
  createP50Us: f(median(creates)),
  closeP50Us: f(median(closes)),
  crossingUs: { before: f(before.crossingUs), after2000: f(after.crossingUs) },
  rssMiB: { before: f(before.rssMiB), after2000: f(after.rssMiB) },
}))
