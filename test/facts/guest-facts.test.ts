import { readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { QmpClient } from '../../qmp/client';
import { CommandError, TimeoutError } from '../../qmp/errors';
import {
  acceleratorFrom,
  cpuModelFromType,
  findHostBridge,
  incomingMigrationFrom,
  memoryEncryptionFrom,
  parseMemoryDevices,
  readGuestFacts,
  type QmpExecutor,
} from '../../agent/facts/guest-facts';
import { estimatePcLayout } from '../../agent/facts/guest-layout';
import { predictPlacement, resolveMemoryDevice } from '../../agent/facts/memory-placement';
import { atLeast, parseVersion } from '../../agent/facts/qemu-version';
import { kvmUsable, QEMUS, startGuest, type GuestOptions } from '../helpers/qemu';

const M = 2 ** 20;
const G = 2 ** 30;

async function connect(t: ExecutionContext, opts: GuestOptions): Promise<QmpClient> {
  const guest = await startGuest(opts);
  t.teardown(() => guest.kill());
  const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
  t.teardown(() => client.close());
  return client;
}

/** guest-phys-bits exists from QEMU 9.1; on older QEMU (7.2 here) it must read as null. */
function expectGuestPhysBits(t: ExecutionContext, version: string, value: number | null): void {
  const v = parseVersion(version);
  t.truthy(v);
  if (atLeast(v!, 9, 1)) t.is(typeof value, 'number');
  else t.is(value, null);
}

/** object-add + device_add pc-dimm; returns QEMU's address next to the one predicted just before. */
async function plugDimm(c: QmpExecutor, id: string, size: number, addr?: number) {
  await c.execute('object-add', { 'qom-type': 'memory-backend-ram', id: `mem-${id}`, size });
  const args: Record<string, unknown> = { driver: 'pc-dimm', id, memdev: `mem-${id}`, ...(addr ? { addr } : {}) };
  const dev = await resolveMemoryDevice(c, args);
  if (!dev) throw new Error(`no size/alignment for ${id}`);
  const layout = (await readGuestFacts(c)).layout;
  if (!layout?.deviceMemory) throw new Error('no device memory');
  const predicted = predictPlacement({
    deviceMemory: layout.deviceMemory,
    existing: layout.memoryDevices,
    size: dev.size,
    align: dev.align,
    hint: dev.hint ?? undefined,
  });
  await c.execute('device_add', args);
  const plugged = parseMemoryDevices(await c.execute('query-memory-devices')).find((d) => d.id === id);
  return { predicted, actual: plugged?.addr, dev };
}

for (const qemu of QEMUS) {
  for (const bits of [39, 46, 48]) {
    test(`${qemu.label}: TCG guest with phys-bits=${bits}: every fact read exactly`, async (t) => {
      const c = await connect(t, { cpu: `phys-bits=${bits}`, name: `pb${bits}` });
      const f = await readGuestFacts(c, { timeoutMs: 20000 });
      t.is(f.physBits, bits);
      t.is(f.hostPhysBits, false);
      t.is(f.hostPhysBitsLimit, 0);
      t.is(f.accelerator, 'tcg');
      t.is(f.name, `pb${bits}`);
      t.is(f.cpuModel, 'qemu64');
      t.is(f.runState, 'prelaunch');
      t.regex(f.qemuVersion, /^\d+\.\d+\.\d+$/);
      expectGuestPhysBits(t, f.qemuVersion, f.guestPhysBits);
      t.deepEqual(f.memoryEncryption, { active: false, type: null, reducedPhysBits: null });
      t.deepEqual(f.layout, {
        ramBelow4g: 64 * M,
        ramAbove4g: 0,
        deviceMemory: null,
        memoryDevices: [],
        pciHole64: { start: 4 * G, end: 36 * G },
        highestAddress: 36 * G,
        usedEnd: 64 * M,
        memoryConfig: { size: 64 * M, maxSize: 64 * M, slots: 0 },
        pciHole64Size: 32 * G,
        pciHole64Fix: true,
        pciBars: [],
        pciBridges: [],
      });
    });
  }

  test(`${qemu.label}: uuid: query-uuid's answer in lower case; absent for a guest without -uuid`, async (t) => {
    const [withUuid, without] = await Promise.all([
      connect(t, { qemu, name: 'u1', extraArgs: ['-uuid', '6F1C3A52-9B0E-4C55-8A44-1E0F7B2D9C01'] }),
      connect(t, { qemu, name: 'u0' }),
    ]);
    t.is((await readGuestFacts(withUuid, { timeoutMs: 20000 })).uuid, '6f1c3a52-9b0e-4c55-8a44-1e0f7b2d9c01');
    const f = await readGuestFacts(without, { timeoutMs: 20000 });
    t.false('uuid' in f);
  });

  test(`${qemu.label}: TCG ignores host-phys-bits (target/i386/host-cpu.c runs for KVM only): 40 bits, flags still reported`, async (t) => {
    const [plain, limited] = await Promise.all([
      connect(t, { cpu: 'host-phys-bits=on', qemu }),
      connect(t, { cpu: 'host-phys-bits=on,host-phys-bits-limit=39', qemu }),
    ]);
    const a = await readGuestFacts(plain);
    t.like(a, { physBits: 40, hostPhysBits: true, hostPhysBitsLimit: 0, accelerator: 'tcg' });
    const b = await readGuestFacts(limited);
    t.like(b, { physBits: 40, hostPhysBits: true, hostPhysBitsLimit: 39, accelerator: 'tcg' });
  });

  test(`${qemu.label}: KVM guests: accelerator kvm, host-phys-bits-limit applied`, async (t) => {
    if (!kvmUsable()) {
      t.log('skipped: /dev/kvm cannot be opened here, so no KVM guest can start');
      t.pass();
      return;
    }
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    const hostBits = Number(/address sizes\s*:\s*(\d+) bits physical/.exec(cpuinfo)?.[1]);
    const [limited, fixed] = await Promise.all([
      connect(t, { accel: 'kvm', cpu: 'host-phys-bits=on,host-phys-bits-limit=39', qemu }),
      connect(t, { accel: 'kvm', cpu: 'phys-bits=46', qemu }),
    ]);
    t.like(await readGuestFacts(limited), {
      accelerator: 'kvm',
      physBits: Math.min(hostBits, 39),
      hostPhysBits: true,
      hostPhysBitsLimit: 39,
    });
    t.like(await readGuestFacts(fixed), { accelerator: 'kvm', physBits: 46, hostPhysBits: false });
  });

  test(`${qemu.label}: -m 64M,slots=4,maxmem=1G: device memory where QEMU put it, as estimatePcLayout predicts`, async (t) => {
    const c = await connect(t, { cpu: 'phys-bits=46', memory: '64M,slots=4,maxmem=1G', qemu });
    const f = await readGuestFacts(c);
    t.deepEqual(f.layout?.deviceMemory, { base: 4 * G, size: 0x13c000000 });
    t.deepEqual(f.layout?.pciHole64, { start: 0x240000000, end: 0xa40000000 });
    const est = estimatePcLayout({
      machine: 'q35',
      ramBytes: 64 * M,
      maxRamBytes: G,
      slots: 4,
      vendor: 'AuthenticAMD',
      physBits: 46,
    });
    t.like(f.layout, {
      ramBelow4g: est.ramBelow4g,
      ramAbove4g: est.ramAbove4g,
      deviceMemory: est.deviceMemory,
      pciHole64: est.pciHole64,
      highestAddress: est.highestAddress,
    });
  });

  test(`${qemu.label}: hot-plugged DIMMs land where predictPlacement says: two in a row, a hint, then the gap`, async (t) => {
    const c = await connect(t, { cpu: 'phys-bits=46', memory: '64M,slots=4,maxmem=1G', qemu });
    const a = await plugDimm(c, 'd1', 128 * M);
    t.like(a.dev, { size: 128 * M, align: 2 * M, hint: null });
    t.deepEqual(a.predicted, { addr: 4 * G });
    t.is(a.actual, 4 * G);
    const b = await plugDimm(c, 'd2', 64 * M);
    t.deepEqual(b.predicted, { addr: 4 * G + 128 * M });
    t.is(b.actual, 4 * G + 128 * M);
    const hinted = await plugDimm(c, 'd3', 32 * M, 4 * G + 512 * M);
    t.deepEqual(hinted.predicted, { addr: 4 * G + 512 * M });
    t.is(hinted.actual, 4 * G + 512 * M);
    const gap = await plugDimm(c, 'd4', 64 * M);
    t.deepEqual(gap.predicted, { addr: 4 * G + 192 * M });
    t.is(gap.actual, 4 * G + 192 * M);
    const f = await readGuestFacts(c);
    t.deepEqual(
      f.layout?.memoryDevices.map((d) => [d.type, d.id, d.addr, d.size]),
      [
        ['dimm', 'd1', 4 * G, 128 * M],
        ['dimm', 'd2', 4 * G + 128 * M, 64 * M],
        ['dimm', 'd4', 4 * G + 192 * M, 64 * M],
        ['dimm', 'd3', 4 * G + 512 * M, 32 * M],
      ],
    );
    t.is(f.layout?.usedEnd, 4 * G + 544 * M);
  });

  test(`${qemu.label}: AMD vCPU with maxmem=1000G: QEMU moves device memory to 1 TiB, and the first DIMM with it`, async (t) => {
    const c = await connect(t, { cpu: 'phys-bits=48', memory: '64M,slots=1,maxmem=1000G', qemu });
    const f = await readGuestFacts(c);
    t.deepEqual(f.layout?.deviceMemory, { base: 2 ** 40, size: 1074748456960 });
    const est = estimatePcLayout({
      machine: 'q35',
      ramBytes: 64 * M,
      maxRamBytes: 1000 * G,
      slots: 1,
      vendor: 'AuthenticAMD',
      physBits: 48,
    });
    t.deepEqual(est.deviceMemory, f.layout?.deviceMemory);
    t.deepEqual(est.pciHole64, f.layout?.pciHole64);
    const d = await plugDimm(c, 'big', 128 * M);
    t.deepEqual(d.predicted, { addr: 2 ** 40 });
    t.is(d.actual, 2 ** 40);
  });

  test(`${qemu.label}: i440fx: the RAM split like pc_piix.c (computed on 7.2, which lacks below/above-4g-mem-size; read from 8.1)`, async (t) => {
    const c = await connect(t, { memory: '3584M', extraArgs: ['-machine', 'pc'], qemu });
    const f = await readGuestFacts(c);
    const est = estimatePcLayout({ machine: 'pc', ramBytes: 3584 * M, maxRamBytes: 0, slots: 0 });
    t.deepEqual(f.layout, {
      ramBelow4g: 3 * G,
      ramAbove4g: 512 * M,
      deviceMemory: null,
      memoryDevices: [],
      pciHole64: est.pciHole64,
      highestAddress: est.highestAddress,
      usedEnd: 4 * G + 512 * M,
      memoryConfig: { size: 3584 * M, maxSize: 3584 * M, slots: 0 },
      pciHole64Size: 2 * G,
      pciHole64Fix: true,
      pciBars: [],
      pciBridges: [],
    });
    t.deepEqual(est.pciHole64, { start: 0x140000000, end: 0x1c0000000 });
  });
}

// Literal replies of QEMU 7.2 (TCG, q35, -m 64M,slots=4,maxmem=1G, phys-bits=46).
const REPLIES: Record<string, unknown> = {
  'query-name': {},
  'query-version': { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
  'query-kvm': { enabled: false, present: true },
  'query-status': { status: 'prelaunch', singlestep: false, running: false },
  'query-cpus-fast': [
    {
      'thread-id': 10100,
      props: { 'core-id': 0, 'thread-id': 0, 'node-id': 0, 'socket-id': 0 },
      'qom-path': '/machine/unattached/device[0]',
      'cpu-index': 0,
      target: 'x86_64',
    },
  ],
  'query-sev': { enabled: false, 'api-minor': 0, handle: 0, state: 'uninit', 'api-major': 0, 'build-id': 0, policy: 0 },
  'query-memory-devices': [],
  'query-memory-size-summary': { 'base-memory': 67108864, 'plugged-memory': 0 },
  'qom-list /machine': [
    { name: 'q35', type: 'child<q35-pcihost>' },
    { name: 'device-memory[0]', type: 'child<memory-region>' },
  ],
  'x-query-jit': { 'human-readable-text': 'Translation buffer state:\n' },
  'qom-get /machine type': 'pc-q35-7.2-machine',
  'qom-get /machine device-memory-region-size': 5301600256,
  'qom-get /machine max-ram-below-4g': 3758096384,
  'qom-get /machine confidential-guest-support': '',
  'qom-get /machine/device-memory[0] addr': 4294967296,
  'qom-get /machine/q35 pci-hole64-start': 9663676416,
  'qom-get /machine/q35 pci-hole64-end': 44023414784,
  'qom-get /machine/q35 pci-hole64-size': 34359738368,
  'qom-get /machine/q35 below-4g-mem-size': 67108864,
  'qom-get /machine/q35 above-4g-mem-size': 0,
  'qom-get /machine/unattached/device[0] phys-bits': 46,
  'qom-get /machine/unattached/device[0] host-phys-bits': false,
  'qom-get /machine/unattached/device[0] host-phys-bits-limit': 0,
  'qom-get /machine/unattached/device[0] vendor': 'AuthenticAMD',
  'qom-get /machine/unattached/device[0] type': 'qemu64-x86_64-cpu',
};

/** Answers from `answers`; a key mapped to an Error rejects with it; a missing key is QEMU's GenericError. */
function scripted(answers: Record<string, unknown>): QmpExecutor & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      const key =
        command === 'qom-get'
          ? `qom-get ${args?.path} ${args?.property}`
          : command === 'qom-list'
            ? `qom-list ${args?.path}`
            : command;
      calls.push(key);
      const v = answers[key];
      if (v instanceof Error) throw v;
      if (v === undefined)
        throw new CommandError(command, 'GenericError', `Property '${String(args?.property)}' not found`);
      return v as T;
    },
  };
}

