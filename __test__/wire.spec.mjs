// Event batches as wire.js reads them (src/node/events.rs writes them): every record
// type decoded, u32 fields above 2^31 read as unsigned, and a batch that ends inside a
// record refused before any of that record reaches the transport.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'

const { readEvents, Event, DETACHED } = createRequire(import.meta.url)('../wire.js')

const u16 = (n) => [n >>> 8, n & 0xff]
const u32 = (n) => [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const text16 = (s) => [...u16(Buffer.byteLength(s)), ...Buffer.from(s)]

/**
 * A wire frame (PROTOCOL.md section 3), built here byte by byte; `detached`: without its
 * payload, which an event record marked DETACHED carries beside the batch.
 */
function frame(kind, { id, type, streamId = '', metadata = '', payload, json = false }, detached = false) {
  const fields = [...text16(id), ...text16(type), ...text16(streamId), ...u32(Buffer.byteLength(metadata)), ...Buffer.from(metadata)]
  const body = [...Buffer.from(payload)]
  return [1, kind, json ? 1 : 0, 0, ...u32(fields.length), ...u32(body.length), ...fields, ...(detached ? [] : body)]
}

const TOKEN = 0xfffffffe // above 2^31: read as a signed int it would be negative
const PEER_IDX = 0x80000001

function batch() {
  return Buffer.from([
    Event.PEER, ...u32(PEER_IDX), ...text16('127.0.0.1:4433'), ...text16('sha256/abc'),
    Event.REPLY, ...u32(TOKEN), ...frame(2, { id: 'r-1', type: 'response', payload: 'hello' }),
    Event.FAILED, ...u32(7), ...text16('ERR_TIMEOUT'), ...u32(4), ...Buffer.from('slow'),
    Event.SENT, ...u32(TOKEN - 1),
    Event.REQUEST, ...u32(9), ...u32(PEER_IDX), ...frame(1, { id: 'q-1', type: 'task', metadata: '{"a":1}', payload: '{"n":2}', json: true }),
    Event.MESSAGE, ...u32(PEER_IDX), ...frame(4, { id: 'm-1', type: 'status', streamId: 'jobs', payload: 'x' }),
  ])
}

function recorder() {
  const seen = []
  const payload = (buf, f) => buf.toString('utf8', f.payloadStart, f.payloadEnd)
  const sink = {
    reply: (token, buf, f) => seen.push(['reply', token, f.id, f.type, payload(buf, f)]),
    failed: (token, code, message) => seen.push(['failed', token, code, message]),
    sent: (token) => seen.push(['sent', token]),
    request: (token, buf, f, peer) => seen.push(['request', token, f.id, f.type, f.json, f.metadata, payload(buf, f), peer]),
    message: (buf, f, peer) => seen.push(['message', f.id, f.type, f.streamId, payload(buf, f), peer]),
  }
  return { seen, sink }
}

test('every event record of a batch is read, u32 fields as unsigned', () => {
  const { seen, sink } = recorder()
  readEvents(batch(), sink)
  const peer = { address: '127.0.0.1:4433', fingerprint: 'sha256/abc' }
  assert.deepEqual(seen, [
    ['reply', TOKEN, 'r-1', 'response', 'hello'],
    ['failed', 7, 'ERR_TIMEOUT', 'slow'],
    ['sent', TOKEN - 1],
    ['request', 9, 'q-1', 'task', true, '{"a":1}', '{"n":2}', peer],
    ['message', 'm-1', 'status', 'jobs', 'x', peer],
  ])
})

test('a batch cut short anywhere is refused, and the cut record is never delivered', () => {
  const full = batch()
  const { seen: all, sink: counting } = recorder()
  readEvents(full, counting)
  // Where each record ends: a cut at or past it delivers that record, before it does not.
  let refused = 0
  for (let cut = 1; cut < full.length; cut++) {
    const { seen, sink } = recorder()
    let error
    try {
      readEvents(full.subarray(0, cut), sink)
    } catch (err) {
      error = err
    }
    // Whatever was delivered is exactly a prefix of the whole batch's records.
    assert.deepEqual(seen, all.slice(0, seen.length), `cut at ${cut}`)
    if (error) {
      assert.match(error.message, /malformed record/, `cut at ${cut}`)
      refused++
    }
  }
  // Only cuts that fall exactly between records are read without an error (5 of them).
  assert.equal(refused, full.length - 1 - 5)
})

test('a frame whose fields do not fill its fields section exactly is refused', () => {
  const good = frame(2, { id: 'r', type: 'response', payload: 'ok' })
  // fields_len one byte longer than the four fields (the payload's first byte taken).
  const bad = [...good]
  bad.splice(4, 4, ...u32(((good[4] << 24) | (good[5] << 16) | (good[6] << 8) | good[7]) + 1))
  bad.splice(8, 4, ...u32(1))
  const { seen, sink } = recorder()
  assert.throws(() => readEvents(Buffer.from([Event.REPLY, ...u32(1), ...bad]), sink), /malformed record/)
  assert.deepEqual(seen, [])
})

test('a DETACHED record takes its payload from the Buffers beside the batch, which must all be there', () => {
  const big = Buffer.alloc(70_000, 9)
  const records = [
    Event.REPLY | DETACHED, ...u32(1), ...frame(2, { id: 'a', type: 'response', payload: big }, true),
    Event.REPLY, ...u32(2), ...frame(2, { id: 'b', type: 'response', payload: 'inline' }),
  ]
  const got = []
  const sink = { reply: (token, buf, f) => got.push([token, buf.subarray(f.payloadStart, f.payloadEnd)]) }
  readEvents(Buffer.from(records), sink, [big])
  assert.equal(got.length, 2)
  assert.equal(got[0][0], 1)
  assert.equal(got[0][1].buffer, big.buffer, 'the detached payload is handed over, not copied')
  assert.equal(got[0][1].length, big.length)
  assert.equal(got[1][1].toString(), 'inline')
  got.length = 0
  assert.throws(() => readEvents(Buffer.from(records), sink, []), /detached payload is missing/)
  assert.throws(() => readEvents(Buffer.from(records), sink, [big.subarray(1)]), /detached payload is missing/)
  assert.deepEqual(got, [])
})

test('message types are read right when they repeat, differ in a byte, outnumber the types kept, or are long', () => {
  // Types read lately are reused rather than decoded again (wire.js, knownText): each
  // must still come back as its own text, whatever came before it.
  const types = ['task', 'tasl', 'task', 'é-type', 'r', ...Array.from({ length: 12 }, (_, i) => `t${i}`), 'task', 'x'.repeat(40), 'tasl', '']
  const records = types.flatMap((type, i) => [Event.SENT, ...u32(i), Event.REPLY, ...u32(i), ...frame(2, { id: `r-${i}`, type, payload: 'p' })])
  const { seen, sink } = recorder()
  readEvents(Buffer.from(records), sink)
  const replies = seen.filter(([what]) => what === 'reply')
  assert.deepEqual(
    replies.map(([, , id, type]) => [id, type]),
    types.map((type, i) => [`r-${i}`, type]),
  )
})
