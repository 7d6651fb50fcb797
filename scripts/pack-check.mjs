#!/usr/bin/env node
// Proves the npm packaging works without Rust: builds the linux-x64-gnu binary (release),
// packs the main package and the platform package, installs both tarballs into an empty
// project with cargo and rustc off the PATH, then requires and imports the package there,
// starts a listener, makes a request and prints the reply. Fails if sources or build
// output leaked into a tarball. `npm run pack:check`.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const platform = 'linux-x64-gnu'
const binary = `agentic-flow-quic.${platform}.node`
// What a tarball may never contain: sources, tests, build output, tooling.
const LEAK = /(^|\/)(src|tests|__test__|target|benches|examples|scripts|bench|node_modules|\.ci|\.github)\/|\.rs$|Cargo\.(toml|lock)$|\.tgz$/

function run(cmd, args, options = {}) {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', ...options })
}

function pack(dir, destination) {
  const [info] = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', destination], { cwd: dir }))
  return { file: join(destination, info.filename), size: info.size, unpackedSize: info.unpackedSize, files: info.files.map((f) => f.path) }
}

function report(name, tarball) {
  console.log(`\n${name}: ${tarball.file.split('/').pop()}, ${tarball.size} bytes packed, ${tarball.unpackedSize} unpacked`)
  for (const file of tarball.files) console.log(`  ${file}`)
  const leaked = tarball.files.filter((f) => LEAK.test(f))
  if (leaked.length > 0) throw new Error(`${name} leaks files that must not ship: ${leaked.join(', ')}`)
}

if (process.platform !== 'linux' || process.arch !== 'x64' || !process.report.getReport().header.glibcVersionRuntime) {
  console.log(`pack:check builds the ${platform} package; this is ${process.platform}-${process.arch}: skipped`)
  process.exit(0)
}

console.log(`== building ${binary} (release)`)
run('npm', ['run', 'build'], { cwd: root, stdio: 'inherit' })

const work = mkdtempSync(join(tmpdir(), 'afq-pack-'))
try {
  const stage = join(work, platform)
  cpSync(join(root, 'npm', platform), stage, { recursive: true })
  cpSync(join(root, binary), join(stage, binary))
  // The main package as it is published: the release workflow deletes the 'prepare'
  // script (which builds from source in a clone) before 'npm publish'.
  const mainStage = join(work, 'main')
  mkdirSync(mainStage)
  const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  delete manifest.scripts.prepare
  writeFileSync(join(mainStage, 'package.json'), JSON.stringify(manifest, null, 2))
  for (const file of [...manifest.files, 'README.md', 'LICENSE']) cpSync(join(root, file), join(mainStage, file))
  const main = pack(mainStage, work)
  const native = pack(stage, work)
  report('main package', main)
  report('platform package', native)
  for (const required of ['index.js', 'index.mjs', 'index.d.ts', 'wire.js', 'binding.js', 'package.json', 'LICENSE']) {
    if (!main.files.includes(required)) throw new Error(`main package lacks ${required}`)
  }
  if (!native.files.includes(binary)) throw new Error(`platform package lacks ${binary}`)

  // An empty project, and a PATH with no cargo or rustc on it.
  const app = join(work, 'app')
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'afq-pack-check-app', private: true }))
  const path = process.env.PATH.split(delimiter)
    .filter((dir) => !existsSync(join(dir, 'cargo')) && !existsSync(join(dir, 'rustc')))
    .join(delimiter)
  const env = { ...process.env, PATH: path, npm_config_audit: 'false', npm_config_fund: 'false' }
  for (const tool of ['cargo', 'rustc']) {
    let found = true
    try {
      run('sh', ['-c', `command -v ${tool}`], { env })
    } catch {
      found = false
    }
    if (found) throw new Error(`${tool} is still on the PATH of the test project`)
  }
  console.log('\n== installing both tarballs into an empty project (cargo and rustc not on PATH)')
  run('npm', ['install', '--no-audit', '--no-fund', main.file, native.file], { cwd: app, env, stdio: 'inherit' })

  const body = (load) => `
    ${load}
    const server = await QuicTransport.create({ listen: { host: '127.0.0.1', port: 0 } })
    server.onRequest((msg) => ({ echoed: msg.payload }))
    const client = await QuicTransport.create({ tls: { pinnedFingerprints: [server.fingerprint] } })
    const reply = await client.request(server.address.host + ':' + server.address.port, { type: 'task', payload: 'hello' })
    console.log(JSON.stringify(reply.payload))
    await client.close()
    await server.close()
  `
  writeFileSync(join(app, 'check.cjs'), `(async () => {${body("const { QuicTransport } = require('agentic-flow-quic')")}})()`)
  writeFileSync(join(app, 'check.mjs'), body("import { QuicTransport } from 'agentic-flow-quic'"))
  for (const script of ['check.cjs', 'check.mjs']) {
    const out = run(process.execPath, [script], { cwd: app, env, timeout: 30000 }).trim()
    console.log(`${script}: reply payload ${out}`)
    if (out !== '{"echoed":"hello"}') throw new Error(`${script} printed ${out}`)
  }
  const installed = JSON.parse(readFileSync(join(app, 'node_modules', 'agentic-flow-quic', 'package.json'), 'utf8'))
  console.log(`\npack:check passed: agentic-flow-quic@${installed.version} with ${platform} runs without Rust`)
} finally {
  rmSync(work, { recursive: true, force: true })
}
