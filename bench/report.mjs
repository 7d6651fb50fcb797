// Turns a benchmark run into a markdown table, target ratios and an SVG chart (vega-lite).
import * as vega from 'vega'
import * as vegaLite from 'vega-lite'

// [row label, scenario, metric, format]
const ROWS = [
  ['rtt p50 (ms), 64 B, 1 in flight', 'rtt', 'p50Ms', 3],
  ['rtt p99 (ms)', 'rtt', 'p99Ms', 3],
  ['rps (requests/s), 1 KiB, 64 in flight', 'rps', 'rps', 0],
  ['rps p99 latency (ms)', 'rps', 'p99Ms', 2],
  ['oneway (messages/s at the receiver), 1 KiB', 'oneway', 'msgsPerSec', 0],
  ['bulk (MB/s each way), one payload echoed', 'bulk', 'mbPerSec', 0],
  ['connect p50 (ms), new connection + first reply', 'connect', 'p50Ms', 2],
  ['connect p99 (ms)', 'connect', 'p99Ms', 2],
  ['reconnect p50 (ms), resuming the session (quic: 0-RTT) + first reply', 'resume', 'p50Ms', 2],
  ['reconnect p99 (ms)', 'resume', 'p99Ms', 2],
  ['reconnects that resumed their session', 'resume', 'resumed', 0],
  ['spawn10 (wall ms), 10 agents connect and request at once', 'spawn10', 'wallMs', 1],
  ['memory (KiB per idle connection, server RSS)', 'memory', 'bytesPerConnection', 1, 1 / 1024],
]

const LOSS_ROWS = [
  ['rtt p50 (ms)', 'rtt', 'p50Ms', 2],
  ['rtt p99 (ms)', 'rtt', 'p99Ms', 2],
  ['rtt max (ms)', 'rtt', 'maxMs', 1],
  ['rps (requests/s)', 'rps', 'rps', 0],
  ['rps p99 (ms)', 'rps', 'p99Ms', 1],
  ['rps max (ms)', 'rps', 'maxMs', 1],
]

// The targets of the performance issue, for quic against the named transport (in the
// same scenario, or in the one named last).
const TARGETS = [
  ['rps at least 0.5x tcp-tls', 'rps', 'rps', 'tcp-tls', '>=', 0.5],
  ['rps at least 5x http2', 'rps', 'rps', 'http2', '>=', 5],
  ['rps at least 0.85x the Rust core', 'rps', 'rps', 'rust-quic', '>=', 0.85],
  ['oneway at least 0.5x tcp-tls', 'oneway', 'msgsPerSec', 'tcp-tls', '>=', 0.5],
  ['rtt p50 at most 1.3x tcp-tls', 'rtt', 'p50Ms', 'tcp-tls', '<=', 1.3],
  ['connect p50 at most tcp-tls', 'connect', 'p50Ms', 'tcp-tls', '<=', 1],
  ['0-RTT reconnect p50 at most half of tcp-tls connect p50', 'resume', 'p50Ms', 'tcp-tls', '<=', 0.5, 'connect'],
  ['spawn10 at most tcp-tls', 'spawn10', 'wallMs', 'tcp-tls', '<=', 1],
  ['bulk at least 1.5x tcp-tls', 'bulk', 'mbPerSec', 'tcp-tls', '>=', 1.5],
  ['memory per connection at most tcp-tls', 'memory', 'bytesPerConnection', 'tcp-tls', '<=', 1],
]
const LOSS_TARGETS = ['tcp-tls', 'http2', 'ws'].map((vs) => [`1% loss: rtt p99 at most 1/5 of ${vs}`, 'rtt', 'p99Ms', vs, '<=', 0.2])

function ratioTarget([name, scenario, metric, vs, op, factor, vsScenario = scenario], bucket) {
  const ours = bucket?.[scenario]?.quic?.[metric]
  const theirs = bucket?.[vsScenario]?.[vs]?.[metric]
  if (!Number.isFinite(ours) || !Number.isFinite(theirs) || theirs === 0) return { name, ratio: null, met: null }
  const ratio = ours / theirs
  return { name, ratio, met: op === '>=' ? ratio >= factor : ratio <= factor }
}

export function evaluateTargets(summary, lossSummary) {
  return [
    ...TARGETS.map((t) => ratioTarget(t, summary)),
    ...LOSS_TARGETS.map((t) => ratioTarget(t, lossSummary['1%'])),
  ]
}

const fmt = (value, digits, scale = 1) => (Number.isFinite(value) ? (value * scale).toFixed(digits) : '–')

