// Shared helpers for the JS tests: loopback listeners and dialers that trust them.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
export const { QuicTransport, QuicTransportError, ERROR_CODES } = require('../index.js')

export const addrOf = (t) => `${t.address.host}:${t.address.port}`

/** A loopback listener; closed by the caller (or by `closeAll`). */
export async function listener(options = {}) {
  return QuicTransport.create({ listen: { host: '127.0.0.1', port: 0 }, ...options })
}

/** A dial-only transport that pins `server`'s certificate. */
export async function dialer(server, options = {}) {
  const { tls = {}, ...rest } = options
  return QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint], ...tls }, ...rest })
}

export async function closeAll(...transports) {
  await Promise.all(transports.map((t) => t.close()))
}

/** Rejects with the error, for `assert.rejects`-style checks on `err.code`. */
export async function codeOf(promise) {
  try {
    await promise
  } catch (err) {
    return err.code
  }
  return 'resolved'
}

export async function eventually(check, { timeoutMs = 5000, stepMs = 10 } = {}) {
  const start = Date.now()
  while (Date.now() - start < timeoutMs) {
    if (await check()) return true
    await new Promise((resolve) => setTimeout(resolve, stepMs))
  }
  return check()
}
