// Public types of agentic-flow-quic. `index.js` implements them over the generated
// binding (`binding.d.ts`, which types the raw native class and is not public API).

/// <reference types="node" />

/** Every `code` a {@link QuicTransportError} can carry. */
export type ErrorCode =
  /** An option or argument is invalid; the message names it. */
  | 'ERR_INVALID_ARG'
  /** No connection could be made (nothing listening, unreachable, no handshake within `connectTimeoutMs`). */
  | 'ERR_CONNECT'
  /** TLS failed: a certificate was rejected, or no way to trust the peer is configured. */
  | 'ERR_TLS'
  /** The request got no reply within its timeout. */
  | 'ERR_TIMEOUT'
  /** The caller's AbortSignal aborted the request. */
  | 'ERR_ABORTED'
  /** The connection broke while the call was in flight. */
  | 'ERR_CONNECTION_LOST'
  /** The message exceeds `maxMessageBytes` (this side's, or the peer's). */
  | 'ERR_MESSAGE_TOO_LARGE'
  /** The peer's request handler threw (or it has none); the message carries its text. */
  | 'ERR_REMOTE'
  /** The transport was closed. */
  | 'ERR_CLOSED'
  /** The peer broke the wire protocol. */
  | 'ERR_PROTOCOL'

/** The list of every {@link ErrorCode}. */
export declare const ERROR_CODES: readonly ErrorCode[]

/** Every rejection and throw of this package is one of these. */
export declare class QuicTransportError extends Error {
  readonly name: 'QuicTransportError'
  /** Stable, machine-readable: branch on this, not on the message. */
  readonly code: ErrorCode
}

/** Bytes of a PEM file, as text or as a Buffer. */
export type Pem = string | Uint8Array

export interface ListenOptions {
  /** Address to listen on. Default `'127.0.0.1'`. */
  host?: string
  /** UDP port; 0 picks a free one (read it from `address`). Default 0. */
  port?: number
}

export interface TlsOptions {
  /** This transport's certificate chain (PEM). Without one, a self-signed ECDSA P-256 certificate is generated. */
  cert?: Pem
  /** The private key for `cert` (PEM: PKCS#8, PKCS#1 or SEC1). */
  key?: Pem
  /** Path of a PEM certificate chain file, instead of `cert`. */
  certPath?: string
  /** Path of a PEM private key file, instead of `key`. */
  keyPath?: string
  /** Root certificates (PEM) that peers' certificates must chain to. */
  ca?: Pem
  /** Path of a PEM file of root certificates, instead of `ca`. */
  caPath?: string
  /** Accepted peer certificates, as `'sha256/<base64 SHA-256 of the DER certificate>'` (see `fingerprint`). */
  pinnedFingerprints?: string[]
  /** Accept any peer certificate. Development only: anyone on the path can impersonate the peer. Default false. */
  insecureSkipVerify?: boolean
  /** A listener demands a client certificate and verifies it with `ca` / `pinnedFingerprints` (mutual TLS). Default false. */
  requireClientCert?: boolean
}

