// One-way messages: send, sendBatch, onMessage, receive, ordering, pushes.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { listener, dialer, addrOf, closeAll, codeOf, eventually } from './helpers.mjs'

// The raw binding under QuicTransport (binding.js), to count its calls.
const { NativeTransport } = createRequire(import.meta.url)('../binding.js')

test('1,000 messages on one channel arrive in order while another channel is busy', async () => {
  const server = await listener()
  const jobs = []
  let bulkDone = 0
  let bulkStarted = 0
  server.onMessage(async (msg) => {
    if (msg.streamId === 'jobs') jobs.push(msg.payload.seq)
    else {
      bulkStarted++
      bulkDone += msg.payload.length
    }
  })
  const client = await dialer(server)
  const addr = addrOf(server)
  // The bulk channel carries 40 MB; the jobs channel must not wait behind it.
  const bulk = Array.from({ length: 40 }, () => client.send(addr, { type: 'status', streamId: 'bulk', payload: Buffer.alloc(1 << 20) }))
  const sent = []
  for (let seq = 0; seq < 1000; seq++) sent.push(client.send(addr, { type: 'task', streamId: 'jobs', payload: { seq } }))
  await Promise.all(sent)
  assert.ok(await eventually(() => jobs.length === 1000, { timeoutMs: 15000 }), `got ${jobs.length} of 1000`)
  assert.deepEqual(jobs, Array.from({ length: 1000 }, (_, i) => i))
  await Promise.all(bulk)
  assert.ok(await eventually(() => bulkStarted === 40, { timeoutMs: 15000 }))
  assert.equal(bulkDone, 40 << 20)
  await closeAll(server, client)
})

test('sends of one tick to several channels keep each channel in order; no streamId is the default channel', async () => {
  const server = await listener()
  const got = { default: [], other: [] }
  server.onMessage((msg) => got[msg.streamId].push(msg.payload))
  const client = await dialer(server)
  const addr = addrOf(server)
  // One batch, switching channel at every message: unnamed, 'default' by name, 'other'.
  const sent = []
  for (let i = 0; i < 300; i++) {
    const streamId = [undefined, 'default', 'other'][i % 3]
    sent.push(client.send(addr, { type: 'task', payload: i, ...(streamId && { streamId }) }))
  }
  await Promise.all(sent)
  assert.ok(await eventually(() => got.default.length + got.other.length === 300), JSON.stringify(got))
  const expected = (keep) => Array.from({ length: 300 }, (_, i) => i).filter((i) => keep(i % 3))
  assert.deepEqual(got.default, expected((r) => r !== 2))
  assert.deepEqual(got.other, expected((r) => r === 2))
  await closeAll(server, client)
})

test('sendBatch keeps order and is refused whole when one member is too large', async () => {
  const server = await listener()
  const got = []
  server.onMessage((msg) => got.push(msg.payload))
  const client = await dialer(server, { maxMessageBytes: 1024 })
  const addr = addrOf(server)
  await client.sendBatch(addr, Array.from({ length: 100 }, (_, i) => ({ type: 'task', payload: i })))
  assert.equal(
    await codeOf(client.sendBatch(addr, [{ type: 'task', payload: 'a' }, { type: 'task', payload: 'x'.repeat(5000) }])),
    'ERR_MESSAGE_TOO_LARGE',
  )
  await client.send(addr, { type: 'task', payload: 'last' })
  assert.ok(await eventually(() => got.length === 101))
  assert.deepEqual(got, [...Array.from({ length: 100 }, (_, i) => i), 'last'])
  await closeAll(server, client)
})

test('sendBatch with a large member is still refused whole, and nothing of it is sent', async () => {
  const server = await listener()
  const got = []
  server.onMessage((msg) => got.push(msg.payload))
  const client = await dialer(server, { maxMessageBytes: 256 * 1024 })
  const addr = addrOf(server)
  const large = Buffer.alloc(100_000, 1) // passed beside the batch, not copied into it
  client.send(addr, { type: 'task', payload: 'before' }) // queued in the same tick
  const refused = client.sendBatch(addr, [
    { type: 'task', payload: large },
    { type: 'task', payload: Buffer.alloc(300_000) },
  ])
  assert.equal(await codeOf(refused), 'ERR_MESSAGE_TOO_LARGE')
  await client.sendBatch(addr, [{ type: 'task', payload: large }, { type: 'task', payload: 'after' }])
  assert.ok(await eventually(() => got.length === 3))
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.equal(got.length, 3, 'the refused batch sent nothing')
  assert.equal(got[0], 'before')
  assert.ok(got[1].equals(large))
  assert.equal(got[2], 'after')
  await closeAll(server, client)
})

