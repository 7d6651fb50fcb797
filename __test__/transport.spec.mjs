// QuicTransport.create, options, address, fingerprint, close.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import dgram from 'node:dgram'
import { QuicTransport, QuicTransportError, ERROR_CODES, listener, dialer, addrOf, closeAll, codeOf, eventually } from './helpers.mjs'

test('a listener reports its address and fingerprint; a dialer has no address', async () => {
  const server = await listener()
  assert.equal(server.address.host, '127.0.0.1')
  assert.ok(server.address.port > 0)
  assert.match(server.fingerprint, /^sha256\/[A-Za-z0-9+/]{43}=$/)
  const client = await dialer(server)
  assert.equal(client.address, null)
  assert.match(client.fingerprint, /^sha256\//)
  await closeAll(server, client)
  assert.equal(server.address, null, 'no address after close')
})

test('bad options give ERR_INVALID_ARG naming the option', async () => {
  const cases = [
    [{ connectTimeoutMs: -5 }, /connectTimeoutMs/],
    [{ connectTimeoutMs: 'soon' }, /connectTimeoutMs/],
    [{ initialRttMs: 0 }, /initialRttMs/],
    [{ initialRttMs: 20000 }, /initialRttMs/],
    [{ maxConcurrentStreams: 0 }, /maxConcurrentStreams/],
    [{ maxMessageBytes: 1.5 }, /maxMessageBytes/],
    [{ zeroRtt: 'yes' }, /zeroRtt/],
    [{ listen: { port: 70000 } }, /listen\.port/],
    [{ listen: { host: 'no such host.invalid' } }, /listen\.host/],
    [{ serverName: '' }, /serverName/],
    [{ conectTimeoutMs: 5 }, /unknown option conectTimeoutMs/],
    [{ tls: { pinnedFingerprints: ['md5/abc'] } }, /tls\.pinnedFingerprints/],
    [{ tls: { requireClientCert: true } }, /tls\.requireClientCert/],
    [{ tls: { certPath: '/nonexistent/cert.pem', keyPath: '/nonexistent/key.pem' } }, /tls\.certPath/],
    [{ tls: { cert: 'not pem', key: 'not pem' } }, /tls\.cert/],
    [{ tls: { cert: QuicTransport.generateCertificate().cert } }, /tls\.key/],
    [{ tls: { ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' } }, /tls\.ca/],
    ['nope', /options/],
  ]
  for (const [options, pattern] of cases) {
    const err = await QuicTransport.create(options).then(
      (t) => {
        t.close()
        return null
      },
      (e) => e,
    )
    assert.ok(err, `expected ${JSON.stringify(options)} to fail`)
    assert.ok(err instanceof QuicTransportError)
    assert.equal(err.code, 'ERR_INVALID_ARG', `${JSON.stringify(options)}: ${err.message}`)
    assert.match(err.message, pattern)
  }
})

test('a certificate and key from files are used as the identity', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'afq-'))
  const identity = QuicTransport.generateCertificate()
  writeFileSync(join(dir, 'cert.pem'), identity.cert)
  writeFileSync(join(dir, 'key.pem'), identity.key)
  const server = await listener({ tls: { certPath: join(dir, 'cert.pem'), keyPath: join(dir, 'key.pem') } })
  assert.equal(server.fingerprint, identity.fingerprint)
  // Trust by root certificate file.
  const client = await QuicTransport.create({ tls: { caPath: join(dir, 'cert.pem') } })
  server.onRequest(() => 'ok')
  assert.equal((await client.request(addrOf(server), { type: 'task', payload: null })).payload, 'ok')
  // PEM given inline as Buffers works too.
  const inline = await listener({ tls: { cert: Buffer.from(identity.cert), key: Buffer.from(identity.key) } })
  assert.equal(inline.fingerprint, identity.fingerprint)
  await closeAll(server, client, inline)
})

test('close is idempotent and later calls reject with ERR_CLOSED', async () => {
  const server = await listener()
  const client = await dialer(server)
  const first = client.close()
  const second = client.close()
  await Promise.all([first, second])
  await client.close()
  assert.equal(await codeOf(client.request(addrOf(server), { type: 'task' })), 'ERR_CLOSED')
  assert.equal(await codeOf(client.send(addrOf(server), { type: 'task' })), 'ERR_CLOSED')
  assert.equal(await codeOf(client.receive()), 'ERR_CLOSED')
  assert.equal(await codeOf(client.connect(addrOf(server))), 'ERR_CLOSED')
  await server.close()
})

test('after close(), a peer is told at once and a listener\'s port is free again', async () => {
  const server = await listener({ maxIdleTimeoutMs: 60000 })
  server.onRequest((m) => m.payload)
  const client = await dialer(server, { maxIdleTimeoutMs: 60000 })
  assert.equal((await client.request(addrOf(server), { type: 'task', payload: 1 })).payload, 1)
  assert.equal(server.getStats().connections.length, 1)
  // A dial-only transport's close() returns once the close is sent (the rest of QUIC's
  // draining goes on in the background); the listener learns of it long before its
  // 60 s idle timeout.
  await client.close()
  assert.ok(await eventually(() => server.getStats().connections.length === 0, { timeoutMs: 3000 }))
  // A listener's close() waits until its socket is freed: the same port binds again.
  const { port } = server.address
  const again = await dialer(server)
  await again.request(addrOf(server), { type: 'task', payload: 2 })
  await server.close()
  const reopened = await QuicTransport.create({ listen: { host: '127.0.0.1', port } })
  assert.equal(reopened.address.port, port)
  await closeAll(reopened, again)
})

test('every error code is listed', () => {
  assert.deepEqual(
    [...ERROR_CODES].sort(),
    [
      'ERR_ABORTED', 'ERR_CLOSED', 'ERR_CONNECT', 'ERR_CONNECTION_LOST', 'ERR_INVALID_ARG',
      'ERR_MESSAGE_TOO_LARGE', 'ERR_PROTOCOL', 'ERR_REMOTE', 'ERR_TIMEOUT', 'ERR_TLS',
    ],
  )
})

test('bad arguments to calls give ERR_INVALID_ARG', async () => {
  const server = await listener()
  const client = await dialer(server)
  const addr = addrOf(server)
  assert.equal(await codeOf(client.request('nonsense', { type: 'task' })), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.request(addr, { payload: 1 })), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.request(addr, null)), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.request(addr, { type: 'task', payload: 1n })), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.request(addr, { type: 'task' }, { timeoutMs: 0 })), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.send(addr, { type: 'task', id: 5 })), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.sendBatch(addr, 'x')), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.receive(42)), 'ERR_INVALID_ARG')
  assert.throws(() => client.onRequest('x'), { code: 'ERR_INVALID_ARG' })
  await closeAll(server, client)
})

