// Benchmark adapter for agentic-flow-quic (this package). Every adapter in this folder
// exports the same interface; see bench/run.mjs for how scenarios use it.
//
//   startServer({ host, port, cert, key }) -> { port, close(), oneway() }
//     Echoes every request (the reply payload is the request payload) and counts
//     one-way messages: oneway() -> { count, firstNs, lastNs } (process.hrtime.bigint()
//     of the first and last message received, as Numbers).
//   connect({ host, port, ca }) -> { request(buf) -> Promise<Buffer>, send(buf) -> Promise,
//                                    close() -> Promise }
//     One connection (the transport's own pooling/multiplexing), trusting `ca` (PEM) for
//     the name 'localhost'. connect() resolves once the connection is established.
//   connectResuming({ host, port, ca }) -> { request(buf), disconnect(), resumed(), close() }
//     (optional) A client that keeps what it needs to resume a session: disconnect()
//     closes its connection, so that the next request dials again; resumed() tells
//     whether that connection resumed. Here: 0-RTT, the next request leaving with the
//     first packet.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../../index.js')

export const name = 'quic'

// The bulk scenario echoes 64 MiB; the default limit is 16 MiB.
const MAX_MESSAGE_BYTES = 128 * 1024 * 1024

export async function startServer({ host, port, cert, key }) {
  // zeroRtt for the `resume` scenario; a client without a session makes a full
  // handshake as before.
  const transport = await QuicTransport.create({ listen: { host, port }, tls: { cert, key }, maxMessageBytes: MAX_MESSAGE_BYTES, zeroRtt: true })
  transport.onRequest((msg) => msg.payload)
  const counter = { count: 0, firstNs: 0, lastNs: 0 }
  transport.onMessage(() => {
    const now = Number(process.hrtime.bigint())
    if (counter.count === 0) counter.firstNs = now
    counter.lastNs = now
    counter.count++
  })
  return {
    port: transport.address.port,
    oneway: () => ({ ...counter }),
    resetOneway: () => Object.assign(counter, { count: 0, firstNs: 0, lastNs: 0 }),
    close: () => transport.close(),
  }
}

export async function connect({ host, port, ca }) {
  const transport = await QuicTransport.create({ tls: { ca }, maxMessageBytes: MAX_MESSAGE_BYTES })
  const addr = `${host}:${port}`
  await transport.connect(addr)
  return {
    request: async (payload) => (await transport.request(addr, { type: 'echo', payload })).payload,
    send: (payload) => transport.send(addr, { type: 'oneway', payload }),
    close: () => transport.close(),
  }
}

// A connection's session tickets arrive just after its handshake ends, which can be
// after its first reply; the server sends them before it answers a later request, so a
// reconnect makes one more round trip first, and has a session to resume.
export async function connectResuming({ host, port, ca }) {
  const transport = await QuicTransport.create({ tls: { ca }, zeroRtt: true })
  const addr = `${host}:${port}`
  return {
    request: async (payload) => (await transport.request(addr, { type: 'echo', payload })).payload,
    disconnect: async () => {
      await transport.request(addr, { type: 'echo', payload: Buffer.alloc(0) })
      await transport.disconnect(addr)
    },
    // Whether the connection took its requests in 0-RTT (known once its handshake ends).
    resumed: async () => {
      for (let i = 0; i < 20; i++) {
        const [conn] = transport.getStats().connections
        if (conn?.zeroRtt) return true
        await new Promise((resolve) => setTimeout(resolve, 1))
      }
      return false
    },
    close: () => transport.close(),
  }
}
