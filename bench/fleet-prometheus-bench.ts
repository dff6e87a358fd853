/**
 * The fleet view at scale: the packaged `physbitsctl fleet --prometheus` against a real Prometheus
 * holding the series of 100, 1,000 and 10,000 hosts × 20 guests (an OpenMetrics file per size,
 * backfilled with `promtool tsdb create-blocks-from openmetrics`), run by run against the floor
 * (bench/fleet-floor.ts: the same queries, the answers parsed, nothing else), with a line fitted
 * through the sizes; next to the peer mesh's `physbitsctl fleet` at 10 hosts (one physbitsd asking
 * 9 live peers that serve 20-guest status documents). Wall time of each process and its peak
 * memory (`/usr/bin/time`).
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PHYSBITSCTL, startDaemon } from '../test/helpers/daemon';
import { startPrometheus } from '../test/helpers/prometheus';
import type { FleetDocument } from '../agent/judge/fleet';
import { packagedPrograms } from './daemon-proc';
import { floorQueries } from './fleet-floor';
import { compareTable, medianRatio, target, type CompareRow, type Section, type TargetResult } from './report';
import { timed } from './proc';
import { fitLine, fmt, fmtSpread, spread, wallMs } from './stats';

const TIME = '/usr/bin/time';
const FLOOR = join(__dirname, 'fleet-floor.js');
const SECTION = 'fleet';
/** The size issue 27's targets are read at. */
const TARGET_HOSTS = 1000;

/**
 * The series every physbitsd exports for the fleet view, for `hosts` hosts of `guests` guests each, at
 * `times` (Unix s), as OpenMetrics text handed to `write` in pieces of about a megabyte (10,000 hosts
 * × 20 guests at six times is about 500 MB, more than one string may hold).
 */
export function writeFleetOpenMetrics(
  hosts: number,
  guests: number,
  times: number[],
  write: (text: string) => void,
): void {
  let buf: string[] = [];
  let size = 0;
  const line = (l: string) => {
    buf.push(l);
    size += l.length + 1;
    if (size > 1 << 20) {
      write(buf.join('\n') + '\n');
      buf = [];
      size = 0;
    }
  };
  const host = (h: number) => `hv${String(h).padStart(4, '0')}`;
  const target = (h: number) => `job="physbits",instance="10.${(h >> 8) & 255}.${h & 255}.1:9741"`;
  const pool = (h: number) => `pool="p${h % 10}"`;
  const width = (h: number) => 39 + (h % 4) * 3; // 39, 42, 45, 48
  // OpenMetrics wants each series' samples together, in time order.
  const fam = (name: string, series: (emit: (labels: string, value: number) => void) => void) => {
    line(`# TYPE ${name} gauge`);
    series((labels, value) => {
      for (const t of times) line(`${name}{${labels}} ${value} ${t}`);
    });
  };
  const eachHost = (fn: (h: number) => void) => {
    for (let h = 0; h < hosts; h++) fn(h);
  };
  const eachGuest = (fn: (h: number, g: number, vm: string) => void) =>
    eachHost((h) => {
      for (let g = 0; g < guests; g++) fn(h, g, `${target(h)},host="${host(h)}",${pool(h)},vm="vm${g}"`);
    });
  fam('up', (emit) => eachHost((h) => emit(target(h), 1)));
  fam('physbits_host_info', (emit) => eachHost((h) => emit(`${target(h)},host="${host(h)}",${pool(h)}`, 1)));
  fam('physbits_host_phys_bits', (emit) =>
    eachHost((h) => emit(`${target(h)},host="${host(h)}",${pool(h)}`, width(h))),
  );
  fam('physbits_guest_phys_bits', (emit) => eachGuest((_h, g, vm) => emit(`${vm},accelerator="kvm"`, 39 + (g % 10))));
  fam('physbits_guest_highest_address_bytes', (emit) => eachGuest((_h, g, vm) => emit(vm, (g + 1) * 2 ** 34)));
  fam('physbits_vm_up', (emit) => eachGuest((_h, _g, vm) => emit(vm, 1)));
  line('# EOF');
  write(buf.join('\n') + '\n');
}

