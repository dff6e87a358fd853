/**
 * End to end: three physbitsd daemons on this machine, each with its own config (host widths 46, 39
 * and the real one), its own API socket, a TCP API on loopback for its peers, and a real paused TCG
 * guest. `physbitsctl fleet --json` and `advise --json` against their sockets. On both QEMUs (this
 * machine's 7.2 and Debian 13's 10.0): every guest of a run on the same one.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AdviceDocument } from '../../agent/judge/advise';
import type { FleetDocument } from '../../agent/judge/fleet';
import type { StatusDocument } from '../../agent/core/types';
import { freePort } from '../helpers/net';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const BIN = join(__dirname, '..', '..', 'agent', 'bin');
const TOKEN = 'e2e-fleet-token-0123456789abcdef';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(script: string, args: string[], timeoutMs = 30000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(BIN, script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${script} ${args.join(' ')}: no exit within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

interface Node {
  name: string;
  dir: string;
  api: string;
  port: number;
  guest: Guest | null;
  logs: () => string;
  stop(): Promise<void>;
}

interface Plan {
  name: string;
  physBits?: number;
  guestBits: number;
}

async function waitFor<T>(
  what: string,
  fn: () => Promise<T | null>,
  timeoutMs: number,
  logs: () => string,
  gone: () => string | null = () => null,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const why = gone();
    if (why) throw new Error(`${what}: ${why}\n${logs()}`);
    const v = await fn().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${logs()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function startNode(
  qemu: Qemu,
  plan: Plan,
  ports: Map<string, number>,
  tokenFile: string,
  all: Plan[],
  started: Node[],
): Promise<Node> {
  const dir = qemu.tempDir(`physbits-e2e-${plan.name}-`);
  const vmDir = join(dir, 'vms');
  mkdirSync(vmDir);
  const api = join(dir, 'api.sock');
  const port = ports.get(plan.name)!;
  const config = {
    host: { name: plan.name, ...(plan.physBits ? { physBits: plan.physBits } : {}) },
    discovery: { sockets: [join(vmDir, '*.qmp')], pollIntervalSeconds: 1 },
    guard: { socketDir: join(dir, 'guard') },
    api: { socket: api, listen: `127.0.0.1:${port}`, tokenFile },
    metrics: { listen: '127.0.0.1:0' },
    alerts: { spoolDir: join(dir, 'spool') },
    policy: { accelerators: ['kvm', 'tcg'] },
    peers: all
      .filter((p) => p.name !== plan.name)
      .map((p) => ({ name: p.name, address: '127.0.0.1', url: `http://127.0.0.1:${ports.get(p.name)}`, tokenFile })),
    log: { level: 'info', format: 'text' },
  };
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const guest = await startGuest({ dir: vmDir, name: `${plan.name}-vm`, cpu: `phys-bits=${plan.guestBits}`, qemu });
  const child = spawn(process.execPath, [join(BIN, 'physbitsd.js'), '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (d: Buffer) => {
    if (log.length < 64 * 1024) log += d.toString();
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const node: Node = {
    name: plan.name,
    dir,
    api,
    port,
    guest,
    logs: () => `--- ${plan.name} ---\n${log}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  // Stopped by the test's teardown even when it never gets ready.
  started.push(node);
  await waitFor(
    `${plan.name}: status with its guest's facts`,
    async () => {
      if (!existsSync(api)) return null;
      const r = await run('physbitsctl.js', ['status', '--json', '--api', api]);
      const doc = JSON.parse(r.stdout) as StatusDocument;
      return doc.vms.some((v) => v.guest?.physBits === plan.guestBits) ? doc : null;
    },
    60000,
    node.logs,
    () =>
      child.exitCode !== null || child.signalCode !== null
        ? `physbitsd exited (${child.exitCode ?? child.signalCode})`
        : null,
  );
  return node;
}

const PLANS: Plan[] = [
  { name: 'hvA', physBits: 46, guestBits: 46 },
  { name: 'hvB', physBits: 39, guestBits: 39 },
  { name: 'hvC', guestBits: 40 },
];

for (const qemu of QEMUS) {
  test(`${qemu.label}: three daemons: fleet matrix for every pair, advice for a 46-bit guest in a 39-bit pool, an unreachable peer`, async (t) => {
    const shared = tempDir('physbits-e2e-token-');
    const tokenFile = join(shared, 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const ports = new Map<string, number>();
    for (const p of PLANS) ports.set(p.name, await freePort());
    const nodes: Node[] = [];
    t.teardown(async () => {
      for (const n of nodes) {
        await n.stop();
        await n.guest?.kill();
        rmSync(n.dir, { recursive: true, force: true });
      }
      rmSync(shared, { recursive: true, force: true });
    });
    for (const p of PLANS) await startNode(qemu, p, ports, tokenFile, PLANS, nodes);
    const [a, , c] = nodes;
    const allLogs = () => nodes.map((n) => n.logs()).join('\n');

    const realC = (
      JSON.parse((await run('physbitsctl.js', ['status', '--json', '--api', c.api])).stdout) as StatusDocument
    ).host.physBits;
    const width: Record<string, number> = { hvA: 46, hvB: 39, hvC: realC };
    const guestBits: Record<string, number> = { 'hvA-vm': 46, 'hvB-vm': 39, 'hvC-vm': 40 };

    for (const n of nodes) {
      const r = await run('physbitsctl.js', ['fleet', '--json', '--api', n.api]);
      const doc = JSON.parse(r.stdout) as FleetDocument;
      t.deepEqual(
        doc.hosts.map((h) => [h.name, h.physBits, h.reachable]),
        [n.name, ...PLANS.map((p) => p.name).filter((x) => x !== n.name)].map((h) => [h, width[h], true]),
        `hosts as seen from ${n.name}\n${allLogs()}`,
      );
      t.is(doc.guests.length, 3, `guests as seen from ${n.name}`);
      for (const g of doc.guests) {
        t.is(g.host, g.vm.replace(/-vm$/, ''));
        t.is(g.physBits, guestBits[g.vm]);
        for (const h of Object.keys(width)) {
          t.is(g.fits![h], guestBits[g.vm] <= width[h], `${n.name}: ${g.vm} on ${h}`);
        }
      }
      // hvA-vm (46 bits) does not fit hvB (39 bits): critical.
      t.is(r.code, 2, r.stderr);
    }

    const human = await run('physbitsctl.js', ['fleet', '--api', a.api]);
    t.is(human.code, 2);
    t.true(human.stdout.includes('hvA/hvA-vm → hvB: guest 46 bits > host 39 bits'), human.stdout);

    const adv = await run('physbitsctl.js', ['advise', 'hvA-vm', '--json', '--api', a.api]);
    const advice = JSON.parse(adv.stdout) as AdviceDocument;
    t.is(adv.code, 1, adv.stderr);
    t.is(advice.poolBits, 39);
    t.is(advice.guests.length, 1);
    t.like(advice.guests[0], { host: 'hvA', vm: 'hvA-vm', physBits: 46, poolBits: 39, safe: false, layoutFits: true });
    t.like(advice.guests[0].settings, {
      qemu: '-cpu qemu64,phys-bits=39',
      libvirt: "<maxphysaddr mode='emulate' bits='39'/>",
      proxmox: 'cpu: qemu64,phys-bits=39',
    });
    const pinned = await run('physbitsctl.js', ['advise', 'hvB-vm', '--json', '--api', a.api]);
    t.is(pinned.code, 0, pinned.stdout);
    const unknownVm = await run('physbitsctl.js', ['advise', 'nope', '--api', a.api]);
    t.is(unknownVm.code, 3, unknownVm.stderr); // unknown, like other unknowns

    await c.stop();
    const down = await run('physbitsctl.js', ['fleet', '--json', '--api', a.api]);
    const downDoc = JSON.parse(down.stdout) as FleetDocument;
    const hvC = downDoc.hosts.find((h) => h.name === 'hvC')!;
    t.is(hvC.reachable, false);
    t.is(hvC.physBits, null);
    t.regex(hvC.error ?? '', /^PEER_UNREACHABLE: /);
    t.deepEqual(downDoc.guests.map((g) => g.vm).sort(), ['hvA-vm', 'hvB-vm']);
    t.is(down.code, 2, 'critical (hvA-vm on hvB) beats unknown (hvC unreachable)');
    const downAdvice = await run('physbitsctl.js', ['advise', 'hvB-vm', '--json', '--api', a.api]);
    t.is(downAdvice.code, 3, downAdvice.stdout);
    t.deepEqual((JSON.parse(downAdvice.stdout) as AdviceDocument).pool.unreachable, ['hvC']);
  });
}
