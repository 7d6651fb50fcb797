'use strict'
// Bytes at the JS/Rust boundary: wire frames (PROTOCOL.md), the command batches JS
// submits (src/node/commands.rs) and the event batches Rust delivers
// (src/node/events.rs). All integers are big-endian.

const { randomBytes } = require('node:crypto')

const VERSION = 1
const HEADER = 12
const FLAG_JSON = 1

const Kind = Object.freeze({ REQUEST: 1, RESPONSE: 2, ERROR: 3, MESSAGE: 4 })
const Command = Object.freeze({ REQUEST: 1, SEND: 2, RESPOND: 3 })
const Event = Object.freeze({ REPLY: 1, FAILED: 2, SENT: 3, REQUEST: 4, MESSAGE: 5, PEER: 6 })
// Set in a command's or an event's code when its frame's payload is not inline but is
// the next of the Buffers passed alongside the batch (src/node/commands.rs, events.rs).
const DETACHED = 0x80
// Binary payloads this large or larger are passed alongside the batch, not copied into
// it (Rust copies each once either way).
const DETACH_PAYLOAD_BYTES = 64 * 1024

const INITIAL_SIZE = 64 * 1024
// A batch buffer that grew past this is dropped after use rather than kept.
const KEEP_AT_MOST = 4 * 1024 * 1024

// Strings up to this long (ids, types, channels, addresses) are written by `writeAscii`
// when they are ASCII: for short strings a loop here costs less than `Buffer.write`'s
// call into C++, which was 12% of the JS thread's time in the `oneway` benchmark.
const SHORT_TEXT = 64

// Ids of messages sent without one: this process's random prefix, a dash, and a counter
// in hex, written straight into the batch (no string per message).
const ID_PREFIX = Buffer.from(`${randomBytes(8).toString('hex')}-`, 'latin1')
const HEX = Buffer.from('0123456789abcdef', 'latin1')
let idCounter = 0

// Integers are written byte by byte: the callers have made room already (`ensure`), so
// Buffer's range-checked writeUInt16BE/writeUInt32BE only cost time here.
function put16(buf, at, value) {
  buf[at] = value >>> 8
  buf[at + 1] = value
}

function put32(buf, at, value) {
  buf[at] = value >>> 24
  buf[at + 1] = value >>> 16
  buf[at + 2] = value >>> 8
  buf[at + 3] = value
}

// And read byte by byte (Buffer's readUInt16BE/readUInt32BE look up the method and check
// the range on every call): past the end of a batch these read undefined bytes, so each
// record is checked against the batch's length before it is used (`truncatedBatch`).
function get16(buf, at) {
  return (buf[at] << 8) | buf[at + 1]
}

function get32(buf, at) {
  return ((buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3]) >>> 0
}

/** Writes `text` at `at` if it is all ASCII and returns its length, else -1. */
function writeAscii(buf, text, at) {
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c > 0x7f) return -1
    buf[at + i] = c
  }
  return n
}

/**
 * Appends commands to one reusable Buffer. `submit` copies it synchronously, so the
 * same memory serves the next batch. Large binary payloads are kept aside in
 * `detached` (submitted with the batch) rather than copied in.
 */
class BatchWriter {
  constructor() {
    this.buf = Buffer.allocUnsafe(INITIAL_SIZE)
    this.len = 0
    this.detached = []
    // Where each detached payload's command starts, to undo it with `truncate`.
    this.detachedAt = []
  }

  /** Drops everything written from `len` on (a refused command). */
  truncate(len) {
    this.len = len
    while (this.detachedAt.length > 0 && this.detachedAt[this.detachedAt.length - 1] >= len) {
      this.detachedAt.pop()
      this.detached.pop()
    }
  }

  ensure(extra) {
    const needed = this.len + extra
    if (needed <= this.buf.length) return
    const grown = Buffer.allocUnsafe(Math.max(needed, this.buf.length * 2))
    this.buf.copy(grown, 0, 0, this.len)
    this.buf = grown
  }

  u8(value) {
    this.buf[this.len++] = value
  }

  u32(value) {
    put32(this.buf, this.len, value)
    this.len += 4
  }

  /** A u16-length-prefixed UTF-8 string; `name` for the error when it is too long. */
  text16(text, name) {
    this.ensure(2 + 3 * text.length)
    const at = this.len
    const buf = this.buf
    let written = text.length <= SHORT_TEXT ? writeAscii(buf, text, at + 2) : -1
    if (written < 0) written = buf.write(text, at + 2, 'utf8')
    if (written > 0xffff) throw new RangeError(`${name} is longer than 65535 bytes`)
    put16(buf, at, written)
    this.len = at + 2 + written
  }

