import test from 'ava';
import {
  addressHint,
  backendAlignment,
  deviceAlignment,
  memoryDeviceSize,
  numberArg,
  parseHugePageSize,
  predictPlacement,
  readDefaultHugePageSize,
  resolveDeviceSize,
  resolveMemoryDevice,
  sizeArg,
} from '../../agent/facts/memory-placement';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '../../qmp/client';
import { QEMUS, startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';
import { parseMemoryDevices, type QmpExecutor } from '../../agent/facts/guest-facts';
import { parseHmpCommandLine } from '../../agent/guard/hmp-command';

const M = 2 ** 20;
const G = 2 ** 30;

// Every expectation below was observed on QEMU 7.2 (TCG, q35 unless said) with
// object-add + device_add and then query-memory-devices.

// -m 64M,slots=4,maxmem=1G: device memory [4 GiB, +0x13c000000).
const DM4 = { base: 4 * G, size: 0x13c000000 };

test('first fit, in order: RAM 128M, RAM 64M, file 3M (4 KiB align), RAM 2M (2 MiB align)', (t) => {
  const existing: Array<{ addr: number; size: number }> = [];
  const plug = (size: number, align: number) => {
    const r = predictPlacement({ deviceMemory: DM4, existing, size, align });
    if ('addr' in r) existing.push({ addr: r.addr, size });
    return r;
  };
  t.deepEqual(plug(128 * M, 2 * M), { addr: 0x100000000 });
  t.deepEqual(plug(64 * M, 2 * M), { addr: 0x108000000 });
  t.deepEqual(plug(3 * M, 4096), { addr: 0x10c000000 });
  t.deepEqual(plug(2 * M, 2 * M), { addr: 0x10c400000 });
});

test("a 3 MiB RAM backend is refused with QEMU's message", (t) => {
  t.deepEqual(predictPlacement({ deviceMemory: DM4, existing: [], size: 3 * M, align: 2 * M }), {
    code: 'PLACEMENT_MISALIGNED_SIZE',
    error: 'backend memory size must be multiple of 0x200000',
  });
});

// -m 64M,slots=8,maxmem=1G: device memory [4 GiB, +0x23c000000), capacity 960 MiB.
const DM8 = { base: 4 * G, size: 0x23c000000 };
const d1 = { id: 'd1', addr: 0x110000000, size: 64 * M };

test('hinted device first, then first fit fills the gaps before it and continues after it', (t) => {
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing: [], size: 64 * M, hint: 0x110000000 }), {
    addr: 0x110000000,
  });
  const d2 = { id: 'd2', addr: 0x100000000, size: 128 * M };
  const d3 = { id: 'd3', addr: 0x108000000, size: 128 * M };
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing: [d1], size: 128 * M }), { addr: d2.addr });
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing: [d1, d2], size: 128 * M }), { addr: d3.addr });
  // Unsorted input: QEMU sorts by address.
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing: [d3, d1, d2], size: 64 * M }), { addr: 0x114000000 });
});

test("hint errors carry QEMU's messages", (t) => {
  const existing = [d1, { id: 'd4', addr: 0x114000000, size: 64 * M }];
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 64 * M, hint: 0x112c00000 }), {
    code: 'PLACEMENT_CONFLICT',
    error: "address range conflicts with memory device id='d1'",
  });
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 64 * M, hint: 0x100100000 }), {
    code: 'PLACEMENT_MISALIGNED_ADDR',
    error: 'address must be aligned to 0x200000 bytes',
  });
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 64 * M, hint: 0xc0000000 }), {
    code: 'PLACEMENT_OUT_OF_RANGE',
    error: "can't add memory device [0xc0000000:0x4000000], usable range for memory devices [0x100000000:0x23c000000]",
  });
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 64 * M, hint: 0x23a000000 }), {
    addr: 0x23a000000,
  });
});

test('capacity: maxmem - mem bounds the sum of device sizes', (t) => {
  const existing = [
    { addr: 0x100000000, size: 128 * M },
    { addr: 0x108000000, size: 128 * M },
    { addr: 0x110000000, size: 64 * M },
    { addr: 0x114000000, size: 64 * M },
    { addr: 0x23a000000, size: 64 * M },
  ];
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 900 * M, capacity: 960 * M }), {
    code: 'PLACEMENT_NO_SPACE',
    error: 'not enough space, currently 0x1c000000 in use of total space for memory devices 0x3c000000',
  });
  t.deepEqual(predictPlacement({ deviceMemory: DM8, existing, size: 512 * M, capacity: 960 * M }), {
    addr: 0x118000000,
  });
});

