/**
 * `physbitsctl scan` as an operator runs it, on real paused QEMU guests: the three cases, the
 * host-phys-bits forms, a dead socket, a socket that is not QMP, a monitor held by someone else;
 * table and JSON; the contract's exit codes. Serial: QEMU serves one client per socket, and one
 * case holds a monitor on purpose. The guests' cases on both QEMUs (this machine's 7.2 and Debian
 * 13's 10.0), four paused guests on each, started when the first case of that QEMU runs.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { PHYSBITSCTL } from '../helpers/daemon';
import { kvmUsable, QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function ctl(args: string[]): Promise<Run> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [PHYSBITSCTL, ...args], { timeout: 60000 }, (err, stdout, stderr) => {
      const code = err ? (((err as { code?: unknown }).code as number) ?? null) : 0;
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

const dir = tempDir('physbits-scan-');
const hostBits = 40;

/** The four paused guests of one QEMU, in a vms/ directory it reaches. */
interface Bed {
  dir: string;
  vms: string;
  guests: Guest[];
}
const beds = new Map<Qemu, Promise<Bed>>();

function bed(qemu: Qemu): Promise<Bed> {
  let b = beds.get(qemu);
  if (!b) {
    b = (async () => {
      const own = qemu.tempDir('physbits-scan-');
      const vms = join(own, 'vms');
      mkdirSync(vms);
      const started = await Promise.allSettled(
        [
          { name: 'equal', cpu: 'phys-bits=40' },
          { name: 'narrow', cpu: 'phys-bits=39' },
          { name: 'wide', cpu: 'phys-bits=46' },
          { name: 'limited', cpu: 'host-phys-bits=on,host-phys-bits-limit=39' },
        ].map((g) => startGuest({ ...g, dir: vms, qemu })),
      );
      const guests = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) {
        await Promise.all(guests.map((g) => g.kill()));
        throw failed.reason;
      }
      return { dir: own, vms, guests };
    })();
    beds.set(qemu, b);
  }
  return b;
}

test.after.always(async () => {
  for (const b of beds.values()) {
    const { dir: own, guests } = await b.catch(() => ({ dir: '', guests: [] as Guest[] }));
    await Promise.all(guests.map((g) => g.kill()));
    if (own) rmSync(own, { recursive: true, force: true });
  }
  rmSync(dir, { recursive: true, force: true });
});

