import test from 'ava';
import { accessSync, closeSync, constants, mkdirSync, openSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { HostFactsError } from '../../agent/core/errors';
import type { HostFacts, HostSource } from '../../agent/core/types';
import {
  parseModuleBool,
  readCpuid,
  readCpuidLeaf,
  readHost,
  MSR_IA32_VMX_EPT_VPID_CAP,
  type HostReadOptions,
} from '../../agent/facts/host-facts';
import { judgeHost } from '../../agent/judge/host-limit';
import { kvmUsable, startGuest } from '../helpers/qemu';
import { HOSTS, fixtureLeaves, hostTree, writeCpuidDevice, writeMsrDevice } from '../helpers/host-tree';
import { tempDir } from '../helpers/tmp';

/** The host's facts as the daemon builds them: read (facts/host-facts.ts), then judged (judge/host-limit.ts). */
function readHostFacts({ physBitsOverride, ...opts }: HostReadOptions & { physBitsOverride?: number }): HostFacts {
  return judgeHost(readHost(opts), physBitsOverride);
}

function roots(host: string) {
  return { procRoot: join(HOSTS, host, 'proc'), sysRoot: join(HOSTS, host, 'sys') };
}

/** A dev root holding only `<dir>/cpu/0/cpuid` built from `leaves` (helpers/host-tree.ts). */
function cpuidDevRoot(t: { teardown(fn: () => void): void }, leaves: Record<string, string[]>): string {
  const dir = tempDir('physbits-dev-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeCpuidDevice(dir, leaves);
  return dir;
}

function emptyDir(t: { teardown(fn: () => void): void }): string {
  const dir = tempDir('physbits-empty-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('module bools: Y/N and 1/0', (t) => {
  t.true(parseModuleBool('Y\n'));
  t.true(parseModuleBool('1\n'));
  t.false(parseModuleBool('N\n'));
  t.false(parseModuleBool('0'));
  t.is(parseModuleBool('maybe\n'), null);
  t.is(parseModuleBool(''), null);
});

test('intel-46: every field, cpuid read from a sparse regular file', (t) => {
  const devRoot = cpuidDevRoot(t, fixtureLeaves('intel-46'));
  const facts = readHostFacts({ ...roots('intel-46'), devRoot, name: 'hv1' });
  t.deepEqual(facts, {
    name: 'hv1',
    physBits: 46,
    physBitsSource: 'cpuid',
    reasoning: [
      'the CPU has 46 physical address bits, as /proc/cpuinfo shows',
      'nested paging is on: guests get 46 bits',
    ],
    // 46 bits: the EPT depth does not matter, and is not read (no kernel release, no msr).
    limit: { nestedPaging: true, tdpLevels: null, detectedPhysBits: 46, problems: [], notes: [] },
    vendor: 'GenuineIntel',
    cpuinfoPhysBits: 46,
    cpuinfoVirtBits: 48,
    cpuidPhysBits: 46,
    memEncryptionReduction: null,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    paging: { la57: false, ept5Level: false, hypervisor: false },
    kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: false, ept: true, npt: null },
    sources: {
      physBits: 'cpuid',
      cpuinfoPhysBits: 'cpuinfo',
      cpuinfoVirtBits: 'cpuinfo',
      cpuidPhysBits: 'cpuid',
      memEncryptionReduction: 'unknown',
      flags: 'cpuinfo',
      vendor: 'cpuinfo',
    },
  });
});

test('amd-sme-48: cpuinfo says 43, raw CPUID 48, reduction 5 (leaf ~2 GiB into the file)', (t) => {
  const devRoot = cpuidDevRoot(t, fixtureLeaves('amd-sme-48'));
  const st = statSync(join(devRoot, 'cpu', '0', 'cpuid'));
  t.is(st.size, 0x8000001f + 16);
  t.true(st.blocks * 512 < 1024 * 1024, 'the file is sparse');
  const facts = readHostFacts({ ...roots('amd-sme-48'), devRoot, name: 'epyc1' });
  t.like(facts, {
    physBits: 48,
    physBitsSource: 'cpuid',
    vendor: 'AuthenticAMD',
    cpuinfoPhysBits: 43,
    cpuidPhysBits: 48,
    memEncryptionReduction: 5,
    flags: { sme: true, sev: true, sev_es: true, sev_snp: true, tme: false },
    kvm: { module: 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt: true },
  });
  t.is(facts.sources.memEncryptionReduction, 'cpuid');
  t.is(facts.notes, undefined);
});

test('readHost returns readings only: no limit, the vendor mismatch kept as a problem for the judge', (t) => {
  const devRoot = cpuidDevRoot(t, fixtureLeaves('no-address-sizes'));
  const readings = readHost({ ...roots('intel-46'), devRoot, name: 'hv1' });
  t.false('physBits' in readings);
  t.false('reasoning' in readings);
  t.is(readings.vendor, 'GenuineIntel');
  t.deepEqual(readings.problems, ['/proc/cpuinfo says GenuineIntel but CPUID leaf 0 says AuthenticAMD']);
  t.deepEqual(readHostFacts({ ...roots('intel-46'), devRoot, name: 'hv1' }).limit.problems, readings.problems);
});

test('laptop-39 without a cpuid device: cpuid fields null, the reason noted', (t) => {
  const devRoot = emptyDir(t);
  const facts = readHostFacts({ ...roots('laptop-39'), devRoot, name: 'lap' });
  t.like(facts, {
    physBits: 39,
    physBitsSource: 'cpuinfo',
    cpuidPhysBits: null,
    memEncryptionReduction: null,
    flags: { tme: true, sme: false },
    kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: true, ept: false, npt: null },
  });
  t.is(facts.sources.cpuidPhysBits, 'unknown');
  t.deepEqual(facts.notes, [`${join(devRoot, 'cpu', '0', 'cpuid')}: ENOENT`]);
});

