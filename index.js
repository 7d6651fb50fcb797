'use strict'
// The public JS API: `QuicTransport`, a thin layer over the generated binding
// (`binding.js`, never edited by hand). It encodes AgentMessages as wire frames (JSON is
// stringified and parsed here, never in Rust), crosses into Rust once per tick with all
// of that tick's requests, sends and replies (wire.js), settles promises from the event
// batches Rust sends back, maps failures to `QuicTransportError`s with a stable `code`,
// wires AbortSignal, and decides when the transport keeps the Node process alive.

const { BatchWriter, Command, Kind, readEvents } = require('./wire.js')

const { NativeTransport, generateCertificate: nativeGenerateCertificate } = loadBinding()

/** The platform package this machine needs, e.g. `agentic-flow-quic-linux-x64-gnu`. */
function platformPackage() {
  let abi = ''
  if (process.platform === 'linux') {
    const report = typeof process.report?.getReport === 'function' ? process.report.getReport() : null
    abi = report && report.header && report.header.glibcVersionRuntime ? '-gnu' : '-musl'
  } else if (process.platform === 'win32') {
    abi = '-msvc'
  }
  return `agentic-flow-quic-${process.platform}-${process.arch}${abi}`
}

function loadBinding() {
  try {
    return require('./binding.js')
  } catch (cause) {
    const { optionalDependencies = {} } = require('./package.json')
    const wanted = platformPackage()
    const supported = Object.keys(optionalDependencies).join(', ') || 'see the README'
    const err = new Error(
      `agentic-flow-quic: no native binary for this platform. Install ${wanted} (npm install ${wanted}): ` +
        'it is an optional dependency, which npm skips with --omit=optional, or when the lockfile ' +
        `was made on another platform. Prebuilt packages: ${supported}. ` +
        'Elsewhere, build from source with Rust: npm run build.',
      { cause },
    )
    err.code = 'ERR_NATIVE_BINDING_MISSING'
    throw err
  }
}

/** Every `err.code` a rejection can carry. */
const ERROR_CODES = Object.freeze([
  'ERR_INVALID_ARG',
  'ERR_CONNECT',
  'ERR_TLS',
  'ERR_TIMEOUT',
  'ERR_ABORTED',
  'ERR_CONNECTION_LOST',
  'ERR_MESSAGE_TOO_LARGE',
  'ERR_REMOTE',
  'ERR_CLOSED',
  'ERR_PROTOCOL',
])

class QuicTransportError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.name = 'QuicTransportError'
    this.code = code
  }
}

const NATIVE_MESSAGE = /^\[(ERR_[A-Z_]+)\] ([\s\S]*)$/

/** A native rejection as a QuicTransportError; `fallback` for errors without a code. */
function fromNative(err, fallback = 'ERR_INVALID_ARG') {
  if (err instanceof QuicTransportError) return err
  const message = err && typeof err.message === 'string' ? err.message : String(err)
  const match = NATIVE_MESSAGE.exec(message)
  if (match && ERROR_CODES.includes(match[1])) return new QuicTransportError(match[1], match[2])
  // napi's own argument conversion failed: a value of the wrong type reached Rust.
  return new QuicTransportError(fallback, message, { cause: err })
}

function invalidArg(message) {
  return new QuicTransportError('ERR_INVALID_ARG', message)
}

// Option name -> expected type ('object' entries are checked by their own table).
const OPTION_TYPES = {
  listen: 'object',
  tls: 'object',
  serverName: 'string',
  connectTimeoutMs: 'number',
  initialRttMs: 'number',
  requestTimeoutMs: 'number',
  maxIdleTimeoutMs: 'number',
  keepAliveMs: 'number',
  maxConcurrentStreams: 'number',
  maxMessageBytes: 'number',
  zeroRtt: 'boolean',
}
const LISTEN_TYPES = { host: 'string', port: 'number' }
const TLS_TYPES = {
  cert: 'pem',
  key: 'pem',
  certPath: 'string',
  keyPath: 'string',
  ca: 'pem',
  caPath: 'string',
  pinnedFingerprints: 'string[]',
  insecureSkipVerify: 'boolean',
  requireClientCert: 'boolean',
}

