// New connections under heavy packet loss: how many fail, and how slow the slow ones are.
//   bash bench/loss-connect.sh [percent=20] [connections=60]   (root: a network namespace)
// In the namespace, a listener on port 47443 echoes; `connections` fresh transports, 6 at
// a time, each connect and make 20 requests. Prints each failure, then a JSON summary.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')

const count = Number(process.argv[2] ?? 60)
const server = await QuicTransport.create({ listen: { host: '127.0.0.1', port: 47443 } })
server.onRequest((m) => m.payload)
const addr = '127.0.0.1:47443'
const failures = {}
const millis = []
await Promise.all(
  Array.from({ length: 6 }, async (_, worker) => {
    for (let i = worker; i < count; i += 6) {
      const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
      const start = Date.now()
      try {
        await client.connect(addr)
        for (let k = 0; k < 20; k++) await client.request(addr, { type: 'echo', payload: k })
      } catch (err) {
        const key = `${err.code}: ${err.message}`
        failures[key] = (failures[key] ?? 0) + 1
        console.log(`failed after ${Date.now() - start} ms: ${key}`)
      }
      millis.push(Date.now() - start)
      await client.close()
    }
  }),
)
millis.sort((a, b) => a - b)
const at = (q) => millis[Math.min(millis.length - 1, Math.floor(q * millis.length))]
console.log(JSON.stringify({ connections: count, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: millis.at(-1), failures }))
await server.close()
