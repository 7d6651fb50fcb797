'use strict'
// The public JS API: `QuicTransport`, a thin layer over the generated binding
// (`binding.js`, never edited by hand). It turns AgentMessages into the binding's flat
// arguments (JSON is stringified and parsed here, never in Rust), maps native errors to
// `QuicTransportError`s with a stable `code`, wires AbortSignal, and decides when the
// transport keeps the Node process alive.

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
  requestTimeoutMs: 'number',
  maxIdleTimeoutMs: 'number',
  keepAliveMs: 'number',
  maxConcurrentStreams: 'number',
  maxMessageBytes: 'number',
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

function optionalString(value, name) {
  if (value !== undefined && value !== null && typeof value !== 'string') {
    throw invalidArg(`invalid ${name}: expected a string`)
  }
  return value ?? undefined
}

/** The payload as the binding takes it: bytes as-is, anything else as JSON text. */
function encodePayload(payload, name) {
  if (payload instanceof Uint8Array) return { text: undefined, data: payload }
  if (ArrayBuffer.isView(payload)) {
    return { text: undefined, data: new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength) }
  }
  let text
  try {
    text = JSON.stringify(payload === undefined ? null : payload)
  } catch (err) {
    throw new QuicTransportError('ERR_INVALID_ARG', `invalid ${name}: not JSON-serializable (${err.message})`)
  }
  return { text: text === undefined ? 'null' : text, data: undefined }
}

function encodeMetadata(metadata, name) {
  if (metadata === undefined || metadata === null) return undefined
  try {
    return JSON.stringify(metadata)
  } catch (err) {
    throw invalidArg(`invalid ${name}: not JSON-serializable (${err.message})`)
  }
}

/** An AgentMessage as the binding's flat fields. */
function encodeMessage(msg, name) {
  if (msg === null || typeof msg !== 'object') throw invalidArg(`invalid ${name}: expected an AgentMessage object`)
  if (typeof msg.type !== 'string' || msg.type === '') {
    throw invalidArg(`invalid ${name}.type: expected a non-empty string`)
  }
  const { text, data } = encodePayload(msg.payload, `${name}.payload`)
  return {
    id: optionalString(msg.id, `${name}.id`),
    type: msg.type,
    streamId: optionalString(msg.streamId, `${name}.streamId`),
    text,
    data,
    metadata: encodeMetadata(msg.metadata, `${name}.metadata`),
  }
}

function parsePeerJson(text, what) {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new QuicTransportError('ERR_PROTOCOL', `the peer sent ${what} that is not valid JSON (${err.message})`)
  }
}

/** A binding event as an AgentMessage. */
function decodeMessage(event) {
  const msg = {
    id: event.id,
    type: event.type,
    payload: event.text !== undefined && event.text !== null ? parsePeerJson(event.text, 'a payload') : event.data,
    streamId: event.streamId,
  }
  if (event.metadata !== undefined && event.metadata !== null) msg.metadata = parsePeerJson(event.metadata, 'metadata')
  return msg
}

function peerOf(event) {
  const peer = { address: event.peerAddress }
  if (event.peerFingerprint) peer.fingerprint = event.peerFingerprint
  return peer
}

function reportHandlerError(err) {
  process.emitWarning(err instanceof Error ? err : new Error(String(err)), {
    code: 'AGENTIC_FLOW_QUIC_HANDLER',
    detail: 'an onMessage handler threw; the message was dropped',
  })
}

const CREATE = Symbol('create')
// Keeps the event loop alive while a transport listens or has handlers, as an open
// net.Server or a socket with a 'data' listener would. Never fires.
const KEEP_ALIVE_MS = 2 ** 31 - 1

class QuicTransport {
  #native
  #requestHandler = null
  #messageHandler = null
  #keepAlive = null
  #closing = null
  #listening

  /**
   * Creates a transport: one UDP socket that listens (with `options.listen`), dials, or
   * both. See index.d.ts for the options.
   */
  static async create(options = {}) {
    const parsed = parseOptions(options)
    let transport
    const native = (() => {
      try {
        return NativeTransport.create(
          parsed,
          (events) => transport.#dispatchRequests(events),
          (events) => transport.#dispatchMessages(events),
        )
      } catch (err) {
        throw fromNative(err)
      }
    })()
    transport = new QuicTransport(CREATE, native, parsed.listen !== undefined)
    return transport
  }

