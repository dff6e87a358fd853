/**
 * Scale: the daemon holding a thousand VMs (scripted QMP servers in a separate process), against
 * the floor (bench/probe-floor.ts --full --hold: the same commands and the same per-VM ping with
 * no judging, no guard, no API) over the same sockets, in the same run.
 *
 * Per run: floor start → all read, its memory and idle CPU; then the daemon: start → every VM has a
 * verdict in GET /v1/status; SIGHUP with another host.physBits → every verdict changed (re-judged
 * from the facts held, no QMP); a scheduled full re-read (verify.schedule set to fire once, at a
 * known second) → every VM read again; VmHWM / VmRSS; idle CPU (utime + stime) over a window.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusDocument } from '../agent/types';
import { runtimeDir, stateDir } from './dirs';
import { benchConfig, startDaemon, waitForStatus, lastCheckedAt, writeConfig, type DaemonProc } from './daemon-proc';
import { cpuMs, firstLine, memoryMiB, stopChild, track } from './proc';
import { compareTable, medianRatio, target, type CompareRow, type Section } from './report';
import { fmt, sleep, spread, wallMs } from './stats';

export interface ScaleOptions {
  vms: number;
  runs: number;
  /** Idle-CPU window per run (ms), split in `idleSlices` slices. */
  idleMs: number;
  idleSlices: number;
  log: (line: string) => void;
  /** Extra config merged into the daemon's (e.g. a qmp.heartbeatMs to compare). */
  qmp?: Record<string, unknown>;
}

interface Idle {
  /** % of one core over each slice. */
  slices: number[];
}

/** CPU % of one core used by `pid` (and `other`, measured over the same slices). */
async function idleCpu(pids: number[], windowMs: number, slices: number): Promise<Idle[]> {
  const out: Idle[] = pids.map(() => ({ slices: [] }));
  const slice = windowMs / slices;
  for (let s = 0; s < slices; s++) {
    const c0 = pids.map(cpuMs);
    const t0 = wallMs();
    await sleep(slice);
    const dt = wallMs() - t0;
    pids.forEach((pid, i) => out[i].slices.push(((cpuMs(pid) - c0[i]) / dt) * 100));
  }
  return out;
}

/** A 6-field node-cron expression that fires once a day at the local second of `when`. */
export function onceAt(when: Date): string {
  return `${when.getSeconds()} ${when.getMinutes()} ${when.getHours()} * * *`;
}

const judgedAll = (n: number) => (doc: StatusDocument) => doc.vms.length === n && doc.vms.every((v) => v.verdict);

interface FloorRun {
  readyMs: number;
  hwm: number;
  rss: number;
  idle: number[];
}

async function floorRun(fleetDir: string, opts: ScaleOptions, fleetPid: number): Promise<FloorRun & { fleetIdle: number[] }> {
  const floorJs = join(__dirname, 'probe-floor.js');
  const t0 = wallMs();
  const floor = spawn(process.execPath, [floorJs, '--full', '--hold', '--ping-ms', String(opts.qmp?.heartbeatMs ?? 1000), '--dir', fleetDir], { stdio: ['ignore', 'pipe', 'inherit'] });
  track(floor.pid, floor);
  try {
    const report = JSON.parse(await firstLine(floor, 120000)) as { ok: number };
    const readyMs = wallMs() - t0;
    if (report.ok !== opts.vms) throw new Error(`probe floor read ${report.ok}/${opts.vms} VMs`);
    await sleep(1000);
    const [idle, fleetIdle] = await idleCpu([floor.pid!, fleetPid], opts.idleMs, opts.idleSlices);
    const mem = memoryMiB(floor.pid!);
    return { readyMs, hwm: mem.hwm, rss: mem.rss, idle: idle.slices, fleetIdle: fleetIdle.slices };
  } finally {
    await stopChild(floor);
  }
}

interface DaemonRun {
  startMs: number;
  rejudgeMs: number;
  rereadMs: number;
  hwm: number;
  rss: number;
  idle: number[];
  fleetIdle: number[];
}

