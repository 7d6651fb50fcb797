// Benchmark adapter: plain TLS 1.3 over one TCP connection (node:tls) with a minimal
// length-prefixed framing; the baseline a hand-rolled agent RPC would use. Same interface
// as quic.mjs (see there).
//
// Frame: [u32 BE length of the rest][u8 kind][u32 BE id][payload]
//   kind 1 = request, 2 = response (same id as its request), 3 = one-way (id unused).
import tls from 'node:tls'

export const name = 'tcp-tls'

const REQUEST = 1
const RESPONSE = 2
const ONEWAY = 3
const HEADER = 9 // 4 (length) + 1 (kind) + 4 (id)
const COPY_LIMIT = 64 * 1024 // payloads up to this size are copied next to their header

// Per-tick write batching: the first write in a tick corks the socket and schedules an
// uncork, so every frame written in the same tick leaves in one writev/TLS record batch.
// Returns socket.write's result (false = over the high-water mark, wait for 'drain').
function frameWriter(socket) {
  let corked = false
  const uncork = () => {
    corked = false
    socket.uncork()
  }
  return (kind, id, payload) => {
    if (!corked) {
      corked = true
      socket.cork()
      process.nextTick(uncork)
    }
    const small = payload.length <= COPY_LIMIT
    const head = Buffer.allocUnsafe(HEADER + (small ? payload.length : 0))
    head.writeUInt32BE(5 + payload.length, 0)
    head[4] = kind
    head.writeUInt32BE(id, 5)
    if (small) {
      payload.copy(head, HEADER)
      return socket.write(head)
    }
    socket.write(head) // large payload: no copy, header and payload go out as two buffers
    return socket.write(payload)
  }
}

// Incremental parser: keeps received chunks in a list and only copies when a frame spans
// several chunks (each byte is copied at most once). A frame inside one chunk is a view.
function frameParser(onFrame) {
  const chunks = []
  let buffered = 0
  let need = -1 // total size of the current frame (incl. length prefix), -1 = unknown
  const take = (n) => {
    buffered -= n
    if (chunks[0].length >= n) {
      const out = chunks[0].subarray(0, n)
      if (chunks[0].length === n) chunks.shift()
      else chunks[0] = chunks[0].subarray(n)
      return out
    }
    const out = Buffer.allocUnsafe(n)
    for (let off = 0; off < n; ) {
      const c = chunks[0]
      const k = Math.min(c.length, n - off)
      c.copy(out, off, 0, k)
      off += k
      if (k === c.length) chunks.shift()
      else chunks[0] = c.subarray(k)
    }
    return out
  }
  return (chunk) => {
    chunks.push(chunk)
    buffered += chunk.length
    for (;;) {
      if (need < 0) {
        if (buffered < 4) return
        if (chunks[0].length < 4) {
          chunks.unshift(take(4)) // rare: the length prefix itself spans chunks
          buffered += 4
        }
        const len = chunks[0].readUInt32BE(0)
        if (len < 5) throw new Error(`tcp-tls: bad frame length ${len}`)
        need = 4 + len
      }
      if (buffered < need) return
      const frame = take(need)
      need = -1
      onFrame(frame[4], frame.readUInt32BE(5), frame.subarray(HEADER))
    }
  }
}

const tlsOptions = { minVersion: 'TLSv1.3' }

export async function startServer({ host, port, cert, key }) {
  const counter = { count: 0, firstNs: 0, lastNs: 0 }
  const sockets = new Set()
  const server = tls.createServer({ ...tlsOptions, cert, key }, (socket) => {
    socket.on('error', () => {}) // peer resets are expected when clients go away
    socket.setNoDelay(true)
    const write = frameWriter(socket)
    let paused = false
    const parse = frameParser((kind, id, payload) => {
      if (kind === REQUEST) {
        // Echo; if the client is not reading its replies, stop reading its requests.
        if (!write(RESPONSE, id, payload) && !paused) {
          paused = true
          socket.pause()
          socket.once('drain', () => ((paused = false), socket.resume()))
        }
      } else if (kind === ONEWAY) {
        const now = Number(process.hrtime.bigint())
        if (counter.count === 0) counter.firstNs = now
        counter.lastNs = now
        counter.count++
      } else socket.destroy(new Error(`tcp-tls: unexpected frame kind ${kind}`))
    })
    socket.on('data', (chunk) => {
      try { parse(chunk) } catch (err) { socket.destroy(err) }
    })
  })
  // Track the raw TCP sockets, not the TLS ones: close() must also end handshakes in progress.
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
        server.close(() => resolve())
        for (const s of sockets) s.destroy()
      }),
  }
}