function config(extra: Record<string, unknown> = {}): string {
  const path = join(dir, `cfg-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      host: { physBits: hostBits, name: 'hv-scan' },
      policy: { accelerators: ['kvm', 'tcg'] },
      ...extra,
    }),
  );
  return path;
}

for (const qemu of QEMUS) {
  test.serial(`${qemu.label}: the three cases: exact bits, relation, severity; critical wins (exit 2)`, async (t) => {
    const { vms } = await bed(qemu);
    const sock = (name: string) => join(vms, `${name}.qmp`);
    const r = await ctl([
      'scan',
      '--json',
      '--config',
      config(),
      '--socket',
      sock('equal'),
      '--socket',
      sock('narrow'),
      '--socket',
      sock('wide'),
    ]);
    t.is(r.code, 2, r.stderr);
    t.is(r.stderr, '');
    const doc = JSON.parse(r.stdout) as StatusDocument;
    t.is(doc.host.physBits, 40);
    t.is(doc.host.physBitsSource, 'config');
    const row = (n: string) => doc.vms.find((v) => v.name === n)!;
    t.like(row('equal'), {
      socket: sock('equal'),
      accelerator: 'tcg',
      guest: { physBits: 40, hostPhysBits: false, hostPhysBitsLimit: 0 },
      verdict: { relation: 'equal', severity: 'ok' },
    });
    t.like(row('narrow'), { guest: { physBits: 39 }, verdict: { relation: 'narrower', severity: 'ok' } });
    t.like(row('wide'), { guest: { physBits: 46 }, verdict: { relation: 'wider', severity: 'critical' } });
    t.is(row('wide').verdict!.reasons[0].code, 'GUEST_WIDER_THAN_HOST');
    t.deepEqual(doc.summary, {
      worst: 'critical',
      exitCode: 2,
      counts: { ok: 2, info: 0, warning: 0, critical: 1, unknown: 0 },
    });
  });

  test.serial(`${qemu.label}: under the default policy a wide TCG guest is only info (exit 0)`, async (t) => {
    const { vms } = await bed(qemu);
    const sock = (name: string) => join(vms, `${name}.qmp`);
    writeFileSync(join(dir, 'default.json'), JSON.stringify({ host: { physBits: 40 } }));
    const r = await ctl(['scan', '--json', '--config', join(dir, 'default.json'), '--socket', sock('wide')]);
    t.is(r.code, 0);
    const vm = (JSON.parse(r.stdout) as StatusDocument).vms[0];
    t.like(vm.verdict, { relation: 'wider', severity: 'info' });
    t.is(vm.verdict!.reasons[0].code, 'GUEST_WIDER_NOT_ENFORCED');
  });

  test.serial(`${qemu.label}: host-phys-bits and its limit are reported as set`, async (t) => {
    const { vms } = await bed(qemu);
    const sock = (name: string) => join(vms, `${name}.qmp`);
    const r = await ctl(['scan', '--json', '--config', config(), '--socket', sock('limited')]);
    const vm = (JSON.parse(r.stdout) as StatusDocument).vms[0];
    t.like(vm.guest, { hostPhysBits: true, hostPhysBitsLimit: 39 });
    // TCG does not apply host-phys-bits (target/i386/host-cpu.c is KVM only): QEMU's default 40 stays.
    t.is(vm.guest!.physBits, 40);
  });

  test.serial(
    `${qemu.label}: KVM guest with host-phys-bits=on,host-phys-bits-limit=39 (where /dev/kvm works)`,
    async (t) => {
      if (!kvmUsable()) {
        t.log('skipped: /dev/kvm cannot be opened on this machine, so no KVM guest can start');
        t.pass();
        return;
      }
      const g = await startGuest({ name: 'kvm', accel: 'kvm', cpu: 'host-phys-bits=on,host-phys-bits-limit=39', qemu });
      t.teardown(() => g.kill());
      const r = await ctl(['scan', '--json', '--socket', g.socket]);
      const vm = (JSON.parse(r.stdout) as StatusDocument).vms[0];
      t.like(vm, { accelerator: 'kvm', guest: { physBits: 39, hostPhysBits: true, hostPhysBitsLimit: 39 } });
    },
  );

  test.serial(
    `${qemu.label}: a dead socket is a row with an error and exit 3; the others are still read`,
    async (t) => {
      const { vms } = await bed(qemu);
      const sock = (name: string) => join(vms, `${name}.qmp`);
      const r = await ctl([
        'scan',
        '--json',
        '--config',
        config(),
        '--socket',
        join(dir, 'gone.qmp'),
        '--socket',
        sock('equal'),
      ]);
      t.is(r.code, 3);
      const doc = JSON.parse(r.stdout) as StatusDocument;
      t.deepEqual(doc.vms[0].error?.code, 'QMP_CONNECT_FAILED');
      t.is(doc.vms[0].name, 'gone');
      t.like(doc.vms[1], { name: 'equal', verdict: { severity: 'ok' } });
    },
  );

  test.serial(`${qemu.label}: critical beats unknown: a dead socket beside a wide guest exits 2`, async (t) => {
    const { vms } = await bed(qemu);
    const sock = (name: string) => join(vms, `${name}.qmp`);
    const r = await ctl(['scan', '--config', config(), '--socket', join(dir, 'gone.qmp'), '--socket', sock('wide')]);
    t.is(r.code, 2);
  });

  test.serial(
    `${qemu.label}: a socket that is not QMP, and a monitor held by another client: error rows, no hang`,
    async (t) => {
      const { vms } = await bed(qemu);
      const sock = (name: string) => join(vms, `${name}.qmp`);
      const junkPath = join(dir, 'junk.qmp');
      const junk = net.createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
      await new Promise<void>((r) => junk.listen(junkPath, r));
      t.teardown(() => junk.close());
      // QEMU serves one client at a time: while this one holds 'narrow', a second gets no greeting.
      const holder = net.connect(sock('narrow'));
      await new Promise((r) => holder.once('data', r));
      t.teardown(() => holder.destroy());
      const cfg = config({ qmp: { timeoutMs: 500 } });
      const r = await ctl(['scan', '--json', '--config', cfg, '--socket', junkPath, '--socket', sock('narrow')]);
      t.is(r.code, 3);
      const doc = JSON.parse(r.stdout) as StatusDocument;
      t.is(doc.vms[0].error?.code, 'QMP_PROTOCOL');
      t.is(doc.vms[1].error?.code, 'QMP_NO_GREETING');
      t.true(r.ms < 15000, `${r.ms} ms`);
    },
  );

  test.serial(`${qemu.label}: the table for people: one row per VM with the first reason`, async (t) => {
    const { vms } = await bed(qemu);
    const sock = (name: string) => join(vms, `${name}.qmp`);
    const r = await ctl(['scan', '--config', config(), '--socket', sock('wide'), '--socket', join(dir, 'gone.qmp')]);
    const lines = r.stdout.trim().split('\n');
    t.regex(lines[0], /^host hv-scan: 40 bits physical \(config\), \S+$/);
    t.regex(lines[1], /^VM\s+ACCEL\s+GUEST\s+HOST\s+RELATION\s+SEVERITY\s+REASON$/);
    t.regex(lines[2], /^wide\s+tcg\s+46\s+40\s+wider\s+critical\s+GUEST_WIDER_THAN_HOST: /);
    t.regex(lines[3], /^gone\s+-\s+-\s+40\s+-\s+unknown\s+QMP_CONNECT_FAILED: /);
  });

  test.serial(`${qemu.label}: the config's discovery globs are used when no --socket is given`, async (t) => {
    const { vms } = await bed(qemu);
    const r = await ctl(['scan', '--json', '--config', config({ discovery: { sockets: [join(vms, '*.qmp')] } })]);
    const names = (JSON.parse(r.stdout) as StatusDocument).vms.map((v) => v.name).sort();
    t.deepEqual(names, ['equal', 'limited', 'narrow', 'wide']);
  });

  test.serial(
    `${qemu.label}: --socket with a glob is expanded to the sockets it matches; one that matches none is refused`,
    async (t) => {
      const { vms } = await bed(qemu);
      const sock = (name: string) => join(vms, `${name}.qmp`);
      const r = await ctl([
        'scan',
        '--json',
        '--config',
        config(),
        '--socket',
        join(vms, 'n*.qmp'),
        '--socket',
        sock('wide'),
      ]);
      t.is(r.code, 2, r.stderr);
      const names = (JSON.parse(r.stdout) as StatusDocument).vms.map((v) => v.name).sort();
      t.deepEqual(names, ['narrow', 'wide']);
      const none = await ctl(['scan', '--config', config(), '--socket', join(vms, 'nothing-*.qmp')]);
      t.is(none.code, 64);
      t.is(none.stdout, '');
      t.is(none.stderr, `physbitsctl: scan: --socket '${join(vms, 'nothing-*.qmp')}' matches no socket\n`);
    },
  );
}

