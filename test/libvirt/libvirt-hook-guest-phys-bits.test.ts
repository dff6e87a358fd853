/**
 * The libvirt hook and guest-phys-bits (issue 25 item 11): on an AMD host with a raw 52-bit width
 * and 4-level NPT (limit 48), a host-passthrough guest gets phys-bits 52; QEMU 9.1+ on Linux 6.10+
 * gives it guest-phys-bits 48, which the verdict calls info (GUEST_WIDER_WITHIN_GUEST_PHYS_BITS).
 * The hook reads the host through the fixture tree and the QEMU version from the domain's
 * <emulator> (the real QEMU 7.2 and 10.0 where they run here).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../agent/core/config';
import { runLibvirtHook, type LibvirtHookDeps } from '../../agent/libvirt/libvirt-hook';
import { HOSTS, hostTree, type HostRoots } from '../helpers/host-tree';
import { QEMUS, TRIXIE_QEMU } from '../helpers/qemu';
import { BANNER_10_0, bannerScript, qemuExecutable, script } from '../helpers/qemu-binaries';
import { tempDir } from '../helpers/tmp';
import { PHYSBITSCTL } from '../helpers/daemon';

/** A host-passthrough domain on machine `machine`, started by `emulator`. */
function domain(emulator: string, machine: string): string {
  return `<domain type='kvm'>
  <name>db1</name>
  <uuid>0c9f5f7e-8f55-4f5b-9a4c-3d2b1a0f9e8d</uuid>
  <memory unit='GiB'>4</memory>
  <os><type arch='x86_64' machine='${machine}'>hvm</type></os>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <devices><emulator>${emulator}</emulator></devices>
</domain>`;
}

/** The fixture's roots with its /proc replaced by one whose osrelease is `release`. */
function withKernel(t: { teardown(fn: () => void): void }, roots: HostRoots, release: string): HostRoots {
  const proc = tempDir('physbits-proc-');
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  copyFileSync(join(HOSTS, 'amd-52-4level', 'proc', 'cpuinfo'), join(proc, 'cpuinfo'));
  mkdirSync(join(proc, 'sys', 'kernel'), { recursive: true });
  writeFileSync(join(proc, 'sys', 'kernel', 'osrelease'), `${release}\n`);
  return { ...roots, procRoot: proc };
}

async function hook(
  roots: HostRoots,
  operation: 'prepare' | 'migrate',
  xml: string,
  extra: Partial<LibvirtHookDeps> = {},
): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runLibvirtHook(['db1', operation, 'begin', '-'], xml, {
    config: parseConfig({ host: roots, policy: { accelerators: ['kvm'] } }),
    stderr: (l) => lines.push(l),
    notify: async () => {},
    ...extra,
  });
  return { code, lines };
}

const WIDER =
  "physbits refused the start of domain 'db1': GUEST_WIDER_THAN_HOST: guest phys-bits 52 is wider than this host's 48 bits under kvm";

for (const qemu of QEMUS) {
  const is10 = qemu.tree !== null;
  test(`${qemu.label} as <emulator>, Linux 6.12, AMD 52-bit with 4-level NPT: a host-passthrough guest is ${is10 ? 'started (guest-phys-bits 48 keeps it within the limit)' : 'refused, and the refusal says QEMU 7.2 has no guest-phys-bits'}`, async (t) => {
    if (qemu.unavailable) t.fail(qemu.unavailable);
    const roots = hostTree(t, 'amd-52-4level');
    const emulator = qemuExecutable(t, qemu);
    const r = await hook(roots, 'prepare', domain(emulator, is10 ? 'pc-q35-10.0' : 'pc-q35-7.2'));
    if (is10) {
      t.deepEqual(r, { code: 0, lines: [] });
      return;
    }
    t.is(r.code, 1);
    t.is(r.lines.length, 1);
    t.true(
      r.lines[0].startsWith(
        `${WIDER}; no guest-phys-bits keeps it within that limit: QEMU 7.2.22 (${emulator}) has no guest-phys-bits (QEMU 9.1 and later set it); fix: `,
      ),
      r.lines[0],
    );
  });
}