export async function connect({ host, port, ca }) {
  return over(await secureSocket({ ...tlsOptions, host, port, ca, servername: 'localhost' }))
}

// A reconnecting client for the `resume` scenario: one SecureContext for all its
// connections, and each one offering the TLS session the last one was given (TLS 1.3
// resumption: the handshake skips the certificate, but TCP's and TLS's round trips stay;
// Node's client sends no early data).
export async function connectResuming({ host, port, ca }) {
  const secureContext = tls.createSecureContext({ ...tlsOptions, ca })
  let session
  let current = null
  let resumed = false
  const open = async () => {
    const socket = await secureSocket({ ...tlsOptions, host, port, secureContext, servername: 'localhost', session }, (s) => {
      s.on('session', (ticket) => (session = ticket))
    })
    resumed = socket.isSessionReused()
    return over(socket)
  }
  return {
    request: async (payload) => {
      current ??= await open()
      return current.request(payload)
    },
    disconnect: async () => {
      if (!current) return
      // Tickets come after the handshake; one more round trip lets them arrive.
      await current.request(Buffer.alloc(0))
      await current.close()
      current = null
    },
    resumed: async () => resumed,
    close: async () => current?.close(),
  }
}

/** A TLS socket once its handshake is done; `setup` sees it first. */
async function secureSocket(options, setup = () => {}) {
  const socket = tls.connect(options)
  setup(socket)
  await new Promise((resolve, reject) => {
    socket.once('error', reject)
    socket.once('secureConnect', () => (socket.off('error', reject), resolve()))
  })
  return socket
}

/** The client interface over a connected socket. */
function over(socket) {
  socket.setNoDelay(true)
  const write = frameWriter(socket)
  const pending = new Map() // id -> { resolve, reject }
  let nextId = 0
  let failure = null // set once the connection is unusable
  let drain = null // one promise shared by every send() waiting for 'drain'

  const fail = (err) => {
    if (failure) return
    failure = err
    for (const p of pending.values()) p.reject(err)
    pending.clear()
  }
  const parse = frameParser((kind, id, payload) => {
    const p = kind === RESPONSE && pending.get(id)
    if (!p) throw new Error(`tcp-tls: unexpected frame kind ${kind} id ${id}`)
    pending.delete(id)
    p.resolve(payload)
  })
  socket.on('data', (chunk) => {
    try { parse(chunk) } catch (err) { socket.destroy(err) }
  })
  socket.on('error', (err) => fail(err))
  socket.on('close', () => fail(new Error('tcp-tls: connection closed')))

  return {
    request(payload) {
      if (failure) return Promise.reject(failure)
      return new Promise((resolve, reject) => {
        const id = nextId
        nextId = (nextId + 1) >>> 0
        pending.set(id, { resolve, reject })
        write(REQUEST, id, payload)
      })
    },
    send(payload) {
      if (failure) return Promise.reject(failure)
      if (write(ONEWAY, 0, payload)) return Promise.resolve()
      drain ??= new Promise((resolve, reject) => {
        const done = () => {
          drain = null
          socket.off('drain', done).off('close', done)
          failure ? reject(failure) : resolve()
        }
        socket.once('drain', done).once('close', done)
      })
      return drain
    },
    close() {
      if (socket.destroyed) return Promise.resolve()
      return new Promise((resolve) => {
        socket.once('close', () => resolve())
        socket.end() // flushes queued frames, then close_notify + FIN; the server closes too
        setTimeout(() => socket.destroy(), 5000).unref()
      })
    },
  }
}
