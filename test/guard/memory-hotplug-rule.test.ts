import test from 'ava';
import type { QmpExecutor } from '../../agent/facts/guest-facts';
import {
  addrArgument,
  decideMemoryHotplug,
  memoryDeviceRequest,
  parseQemuUint64,
  type MemoryDecision,
} from '../../agent/guard/memory-hotplug-rule';
import { CommandError } from '../../qmp/errors';
import { GiB, guestFacts, hostFacts, layout } from '../helpers/guard-facts';

/** Host limit 2^37 = 128 GiB; device memory [6 GiB, 262 GiB) straddles it. */
const HOST_BITS = 37;
const LIMIT = 2 ** HOST_BITS;
const host = hostFacts(HOST_BITS);
const guest = guestFacts({ physBits: 40, layout: layout({ deviceMemory: { base: 6 * GiB, size: 256 * GiB } }) });
const policy = { accelerators: ['kvm'] };

interface Fake extends QmpExecutor {
  calls: string[];
}

/** Upstream QEMU as far as the rule asks it: backends (query-memdev, qom-get) and plugged devices. */
function fakeQemu(
  memdevs: Record<string, number>,
  devices: Array<{ type: string; data: Record<string, unknown> }> = [],
): Fake {
  const calls: string[] = [];
  return {
    calls,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      calls.push(command);
      if (command === 'query-memdev') {
        return Object.entries(memdevs).map(([id, size]) => ({
          id,
          size,
          merge: true,
          dump: true,
          prealloc: false,
          share: false,
          policy: 'default',
          'host-nodes': [],
        })) as T;
      }
      if (command === 'query-memory-devices') return devices as T;
      if (command === 'qom-get') {
        const id = String(args?.path).replace('/objects/', '');
        if (!(id in memdevs))
          throw new CommandError('qom-get', 'DeviceNotFound', `Device '${String(args?.path)}' not found`);
        if (args?.property === 'type') return 'memory-backend-ram' as T;
        if (args?.property === 'size') return memdevs[id] as T;
      }
      throw new CommandError(command, 'CommandNotFound', 'not faked');
    },
  };
}

function dimm(id: string, addr: number, size: number) {
  return {
    type: 'dimm',
    data: { id, addr, size, slot: 0, node: 0, memdev: `/objects/m-${id}`, hotplugged: true, hotpluggable: true },
  };
}

async function decide(
  args: Record<string, unknown>,
  q: QmpExecutor,
  over: { reserved?: { addr: number; size: number }[]; guest?: typeof guest; accelerators?: string[] } = {},
): Promise<MemoryDecision> {
  const device = memoryDeviceRequest(args);
  if (!device) throw new Error('not a memory device');
  return decideMemoryHotplug({
    device,
    guest: over.guest ?? guest,
    host,
    policy: { accelerators: over.accelerators ?? policy.accelerators },
    q,
    reserved: over.reserved,
  });
}

const explicitTable: Array<[string, Record<string, unknown>, 'allow' | 'refuse']> = [
  ['addr below the limit', { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: 8 * GiB }, 'allow'],
  ['end exactly at the limit', { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: LIMIT - 4 * GiB }, 'allow'],
  ['straddling the limit', { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: LIMIT - 2 * GiB }, 'refuse'],
  ['above the limit', { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: 200 * GiB }, 'refuse'],
  ['hex string (HMP)', { driver: 'pc-dimm', memdev: 'm1', addr: '0x1f80000000' }, 'refuse'],
  ['decimal string below', { driver: 'pc-dimm', memdev: 'm1', addr: String(8 * GiB) }, 'allow'],
  ['octal string (base 0) below', { driver: 'pc-dimm', memdev: 'm1', addr: `0${(8 * GiB).toString(8)}` }, 'allow'],
  ['nvdimm above', { driver: 'nvdimm', memdev: 'm1', addr: 130 * GiB }, 'refuse'],
  [
    'virtio-mem-pci memaddr above, PCI addr ignored',
    { driver: 'virtio-mem-pci', memdev: 'm1', memaddr: 130 * GiB, addr: '04.0' },
    'refuse',
  ],
  ['virtio-pmem-pci memaddr below', { driver: 'virtio-pmem-pci', memdev: 'm1', memaddr: 16 * GiB, addr: 5 }, 'allow'],
  ['negative addr wraps like strtoull', { driver: 'pc-dimm', memdev: 'm1', addr: '-4096' }, 'refuse'],
];

