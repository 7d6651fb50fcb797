// request(): replies, pooling, limits, errors, timeout, AbortSignal, close.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import v8 from 'node:v8'
import vm from 'node:vm'
import { QuicTransport, listener, dialer, addrOf, closeAll, codeOf, eventually } from './helpers.mjs'

test('a request gets its reply: JSON equal, binary byte-exact, metadata and ids kept', async () => {
  const server = await listener()
  server.onRequest(async (msg, peer) => {
    assert.match(peer.address, /^127\.0\.0\.1:\d+$/)
    return msg.type === 'bin' ? msg.payload : { got: msg.payload, meta: msg.metadata, stream: msg.streamId }
  })
  const client = await dialer(server)
  const addr = addrOf(server)
  const json = await client.request(addr, {
    id: 'req-7',
    type: 'task',
    payload: { n: 1, s: 'é', list: [1, null, true] },
    metadata: { priority: 2 },
    streamId: 'jobs',
  })
  assert.equal(json.id, 'req-7')
  assert.equal(json.type, 'response')
  assert.deepEqual(json.payload, { got: { n: 1, s: 'é', list: [1, null, true] }, meta: { priority: 2 }, stream: 'jobs' })

  const bytes = Buffer.alloc(200_000)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31) & 0xff
  const bin = await client.request(addr, { type: 'bin', payload: bytes })
  assert.ok(Buffer.isBuffer(bin.payload))
  assert.ok(bin.payload.equals(bytes))
  assert.equal(typeof bin.id, 'string')
  assert.ok(bin.id.length > 0, 'an id is generated when absent')

  const u8 = await client.request(addr, { type: 'bin', payload: new Uint8Array([1, 2, 3]) })
  assert.deepEqual([...u8.payload], [1, 2, 3])

  // Generated ids: this process's random prefix and a counter, distinct per message
  // (and an explicit empty id counts as none).
  const replies = await Promise.all(
    Array.from({ length: 40 }, (_, i) => client.request(addr, { type: 'bin', payload: Buffer.from([i]), ...(i % 2 && { id: '' }) })),
  )
  const ids = [bin.id, u8.id, ...replies.map((r) => r.id)]
  for (const id of ids) assert.match(id, /^[0-9a-f]{16}-[0-9a-f]+$/)
  assert.equal(new Set(ids).size, ids.length, 'generated ids repeat')
  assert.equal(new Set(ids.map((id) => id.split('-')[0])).size, 1, 'one prefix per process')
  await closeAll(server, client)
})

test('large payloads (passed beside the command batch) stay byte-exact, in order, and are copied during the call', async () => {
  const server = await listener()
  const messages = []
  server.onRequest((msg) => msg.payload)
  server.onMessage((msg) => messages.push(msg.payload))
  const client = await dialer(server, { maxMessageBytes: 256 * 1024 })
  const addr = addrOf(server)
  const pattern = (size, seed) => {
    const b = Buffer.alloc(size)
    for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed) & 0xff
    return b
  }
  const big = pattern(200_000, 1)
  const original = Buffer.from(big)
  const small = pattern(1000, 2)
  // One tick: small and large requests and a large message, with one too large for this
  // client in between (refused without disturbing the others).
  const replies = [
    client.request(addr, { type: 'bin', payload: small }),
    client.request(addr, { type: 'bin', payload: big }),
    codeOf(client.request(addr, { type: 'bin', payload: Buffer.alloc(300_000) })),
    client.request(addr, { type: 'bin', payload: pattern(70_000, 3) }),
    client.request(addr, { type: 'json', payload: { text: 'é'.repeat(50_000) } }),
  ]
  const sent = client.send(addr, { type: 'bin', payload: pattern(150_000, 4) })
  big.fill(0) // the caller may reuse its buffer as soon as request() returns
  const [a, b, tooLarge, c, json] = await Promise.all(replies)
  await sent
  assert.ok(a.payload.equals(small))
  assert.ok(b.payload.equals(original), 'the large payload was sent as it was at the call')
  assert.equal(tooLarge, 'ERR_MESSAGE_TOO_LARGE')
  assert.ok(c.payload.equals(pattern(70_000, 3)))
  assert.equal(json.payload.text, 'é'.repeat(50_000))
  await eventually(() => messages.length === 1)
  assert.ok(messages[0].equals(pattern(150_000, 4)))
  await closeAll(server, client)
})