test('no device memory, and a device that no longer fits after alignment', (t) => {
  t.is(
    (predictPlacement({ deviceMemory: { base: 0, size: 0 }, existing: [], size: 2 * M }) as { code: string }).code,
    'PLACEMENT_NO_DEVICE_MEMORY',
  );
  const dm = { base: 4 * G, size: 1 * G };
  const r = predictPlacement({ deviceMemory: dm, existing: [{ addr: 4 * G, size: 2 * M }], size: 1 * G, align: 2 * M });
  t.deepEqual(r, {
    code: 'PLACEMENT_FRAGMENTED',
    error: 'could not find position in guest address space for memory device - memory fragmented due to alignments',
  });
});

test('pc-i440fx-2.1: 4 KiB legacy alignment, device memory without the per-slot GiB', (t) => {
  const dm = { base: 4 * G, size: 2080374784 };
  t.deepEqual(predictPlacement({ deviceMemory: dm, existing: [], size: 3 * M, align: 4096 }), { addr: 0x100000000 });
  t.deepEqual(
    predictPlacement({ deviceMemory: dm, existing: [{ addr: 4 * G, size: 3 * M }], size: 4 * M, align: 4096 }),
    {
      addr: 0x100300000,
    },
  );
  t.is(deviceAlignment('pc-dimm', { type: 'memory-backend-ram' }, { legacyAlign: true }), 4096);
});

test('virtio-mem: block-size alignment, region = max-size (q35, 64M,slots=4,maxmem=4G, two root ports)', (t) => {
  const dm = { base: 4 * G, size: 0x1fc000000 };
  const dimm = { addr: 4 * G, size: 6 * M };
  const a1 = deviceAlignment('virtio-mem-pci', { type: 'memory-backend-ram' });
  t.is(a1, 2 * M);
  t.deepEqual(predictPlacement({ deviceMemory: dm, existing: [dimm], size: 512 * M, align: a1 }), { addr: 4301258752 });
  const a2 = deviceAlignment('virtio-mem-pci', { type: 'memory-backend-ram' }, { blockSize: 64 * M });
  t.is(a2, 64 * M);
  const vm1 = { addr: 4301258752, size: 512 * M };
  t.deepEqual(predictPlacement({ deviceMemory: dm, existing: [dimm, vm1], size: 256 * M, align: a2 }), {
    addr: 4898947072,
  });
});

test('backend alignment table', (t) => {
  t.is(backendAlignment({ type: 'memory-backend-ram' }), 2 * M);
  t.is(backendAlignment({ type: 'memory-backend-file' }), 4096);
  t.is(backendAlignment({ type: 'memory-backend-file', pageSize: G }), G);
  t.is(backendAlignment({ type: 'memory-backend-file', align: 2 * M }), 2 * M);
  t.is(backendAlignment({ type: 'memory-backend-memfd' }), 4096);
  t.is(backendAlignment({ type: 'memory-backend-memfd', pageSize: 2 * M }), 2 * M);
  t.is(deviceAlignment('nvdimm', { type: 'memory-backend-file', pageSize: 2 * M }), 2 * M);
  t.is(deviceAlignment('virtio-pmem-pci', { type: 'memory-backend-file' }), 4096);
});

test('memoryDeviceSize, hints and numeric arguments', (t) => {
  const memdevs = [
    { id: 'm1', size: 128 * M },
    { id: 'nv', size: 130 * M },
  ];
  t.is(memoryDeviceSize({ driver: 'pc-dimm', memdev: 'm1' }, memdevs), 128 * M);
  t.is(memoryDeviceSize({ driver: 'pc-dimm', memdev: '/objects/m1' }, memdevs), 128 * M);
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': 2 * M }, memdevs), 128 * M);
  t.is(memoryDeviceSize({ driver: 'pc-dimm', memdev: 'absent' }, memdevs), null);
  t.is(memoryDeviceSize({ driver: 'virtio-net-pci', memdev: 'm1' }, memdevs), null);
  t.is(addressHint({ driver: 'pc-dimm', addr: 0x110000000 }), 0x110000000);
  t.is(addressHint({ driver: 'virtio-mem-pci', memaddr: '0x110000000' }), 0x110000000);
  t.is(addressHint({ driver: 'pc-dimm', addr: 0 }), null);
  t.is(numberArg('12'), 12);
  t.is(numberArg('0x'), null);
  t.is(numberArg(-1), null);
  t.is(numberArg('1e9'), null);
});

