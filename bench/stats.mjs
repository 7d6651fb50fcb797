// Small statistics helpers shared by the benchmark scripts.

/** p50, p99 and max of latency samples in ms, from the sorted samples themselves. */
export function latencySummary(samples) {
  if (samples.length === 0) return { samples: 0, p50Ms: NaN, p99Ms: NaN, maxMs: NaN }
  const sorted = Float64Array.from(samples).sort()
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
  return { samples: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted[sorted.length - 1] }
}

/** The median of numbers (the lower middle for an even count). */
export function median(values) {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b)
  if (finite.length === 0) return NaN
  return finite[Math.floor((finite.length - 1) / 2)]
}