test('no-address-sizes: falls back to raw CPUID for the width and the vendor', (t) => {
  const devRoot = cpuidDevRoot(t, fixtureLeaves('no-address-sizes'));
  const facts = readHostFacts({ ...roots('no-address-sizes'), devRoot, name: 'lxc' });
  t.like(facts, {
    physBits: 48,
    physBitsSource: 'cpuid',
    vendor: 'AuthenticAMD',
    cpuinfoPhysBits: null,
    cpuidPhysBits: 48,
    memEncryptionReduction: 5,
    kvm: { module: null, allowSmallerMaxphyaddr: null, ept: null, npt: null },
  });
  t.is(facts.sources.vendor, 'cpuid');
  t.deepEqual(facts.notes, [`${join(HOSTS, 'no-address-sizes', 'proc', 'cpuinfo')}: no "address sizes" line`]);
});

test('no-address-sizes without cpuid: HostFactsError naming both sources and the fix', (t) => {
  const devRoot = emptyDir(t);
  const err = t.throws(() => readHostFacts({ ...roots('no-address-sizes'), devRoot, name: 'lxc' }), {
    instanceOf: HostFactsError,
  });
  t.is(err!.code, 'HOST_FACTS_UNAVAILABLE');
  t.regex(err!.message, /no "address sizes" line/);
  t.regex(err!.message, /cpu\/0\/cpuid: ENOENT/);
  t.regex(err!.message, /set host\.physBits in the config$/);
});