/** Answers from a table; unknown commands fail like QEMU does. */
function scripted(answers: Record<string, unknown>): QmpExecutor & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      const key = command === 'qom-get' ? `qom-get ${args?.path} ${args?.property}` : command;
      calls.push(key);
      if (key in answers) return answers[key] as T;
      throw Object.assign(new Error(`${key}: GenericError: not found`), { errorClass: 'GenericError' });
    },
  };
}

test('resolveDeviceSize prefers query-memdev and falls back to the backend object', async (t) => {
  const q1 = scripted({ 'query-memdev': [{ id: 'm1', size: 128 * M }] });
  t.is(await resolveDeviceSize(q1, { driver: 'pc-dimm', memdev: 'm1' }), 128 * M);
  const q2 = scripted({ 'qom-get /objects/m2 size': 64 * M });
  t.is(await resolveDeviceSize(q2, { driver: 'pc-dimm', memdev: 'm2' }), 64 * M);
  t.deepEqual(q2.calls, ['query-memdev', 'qom-get /objects/m2 size']);
  t.is(await resolveDeviceSize(scripted({}), { driver: 'pc-dimm', memdev: 'm3' }), null);
  t.is(await resolveDeviceSize(scripted({}), { driver: 'virtio-net-pci' }), null);
});

test('resolveMemoryDevice reads the backend type and its page size', async (t) => {
  const q = scripted({
    'query-memdev': [{ id: 'h', size: 2 * G }],
    'qom-get /objects/h type': 'memory-backend-file',
    'qom-get /objects/h align': 0,
    'qom-get /objects/h mem-path': '/dev/hugepages1G/vm',
  });
  const r = await resolveMemoryDevice(
    q,
    { driver: 'pc-dimm', memdev: 'h', addr: 8 * G },
    { pageSizeOf: async () => G },
  );
  t.deepEqual(r, {
    size: 2 * G,
    align: G,
    hint: 8 * G,
    backend: { type: 'memory-backend-file', align: 0, pageSize: G },
  });
  const ram = scripted({
    'query-memdev': [{ id: 'r', size: 64 * M }],
    'qom-get /objects/r type': 'memory-backend-ram',
  });
  t.deepEqual(await resolveMemoryDevice(ram, { driver: 'virtio-mem-pci', memdev: 'r', 'block-size': 8 * M }), {
    size: 64 * M,
    align: 8 * M,
    hint: null,
    backend: { type: 'memory-backend-ram' },
  });
});

test('addressHint: pc-dimm and nvdimm use addr; virtio devices use memaddr (their addr is the PCI slot)', (t) => {
  t.is(addressHint({ driver: 'pc-dimm', addr: 0x140000000 }), 0x140000000);
  t.is(addressHint({ driver: 'nvdimm', addr: 0 }), null);
  t.is(addressHint({ driver: 'virtio-mem-pci', addr: '0x5', memaddr: 0x200000000 }), 0x200000000);
  t.is(addressHint({ driver: 'virtio-pmem-pci', addr: 4 }), null);
});

test('nvdimm: ALIGN_DOWN(size - label-size, backend alignment); label-size takes size suffixes', (t) => {
  const memdevs = [{ id: 'nv', size: 130 * M }];
  // 130 MiB - 128 KiB on a 2 MiB-aligned (RAM backend) region: 128 MiB, not 129.875 MiB.
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '128K' }, memdevs, 2 * M), 128 * M);
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '128K' }, memdevs, 4096), 130 * M - 128 * 1024);
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '1.5m' }, memdevs, 4096), 130 * M - 1.5 * M);
  t.is(
    memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '0x20000' }, memdevs, 4096),
    130 * M - 128 * 1024,
  );
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv' }, memdevs, 2 * M), 130 * M);
  // QEMU refuses a label that leaves nothing, and a size it cannot parse.
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '130M' }, memdevs, 4096), null);
  t.is(memoryDeviceSize({ driver: 'nvdimm', memdev: 'nv', 'label-size': '12 apples' }, memdevs, 4096), null);
  t.is(sizeArg('2G'), 2 * G);
  t.is(sizeArg('1.5'), null);
  t.is(sizeArg('0x1000'), 4096);
  t.is(sizeArg(' 64k '), 64 * 1024);
});

test('memfd hugetlbsize=0 is the host default huge page size (from /proc/meminfo)', async (t) => {
  t.is(parseHugePageSize('MemTotal:       16303400 kB\nHugepagesize:    1048576 kB\n'), G);
  t.is(parseHugePageSize('MemTotal: 1 kB\n'), null);
  const q = scripted({
    'query-memdev': [{ id: 'f', size: 4 * G }],
    'qom-get /objects/f type': 'memory-backend-memfd',
    'qom-get /objects/f hugetlb': true,
    'qom-get /objects/f hugetlbsize': 0,
  });
  const r = await resolveMemoryDevice(q, { driver: 'pc-dimm', memdev: 'f' }, { defaultHugePageSize: async () => G });
  t.is(r?.align, G);
  const proc = tempDir('physbits-meminfo-');
  t.teardown(() => rmSync(proc, { recursive: true, force: true }));
  writeFileSync(join(proc, 'meminfo'), 'Hugepagesize:       2048 kB\n');
  t.is(await readDefaultHugePageSize(proc), 2 * M);
  t.is(await readDefaultHugePageSize(join(proc, 'absent')), null);
});