async function daemonRun(dir: string, state: string, fleetDir: string, opts: ScaleOptions, fleetPid: number, run: number): Promise<DaemonRun> {
  const runDir = join(dir, `run${run}`);
  const configPath = join(runDir, 'config.json');
  const fire = new Date(Math.ceil((Date.now() + 20000) / 1000) * 1000);
  const cfg = (physBits: number) =>
    benchConfig(runDir, {
      host: { physBits },
      discovery: { sockets: [join(fleetDir, '*.qmp')] },
      verify: { schedule: onceAt(fire) },
      alerts: { spoolDir: join(state, `spool${run}`) },
      ...(opts.qmp ? { qmp: opts.qmp } : {}),
    });
  mkdirSync(runDir, { recursive: true });
  writeConfig(configPath, cfg(40));
  const d: DaemonProc = await startDaemon(configPath, join(runDir, 'api.sock'), join(state, `daemon${run}.log`));
  try {
    const first = await waitForStatus(d, judgedAll(opts.vms), 120000, 250);
    const startMs = lastCheckedAt(first) - d.spawnedAt;

    writeConfig(configPath, cfg(39));
    const hupAt = wallMs();
    d.child.kill('SIGHUP');
    const judged = await waitForStatus(d, (doc) => judgedAll(opts.vms)(doc) && doc.vms.every((v) => v.verdict?.relation === 'wider'), 60000, 100);
    const rejudgeMs = lastCheckedAt(judged) - hupAt;
    if (wallMs() > fire.getTime() - 1000) throw new Error('start and reload took past the scheduled re-read; raise the margin');

    const reread = await waitForStatus(d, (doc) => judgedAll(opts.vms)(doc) && doc.vms.every((v) => Date.parse(v.checkedAt!) >= fire.getTime()), fire.getTime() - Date.now() + 60000, 250);
    const rereadMs = lastCheckedAt(reread) - fire.getTime();

    await sleep(1000);
    const [idle, fleetIdle] = await idleCpu([d.pid, fleetPid], opts.idleMs, opts.idleSlices);
    const mem = memoryMiB(d.pid);
    return { startMs, rejudgeMs, rereadMs, hwm: mem.hwm, rss: mem.rss, idle: idle.slices, fleetIdle: fleetIdle.slices };
  } finally {
    await d.stop();
  }
}

export async function startFleet(dir: string, count: number): Promise<{ child: ChildProcess; ms: number }> {
  const child = spawn(process.execPath, [join(__dirname, 'fake-fleet.js'), '--dir', dir, '--count', String(count)], { stdio: ['ignore', 'pipe', 'inherit'] });
  track(child.pid, child);
  const report = JSON.parse(await firstLine(child, 120000)) as { sockets: number; ms: number };
  if (report.sockets !== count) throw new Error(`fake fleet started ${report.sockets}/${count}`);
  return { child, ms: report.ms };
}

export async function runScaleBench(opts: ScaleOptions): Promise<Section & { raw: unknown }> {
  const began = wallMs();
  const dir = runtimeDir('physbits-bench-scale-');
  const state = stateDir('physbits-bench-scale-');
  const fleetDir = join(dir, 'vms');
  mkdirSync(fleetDir);
  const fleet = await startFleet(fleetDir, opts.vms);
  opts.log(`scale: ${opts.vms} scripted QMP servers up in ${fmt(fleet.ms)} ms`);
  const floors: Array<FloorRun & { fleetIdle: number[] }> = [];
  const daemons: DaemonRun[] = [];
  try {
    for (let r = 0; r < opts.runs; r++) {
      const f = await floorRun(fleetDir, opts, fleet.child.pid!);
      floors.push(f);
      opts.log(`scale run ${r + 1}: floor ready ${fmt(f.readyMs)} ms, RSS ${fmt(f.rss)} MiB, idle ${f.idle.map((x) => fmt(x)).join(' ')} %`);
      const dr = await daemonRun(dir, state, fleetDir, opts, fleet.child.pid!, r);
      daemons.push(dr);
      opts.log(
        `scale run ${r + 1}: daemon verdicts ${fmt(dr.startMs)} ms, re-judge ${fmt(dr.rejudgeMs)} ms, re-read ${fmt(dr.rereadMs)} ms, ` +
          `HWM ${fmt(dr.hwm)} MiB, RSS ${fmt(dr.rss)} MiB, idle ${dr.idle.map((x) => fmt(x)).join(' ')} % (fleet ${dr.fleetIdle.map((x) => fmt(x)).join(' ')} %)`,
      );
    }
  } finally {
    await stopChild(fleet.child);
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  }
  return { ...scaleSection(opts, floors, daemons), seconds: (wallMs() - began) / 1000, raw: { floors, daemons } };
}

/** Idle CPU per run: the median of the run's slices. */
const idleOf = (slices: number[]) => spread(slices).median;

