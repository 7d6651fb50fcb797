// Process and thread lifecycle: exiting on its own, worker termination, idle eviction.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { Worker } from 'node:worker_threads'
import { fileURLToPath } from 'node:url'
import { listener, dialer, addrOf, closeAll, eventually } from './helpers.mjs'

const indexPath = fileURLToPath(new URL('../index.js', import.meta.url))

function runNode(source, timeoutMs = 20000, flags = []) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...flags, '-e', source], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, out })
    })
  })
}

test('a script that creates transports, talks and closes exits on its own', async () => {
  const source = `
    const { QuicTransport } = require(${JSON.stringify(indexPath)})
    ;(async () => {
      const server = await QuicTransport.create({ listen: {} })
      server.onRequest((m) => m.payload)
      server.onMessage(() => {})
      const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
      client.onMessage(() => {})
      const addr = server.address.host + ':' + server.address.port
      const reply = await client.request(addr, { type: 'task', payload: 41 })
      await client.send(addr, { type: 'status', payload: 'done' })
      const pending = client.request(addr, { type: 'task', payload: 1 }, { timeoutMs: 60000 }).catch((e) => e.code)
      await Promise.all([client.close(), server.close()])
      console.log('reply', reply.payload, await pending)
    })()
  `
  const start = Date.now()
  const { code, signal, out } = await runNode(source)
  assert.equal(signal, null, `killed after ${Date.now() - start} ms: ${out}`)
  assert.equal(code, 0, out)
  assert.match(out, /reply 41 (ERR_CLOSED|1)/)
})

test('a listener keeps the process alive until closed', async () => {
  const source = `
    const { QuicTransport } = require(${JSON.stringify(indexPath)})
    QuicTransport.create({ listen: {} }).then((t) => {
      setTimeout(() => { console.log('still alive'); t.close() }, 300)
    })
  `
  const { code, out } = await runNode(source)
  assert.equal(code, 0)
  assert.match(out, /still alive/)
})

test('a worker thread that uses the addon can be terminated', async () => {
  const server = await listener()
  server.onRequest((m) => m.payload)
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads')
    const { QuicTransport } = require(workerData.indexPath)
    ;(async () => {
      const t = await QuicTransport.create({ listen: {}, tls: { pinnedFingerprints: [workerData.pin] } })
      t.onRequest((m) => m.payload)
      const reply = await t.request(workerData.addr, { type: 'task', payload: 'from worker' })
      parentPort.postMessage(reply.payload)
      // Keep calls in flight while the worker is terminated.
      for (let i = 0; i < 100; i++) t.request(workerData.addr, { type: 'task', payload: i }).catch(() => {})
    })()
  `,
    { eval: true, workerData: { indexPath, addr: addrOf(server), pin: server.fingerprint } },
  )
  const first = await new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  assert.equal(first, 'from worker')
  const exitCode = await worker.terminate()
  assert.equal(exitCode, 1)
  // The worker's connection goes away and the server keeps working.
  const client = await dialer(server)
  assert.equal((await client.request(addrOf(server), { type: 'task', payload: 'after' })).payload, 'after')
  await closeAll(server, client)
})

test('a worker thread may exit while its transport is still closing', async () => {
  // The transport's close() removes its exit hook at once; what wakes JS must still be
  // closed with the worker's environment, or a runtime thread wakes freed memory later.
  const server = await listener()
  server.onRequest((m) => m.payload)
  for (let round = 0; round < 5; round++) {
    const worker = new Worker(
      `
      const { workerData } = require('node:worker_threads')
      const { QuicTransport } = require(workerData.indexPath)
      ;(async () => {
        const t = await QuicTransport.create({ tls: { pinnedFingerprints: [workerData.pin] } })
        await t.request(workerData.addr, { type: 'task', payload: 'x' })
        for (let i = 0; i < 20; i++) t.request(workerData.addr, { type: 'task', payload: i }).catch(() => {})
        t.close()
        process.exit(0)
      })()
    `,
      { eval: true, workerData: { indexPath, addr: addrOf(server), pin: server.fingerprint } },
    )
    const code = await new Promise((resolve, reject) => {
      worker.once('exit', resolve)
      worker.once('error', reject)
    })
    assert.equal(code, 0)
  }
  const client = await dialer(server)
  assert.equal((await client.request(addrOf(server), { type: 'task', payload: 'after' })).payload, 'after')
  await closeAll(server, client)
})

test('maxIdleTimeoutMs evicts an idle connection; keepAliveMs keeps it', async () => {
  const server = await listener({ maxIdleTimeoutMs: 200 })
  server.onRequest(() => 'ok')
  const idle = await dialer(server, { maxIdleTimeoutMs: 200 })
  const alive = await dialer(server, { maxIdleTimeoutMs: 200, keepAliveMs: 50 })
  const addr = addrOf(server)
  await idle.request(addr, { type: 'task' })
  await alive.request(addr, { type: 'task' })
  assert.ok(await eventually(() => idle.getStats().pool.closed === 1, { timeoutMs: 3000 }))
  assert.equal(idle.getStats().pool.idle, 0)
  await new Promise((resolve) => setTimeout(resolve, 300))
  assert.equal(alive.getStats().pool.closed, 0)
  assert.equal(alive.getStats().pool.idle, 1)
  await idle.request(addr, { type: 'task' })
  assert.equal(idle.getStats().pool.created, 2, 're-dialled after eviction')
  await closeAll(server, idle, alive)
})

test('a transport that was closed and collected is freed whole', async () => {
  // Before, a hook kept every transport ever created in memory with its socket state and
  // threadsafe function, and each one made every later crossing into JS slower.
  const bindingPath = fileURLToPath(new URL('../binding.js', import.meta.url))
  const source = `
    const { QuicTransport } = require(${JSON.stringify(indexPath)})
    const { endpointsInMemory } = require(${JSON.stringify(bindingPath)})
    // In a function of its own, so that no variable of the caller still refers to a client.
    async function createAndClose(server, addr) {
      for (let i = 0; i < 40; i++) {
        const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
        if (i % 2 === 0) await client.request(addr, { type: 'task', payload: i })
        await client.close()
      }
    }
    ;(async () => {
      const server = await QuicTransport.create({ listen: {} })
      server.onRequest((m) => m.payload)
      const addr = server.address.host + ':' + server.address.port
      const before = endpointsInMemory()
      await createAndClose(server, addr)
      const created = endpointsInMemory() - before
      let after = created
      for (let i = 0; i < 50 && after > 0; i++) {
        globalThis.gc()
        await new Promise((resolve) => setTimeout(resolve, 20))
        after = endpointsInMemory() - before
      }
      await server.close()
      console.log(JSON.stringify({ created, after }))
    })()
  `
  const { code, out } = await runNode(source, 20000, ['--expose-gc'])
  assert.equal(code, 0, out)
  const { created, after } = JSON.parse(out.trim().split('\n').pop())
  assert.ok(created > 0, 'the transports were counted while open')
  assert.equal(after, 0, `${after} of 40 closed transports are still in memory`)
})