test('every optional read failing leaves nulls; phys-bits alone still gives facts', async (t) => {
  const only = {
    'query-cpus-fast': REPLIES['query-cpus-fast'],
    'qom-get /machine/unattached/device[0] phys-bits': 46,
  };
  const f = await readGuestFacts(scripted(only));
  t.deepEqual(f, {
    name: null,
    qemuVersion: 'unknown',
    accelerator: 'unknown',
    physBits: 46,
    hostPhysBits: false,
    hostPhysBitsLimit: 0,
    guestPhysBits: null,
    cpuModel: null,
    memoryEncryption: { active: false, type: null, reducedPhysBits: null },
    runState: null,
    layout: null,
    machineType: null,
    firmware: null,
    pciDeviceTypes: null,
  });
});

test('the literal 7.2 replies give the same facts as the live guest', async (t) => {
  const q = scripted(REPLIES);
  const f = await readGuestFacts(q);
  t.like(f, {
    physBits: 46,
    accelerator: 'tcg',
    cpuModel: 'qemu64',
    qemuVersion: '7.2.22',
    guestPhysBits: null,
    runState: 'prelaunch',
  });
  t.deepEqual(f.layout?.deviceMemory, { base: 4 * G, size: 5301600256 });
  t.false(q.calls.includes('human-monitor-command'));
});