function checkShape(value, types, prefix) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidArg(`${prefix || 'options'} must be an object`)
  }
  const out = {}
  for (const [key, v] of Object.entries(value)) {
    const name = prefix ? `${prefix}.${key}` : key
    const type = types[key]
    if (type === undefined) throw invalidArg(`unknown option ${name}`)
    if (v === undefined) continue
    const ok =
      type === 'pem'
        ? typeof v === 'string' || v instanceof Uint8Array
        : type === 'string[]'
          ? Array.isArray(v) && v.every((s) => typeof s === 'string')
          : type === 'object'
            ? v !== null && typeof v === 'object'
            : typeof v === type
    if (!ok) {
      const expected = { pem: 'a PEM string or Buffer', 'string[]': 'an array of strings' }[type] || `a ${type}`
      throw invalidArg(`invalid ${name}: expected ${expected}`)
    }
    out[key] = v
  }
  return out
}

function parseOptions(options) {
  const out = checkShape(options, OPTION_TYPES, '')
  if (out.listen) out.listen = checkShape(out.listen, LISTEN_TYPES, 'listen')
  if (out.tls) out.tls = checkShape(out.tls, TLS_TYPES, 'tls')
  return out
}

function checkAddr(addr, name = 'addr') {
  if (typeof addr !== 'string' || addr === '') throw invalidArg(`invalid ${name}: expected 'host:port'`)
}

// The `field` arguments below complete `name` in error messages only, so that a call
// that succeeds builds no strings.
function optionalString(value, name, field = '') {
  if (value !== undefined && value !== null && typeof value !== 'string') {
    throw invalidArg(`invalid ${name}${field}: expected a string`)
  }
  return value ?? undefined
}

/** The payload as the binding takes it: bytes as-is, anything else as JSON text. */
function encodePayload(payload, name, field = '') {
  if (payload instanceof Uint8Array) return { text: undefined, data: payload }
  if (ArrayBuffer.isView(payload)) {
    return { text: undefined, data: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength) }
  }
  let text
  try {
    text = JSON.stringify(payload === undefined ? null : payload)
  } catch (err) {
    throw new QuicTransportError('ERR_INVALID_ARG', `invalid ${name}${field}: not JSON-serializable (${err.message})`)
  }
  return { text: text === undefined ? 'null' : text, data: undefined }
}

function encodeMetadata(metadata, name, field) {
  if (metadata === undefined || metadata === null) return undefined
  try {
    return JSON.stringify(metadata)
  } catch (err) {
    throw invalidArg(`invalid ${name}${field}: not JSON-serializable (${err.message})`)
  }
}

/** An AgentMessage as the parts of a frame: { id, type, streamId, text | data, metadata }. */
function prepareMessage(msg, name) {
  if (msg === null || typeof msg !== 'object') throw invalidArg(`invalid ${name}: expected an AgentMessage object`)
  if (typeof msg.type !== 'string' || msg.type === '') {
    throw invalidArg(`invalid ${name}.type: expected a non-empty string`)
  }
  const { text, data } = encodePayload(msg.payload, name, '.payload')
  return {
    // Without one, the batch writer generates it (wire.js, generatedId).
    id: optionalString(msg.id, name, '.id') || undefined,
    type: msg.type,
    streamId: optionalString(msg.streamId, name, '.streamId') || '',
    text,
    data,
    metadata: encodeMetadata(msg.metadata, name, '.metadata'),
  }
}

function parsePeerJson(text, what) {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new QuicTransportError('ERR_PROTOCOL', `the peer sent ${what} that is not valid JSON (${err.message})`)
  }
}