  /** A generated id (see ID_PREFIX), u16-length-prefixed like `text16`. */
  generatedId() {
    const n = idCounter++
    let digits = 1
    for (let v = n; v >= 16; v = Math.floor(v / 16)) digits++
    const len = ID_PREFIX.length + digits
    this.ensure(2 + len)
    const buf = this.buf
    const at = this.len
    put16(buf, at, len)
    for (let i = 0; i < ID_PREFIX.length; i++) buf[at + 2 + i] = ID_PREFIX[i]
    const end = at + 2 + len
    for (let i = 1, v = n; i <= digits; i++, v = Math.floor(v / 16)) buf[end - i] = HEX[v % 16]
    this.len = end
  }

  /**
   * Appends a wire frame for `m` ({ id, type, streamId, text | data, metadata }; without
   * an id, a generated one) to the command that starts at `commandAt`, and returns its
   * size as `maxMessageBytes` counts it (fields plus payload).
   */
  frame(kind, m, commandAt) {
    const json = m.data === undefined
    const detach = !json && m.data.length >= DETACH_PAYLOAD_BYTES
    this.ensure(HEADER + 4)
    const start = this.len
    const buf = this.buf
    buf[start] = VERSION
    buf[start + 1] = kind
    buf[start + 2] = json ? FLAG_JSON : 0
    buf[start + 3] = 0
    this.len = start + HEADER
    if (m.id === undefined) this.generatedId()
    else this.text16(m.id, 'id')
    this.text16(m.type, 'type')
    this.text16(m.streamId || '', 'streamId')
    const metadata = m.metadata || ''
    this.ensure(4 + 3 * metadata.length + (json ? 3 * m.text.length : detach ? 0 : m.data.length))
    const out = this.buf
    const metaAt = this.len
    const metaLen = metadata.length === 0 ? 0 : out.write(metadata, metaAt + 4, 'utf8')
    put32(out, metaAt, metaLen)
    this.len = metaAt + 4 + metaLen
    const fieldsLen = this.len - start - HEADER
    let payloadLen
    if (json) {
      payloadLen = m.text.length === 0 ? 0 : out.write(m.text, this.len, 'utf8')
      this.len += payloadLen
    } else if (detach) {
      payloadLen = m.data.length
      out[commandAt] |= DETACHED
      this.detached.push(m.data)
      this.detachedAt.push(commandAt)
    } else {
      out.set(m.data, this.len)
      payloadLen = m.data.length
      this.len += payloadLen
    }
    if (payloadLen > 0xffffffff) throw new RangeError(`payload of ${payloadLen} bytes does not fit a frame (at most 4 GiB - 1)`)
    put32(out, start + 4, fieldsLen)
    put32(out, start + 8, payloadLen)
    return fieldsLen + payloadLen
  }

  view() {
    return this.buf.subarray(0, this.len)
  }

  reset() {
    this.len = 0
    if (this.detached.length > 0) {
      this.detached = []
      this.detachedAt = []
    }
    if (this.buf.length > KEEP_AT_MOST) this.buf = Buffer.allocUnsafe(INITIAL_SIZE)
  }
}

/**
 * Reads the wire frame at `at`: its fields, where its payload lies, and where it ends.
 * The payload is left for the caller to decode (JSON text or bytes).
 */
function readFrame(buf, at) {
  const kind = buf[at + 1]
  const json = (buf[at + 2] & FLAG_JSON) !== 0
  const fieldsLen = get32(buf, at + 4)
  const payloadLen = get32(buf, at + 8)
  let p = at + HEADER
  const idLen = get16(buf, p)
  const id = idLen === 0 ? '' : buf.toString('utf8', p + 2, p + 2 + idLen)
  p += 2 + idLen
  const typeLen = get16(buf, p)
  const type = typeLen === 0 ? '' : knownText(buf, p + 2, typeLen)
  p += 2 + typeLen
  const streamLen = get16(buf, p)
  // Empty fields (a reply's channel) skip the call into C++.
  const streamId = streamLen === 0 ? '' : buf.toString('utf8', p + 2, p + 2 + streamLen)
  p += 2 + streamLen
  const metaLen = get32(buf, p)
  const metadata = metaLen === 0 ? undefined : buf.toString('utf8', p + 4, p + 4 + metaLen)
  const payloadStart = at + HEADER + fieldsLen
  const payloadEnd = payloadStart + payloadLen
  // (The payload may be elsewhere: eventFrame checks that it is all there.)
  if (p + 4 + metaLen !== payloadStart || payloadStart > buf.length) throw truncatedBatch()
  // `src` and `end` are eventFrame's, set here so that every frame has one shape.
  return { kind, json, id, type, streamId, metadata, payloadStart, payloadEnd, src: buf, end: payloadEnd }
}

