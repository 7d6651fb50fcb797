// Type-checks a use of the whole public API (ESM). Compiled, never run:
// `tsc -p __test__/types/tsconfig.json` (the types test runs it).
import {
  QuicTransport,
  QuicTransportError,
  ERROR_CODES,
  type AgentMessage,
  type ErrorCode,
  type Peer,
  type ReceivedMessage,
  type TransportOptions,
  type TransportStats,
} from 'agentic-flow-quic'

interface Task {
  task: string
  priority: number
}

const options: TransportOptions = {
  listen: { host: '127.0.0.1', port: 0 },
  tls: { pinnedFingerprints: [], insecureSkipVerify: false, requireClientCert: false },
  serverName: 'localhost',
  connectTimeoutMs: 5000,
  requestTimeoutMs: 30000,
  maxIdleTimeoutMs: 30000,
  keepAliveMs: 1000,
  maxConcurrentStreams: 1000,
  maxMessageBytes: 16 * 1024 * 1024,
  zeroRtt: false,
}

export async function main(): Promise<void> {
  const cert = QuicTransport.generateCertificate(['localhost'])
  const pem: string = cert.cert
  const server = await QuicTransport.create({ ...options, tls: { cert: pem, key: Buffer.from(cert.key) } })
  const address = server.address
  if (address === null) throw new Error('listening')
  const addr = `${address.host}:${address.port}`
  const fingerprint: string = server.fingerprint

  server.onRequest(async (msg: ReceivedMessage, peer: Peer) => {
    const id: string = msg.id
    const stream: string = msg.streamId
    const who: string | undefined = peer.fingerprint
    return { id, stream, who, from: peer.address }
  })
  server.onMessage((msg) => {
    void msg.payload
  })
  server.onRequest(null)

  const client = await QuicTransport.create({ tls: { pinnedFingerprints: [fingerprint], ca: pem, caPath: undefined } })
  await client.connect(addr)
  const message: AgentMessage<Task> = { type: 'task', payload: { task: 'x', priority: 1 }, metadata: { a: 1 }, streamId: 'jobs' }
  const reply = await client.request<{ ok: boolean }>(addr, message, { timeoutMs: 100, signal: AbortSignal.timeout(1000) })
  const ok: boolean = reply.payload.ok
  await client.send(addr, { type: 'heartbeat', payload: Buffer.from([1]) })
  await client.sendBatch(addr, [message, { type: 'status' }])
  const got = await server.receive<Task>(undefined, 'jobs')
  const priority: number = got.payload.priority
  const sender: string = got.peer.address
  const stats: TransportStats = client.getStats()
  const rtt: number | undefined = stats.connections[0]?.rttMs
  const early: boolean | undefined = stats.connections[0]?.zeroRtt
  const hits: number = stats.pool.hits
  const hadConnection: boolean = await client.disconnect(addr)

  try {
    await client.request(addr, { type: 'task' })
  } catch (err) {
    if (err instanceof QuicTransportError) {
      const code: ErrorCode = err.code
      if (code === 'ERR_TIMEOUT' || ERROR_CODES.includes(code)) void code
    }
  }
  await client.close()
  await server.close()
  void [ok, priority, sender, rtt, hits]
}