test('QEMU 10.0 as <emulator>: still refused where QEMU or KVM leave guest-phys-bits unset (Linux 6.1, machine type 9.0), or where the version or the kernel cannot be read; each refusal says which', async (t) => {
  if (TRIXIE_QEMU.unavailable) t.fail(TRIXIE_QEMU.unavailable);
  const roots = hostTree(t, 'amd-52-4level');
  const qemu10 = qemuExecutable(t, TRIXIE_QEMU);
  const noRelease = withKernel(t, roots, 'x');
  rmSync(join(noRelease.procRoot, 'sys'), { recursive: true });
  const cases: Array<[string, HostRoots, string, string]> = [
    [
      'Linux 6.1',
      withKernel(t, roots, '6.1.0-28-amd64'),
      domain(qemu10, 'pc-q35-10.0'),
      'no guest-phys-bits keeps it within that limit: KVM in Linux 6.1.0-28-amd64 does not report guest-phys-bits (Linux 6.10 and later do), so QEMU leaves it at 0',
    ],
    [
      'machine type 9.0',
      roots,
      domain(qemu10, 'pc-q35-9.0'),
      "no guest-phys-bits keeps it within that limit: machine type pc-q35-9.0 keeps guest-phys-bits at 0 (QEMU's pc_compat_9_0, machine types up to 9.0)",
    ],
    [
      'kernel release unreadable',
      noRelease,
      domain(qemu10, 'pc-q35-10.0'),
      'guest-phys-bits not predicted: the kernel release was not read, and KVM reports guest-phys-bits only from Linux 6.10',
    ],
  ];
  const slow = script(t, 'qemu-system-x86_64', 'sleep 30');
  cases.push([
    'an emulator that does not answer',
    roots,
    domain(slow, 'pc-q35-10.0'),
    `guest-phys-bits not predicted: ${slow} --version did not answer within 5000 ms`,
  ]);
  for (const [what, r, xml, clause] of cases) {
    const out = await hook(r, 'prepare', xml);
    t.is(out.code, 1, what);
    t.true(out.lines[0]?.startsWith(`${WIDER}; ${clause}; fix: `), `${what}: ${out.lines[0]}`);
  }
});

test('an incoming migration of a host-passthrough guest is judged by width alone: it booted on its source, whose guest-phys-bits placed its memory', async (t) => {
  const roots = hostTree(t, 'amd-52-4level');
  const qemu10 = bannerScript(t, BANNER_10_0);
  const r = await hook(roots, 'migrate', domain(qemu10, 'pc-q35-10.0'), {
    sourceWidth: async () => ({ kind: 'guest', physBits: 52, host: 'hvA', source: "live peer hvA's status" }),
  });
  t.is(r.code, 1);
  t.regex(
    r.lines[0],
    /^physbits refused the incoming migration of domain 'db1': GUEST_WIDER_THAN_HOST: guest phys-bits 52 \(its width on hvA, from live peer hvA's status\) is wider than this host's 48 bits under kvm; guest-phys-bits not predicted: it booted on its source host, where its firmware placed memory by that host's guest-phys-bits, which is not known here; its width follows/,
  );
  // A start of the same domain on this host is not refused.
  t.deepEqual(await hook(roots, 'prepare', domain(qemu10, 'pc-q35-10.0')), { code: 0, lines: [] });
});

test('physbitsctl libvirt-hook as libvirt runs it: the real QEMU 10.0 as <emulator> starts the host-passthrough guest, the real QEMU 7.2 is refused with exit 1 and one line', async (t) => {
  if (TRIXIE_QEMU.unavailable) t.fail(TRIXIE_QEMU.unavailable);
  const roots = hostTree(t, 'amd-52-4level');
  const dir = tempDir();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'physbits.json');
  writeFileSync(config, JSON.stringify({ host: roots, api: { socket: join(dir, 'api.sock') } }));
  const run = (xml: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        [PHYSBITSCTL, 'libvirt-hook', '--config', config, 'db1', 'prepare', 'begin', '-'],
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }),
      );
      child.stdin?.end(xml);
    });
  for (const qemu of QEMUS) {
    const emulator = qemuExecutable(t, qemu);
    const r = await run(domain(emulator, qemu.tree === null ? 'pc-q35-7.2' : 'pc-q35-10.0'));
    if (qemu.tree !== null) {
      t.deepEqual(r, { code: 0, stdout: '', stderr: '' }, qemu.label);
      continue;
    }
    t.is(r.code, 1, qemu.label);
    t.is(r.stdout, '');
    t.regex(
      r.stderr,
      /^physbits refused the start of domain 'db1': GUEST_WIDER_THAN_HOST: guest phys-bits 52 is wider than this host's 48 bits under kvm; no guest-phys-bits keeps it within that limit: QEMU 7\.2\.22 \([^)]*\) has no guest-phys-bits \(QEMU 9\.1 and later set it\); fix: [^\n]*\n$/,
    );
  }
});