/**
 * A UDP relay to `server` that drops each new client's first datagram (its first
 * Initial). A client from a new port takes over; earlier clients (still closing) are
 * ignored.
 */
async function dropFirstDatagram(server) {
  const relay = dgram.createSocket('udp4')
  await new Promise((resolve) => relay.bind(0, '127.0.0.1', resolve))
  let client = null
  const earlier = new Set()
  relay.on('message', (datagram, from) => {
    if (from.port === server.address.port) {
      if (client) relay.send(datagram, client.port, client.address)
      return
    }
    if (client?.port !== from.port) {
      if (earlier.has(from.port)) return
      if (client) earlier.add(client.port)
      client = from
      return
    }
    relay.send(datagram, server.address.port, server.address.host)
  })
  return { addr: `127.0.0.1:${relay.address().port}`, close: () => relay.close() }
}

test('initialRttMs sets when a lost first handshake packet is sent again', async () => {
  const server = await listener()
  const relay = await dropFirstDatagram(server)
  const connectMs = []
  for (const initialRttMs of [20, 400]) {
    const client = await dialer(server, { initialRttMs })
    const start = performance.now()
    await client.connect(relay.addr)
    connectMs.push(performance.now() - start)
    await client.close()
  }
  // Sent again after three times the initial RTT: about 60 ms, and about 1,200 ms.
  assert.ok(connectMs[0] < 600, `${connectMs}`)
  assert.ok(connectMs[1] >= 1000, `${connectMs}`)
  relay.close()
  await server.close()
})

