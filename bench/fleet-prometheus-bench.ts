/**
 * The fleet view at scale: `physbitsctl fleet --prometheus` against a real Prometheus holding the
 * series of 1,000 hosts × 20 guests (an OpenMetrics file backfilled with `promtool tsdb
 * create-blocks-from openmetrics`), next to the peer mesh's `physbitsctl fleet` at 10 hosts (one
 * physbitsd asking 9 live peers that serve 20-guest status documents), both measured in this run:
 * wall time of the CLI and its peak memory (`/usr/bin/time`).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PHYSBITSCTL, startDaemon } from '../test/helpers/daemon';
import { startPrometheus, type PrometheusServer } from '../test/helpers/prometheus';
import type { FleetDocument } from '../agent/judge/fleet';
import type { Section } from './report';
import { timed } from './proc';
import { fmt, fmtSpread, spread, wallMs } from './stats';

const TIME = '/usr/bin/time';

/** The series every physbitsd exports for the fleet view, for `hosts` hosts of `guests` guests each, at `times` (Unix s). */
export function fleetOpenMetrics(hosts: number, guests: number, times: number[]): string {
  const out: string[] = [];
  const fam = (name: string, lines: (t: number) => string[]) => {
    out.push(`# TYPE ${name} gauge`);
    // OpenMetrics wants each series' samples together, in time order.
    const perTime = times.map((t) => lines(t));
    for (let i = 0; i < perTime[0].length; i++) for (const l of perTime) out.push(l[i]);
  };
  const host = (h: number) => `hv${String(h).padStart(4, '0')}`;
  const target = (h: number) => `job="physbits",instance="10.${(h >> 8) & 255}.${h & 255}.1:9741"`;
  const pool = (h: number) => `pool="p${h % 10}"`;
  const width = (h: number) => 39 + (h % 4) * 3; // 39, 42, 45, 48
  const hostsRange = [...Array(hosts).keys()];
  fam('up', (t) => hostsRange.map((h) => `up{${target(h)}} 1 ${t}`));
  fam('physbits_host_info', (t) =>
    hostsRange.map((h) => `physbits_host_info{${target(h)},host="${host(h)}",${pool(h)}} 1 ${t}`),
  );
  fam('physbits_host_phys_bits', (t) =>
    hostsRange.map((h) => `physbits_host_phys_bits{${target(h)},host="${host(h)}",${pool(h)}} ${width(h)} ${t}`),
  );
  const each = (fn: (h: number, g: number, t: number) => string) => (t: number) =>
    hostsRange.flatMap((h) => [...Array(guests).keys()].map((g) => fn(h, g, t)));
  const vm = (h: number, g: number) => `${target(h)},host="${host(h)}",${pool(h)},vm="vm${g}"`;
  fam(
    'physbits_guest_phys_bits',
    each((h, g, t) => `physbits_guest_phys_bits{${vm(h, g)},accelerator="kvm"} ${39 + (g % 10)} ${t}`),
  );
  fam(
    'physbits_guest_highest_address_bytes',
    each((h, g, t) => `physbits_guest_highest_address_bytes{${vm(h, g)}} ${(g + 1) * 2 ** 34} ${t}`),
  );
  fam(
    'physbits_vm_up',
    each((h, g, t) => `physbits_vm_up{${vm(h, g)}} 1 ${t}`),
  );
  out.push('# EOF');
  return out.join('\n') + '\n';
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

/**
 * A real Prometheus serving the series of `hosts` hosts × `guests` guests (fleetOpenMetrics), sampled
 * every 15 s over the last minute and backfilled into `dir`/data with `promtool tsdb
 * create-blocks-from openmetrics`; stop() it when done.
 */
export async function backfilledPrometheus(opts: {
  dir: string;
  hosts: number;
  guests: number;
  log: (l: string) => void;
}): Promise<PrometheusServer> {
  const now = Math.floor(Date.now() / 1000);
  const times = [now - 60, now - 45, now - 30, now - 15, now];
  const file = join(opts.dir, 'fleet.om');
  writeFileSync(file, fleetOpenMetrics(opts.hosts, opts.guests, times));
  const data = join(opts.dir, 'data');
  const t0 = wallMs();
  const created = spawnSync('promtool', ['tsdb', 'create-blocks-from', 'openmetrics', file, data], {
    encoding: 'utf8',
    timeout: 600000,
  });
  if (created.status !== 0) throw new Error(`promtool create-blocks-from: ${created.stderr}`);
  opts.log(`fleet: ${opts.hosts} hosts x ${opts.guests} guests backfilled in ${fmt((wallMs() - t0) / 1000)} s`);
  return startPrometheus({ targets: [], storageDir: data, readyTimeoutMs: 300000 });
}

export async function runFleetPrometheusBench(opts: {
  hosts: number;
  guests: number;
  meshHosts: number;
  runs: number;
  log: (l: string) => void;
}): Promise<Section> {
  const began = wallMs();
  const dir = mkdtempSync(join(tmpdir(), 'physbits-bench-fleet-'));
  const cleanups: Array<() => Promise<void> | void> = [() => rmSync(dir, { recursive: true, force: true })];
  try {
    // 1. The series, backfilled into blocks.
    const prom = await backfilledPrometheus({ dir, hosts: opts.hosts, guests: opts.guests, log: opts.log });
    cleanups.push(() => prom.stop());
    const cli = join(dir, 'cli.json');
    writeFileSync(cli, JSON.stringify({ fleet: { timeoutMs: 60000 } }));

    const promMs: number[] = [];
    const promMiB: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      const r = await timed(
        TIME,
        [
          '-f',
          'maxrss=%M',
          process.execPath,
          PHYSBITSCTL,
          'fleet',
          '--json',
          '--prometheus',
          prom.url,
          '--config',
          cli,
        ],
        { timeoutMs: 300000 },
      );
      const doc = JSON.parse(r.stdout) as FleetDocument;
      const reachable = doc.hosts.filter((h) => h.reachable).length;
      if (reachable !== opts.hosts || doc.guests.length !== opts.hosts * opts.guests)
        throw new Error(`fleet --prometheus: ${reachable} reachable hosts, ${doc.guests.length} guests; ${r.stderr}`);
      // Hosts are 39, 42, 45 or 48 bits wide, guests 39 to 48: a guest of n bits fits the hosts of n bits and wider.
      for (const g of doc.guests) {
        const fits = doc.hosts.filter((h) => h.physBits! >= g.physBits!).length;
        if (g.fitCount.fits !== fits || g.fitCount.doesNot !== opts.hosts - fits)
          throw new Error(`fleet --prometheus: ${g.host}/${g.vm} fits ${JSON.stringify(g.fitCount)}, expected ${fits}`);
      }

      promMs.push(r.ms);
      promMiB.push(maxRssMiB(r.stderr));
      opts.log(`fleet --prometheus run ${i + 1}: ${fmt(r.ms)} ms, ${fmt(promMiB[i])} MiB`);
    }

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

    const ratio = (a: number[], b: number[]) => spread(a).median / spread(b).median;
    const markdown = [
      `\`physbitsctl fleet --json\`, ${opts.runs} runs each, wall time of the CLI process and its peak RSS (\`/usr/bin/time -f %M\`).`,
      '',
      '| source | hosts × guests | wall ms (min / median / max) | CLI peak RSS MiB (min / median / max) |',
      '|---|---|---|---|',
      `| \`--prometheus\` (Prometheus 2.42, 7 instant queries) | ${opts.hosts} × ${opts.guests} | ${fmtSpread(spread(promMs))} | ${fmtSpread(spread(promMiB))} |`,
      `| peer mesh (\`--api\`, one daemon asking ${opts.meshHosts - 1} live peers) | ${opts.meshHosts} × ${opts.guests} (this host: 0) | ${fmtSpread(spread(meshMs))} | ${fmtSpread(spread(meshMiB))} |`,
      '',
      `Ratios (median): time ${fmt(ratio(promMs, meshMs), 1)}× for ${fmt(opts.hosts / opts.meshHosts, 0)}× the hosts; ` +
        `CLI memory ${fmt(ratio(promMiB, meshMiB), 1)}×. The mesh's daemon peaked at ${fmt(daemonHwm)} MiB.`,
    ].join('\n');
    return {
      title: 'Fleet view: Prometheus at 1,000 hosts vs the peer mesh at 10',
      markdown,
      targets: [],
      seconds: (wallMs() - began) / 1000,
    };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}
