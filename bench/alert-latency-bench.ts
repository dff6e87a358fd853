/**
 * Event → alert: from a guest event that changes what the daemon alerts on, to the Alertmanager
 * POST leaving the daemon, received by a local HTTP receiver that stamps each request.
 *
 * The event: a migration the guard did not see. The guest has three QMP monitors: the daemon holds
 * the first (the watched socket); the bench starts a migration on the second (so not through the
 * guarded socket) to a UNIX socket that reads and discards, at a trickle of max-bandwidth, which keeps it in
 * "active" until cancelled; the floor relay (bench/event-relay-floor.ts, its own process) holds the third. QEMU
 * sends MIGRATION {"status": "setup"} to all three; the daemon turns it into a firing
 * MIGRATION_UNVERIFIED alert (agent/daemon/daemon-alerts.ts) and POSTs it to /am/api/v2/alerts; the relay
 * POSTs the event to /relay. After both arrived the bench cancels the migration and waits for the
 * resolved alert, so every repetition starts from the same state.
 *
 * Interval: from QEMU's own timestamp on the event (taken as QEMU emits it) to the moment the
 * receiver holds the whole request body. Both are CLOCK_REALTIME on this machine.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { join } from 'node:path';
import { startGuest, type Guest } from '../test/helpers/qemu';
import { runtimeDir, stateDir } from './dirs';
import { benchConfig, startDaemon, waitForStatus, writeConfig, type DaemonProc } from './daemon-proc';
import { firstLine, stopChild, track } from './proc';
import { eventWallMs, WireClient, type WireEvent } from './qmp-wire';
import { compareTable, medianRatio, target, type CompareRow, type Section } from './report';
import { fmt, percentile, sleep, spread, wallMs } from './stats';

export interface AlertOptions {
  repetitions: number;
  log: (line: string) => void;
}

interface Received {
  path: string;
  at: number;
  body: string;
}

/** A loopback HTTP receiver that stamps every request when its body is complete. */
class Receiver {
  readonly requests: Received[] = [];
  private waiters: Array<() => void> = [];
  private server: http.Server;
  port = 0;