test.serial('a scan that finds nothing says which config and patterns it searched', async (t) => {
  const pattern = join(dir, 'empty', '*.qmp');
  const path = config({ discovery: { sockets: [pattern] } });
  const r = await ctl(['scan', '--config', path]);
  t.is(r.code, 0);
  t.regex(r.stdout, /\nno VMs found$/m);
  t.is(r.stderr, `physbitsctl: scan: no VMs found: no socket matches discovery.sockets in ${path}: ${pattern}\n`);
  const json = await ctl(['scan', '--json', '--config', path]);
  t.deepEqual((JSON.parse(json.stdout) as StatusDocument).vms, []);
  t.is(json.stderr, r.stderr);
  const empty = config();
  const e = await ctl(['scan', '--config', empty]);
  t.is(
    e.stderr,
    `physbitsctl: scan: no VMs found: discovery.sockets in ${empty} is empty; name sockets with --socket PATH or set discovery.sockets\n`,
  );
});

test.serial('a peer without address: the config error names the field, exit 78', async (t) => {
  const path = config({
    peers: [
      { name: 'hv2', address: 'hv2', physBits: 39 },
      { name: 'hv3', physBits: 39 },
    ],
  });
  const r = await ctl(['scan', '--config', path, '--socket', join(dir, 'wide.qmp')]);
  t.is(r.code, 78);
  t.is(r.stderr, `physbitsctl: config: ${path}: peers[1].address: required\n`);
});

test.serial('operator mistakes: one line, no stack, exit 64 or 78', async (t) => {
  const usage = await ctl(['scan', '--bogus']);
  t.is(usage.code, 64);
  t.is(usage.stderr.trim().split('\n').length, 1);
  t.regex(usage.stderr, /^physbitsctl: scan: Unknown option '--bogus'/);
  writeFileSync(join(dir, 'bad.json'), JSON.stringify({ guard: { holdMs: -1 } }));
  const bad = await ctl(['scan', '--config', join(dir, 'bad.json')]);
  t.is(bad.code, 78);
  t.regex(bad.stderr, /^physbitsctl: config: .*bad\.json: guard\.holdMs: /);
  t.is(bad.stderr.trim().split('\n').length, 1);
  writeFileSync(join(dir, 'typo.json'), JSON.stringify({ alerts: { webhookz: [] } }));
  const typo = await ctl(['scan', '--config', join(dir, 'typo.json')]);
  t.is(typo.code, 78);
  t.regex(typo.stderr, /alerts\.webhookz: unknown key/);
  writeFileSync(join(dir, 'notjson.json'), '{ nope');
  t.is((await ctl(['scan', '--config', join(dir, 'notjson.json')])).code, 78);
  t.is((await ctl(['scan', '--config', join(dir, 'absent.json')])).code, 78);
  const unknown = await ctl(['frobnicate']);
  t.is(unknown.code, 64);
  t.false(/\n\s+at /.test(unknown.stderr + bad.stderr + usage.stderr));
});
