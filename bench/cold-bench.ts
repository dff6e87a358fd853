/**
 * A guard decision with cold caches (issue 27, target 2). Proxmox gives `migrate` a 5 s QMP timeout,
 * so a decision that needs a peer or Prometheus lookup must fit far inside that.
 *
 * A. The real daemon (the packaged bundle with the unit's node flags, started fresh for every run)
 *    holds one scripted guest (bench/fake-fleet.ts, phys-bits 40) and knows no peer but
 *    `fleet.prometheus`: a real Prometheus holding 1,000 hosts × 20 guests, backfilled as the fleet
 *    section does it. The first thing asked after the start is a `migrate` through the guarded
 *    socket to a 39-bit host known only from Prometheus (by its name in one daemon, by its target's
 *    address in another): from the client's write to the refusal. The baseline of the same run is
 *    bench/prom-query-floor.ts, its own process: the queries physbits sends for that decision, at once,
 *    over fresh connections, read and parsed, nothing else. A second baseline row gives the four
 *    fleet-wide host queries (every host's info, up, width and its freshness), what physbits asked
 *    before it asked for one host.
 * B. Every source down: two live peers, one on a closed loopback port and one on a blackholed port
 *    (a listening socket that accepts and never answers), and `fleet.prometheus` on a closed or a
 *    blackholed port likewise. A fresh daemon's first `migrate` to each kind of peer is refused with
 *    REFUSED_MIGRATION_UNKNOWN_PEER; the time to the refusal is compared with `fleet.timeoutMs`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hostQueries, hostQueriesAt } from '../agent/peers/prometheus-fleet';
import { freePort } from '../test/helpers/net';
import { benchConfig, startDaemon, waitForStatus, writeConfig, type DaemonProc } from './daemon-proc';
import { runtimeDir, stateDir } from './dirs';
import { backfilledPrometheus } from './fleet-prometheus-bench';
import { firstLine, stopChild, timed, track } from './proc';
import { WireClient } from './qmp-wire';
import { compareTable, medianRatio, target, type CompareRow, type Section } from './report';
import { fmt, fmtSpread, nowMs, spread, wallMs } from './stats';

export interface ColdOptions {
  runs: number;
  /** Runs of each kind of "down" (closed, blackholed). */
  downRuns: number;
  hosts: number;
  guests: number;
  /** fleet.timeoutMs of the "down" daemons. */
  timeoutMs: number;
  log: (line: string) => void;
}

const GUEST_BITS = 40;
/** fleetOpenMetrics: host n is 39 + (n % 4) * 3 bits wide, its target 10.(n>>8).(n&255).1:9741. */
const NARROW_HOST = 40;
const hostName = (n: number) => `hv${String(n).padStart(4, '0')}`;
const hostAddress = (n: number) => `10.${(n >> 8) & 255}.${n & 255}.1`;