export interface TransportOptions {
  /** Listen for connections. Without it the transport only dials. */
  listen?: ListenOptions
  /** Identity and trust. A dial verifies the server: with none of `ca`, `pinnedFingerprints`, `insecureSkipVerify` it fails with `ERR_TLS`. */
  tls?: TlsOptions
  /** The name the server's certificate must carry. Default `'localhost'`. */
  serverName?: string
  /** Deadline for a handshake this transport starts (dialling), in ms. Default 5000. A listener waits for a handshake it accepted up to `maxIdleTimeoutMs` (or this, if longer). */
  connectTimeoutMs?: number
  /** The round-trip time assumed until one is measured, in ms: a lost handshake packet is sent again after three times this, each later retry waiting twice as long. Default 100 (RFC 9002 suggests 333), at most 10000. */
  initialRttMs?: number
  /** Default deadline of a request, in ms (also how long a listener waits for its handler). Default 30000. */
  requestTimeoutMs?: number
  /** A connection without traffic for this long closes and leaves the pool, in ms. Default 30000. */
  maxIdleTimeoutMs?: number
  /** Send keep-alives this often (ms), so idle connections stay open. Default: off. */
  keepAliveMs?: number
  /** Requests in flight per connection; past it, requests wait for a free stream (they never fail or vanish). Default 1000. */
  maxConcurrentStreams?: number
  /** Largest message (payload plus id, type, streamId, metadata) sent or accepted, in bytes. Default 16 MiB. */
  maxMessageBytes?: number
  /**
   * 0-RTT. Dialling an address this transport has been connected to before (it keeps
   * the session tickets servers give it, per address), the first requests leave with the
   * first packet instead of after the handshake; a listener answers them before the
   * handshake ends. Both sides must enable it; otherwise, or when the server no longer
   * has the session, the requests go again after the handshake, transparently. A
   * reconnect whose handshake does not end within `connectTimeoutMs` fails its requests
   * with `ERR_CONNECT`, as a dial would, but the server may have run them already (it
   * answers before the handshake ends). One-way messages never go in 0-RTT. A request
   * sent in 0-RTT can be replayed by someone on the network path who records it: a
   * listener takes each session ticket once, so the same listener process refuses a
   * replay, and another process never issued the ticket; but enable it only for requests
   * that are safe to run twice. A listener with `requireClientCert` takes 0-RTT requests
   * only once the client is authenticated. Default false.
   */
  zeroRtt?: boolean
}

/** JSON-serializable values. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** The message shape agentic-flow agents use. */
export interface AgentMessage<P = unknown> {
  /** Generated when absent. A reply carries its request's id. */
  id?: string
  /** `'task'`, `'result'`, `'status'`, `'coordination'`, `'heartbeat'` or any other string. */
  type: string
  /**
   * Any JSON value, or bytes (a Buffer/Uint8Array arrives as a Buffer). Bytes are copied
   * before the call that takes the message returns: the caller may reuse its buffer.
   */
  payload?: P
  /** Any JSON value. */
  metadata?: unknown
  /** The ordered channel of a one-way message. Default `'default'`. */
  streamId?: string
}

/** A message as it arrives: all fields present. */
export interface ReceivedMessage<P = unknown> extends AgentMessage<P> {
  id: string
  streamId: string
  payload: P
}

/** Who sent a request or message. */
export interface Peer {
  /** `'host:port'`. A listener can `send` to it: the message travels over the connection the peer opened. */
  address: string
  /** `sha256/…` of the client certificate, with mutual TLS. */
  fingerprint?: string
}

/** Returns the reply's payload (any JSON value or bytes), or a Promise of it. Throwing rejects the caller with `ERR_REMOTE`. */
export type RequestHandler = (msg: ReceivedMessage, peer: Peer) => unknown | Promise<unknown>

/** Takes a one-way message. Errors it throws are reported with `process.emitWarning` and the message is dropped. */
export type MessageHandler = (msg: ReceivedMessage, peer: Peer) => void | Promise<void>

export interface RequestOptions {
  /** Deadline for this request, in ms. Default: the transport's `requestTimeoutMs`. */
  timeoutMs?: number
  /** Aborting it rejects the request with `ERR_ABORTED` and resets its stream. */
  signal?: AbortSignal
}

export interface PoolStats {
  /** Open pooled connections with calls in flight. */
  active: number
  /** Open pooled connections with nothing in flight. */
  idle: number
  /** Connections the pool has made. */
  created: number
  /** Pooled connections that closed (idle timeout, loss, peer close). */
  closed: number
  /** Connection look-ups served by an open or in-progress connection (each request is one; a one-way channel is one when its stream opens). */
  hits: number
  /** Connection look-ups that had to dial. */
  misses: number
}

export interface ConnectionStats {
  /** `'host:port'` of the peer. */
  remoteAddress: string
  /** Whether this side dialled it. */
  outbound: boolean
  /** Smoothed round-trip time, ms. */
  rttMs: number
  /** Congestion window, bytes. */
  congestionWindow: number
  /** UDP payload bytes sent. */
  bytesSent: number
  /** UDP payload bytes received. */
  bytesReceived: number
  /** Packets declared lost. */
  lostPackets: number
  /** Streams this side opened. */
  streamsOpened: number
  /** Largest UDP payload this side sends on the path, bytes: 1200 at first, raised by MTU discovery (up to 1452). */
  mtu: number
  /** Requests went in 0-RTT on this connection and were taken (dialled: ours left with the first packet; accepted: the peer's were answered before the handshake ended). See `zeroRtt`. */
  zeroRtt: boolean
}

