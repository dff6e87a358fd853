/**
 * `npm run demo`: real paused guests for the three cases on this machine's QEMU and one on Debian
 * 13's QEMU 10 (from the tree contrib/debian13-tree.sh builds; said and left out when it is
 * missing), the daemon on a demo config, its view, a refused hot-plug and one taken through the
 * guard, and a refused migration check; then the daemon's events until Ctrl-C (at once when
 * standard input is not a terminal). Everything started is stopped.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { readHost } from '../../agent/facts/host-facts';
import { judgeHost } from '../../agent/judge/host-limit';
import { startGuest, kvmUsable, TRIXIE_QEMU, type Guest } from '../../test/helpers/qemu';

const root = join(__dirname, '..', '..');
const daemonJs = join(root, 'agent', 'bin', 'physbitsd.js');
const ctlJs = join(root, 'agent', 'bin', 'physbitsctl.js');

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}

/** The width the demo's tables are cut to, whatever the terminal: README.md shows this output as printed. */
const DEMO_COLUMNS = 100;

function ctl(args: string[]): number {
  const r = spawnSync(process.execPath, [ctlJs, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    env: { ...process.env, COLUMNS: String(DEMO_COLUMNS) },
  });
  process.stdout.write(r.stdout);
  return r.status ?? 3;
}