test('received payloads of megabytes stay intact while later ones reuse collected memory', async () => {
  // Memory of large payloads that JS has collected is read into again; a Buffer that JS
  // still holds must never be.
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc')
  const server = await listener()
  server.onRequest((m) => m.payload)
  const client = await dialer(server)
  const size = 3 * 1024 * 1024
  const pattern = (seed) => Buffer.alloc(size, seed)
  const kept = []
  for (let i = 0; i < 8; i++) {
    const reply = await client.request(addrOf(server), { type: 'echo', payload: pattern(i) })
    assert.ok(reply.payload.equals(pattern(i)), `reply ${i} is byte-exact`)
    if (i % 2 === 1) kept.push([i, reply.payload])
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  for (const [i, payload] of kept) assert.ok(payload.equals(pattern(i)), `kept reply ${i} is unchanged`)
  await closeAll(server, client)
})

test('100 concurrent first requests to one address make exactly one connection', async () => {
  const server = await listener()
  server.onRequest((msg) => msg.payload)
  const client = await dialer(server)
  const addr = addrOf(server)
  const replies = await Promise.all(
    Array.from({ length: 100 }, (_, i) => client.request(addr, { type: 'task', payload: i })),
  )
  assert.deepEqual(replies.map((r) => r.payload), Array.from({ length: 100 }, (_, i) => i))
  const { pool, connections } = client.getStats()
  assert.equal(pool.created, 1)
  assert.equal(pool.misses, 1)
  assert.equal(pool.hits, 99)
  assert.equal(connections.length, 1)
  assert.equal(connections[0].remoteAddress, addr)
  assert.ok(connections[0].streamsOpened >= 100)
  assert.ok(connections[0].mtu >= 1200, `mtu ${connections[0].mtu}`)
  assert.ok(connections[0].rttMs > 0)
  assert.ok(connections[0].bytesSent > 0 && connections[0].bytesReceived > 0)
  assert.equal(server.getStats().connections.length, 1)
  await closeAll(server, client)
})

test('5,000 concurrent requests with maxConcurrentStreams 100 all come back byte-exact', async () => {
  const server = await listener({ maxConcurrentStreams: 100 })
  let inHandler = 0
  let maxInHandler = 0
  server.onRequest(async (msg) => {
    inHandler++
    maxInHandler = Math.max(maxInHandler, inHandler)
    await new Promise((resolve) => setImmediate(resolve))
    inHandler--
    return msg.payload
  })
  const client = await dialer(server, { maxConcurrentStreams: 100 })
  const addr = addrOf(server)
  const calls = Array.from({ length: 5000 }, (_, i) => {
    const payload = Buffer.alloc(64, i & 0xff)
    payload.writeUInt32BE(i, 0)
    return client.request(addr, { type: 'task', payload }).then((reply) => reply.payload.equals(payload))
  })
  const ok = await Promise.all(calls)
  assert.equal(ok.filter(Boolean).length, 5000)
  assert.ok(maxInHandler <= 100, `at most 100 requests in the handler at once, saw ${maxInHandler}`)
  await closeAll(server, client)
})

test('a handler that throws rejects the caller with ERR_REMOTE and its message', async () => {
  const server = await listener()
  server.onRequest(async (msg) => {
    if (msg.type === 'sync') throw new Error('sync failure')
    await Promise.resolve()
    throw new Error('agent is out of capacity')
  })
  const client = await dialer(server)
  const err = await client.request(addrOf(server), { type: 'task' }).catch((e) => e)
  assert.equal(err.code, 'ERR_REMOTE')
  assert.match(err.message, /agent is out of capacity/)
  const sync = await client.request(addrOf(server), { type: 'sync' }).catch((e) => e)
  assert.equal(sync.code, 'ERR_REMOTE')
  assert.match(sync.message, /sync failure/)
  // A plain (not async) handler is answered in the same tick: its throw, and a reply
  // that cannot be serialized, reach the caller the same way.
  server.onRequest((msg) => {
    if (msg.type === 'bigint') return { n: 1n }
    throw new Error('plain failure')
  })
  const plain = await client.request(addrOf(server), { type: 'task' }).catch((e) => e)
  assert.equal(plain.code, 'ERR_REMOTE')
  assert.match(plain.message, /plain failure/)
  const bigint = await client.request(addrOf(server), { type: 'bigint' }).catch((e) => e)
  assert.equal(bigint.code, 'ERR_REMOTE')
  assert.match(bigint.message, /not JSON-serializable/)
  await closeAll(server, client)
})

test('a listener without onRequest answers ERR_REMOTE', async () => {
  const server = await listener()
  const client = await dialer(server)
  assert.equal(await codeOf(client.request(addrOf(server), { type: 'task' })), 'ERR_REMOTE')
  await closeAll(server, client)
})

test('an oversized message gives ERR_MESSAGE_TOO_LARGE and the next request works', async () => {
  const server = await listener({ maxMessageBytes: 4096 })
  server.onRequest((msg) => (msg.type === 'big-reply' ? Buffer.alloc(8192) : msg.payload))
  const client = await dialer(server, { maxMessageBytes: 1 << 20 })
  const addr = addrOf(server)
  // Over the server's limit: refused by the server on that stream.
  assert.equal(await codeOf(client.request(addr, { type: 'task', payload: Buffer.alloc(10_000) })), 'ERR_MESSAGE_TOO_LARGE')
  assert.deepEqual((await client.request(addr, { type: 'task', payload: [1] })).payload, [1])
  // Over the client's own limit: refused before sending.
  const small = await dialer(server, { maxMessageBytes: 1000 })
  assert.equal(await codeOf(small.request(addr, { type: 'task', payload: 'x'.repeat(2000) })), 'ERR_MESSAGE_TOO_LARGE')
  assert.equal(await codeOf(small.send(addr, { type: 'task', payload: 'x'.repeat(2000) })), 'ERR_MESSAGE_TOO_LARGE')
  // A reply over the server's limit.
  assert.equal(await codeOf(client.request(addr, { type: 'big-reply' })), 'ERR_MESSAGE_TOO_LARGE')
  assert.deepEqual((await small.request(addr, { type: 'task', payload: 2 })).payload, 2)
  assert.equal(client.getStats().pool.created, 1, 'the connection survived')
  await closeAll(server, client, small)
})

test('timeoutMs gives ERR_TIMEOUT; requestTimeoutMs is the default', async () => {
  const server = await listener()
  server.onRequest(() => new Promise((resolve) => setTimeout(() => resolve('late'), 1500)))
  const client = await dialer(server, { requestTimeoutMs: 200 })
  const addr = addrOf(server)
  let start = Date.now()
  assert.equal(await codeOf(client.request(addr, { type: 'task' }, { timeoutMs: 100 })), 'ERR_TIMEOUT')
  assert.ok(Date.now() - start < 1000)
  start = Date.now()
  assert.equal(await codeOf(client.request(addr, { type: 'task' })), 'ERR_TIMEOUT')
  assert.ok(Date.now() - start < 1000)
  assert.equal((await client.request(addr, { type: 'task' }, { timeoutMs: 5000 })).payload, 'late')
  await closeAll(server, client)
})

test('requests made in one tick keep their own timeout and abort', async () => {
  // Requests submitted together share a timer per timeout (one task in Rust): each must
  // still settle by its own timeout, abort alone, and settle once.
  const server = await listener()
  server.onRequest((msg) => (msg.type === 'slow' ? new Promise((resolve) => setTimeout(() => resolve('late'), 2000)) : 'now'))
  const client = await dialer(server, { requestTimeoutMs: 10_000 })
  const addr = addrOf(server)
  await client.connect(addr)
  const controller = new AbortController()
  const start = Date.now()
  const calls = [
    ...Array.from({ length: 5 }, () => client.request(addr, { type: 'fast' }, { timeoutMs: 800 })),
    ...Array.from({ length: 5 }, () => client.request(addr, { type: 'slow' }, { timeoutMs: 800 })),
    ...Array.from({ length: 3 }, () => client.request(addr, { type: 'slow' }, { timeoutMs: 5000 })),
    client.request(addr, { type: 'slow' }, { timeoutMs: 5000, signal: controller.signal }),
    client.request(addr, { type: 'slow' }),
  ].map((call) => call.then((reply) => reply.payload, (err) => err.code))
  setTimeout(() => controller.abort(), 50)
  const outcomes = await Promise.all(calls)
  assert.deepEqual(outcomes, [
    ...Array(5).fill('now'),
    ...Array(5).fill('ERR_TIMEOUT'),
    ...Array(3).fill('late'),
    'ERR_ABORTED',
    'late',
  ])
  assert.ok(Date.now() - start < 5000, `took ${Date.now() - start} ms`)
  await closeAll(server, client)
})

test("a listener's requestTimeoutMs answers for a handler that never settles", async () => {
  const server = await listener({ requestTimeoutMs: 300 })
  server.onRequest((msg) => (msg.type === 'hang' ? new Promise(() => {}) : 'ok'))
  const client = await dialer(server, { requestTimeoutMs: 10_000 })
  const addr = addrOf(server)
  const start = Date.now()
  const err = await client.request(addr, { type: 'hang' }).catch((e) => e)
  assert.equal(err.code, 'ERR_REMOTE')
  assert.match(err.message, /did not answer within 300 ms/)
  const waited = Date.now() - start
  assert.ok(waited >= 250 && waited < 3000, `answered after ${waited} ms`)
  assert.equal((await client.request(addr, { type: 'task' })).payload, 'ok')
  await closeAll(server, client)
})

test('an AbortSignal aborts a request with ERR_ABORTED', async () => {
  const server = await listener()
  server.onRequest(() => new Promise((resolve) => setTimeout(() => resolve('late'), 2000)))
  const client = await dialer(server)
  const addr = addrOf(server)
  const controller = new AbortController()
  const pending = client.request(addr, { type: 'task' }, { signal: controller.signal })
  setTimeout(() => controller.abort(), 50)
  const start = Date.now()
  assert.equal(await codeOf(pending), 'ERR_ABORTED')
  assert.ok(Date.now() - start < 1000)
  assert.equal(await codeOf(client.request(addr, { type: 'task' }, { signal: AbortSignal.abort() })), 'ERR_ABORTED')
  await closeAll(server, client)
})

test('a port with no listener gives ERR_CONNECT within connectTimeoutMs', async () => {
  const socket = dgram.createSocket('udp4')
  await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve))
  const { port } = socket.address()
  await new Promise((resolve) => socket.close(resolve))
  const client = await QuicTransport.create({ tls: { insecureSkipVerify: true }, connectTimeoutMs: 300 })
  const start = Date.now()
  const err = await client.request(`127.0.0.1:${port}`, { type: 'task' }).catch((e) => e)
  assert.equal(err.code, 'ERR_CONNECT')
  assert.ok(Date.now() - start < 2000, `took ${Date.now() - start} ms`)
  assert.equal(await codeOf(client.connect(`127.0.0.1:${port}`)), 'ERR_CONNECT')
  await client.close()
})

