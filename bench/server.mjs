// A benchmark server process: `node bench/server.mjs <transport> <host> <port> <cert.pem> <key.pem>`.
// Prints `READY <port>`, then answers control lines on stdin, one JSON line each:
//   stats -> { count, firstNs, lastNs, rssBytes }   (one-way messages received)
//   reset -> { ok: true }                           (zero the one-way counter)
//   rss   -> { rssBytes }                           (after a full GC, with --expose-gc)
//   quit  -> closes the server; the process exits
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'

const [transportName, host, port, certPath, keyPath] = process.argv.slice(2)
const transport = await import(`./transports/${transportName}.mjs`)
const server = await transport.startServer({
  host,
  port: Number(port),
  cert: readFileSync(certPath, 'utf8'),
  key: readFileSync(keyPath, 'utf8'),
})
process.stdout.write(`READY ${server.port}\n`)

const reply = (value) => process.stdout.write(`${JSON.stringify(value)}\n`)
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const command = line.trim()
  if (command === 'stats') reply({ ...server.oneway(), rssBytes: process.memoryUsage.rss() })
  else if (command === 'reset') {
    server.resetOneway()
    reply({ ok: true })
  } else if (command === 'rss') {
    for (let i = 0; i < 3; i++) globalThis.gc?.()
    await new Promise((resolve) => setTimeout(resolve, 200))
    reply({ rssBytes: process.memoryUsage.rss() })
  } else if (command === 'quit') break
  else reply({ error: `unknown command ${command}` })
}
lines.close()
await server.close()