  constructor(token, native, listening) {
    if (token !== CREATE) throw new TypeError('use QuicTransport.create(options)')
    this.#native = native
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
    try {
      await this.#native.connect(addr)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Sends a request and resolves to the reply AgentMessage. */
  async request(addr, msg, options = {}) {
    checkAddr(addr)
    const m = encodeMessage(msg, 'msg')
    if (options === null || typeof options !== 'object') throw invalidArg('invalid options: expected an object')
    const { timeoutMs, signal } = options
    if (timeoutMs !== undefined && typeof timeoutMs !== 'number') throw invalidArg('invalid timeoutMs: expected a number')
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArg('invalid signal: expected an AbortSignal')
    if (signal?.aborted) throw new QuicTransportError('ERR_ABORTED', 'operation aborted')
    const native = this.#native
    const token = signal ? native.cancelToken() : undefined
    const onAbort = () => native.cancel(token)
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const reply = await native.request(addr, m.id, m.type, m.streamId, m.text, m.data, m.metadata, timeoutMs, token)
      return decodeMessage(reply)
    } catch (err) {
      throw fromNative(err)
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Sends a one-way message; resolves once QUIC has taken it. */
  async send(addr, msg) {
    checkAddr(addr)
    const m = encodeMessage(msg, 'msg')
    try {
      await this.#native.send(addr, m.id, m.type, m.streamId, m.text, m.data, m.metadata)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** Sends several one-way messages in order, crossing into Rust once. */
  async sendBatch(addr, msgs) {
    checkAddr(addr)
    if (!Array.isArray(msgs)) throw invalidArg('invalid msgs: expected an array of AgentMessages')
    const batch = msgs.map((msg, i) => encodeMessage(msg, `msgs[${i}]`))
    try {
      await this.#native.sendBatch(addr, batch)
    } catch (err) {
      throw fromNative(err)
    }
  }

  /** The next one-way message not taken by an onMessage handler (optionally filtered). */
  async receive(addr, streamId) {
    if (addr !== undefined && addr !== null) checkAddr(addr)
    optionalString(streamId, 'streamId')
    try {
      const event = await this.#native.receive(addr ?? undefined, streamId ?? undefined)
      const msg = decodeMessage(event)
      msg.peer = peerOf(event)
      return msg
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
      this.#closing = this.#native.close().catch((err) => {
        throw fromNative(err)
      })
      this.#updateKeepAlive()
    }
    return this.#closing
  }

  #syncHandlers() {
    if (this.#closing) return
    this.#native.setHandlers(this.#requestHandler !== null, this.#messageHandler !== null)
    this.#updateKeepAlive()
  }

  #updateKeepAlive() {
    const wanted =
      !this.#closing && (this.#listening || this.#requestHandler !== null || this.#messageHandler !== null)
    if (wanted && !this.#keepAlive) this.#keepAlive = setInterval(() => {}, KEEP_ALIVE_MS)
    if (!wanted && this.#keepAlive) {
      clearInterval(this.#keepAlive)
      this.#keepAlive = null
    }
  }

  #dispatchRequests(events) {
    for (const event of events) this.#answer(event)
  }

  async #answer(event) {
    const native = this.#native
    try {
      const handler = this.#requestHandler
      if (!handler) throw new Error('this peer has no request handler (onRequest)')
      const payload = await handler(decodeMessage(event), peerOf(event))
      const { text, data } = encodePayload(payload, 'reply')
      native.respond(event.token, 'response', text, data, undefined, undefined)
    } catch (err) {
      const message = err && typeof err.message === 'string' ? err.message : String(err)
      try {
        native.respond(event.token, 'error', undefined, undefined, undefined, message)
      } catch {
        // The transport closed meanwhile; the requester has already been told.
      }
    }
  }

  #dispatchMessages(events) {
    const handler = this.#messageHandler
    for (const event of events) {
      if (!handler) continue
      try {
        const result = handler(decodeMessage(event), peerOf(event))
        if (result && typeof result.then === 'function') result.then(undefined, reportHandlerError)
      } catch (err) {
        reportHandlerError(err)
      }
    }
  }
}

module.exports = { QuicTransport, QuicTransportError, ERROR_CODES }
