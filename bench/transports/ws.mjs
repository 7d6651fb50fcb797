// Benchmark adapter: WebSocket over TLS 1.3 (the `ws` package on node:https), one
// connection; what agents with a persistent socket use today. Same interface as quic.mjs.
//
// Binary message: [u8 kind][u32 BE id][payload]
//   kind 1 = request, 2 = response (same id as its request), 3 = one-way (id unused).
import https from 'node:https'
import { WebSocketServer, WebSocket } from 'ws'

export const name = 'ws'

const REQUEST = 1
const RESPONSE = 2
const ONEWAY = 3
const HEADER = 5
const MAX_PAYLOAD = 128 * 1024 * 1024 // room for 64 MiB payloads plus header (default 100 MiB)
const HIGH_WATER = 16 * 1024 * 1024 // bufferedAmount above which we wait before going on
const tlsOptions = { minVersion: 'TLSv1.3' }

function frame(kind, id, payload) {
  const buf = Buffer.allocUnsafe(HEADER + payload.length)
  buf[0] = kind
  buf.writeUInt32BE(id, 1)
  payload.copy(buf, HEADER)
  return buf
}

// Calls done() once ws has less than HIGH_WATER bytes queued (or is no longer open).
function whenBelowHighWater(ws, done) {
  if (ws.bufferedAmount > HIGH_WATER && ws.readyState === WebSocket.OPEN) setImmediate(whenBelowHighWater, ws, done)
  else done()
}

export async function startServer({ host, port, cert, key }) {
  const counter = { count: 0, firstNs: 0, lastNs: 0 }
  const server = https.createServer({ ...tlsOptions, cert, key })
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: MAX_PAYLOAD })
  wss.on('connection', (ws) => {
    ws.on('error', () => {}) // peer resets are expected when clients go away
    let paused = false
    ws.on('message', (data, isBinary) => {
      if (!isBinary || data.length < HEADER) return ws.terminate()
      if (data[0] === REQUEST) {
        data[0] = RESPONSE // echo in place: the received buffer is ours, id and payload stay
        ws.send(data)
        // If the client is not reading its replies, stop reading its requests.
        if (ws.bufferedAmount > HIGH_WATER && !paused) {
          paused = true
          ws.pause()
          whenBelowHighWater(ws, () => ((paused = false), ws.resume()))
        }
      } else if (data[0] === ONEWAY) {
        const now = Number(process.hrtime.bigint())
        if (counter.count === 0) counter.firstNs = now
        counter.lastNs = now
        counter.count++
      } else ws.terminate()
    })
  })
  // Track the raw TCP sockets: destroying them ends connections and handshakes in progress.
  const sockets = new Set()
  server.on('connection', (raw) => {
    sockets.add(raw)
    raw.on('close', () => sockets.delete(raw))
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
        wss.close() // (leaves open connections alone)
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
      }),
  }
}

export async function connect({ host, port, ca }) {
  // Dial the host we were given; the certificate is checked for the name 'localhost'.
  const url = `wss://${host.includes(':') ? `[${host}]` : host}:${port}`
  const ws = new WebSocket(url, {
    ...tlsOptions,
    ca,
    servername: 'localhost',
    perMessageDeflate: false,
    maxPayload: MAX_PAYLOAD,
  })
  await new Promise((resolve, reject) => {
    ws.once('error', reject)
    ws.once('open', () => (ws.off('error', reject), resolve()))
  })
  const pending = new Map() // id -> { resolve, reject }
  let nextId = 0
  let failure = null // set once the connection is unusable
  const fail = (err) => {
    if (failure) return
    failure = err
    for (const p of pending.values()) p.reject(err)
    pending.clear()
  }
  ws.on('message', (data) => {
    const p = data.length >= HEADER && data[0] === RESPONSE && pending.get(data.readUInt32BE(1))
    if (!p) return ws.terminate()
    pending.delete(data.readUInt32BE(1))
    p.resolve(data.subarray(HEADER))
  })
  ws.on('error', (err) => fail(err))
  ws.on('close', (code) => fail(new Error(`ws: connection closed (code ${code})`)))

  return {
    request(payload) {
      if (failure) return Promise.reject(failure)
      return new Promise((resolve, reject) => {
        const id = nextId
        nextId = (nextId + 1) >>> 0
        pending.set(id, { resolve, reject })
        ws.send(frame(REQUEST, id, payload), (err) => {
          if (err && pending.delete(id)) reject(err)
        })
      })
    },
    send(payload) {
      if (failure) return Promise.reject(failure)
      // The callback runs once ws has written the message to the socket.
      return new Promise((resolve, reject) => {
        ws.send(frame(ONEWAY, 0, payload), (err) => (err ? reject(err) : whenBelowHighWater(ws, resolve)))
      })
    },
    close() {
      if (ws.readyState === WebSocket.CLOSED) return Promise.resolve()
      return new Promise((resolve) => {
        ws.once('close', () => resolve())
        ws.close() // close handshake; the server then ends the TCP connection
      })
    },
  }
}