for (const [title, args, outcome] of explicitTable) {
  test(`explicit address: ${title}`, async (t) => {
    const q = fakeQemu({ m1: 4 * GiB });
    const d = await decide(args, q);
    t.is(d.outcome, outcome);
    if (d.outcome === 'refuse') t.is(d.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
    t.false(q.calls.includes('query-memory-devices'), 'an explicit address needs no placement prediction');
  });
}

test('the refusal says address, end, limit and what to do', async (t) => {
  const d = await decide(
    { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: LIMIT - 2 * GiB },
    fakeQemu({ m1: 4 * GiB }),
  );
  t.deepEqual(d, {
    outcome: 'refuse',
    code: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
    message:
      'pc-dimm "d1" of 4 GiB would end at 0x2080000000: it is asked at 0x1f80000000, and this host\'s 37-bit physical addresses end at 0x2000000000 (only 2 GiB of it below the limit). The guest would be given memory the host cannot map; plug a smaller device, give addr= low enough, or shrink maxmem so that device memory ends below 0x2000000000',
  });
});

test('predicted placement: first fit after the plugged DIMMs crosses the limit', async (t) => {
  // [6 GiB, 124 GiB) is taken; the next 2 MiB-aligned free address is 124 GiB.
  const plugged = [dimm('a', 6 * GiB, 100 * GiB), dimm('b', 106 * GiB, 18 * GiB)];
  const big = await decide({ driver: 'pc-dimm', id: 'd3', memdev: 'm8' }, fakeQemu({ m8: 8 * GiB }, plugged));
  t.is(big.outcome, 'refuse');
  t.regex((big as { message: string }).message, /QEMU would place it at 0x1f00000000/);
  const fits = await decide({ driver: 'pc-dimm', id: 'd3', memdev: 'm4' }, fakeQemu({ m4: 4 * GiB }, plugged));
  t.deepEqual(fits, {
    outcome: 'allow',
    message: 'pc-dimm "d3" ends at 0x2000000000, within 37 bits',
    placement: { addr: 124 * GiB, size: 4 * GiB, predicted: true },
  });
});

test('predicted placement: a hole below the limit is used first', async (t) => {
  const plugged = [dimm('a', 6 * GiB, 2 * GiB), dimm('b', 12 * GiB, 100 * GiB)];
  const d = await decide({ driver: 'virtio-mem-pci', id: 'vm0', memdev: 'm4' }, fakeQemu({ m4: 4 * GiB }, plugged));
  t.is(d.outcome, 'allow');
  t.deepEqual((d as { placement?: unknown }).placement, { addr: 8 * GiB, size: 4 * GiB, predicted: true });
});

test('predicted placement: ranges approved moments ago count as taken', async (t) => {
  const plugged = [dimm('a', 6 * GiB, 118 * GiB)];
  const q = fakeQemu({ m4: 4 * GiB }, plugged);
  t.is((await decide({ driver: 'pc-dimm', memdev: 'm4' }, q)).outcome, 'allow');
  const d = await decide({ driver: 'pc-dimm', memdev: 'm4' }, q, { reserved: [{ addr: 124 * GiB, size: 4 * GiB }] });
  t.is(d.outcome, 'refuse');
});

test('a device-memory region wholly below the limit passes without asking QEMU', async (t) => {
  const q = fakeQemu({});
  const low = guestFacts({ layout: layout({ deviceMemory: { base: 6 * GiB, size: 64 * GiB } }) });
  const d = await decide({ driver: 'pc-dimm', memdev: 'm1' }, q, { guest: low });
  t.is(d.outcome, 'allow');
  t.deepEqual(q.calls, []);
});

test('an explicit address at the limit is refused even when the device-memory region fits below it', async (t) => {
  const q = fakeQemu({ m1: GiB });
  const low = guestFacts({ layout: layout({ deviceMemory: { base: 6 * GiB, size: 64 * GiB } }) });
  const limit = 2 ** HOST_BITS;
  const d = await decide({ driver: 'pc-dimm', memdev: 'm1', addr: limit }, q, { guest: low });
  t.is(d.outcome, 'refuse');
  t.is((d as { code: string }).code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  const below = await decide({ driver: 'pc-dimm', memdev: 'm1', addr: 7 * GiB }, q, { guest: low });
  t.is(below.outcome, 'allow');
});

test('accelerators outside policy.accelerators are not checked', async (t) => {
  const q = fakeQemu({});
  const d = await decide({ driver: 'pc-dimm', memdev: 'm1', addr: 500 * GiB }, q, {
    guest: guestFacts({ accelerator: 'tcg', layout: guest.layout }),
  });
  t.is(d.outcome, 'allow');
  t.deepEqual(q.calls, []);
});

test('unknowns: size, unreadable address, no region, no room', async (t) => {
  t.is((await decide({ driver: 'pc-dimm', memdev: 'missing' }, fakeQemu({ m1: GiB }))).outcome, 'unknown');
  t.is((await decide({ driver: 'pc-dimm', memdev: 'm1', addr: '0x' }, fakeQemu({ m1: GiB }))).outcome, 'unknown');
  t.is((await decide({ driver: 'pc-dimm', memdev: 'm1', addr: true }, fakeQemu({ m1: GiB }))).outcome, 'unknown');
  const noRegion = guestFacts({ layout: layout({ deviceMemory: null }) });
  t.is(
    (await decide({ driver: 'pc-dimm', memdev: 'm1' }, fakeQemu({ m1: GiB }), { guest: noRegion })).outcome,
    'unknown',
  );
  const full = [dimm('a', 6 * GiB, 256 * GiB)];
  const d = await decide({ driver: 'pc-dimm', memdev: 'm1' }, fakeQemu({ m1: GiB }, full));
  t.is(d.outcome, 'unknown');
  t.regex((d as { message: string }).message, /PLACEMENT_FRAGMENTED/);
  // An address at or past the limit needs no size to be refused.
  t.is((await decide({ driver: 'pc-dimm', memdev: 'missing', addr: LIMIT }, fakeQemu({}))).outcome, 'refuse');
});

test('which device_add is a memory device', (t) => {
  t.is(memoryDeviceRequest({ driver: 'virtio-net-pci', id: 'n0' }), null);
  t.is(memoryDeviceRequest({ driver: 'e1000', addr: '0x1' }), null);
  t.is(memoryDeviceRequest({ driver: 7 }), null);
  t.is(memoryDeviceRequest(undefined), null);
  t.is(memoryDeviceRequest({ driver: 'hv-balloon', id: 'b' }), null);
  t.is(memoryDeviceRequest({ driver: 'constructor' }), null);
  t.is(memoryDeviceRequest({ driver: 'hv-balloon', memdev: 'm' })?.addrProperty, 'addr');
  t.is(memoryDeviceRequest({ driver: 'PC-DIMM', memdev: 'm' })?.driver, 'pc-dimm');
  t.deepEqual(memoryDeviceRequest({ driver: 'virtio-mem-pci', id: 'v', memdev: 'm', addr: '04.0' }), {
    driver: 'virtio-mem-pci',
    id: 'v',
    addrProperty: 'memaddr',
    addr: { kind: 'absent' },
    args: { driver: 'virtio-mem-pci', id: 'v', memdev: 'm', addr: '04.0' },
  });
});

test('qemu_strtou64 base 0 and QMP value forms', (t) => {
  const table: Array<[string, number | null]> = [
    ['0', 0],
    ['4096', 4096],
    ['0x1000', 4096],
    ['0X1000', 4096],
    ['010', 8],
    ['  12', 12],
    ['+12', 12],
    ['-1', 2 ** 64 - 1],
    ['08', null],
    ['0x', null],
    ['12 ', null],
    ['1G', null],
    ['', null],
    ['0x10000000000000000', null],
    ['18446744073709551615', 2 ** 64 - 1],
  ];
  for (const [s, want] of table) t.is(parseQemuUint64(s), want, s);
  t.deepEqual(addrArgument(undefined), { kind: 'absent' });
  t.deepEqual(addrArgument(0), { kind: 'absent' });
  t.deepEqual(addrArgument('0'), { kind: 'absent' });
  t.deepEqual(addrArgument({}), { kind: 'absent' });
  t.deepEqual(addrArgument(null), { kind: 'absent' });
  t.deepEqual(addrArgument(4.5), { kind: 'invalid' });
  t.deepEqual(addrArgument(false), { kind: 'invalid' });
  t.deepEqual(addrArgument(-4096), { kind: 'value', value: 2 ** 64 - 4096 });
  t.deepEqual(addrArgument('0x100000000'), { kind: 'value', value: 2 ** 32 });
});
