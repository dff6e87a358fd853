import test from 'ava';
import {
  bitsToAddress,
  computeLayout,
  estimatePcLayout,
  splitRam,
  type LayoutInputs,
  type PcLayoutInput,
} from '../../agent/facts/guest-layout';
import { parseMachineType, parseVersion, qemuVersionString } from '../../agent/facts/qemu-version';

const M = 2 ** 20;
const G = 2 ** 30;
const AMD = 'AuthenticAMD';
const INTEL = 'GenuineIntel';

interface Observed {
  below: number;
  above: number;
  dm: { base: number; size: number } | null;
  hole: { start: number; end: number };
}

// Observed on QEMU 7.2 under TCG, paused before firmware: host bridge below/above-4g-mem-size
// (q35 only), /machine/device-memory[0] addr, /machine device-memory-region-size, pci-hole64-start/end.
const table: Array<[string, PcLayoutInput, Observed]> = [
  [
    'q35 64M,slots=4,maxmem=1G qemu64',
    { machine: 'q35', ramBytes: 64 * M, maxRamBytes: G, slots: 4, vendor: AMD },
    { below: 64 * M, above: 0, dm: { base: 4 * G, size: 0x13c000000 }, hole: { start: 0x240000000, end: 0xa40000000 } },
  ],
  [
    'q35 2815M',
    { machine: 'q35', ramBytes: 2815 * M, maxRamBytes: 0, slots: 0, vendor: AMD },
    { below: 0xaff00000, above: 0, dm: null, hole: { start: 0x100000000, end: 0x900000000 } },
  ],
  [
    'q35 2816M',
    { machine: 'q35', ramBytes: 2816 * M, maxRamBytes: 0, slots: 0, vendor: AMD },
    { below: 0x80000000, above: 0x30000000, dm: null, hole: { start: 0x140000000, end: 0x940000000 } },
  ],
  [
    'q35 3G,slots=2,maxmem=5G',
    { machine: 'q35', ramBytes: 3 * G, maxRamBytes: 5 * G, slots: 2, vendor: AMD },
    { below: 2 * G, above: G, dm: { base: 5 * G, size: 4 * G }, hole: { start: 0x240000000, end: 0xa40000000 } },
  ],
  [
    'q35,max-ram-below-4g=1G 2G',
    { machine: 'q35', ramBytes: 2 * G, maxRamBytes: 0, slots: 0, maxRamBelow4g: G },
    { below: G, above: G, dm: null, hole: { start: 0x140000000, end: 0x940000000 } },
  ],
  [
    'q35 64M,slots=1,maxmem=1000G qemu64 (AMD: moved to 1 TiB)',
    { machine: 'q35', ramBytes: 64 * M, maxRamBytes: 1000 * G, slots: 1, vendor: AMD, physBits: 48 },
    {
      below: 64 * M,
      above: 0,
      dm: { base: 2 ** 40, size: 1074748456960 },
      hole: { start: 0x1fa40000000, end: 0x20240000000 },
    },
  ],
  [
    'q35 64M,slots=1,maxmem=1000G Skylake-Client (Intel: stays at 4 GiB)',
    { machine: 'q35', ramBytes: 64 * M, maxRamBytes: 1000 * G, slots: 1, vendor: INTEL, physBits: 48 },
    {
      below: 64 * M,
      above: 0,
      dm: { base: 4 * G, size: 1074748456960 },
      hole: { start: 0xfb40000000, end: 0x10340000000 },
    },
  ],
  [
    'pc-q35-7.0 64M,slots=1,maxmem=1000G qemu64 (before enforce_amd_1tb_hole)',
    {
      machine: 'q35',
      ramBytes: 64 * M,
      maxRamBytes: 1000 * G,
      slots: 1,
      vendor: AMD,
      physBits: 48,
      machineVersion: '7.0',
    },
    {
      below: 64 * M,
      above: 0,
      dm: { base: 4 * G, size: 1074748456960 },
      hole: { start: 0xfb40000000, end: 0x10340000000 },
    },
  ],
  [
    'q35 64M,slots=1,maxmem=900G qemu64 (below the HT hole)',
    { machine: 'q35', ramBytes: 64 * M, maxRamBytes: 900 * G, slots: 1, vendor: AMD, physBits: 48 },
    {
      below: 64 * M,
      above: 0,
      dm: { base: 4 * G, size: 967374274560 },
      hole: { start: 0xe240000000, end: 0xea40000000 },
    },
  ],
  [
    'pc 64M,slots=2,maxmem=2G',
    { machine: 'pc', ramBytes: 64 * M, maxRamBytes: 2 * G, slots: 2, vendor: AMD },
    { below: 64 * M, above: 0, dm: { base: 4 * G, size: 4227858432 }, hole: { start: 0x200000000, end: 0x280000000 } },
  ],
  [
    'pc 64M',
    { machine: 'pc', ramBytes: 64 * M, maxRamBytes: 64 * M, slots: 0 },
    { below: 64 * M, above: 0, dm: null, hole: { start: 0x100000000, end: 0x180000000 } },
  ],
  [
    'pc 3583M',
    { machine: 'pc', ramBytes: 3583 * M, maxRamBytes: 0, slots: 0 },
    { below: 3583 * M, above: 0, dm: null, hole: { start: 0x100000000, end: 0x180000000 } },
  ],
  [
    'pc 3584M',
    { machine: 'pc', ramBytes: 3584 * M, maxRamBytes: 0, slots: 0 },
    { below: 3 * G, above: 512 * M, dm: null, hole: { start: 0x140000000, end: 0x1c0000000 } },
  ],
  [
    'pc 4G',
    { machine: 'pc', ramBytes: 4 * G, maxRamBytes: 0, slots: 0 },
    { below: 3 * G, above: G, dm: null, hole: { start: 0x140000000, end: 0x1c0000000 } },
  ],
  [
    'pc,max-ram-below-4g=1G 2G',
    { machine: 'pc', ramBytes: 2 * G, maxRamBytes: 0, slots: 0, maxRamBelow4g: G },
    { below: G, above: G, dm: null, hole: { start: 0x140000000, end: 0x1c0000000 } },
  ],
];