/** One paused scripted guest of GUEST_BITS, in its own process. */
async function startFakeGuest(dir: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [join(__dirname, 'fake-fleet.js'), '--dir', dir, '--count', '1', '--phys-bits', String(GUEST_BITS)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  track(child.pid, child);
  await firstLine(child, 15000);
  return child;
}

/** A fresh daemon over the guest; resolves once the guest has its verdict and its guarded socket. */
async function freshDaemon(
  dir: string,
  state: string,
  vms: string,
  extra: Record<string, Record<string, unknown> | unknown[]>,
): Promise<{ daemon: DaemonProc; guarded: string }> {
  rmSync(join(dir, 'guard'), { recursive: true, force: true });
  rmSync(join(dir, 'api.sock'), { force: true });
  const configPath = join(dir, 'config.json');
  writeConfig(
    configPath,
    benchConfig(dir, {
      host: { name: 'hvself', physBits: 48 },
      // The scripted guest runs under TCG: the guard judges it as it would a KVM guest.
      policy: { accelerators: ['kvm', 'tcg'] },
      discovery: { sockets: [join(vms, '*.qmp')] },
      alerts: { spoolDir: join(state, 'spool') },
      ...extra,
    }),
  );
  const daemon = await startDaemon(configPath, join(dir, 'api.sock'), join(state, 'daemon.log'));
  const guarded = join(dir, 'guard', 'vm0.qmp');
  await waitForStatus(daemon, (doc) => doc.vms.length === 1 && !!doc.vms[0].verdict && existsSync(guarded), 30000, 20);
  return { daemon, guarded };
}

/** The first `migrate` through the guarded socket: ms from the write to the reply, and the reply's desc. */
async function firstMigrate(guarded: string, uri: string): Promise<{ ms: number; desc: string }> {
  const c = await WireClient.connect(guarded);
  try {
    const t0 = nowMs();
    const r = await c.command('migrate', { uri });
    const ms = nowMs() - t0;
    return { ms, desc: r.error?.desc ?? `allowed: ${JSON.stringify(r.return)}` };
  } finally {
    await c.close();
  }
}

function expectCode(desc: string, code: string, what: string): void {
  if (!desc.endsWith(`[${code}]`)) throw new Error(`${what}: expected ${code}, got: ${desc}`);
}

/** The floor's first round of `queries` (ms), in its own process. */
async function floorRound(url: string, queries: string[]): Promise<{ ms: number; series: number; bytes: number }> {
  const r = await timed(process.execPath, [
    join(__dirname, 'prom-query-floor.js'),
    '--url',
    url,
    ...queries.flatMap((q) => ['--query', q]),
  ]);
  if (r.code !== 0) throw new Error(`prom-query-floor: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { ms: number[]; series: number; bytes: number };
  return { ms: out.ms[0], series: out.series, bytes: out.bytes };
}

/** A TCP port that accepts connections and never answers; close() lets them go. */
async function blackhole(): Promise<{ port: number; close: () => Promise<void> }> {
  const held = new Set<net.Socket>();
  const server = net.createServer((s) => {
    held.add(s);
    s.on('error', () => undefined);
    s.on('close', () => held.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of held) s.destroy();
        server.close(() => r());
      }),
  };
}

export async function runColdBench(opts: ColdOptions): Promise<Section> {
  const began = wallMs();
  const dir = runtimeDir('physbits-bench-cold-');
  const state = stateDir('physbits-bench-cold-');
  const promDir = mkdtempSync(join(tmpdir(), 'physbits-bench-cold-prom-'));
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  const cleanups: Array<() => Promise<void> | void> = [
    () => rmSync(promDir, { recursive: true, force: true }),
    () => rmSync(dir, { recursive: true, force: true }),
    () => rmSync(state, { recursive: true, force: true }),
  ];
  try {
    const guest = await startFakeGuest(vms);
    cleanups.push(() => stopChild(guest, 5000));
    const prom = await backfilledPrometheus(promDir, opts.hosts, opts.guests, opts.log);
    cleanups.push(() => prom.stop());
    const fleet = { lookbackSeconds: 3600, jobs: ['physbits'] };
    const fleetWide = Object.values(hostQueries(fleet));

    // A. Cold lookups in Prometheus, by name and by address.
    const byName: number[] = [];
    const byAddress: number[] = [];
    const floorOne: number[] = [];
    const floorAddress: number[] = [];
    const floorFleet: number[] = [];
    let floorInfo = '';
    for (let r = 0; r < opts.runs; r++) {
      for (const [how, address, out, floorOut] of [
        ['name', hostName(NARROW_HOST), byName, floorOne],
        ['address', hostAddress(NARROW_HOST), byAddress, floorAddress],
      ] as const) {
        const floor = await floorRound(prom.url, Object.values(hostQueriesAt(address, fleet) ?? hostQueries(fleet)));
        floorOut.push(floor.ms);
        const { daemon, guarded } = await freshDaemon(dir, state, vms, { fleet: { prometheus: prom.url } });
        try {
          const m = await firstMigrate(guarded, `tcp:${address}:4444`);
          expectCode(m.desc, 'REFUSED_MIGRATION_PEER_NARROWER', `migrate to ${address}`);
          out.push(m.ms);
          opts.log(
            `cold run ${r + 1}, by ${how}: decision ${fmt(m.ms)} ms, floor ${fmt(floor.ms)} ms (${floor.series} series, ${fmt(floor.bytes / 1024)} KiB)`,
          );
        } finally {
          await daemon.stop();
        }
      }
      const wide = await floorRound(prom.url, fleetWide);
      floorFleet.push(wide.ms);
      floorInfo = `${wide.series} series, ${fmt(wide.bytes / 1024)} KiB`;
      opts.log(`cold run ${r + 1}: fleet-wide host queries ${fmt(wide.ms)} ms (${floorInfo})`);
    }

    // B. Every source down.
    const token = join(state, 'token');
    writeFileSync(token, 'bench-cold-token-0123456789abcdef\n', { mode: 0o600 });
    const holes = [await blackhole(), await blackhole()];
    cleanups.push(() => Promise.all(holes.map((h) => h.close())).then(() => undefined));
    const closed = [await freePort(), await freePort()];
    const down: Record<'closed' | 'blackholed', number[]> = { closed: [], blackholed: [] };
    for (let r = 0; r < opts.downRuns; r++) {
      for (const kind of ['closed', 'blackholed'] as const) {
        const ports = kind === 'closed' ? closed : holes.map((h) => h.port);
        const { daemon, guarded } = await freshDaemon(dir, state, vms, {
          peers: [{ name: 'peer-down', address: 'hvdown', url: `http://127.0.0.1:${ports[0]}`, tokenFile: token }],
          fleet: { prometheus: `http://127.0.0.1:${ports[1]}`, timeoutMs: opts.timeoutMs },
          // The daemon asks its live peers once before it watches a VM; without a failure memory the
          // migrate's ask of the peer is its own, cold, not that one's remembered failure.
          guard: { peerFailureCacheSeconds: 0 },
        });
        try {
          const m = await firstMigrate(guarded, 'tcp:hvdown:4444');
          expectCode(m.desc, 'REFUSED_MIGRATION_UNKNOWN_PEER', `migrate to a ${kind} peer`);
          down[kind].push(m.ms);
          opts.log(`cold, every source ${kind}, run ${r + 1}: refused in ${fmt(m.ms)} ms`);
        } finally {
          await daemon.stop();
        }
      }
    }

    const rows: CompareRow[] = [
      {
        figure: `cold \`migrate\` → refusal, host by name (1 of ${opts.hosts} in Prometheus)`,
        unit: 'ms',
        runs: byName,
        baseline: 'the same lookup queries, floor client',
        baselineRuns: floorOne,
        target: '≤ 1.5×',
      },
      {
        figure: 'cold `migrate` → refusal, host by its target address',
        unit: 'ms',
        runs: byAddress,
        baseline: 'the same lookup queries, floor client',
        baselineRuns: floorAddress,
        target: '≤ 1.5×',
      },
      {
        figure: 'cold `migrate` → refusal, host by name',
        unit: 'ms',
        runs: byName,
        baseline: `the 4 fleet-wide host queries (${floorInfo}), floor client`,
        baselineRuns: floorFleet,
      },
    ];
    const bound = opts.timeoutMs + 100;
    const downLine = (kind: 'closed' | 'blackholed') =>
      `| ${kind} | ${fmtSpread(spread(down[kind]))} ms | ${bound} ms | ${spread(down[kind]).max <= bound ? 'yes' : '**no**'} |`;
    const markdown = [
      `A: the daemon's first \`migrate\` after its start (each run a fresh daemon, the guest's facts read, nothing else asked), ` +
        `to a 39-bit host known only from \`fleet.prometheus\` (Prometheus 2.42 holding ${opts.hosts} hosts × ${opts.guests} guests); ` +
        `the guest has phys-bits=${GUEST_BITS}, so the answer is REFUSED_MIGRATION_PEER_NARROWER. From the client's write to the reply, ` +
        `against bench/prom-query-floor.ts's first round in its own process (node:http, the queries at once over fresh connections, read and parsed). ` +
        `${opts.runs} runs, ratios run by run.`,
      '',
      compareTable(rows),
      '',
      `B: every source down (a live peer and \`fleet.prometheus\` on a closed loopback port, or on a port that accepts and never answers), ` +
        `\`fleet.timeoutMs\` ${opts.timeoutMs}, \`guard.peerFailureCacheSeconds\` 0 (the peer's failure at the daemon's start is not reused); a fresh daemon's first \`migrate\` to the peer, refused with REFUSED_MIGRATION_UNKNOWN_PEER. ${opts.downRuns} runs each.`,
      '',
      '| sources | refusal after (min / median / max) | bound (fleet.timeoutMs + 100 ms) | within |',
      '|---|---|---|---|',
      downLine('closed'),
      downLine('blackholed'),
    ].join('\n');
    const ratioName = medianRatio(rows[0]);
    const ratioAddress = medianRatio(rows[1]);
    const worstDown = Math.max(spread(down.closed).max, spread(down.blackholed).max);
    return {
      title: 'Guard decision with cold caches',
      markdown,
      targets: [
        target(
          'cold',
          `first \`migrate\` to a host known only from Prometheus (${opts.hosts} hosts), by name, vs the floor's lookup`,
          '≤ 1.5×',
          ratioName,
          '×',
          ratioName <= 1.5,
        ),
        target('cold', 'the same, host by its target address', '≤ 1.5×', ratioAddress, '×', ratioAddress <= 1.5),
        target(
          'cold',
          `every source down (closed and blackholed): refusal, slowest run`,
          `≤ fleet.timeoutMs + 100 ms (${bound} ms)`,
          worstDown,
          'ms',
          worstDown <= bound,
        ),
      ],
      seconds: (wallMs() - began) / 1000,
    };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}
