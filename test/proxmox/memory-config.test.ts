import test from 'ava';
import {
  currentMemoryMiB,
  dimmsFor,
  hotplugFeatures,
  layoutFor,
  maxMemMiB,
  planMemory,
} from '../../agent/proxmox/memory-config';

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const noCpu = { cputype: null, physBits: null } as const;

test('memory: N and current=N, default 512 MiB', (t) => {
  t.is(currentMemoryMiB(undefined), 512);
  t.is(currentMemoryMiB('2048'), 2048);
  t.is(currentMemoryMiB('current=4096'), 4096);
  t.is(t.throws(() => currentMemoryMiB('lots'))!.message, "memory: 'lots' is not a whole number");
});

test("hotplug: '1' is network,disk,usb, '0' is none, anything else a list", (t) => {
  t.deepEqual([...hotplugFeatures(undefined)], ['network', 'disk', 'usb']);
  t.deepEqual([...hotplugFeatures('0')], []);
  t.true(hotplugFeatures('disk,memory').has('memory'));
  t.is(t.throws(() => hotplugFeatures('disk,ram'))!.message, "hotplug: invalid feature 'ram'");
});

test('get_max_mem: the width, rounded down to even, gives half the address space, at most 4 TiB', (t) => {
  // kvm64 / named models: the smaller of cpuinfo's width and 40.
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: 46, cpu: noCpu }), { mib: 512 * 1024, bits: 40 });
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: 39, cpu: noCpu }), { mib: 128 * 1024, bits: 39 });
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: null, cpu: noCpu }), { mib: 32 * 1024, bits: 36 });
  // cpu: host / max: cpuinfo's width; 46 → 44 → 8 TiB, capped at 4 TiB.
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: 46, cpu: { cputype: 'host', physBits: null } }), {
    mib: 4 * 1024 * 1024,
    bits: 46,
  });
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: 48, cpu: { cputype: 'kvm64', physBits: 42 } }), {
    mib: 2 * 1024 * 1024,
    bits: 42,
  });
  t.deepEqual(maxMemMiB({ cpuinfoPhysBits: 43, cpu: { cputype: 'kvm64', physBits: 'host' } }), {
    mib: 2 * 1024 * 1024,
    bits: 43,
  });
});

test("qemu-server's own memory-hotplug cfg2cmd test: the same -m, NUMA nodes and 72 DIMMs", (t) => {
  // src/test/cfg2cmd/memory-hotplug.conf(.cmd), with get_host_phys_address_bits mocked to 46.
  const plan = planMemory({
    conf: { memory: '66560', numa: '1', hotplug: 'memory', sockets: '2', cores: '2' },
    cpuinfoPhysBits: 46,
    cpu: noCpu,
    sockets: 2,
    cores: 2,
  });
  t.is(plan.mArg, 'size=1024,slots=255,maxmem=524288M');
  t.deepEqual(plan.numaNodes, [
    { id: 0, cpus: '0-1', sizeMiB: 512 },
    { id: 1, cpus: '2-3', sizeMiB: 512 },
  ]);
  t.is(plan.dimms.length, 72);
  t.deepEqual(plan.dimms[0], { id: 'dimm0', sizeMiB: 512, node: 0 });
  t.deepEqual(plan.dimms[33], { id: 'dimm33', sizeMiB: 1024, node: 1 });
  t.deepEqual(plan.dimms[71], { id: 'dimm71', sizeMiB: 2048, node: 1 });
  t.is(
    plan.dimms.reduce((sum, d) => sum + d.sizeMiB, 0),
    66560 - 1024,
  );
});

test('foreach_dimm refuses a size that is not a whole number of DIMMs', (t) => {
  t.is(
    t.throws(() => dimmsFor(1024 + 700, 1024, null, [0]))!.message,
    'memory size (1724) must be aligned to 512 for hotplugging',
  );
  t.deepEqual(
    dimmsFor(3072, 1024, '1024', [0, 1]).map((d) => d.sizeMiB),
    [1024, 1024],
  );
});

test('settings qemu-server refuses to start with are refused here too', (t) => {
  const base = { cpuinfoPhysBits: 46, cpu: noCpu, sockets: 1, cores: 1 };
  const cases: [Record<string, string>, string][] = [
    [
      { memory: '4096', hotplug: 'memory' },
      'NUMA needs to be enabled for memory hotplug (qemu-server refuses to start it)',
    ],
    [{ memory: '512', hotplug: 'memory', numa: '1' }, 'minimum memory must be 1024 MiB with memory hotplug'],
    [{ memory: '600000', hotplug: 'memory', numa: '1' }, 'total memory 600000 MiB is bigger than 524288 MiB'],
    [
      { memory: '2048', numa: '1', numa0: 'cpus=0,memory=1024' },
      'total memory of the NUMA nodes (1024 MiB) must equal the static memory (2048 MiB)',
    ],
    [{ memory: '2048', hugepages: '2' }, 'numa needs to be enabled to use hugepages'],
  ];
  for (const [conf, message] of cases) t.is(t.throws(() => planMemory({ ...base, conf }))!.message, message);
});

test('layout: DIMMs sit one after another from the device-memory base', (t) => {
  const plan = planMemory({
    conf: { memory: '3072', hotplug: 'memory', numa: '1', sockets: '2' },
    cpuinfoPhysBits: 48,
    cpu: { cputype: 'x86-64-v2-AES', physBits: 39 },
    sockets: 2,
    cores: 1,
  });
  t.is(plan.maxMemMiB, 128 * 1024);
  const layout = layoutFor(plan, { family: 'q35', physBits: 39 });
  t.deepEqual(layout.deviceMemory, { base: 4 * GiB, size: 127 * GiB + 255 * GiB });
  t.deepEqual(
    layout.memoryDevices.map((d) => [d.id, (d.addr - 4 * GiB) / MiB, d.size / MiB]),
    [
      ['dimm0', 0, 512],
      ['dimm1', 512, 512],
      ['dimm2', 1024, 512],
      ['dimm3', 1536, 512],
    ],
  );
  t.is(layout.usedEnd, 6 * GiB);
  // The 64-bit PCI hole follows device memory: 4 + 382 GiB, then 32 GiB.
  t.is(layout.highestAddress, 418 * GiB);
});
