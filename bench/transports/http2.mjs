// Benchmark adapter: HTTP/2 over TLS 1.3 (node:http2), one session, one stream per message;
// what an agent talking to an HTTP API uses today. Same interface as quic.mjs (see there).
//
//   POST /echo   -> 200, response body = request body
//   POST /oneway -> 204 once the body is fully received (counted then)
import http2 from 'node:http2'

export const name = 'http2'

// Flow-control windows (the defaults are 64 KiB). Keep them moderate: Node's Http2Session
// stops reading its socket while one of its writes is in flight, and one write carries up
// to a whole window of DATA. With windows larger than the kernel socket buffers, two peers
// uploading and echoing large bodies at the same time both block in write and never read
// again (seen here with 16 MiB stream + 1 GiB connection windows and 4 concurrent 64 MiB
// echoes). On loopback, 1-2 MiB windows are also as fast as or faster than 16 MiB ones.
const WINDOW = 1 << 20 // per stream
const SESSION_WINDOW = 1 << 21 // per connection
const options = {
  minVersion: 'TLSv1.3',
  settings: { maxConcurrentStreams: 1000, initialWindowSize: WINDOW },
  peerMaxConcurrentStreams: 1000, // assumed until the peer's SETTINGS arrive (default 100)
  // With the default 10 MB, 10000 one-way sends issued at once get streams refused
  // (NGHTTP2_ENHANCE_YOUR_CALM); more streams queue in nghttp2 past maxConcurrentStreams.
  maxSessionMemory: 4096, // MB
}

function collect(stream) {
  return new Promise((resolve, reject) => {
    const chunks = []
    stream.on('data', (c) => chunks.push(c))
    stream.once('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)))
    stream.once('error', reject)
    stream.once('close', () => reject(new Error(`http2: stream closed (code ${stream.rstCode})`)))
  })
}

export async function startServer({ host, port, cert, key }) {
  const counter = { count: 0, firstNs: 0, lastNs: 0 }
  const sockets = new Set()
  const server = http2.createSecureServer({ ...options, cert, key })
  // Track the raw TCP sockets: destroying them ends sessions and handshakes in progress.
  server.on('connection', (raw) => {
    sockets.add(raw)
    raw.on('close', () => sockets.delete(raw))
  })
  server.on('session', (session) => {
    session.on('error', () => {})
    session.setLocalWindowSize(SESSION_WINDOW)
  })
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {}) // streams are reset when a client goes away
    const path = headers[':path']
    collect(stream).then((body) => {
      if (stream.destroyed) return // the session went away meanwhile
      if (path === '/echo') {
        stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'content-length': body.length })
        stream.end(body)
      } else if (path === '/oneway') {
        const now = Number(process.hrtime.bigint())
        if (counter.count === 0) counter.firstNs = now
        counter.lastNs = now
        counter.count++
        stream.respond({ ':status': 204 }, { endStream: true })
      } else {
        stream.respond({ ':status': 404 }, { endStream: true })
      }
    }, () => {})
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => (server.off('error', reject), resolve()))
  })
  return {
    port: server.address().port,
    oneway: () => ({ ...counter }),
    resetOneway: () => Object.assign(counter, { count: 0, firstNs: 0, lastNs: 0 }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
      }),
  }
}

export async function connect({ host, port, ca }) {
  // Dial the host we were given; the certificate is checked for the name 'localhost'.
  const authority = `https://${host.includes(':') ? `[${host}]` : host}:${port}`
  const session = http2.connect(authority, { ...options, ca, servername: 'localhost' })
  await new Promise((resolve, reject) => {
    session.once('error', reject)
    session.once('connect', () => (session.off('error', reject), resolve()))
  })
  // Errors destroy the session, which closes (and thereby rejects) every open stream.
  session.on('error', () => {})
  session.setLocalWindowSize(SESSION_WINDOW)

  const post = (path, payload) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-length': payload.length })
    stream.end(payload)
    return stream
  }
  return {
    async request(payload) {
      const stream = post('/echo', payload)
      stream.once('response', (h) => {
        if (h[':status'] !== 200) stream.destroy(new Error(`http2: status ${h[':status']}`))
      })
      return collect(stream)
    },
    // HTTP/2 has no cheaper one-way message than a whole request/response exchange: a
    // stream needs a response to close, so send() resolves when the 204 headers arrive.
    async send(payload) {
      const stream = post('/oneway', payload)
      stream.resume()
      return new Promise((resolve, reject) => {
        stream.once('response', (h) =>
          h[':status'] === 204 ? resolve() : reject(new Error(`http2: status ${h[':status']}`)),
        )
        stream.once('error', reject)
        stream.once('close', () => reject(new Error(`http2: stream closed (code ${stream.rstCode})`)))
      })
    },
    close() {
      if (session.destroyed) return Promise.resolve()
      return new Promise((resolve) => {
        session.once('close', () => resolve())
        session.close() // graceful: GOAWAY, then wait for open streams to finish
      })
    },
  }
}
