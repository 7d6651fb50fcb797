// Writes a development certificate for localhost and 127.0.0.1 into a folder, for the
// shell scripts of this folder: `node bench/make-cert.mjs <dir>` -> <dir>/cert.pem, key.pem.
import { writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')
const dir = process.argv[2]
if (!dir) {
  console.error('usage: node bench/make-cert.mjs <dir>')
  process.exit(2)
}
const { cert, key } = QuicTransport.generateCertificate(['localhost', '127.0.0.1'])
writeFileSync(join(dir, 'cert.pem'), cert)
writeFileSync(join(dir, 'key.pem'), key)