test('garbage-address-sizes: no width anywhere throws; the override rescues it; bad params are null', (t) => {
  const devRoot = emptyDir(t);
  t.throws(() => readHostFacts({ ...roots('garbage-address-sizes'), devRoot, name: 'x' }), {
    instanceOf: HostFactsError,
  });
  const facts = readHostFacts({ ...roots('garbage-address-sizes'), devRoot, name: 'x', physBitsOverride: 40 });
  t.like(facts, {
    physBits: 40,
    physBitsSource: 'config',
    vendor: 'GenuineIntel',
    cpuinfoPhysBits: null,
    cpuinfoVirtBits: null,
    kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: null, ept: null, npt: null },
  });
  const param = join(HOSTS, 'garbage-address-sizes', 'sys', 'module', 'kvm_intel', 'parameters');
  t.deepEqual(facts.notes, [
    `${join(HOSTS, 'garbage-address-sizes', 'proc', 'cpuinfo')}: no "address sizes" line`,
    `${join(devRoot, 'cpu', '0', 'cpuid')}: ENOENT`,
    `${join(param, 'allow_smaller_maxphyaddr')}: ENOENT`,
    `${join(param, 'ept')}: not a boolean`,
  ]);
});

test('override: replaces the effective width only; detected widths stay', (t) => {
  const devRoot = cpuidDevRoot(t, fixtureLeaves('intel-46'));
  const facts = readHostFacts({ ...roots('intel-46'), devRoot, name: 'hv1', physBitsOverride: 39 });
  t.like(facts, { physBits: 39, physBitsSource: 'config', cpuinfoPhysBits: 46, cpuidPhysBits: 46 });
  t.is(facts.sources.physBits, 'config');
});

test('empty roots: error without override, all-unknown facts with it', (t) => {
  const dir = emptyDir(t);
  const opts = { procRoot: dir, sysRoot: dir, devRoot: dir, name: 'bare' };
  t.throws(() => readHostFacts(opts), { instanceOf: HostFactsError, message: /cpuinfo: ENOENT/ });
  const facts = readHostFacts({ ...opts, physBitsOverride: 52 });
  t.like(facts, {
    physBits: 52,
    physBitsSource: 'config',
    vendor: 'unknown',
    cpuinfoPhysBits: null,
    cpuidPhysBits: null,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    kvm: { module: null },
  });
  t.is(facts.sources.flags, 'unknown');
});

test('an override outside 1..64 is refused', (t) => {
  t.throws(() => readHostFacts({ ...roots('intel-46'), name: 'x', physBitsOverride: 65 }), {
    instanceOf: HostFactsError,
    message: /1 to 64, got 65/,
  });
  t.throws(() => readHostFacts({ ...roots('intel-46'), name: 'x', physBitsOverride: 40.5 }), {
    instanceOf: HostFactsError,
  });
});

test('a cpuid file too short for the extended leaves: width unavailable, noted', (t) => {
  const devRoot = cpuidDevRoot(t, { '0x0': ['0x16', '0x756e6547', '0x6c65746e', '0x49656e69'] });
  const facts = readHostFacts({ ...roots('intel-46'), devRoot, name: 'x' });
  t.is(facts.cpuidPhysBits, null);
  t.deepEqual(facts.notes, [`${join(devRoot, 'cpu', '0', 'cpuid')}: leaf 0x80000008 not available`]);
  t.is(readCpuid(devRoot).vendor, 'GenuineIntel');
});

test('subleaf reads use a position above 2^32', (t) => {
  const devRoot = cpuidDevRoot(t, { '0x7.1': ['0x11', '0x22', '0x33', '0x44'], '0x7': ['0x1', '0x2', '0x3', '0x4'] });
  const fd = openSync(join(devRoot, 'cpu', '0', 'cpuid'), 'r');
  t.teardown(() => closeSync(fd));
  t.deepEqual(readCpuidLeaf(fd, 0x7, 1), { eax: 0x11, ebx: 0x22, ecx: 0x33, edx: 0x44 });
  t.deepEqual(readCpuidLeaf(fd, 0x7, 0), { eax: 0x1, ebx: 0x2, ecx: 0x3, edx: 0x4 });
  t.is(readCpuidLeaf(fd, 0x7, 2), null);
});

function cpuidReadable(): boolean {
  try {
    accessSync('/dev/cpu/0/cpuid', constants.R_OK);
    closeSync(openSync('/dev/cpu/0/cpuid', 'r'));
    return true;
  } catch {
    return false;
  }
}

