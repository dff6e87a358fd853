#!/usr/bin/env node
/**
 * `npm run bench`: every benchmark in one run, on this machine, each figure next to its baseline
 * from the same run; writes the results into docs/BENCHMARKS.md below the hand-written preface.
 *
 *   node build/bench/run.js [--only scan,guard,alert,scale,growth,fleet] [--no-write] [--quick] [--growth-sizes 100,1000,5000]
 *     [--fleet-sizes 100,1000,10000] [--fleet-runs N]
 *
 * --quick: fewer runs and smaller fleets, for a look while working on the benchmarks themselves
 * (the document is then not written unless --write is also given).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { kvmUsable } from '../test/helpers/qemu';
import { runAlertBench } from './alert-latency-bench';
import { runGrowthBench } from './growth-bench';
import { runGuardBench } from './guard-bench';
import { describeMachine, machineMarkdown } from './machine';
import { targetTable, type Section } from './report';
import { killTracked } from './proc';
import { runScaleBench } from './scale-bench';
import { runScanBench } from './scan-bench';
import { runFleetPrometheusBench } from './fleet-prometheus-bench';
import { runColdBench } from './cold-bench';
import { fmt, wallMs } from './stats';

export const RESULTS_MARKER = '<!-- Everything below this line is written by `npm run bench`. -->';
const DOC = join(__dirname, '..', '..', 'docs', 'BENCHMARKS.md');

const log = (line: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

/** The preface above the marker is kept; everything below it is replaced. */
export function mergeDocument(existing: string | null, results: string): string {
  const preface =
    existing && existing.includes(RESULTS_MARKER)
      ? existing.slice(0, existing.indexOf(RESULTS_MARKER))
      : '# Benchmarks\n\n';
  return `${preface}${RESULTS_MARKER}\n\n${results}`;
}

async function main(): Promise<void> {
  process.on('exit', killTracked);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  process.on('unhandledRejection', (err) => {
    log(`failed: ${(err as Error)?.stack ?? String(err)}`);
    process.exit(1);
  });
  const { values } = parseArgs({
    options: {
      only: { type: 'string' },
      'no-write': { type: 'boolean' },
      write: { type: 'boolean' },
      quick: { type: 'boolean' },
      'scale-vms': { type: 'string' },
      'scale-runs': { type: 'string' },
      'growth-sizes': { type: 'string' },
      'growth-runs': { type: 'string' },
      'fleet-sizes': { type: 'string' },
      'fleet-runs': { type: 'string' },
    },
  });
  const all = ['scan', 'guard', 'alert', 'scale', 'growth', 'fleet', 'cold'];
  const only = new Set((values.only ?? all.join(',')).split(',').map((s) => s.trim()));
  const quick = !!values.quick;
  const write = values.write || (!values['no-write'] && !quick && all.every((s) => only.has(s)));
  const began = wallMs();
  const kvm = kvmUsable();
  const machine = describeMachine(kvm);
  log(
    `${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB.toFixed(1)} GiB, ${machine.qemu}, node ${machine.node}`,
  );

  const sections: Section[] = [];
  if (only.has('scan'))
    sections.push(await runScanBench({ sizes: quick ? [10] : [10, 50, 100], runs: quick ? 2 : 5, log }));
  if (only.has('guard'))
    sections.push(await runGuardBench({ runs: quick ? 2 : 5, roundTrips: quick ? 300 : 2000, log }));
  if (only.has('alert')) sections.push(await runAlertBench({ repetitions: quick ? 5 : 30, log }));
  if (only.has('scale')) {
    const vms = Number(values['scale-vms'] ?? (quick ? 200 : 1000));
    const runs = Number(values['scale-runs'] ?? (quick ? 1 : 3));
    sections.push(await runScaleBench({ vms, runs, idleMs: quick ? 5000 : 10000, idleSlices: 5, log }));
  }
  if (only.has('growth')) {
    const sizes = (values['growth-sizes'] ?? (quick ? '50,200' : '100,1000,5000')).split(',').map(Number);
    const runs = Number(values['growth-runs'] ?? (quick ? 1 : 2));
    sections.push(await runGrowthBench({ sizes, runs, idleMs: quick ? 5000 : 10000, idleSlices: 5, log }));
  }

  if (only.has('fleet'))
    sections.push(
      await runFleetPrometheusBench({
        sizes: (values['fleet-sizes'] ?? (quick ? '100,1000' : '100,1000,10000')).split(',').map(Number),
        guests: 20,
        meshHosts: 10,
        runs: Number(values['fleet-runs'] ?? (quick ? 1 : 3)),
        log,
      }),
    );

  if (only.has('cold'))
    sections.push(
      await runColdBench({
        runs: quick ? 2 : 5,
        downRuns: quick ? 1 : 3,
        hosts: 1000,
        guests: 20,
        timeoutMs: 1000,
        log,
      }),
    );

  const totalS = (wallMs() - began) / 1000;
  const targets = sections.flatMap((s) => s.targets);
  const results = [
    `## Results`,
    '',
    `Run on ${new Date().toISOString().slice(0, 10)}; the whole run took ${fmt(totalS, 0)} s.`,
    '',
    machineMarkdown(machine),
    '',
    '### Targets',
    '',
    targetTable(targets),
    '',
    ...sections.flatMap((s) => [
      `### ${s.title}`,
      '',
      s.markdown,
      '',
      `_This section took ${fmt(s.seconds, 0)} s._`,
      '',
    ]),
  ].join('\n');
  process.stdout.write(results + '\n');
  if (write) {
    writeFileSync(DOC, mergeDocument(existsSync(DOC) ? readFileSync(DOC, 'utf8') : null, results));
    log(`wrote ${DOC}`);
  }
  log(`done in ${fmt(totalS, 0)} s; ${targets.filter((t) => !t.met).length} of ${targets.length} targets missed`);
}

main().catch((err) => {
  log(`failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
