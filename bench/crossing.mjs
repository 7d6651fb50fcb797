// The cost of one crossing from JS to the runtime's thread and back, and of a whole
// request round trip, with client and server in this one process:
//   node bench/crossing.mjs            (threads wherever the OS puts them)
//   taskset -c 0 node bench/crossing.mjs   (both threads on one core)
// A crossing is timed as connect() to a peer already connected: the call goes to the
// runtime, finds the pooled connection, and resolves back on the JS thread.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')

const COUNT = 20_000
const WARM_UP = 2_000
const server = await QuicTransport.create({ listen: { host: '127.0.0.1', port: 0 } })
server.onRequest((msg) => msg.payload)
const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
const addr = `127.0.0.1:${server.address.port}`
await client.connect(addr)

async function perCall(body) {
  for (let i = 0; i < WARM_UP; i++) await body()
  const start = process.hrtime.bigint()
  for (let i = 0; i < COUNT; i++) await body()
  return Number(process.hrtime.bigint() - start) / COUNT / 1000
}

const payload = Buffer.alloc(64)
const crossing = await perCall(() => client.connect(addr))
const roundTrip = await perCall(() => client.request(addr, { type: 'ping', payload }))
console.log(`| crossing JS -> runtime -> JS (connect() when connected) | ${crossing.toFixed(1)} µs |`)
console.log(`| request round trip, 64 B, client and server in this process | ${roundTrip.toFixed(1)} µs |`)
await client.close()
await server.close()
