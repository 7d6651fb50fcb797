// Packaging: per-platform npm packages match napi.targets, ESM and CommonJS entries,
// typings that type-check, and a clear error when the native binary is missing.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const manifest = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))

// Rust target triple -> [npm dir, os, cpu, libc]
function platformOf(triple) {
  const cpu = { x86_64: 'x64', aarch64: 'arm64' }[triple.split('-')[0]]
  if (triple.endsWith('-linux-gnu')) return [`linux-${cpu}-gnu`, 'linux', cpu, 'glibc']
  if (triple.endsWith('-linux-musl')) return [`linux-${cpu}-musl`, 'linux', cpu, 'musl']
  if (triple.endsWith('-apple-darwin')) return [`darwin-${cpu}`, 'darwin', cpu, undefined]
  if (triple.endsWith('-windows-msvc')) return [`win32-${cpu}-msvc`, 'win32', cpu, undefined]
  throw new Error(`unexpected target ${triple}`)
}

test('napi.targets lists exactly the supported platforms', () => {
  assert.deepEqual([...manifest.napi.targets].sort(), [
    'aarch64-apple-darwin',
    'aarch64-unknown-linux-gnu',
    'aarch64-unknown-linux-musl',
    'x86_64-apple-darwin',
    'x86_64-pc-windows-msvc',
    'x86_64-unknown-linux-gnu',
    'x86_64-unknown-linux-musl',
  ])
})

test('npm/<platform>/package.json exists for exactly napi.targets, in step with the main package', () => {
  const expected = manifest.napi.targets.map(platformOf)
  assert.deepEqual(readdirSync(join(root, 'npm')).sort(), expected.map(([dir]) => dir).sort())
  for (const [dir, os, cpu, libc] of expected) {
    const pkg = JSON.parse(readFileSync(join(root, 'npm', dir, 'package.json'), 'utf8'))
    const binary = `${manifest.napi.binaryName}.${dir}.node`
    assert.equal(pkg.name, `${manifest.name}-${dir}`)
    assert.equal(pkg.version, manifest.version, `${dir} version`)
    assert.deepEqual(pkg.os, [os])
    assert.deepEqual(pkg.cpu, [cpu])
    assert.deepEqual(pkg.libc, libc ? [libc] : undefined, `${dir} libc`)
    assert.equal(pkg.main, binary)
    assert.deepEqual(pkg.files, [binary], `${dir} ships only its binary`)
    assert.equal(pkg.license, manifest.license)
  }
})

test('the main package ships only what runs', () => {
  assert.deepEqual([...manifest.files].sort(), ['binding.d.ts', 'binding.js', 'index.d.ts', 'index.js', 'index.mjs', 'wire.js'])
  const { stdout } = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })
  const files = JSON.parse(stdout)[0].files.map((f) => f.path)
  const leaked = files.filter((f) => /^(src|tests|__test__|target|benches|examples|scripts|npm)\/|\.rs$|Cargo|\.node$/.test(f))
  assert.deepEqual(leaked, [])
})

test('ESM import and CommonJS require give the same API', async () => {
  const esm = await import('agentic-flow-quic')
  const cjs = createRequire(import.meta.url)('agentic-flow-quic')
  assert.equal(esm.QuicTransport, cjs.QuicTransport)
  assert.equal(esm.QuicTransportError, cjs.QuicTransportError)
  assert.equal(esm.ERROR_CODES, cjs.ERROR_CODES)
  assert.equal(esm.default, cjs)
})

test('index.d.ts passes tsc --strict on a typed use of the whole API', () => {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const result = spawnSync(process.execPath, [tsc, '-p', join(root, '__test__', 'types', 'tsconfig.json')], {
    encoding: 'utf8',
  })
  assert.equal(result.status, 0, result.stdout + result.stderr)
})

test('a missing native binary gives an error naming the package to install', () => {
  const dir = mkdtempSync(join(tmpdir(), 'afq-missing-'))
  cpSync(join(root, 'index.js'), join(dir, 'index.js'))
  cpSync(join(root, 'wire.js'), join(dir, 'wire.js'))
  cpSync(join(root, 'package.json'), join(dir, 'package.json'))
  // A loader that finds no binary, as on a platform whose package npm skipped.
  writeFileSync(join(dir, 'binding.js'), "throw new Error('Cannot find native binding.')\n")
  const script = `try { require(${JSON.stringify(join(dir, 'index.js'))}) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message, cause: e.cause && e.cause.message })) }`
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }))
  assert.equal(out.code, 'ERR_NATIVE_BINDING_MISSING')
  const abi = process.platform === 'linux' ? (process.report.getReport().header.glibcVersionRuntime ? '-gnu' : '-musl') : process.platform === 'win32' ? '-msvc' : ''
  assert.ok(out.message.includes(`npm install agentic-flow-quic-${process.platform}-${process.arch}${abi}`), out.message)
  assert.match(out.message, /optional dependency/)
  assert.equal(out.cause, 'Cannot find native binding.')
})
