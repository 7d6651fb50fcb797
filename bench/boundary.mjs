#!/usr/bin/env node
// The cost of crossing between JS and Rust, on its own (no network):
//   node bench/boundary.mjs [--quick] [--json]   (npm run bench runs it too)
//
// 1. no-op call: a synchronous native method that does nothing observable
//    (setHandlers with the current values): the fixed cost of one JS -> Rust call.
// 2. batch round trip: N one-way sends to an address that does not parse, so Rust
//    parses every command and frame and answers each with a failure event without
//    touching the network: JS encode -> one submit -> Rust parse -> one event batch ->
//    JS decode -> N promises settled. Reported per message.
// 3. Buffer in and out: the same with 64 KiB payloads (copied once into Rust; the
//    failure events carry no payload back, so this is the inbound copy cost).
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')
const { NativeTransport } = require('../binding.js')

const QUICK = process.argv.includes('--quick')
const now = () => process.hrtime.bigint()

function noopCalls() {
  const native = NativeTransport.create({}, () => {})
  const calls = QUICK ? 200_000 : 2_000_000
  for (let i = 0; i < 10_000; i++) native.setHandlers(false, false) // warm-up
  const start = now()
  for (let i = 0; i < calls; i++) native.setHandlers(false, false)
  const seconds = Number(now() - start) / 1e9
  return { calls, callsPerSec: calls / seconds, nsPerCall: (seconds * 1e9) / calls, close: () => native.close() }
}

async function batchRoundTrip(size, count, rounds) {
  const transport = await QuicTransport.create({ maxMessageBytes: 1 << 20 })
  const payload = Buffer.alloc(size, 1)
  const messages = Array.from({ length: count }, (_, i) => ({ type: 'task', payload, id: `m${i}` }))
  // Rust refuses this address per command, after parsing the command and its frame.
  const target = 'not-an-address'
  let best = Infinity
  for (let r = 0; r < rounds; r++) {
    const start = now()
    const settled = messages.map((m) => transport.send(target, m).then(
      () => 0,
      (err) => (err.code === 'ERR_INVALID_ARG' ? 0 : 1),
    ))
    const failures = (await Promise.all(settled)).reduce((a, b) => a + b, 0)
    if (failures) throw new Error(`${failures} sends failed unexpectedly`)
    best = Math.min(best, Number(now() - start) / 1e9)
  }
  await transport.close()
  return {
    messages: count,
    payloadBytes: size,
    msgsPerSec: count / best,
    nsPerMessage: (best * 1e9) / count,
    mbPerSec: (count * size) / best / 1e6,
  }
}

const noop = noopCalls()
const small = await batchRoundTrip(64, QUICK ? 10_000 : 100_000, QUICK ? 3 : 10)
const large = await batchRoundTrip(64 * 1024, QUICK ? 200 : 2_000, QUICK ? 3 : 10)
await noop.close()
const result = {
  noopCall: { callsPerSec: noop.callsPerSec, nsPerCall: noop.nsPerCall },
  batch64B: small,
  batch64KiB: large,
}
if (process.argv.includes('--json')) {
  console.log(JSON.stringify(result))
} else console.log(`
| JS <-> Rust boundary (no network) | per second | per item |
| --- | ---: | ---: |
| no-op native call | ${noop.callsPerSec.toFixed(0)} calls | ${noop.nsPerCall.toFixed(0)} ns |
| batched send, 64 B, submit + event back | ${small.msgsPerSec.toFixed(0)} msgs | ${small.nsPerMessage.toFixed(0)} ns |
| batched send, 64 KiB Buffer in | ${large.mbPerSec.toFixed(0)} MB | ${(large.nsPerMessage / 1000).toFixed(1)} µs |
`)
