#!/usr/bin/env node
// Side-by-side benchmark: agentic-flow-quic against Node's TCP+TLS, node:http2 over TLS,
// WebSocket over TLS (ws), and the pure-Rust core, with the server and the client in
// separate processes, each pinned to its own core. Rounds interleave transports;
// medians are reported. Writes bench/results/<date>.{json,md,svg}.
//
//   npm run bench                 full run (several minutes)
//   npm run bench -- --quick      short smoke run (CI)
//   options: --rounds N  --transports quic,tcp-tls,…  --scenarios rtt,rps,…  --no-loss
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { median } from './stats.mjs'
import { renderChart, renderMarkdown, evaluateTargets } from './report.mjs'

const root = fileURLToPath(new URL('..', import.meta.url))
const require = createRequire(import.meta.url)
const { QuicTransport } = require('../index.js')

// ---- options -------------------------------------------------------------------------
const argv = process.argv.slice(2)
const flag = (name) => argv.includes(name)
const option = (name, fallback) => {
  const i = argv.indexOf(name)
  return i >= 0 && argv[i + 1] ? argv[i + 1] : fallback
}
const QUICK = flag('--quick')
const ALL_TRANSPORTS = ['quic', 'tcp-tls', 'http2', 'ws', 'rust-quic']
const ALL_SCENARIOS = ['connect', 'resume', 'rtt', 'rps', 'oneway', 'bulk', 'spawn10', 'memory']
const transports = option('--transports', ALL_TRANSPORTS.join(',')).split(',')
const scenarios = option('--scenarios', ALL_SCENARIOS.join(',')).split(',')
const rounds = Number(option('--rounds', QUICK ? 1 : 3))
for (const t of transports) if (!ALL_TRANSPORTS.includes(t)) usage(`unknown transport ${t}`)
for (const s of scenarios) if (!ALL_SCENARIOS.includes(s)) usage(`unknown scenario ${s}`)
if (!Number.isInteger(rounds) || rounds < 1) usage('--rounds takes a whole number above 0')

function usage(problem) {
  console.error(`${problem}\nusage: node bench/run.mjs [--quick] [--rounds N] [--transports ${ALL_TRANSPORTS}] [--scenarios ${ALL_SCENARIOS}] [--no-loss]`)
  process.exit(2)
}

// Scenario parameters: the full run, and the CI smoke run.
const PARAMS = QUICK
  ? {
      connect: { count: 5 },
      resume: { count: 3 },
      rtt: { seconds: 1, size: 64 },
      rps: { seconds: 1, size: 1024, concurrency: 64 },
      oneway: { count: 20000, size: 1024, window: 4096, seconds: 2 },
      bulk: { size: 8 << 20, count: 1 },
      spawn10: { count: 2, agents: 10 },
      memory: { count: 50 },
    }
  : {
      connect: { count: 30 },
      resume: { count: 30 },
      rtt: { seconds: 3, size: 64 },
      rps: { seconds: 3, size: 1024, concurrency: 64 },
      oneway: { count: 200000, size: 1024, window: 4096, seconds: 5 },
      bulk: { size: 64 << 20, count: 3 },
      spawn10: { count: 5, agents: 10 },
      memory: { count: 1000 },
    }
// What the pure-Rust peer (examples/bench_peer.rs) can run.
const RUST_SCENARIOS = new Set(['connect', 'resume', 'rtt', 'rps', 'bulk'])
// `resume` (a reconnect resuming its session: 0-RTT for this package and its Rust core,
// TLS session resumption for tcp-tls); its target compares quic's with tcp-tls's
// `connect`.
const RESUME_TRANSPORTS = new Set(['quic', 'rust-quic', 'tcp-tls'])
const LOSS_RATES = [1, 5]
const LOSS_SCENARIOS = ['rtt', 'rps']
const HOST = '127.0.0.1'
const RUN_TIMEOUT_MS = 180_000

