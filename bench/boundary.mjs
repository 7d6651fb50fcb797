#!/usr/bin/env node
// The cost of crossing between JS and Rust, on its own (no network):
//   node bench/boundary.mjs [--quick] [--json]   (npm run bench runs it too)
//
// 1. no-op call: a synchronous native method that changes nothing (setHandlers with the
//    current values): the fixed cost of one JS -> Rust call.
// 2. request round trip through the boundary: requests encoded by the same code as
//    QuicTransport (wire.js), submitted to the native `loopback` diagnostic, which parses
//    them and answers each with its own frame as the reply; the replies come back as
//    event batches and settle the promises. Measured with 1,000 requests per crossing
//    (how the transport batches under load) and with one per crossing.
// 3. Buffers in and out: the same with 64 KiB payloads (copied into Rust once, and handed
//    back to JS without a copy).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { NativeTransport } = require('../binding.js')
const { BatchWriter, Command, Kind, readEvents } = require('../wire.js')

const QUICK = process.argv.includes('--quick')
const now = () => process.hrtime.bigint()
const pending = new Map()
const native = NativeTransport.create({}, (batch, detached) =>
  readEvents(batch, {
    reply: (token, buf, frame) => {
      const resolve = pending.get(token)
      pending.delete(token)
      resolve(frame.payloadEnd - frame.payloadStart)
    },
    failed: (token, code, message) => {
      throw new Error(`unexpected failure ${code}: ${message}`)
    },
    sent: () => {},
    request: () => {},
    message: () => {},
  }, detached),
)

function noopCalls() {
  const calls = QUICK ? 200_000 : 2_000_000
  for (let i = 0; i < 10_000; i++) native.setHandlers(false, false) // warm-up
  const start = now()
  for (let i = 0; i < calls; i++) native.setHandlers(false, false)
  const seconds = Number(now() - start) / 1e9
  return { calls, callsPerSec: calls / seconds, nsPerCall: (seconds * 1e9) / calls }
}

let nextToken = 1
const writer = new BatchWriter()

/** `count` requests of `size` bytes, `perCrossing` per submit; best of `rounds`. */
async function roundTrips(size, count, perCrossing, rounds) {
  const data = Buffer.alloc(size, 1)
  let best = Infinity
  for (let r = 0; r < rounds; r++) {
    const start = now()
    for (let done = 0; done < count; done += perCrossing) {
      const replies = []
      for (let i = 0; i < perCrossing; i++) {
        const token = nextToken++
        const start = writer.len
        writer.ensure(16)
        writer.u8(Command.REQUEST)
        writer.u32(token)
        writer.u8(0)
        writer.u32(0)
        writer.text16('127.0.0.1:1', 'addr')
        writer.frame(Kind.REQUEST, { id: `r${token}`, type: 'task', streamId: '', data, metadata: undefined }, start)
        replies.push(new Promise((resolve) => pending.set(token, resolve)))
      }
      native.loopback(writer.view(), writer.detached.length > 0 ? writer.detached : undefined)
      writer.reset()
      const sizes = await Promise.all(replies)
      if (sizes.some((s) => s !== size)) throw new Error('a reply lost bytes')
    }
    best = Math.min(best, Number(now() - start) / 1e9)
  }
  return { requests: count, perCrossing, payloadBytes: size, perSec: count / best, nsPerRequest: (best * 1e9) / count, mbPerSecEachWay: (count * size) / best / 1e6 }
}

// The event callback is weak (it never keeps the process alive): hold it open here.
const keepAlive = setInterval(() => {}, 1 << 30)
const noopCall = noopCalls()
const batched = await roundTrips(64, QUICK ? 20_000 : 200_000, 1000, QUICK ? 3 : 10)
const single = await roundTrips(64, QUICK ? 2_000 : 20_000, 1, QUICK ? 3 : 10)
const buffers = await roundTrips(64 * 1024, QUICK ? 500 : 5_000, 100, QUICK ? 3 : 10)
await native.close()
clearInterval(keepAlive)
const result = { noopCall, batched, single, buffers }
if (process.argv.includes('--json')) {
  console.log(JSON.stringify(result))
} else {
  console.log(`| JS <-> Rust boundary (no network) | per second | per item |
| --- | ---: | ---: |
| no-op native call | ${noopCall.callsPerSec.toFixed(0)} calls | ${noopCall.nsPerCall.toFixed(0)} ns |
| request + reply, 64 B, 1,000 per crossing | ${batched.perSec.toFixed(0)} requests | ${batched.nsPerRequest.toFixed(0)} ns |
| request + reply, 64 B, 1 per crossing | ${single.perSec.toFixed(0)} requests | ${single.nsPerRequest.toFixed(0)} ns |
| request + reply, 64 KiB Buffers in and out | ${buffers.mbPerSecEachWay.toFixed(0)} MB each way | ${(buffers.nsPerRequest / 1000).toFixed(1)} µs |`)
}