test('phys-bits refused by QEMU is GUEST_PHYS_BITS_UNREADABLE; a timeout keeps its own code', async (t) => {
  const refused = {
    ...REPLIES,
    'qom-get /machine/unattached/device[0] phys-bits': new CommandError(
      'qom-get',
      'GenericError',
      "Property 'phys-bits' not found",
    ),
  };
  const e1 = await t.throwsAsync(readGuestFacts(scripted(refused)));
  t.is((e1 as { code?: string }).code, 'GUEST_PHYS_BITS_UNREADABLE');
  const noCpu = { ...REPLIES, 'query-cpus-fast': [] };
  const e2 = await t.throwsAsync(readGuestFacts(scripted(noCpu)));
  t.is((e2 as { code?: string }).code, 'GUEST_PHYS_BITS_UNREADABLE');
  const slow = { ...REPLIES, 'query-cpus-fast': new TimeoutError('query-cpus-fast: no reply within 5000 ms') };
  const e3 = await t.throwsAsync(readGuestFacts(scripted(slow)));
  t.is((e3 as { code?: string }).code, 'QMP_TIMEOUT');
});

test('QEMU before 6.2 (no x-query-jit): HMP "info jit" decides TCG', async (t) => {
  const old = {
    ...REPLIES,
    'x-query-jit': new CommandError('x-query-jit', 'CommandNotFound', 'The command x-query-jit has not been found'),
    'human-monitor-command': 'Translation buffer state:\ngen code size       0/1073736704\n',
  };
  t.is((await readGuestFacts(scripted(old))).accelerator, 'tcg');
  const notTcg = { ...old, 'human-monitor-command': 'JIT information is only available with accel=tcg\r\n' };
  t.is((await readGuestFacts(scripted(notTcg))).accelerator, 'unknown');
});