// ---- machine ---------------------------------------------------------------------------
const cores = os.availableParallelism()
const hasTaskset = spawnSync('sh', ['-c', 'command -v taskset']).status === 0
const pinned = cores >= 2 && hasTaskset
const pin = (cpu) => (pinned ? ['taskset', '-c', String(cpu)] : [])
const machine = {
  cpu: os.cpus()[0]?.model ?? 'unknown',
  cores,
  memoryGiB: Math.round(os.totalmem() / 2 ** 30),
  kernel: os.release(),
  node: process.version,
  pinned: pinned ? 'server on CPU 1, client on CPU 0 (taskset)' : 'not pinned',
}

// ---- the Rust peer ---------------------------------------------------------------------
const rustPeer = join(root, 'target', 'release', 'examples', 'bench_peer')
if (transports.includes('rust-quic') && !existsSync(rustPeer)) {
  console.error('building the Rust bench peer (cargo build --release --no-default-features --example bench_peer)')
  const built = spawnSync('cargo', ['build', '--release', '--no-default-features', '--example', 'bench_peer'], {
    cwd: root,
    stdio: 'inherit',
  })
  if (built.status !== 0) throw new Error('cannot build examples/bench_peer.rs')
}

// ---- certificates ----------------------------------------------------------------------
const work = mkdtempSync(join(os.tmpdir(), 'afq-bench-'))
const identity = QuicTransport.generateCertificate(['localhost', '127.0.0.1'])
const certPath = join(work, 'cert.pem')
const keyPath = join(work, 'key.pem')
writeFileSync(certPath, identity.cert)
writeFileSync(keyPath, identity.key)