  constructor() {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const at = wallMs();
        this.requests.push({ path: req.url ?? '', at, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(200).end();
        for (const w of this.waiters.splice(0)) w();
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** The first request from index `from` on that satisfies `match`. */
  async waitFor(from: number, match: (r: Received) => boolean, timeoutMs: number): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.requests.slice(from).find(match);
      if (hit) return hit;
      if (Date.now() > deadline)
        throw new Error(`no matching POST within ${timeoutMs} ms (${this.requests.length - from} others)`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** Whether an Alertmanager POST carries the MIGRATION_UNVERIFIED alert, firing or resolved as asked. */
export function carriesAlert(body: string, firing: boolean, at: number): boolean {
  let alerts: Array<{ labels?: Record<string, string>; endsAt?: string }>;
  try {
    alerts = JSON.parse(body);
  } catch {
    return false;
  }
  if (!Array.isArray(alerts)) return false;
  return alerts.some(
    (a) => a.labels?.reason === 'MIGRATION_UNVERIFIED' && (a.endsAt ? Date.parse(a.endsAt) > at : true) === firing,
  );
}

/** Waits for the next event that satisfies `match` on a client. */
function nextEvent(c: WireClient, match: (ev: WireEvent) => boolean, timeoutMs: number): Promise<WireEvent> {
  return new Promise((resolve, reject) => {
    const prev = c.onEvent;
    const t = setTimeout(() => {
      c.onEvent = prev;
      reject(new Error(`no matching event within ${timeoutMs} ms`));
    }, timeoutMs);
    c.onEvent = (ev) => {
      if (!match(ev)) return;
      clearTimeout(t);
      c.onEvent = prev;
      resolve(ev);
    };
  });
}

/** migrate-set-parameters max-bandwidth during the benchmark (bytes per second). */
const MIGRATION_BYTES_PER_SECOND = 4096;

const migration = (status: string) => (ev: WireEvent) => ev.event === 'MIGRATION' && ev.data?.status === status;

interface Rep {
  physbits: number;
  floor: number;
}

export async function runAlertBench(opts: AlertOptions): Promise<Section> {
  const began = wallMs();
  const dir = runtimeDir('physbits-bench-alert-');
  const state = stateDir('physbits-bench-alert-');
  const watched = join(dir, 'vms');
  mkdirSync(watched);
  const ctlSocket = join(dir, 'ctl.qmp');
  const relaySocket = join(dir, 'relay.qmp');
  const sinkSocket = join(dir, 'migration.sock');
  const receiver = new Receiver();
  const held = new Set<net.Socket>();
  const sink = net.createServer((s) => {
    s.resume();
    s.on('error', () => undefined);
    held.add(s);
    s.on('close', () => held.delete(s));
  });
  let guest: Guest | null = null;
  let daemon: DaemonProc | null = null;
  let relay: ReturnType<typeof spawn> | null = null;
  let ctl: WireClient | null = null;
  const reps: Rep[] = [];
  const warmup = 2;
  try {
    await receiver.listen();
    await new Promise<void>((r) => sink.listen(sinkSocket, r));
    guest = await startGuest({
      dir: watched,
      socketName: 'vm.qmp',
      memory: '16M',
      cpu: 'phys-bits=40',
      extraArgs: ['-qmp', `unix:${ctlSocket},server=on,wait=off`, '-qmp', `unix:${relaySocket},server=on,wait=off`],
    });
    track(guest.pid, guest.process);
    const configPath = join(dir, 'config.json');
    writeConfig(
      configPath,
      benchConfig(dir, {
        host: { physBits: 40 },
        discovery: { sockets: [join(watched, '*.qmp')] },
        alerts: { alertmanagers: [`http://127.0.0.1:${receiver.port}/am`], spoolDir: join(state, 'spool') },
      }),
    );
    daemon = await startDaemon(configPath, join(dir, 'api.sock'), join(state, 'daemon.log'));
    await waitForStatus(daemon, (doc) => doc.vms.length === 1 && !!doc.vms[0].verdict, 30000, 50);
    relay = spawn(
      process.execPath,
      [
        join(__dirname, 'event-relay-floor.js'),
        '--socket',
        relaySocket,
        '--url',
        `http://127.0.0.1:${receiver.port}/relay`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    track(relay.pid, relay);
    await firstLine(relay, 15000);
    ctl = await WireClient.connect(ctlSocket);
    const caps = await ctl.command('migrate-set-capabilities', {
      capabilities: [{ capability: 'events', state: true }],
    });
    if (caps.error) throw new Error(`migrate-set-capabilities: ${caps.error.desc}`);
    // A trickle keeps the migration in its first pass for minutes; it never reaches the final
    // stage, where QEMU writes device state with its main lock held.
    const params = await ctl.command('migrate-set-parameters', { 'max-bandwidth': MIGRATION_BYTES_PER_SECOND });
    if (params.error) throw new Error(`migrate-set-parameters: ${params.error.desc}`);

    for (let i = 0; i < warmup + opts.repetitions; i++) {
      const from = receiver.requests.length;
      const setup = nextEvent(ctl, migration('setup'), 10000);
      setup.catch(() => undefined);
      const sent = await ctl.command('migrate', { uri: `unix:${sinkSocket}` });
      if (sent.error) throw new Error(`migrate: ${sent.error.desc}`);
      const ev = await setup;
      const t0 = eventWallMs(ev);
      const am = await receiver.waitFor(
        from,
        (r) => r.path.startsWith('/am/') && carriesAlert(r.body, true, r.at),
        10000,
      );
      const fl = await receiver.waitFor(from, (r) => r.path === '/relay', 10000);
      const cancelled = nextEvent(ctl, migration('cancelled'), 10000);
      cancelled.catch(() => undefined);
      const c = await ctl.command('migrate_cancel');
      if (c.error) throw new Error(`migrate_cancel: ${c.error.desc}`);
      await cancelled;
      await receiver.waitFor(from, (r) => r.path.startsWith('/am/') && carriesAlert(r.body, false, r.at), 10000);
      for (const s of held) s.destroy();
      if (i >= warmup) reps.push({ physbits: am.at - t0, floor: fl.at - t0 });
      await sleep(50);
    }
  } finally {
    await ctl?.close();
    if (relay) await stopChild(relay);
    await daemon?.stop();
    await guest?.kill();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => sink.close(() => r()));
    await receiver.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(state, { recursive: true, force: true });
  }

  const pb = reps.map((r) => r.physbits);
  const fl = reps.map((r) => r.floor);
  opts.log(
    `alert: p50 ${fmt(percentile(pb, 50))} ms, p99 ${fmt(percentile(pb, 99))} ms (floor p50 ${fmt(percentile(fl, 50))} ms) over ${reps.length}`,
  );
  const rows: CompareRow[] = [
    {
      figure: 'event → Alertmanager POST received, each repetition',
      unit: 'ms',
      runs: pb,
      baseline: 'floor relay: event → POST received',
      baselineRuns: fl,
    },
  ];
  const p50 = percentile(pb, 50);
  const p99 = percentile(pb, 99);
  const f50 = percentile(fl, 50);
  const f99 = percentile(fl, 99);
  const table = [
    '| figure | physbits | floor relay | ratio | target |',
    '|---|---|---|---|---|',
    `| p50 over ${reps.length} repetitions | ${fmt(p50)} ms | ${fmt(f50)} ms | ${fmt(p50 / f50, 2)}× | |`,
    `| p99 over ${reps.length} repetitions | ${fmt(p99)} ms | ${fmt(f99)} ms | ${fmt(p99 / f99, 2)}× | ≤ 50 ms |`,
  ].join('\n');
  const s = spread(pb);
  const markdown = [
    'One paused TCG guest with three QMP monitors: the daemon holds the watched one, the bench drives the second, the floor relay holds the third. ' +
      `Each repetition starts a migration on the bench's monitor (not through the guarded socket) to a UNIX socket at a trickle (\`max-bandwidth\` ${MIGRATION_BYTES_PER_SECOND / 1024} KiB/s), so it stays active; ` +
      'the daemon sees QEMU\'s MIGRATION {"status": "setup"} event and fires a MIGRATION_UNVERIFIED alert. ' +
      `${opts.repetitions} measured repetitions after ${warmup} unmeasured (the first POST opens the HTTP connection; a running daemon keeps it alive).`,
    '',
    '**Interval measured:** from the timestamp QEMU puts on the MIGRATION event (QEMU reads the real-time clock when it emits the event, before writing it to any monitor) ' +
      'to the moment the loopback receiver has read the whole body of the Alertmanager POST (`/api/v2/alerts`) carrying the firing alert. It includes: the monitor write, ' +
      'the daemon reading and parsing the event, the alert rule, the spool append and its fsync (alerts are on disk before any sink sees them), the HTTP request, and the receiver reading it. ' +
      'The floor relay is the same event read by a bare process that POSTs at once (no rule, no spool, no fsync).',
    '',
    table,
    '',
    compareTable(rows),
    '',
    `- Percentiles are nearest-rank: with ${reps.length} samples p99 is the largest one. min / median / max of physbits: ${fmt(s.min)} / ${fmt(s.median)} / ${fmt(s.max)} ms; ` +
      `per-repetition ratio to the floor relay, median ${fmt(medianRatio(rows[0]), 2)}×.`,
    '- After both POSTs arrived the bench cancels the migration and waits for the resolved alert (MIGRATION {"status": "cancelled"}), so each repetition starts with no alert firing.',
    '- Why this event: it is a guest event that the daemon turns into an alert on its own, without a scheduled re-read. A DIMM plugged through the upstream (a second monitor) ' +
      'would not do: QEMU 7.2 emits no event when a DIMM is added, so the daemon sees it only at the next scheduled re-verify (`verify.schedule`, default every 5 minutes).',
  ].join('\n');
  const sec = 'alert';
  return {
    title: 'Event to alert: guest event → Alertmanager POST',
    markdown,
    targets: [target(sec, `event → Alertmanager POST, p99 of ${reps.length}`, '≤ 50 ms', p99, 'ms', p99 <= 50)],
    seconds: (wallMs() - began) / 1000,
  };
}