/** The same answers sent a round at a time (executeAll): QEMU's refusals as error replies, other errors as they are. */
function scriptedRounds(answers: Record<string, unknown>): QmpExecutor & { rounds: number } {
  const one = scripted(answers);
  const q = {
    rounds: 0,
    execute: one.execute,
    async executeAll(commands: ReadonlyArray<readonly [string, Record<string, unknown>?]>) {
      q.rounds++;
      return Promise.all(
        commands.map(([command, args]) =>
          one.execute(command, args).then(
            (value) => ({ return: value }),
            (err: Error) => (err instanceof CommandError ? { error: { class: err.errorClass, desc: err.desc } } : err),
          ),
        ),
      );
    },
  };
  return q;
}

test('a round sent at once (executeAll) reads the same facts, and fails the same way, as one command at a time', async (t) => {
  const q = scriptedRounds(REPLIES);
  t.deepEqual(await readGuestFacts(q), await readGuestFacts(scripted(REPLIES)));
  t.is(q.rounds, 2);
  const only = {
    'query-cpus-fast': REPLIES['query-cpus-fast'],
    'qom-get /machine/unattached/device[0] phys-bits': 46,
  };
  t.deepEqual(await readGuestFacts(scriptedRounds(only)), await readGuestFacts(scripted(only)));
  const refused = { ...REPLIES, 'qom-get /machine/unattached/device[0] phys-bits': undefined };
  const e1 = await t.throwsAsync(readGuestFacts(scriptedRounds(refused)));
  t.is((e1 as { code?: string }).code, 'GUEST_PHYS_BITS_UNREADABLE');
  t.regex(e1!.message, /phys-bits failed: qom-get: GenericError: Property 'phys-bits' not found/);
  const slow = { ...REPLIES, 'query-cpus-fast': new TimeoutError('query-cpus-fast: no reply within 5000 ms') };
  t.is(((await t.throwsAsync(readGuestFacts(scriptedRounds(slow)))) as { code?: string }).code, 'QMP_TIMEOUT');
  const old = {
    ...REPLIES,
    'x-query-jit': new CommandError('x-query-jit', 'CommandNotFound', 'The command x-query-jit has not been found'),
    'human-monitor-command': 'Translation buffer state:\ngen code size       0/1073736704\n',
  };
  t.is((await readGuestFacts(scriptedRounds(old))).accelerator, 'tcg');
  const notTcg = { ...REPLIES, 'x-query-jit': new CommandError('x-query-jit', 'GenericError', 'not TCG') };
  t.is((await readGuestFacts(scriptedRounds(notTcg))).accelerator, 'unknown');
  const lost = { ...REPLIES, 'x-query-jit': new TimeoutError('x-query-jit: no reply within 5000 ms') };
  t.is((await readGuestFacts(scriptedRounds(lost))).accelerator, 'unknown');
});