test('zeroRtt: a reconnect sends its first request in 0-RTT, and only when both sides enable it', async () => {
  // Connections idle for 200 ms close, so the next request dials again.
  const options = { zeroRtt: true, maxIdleTimeoutMs: 200 }
  for (const serverZeroRtt of [true, false]) {
    const server = await listener({ ...options, zeroRtt: serverZeroRtt })
    server.onRequest((msg) => msg.payload)
    const client = await dialer(server, options)
    const addr = addrOf(server)
    assert.equal((await client.request(addr, { type: 'echo', payload: 'first' })).payload, 'first')
    assert.equal(client.getStats().connections[0].zeroRtt, false, 'no session to resume yet')
    // A request goes in 0-RTT only if it is written before the server's first answer is
    // read: on a loaded machine the runtime's thread may be held up past it, so a few
    // reconnects are allowed for one to show it.
    let used = false
    for (let attempt = 0; attempt < 5 && !used; attempt++) {
      assert.ok(await eventually(() => client.getStats().connections.length === 0), 'the idle connection closed')
      assert.equal((await client.request(addr, { type: 'echo', payload: 'again' })).payload, 'again')
      // Read once the handshake is done (the reply may come first).
      used = await eventually(() => client.getStats().connections[0]?.zeroRtt === true, { timeoutMs: 150 })
    }
    assert.equal(used, serverZeroRtt, `server zeroRtt ${serverZeroRtt}`)
    await closeAll(server, client)
  }
})

test('disconnect() closes the connection with a peer; the next request dials again, resuming in 0-RTT', async () => {
  const server = await listener({ zeroRtt: true })
  server.onRequest((msg) => msg.payload)
  const client = await dialer(server, { zeroRtt: true })
  const addr = addrOf(server)
  assert.equal(await client.disconnect(addr), false, 'no connection yet')
  assert.equal((await client.request(addr, { type: 'echo', payload: 'first' })).payload, 'first')
  assert.equal(await client.disconnect(addr), true)
  assert.equal(client.getStats().connections.length, 0)
  assert.equal(await client.disconnect(addr), false, 'closed already')
  assert.ok(await eventually(() => server.getStats().connections.length === 0), 'the server saw the close')
  assert.equal((await client.request(addr, { type: 'echo', payload: 'again' })).payload, 'again')
  assert.equal(client.getStats().pool.created, 2)
  // In 0-RTT only if the request is written before the server's first answer is read,
  // which a loaded machine can delay (as in the zeroRtt test above): a few reconnects are
  // allowed for one to show it.
  let used = false
  for (let attempt = 0; attempt < 5 && !used; attempt++) {
    // The session tickets follow the handshake's end; a round trip lets them arrive.
    await client.request(addr, { type: 'echo', payload: 'more' })
    assert.equal(await client.disconnect(addr), true)
    assert.equal((await client.request(addr, { type: 'echo', payload: 'again' })).payload, 'again')
    used = await eventually(() => client.getStats().connections[0]?.zeroRtt === true, { timeoutMs: 150 })
  }
  assert.ok(used, 'no reconnect after disconnect() resumed in 0-RTT')
  await closeAll(server, client)
})

test('disconnect(): a request waiting for its reply fails with ERR_CONNECTION_LOST; bad calls reject', async () => {
  const server = await listener()
  let started
  const handling = new Promise((resolve) => (started = resolve))
  server.onRequest(async () => {
    started()
    await new Promise((resolve) => setTimeout(resolve, 5000))
    return 'late'
  })
  const client = await dialer(server)
  const addr = addrOf(server)
  const waiting = codeOf(client.request(addr, { type: 'slow' }))
  await handling
  assert.equal(await client.disconnect(addr), true)
  assert.equal(await waiting, 'ERR_CONNECTION_LOST')
  assert.equal(await codeOf(client.disconnect('nonsense')), 'ERR_INVALID_ARG')
  assert.equal(await codeOf(client.disconnect(42)), 'ERR_INVALID_ARG')
  await client.close()
  assert.equal(await codeOf(client.disconnect(addr)), 'ERR_CLOSED')
  await server.close()
})

test('disconnect(): a message sent in the same tick goes first, on the connection it closes', async () => {
  const server = await listener()
  const got = []
  server.onMessage((msg) => got.push(msg.payload))
  const client = await dialer(server)
  const addr = addrOf(server)
  await client.connect(addr)
  const sent = client.send(addr, { type: 'note', payload: 'last words' })
  const start = performance.now()
  assert.equal(await client.disconnect(addr), true)
  // The peer confirmed it had read the message; no 2 s grace period ran out.
  assert.ok(performance.now() - start < 1000, `${performance.now() - start} ms`)
  await sent
  assert.ok(await eventually(() => got.length === 1))
  assert.equal(got[0], 'last words')
  assert.equal(client.getStats().connections.length, 0, 'no new connection')
  assert.equal(client.getStats().pool.created, 1)
  await closeAll(server, client)
})