for (const [title, input, want] of table) {
  test(`estimatePcLayout matches QEMU 7.2: ${title}`, (t) => {
    const got = estimatePcLayout(input);
    t.is(got.ramBelow4g, want.below);
    t.is(got.ramAbove4g, want.above);
    t.deepEqual(got.deviceMemory, want.dm);
    t.deepEqual(got.pciHole64, want.hole);
    t.is(got.highestAddress, want.hole.end);
    t.is(got.maxUsedGpa, want.hole.end - 1);
  });
}

test('pc-i440fx-2.1: device memory without the per-slot GiB', (t) => {
  const got = estimatePcLayout({
    machine: 'pc',
    ramBytes: 64 * M,
    maxRamBytes: 2 * G,
    slots: 2,
    machineVersion: '2.1',
  });
  t.deepEqual(got.deviceMemory, { base: 4 * G, size: 2080374784 });
});

test('minPhysBits is the width QEMU demands ("phys-bits too low" below it)', (t) => {
  // QEMU 7.2: "Address space limit 0x1ffffffffff < 0x2023fffffff phys-bits too low (41)".
  const big = estimatePcLayout({
    machine: 'q35',
    ramBytes: 64 * M,
    maxRamBytes: 1000 * G,
    slots: 1,
    vendor: AMD,
    physBits: 48,
  });
  t.is(big.maxUsedGpa, 0x2023fffffff);
  t.is(big.minPhysBits, 42);
  t.is(big.above4gStart, 2 ** 40);
  const small = estimatePcLayout({ machine: 'q35', ramBytes: 64 * M, maxRamBytes: 0, slots: 0 });
  t.is(small.minPhysBits, 36);
  t.is(small.above4gStart, 4 * G);
});

test('splitRam boundaries', (t) => {
  t.deepEqual(splitRam('q35', 0xb0000000 - 1), { below: 0xb0000000 - 1, above: 0 });
  t.deepEqual(splitRam('q35', 0xb0000000), { below: 0x80000000, above: 0x30000000 });
  t.deepEqual(splitRam('pc', 0xe0000000 - 1), { below: 0xe0000000 - 1, above: 0 });
  t.deepEqual(splitRam('pc', 0xe0000000), { below: 0xc0000000, above: 0x20000000 });
  t.deepEqual(splitRam('pc', 4 * G, { version: { major: 1, minor: 7 } }), { below: 0xe0000000, above: 0x20000000 });
});

test('bitsToAddress', (t) => {
  t.is(bitsToAddress(0), 0);
  t.is(bitsToAddress(1), 1);
  t.is(bitsToAddress(2 ** 39 - 1), 39);
  t.is(bitsToAddress(2 ** 39), 40);
});