export interface TransportStats {
  pool: PoolStats
  /** Every open connection, dialled and accepted. */
  connections: ConnectionStats[]
}

/** A certificate for development or for pinning: PEM strings and the certificate's fingerprint. */
export interface GeneratedCertificate {
  cert: string
  key: string
  fingerprint: string
}

/**
 * A QUIC transport for agents: one UDP socket that listens, dials, or both. Requests
 * each get their own stream on one pooled connection per peer; one-way messages are
 * ordered per (peer, streamId).
 *
 * @example
 * const server = await QuicTransport.create({ listen: { port: 4433 } })
 * server.onRequest(async (msg) => ({ done: msg.payload }))
 * const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
 * const reply = await client.request('127.0.0.1:4433', { type: 'task', payload: 42 })
 */
export declare class QuicTransport {
  private constructor()

  /** Creates a transport. Rejects with `ERR_INVALID_ARG` for bad options (unreadable or unparsable PEM included). */
  static create(options?: TransportOptions): Promise<QuicTransport>

  /** Generates a self-signed ECDSA P-256 certificate for `names` (default localhost, 127.0.0.1, ::1). */
  static generateCertificate(names?: string[]): GeneratedCertificate

  /** Where the listener listens, or null (dial-only, or closed). */
  readonly address: { host: string; port: number } | null

  /** `sha256/<base64>` of this transport's certificate: what peers put in `pinnedFingerprints`. */
  readonly fingerprint: string

  /** Sets (or, with null, removes) the request handler. Without one, requests get `ERR_REMOTE`. */
  onRequest(handler: RequestHandler | null): void

  /** Sets (or, with null, removes) the one-way message handler. Without one, messages wait for `receive()`. */
  onMessage(handler: MessageHandler | null): void

  /** Opens (or reuses) the pooled connection to `addr` (`'host:port'`) and resolves once the handshake is done. */
  connect(addr: string): Promise<void>

  /**
   * Closes the connections with `addr` (`'host:port'`): the one this transport dialled and
   * one `addr` opened to it (a connection still in its handshake is not affected).
   * Resolves to whether there was one. One-way messages sent to `addr` before the call
   * (in this tick too) go first, on that connection, and the peer reads them before it
   * closes (at most 2 s in all, as at `close()`). Requests still waiting for a reply on it
   * fail with `ERR_CONNECTION_LOST`. Later calls to `addr` dial again and resume the TLS
   * session (in 0-RTT with `zeroRtt`); a request made in the same tick may too, if it had
   * not reached the connection yet. Rejects with `ERR_INVALID_ARG` for a bad address,
   * `ERR_CLOSED` after `close()`.
   */
  disconnect(addr: string): Promise<boolean>

  /** Sends a request to `addr` and resolves to the reply (`type: 'response'`, same `id`). */
  request<R = unknown>(addr: string, msg: AgentMessage, options?: RequestOptions): Promise<ReceivedMessage<R>>

  /** Sends a one-way message; resolves once QUIC has taken it, so awaiting gives backpressure. */
  send(addr: string, msg: AgentMessage): Promise<void>

  /** Sends several one-way messages in order with one crossing into native code. Refused whole if one is too large. */
  sendBatch(addr: string, msgs: AgentMessage[]): Promise<void>

  /** The next one-way message that no `onMessage` handler took, optionally only from `addr` and/or on `streamId`. */
  receive<P = unknown>(addr?: string | null, streamId?: string | null): Promise<ReceivedMessage<P> & { peer: Peer }>

  /** Pool and connection statistics, read from quinn. */
  getStats(): TransportStats

  /**
   * Rejects pending calls with `ERR_CLOSED`, delivers one-way messages already sent,
   * closes connections, frees the socket. Idempotent. A listener resolves once its port
   * is free again; a dial-only transport once every peer was sent the close (its
   * ephemeral socket drains in the background).
   */
  close(): Promise<void>
}
