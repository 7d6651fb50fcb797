// The CommonJS entry has the same types.
import agenticFlowQuic = require('agentic-flow-quic')

export async function dial(pin: string): Promise<agenticFlowQuic.QuicTransport> {
  return agenticFlowQuic.QuicTransport.create({ tls: { pinnedFingerprints: [pin] } })
}
