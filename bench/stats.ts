/**
 * Summaries of measured samples: nearest-rank percentiles, min/median/max over repeated runs, and
 * the ratio of a figure to its baseline measured in the same run.
 */

export interface Spread {
  n: number;
  min: number;
  median: number;
  max: number;
}

/** Nearest-rank percentile (p in 0..100) of unsorted samples; NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

/** min / median / max of one figure over several runs. */
export function spread(samples: readonly number[]): Spread {
  if (samples.length === 0) return { n: 0, min: NaN, median: NaN, max: NaN };
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  // Halves first so two huge samples do not overflow to Infinity; clamped so rounding of tiny
  // (subnormal) halves cannot fall outside the two middle samples.
  const median =
    sorted.length % 2 ? sorted[mid] : between(sorted[mid - 1] / 2 + sorted[mid] / 2, sorted[mid - 1], sorted[mid]);
  return { n: sorted.length, min: sorted[0], median, max: sorted[sorted.length - 1] };
}

/** Milliseconds since an arbitrary origin, sub-millisecond resolution, monotonic. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Wall-clock milliseconds since the epoch with sub-millisecond resolution (comparable across processes). */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A number with a sensible count of digits for a table. */
export function fmt(v: number, digits?: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  const d = digits ?? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : Math.abs(v) >= 1 ? 2 : 3);
  return v.toFixed(d);
}

export function fmtSpread(s: Spread, digits?: number): string {
  return `${fmt(s.min, digits)} / ${fmt(s.median, digits)} / ${fmt(s.max, digits)}`;
}

/** The ratio figure / baseline, e.g. "1.23×"; NaN when the baseline is 0. */
export function ratio(figure: number, baseline: number): number {
  return baseline === 0 ? NaN : figure / baseline;
}

/** Per-run ratios figure_i / baseline_i, over the runs both have. */
export function runRatios(runs: readonly number[], baselineRuns: readonly number[]): number[] {
  const n = Math.min(runs.length, baselineRuns.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(ratio(runs[i], baselineRuns[i]));
  return out;
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×` : 'n/a';
}

/**
 * Least-squares line y = a + b·x through the points: intercept a, slope b, and the largest absolute
 * residual (how far the worst point lies from the line). All x equal: slope 0 through the mean;
 * no points: NaN throughout.
 */
export function fitLine(points: Array<[number, number]>): { a: number; b: number; maxResidual: number } {
  const n = points.length;
  if (n === 0) return { a: NaN, b: NaN, maxResidual: NaN };
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  const b = sxx === 0 ? 0 : points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / sxx;
  const a = my - b * mx;
  const maxResidual = Math.max(...points.map(([x, y]) => Math.abs(y - (a + b * x))));
  return { a, b, maxResidual };
}

function between(x: number, low: number, high: number): number {
  return Math.min(Math.max(x, low), high);
}