test("a mem-path is measured in QEMU's mount namespace (/proc/<pid>/root)", async (t) => {
  const q = scripted({
    'query-memdev': [{ id: 'h', size: 2 * G }],
    'qom-get /objects/h type': 'memory-backend-file',
    'qom-get /objects/h align': 0,
    'qom-get /objects/h mem-path': '/dev/hugepages/vm',
  });
  const asked: string[] = [];
  const r = await resolveMemoryDevice(
    q,
    { driver: 'pc-dimm', memdev: 'h' },
    {
      qemuRoot: '/proc/4242/root',
      pageSizeOf: async (p) => {
        asked.push(p);
        return G;
      },
    },
  );
  t.deepEqual(asked, ['/proc/4242/root/dev/hugepages/vm']);
  t.is(r?.align, G);
});

for (const qemu of QEMUS) {
  test(`${qemu.label}: the nvdimm QEMU plugs has the size memoryDeviceSize predicts`, async (t) => {
    const guest = await startGuest({
      name: 'nv',
      memory: '64M,slots=2,maxmem=1G',
      extraArgs: ['-machine', 'nvdimm=on'],
      qemu,
    });
    t.teardown(() => guest.kill());
    const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    t.teardown(() => client.close());
    await client.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'nv', size: 130 * M });
    const args = { driver: 'nvdimm', id: 'n1', memdev: 'nv', 'label-size': '128K' };
    const predicted = (await resolveMemoryDevice(client, args))!.size;
    if (qemu.label.startsWith('QEMU 7.')) {
      await client.execute('device_add', args);
    } else {
      // QEMU 10.0 takes device_add's values as typed JSON only: a size written as a string is refused
      // (observed; 7.2 converts it like -device does).
      await t.throwsAsync(client.execute('device_add', args), { message: /'label-size' expects uint64/ });
      await client.execute('device_add', { ...args, 'label-size': 128 * 1024 });
    }
    const devices = await client.execute<Array<{ type: string; data: { size: number } }>>('query-memory-devices');
    t.is(devices[0].type, 'nvdimm');
    t.is(devices[0].data.size, predicted);
    t.is(predicted, 128 * M);
  });
}

for (const qemu of QEMUS) {
  test(`${qemu.label}: virtio-mem block-size with a unit ("1G") aligns the device where QEMU puts it`, async (t) => {
    const guest = await startGuest({
      name: 'vmem',
      memory: '128M,slots=2,maxmem=8G',
      extraArgs: ['-device', 'pcie-root-port,id=rp1,chassis=1,slot=1'],
      qemu,
    });
    t.teardown(() => guest.kill());
    const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    t.teardown(() => client.close());
    await client.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'small', size: 128 * M });
    await client.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'big', size: 2 * G, reserve: false });
    // A 128 MiB DIMM first, so that the next free address (4 GiB + 128 MiB) is not 1 GiB aligned.
    await client.execute('device_add', { driver: 'pc-dimm', id: 'd0', memdev: 'small' });
    const line = 'device_add virtio-mem-pci,id=vm1,memdev=big,bus=rp1,block-size=1G';
    const parsed = parseHmpCommandLine(line);
    if (parsed.kind !== 'device_add') return t.fail(line);
    const resolved = (await resolveMemoryDevice(client, parsed.args))!;
    t.is(resolved.align, G, 'block-size=1G read as 1 GiB');
    const devices = parseMemoryDevices(await client.execute('query-memory-devices'));
    const dm = { base: 4 * G, size: 8 * G - 128 * M + 2 * G };
    const predicted = predictPlacement({
      deviceMemory: dm,
      existing: devices,
      size: resolved.size,
      align: resolved.align,
    });
    t.is(await client.execute('human-monitor-command', { 'command-line': line }), '');
    const after = parseMemoryDevices(await client.execute('query-memory-devices'));
    const plugged = after.find((d) => d.id === 'vm1');
    t.truthy(plugged, JSON.stringify(after));
    t.deepEqual(predicted, { addr: plugged!.addr });
    t.is(plugged!.addr, 5 * G);
  });
}