/** The same, whole, as one string (small fleets: tests). */
export function fleetOpenMetrics(hosts: number, guests: number, times: number[]): string {
  const parts: string[] = [];
  writeFleetOpenMetrics(hosts, guests, times, (t) => parts.push(t));
  return parts.join('');
}

/** A status document of `guests` guests, as a live peer serves it. */
function peerStatus(name: string, physBits: number, guests: number): string {
  const vms = [...Array(guests).keys()].map((g) => ({
    socket: `/run/qemu/vm${g}.qmp`,
    name: `vm${g}`,
    accelerator: 'kvm',
    guest: { physBits: 39 + (g % 10), accelerator: 'kvm', layout: { highestAddress: (g + 1) * 2 ** 34 } },
  }));
  return JSON.stringify({ host: { name, physBits }, vms });
}

function maxRssMiB(stderr: string): number {
  const m = /maxrss=(\d+)/.exec(stderr);
  if (!m) throw new Error(`no maxrss from ${TIME}: ${stderr.slice(-300)}`);
  return Number(m[1]) / 1024;
}

/** Seconds between the backfilled samples, and how long after the backfill they reach. */
const SAMPLE_STEP_S = 120;
const HORIZON_S = 900;

/** One size's Prometheus: the series backfilled from a file, served from their blocks until stop(). */
export async function backfilledPrometheus(
  dir: string,
  hosts: number,
  guests: number,
  log: (l: string) => void,
): Promise<{ url: string; backfillS: number; stop: () => Promise<void> }> {
  // Samples from a minute ago to HORIZON_S ahead: an instant query at any time in between finds
  // one at most SAMPLE_STEP_S old (within Prometheus's 5-minute lookback and fleet.staleSeconds).
  const now = Math.floor(Date.now() / 1000);
  const times: number[] = [];
  for (let t = now - 60; t <= now + HORIZON_S; t += SAMPLE_STEP_S) times.push(t);
  const file = join(dir, `fleet-${hosts}.om`);
  const fd = openSync(file, 'w');
  try {
    writeFleetOpenMetrics(hosts, guests, times, (text) => writeSync(fd, text));
  } finally {
    closeSync(fd);
  }
  const data = join(dir, `data-${hosts}`);
  const t0 = wallMs();
  const created = spawnSync('promtool', ['tsdb', 'create-blocks-from', 'openmetrics', file, data], {
    encoding: 'utf8',
    timeout: 600000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (created.status !== 0) throw new Error(`promtool create-blocks-from: ${created.stderr}`);
  rmSync(file, { force: true });
  const backfillS = (wallMs() - t0) / 1000;
  log(`fleet: ${hosts} hosts x ${guests} guests backfilled in ${fmt(backfillS)} s`);
  const prom = await startPrometheus({ targets: [], storageDir: data, readyTimeoutMs: 300000 });
  return {
    url: prom.url,
    backfillS,
    stop: async () => {
      await prom.stop();
      rmSync(data, { recursive: true, force: true });
    },
  };
}

interface SizeRuns {
  hosts: number;
  backfillS: number;
  cliMs: number[];
  cliMiB: number[];
  floorMs: number[];
  floorMiB: number[];
  /** Bytes of the floor's answers (all queries) and of the CLI's document. */
  answerBytes: number;
  documentBytes: number;
}

/** The CLI's document, checked: every host reachable, every guest listed and counted right. */
function checkDocument(stdout: string, hosts: number, guests: number, stderr: string): void {
  const doc = JSON.parse(stdout) as FleetDocument;
  const reachable = doc.hosts.filter((h) => h.reachable).length;
  if (reachable !== hosts || doc.guests.length !== hosts * guests)
    throw new Error(`fleet --prometheus: ${reachable} reachable hosts, ${doc.guests.length} guests; ${stderr}`);
  // Hosts are 39, 42, 45 or 48 bits wide, guests 39 to 48: a guest of n bits fits the hosts of n bits and wider.
  const atLeast = (bits: number) =>
    Object.entries(doc.widths).reduce((n, [w, count]) => n + (Number(w) >= bits ? count : 0), 0);
  for (const g of doc.guests) {
    const fits = atLeast(g.physBits!);
    if (g.fitCount.fits !== fits || g.fitCount.doesNot !== hosts - fits)
      throw new Error(`fleet --prometheus: ${g.host}/${g.vm} fits ${JSON.stringify(g.fitCount)}, expected ${fits}`);
  }
}

async function sizeRuns(
  dir: string,
  hosts: number,
  opts: { guests: number; runs: number; log: (l: string) => void },
): Promise<SizeRuns> {
  const { physbitsctl } = await packagedPrograms();
  const prom = await backfilledPrometheus(dir, hosts, opts.guests, opts.log);
  try {
    const cli = join(dir, 'cli.json');
    // Bounds raised so that 10,000 hosts × 20 guests (640,000 series, about 100 MB of answers) fit.
    writeFileSync(
      cli,
      JSON.stringify({
        fleet: { timeoutMs: 120000, maxSeries: 10_000_000, maxResponseBytes: 1024 * 1024 * 1024, maxHosts: 1_000_000 },
      }),
    );
    const out: SizeRuns = {
      hosts,
      backfillS: prom.backfillS,
      cliMs: [],
      cliMiB: [],
      floorMs: [],
      floorMiB: [],
      answerBytes: 0,
      documentBytes: 0,
    };
    const runCli = async () => {
      const r = await timed(
        TIME,
        [
          '-f',
          'maxrss=%M',
          process.execPath,
          physbitsctl,
          'fleet',
          '--json',
          '--prometheus',
          prom.url,
          '--config',
          cli,
        ],
        { timeoutMs: 600000 },
      );
      checkDocument(r.stdout, hosts, opts.guests, r.stderr);
      out.documentBytes = Buffer.byteLength(r.stdout);
      out.cliMs.push(r.ms);
      out.cliMiB.push(maxRssMiB(r.stderr));
    };
    const runFloor = async () => {
      const r = await timed(TIME, ['-f', 'maxrss=%M', process.execPath, FLOOR, prom.url], { timeoutMs: 600000 });
      if (r.code !== 0) throw new Error(`fleet floor exited ${r.code}: ${r.stderr.slice(-300)}`);
      const got = JSON.parse(r.stdout.trim().split('\n')[0]) as { series: Record<string, number>; bytes: number };
      if (got.series.guests !== hosts * opts.guests || got.series.hosts !== hosts)
        throw new Error(`fleet floor: ${JSON.stringify(got.series)}`);
      out.answerBytes = got.bytes;
      out.floorMs.push(r.ms);
      out.floorMiB.push(maxRssMiB(r.stderr));
    };
    // One read of everything first, so that neither side pays for Prometheus's first touch of its blocks.
    await runFloor();
    out.floorMs.length = 0;
    out.floorMiB.length = 0;
    for (let i = 0; i < opts.runs; i++) {
      // Alternated: the CLI first in even runs, the floor first in odd ones.
      for (const step of i % 2 ? [runFloor, runCli] : [runCli, runFloor]) await step();
      opts.log(
        `fleet ${hosts} x ${opts.guests} run ${i + 1}: CLI ${fmt(out.cliMs[i])} ms ${fmt(out.cliMiB[i])} MiB, ` +
          `floor ${fmt(out.floorMs[i])} ms ${fmt(out.floorMiB[i])} MiB (load ${loadavg()[0].toFixed(2)})`,
      );
    }
    return out;
  } finally {
    await prom.stop();
  }
}

export async function runFleetPrometheusBench(opts: {
  /** Host counts of the Prometheus runs; the targets are read at TARGET_HOSTS when it is one of them. */
  sizes: number[];
  guests: number;
  meshHosts: number;
  runs: number;
  log: (l: string) => void;
}): Promise<Section> {
  const began = wallMs();
  const load = loadavg();
  const dir = mkdtempSync(join(tmpdir(), 'physbits-bench-fleet-'));
  const cleanups: Array<() => Promise<void> | void> = [() => rmSync(dir, { recursive: true, force: true })];
  try {
    // 1. Prometheus, one backfilled server per size, the CLI and the floor alternated over it.
    const sizes: SizeRuns[] = [];
    for (const hosts of opts.sizes) sizes.push(await sizeRuns(dir, hosts, opts));

    // 2. The peer mesh: one daemon, meshHosts - 1 live peers.
    const token = join(dir, 'token');
    writeFileSync(token, 'bench-fleet-token-0123456789abcdef\n', { mode: 0o600 });
    const servers: Server[] = [];
    const peers = [];
    for (let p = 1; p < opts.meshHosts; p++) {
      const body = peerStatus(`peer${p}`, 39 + (p % 4) * 3, opts.guests);
      const srv = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
      await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
      servers.push(srv);
      const port = (srv.address() as AddressInfo).port;
      peers.push({ name: `peer${p}`, address: `10.0.0.${p}`, url: `http://127.0.0.1:${port}`, tokenFile: token });
    }
    cleanups.push(() => servers.forEach((s) => s.close()));
    const daemonDir = join(dir, 'daemon');
    const daemon = await startDaemon({ dir: daemonDir, config: { host: { name: 'hv0', physBits: 46 }, peers } });
    cleanups.push(() => daemon.kill());
    const meshMs: number[] = [];
    const meshMiB: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      const r = await timed(
        TIME,
        ['-f', 'maxrss=%M', process.execPath, PHYSBITSCTL, 'fleet', '--json', '--api', daemon.apiSocket],
        { timeoutMs: 300000 },
      );
      const doc = JSON.parse(r.stdout) as FleetDocument;
      if (doc.hosts.filter((h) => h.reachable).length !== opts.meshHosts)
        throw new Error(`fleet --api: ${JSON.stringify(doc.hosts.filter((h) => !h.reachable))}`);
      meshMs.push(r.ms);
      meshMiB.push(maxRssMiB(r.stderr));
      opts.log(`fleet (peer mesh) run ${i + 1}: ${fmt(r.ms)} ms, ${fmt(meshMiB[i])} MiB`);
    }
    const daemonHwm = daemon.memory().hwmKb / 1024;

    const rows: CompareRow[] = [];
    for (const s of sizes) {
      const label = `${s.hosts} × ${opts.guests}`;
      rows.push(
        {
          figure: `${label}: \`fleet --json --prometheus\` wall time`,
          unit: 'ms',
          runs: s.cliMs,
          baseline: 'floor: the same queries, answers parsed',
          baselineRuns: s.floorMs,
          target: s.hosts === TARGET_HOSTS ? '≤ 2×' : '',
          digits: 0,
        },
        {
          figure: `${label}: CLI peak RSS`,
          unit: 'MiB',
          runs: s.cliMiB,
          baseline: 'floor peak RSS',
          baselineRuns: s.floorMiB,
          target: s.hosts === TARGET_HOSTS ? '≤ 1.5×' : '',
          digits: 0,
        },
      );
    }
    const targets: TargetResult[] = [];
    const at = sizes.find((s) => s.hosts === TARGET_HOSTS);
    if (at) {
      const t = medianRatio({ runs: at.cliMs, baselineRuns: at.floorMs });
      const m = medianRatio({ runs: at.cliMiB, baselineRuns: at.floorMiB });
      targets.push(
        target(
          SECTION,
          `fleet --prometheus, ${TARGET_HOSTS} hosts × ${opts.guests}: wall time vs the floor`,
          '≤ 2×',
          t,
          '×',
          t <= 2,
        ),
        target(
          SECTION,
          `fleet --prometheus, ${TARGET_HOSTS} hosts × ${opts.guests}: peak RSS vs the floor`,
          '≤ 1.5×',
          m,
          '×',
          m <= 1.5,
        ),
      );
    }
    const med = (xs: number[]) => spread(xs).median;
    const fits = [
      '| figure | physbits: fixed + per host | floor: fixed + per host | largest residual (physbits / floor) |',
      '|---|---|---|---|',
    ];
    if (sizes.length >= 2)
      for (const [name, unit, cliOf, floorOf] of [
        ['wall time', 'ms', (s: SizeRuns) => s.cliMs, (s: SizeRuns) => s.floorMs],
        ['peak RSS', 'MiB', (s: SizeRuns) => s.cliMiB, (s: SizeRuns) => s.floorMiB],
      ] as const) {
        const c = fitLine(sizes.map((s) => [s.hosts, med(cliOf(s))]));
        const f = fitLine(sizes.map((s) => [s.hosts, med(floorOf(s))]));
        const per = (x: number) => (unit === 'MiB' ? `${fmt(x * 1024, 1)} KiB` : `${fmt(x * 1000)} µs`);
        fits.push(
          `| ${name} | ${fmt(c.a)} ${unit} + ${per(c.b)} per host | ${fmt(f.a)} ${unit} + ${per(f.b)} per host | ${fmt(c.maxResidual)} / ${fmt(f.maxResidual)} ${unit} |`,
        );
      }
    const mesh = sizes.find((s) => s.hosts === TARGET_HOSTS) ?? sizes[sizes.length - 1];
    const ratio = (a: number[], b: number[]) => spread(a).median / spread(b).median;
    const markdown = [
      `Prometheus 2.42 serving the series of ${opts.sizes.join(', ')} hosts × ${opts.guests} guests (an OpenMetrics file per size, ` +
        `backfilled with \`promtool tsdb create-blocks-from openmetrics\`: ${sizes.map((s) => `${s.hosts}: ${fmt(s.backfillS)} s`).join(', ')}), ` +
        `one server per size for all its runs. Per run, alternated: the packaged \`physbitsctl fleet --json --prometheus URL\` ` +
        `(fleet.maxSeries, fleet.maxResponseBytes and fleet.maxHosts raised so that the largest size fits), and the floor ` +
        `(\`bench/fleet-floor.ts\`, its own process: the same ${Object.keys(floorQueries(3600, 'physbits')).length} instant queries at once, ` +
        `each answer read whole and parsed with JSON.parse, nothing else; test/bench/fleet-floor.test.ts holds the queries equal). ` +
        `Wall time from spawn() to exit, peak RSS from \`/usr/bin/time -f %M\`; ${opts.runs} runs per size after one unmeasured read. ` +
        `Every document is checked: every host reachable, every guest listed, every guest's \`fitCount\` right. ` +
        `Load average at the start: ${load.map((l) => l.toFixed(2)).join(' / ')}.`,
      '',
      compareTable(rows),
      '',
      'Fitted lines (least squares over the per-size medians; x = hosts, 20 guests each):',
      '',
      fits.join('\n'),
      '',
      `- Answers (all queries, as the floor read them) and the CLI's document: ${sizes
        .map((s) => `${s.hosts} hosts: ${fmt(s.answerBytes / 1048576)} MiB and ${fmt(s.documentBytes / 1048576)} MiB`)
        .join('; ')}.`,
      '',
      `The peer mesh, ${opts.runs} runs (\`physbitsctl fleet --json --api\`, one daemon asking ${opts.meshHosts - 1} live peers, ${opts.meshHosts} × ${opts.guests}, this host: 0):`,
      '',
      '| source | hosts × guests | wall ms (min / median / max) | CLI peak RSS MiB (min / median / max) |',
      '|---|---|---|---|',
      `| \`--prometheus\` | ${mesh.hosts} × ${opts.guests} | ${fmtSpread(spread(mesh.cliMs))} | ${fmtSpread(spread(mesh.cliMiB))} |`,
      `| peer mesh (\`--api\`) | ${opts.meshHosts} × ${opts.guests} | ${fmtSpread(spread(meshMs))} | ${fmtSpread(spread(meshMiB))} |`,
      '',
      `Ratios (median): time ${fmt(ratio(mesh.cliMs, meshMs), 1)}× for ${fmt(mesh.hosts / opts.meshHosts, 0)}× the hosts; ` +
        `CLI memory ${fmt(ratio(mesh.cliMiB, meshMiB), 1)}×. The mesh's daemon peaked at ${fmt(daemonHwm)} MiB.`,
    ].join('\n');
    return {
      title: `Fleet view: Prometheus at ${opts.sizes.join(', ')} hosts vs the peer mesh at ${opts.meshHosts}`,
      markdown,
      targets,
      seconds: (wallMs() - began) / 1000,
    };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}