export function scaleSection(opts: ScaleOptions, floors: Array<FloorRun & { fleetIdle: number[] }>, daemons: DaemonRun[]): Omit<Section, 'seconds'> {
  const n = opts.vms;
  const hb = Number(opts.qmp?.heartbeatMs ?? 1000);
  const rows: CompareRow[] = [
    { figure: `start → all ${n} verdicts in GET /v1/status`, unit: 'ms', runs: daemons.map((d) => d.startMs), baseline: `floor: spawn → all ${n} read (same commands)`, baselineRuns: floors.map((f) => f.readyMs), target: '≤ 2000 ms' },
    { figure: 'SIGHUP host.physBits 40→39 → all verdicts changed', unit: 'ms', runs: daemons.map((d) => d.rejudgeMs), baseline: 'floor: full read of all (as above)', baselineRuns: floors.map((f) => f.readyMs), target: '≤ 2000 ms' },
    { figure: `scheduled full re-read of all ${n} (held connections)`, unit: 'ms', runs: daemons.map((d) => d.rereadMs), baseline: 'floor: full read of all (incl. connect and process start)', baselineRuns: floors.map((f) => f.readyMs), target: '≤ 2000 ms' },
    { figure: 'VmHWM (peak RSS)', unit: 'MiB', runs: daemons.map((d) => d.hwm), baseline: 'floor VmHWM', baselineRuns: floors.map((f) => f.hwm), target: '≤ 150 MiB' },
    { figure: 'VmRSS after the idle window', unit: 'MiB', runs: daemons.map((d) => d.rss), baseline: 'floor VmRSS', baselineRuns: floors.map((f) => f.rss), target: '≤ 150 MiB' },
    { figure: `idle CPU, heartbeat every ${hb} ms (% of one core)`, unit: '%', runs: daemons.map((d) => idleOf(d.idle)), baseline: `floor pinging every ${hb} ms`, baselineRuns: floors.map((f) => idleOf(f.idle)), target: '≤ 1 %', digits: 2 },
  ];
  const med = (xs: number[]) => spread(xs).median;
  const startMed = med(daemons.map((d) => d.startMs));
  const hupMed = med(daemons.map((d) => d.rejudgeMs));
  const rereadMed = med(daemons.map((d) => d.rereadMs));
  const hwmMax = Math.max(...daemons.map((d) => d.hwm));
  const idleMed = med(daemons.map((d) => idleOf(d.idle)));
  const sec = 'scale';
  const targets = [
    target(sec, `start → ${n} verdicts`, '≤ 2000 ms', startMed, 'ms', startMed <= 2000),
    target(sec, `SIGHUP re-judge of ${n}`, '≤ 2000 ms', hupMed, 'ms', hupMed <= 2000),
    target(sec, `full re-read of ${n}`, '≤ 2000 ms', rereadMed, 'ms', rereadMed <= 2000),
    target(sec, 'VmHWM (max over runs)', '≤ 150 MiB', hwmMax, 'MiB', hwmMax <= 150),
    target(sec, `idle CPU (heartbeat ${hb} ms)`, '≤ 1 %', idleMed, '%', idleMed <= 1),
  ];
  const fleetIdle = med(daemons.map((d) => idleOf(d.fleetIdle)));
  const markdown = [
    `${n} scripted QMP servers (test/helpers/fake-qmp.ts, answering like a paused QEMU 7.2 q35 TCG guest) in one separate process; ` +
      `the daemon holds every one (hold mode, guard on: ${n} guarded sockets), default config except the paths, host.physBits and the schedule. ` +
      `${opts.runs} runs; each run starts a fresh floor and a fresh daemon over the same servers.`,
    '',
    compareTable(rows),
    '',
    `- Start time is \`spawn()\` of \`physbitsd\` to the latest \`checkedAt\` in GET /v1/status once all ${n} VMs have a verdict (GET polled every 250 ms; ` +
      '`checkedAt` is stamped when the verdict is made, so the polling interval does not add to the figure). The floor\'s is `spawn()` to its report that every VM was read.',
    `- The SIGHUP figure re-judges the facts already held (no QMP traffic): from \`kill -HUP\` to the last changed verdict. The full re-read is the daemon's own ` +
      'scheduled re-verify (`verify.schedule` set to fire once at a known second): from that second to the last VM read again over its held connection. ' +
      'Both are compared with the floor\'s full read, which also pays for connecting and starting a process: the ratio is an upper bound of the overhead.',
    `- Idle CPU: utime + stime from /proc/<pid>/stat over ${opts.idleSlices} slices of ${fmt(opts.idleMs / opts.idleSlices / 1000)} s per run (the run's figure is the median slice), ` +
      `starting 1 s after the re-read; a minute at this rate is ${fmt(idleMed * 0.6, 2)} CPU-seconds. Meanwhile the scripted servers answering the heartbeats used ${fmt(fleetIdle, 1)} % of a core (not the daemon's).`,
    `- Idle CPU ratio ${(medianRatio(rows[5]) || NaN).toFixed(2)}× of a bare loop that sends the same pings: the heartbeat's cost is mostly the pings themselves.`,
  ].join('\n');
  return { title: `Scale: ${n} VMs`, markdown, targets };
}