test('a dial-only agent receives a push from the listener it dialled', async () => {
  const server = await listener()
  const agent = await dialer(server)
  const addr = addrOf(server)
  let agentAddress
  server.onRequest((msg, peer) => {
    agentAddress = peer.address
    return 'hello'
  })
  const pushes = []
  agent.onMessage((msg, peer) => pushes.push({ msg, peer }))
  await agent.request(addr, { type: 'task' })
  await server.send(agentAddress, { type: 'coordination', payload: { go: true }, streamId: 'ctl', metadata: { round: 1 } })
  assert.ok(await eventually(() => pushes.length === 1))
  assert.deepEqual(pushes[0].msg.payload, { go: true })
  assert.equal(pushes[0].msg.streamId, 'ctl')
  assert.deepEqual(pushes[0].msg.metadata, { round: 1 })
  assert.equal(pushes[0].peer.address, addr)
  assert.equal(server.getStats().pool.created, 0, 'the push used the connection the agent opened')
  await closeAll(server, agent)
})

test('receive() pulls messages no handler took, filtered by peer and channel', async () => {
  const server = await listener()
  const a = await dialer(server)
  const b = await dialer(server)
  const addr = addrOf(server)
  await a.send(addr, { type: 'status', payload: 'a1', streamId: 'x' })
  await b.send(addr, { type: 'status', payload: 'b1', streamId: 'y' })
  await a.send(addr, { type: 'status', payload: Buffer.from('a2'), streamId: 'y' })
  const first = await server.receive(undefined, 'y')
  const firstFrom = first.peer.address
  assert.ok(first.payload === 'b1' || Buffer.isBuffer(first.payload))
  const other = await server.receive(undefined, 'x')
  assert.equal(other.payload, 'a1')
  // The remaining 'y' message comes from whichever peer was not first.
  const rest = await server.receive(undefined, 'y')
  assert.notEqual(rest.peer.address, firstFrom)
  // Filtering by peer: a's next message is found, b's is not taken.
  await b.send(addr, { type: 'status', payload: 'b2' })
  await a.send(addr, { type: 'status', payload: 'a3' })
  const fromA = await server.receive(other.peer.address)
  assert.equal(fromA.payload, 'a3')
  const fromB = await server.receive()
  assert.equal(fromB.payload, 'b2')
  await closeAll(server, a, b)
})

test('messages sent without awaiting still arrive in call order', async () => {
  const server = await listener()
  const got = []
  server.onMessage((msg) => got.push(msg.payload))
  const client = await dialer(server)
  const addr = addrOf(server)
  const all = []
  for (let i = 0; i < 500; i++) all.push(client.send(addr, { type: 'task', payload: i }))
  await Promise.all(all)
  assert.ok(await eventually(() => got.length === 500))
  assert.deepEqual(got, Array.from({ length: 500 }, (_, i) => i))
  await closeAll(server, client)
})

test('a burst of sends too large for one batch keeps call order; a sendBatch in it is still refused whole', async () => {
  const server = await listener()
  const got = []
  server.onMessage((msg) => got.push(msg.payload.readUInt32BE(0)))
  const client = await dialer(server, { maxMessageBytes: 4096 })
  const addr = addrOf(server)
  const numbered = (i) => {
    const payload = Buffer.alloc(1024)
    payload.writeUInt32BE(i)
    return { type: 'task', payload }
  }
  // About 2.5 MB queued in one tick: submitted to Rust in several batches, each once
  // it reaches 256 KiB, but never in the middle of one call.
  const submit = NativeTransport.prototype.submit
  let submits = 0
  NativeTransport.prototype.submit = function (...args) {
    submits++
    return submit.apply(this, args)
  }
  const all = []
  let refused
  try {
    for (let i = 0; i < 1000; i++) all.push(client.send(addr, numbered(i)))
    refused = client.sendBatch(addr, [
      ...Array.from({ length: 400 }, (_, i) => numbered(100_000 + i)),
      { type: 'task', payload: Buffer.alloc(8192) },
    ])
    for (let i = 1000; i < 2000; i++) all.push(client.send(addr, numbered(i)))
  } finally {
    NativeTransport.prototype.submit = submit
  }
  // 2,000 messages of about 1,070 bytes: at least 8 batches of 256 KiB in this tick.
  assert.ok(submits >= 8, `${submits} submits`)
  assert.equal(await codeOf(refused), 'ERR_MESSAGE_TOO_LARGE')
  await Promise.all(all)
  assert.ok(await eventually(() => got.length >= 2000, { timeoutMs: 10000 }), `got ${got.length} of 2000`)
  assert.deepEqual(got, Array.from({ length: 2000 }, (_, i) => i))
  await closeAll(server, client)
})

test('close() right after sends resolve still delivers every message', async () => {
  const server = await listener()
  let received = 0
  server.onMessage(() => received++)
  const client = await dialer(server)
  const addr = addrOf(server)
  const payload = Buffer.alloc(1024, 7)
  const sends = []
  for (let i = 0; i < 20000; i++) sends.push(client.send(addr, { type: 'task', payload }))
  await Promise.all(sends)
  await client.close()
  assert.ok(await eventually(() => received === 20000, { timeoutMs: 10000 }), `received ${received} of 20000`)
  await server.close()
})