/** A frame of an event batch as an AgentMessage (binary payloads are views, not copies). */
function frameMessage(buf, frame) {
  const msg = {
    id: frame.id,
    type: frame.type,
    payload: frame.json
      ? parsePeerJson(buf.toString('utf8', frame.payloadStart, frame.payloadEnd), 'a payload')
      : buf.subarray(frame.payloadStart, frame.payloadEnd),
    streamId: frame.streamId || 'default',
  }
  if (frame.metadata !== undefined) msg.metadata = parsePeerJson(frame.metadata, 'metadata')
  return msg
}

/** A `receive()` result (the binding's object form) as an AgentMessage. */
function incomingMessage(event) {
  const msg = {
    id: event.id,
    type: event.type,
    payload: event.text !== undefined && event.text !== null ? parsePeerJson(event.text, 'a payload') : event.data,
    streamId: event.streamId,
  }
  if (event.metadata !== undefined && event.metadata !== null) msg.metadata = parsePeerJson(event.metadata, 'metadata')
  const peer = { address: event.peerAddress }
  if (event.peerFingerprint) peer.fingerprint = event.peerFingerprint
  msg.peer = peer
  return msg
}

function reportHandlerError(err) {
  process.emitWarning(err instanceof Error ? err : new Error(String(err)), {
    code: 'AGENTIC_FLOW_QUIC_HANDLER',
    detail: 'an onMessage handler threw; the message was dropped',
  })
}

const closedError = () => new QuicTransportError('ERR_CLOSED', 'transport closed')
const abortedError = () => new QuicTransportError('ERR_ABORTED', 'operation aborted')
const MAX_TIMEOUT_MS = 86_400_000
// A tick's batch is submitted early once it holds this many bytes, so a burst of sends
// does not grow the batch buffer past what it keeps for reuse (wire.js, KEEP_AT_MOST),
// copying it at each doubling and allocating it again for the next batch.
const SUBMIT_AT = 256 * 1024

const CREATE = Symbol('create')
// A timer that never fires, ref'd while the transport must keep the event loop alive:
// while it listens or has handlers (as an open net.Server or a socket with a 'data'
// listener would), and while calls are in flight. Toggling ref() is cheap.
const KEEP_ALIVE_MS = 2 ** 31 - 1