test('reply parsers on literal replies', (t) => {
  t.is(acceleratorFrom({ enabled: true, present: true }, null), 'kvm');
  t.is(acceleratorFrom({ enabled: false, present: true }, true), 'tcg');
  t.is(acceleratorFrom(undefined, false), 'unknown');
  t.is(cpuModelFromType('Skylake-Client-x86_64-cpu'), 'Skylake-Client');
  t.is(cpuModelFromType('host-x86_64-cpu'), 'host');
  t.is(cpuModelFromType('cortex-a57-arm-cpu'), null);
  t.is(findHostBridge([{ name: 'i440fx', type: 'child<i440FX-pcihost>' }]), '/machine/i440fx');
  t.is(findHostBridge({}), null);
  // query-memory-devices after a DIMM and two virtio-mem devices (QEMU 7.2).
  t.deepEqual(
    parseMemoryDevices([
      {
        type: 'dimm',
        data: {
          memdev: '/objects/m1',
          hotplugged: true,
          addr: 4294967296,
          hotpluggable: true,
          size: 6291456,
          slot: 0,
          node: 0,
          id: 'd1',
        },
      },
      {
        type: 'virtio-mem',
        data: {
          memdev: '/objects/v1',
          memaddr: 4301258752,
          'block-size': 2097152,
          size: 0,
          node: 0,
          'max-size': 536870912,
          'requested-size': 0,
          id: 'vm1',
        },
      },
      { type: 'virtio-pmem', data: { memaddr: 8589934592, size: 1073741824, memdev: '/objects/p' } },
      { type: 'dimm', data: { addr: -1, size: 1 } },
    ]),
    [
      { type: 'dimm', id: 'd1', addr: 4294967296, size: 6291456 },
      { type: 'virtio-mem', id: 'vm1', addr: 4301258752, size: 536870912 },
      { type: 'virtio-pmem', id: null, addr: 8589934592, size: 1073741824 },
    ],
  );
  t.deepEqual(memoryEncryptionFrom({ sev: { enabled: true, policy: 0x1 }, cgsType: 'sev-guest', reducedPhysBits: 1 }), {
    active: true,
    type: 'sev',
    reducedPhysBits: 1,
  });
  t.deepEqual(
    memoryEncryptionFrom({ sev: { enabled: true, policy: 0x5 }, cgsType: 'sev-guest', reducedPhysBits: 1 }).type,
    'sev-es',
  );
  t.deepEqual(
    memoryEncryptionFrom({
      sev: { enabled: true, 'sev-type': 'sev-snp', policy: 0x30000 },
      cgsType: 'sev-snp-guest',
      reducedPhysBits: 5,
    }).type,
    'sev-snp',
  );
  t.deepEqual(memoryEncryptionFrom({ sev: undefined, cgsType: null, reducedPhysBits: undefined }), {
    active: false,
    type: null,
    reducedPhysBits: null,
  });
});

