/**
 * Growth: how the daemon's costs grow with the number of VMs. For each size (100, 1000, 5000 by
 * default) a fresh fleet of scripted QMP servers (bench/fake-fleet.ts), the floor holding all of them
 * (bench/probe-floor.ts --full --hold, pinging at the daemon's default interval for that size), then
 * the daemon with the defaults (hold mode, guard on), in each run: start → every VM read (the floor's
 * report; the daemon's last verdict in GET /v1/status), peak and current RSS once settled, and idle
 * CPU in a settled window. A least-squares line per figure over the per-size medians says what one
 * more VM costs.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusDocument } from '../agent/core/types';
import { benchConfig, lastCheckedAt, startDaemon, unitNodeFlags, waitForStatus, writeConfig } from './daemon-proc';
import { runtimeDir, stateDir } from './dirs';
import { heartbeats, idleOf, idleWindow } from './heartbeat-load';
import { memoryMiB, stopChild } from './proc';
import { compareTable, type CompareRow, type Section } from './report';
import { floorWindow, onceAt, startFleet } from './scale-bench';
import { fitLine, fmt, sleep, spread, wallMs } from './stats';

export interface GrowthOptions {
  sizes: number[];
  runs: number;
  idleMs: number;
  idleSlices: number;
  log: (line: string) => void;
}

/** How long after the daemon's last verdict its idle window and memory reading start. */
const SETTLE_MS = 10000;

interface SizeRun {
  floorReadyMs: number;
  floorHwm: number;
  floorIdle: number;
  startMs: number;
  hwm: number;
  rss: number;
  idle: number;
  pingsPerSecond: number;
}

async function sizeRun(vms: number, run: number, opts: GrowthOptions): Promise<SizeRun> {
  const dir = runtimeDir(`physbits-bench-growth${vms}-`);
  const state = stateDir(`physbits-bench-growth${vms}-`);
  const fleetDir = join(dir, 'vms');
  mkdirSync(fleetDir);
  const hb = heartbeats(vms);
  const fleet = await startFleet(fleetDir, vms);
  try {
    const floor = await floorWindow(fleetDir, fleet.child, { vms, ...opts, runs: 1 }, hb.capped);
    const runDir = join(dir, 'daemon');
    mkdirSync(runDir);
    const configPath = join(runDir, 'config.json');
    writeConfig(
      configPath,
      benchConfig(runDir, {
        host: { physBits: 40 },
        discovery: { sockets: [join(fleetDir, '*.qmp')] },
        // The re-verify (default every 5 minutes, a full re-read of every VM and the collection
        // after it) is set to an hour ago, as in the scale section, so that it never falls into an
        // idle window; its cost is the scale section's.
        verify: { schedule: onceAt(new Date(Date.now() - 3600_000)) },
        alerts: { spoolDir: join(state, 'spool') },
      }),
    );
    const d = await startDaemon(configPath, join(runDir, 'api.sock'), join(state, 'daemon.log'), unitNodeFlags());
    try {
      // Polled less often at many VMs: each GET renders the whole status document.
      const doc = await waitForStatus(
        d,
        (s: StatusDocument) => s.vms.length === vms && s.vms.every((v) => v.verdict),
        300000,
        vms > 2000 ? 1000 : 250,
      );
      const startMs = lastCheckedAt(doc) - d.spawnedAt;
      await sleep(SETTLE_MS);
      const idle = await idleWindow([d.pid], fleet.child, { ...opts, periodMs: hb.capped });
      const mem = memoryMiB(d.pid);
      const out: SizeRun = {
        floorReadyMs: floor.readyMs,
        floorHwm: floor.hwm,
        floorIdle: idleOf(floor.idle),
        startMs,
        hwm: mem.hwm,
        rss: mem.rss,
        idle: idleOf(idle),
        pingsPerSecond: idle.pingsPerSecond,
      };
      opts.log(
        `growth ${vms} VMs run ${run + 1}: start ${fmt(startMs)} ms (floor ${fmt(floor.readyMs)} ms), HWM ${fmt(mem.hwm)} MiB (floor ${fmt(floor.hwm)} MiB), ` +
          `idle ${fmt(out.idle, 2)} % (floor ${fmt(out.floorIdle, 2)} %), ${fmt(idle.pingsPerSecond, 0)} pings/s`,
      );
      return out;
    } finally {
      await d.stop();
    }
  } finally {
    await stopChild(fleet.child);
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  }
}