async function waitFor(path: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`${path} did not appear within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One QMP conversation through a socket: returns every line received. */
function qmpSession(socket: string, commands: object[], ms = 3000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const lines: string[] = [];
    let buf = '';
    let sent = 0;
    const s = net.connect(socket);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(lines);
    }, ms);
    s.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, i).trim());
        buf = buf.slice(i + 1);
        if (sent < commands.length) s.write(`${JSON.stringify(commands[sent++])}\n`);
        else {
          clearTimeout(timer);
          s.end();
          resolve(lines);
        }
      }
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function main(): Promise<void> {
  const host = judgeHost(readHost({ name: 'demo-host' }));
  const hostBits = host.physBits;
  const dir = mkdtempSync(join(tmpdir(), 'physbits-demo-'));
  const vms = join(dir, 'vms');
  // The QEMU 10 guest's socket lives inside the Debian 13 tree, where that QEMU runs chrooted.
  const recentVms = TRIXIE_QEMU.unavailable ? null : TRIXIE_QEMU.tempDir('physbits-demo-');
  const guests: Guest[] = [];
  let daemon: ChildProcess | null = null;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    const stopped: string[] = [];
    if (daemon && daemon.exitCode === null) {
      const pid = daemon.pid;
      daemon.kill('SIGTERM');
      const code = await new Promise((r) => daemon!.once('exit', (c, sig) => r(c ?? sig)));
      stopped.push(`physbitsd (pid ${pid}): SIGTERM, exit ${String(code)}`);
    }
    await Promise.all(guests.map((g) => g.kill()));
    for (const g of guests) stopped.push(`guest '${basename(g.socket, '.qmp')}' (QEMU pid ${g.pid}): killed`);
    rmSync(dir, { recursive: true, force: true });
    stopped.push(`removed ${dir}`);
    if (recentVms) {
      rmSync(recentVms, { recursive: true, force: true });
      stopped.push(`removed ${recentVms}`);
    }
    say('stopped what the demo started');
    for (const line of stopped) console.log(`  ${line}`);
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(0)));
  process.once('SIGTERM', () => void cleanup().then(() => process.exit(0)));
  try {
    say(`this host: ${hostBits} physical address bits (${host.physBitsSource}), ${host.vendor}`);
    const cases = [
      { name: 'equal', bits: hostBits },
      { name: 'narrow', bits: Math.max(32, hostBits - 9) },
      { name: 'wide', bits: Math.min(52, hostBits + 4) },
    ];
    const { mkdirSync } = await import('node:fs');
    mkdirSync(vms, { recursive: true });
    for (const c of cases) {
      guests.push(
        await startGuest({ name: c.name, dir: vms, cpu: `phys-bits=${c.bits}`, memory: '64M,slots=2,maxmem=2G' }),
      );
      console.log(`started guest '${c.name}' with -cpu qemu64,phys-bits=${c.bits} (TCG, paused)`);
    }
    if (recentVms) {
      guests.push(
        await startGuest({
          qemu: TRIXIE_QEMU,
          name: 'recent',
          dir: recentVms,
          cpu: `phys-bits=${hostBits}`,
          memory: '64M,slots=2,maxmem=2G',
        }),
      );
      console.log(
        `started guest 'recent' on ${TRIXIE_QEMU.label} with -cpu qemu64,phys-bits=${hostBits} (TCG, paused)`,
      );
    } else {
      console.log(`no guest on QEMU 10: ${TRIXIE_QEMU.unavailable}`);
    }
    if (kvmUsable()) {
      guests.push(await startGuest({ name: 'kvm-host-bits', dir: vms, accel: 'kvm', cpu: 'host-phys-bits=on' }));
      console.log("started guest 'kvm-host-bits' under KVM with host-phys-bits=on");
    }
    const config = {
      host: { name: 'demo-host' },
      discovery: { sockets: [join(vms, '*.qmp'), ...(recentVms ? [join(recentVms, '*.qmp')] : [])] },
      guard: { socketDir: join(dir, 'guard') },
      api: { socket: join(dir, 'api.sock') },
      metrics: { listen: '127.0.0.1:0' },
      // The demo's guests run under TCG, which the host limit does not bind; count it here so the
      // wide guest shows as it would under KVM.
      policy: { accelerators: ['kvm', 'tcg'] },
      alerts: { spoolDir: join(dir, 'spool') },
      peers: [{ name: 'small-hv', address: '127.0.0.2', physBits: 39 }],
    };
    const cfgPath = join(dir, 'config.json');
    writeFileSync(cfgPath, JSON.stringify(config, null, 2));

    say('physbitsctl scan (no daemon needed)');
    ctl(['scan', '--config', cfgPath]);

    say('starting physbitsd on the demo config');
    daemon = spawn(process.execPath, [daemonJs, '--config', cfgPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    daemon.stderr!.on('data', (d: Buffer) =>
      process.stderr.write(`  physbitsd: ${d.toString().trimEnd().replace(/\n/g, '\n  physbitsd: ')}\n`),
    );
    await waitFor(config.api.socket, 10000);
    await waitFor(join(config.guard.socketDir, 'equal.qmp'), 10000);
    await new Promise((r) => setTimeout(r, 300));

    say('physbitsctl status');
    ctl(['status', '--api', config.api.socket]);

    say(`hot-plugging a DIMM at 2^${hostBits} through the guarded socket of 'equal'`);
    const lines = await qmpSession(join(config.guard.socketDir, 'equal.qmp'), [
      { execute: 'qmp_capabilities' },
      {
        execute: 'object-add',
        arguments: { 'qom-type': 'memory-backend-ram', id: 'demo-mem', size: 128 * 1024 * 1024 },
      },
      {
        execute: 'device_add',
        arguments: { driver: 'pc-dimm', id: 'demo-dimm', memdev: 'demo-mem', addr: 2 ** hostBits },
        id: 'demo-1',
      },
    ]);
    console.log(lines[lines.length - 1]);

    if (recentVms) {
      say(`hot-plugging a 128 MiB DIMM, no address, through the guarded socket of 'recent' (${TRIXIE_QEMU.label})`);
      await waitFor(join(config.guard.socketDir, 'recent.qmp'), 10000);
      const taken = await qmpSession(join(config.guard.socketDir, 'recent.qmp'), [
        { execute: 'qmp_capabilities' },
        {
          execute: 'object-add',
          arguments: { 'qom-type': 'memory-backend-ram', id: 'demo-mem', size: 128 * 1024 * 1024 },
        },
        { execute: 'device_add', arguments: { driver: 'pc-dimm', id: 'demo-dimm', memdev: 'demo-mem' }, id: 'demo-2' },
      ]);
      console.log(taken[taken.length - 1]);
    }

    say('physbitsctl check-migration wide --to small-hv');
    ctl(['check-migration', 'wide', '--to', 'small-hv', '--api', config.api.socket]);

    if (process.stdin.isTTY) {
      say('following the daemon (physbitsctl watch); Ctrl-C stops everything');
      spawn(process.execPath, [ctlJs, 'watch', '--api', config.api.socket], { stdio: 'inherit' });
      await new Promise(() => undefined);
    }
  } finally {
    await cleanup();
  }
  say('demo finished; everything it started is stopped');
}

main().catch((err) => {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  process.exit(1);
});