// ---- processes -------------------------------------------------------------------------
/** A child process whose stdout is read line by line. */
function child(argv0, { netns } = {}) {
  const argvFull = [...(netns ? ['ip', 'netns', 'exec', netns] : []), ...argv0]
  const proc = spawn(argvFull[0], argvFull.slice(1), { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] })
  const queue = []
  const waiters = []
  const lines = createInterface({ input: proc.stdout })
  lines.on('line', (line) => (waiters.length ? waiters.shift().resolve(line) : queue.push(line)))
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })))
  exited.then(({ code, signal }) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${argv0.join(' ')} exited (${code ?? signal})`))
  })
  const timer = setTimeout(() => proc.kill('SIGKILL'), RUN_TIMEOUT_MS)
  exited.then(() => clearTimeout(timer))
  return {
    nextLine: () =>
      queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve, reject) => waiters.push({ resolve, reject })),
    write: (line) => proc.stdin.write(`${line}\n`),
    end: () => proc.stdin.end(),
    exited,
  }
}

async function startServer(transport, { netns, port = 0 } = {}) {
  const command =
    transport === 'rust-quic'
      ? [rustPeer, 'server', '--host', HOST, '--port', String(port), '--cert', certPath, '--key', keyPath]
      : [process.execPath, '--expose-gc', 'bench/server.mjs', transport, HOST, String(port), certPath, keyPath]
  const proc = child([...pin(1), ...command], { netns })
  const ready = await proc.nextLine()
  const match = /^READY (\d+)$/.exec(ready)
  if (!match) throw new Error(`${transport} server said ${ready}`)
  return {
    port: Number(match[1]),
    ask: async (line) => {
      proc.write(line)
      return JSON.parse(await proc.nextLine())
    },
    quit: async () => {
      proc.write('quit')
      proc.end()
      await proc.exited
    },
  }
}

function startClient(transport, port, scenario, params, { netns } = {}) {
  const command =
    transport === 'rust-quic'
      ? [rustPeer, 'client', '--host', HOST, '--port', String(port), '--ca', certPath, '--scenario', scenario,
         ...Object.entries(params).flatMap(([k, v]) => [`--${k}`, String(v)])]
      : [process.execPath, 'bench/client.mjs', transport, HOST, String(port), certPath, scenario,
         ...Object.entries(params).map(([k, v]) => `${k}=${v}`)]
  return child([...pin(0), ...command], { netns })
}

async function clientResult(proc) {
  const line = await proc.nextLine()
  const { code } = await proc.exited
  if (code !== 0) throw new Error(`client exited with ${code}`)
  return JSON.parse(line)
}

// ---- one measurement -------------------------------------------------------------------
async function measure(transport, scenario, params, { netns, port } = {}) {
  const server = await startServer(transport, { netns, port })
  try {
    if (scenario === 'oneway') {
      await server.ask('reset')
      const client = startClient(transport, server.port, scenario, params, { netns })
      const sent = JSON.parse(await client.nextLine())
      let stats = await server.ask('stats')
      const deadline = Date.now() + 30_000
      while (stats.count < sent.sent && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        stats = await server.ask('stats')
      }
      client.write('done')
      client.end()
      await client.exited
      const seconds = (stats.lastNs - stats.firstNs) / 1e9
      return { received: stats.count, msgsPerSec: stats.count > 1 ? (stats.count - 1) / seconds : NaN, sendRate: sent.sendRate }
    }
    if (scenario === 'memory') {
      const before = await server.ask('rss')
      const client = startClient(transport, server.port, scenario, params, { netns })
      const open = await client.nextLine()
      const opened = Number(/^OPEN (\d+)$/.exec(open)?.[1])
      const after = await server.ask('rss')
      client.write('done')
      client.end()
      await client.exited
      return { connections: opened, bytesPerConnection: (after.rssBytes - before.rssBytes) / opened }
    }
    return await clientResult(startClient(transport, server.port, scenario, params, { netns }))
  } finally {
    await server.quit()
  }
}

// ---- packet loss in a network namespace ------------------------------------------------
const LOSS_PORT = 47443
function lossAvailable() {
  if (flag('--no-loss')) return 'skipped (--no-loss)'
  if (process.getuid?.() !== 0) return 'skipped: needs root for ip netns and nftables'
  for (const tool of ['ip', 'nft']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `skipped: ${tool} is not installed (iproute2, nftables)`
  }
  return null
}

function sh(command) {
  const result = spawnSync('sh', ['-c', command], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`${command}: ${result.stderr}`)
}

/** A namespace whose loopback drops `percent`% of the bench port's packets, each way. */
function lossNamespace(percent) {
  const name = `afq-bench-${process.pid}-${percent}`
  sh(`ip netns add ${name}`)
  sh(`ip netns exec ${name} ip link set lo up`)
  const rules = [
    'add table inet afq',
    'add chain inet afq in { type filter hook input priority 0 ; }',
    'add chain inet afq out { type filter hook output priority 0 ; }',
    // Client-to-server packets are dropped on input, server-to-client on output.
    `add rule inet afq in udp dport ${LOSS_PORT} numgen random mod 100 < ${percent} drop`,
    `add rule inet afq in tcp dport ${LOSS_PORT} numgen random mod 100 < ${percent} drop`,
    `add rule inet afq out udp sport ${LOSS_PORT} numgen random mod 100 < ${percent} drop`,
    `add rule inet afq out tcp sport ${LOSS_PORT} numgen random mod 100 < ${percent} drop`,
  ]
  const rulesPath = join(work, `nft-${percent}.rules`)
  writeFileSync(rulesPath, rules.join('\n') + '\n')
  sh(`ip netns exec ${name} nft -f ${rulesPath}`)
  return { name, remove: () => spawnSync('ip', ['netns', 'del', name]) }
}

// ---- the run ---------------------------------------------------------------------------
const results = {}
const record = (bucket, scenario, transport, value) => {
  bucket[scenario] ??= {}
  ;(bucket[scenario][transport] ??= []).push(value)
}
const started = Date.now()
const progress = (text) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s] ${text}\n`)