const realCpuid = cpuidReadable();
const realTest = realCpuid ? test : test.skip;
if (!realCpuid)
  console.log('skipping real-device tests: /dev/cpu/0/cpuid is not readable (needs root and the cpuid module)');

realTest('this machine: the real cpuid device reads through the same code', (t) => {
  const facts = readHostFacts({ name: 'self' });
  t.true(Number.isInteger(facts.cpuidPhysBits) && facts.cpuidPhysBits! >= 32 && facts.cpuidPhysBits! <= 52);
  if (facts.cpuinfoPhysBits !== null) t.true(facts.cpuinfoPhysBits <= facts.cpuidPhysBits!);
  t.is(facts.sources.cpuidPhysBits, 'cpuid');
  t.not(facts.vendor, 'unknown');
});

/** A few QMP commands in sequence on a fresh connection; returns each command's `return`. */
function qmp(socket: string, commands: Array<{ execute: string; arguments?: object }>): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const sock = connect(socket);
    const results: unknown[] = [];
    let buf = '';
    let sent = 0;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('qmp timeout'));
    }, 20000);
    const next = () => {
      if (sent === commands.length) {
        clearTimeout(timer);
        sock.end();
        resolve(results.slice(1));
        return;
      }
      sock.write(JSON.stringify(commands[sent++]) + '\n');
    };
    sock.on('error', reject);
    sock.on('data', (d) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (msg.QMP) {
          commands.unshift({ execute: 'qmp_capabilities' });
          next();
        } else if ('return' in msg) {
          results.push(msg.return);
          next();
        } else if (msg.error) {
          clearTimeout(timer);
          sock.destroy();
          reject(new Error(msg.error.desc));
        }
      }
    });
  });
}

const realKvm = realCpuid && kvmUsable();
const kvmTest = realKvm ? test : test.skip;
if (!realKvm) console.log('skipping the QEMU host-phys-bits test: needs /dev/kvm and a readable /dev/cpu/0/cpuid');

kvmTest('QEMU under KVM sizes host-phys-bits=on guests from the raw CPUID width read here', async (t) => {
  const guest = await startGuest({ accel: 'kvm', cpu: 'host-phys-bits=on', name: 'hpb' });
  t.teardown(() => guest.kill());
  const [cpus] = await qmp(guest.socket, [{ execute: 'query-cpus-fast' }]);
  const path = (cpus as Array<{ 'qom-path': string }>)[0]['qom-path'];
  const [bits] = await qmp(guest.socket, [{ execute: 'qom-get', arguments: { path, property: 'phys-bits' } }]);
  t.is(bits, readHostFacts({ name: 'self' }).cpuidPhysBits);
});

/** Every fixture host tree, read as the daemon reads it, and the limit it gives. */
const TREES: Array<{
  name: string;
  physBits: number;
  source: HostSource;
  cpuinfo: number;
  cpuid: number;
  note?: RegExp;
}> = [
  { name: 'amd-sme-48', physBits: 48, source: 'cpuid', cpuinfo: 43, cpuid: 48 },
  { name: 'amd-52-la57', physBits: 52, source: 'cpuid', cpuinfo: 52, cpuid: 52 },
  { name: 'amd-52-4level', physBits: 48, source: 'tdp-levels', cpuinfo: 52, cpuid: 52 },
  { name: 'intel-52-ept5', physBits: 52, source: 'cpuid', cpuinfo: 46, cpuid: 52 },
  { name: 'intel-52-ept4', physBits: 48, source: 'tdp-levels', cpuinfo: 46, cpuid: 52 },
  // Linux 6.1: no ept_5level flag yet, and no msr device in the tree: the depth is not known.
  { name: 'intel-52-linux61', physBits: 48, source: 'tdp-levels', cpuinfo: 46, cpuid: 52 },
  { name: 'intel-46', physBits: 46, source: 'cpuid', cpuinfo: 46, cpuid: 46 },
  { name: 'nested-l1', physBits: 46, source: 'cpuid', cpuinfo: 46, cpuid: 46, note: /this host is itself a guest/ },
];