export async function runGrowthBench(opts: GrowthOptions): Promise<Section> {
  const began = wallMs();
  const bySize = new Map<number, SizeRun[]>();
  // Sizes interleaved run by run, so that a change in the machine's load touches every size alike.
  for (let r = 0; r < opts.runs; r++)
    for (const vms of opts.sizes) bySize.set(vms, [...(bySize.get(vms) ?? []), await sizeRun(vms, r, opts)]);
  const med = (xs: number[]) => spread(xs).median;
  const figures: Array<{ name: string; unit: string; daemon: (r: SizeRun) => number; floor: (r: SizeRun) => number }> =
    [
      { name: 'start → every VM read', unit: 'ms', daemon: (r) => r.startMs, floor: (r) => r.floorReadyMs },
      { name: 'peak RSS (VmHWM), settled', unit: 'MiB', daemon: (r) => r.hwm, floor: (r) => r.floorHwm },
      { name: 'idle CPU with the defaults', unit: '% of a core', daemon: (r) => r.idle, floor: (r) => r.floorIdle },
    ];
  const rows: CompareRow[] = [];
  for (const vms of opts.sizes) {
    const runs = bySize.get(vms)!;
    for (const f of figures)
      rows.push({
        figure: `${vms} VMs: ${f.name}`,
        unit: f.unit,
        runs: runs.map(f.daemon),
        baseline: 'floor, same VMs',
        baselineRuns: runs.map(f.floor),
        digits: f.unit === 'MiB' || f.unit === 'ms' ? 0 : 2,
      });
  }
  const fits = [
    '| figure | physbits: fixed + per VM | floor: fixed + per VM | largest residual (physbits / floor) |',
    '|---|---|---|---|',
  ];
  for (const f of figures) {
    const pts = (get: (r: SizeRun) => number) =>
      opts.sizes.map((vms) => [vms, med(bySize.get(vms)!.map(get))] as [number, number]);
    const d = fitLine(pts(f.daemon));
    const fl = fitLine(pts(f.floor));
    const per = (x: number) =>
      f.unit === 'MiB' ? `${fmt(x * 1024, 1)} KiB` : f.unit === 'ms' ? `${fmt(x * 1000)} µs` : `${fmt(x, 4)} ${f.unit}`;
    fits.push(
      `| ${f.name} | ${fmt(d.a)} ${f.unit} + ${per(d.b)} per VM | ${fmt(fl.a)} ${f.unit} + ${per(fl.b)} per VM | ${fmt(d.maxResidual)} / ${fmt(fl.maxResidual)} ${f.unit} |`,
    );
  }
  const pings = opts.sizes
    .map((vms) => `${vms}: ${fmt(med(bySize.get(vms)!.map((r) => r.pingsPerSecond)), 0)}/s`)
    .join(', ');
  const markdown = [
    `Each size (${opts.sizes.join(', ')} VMs) gets a fresh fleet of scripted QMP servers; per run the floor holds every VM and pings it at the daemon's default interval for that size, ` +
      `then the daemon (defaults but the re-verify's schedule, hold mode, guard on, the unit's node flags) starts over the same servers. ${opts.runs} runs, the sizes interleaved. ` +
      `Start is spawn() to the last VM read (floor: its report; daemon: the latest \`checkedAt\` once every VM has a verdict); RSS and idle CPU are read ${SETTLE_MS / 1000} s after that, ` +
      `the idle window as in the scale section (scheduler run time, clear of the minute's scheduled work).`,
    '',
    compareTable(rows),
    '',
    'Fitted lines (least squares over the per-size medians; x = VMs):',
    '',
    fits.join('\n'),
    '',
    `- Heartbeats received by the servers during the daemon's idle windows (each a whole number of per-VM intervals, started between bursts): ${pings}. Up to \`qmp.heartbeatsPerSecond\` (200) VMs each is pinged every second; above it the total stays at 200 a second, ` +
      'so idle CPU is not a straight line in VMs: it rises with the VMs up to the cap and then only with what each held VM costs beyond its heartbeat.',
  ].join('\n');
  return { title: 'Growth: 100 to 5000 VMs', markdown, targets: [], seconds: (wallMs() - began) / 1000 };
}