// The types most recently read, as bytes and as strings: a message type repeats from
// frame to frame (every reply's is `response`), and comparing a few bytes costs less
// than decoding them, a call into C++ and a new string each time.
const KNOWN_TEXTS = 8
const KNOWN_LEN = 32
const knownBytes = []
const knownStrings = []
let knownNext = 0

/** The UTF-8 text of `len` bytes at `at`, reused when it was read lately. */
function knownText(buf, at, len) {
  if (len > KNOWN_LEN) return buf.toString('utf8', at, at + len)
  search: for (let k = 0; k < knownBytes.length; k++) {
    const bytes = knownBytes[k]
    if (bytes.length !== len) continue
    for (let i = 0; i < len; i++) if (bytes[i] !== buf[at + i]) continue search
    return knownStrings[k]
  }
  const text = buf.toString('utf8', at, at + len)
  knownBytes[knownNext] = Uint8Array.prototype.slice.call(buf, at, at + len)
  knownStrings[knownNext] = text
  knownNext = (knownNext + 1) % KNOWN_TEXTS
  return text
}

function truncatedBatch() {
  return new Error('agentic-flow-quic: a malformed record in a batch from the native side')
}

/**
 * Reads the frame of an event record at `at`. `frame.src` is the Buffer its payload is
 * in (`payloadStart`/`payloadEnd` refer to it): `buf`, or for a DETACHED record the
 * next of `detached` (`next.i` counts them). `frame.end` is where the record ends.
 */
function eventFrame(buf, at, code, detached, next) {
  const frame = readFrame(buf, at)
  if ((code & DETACHED) === 0) {
    if (frame.payloadEnd > buf.length) throw truncatedBatch()
    return frame
  }
  const payload = detached?.[next.i++]
  if (payload === undefined || payload.length !== frame.payloadEnd - frame.payloadStart) {
    throw new Error('agentic-flow-quic: a detached payload is missing from a batch from the native side')
  }
  frame.src = payload
  frame.end = frame.payloadStart
  frame.payloadStart = 0
  frame.payloadEnd = payload.length
  return frame
}

/**
 * Walks an event batch, calling `sink.reply/failed/sent/request/message`; `detached`
 * holds the payloads of its DETACHED records, in order.
 */
function readEvents(buf, sink, detached) {
  const peers = []
  const next = { i: 0 }
  let at = 0
  while (at < buf.length) {
    const code = buf[at]
    const event = code & ~DETACHED
    at += 1
    switch (event) {
      case Event.PEER: {
        const idx = get32(buf, at)
        const addrLen = get16(buf, at + 4)
        const address = buf.toString('utf8', at + 6, at + 6 + addrLen)
        at += 6 + addrLen
        const fpLen = get16(buf, at)
        const peer = { address }
        if (fpLen > 0) peer.fingerprint = buf.toString('utf8', at + 2, at + 2 + fpLen)
        at += 2 + fpLen
        if (at > buf.length) throw truncatedBatch()
        peers[idx] = peer
        break
      }
      case Event.REPLY: {
        const token = get32(buf, at)
        const frame = eventFrame(buf, at + 4, code, detached, next)
        at = frame.end
        sink.reply(token, frame.src, frame)
        break
      }
      case Event.FAILED: {
        const token = get32(buf, at)
        const codeLen = get16(buf, at + 4)
        const code = buf.toString('latin1', at + 6, at + 6 + codeLen)
        at += 6 + codeLen
        const msgLen = get32(buf, at)
        const message = buf.toString('utf8', at + 4, at + 4 + msgLen)
        at += 4 + msgLen
        if (at > buf.length) throw truncatedBatch()
        sink.failed(token, code, message)
        break
      }
      case Event.SENT:
        if (at + 4 > buf.length) throw truncatedBatch()
        sink.sent(get32(buf, at))
        at += 4
        break
      case Event.REQUEST: {
        const token = get32(buf, at)
        const peer = peers[get32(buf, at + 4)]
        const frame = eventFrame(buf, at + 8, code, detached, next)
        at = frame.end
        sink.request(token, frame.src, frame, peer)
        break
      }
      case Event.MESSAGE: {
        const peer = peers[get32(buf, at)]
        const frame = eventFrame(buf, at + 4, code, detached, next)
        at = frame.end
        sink.message(frame.src, frame, peer)
        break
      }
      default:
        throw new Error(`agentic-flow-quic: unknown event ${event} in a batch from the native side`)
    }
  }
}

module.exports = { BatchWriter, Command, DETACHED, DETACH_PAYLOAD_BYTES, Event, Kind, readEvents, readFrame }