const q35Reported: LayoutInputs = {
  machineType: 'pc-q35-7.2-machine',
  vendor: AMD,
  physBits: 46,
  ramSize: 64 * M,
  maxRamBelow4g: 0xe0000000,
  ramBelow4g: 64 * M,
  ramAbove4g: 0,
  deviceMemoryBase: 4 * G,
  deviceMemorySize: 0x13c000000,
  pciHole64Start: 0x240000000,
  pciHole64End: 0xa40000000,
  pciHole64Size: 32 * G,
  memoryDevices: [
    { type: 'dimm', id: 'd1', addr: 0x100000000, size: 128 * M },
    { type: 'dimm', id: 'd2', addr: 0x108000000, size: 64 * M },
  ],
};

test('computeLayout from reported q35 values', (t) => {
  t.deepEqual(computeLayout(q35Reported), {
    ramBelow4g: 64 * M,
    ramAbove4g: 0,
    deviceMemory: { base: 4 * G, size: 0x13c000000 },
    memoryDevices: q35Reported.memoryDevices,
    pciHole64: { start: 0x240000000, end: 0xa40000000 },
    highestAddress: 0xa40000000,
    usedEnd: 0x10c000000,
  });
});

test('computeLayout on i440fx 7.2 (no below/above properties): split from base-memory', (t) => {
  const got = computeLayout({
    ...q35Reported,
    machineType: 'pc-i440fx-7.2-machine',
    ramSize: 4 * G,
    ramBelow4g: null,
    ramAbove4g: null,
    deviceMemoryBase: null,
    deviceMemorySize: 0,
    pciHole64Start: 0x140000000,
    pciHole64End: 0x1c0000000,
    memoryDevices: [],
  });
  t.deepEqual(got, {
    ramBelow4g: 3 * G,
    ramAbove4g: G,
    deviceMemory: null,
    memoryDevices: [],
    pciHole64: { start: 0x140000000, end: 0x1c0000000 },
    highestAddress: 0x1c0000000,
    usedEnd: 5 * G,
  });
});

test('computeLayout: reported 1 TiB device memory moves above-4G RAM with it; zero hole is no hole', (t) => {
  const got = computeLayout({
    ...q35Reported,
    ramSize: 4 * G,
    ramBelow4g: 2 * G,
    ramAbove4g: 2 * G,
    deviceMemoryBase: 2 ** 40 + 2 * G,
    deviceMemorySize: 1000 * G,
    pciHole64Start: 0,
    pciHole64End: 0,
    memoryDevices: [],
  });
  t.deepEqual(got?.deviceMemory, { base: 2 ** 40 + 2 * G, size: 1000 * G });
  t.is(got?.pciHole64, null);
  t.is(got?.usedEnd, 2 ** 40 + 2 * G);
  t.is(got?.highestAddress, 2 ** 40 + 1002 * G);
});

test('computeLayout: null without any RAM facts; unknown machine types still use reported values', (t) => {
  t.is(computeLayout({ ...q35Reported, machineType: 'virt', ramBelow4g: null, ramAbove4g: null }), null);
  t.is(computeLayout({ ...q35Reported, machineType: null, ramBelow4g: null }), null);
  t.is(computeLayout({ ...q35Reported, machineType: 'pc-q35-rhel9.2.0-machine' })?.highestAddress, 0xa40000000);
});

test('machine type and version parsing', (t) => {
  t.deepEqual(parseMachineType('pc-q35-7.2-machine'), { family: 'q35', version: { major: 7, minor: 2 } });
  t.deepEqual(parseMachineType('pc-i440fx-2.1'), { family: 'pc', version: { major: 2, minor: 1 } });
  t.deepEqual(parseMachineType('pc-1.3'), { family: 'pc', version: { major: 1, minor: 3 } });
  t.deepEqual(parseMachineType('pc-q35-rhel9.2.0'), { family: 'q35', version: null });
  t.deepEqual(parseMachineType('q35'), { family: 'q35', version: null });
  t.deepEqual(parseMachineType('microvm-machine'), { family: 'microvm', version: null });
  t.deepEqual(parseMachineType('virt-7.2'), { family: 'other', version: null });
  t.is(qemuVersionString({ qemu: { major: 7, minor: 2, micro: 22 }, package: 'Debian' }), '7.2.22');
  t.is(qemuVersionString({ qemu: { major: 7 } }), null);
  t.deepEqual(parseVersion('9.1.0 (v9.1.0)'), { major: 9, minor: 1, micro: 0 });
});