test('close() with calls in flight settles them all with ERR_CLOSED', async () => {
  const server = await listener()
  server.onRequest(() => new Promise(() => {})) // never answers
  const client = await dialer(server)
  const addr = addrOf(server)
  await client.connect(addr)
  const calls = Array.from({ length: 50 }, () => codeOf(client.request(addr, { type: 'task' })))
  const received = codeOf(client.receive())
  await new Promise((resolve) => setTimeout(resolve, 100))
  await client.close()
  assert.deepEqual(new Set(await Promise.all(calls)), new Set(['ERR_CLOSED']))
  assert.equal(await received, 'ERR_CLOSED')
  await server.close()
})

test('the server closing under a caller gives ERR_CONNECTION_LOST, never a hang', async () => {
  const server = await listener()
  server.onRequest(() => new Promise(() => {}))
  const client = await dialer(server)
  const addr = addrOf(server)
  await client.connect(addr)
  const pending = codeOf(client.request(addr, { type: 'task' }))
  await new Promise((resolve) => setTimeout(resolve, 50))
  await server.close()
  assert.equal(await pending, 'ERR_CONNECTION_LOST')
  await client.close()
})

test('ids, types and channels that are not ASCII arrive unchanged', async () => {
  const server = await listener()
  const seen = []
  server.onRequest((msg) => ({ id: msg.id, type: msg.type, streamId: msg.streamId }))
  server.onMessage((msg) => seen.push({ id: msg.id, type: msg.type, streamId: msg.streamId }))
  const client = await dialer(server)
  const addr = addrOf(server)
  const fields = { id: 'réq-1', type: 'tâche-日本', streamId: 'canal-€' }
  assert.deepEqual((await client.request(addr, { ...fields, payload: 1 })).payload, fields)
  const long = { id: 'i'.repeat(70) + 'é', type: 't'.repeat(100), streamId: 's'.repeat(65) }
  assert.deepEqual((await client.request(addr, { ...long, payload: 1 })).payload, long)
  await client.send(addr, { ...fields, payload: 2 })
  assert.ok(await eventually(() => seen.length === 1))
  assert.deepEqual(seen[0], fields)
  await closeAll(server, client)
})