function table(rows, bucket, transports) {
  const header = `| | ${transports.join(' | ')} |\n| --- |${transports.map(() => ' ---: |').join('')}`
  const lines = rows
    .filter(([, scenario]) => bucket[scenario])
    .map(([label, scenario, metric, digits, scale]) => {
      const cells = transports.map((t) => fmt(bucket[scenario]?.[t]?.[metric], digits, scale))
      return `| ${label} | ${cells.join(' | ')} |`
    })
  return [header, ...lines].join('\n')
}

export function renderMarkdown(report) {
  const transports = [...new Set(Object.values(report.results).flatMap((byT) => Object.keys(byT)))]
  const out = [
    `## Benchmark ${report.date}${report.quick ? ' (quick smoke run)' : ''}`,
    '',
    `Command: \`${report.command}\`. Machine: ${report.machine.cpu}, ${report.machine.cores} cores, ` +
      `${report.machine.memoryGiB} GiB, Linux ${report.machine.kernel}, Node ${report.machine.node}; ` +
      `${report.machine.pinned}. Medians of ${report.rounds} round(s), transports interleaved.`,
    '',
    table(ROWS, report.results, transports),
  ]
  for (const [rate, bucket] of Object.entries(report.loss)) {
    out.push('', `Packet loss ${rate} each way (nftables in a network namespace):`, '', table(LOSS_ROWS, bucket, transports))
  }
  if (report.lossNote) out.push('', `Packet loss runs ${report.lossNote}.`)
  for (const retry of report.lossRetries ?? []) out.push('', `Note: ${retry}.`)
  if (report.boundary) {
    const b = report.boundary
    out.push(
      '',
      'The JS <-> Rust boundary on its own, no network (`node bench/boundary.mjs`):',
      '',
      '| crossing | per second | per item |',
      '| --- | ---: | ---: |',
      `| no-op native call | ${b.noopCall.callsPerSec.toFixed(0)} calls | ${b.noopCall.nsPerCall.toFixed(0)} ns |`,
      `| request + reply, 64 B, 1,000 per crossing | ${b.batched.perSec.toFixed(0)} requests | ${b.batched.nsPerRequest.toFixed(0)} ns |`,
      `| request + reply, 64 B, 1 per crossing | ${b.single.perSec.toFixed(0)} requests | ${b.single.nsPerRequest.toFixed(0)} ns |`,
      `| request + reply, 64 KiB Buffers in and out | ${b.buffers.mbPerSecEachWay.toFixed(0)} MB each way | ${(b.buffers.nsPerRequest / 1000).toFixed(1)} µs |`,
    )
  }
  out.push('', '| target (quic vs …) | ratio | met |', '| --- | ---: | --- |')
  for (const t of report.targets) {
    out.push(`| ${t.name} | ${t.ratio === null ? '–' : t.ratio.toFixed(2)} | ${t.met === null ? 'not measured' : t.met ? 'yes' : '**no**'} |`)
  }
  return out.join('\n') + '\n'
}

export async function renderChart(report) {
  const panels = [
    ['rtt p50 (ms, lower is better)', report.results.rtt, 'p50Ms'],
    ['rps (requests/s)', report.results.rps, 'rps'],
    ['oneway (messages/s)', report.results.oneway, 'msgsPerSec'],
    ['bulk (MB/s each way)', report.results.bulk, 'mbPerSec'],
    ['connect p50 (ms, lower is better)', report.results.connect, 'p50Ms'],
    ['1% loss: rtt p99 (ms, lower is better)', report.loss['1%']?.rtt, 'p99Ms'],
  ]
  const values = panels.flatMap(([panel, byTransport, metric]) =>
    Object.entries(byTransport ?? {})
      .filter(([, r]) => Number.isFinite(r[metric]))
      .map(([transport, r]) => ({ panel, transport, value: r[metric] })),
  )
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `agentic-flow-quic vs TCP+TLS, http2, ws (${report.date})`,
    data: { values },
    facet: { field: 'panel', type: 'nominal', title: null, sort: panels.map(([p]) => p) },
    columns: 3,
    spec: {
      width: 220,
      height: 140,
      mark: 'bar',
      encoding: {
        x: { field: 'transport', type: 'nominal', title: null, axis: { labelAngle: -30 } },
        y: { field: 'value', type: 'quantitative', title: null },
        color: { field: 'transport', type: 'nominal', legend: null },
        tooltip: [{ field: 'value', type: 'quantitative', format: '.3~s' }],
      },
    },
    resolve: { scale: { y: 'independent' } },
  }
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' })
  return view.toSVG()
}