// query-migrate and query-status as QEMU 7.2 answered them on a destination (-incoming) before and
// after the stream, and on the source after it.
const incomingTable: Array<[string, unknown, string | null, unknown]> = [
  [
    'destination waiting for the stream',
    { 'socket-address': [{ port: '47311', ipv4: true, host: '127.0.0.1', type: 'inet' }] },
    'inmigrate',
    { state: 'pending', port: '47311' },
  ],
  ['destination, stream loaded', { status: 'completed' }, 'prelaunch', { state: 'completed', port: null }],
  ['destination, stream loaded, running', { status: 'completed' }, 'running', { state: 'completed', port: null }],
  [
    'source after the migration (ram statistics)',
    { status: 'completed', 'setup-time': 11, 'total-time': 1418, ram: { total: 67641344 } },
    'postmigrate',
    null,
  ],
  ['a guest never migrated', {}, 'running', null],
  ['query-migrate failed', undefined, 'running', null],
  [
    'waiting, on a unix: address',
    { 'socket-address': [{ path: '/run/in.sock', type: 'unix' }] },
    'inmigrate',
    { state: 'pending', port: null },
  ],
];
for (const [title, reply, runState, want] of incomingTable) {
  test(`incomingMigrationFrom: ${title}`, (t) => {
    t.deepEqual(incomingMigrationFrom(reply, runState), want);
  });
}
