// Trust: missing trust, pins, roots, mutual TLS, insecureSkipVerify.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { QuicTransport, listener, dialer, addrOf, closeAll, codeOf } from './helpers.mjs'

test('a dial with no trust setting fails with ERR_TLS (secure by default)', async () => {
  const server = await listener()
  server.onRequest(() => 'ok')
  const client = await QuicTransport.create()
  const err = await client.request(addrOf(server), { type: 'task' }).catch((e) => e)
  assert.equal(err.code, 'ERR_TLS')
  assert.match(err.message, /tls\.ca|pinnedFingerprints|insecureSkipVerify/)
  await closeAll(server, client)
})

test('a wrong pin fails with ERR_TLS; the server keeps serving others', async () => {
  const server = await listener()
  server.onRequest(() => 'ok')
  const stranger = QuicTransport.generateCertificate()
  const wrong = await QuicTransport.create({ tls: { pinnedFingerprints: [stranger.fingerprint] } })
  assert.equal(await codeOf(wrong.request(addrOf(server), { type: 'task' })), 'ERR_TLS')
  const right = await dialer(server)
  assert.equal((await right.request(addrOf(server), { type: 'task' })).payload, 'ok')
  await closeAll(server, wrong, right)
})

test('a root certificate verifies the server and its name (serverName)', async () => {
  const identity = QuicTransport.generateCertificate(['agents.local'])
  const server = await listener({ tls: { cert: identity.cert, key: identity.key } })
  server.onRequest(() => 'ok')
  const good = await QuicTransport.create({ tls: { ca: identity.cert }, serverName: 'agents.local' })
  assert.equal((await good.request(addrOf(server), { type: 'task' })).payload, 'ok')
  const wrongName = await QuicTransport.create({ tls: { ca: identity.cert } }) // serverName defaults to localhost
  assert.equal(await codeOf(wrongName.request(addrOf(server), { type: 'task' })), 'ERR_TLS')
  const otherRoot = await QuicTransport.create({ tls: { ca: QuicTransport.generateCertificate().cert } })
  assert.equal(await codeOf(otherRoot.request(addrOf(server), { type: 'task' })), 'ERR_TLS')
  await closeAll(server, good, wrongName, otherRoot)
})

test('insecureSkipVerify accepts any server certificate', async () => {
  const server = await listener()
  server.onRequest(() => 'ok')
  const client = await QuicTransport.create({ tls: { insecureSkipVerify: true } })
  assert.equal((await client.request(addrOf(server), { type: 'task' })).payload, 'ok')
  await closeAll(server, client)
})

test('mutual TLS admits pinned clients only and shows their fingerprint to handlers', async () => {
  const agentId = QuicTransport.generateCertificate()
  const server = await listener({ tls: { requireClientCert: true, pinnedFingerprints: [agentId.fingerprint] } })
  const seen = []
  server.onRequest((msg, peer) => {
    seen.push(peer.fingerprint)
    return 'welcome'
  })
  const agent = await dialer(server, { tls: { cert: agentId.cert, key: agentId.key } })
  assert.equal((await agent.request(addrOf(server), { type: 'task' })).payload, 'welcome')
  assert.deepEqual(seen, [agentId.fingerprint])
  const stranger = await dialer(server)
  assert.equal(await codeOf(stranger.request(addrOf(server), { type: 'task' })), 'ERR_TLS')
  await closeAll(server, agent, stranger)
})
