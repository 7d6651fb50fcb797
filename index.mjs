// ES module entry: the same API as index.js (the CommonJS entry), as named exports.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const api = require('./index.js')

export const { QuicTransport, QuicTransportError, ERROR_CODES } = api
export default api