class QuicTransport {
  #native
  #maxMessageBytes
  #requestHandler = null
  #messageHandler = null
  #keepAlive = null
  #closing = null
  #listening
  // Calls in flight: token -> { resolve, reject, reply }.
  #pending = new Map()
  #nextToken = 1
  // This tick's commands, submitted in one crossing on process.nextTick.
  #writer = new BatchWriter()
  #batchTokens = []
  #flushScheduled = false
  #flush = () => this.#submit()
  #sink = {
    reply: (token, buf, frame) => {
      const call = this.#take(token)
      if (!call) return
      try {
        call.resolve(frameMessage(buf, frame))
      } catch (err) {
        call.reject(err)
      }
    },
    failed: (token, code, message) => this.#take(token)?.reject(new QuicTransportError(code, message)),
    sent: (token) => this.#take(token)?.resolve(),
    request: (token, buf, frame, peer) => this.#answer(token, buf, frame, peer),
    message: (buf, frame, peer) => this.#deliver(buf, frame, peer),
  }

  /**
   * Creates a transport: one UDP socket that listens (with `options.listen`), dials, or
   * both. See index.d.ts for the options.
   */
  static async create(options = {}) {
    const parsed = parseOptions(options)
    let transport
    let native
    try {
      native = NativeTransport.create(parsed, (batch, detached) => transport.#onEvents(batch, detached))
    } catch (err) {
      throw fromNative(err)
    }
    transport = new QuicTransport(CREATE, native, parsed.listen !== undefined)
    return transport
  }

  constructor(token, native, listening) {
    if (token !== CREATE) throw new TypeError('use QuicTransport.create(options)')
    this.#native = native
    this.#maxMessageBytes = native.maxMessageBytes
    this.#listening = listening
    this.#updateKeepAlive()
  }

  /**
   * Generates a self-signed ECDSA P-256 certificate (for development, or as a stable
   * identity that peers pin): `{ cert, key, fingerprint }`, PEM strings.
   */
  static generateCertificate(names = ['localhost', '127.0.0.1', '::1']) {
    if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === 'string')) {
      throw invalidArg('invalid names: expected a non-empty array of DNS names or IP addresses')
    }
    try {
      return nativeGenerateCertificate(names)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** `{ host, port }` of the listener, or null (dial-only, or closed). */
  get address() {
    return this.#closing ? null : this.#native.address
  }

  /** `sha256/<base64>` of this transport's certificate: what peers pin. */
  get fingerprint() {
    return this.#native.fingerprint
  }

  /** Registers the request handler: `(msg, peer) => reply payload | Promise`. */
  onRequest(handler) {
    if (handler !== null && typeof handler !== 'function') throw invalidArg('invalid handler: expected a function')
    this.#requestHandler = handler
    this.#syncHandlers()
  }

  /** Registers the one-way message handler: `(msg, peer) => void`. */
  onMessage(handler) {
    if (handler !== null && typeof handler !== 'function') throw invalidArg('invalid handler: expected a function')
    this.#messageHandler = handler
    this.#syncHandlers()
  }

  /** Opens (or reuses) the pooled connection to `addr` and waits for the handshake. */
  async connect(addr) {
    checkAddr(addr)
    if (this.#closing) throw closedError()
    try {
      await this.#native.connect(addr)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /**
   * Closes the connections with `addr` (the one this transport dialled and one `addr`
   * opened to it) and resolves to whether there was one. One-way messages sent to
   * `addr` before the call go first, and the peer reads them before the close; requests
   * still waiting for a reply fail with ERR_CONNECTION_LOST. The next request to `addr`
   * dials again, resuming the TLS session (in 0-RTT with `zeroRtt`). See index.d.ts.
   */
  async disconnect(addr) {
    checkAddr(addr)
    if (this.#closing) throw closedError()
    // This tick's calls go first, as at close().
    this.#submit()
    try {
      return await this.#native.disconnect(addr)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Sends a request and resolves to the reply AgentMessage. */
  request(addr, msg, options = {}) {
    try {
      checkAddr(addr)
      const m = prepareMessage(msg, 'msg')
      if (options === null || typeof options !== 'object') throw invalidArg('invalid options: expected an object')
      const { timeoutMs, signal } = options
      if (
        timeoutMs !== undefined &&
        (typeof timeoutMs !== 'number' || !(timeoutMs > 0) || timeoutMs > MAX_TIMEOUT_MS)
      ) {
        throw invalidArg(`invalid timeoutMs: ${timeoutMs} is not a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS}`)
      }
      if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArg('invalid signal: expected an AbortSignal')
      if (this.#closing) throw closedError()
      if (signal?.aborted) throw abortedError()
      const token = this.#token()
      const w = this.#writer
      const start = w.len
      w.ensure(16)
      w.u8(Command.REQUEST)
      w.u32(token)
      w.u8(signal ? 1 : 0)
      w.u32(timeoutMs === undefined ? 0 : Math.ceil(timeoutMs))
      this.#writeFrame(start, token, addr, Kind.REQUEST, m)
      const promise = this.#expect(token)
      this.#submitIfDue()
      if (signal) {
        const onAbort = () => {
          const call = this.#take(token)
          if (!call) return
          this.#native.cancel(token)
          call.reject(abortedError())
        }
        signal.addEventListener('abort', onAbort, { once: true })
        const cleanup = () => signal.removeEventListener('abort', onAbort)
        promise.then(cleanup, cleanup)
      }
      return promise
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Sends a one-way message; resolves once QUIC has taken it. */
  send(addr, msg) {
    try {
      checkAddr(addr)
      const m = prepareMessage(msg, 'msg')
      if (this.#closing) throw closedError()
      const promise = this.#queueSend(addr, m)
      this.#submitIfDue()
      return promise
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Sends several one-way messages in order; refused whole if one is invalid or too large. */
  sendBatch(addr, msgs) {
    try {
      checkAddr(addr)
      if (!Array.isArray(msgs)) throw invalidArg('invalid msgs: expected an array of AgentMessages')
      const prepared = msgs.map((msg, i) => prepareMessage(msg, `msgs[${i}]`))
      if (this.#closing) throw closedError()
      const w = this.#writer
      const start = w.len
      const tokens = this.#batchTokens.length
      const sent = []
      try {
        for (const m of prepared) sent.push(this.#queueSend(addr, m))
      } catch (err) {
        // Take back what this call queued (nothing of it was submitted yet).
        w.truncate(start)
        for (const token of this.#batchTokens.splice(tokens)) this.#pending.delete(token)
        if (this.#pending.size === 0) this.#updateKeepAlive()
        for (const p of sent) p.catch(() => {})
        throw err
      }
      this.#submitIfDue()
      return Promise.all(sent).then(() => undefined)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** The next one-way message not taken by an onMessage handler (optionally filtered). */
  async receive(addr, streamId) {
    if (addr !== undefined && addr !== null) checkAddr(addr)
    optionalString(streamId, 'streamId')
    try {
      return incomingMessage(await this.#native.receive(addr ?? undefined, streamId ?? undefined))
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Pool and per-connection statistics, read from quinn. */
  getStats() {
    return this.#native.stats()
  }

  /**
   * Rejects every pending call with ERR_CLOSED, closes all connections and frees the
   * socket. Afterwards nothing of this transport keeps the process alive. Idempotent.
   */
  close() {
    if (!this.#closing) {
      this.#requestHandler = null
      this.#messageHandler = null
      // What this tick already queued goes out first, as with socket.end().
      this.#submit()
      this.#closing = this.#native
        .close()
        .catch((err) => {
          throw fromNative(err)
        })
        .finally(() => {
          for (const token of [...this.#pending.keys()]) this.#take(token).reject(closedError())
          this.#updateKeepAlive()
        })
      this.#updateKeepAlive()
    }
    return this.#closing
  }

  #token() {
    const token = this.#nextToken
    this.#nextToken = token >= 0xffffffff ? 1 : token + 1
    return token
  }

  #expect(token) {
    const promise = new Promise((resolve, reject) => this.#pending.set(token, { resolve, reject }))
    if (this.#pending.size === 1) this.#updateKeepAlive()
    return promise
  }

  #take(token) {
    const call = this.#pending.get(token)
    if (call) {
      this.#pending.delete(token)
      if (this.#pending.size === 0) this.#updateKeepAlive()
    }
    return call
  }

  #queueSend(addr, m) {
    const w = this.#writer
    const start = w.len
    const token = this.#token()
    w.ensure(8)
    w.u8(Command.SEND)
    w.u32(token)
    this.#writeFrame(start, token, addr, Kind.MESSAGE, m)
    return this.#expect(token)
  }

  /** Writes a command's address and frame; undoes the command if the frame is refused. */
  #writeFrame(start, token, addr, kind, m) {
    const w = this.#writer
    let size
    try {
      w.text16(addr, 'addr')
      size = w.frame(kind, m, start)
    } catch (err) {
      w.truncate(start)
      throw err instanceof RangeError ? invalidArg(`invalid msg: ${err.message}`) : err
    }
    if (size > this.#maxMessageBytes) {
      w.truncate(start)
      throw new QuicTransportError(
        'ERR_MESSAGE_TOO_LARGE',
        `message of ${size} bytes exceeds the limit of ${this.#maxMessageBytes} bytes`,
      )
    }
    this.#batchTokens.push(token)
    this.#schedule()
  }

  #schedule() {
    if (this.#flushScheduled) return
    this.#flushScheduled = true
    process.nextTick(this.#flush)
  }

  /**
   * Submits at once, after a call has queued all its commands: when a large payload was
   * not copied into the batch, before the caller can change the payload's bytes (Rust
   * copies them during the call); and when the batch reached SUBMIT_AT bytes.
   */
  #submitIfDue() {
    const w = this.#writer
    if (w.detached.length > 0 || w.len >= SUBMIT_AT) this.#submit()
  }

  /** Hands this tick's commands to Rust in one call. */
  #submit() {
    this.#flushScheduled = false
    const w = this.#writer
    if (w.len === 0) return
    const tokens = this.#batchTokens
    this.#batchTokens = []
    try {
      this.#native.submit(w.view(), w.detached.length > 0 ? w.detached : undefined)
    } catch (err) {
      const error = fromNative(err, 'ERR_PROTOCOL')
      for (const token of tokens) this.#take(token)?.reject(error)
    } finally {
      w.reset()
    }
  }

  #syncHandlers() {
    if (this.#closing) return
    this.#native.setHandlers(this.#requestHandler !== null, this.#messageHandler !== null)
    this.#updateKeepAlive()
  }

  #updateKeepAlive() {
    if (this.#closing && this.#pending.size === 0) {
      if (this.#keepAlive) clearInterval(this.#keepAlive)
      this.#keepAlive = null
      return
    }
    const wanted =
      this.#pending.size > 0 ||
      (!this.#closing && (this.#listening || this.#requestHandler !== null || this.#messageHandler !== null))
    if (!this.#keepAlive) {
      if (!wanted) return
      this.#keepAlive = setInterval(() => {}, KEEP_ALIVE_MS)
    }
    if (wanted !== this.#keepAlive.hasRef()) {
      if (wanted) this.#keepAlive.ref()
      else this.#keepAlive.unref()
    }
  }

  #onEvents(batch, detached) {
    readEvents(batch, this.#sink, detached)
  }

  /**
   * Runs the request handler and queues the reply (or the failure) for `token`. A
   * handler that returns a plain value is answered in the same tick, without a promise.
   */
  #answer(token, buf, frame, peer) {
    let result
    // The reply carries the request's id, so that Rust sends it as it is.
    const id = frame.id
    try {
      const handler = this.#requestHandler
      if (!handler) throw new Error('this peer has no request handler (onRequest)')
      result = handler(frameMessage(buf, frame), peer)
    } catch (err) {
      this.#respond(token, id, err, true)
      return
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      result.then(
        (payload) => this.#respond(token, id, payload, false),
        (err) => this.#respond(token, id, err, true),
      )
    } else {
      this.#respond(token, id, result, false)
    }
  }

  /**
   * Queues the RESPOND command for `token` (a request with id `id`): the reply's
   * payload, or the handler's error.
   */
  #respond(token, id, value, failed) {
    if (this.#closing) return
    let reply
    if (!failed) {
      try {
        const { text, data } = encodePayload(value, 'reply')
        reply = { kind: Kind.RESPONSE, m: { id, type: 'response', streamId: '', text, data, metadata: undefined } }
      } catch (err) {
        value = err
      }
    }
    if (!reply) {
      const message = value && typeof value.message === 'string' ? value.message : String(value)
      reply = { kind: Kind.ERROR, m: { id: '', type: 'ERR_REMOTE', streamId: '', data: Buffer.from(message), metadata: undefined } }
    }
    const w = this.#writer
    const write = ({ kind, m }) => {
      const start = w.len
      try {
        w.ensure(5)
        w.u8(Command.RESPOND)
        w.u32(token)
        w.frame(kind, m, start)
      } catch (err) {
        w.truncate(start)
        throw err
      }
    }
    try {
      write(reply)
    } catch (err) {
      // A reply the frame cannot hold (a payload of 4 GiB or more): the caller gets why.
      const message = Buffer.from(`the reply could not be sent: ${err.message}`)
      write({ kind: Kind.ERROR, m: { id: '', type: 'ERR_REMOTE', streamId: '', data: message, metadata: undefined } })
    }
    this.#schedule()
    this.#submitIfDue()
  }

  #deliver(buf, frame, peer) {
    const handler = this.#messageHandler
    if (!handler) return
    try {
      const result = handler(frameMessage(buf, frame), peer)
      if (result && typeof result.then === 'function') result.then(undefined, reportHandlerError)
    } catch (err) {
      reportHandlerError(err)
    }
  }
}

module.exports = { QuicTransport, QuicTransportError, ERROR_CODES }