for (const tree of TREES) {
  test(`fixture tree ${tree.name}: limit ${tree.physBits} (${tree.source})`, (t) => {
    const facts = readHostFacts({ ...hostTree(t, tree.name), name: tree.name });
    t.is(facts.physBits, tree.physBits, facts.reasoning.join('; '));
    t.is(facts.physBitsSource, tree.source);
    t.is(facts.cpuinfoPhysBits, tree.cpuinfo);
    t.is(facts.cpuidPhysBits, tree.cpuid);
    t.deepEqual(facts.limit.problems, []);
    t.is(facts.limit.nestedPaging, true);
    if (tree.note) t.regex(facts.limit.notes.join(' '), tree.note);
    else t.deepEqual(facts.limit.notes, []);
  });
}

test('fixture tree with an unreadable npt parameter: a problem named, the conservative width', (t) => {
  const roots = hostTree(t, 'amd-sme-48');
  const sys = tempDir('physbits-sys-');
  t.teardown(() => rmSync(sys, { recursive: true, force: true }));
  mkdirSync(join(sys, 'module', 'kvm_amd', 'parameters'), { recursive: true });
  const facts = readHostFacts({ ...roots, sysRoot: sys, name: 'epyc' });
  t.is(facts.physBits, 43);
  t.deepEqual(facts.limit.problems, ['kvm_amd is loaded but its npt parameter could not be read']);
  const overridden = readHostFacts({ ...roots, sysRoot: sys, name: 'epyc', physBitsOverride: 48 });
  t.is(overridden.physBits, 48);
  t.is(overridden.physBitsSource, 'config');
});

test('Intel before Linux 6.9: the EPT depth from IA32_VMX_EPT_VPID_CAP through /dev/cpu/0/msr, else not known', (t) => {
  const roots = hostTree(t, 'intel-52-linux61');
  const unknown = readHostFacts({ ...roots, name: 'spr' });
  t.is(unknown.physBits, 48);
  t.is(unknown.limit.tdpLevels, null);
  t.is(unknown.limit.upperPhysBits, 52);
  t.is(unknown.paging.kernelRelease, '6.1.0-28-amd64');
  t.is(unknown.paging.eptMsr5Level, null);
  t.regex(
    unknown.reasoning.join(' '),
    /Linux 6\.1\.0-28-amd64 predates the ept_5level flag and \/dev\/cpu\/0\/msr could not be read .* not known/,
  );
  t.notRegex(unknown.reasoning.join(' '), /4-level EPT only/);
  // Bit 7 set: 5-level EPT, all 52 bits.
  writeMsrDevice(roots.devRoot, MSR_IA32_VMX_EPT_VPID_CAP, 0x0f0106734141n | (1n << 7n));
  const five = readHostFacts({ ...roots, name: 'spr' });
  t.is(five.physBits, 52);
  t.is(five.limit.tdpLevels, 5);
  t.is(five.limit.upperPhysBits, undefined);
  t.regex(five.reasoning.join(' '), /IA32_VMX_EPT_VPID_CAP bit 7/);
  // Bit 7 clear: 4 levels, known.
  writeMsrDevice(roots.devRoot, MSR_IA32_VMX_EPT_VPID_CAP, 0x0f0106734141n & ~(1n << 7n));
  const four = readHostFacts({ ...roots, name: 'spr' });
  t.is(four.physBits, 48);
  t.is(four.limit.tdpLevels, 4);
  t.regex(four.reasoning.join(' '), /4-level EPT only \(IA32_VMX_EPT_VPID_CAP bit 7 clear/);
  // Linux 6.9+ without the flag: 4 levels (the 6.12 fixture), the msr not needed.
  const newer = readHostFacts({ ...hostTree(t, 'intel-52-ept4'), name: 'spr' });
  t.is(newer.limit.tdpLevels, 4);
  t.regex(newer.reasoning.join(' '), /no ept_5level in "vmx flags", which Linux 6\.12\.12-amd64 shows/);
});