try {
  for (let round = 0; round < rounds; round++) {
    for (const scenario of scenarios) {
      // Rotate the order each round, so no transport always runs first.
      const order = transports.map((_, i) => transports[(i + round) % transports.length])
      for (const transport of order) {
        if (transport === 'rust-quic' && !RUST_SCENARIOS.has(scenario)) continue
        if (scenario === 'resume' && !RESUME_TRANSPORTS.has(transport)) continue
        progress(`round ${round + 1}/${rounds} ${scenario} ${transport}`)
        record(results, scenario, transport, await measure(transport, scenario, PARAMS[scenario]))
      }
    }
  }

  const lossNote = lossAvailable()
  const loss = {}
  const lossRetries = []
  if (!lossNote) {
    for (const percent of LOSS_RATES) {
      const ns = lossNamespace(percent)
      try {
        loss[`${percent}%`] = {}
        for (const scenario of LOSS_SCENARIOS) {
          for (const transport of transports) {
            if (transport === 'rust-quic' && !RUST_SCENARIOS.has(scenario)) continue
            progress(`loss ${percent}% ${scenario} ${transport}`)
            const run = () => measure(transport, scenario, PARAMS[scenario], { netns: ns.name, port: LOSS_PORT })
            let result
            try {
              result = await run()
            } catch (err) {
              // Under loss a client can fail for good reasons (its connection given up):
              // say so in the report, and measure once more.
              const what = `loss ${percent}% ${scenario} ${transport}: the first attempt failed (${err.message.split('\n')[0]}); measured again`
              progress(what)
              lossRetries.push(what)
              result = await run()
            }
            record(loss[`${percent}%`], scenario, transport, result)
          }
        }
      } finally {
        ns.remove()
      }
    }
  } else {
    progress(`packet loss runs ${lossNote}`)
  }

  progress('JS <-> Rust boundary (bench/boundary.mjs)')
  const boundaryRun = spawnSync(process.execPath, ['bench/boundary.mjs', '--json', ...(QUICK ? ['--quick'] : [])], {
    cwd: root,
    encoding: 'utf8',
  })
  if (boundaryRun.status !== 0) throw new Error(`bench/boundary.mjs failed: ${boundaryRun.stderr}`)
  const boundary = JSON.parse(boundaryRun.stdout)

  const summary = summarize(results)
  const lossSummary = Object.fromEntries(Object.entries(loss).map(([rate, bucket]) => [rate, summarize(bucket)]))
  const targets = evaluateTargets(summary, lossSummary)
  const date = new Date().toISOString().replace(/[:]/g, '-').replace(/\..+/, '')
  const command = `npm run bench -- ${argv.join(' ')}`.trim()
  const report = { date, command, machine, quick: QUICK, rounds, params: PARAMS, results: summary, loss: lossSummary, lossNote, lossRetries, boundary, targets, raw: { results, loss } }
  const dir = join(root, 'bench', 'results')
  mkdirSync(dir, { recursive: true })
  const base = join(dir, `${date}${QUICK ? '-quick' : ''}`)
  writeFileSync(`${base}.json`, JSON.stringify(report, null, 2))
  const markdown = renderMarkdown(report)
  writeFileSync(`${base}.md`, markdown)
  writeFileSync(`${base}.svg`, await renderChart(report))
  console.log(markdown)
  console.log(`\nwrote ${base}.json, .md and .svg`)
} finally {
  rmSync(work, { recursive: true, force: true })
}

/** Median of every numeric field over the rounds. */
function summarize(bucket) {
  const out = {}
  for (const [scenario, byTransport] of Object.entries(bucket)) {
    out[scenario] = {}
    for (const [transport, runs] of Object.entries(byTransport)) {
      const fields = Object.keys(runs[0]).filter((k) => typeof runs[0][k] === 'number')
      out[scenario][transport] = Object.fromEntries(fields.map((f) => [f, median(runs.map((r) => r[f]))]))
    }
  }
  return out
}
