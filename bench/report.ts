/**
 * What each benchmark hands back, and its rendering as Markdown: a table per section where every
 * figure stands next to its baseline from the same run and the ratio of the two.
 */
import { fmt, fmtRatio, fmtSpread, runRatios, spread } from './stats';

export interface TargetResult {
  section: string;
  what: string;
  target: string;
  measured: string;
  met: boolean;
}

export interface Section {
  title: string;
  markdown: string;
  targets: TargetResult[];
  seconds: number;
}

/** One figure over several runs, and its baseline from the same runs (run i ↔ baseline i). */
export interface CompareRow {
  figure: string;
  unit: string;
  runs: number[];
  baseline: string;
  baselineRuns: number[];
  target?: string;
  digits?: number;
}

export function medianRatio(row: Pick<CompareRow, 'runs' | 'baselineRuns'>): number {
  return spread(runRatios(row.runs, row.baselineRuns)).median;
}

/** | figure | physbits min / median / max | baseline | baseline min / median / max | ratio | target | */
export function compareTable(rows: CompareRow[]): string {
  const lines = [
    '| figure | physbits (min / median / max) | baseline | baseline (min / median / max) | ratio, median (min – max) | target |',
    '|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const rr = spread(runRatios(r.runs, r.baselineRuns));
    lines.push(
      `| ${r.figure} | ${fmtSpread(spread(r.runs), r.digits)} ${r.unit} | ${r.baseline} | ${fmtSpread(spread(r.baselineRuns), r.digits)} ${r.unit} | ` +
        `${fmtRatio(rr.median)} (${fmtRatio(rr.min)} – ${fmtRatio(rr.max)}) | ${r.target ?? ''} |`,
    );
  }
  return lines.join('\n');
}

export function targetTable(targets: TargetResult[]): string {
  const lines = ['| section | figure | target | measured (median) | met |', '|---|---|---|---|---|'];
  for (const t of targets)
    lines.push(`| ${t.section} | ${t.what} | ${t.target} | ${t.measured} | ${t.met ? 'yes' : '**no**'} |`);
  return lines.join('\n');
}

export function target(
  section: string,
  what: string,
  targetText: string,
  measured: number,
  unit: string,
  met: boolean,
): TargetResult {
  return {
    section,
    what,
    target: targetText,
    measured: `${unit === '×' ? fmtRatio(measured) : `${fmt(measured)} ${unit}`}`,
    met,
  };
}
