import test from 'ava';
import { parseConfig, type Config, type PeerConfig } from '../../agent/core/config';
import type { QmpExecutor } from '../../agent/facts/guest-facts';
import { FactsGate } from '../../agent/guard/facts-gate';
import {
  classifyCommand,
  createGuardInterceptor,
  INSPECTED_COMMANDS,
  RESERVATION_MS,
  type GuardCommand,
  type GuardContext,
  type GuardRefusal,
} from '../../agent/guard/guard-decision';
import type { PeerLookup } from '../../agent/guard/migration-rule';
import { REFUSAL_PREFIX } from '../../agent/guard/refusal';
import type { GuestFacts } from '../../agent/core/types';
import { CommandError } from '../../qmp/errors';
import { GiB, guestFacts, hostFacts, layout } from '../helpers/guard-facts';

/** Timers that only move when the test says so. */
function manualTimers() {
  let now = 0;
  const due = new Map<number, { at: number; fn: () => void }>();
  let seq = 0;
  return {
    now: () => now,
    setTimeout(fn: () => void, ms: number) {
      const id = ++seq;
      due.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(h: unknown) {
      due.delete(h as number);
    },
    advance(ms: number) {
      now += ms;
      for (const [id, d] of [...due]) {
        if (d.at <= now) {
          due.delete(id);
          d.fn();
        }
      }
    },
    pending: () => due.size,
  };
}

const HOST_BITS = 37; // 128 GiB
const straddling = guestFacts({ physBits: 40, layout: layout({ deviceMemory: { base: 6 * GiB, size: 256 * GiB } }) });

function fakeQemu(
  memdevs: Record<string, number>,
  plugged: Array<{ addr: number; size: number }> = [],
): QmpExecutor & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async execute<T>(command: string, args?: Record<string, unknown>): Promise<T> {
      calls.push(command);
      if (command === 'query-memdev') return Object.entries(memdevs).map(([id, size]) => ({ id, size })) as T;
      if (command === 'query-memory-devices')
        return plugged.map((p, i) => ({ type: 'dimm', data: { id: `p${i}`, ...p } })) as T;
      if (command === 'qom-get' && args?.property === 'type') return 'memory-backend-ram' as T;
      throw new CommandError(command, 'GenericError', 'not faked');
    },
  };
}

const peerList: PeerConfig[] = [
  { name: 'hv2', address: '10.0.0.2', physBits: 39 },
  { name: 'hv3', address: '10.0.0.3', physBits: 48 },
];

function staticPeers(): PeerLookup {
  return {
    findByAddress: (h) => peerList.find((p) => p.address === h) ?? null,
    facts: async (p) => ({
      name: p.name,
      physBits: peerList.find((x) => x.name === p.name)?.physBits ?? null,
      reachable: true,
    }),
  };
}

interface Setup {
  guard: ReturnType<typeof createGuardInterceptor>;
  refusals: GuardRefusal[];
  waits: number[];
  q: ReturnType<typeof fakeQemu>;
}

function setup(
  opts: {
    facts?: GuestFacts | null;
    config?: Record<string, unknown>;
    q?: ReturnType<typeof fakeQemu>;
    peers?: PeerLookup;
    waitForFacts?: (ms: number) => Promise<GuestFacts | null>;
    clock?: () => number;
    notifyIncoming?: GuardContext['notifyIncoming'];
  } = {},
): Setup {
  const config: Config = parseConfig({ policy: { accelerators: ['kvm'] }, ...opts.config });
  const refusals: GuardRefusal[] = [];
  const waits: number[] = [];
  const q = opts.q ?? fakeQemu({ m4: 4 * GiB, m8: 8 * GiB });
  const facts = opts.facts === undefined ? straddling : opts.facts;
  const guard = createGuardInterceptor({
    vm: 'web1',
    host: () => hostFacts(HOST_BITS),
    facts: () => facts,
    waitForFacts: (ms) => {
      waits.push(ms);
      return opts.waitForFacts ? opts.waitForFacts(ms) : Promise.resolve(null);
    },
    q,
    config: () => config,
    peers: opts.peers ?? staticPeers(),
    onRefusal: (r) => refusals.push(r),
    clock: opts.clock,
    notifyIncoming: opts.notifyIncoming,
  });
  return { guard, refusals, waits, q };
}

const cmd = (execute: string, args?: Record<string, unknown>): GuardCommand => ({
  execute,
  arguments: args,
  oob: false,
});
const hmp = (line: string) => cmd('human-monitor-command', { 'command-line': line });

test('harmless commands are forwarded at once, without facts or QMP', async (t) => {
  const s = setup({ facts: null });
  for (const c of [
    cmd('query-status'),
    cmd('device_add', { driver: 'e1000e', id: 'n1', addr: '0x5' }),
    cmd('device_add', { driver: 'virtio-net-pci', id: 'n0', 'disable-modern': 'on' }),
    cmd('object-add', { 'qom-type': 'memory-backend-ram', id: 'm9', size: 64 * GiB }),
    hmp('info status'),
    hmp('object_add memory-backend-ram,id=m9,size=64G'),
    hmp('device_add e1000,id=n2'),
    cmd('human-monitor-command', {}),
    cmd('migrate_cancel'),
  ]) {
    const action = s.guard(c);
    t.false(action instanceof Promise, `${c.execute}: decided in the same turn, not a promise`);
    t.deepEqual(action, { action: 'forward' }, c.execute);
  }
  t.deepEqual(s.waits, []);
  t.deepEqual(s.q.calls, []);
  t.deepEqual(s.refusals, []);
});

test('a DIMM above the host limit is refused with the contract reply and one refusal event', async (t) => {
  const s = setup();
  const r = await s.guard(cmd('device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm4', addr: 130 * GiB }));
  t.is(r.action, 'reply-error');
  if (r.action !== 'reply-error') return;
  t.is(r.errorClass, 'GenericError');
  t.is(r.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  t.true(r.desc.startsWith(REFUSAL_PREFIX));
  t.true(r.desc.endsWith('[REFUSED_MEMORY_ABOVE_HOST_LIMIT]'));
  t.deepEqual(s.refusals, [
    {
      vm: 'web1',
      code: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
      command: 'device_add',
      effective: 'device_add',
      desc: r.desc,
    },
  ]);
});

test('a DIMM below the limit is forwarded', async (t) => {
  const s = setup();
  t.deepEqual(await s.guard(cmd('device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm4', addr: 8 * GiB })), {
    action: 'forward',
  });
  t.deepEqual(s.refusals, []);
});

test('HMP device_add meets the same rule', async (t) => {
  const s = setup();
  const r = await s.guard(hmp('device_add pc-dimm,id=d1,memdev=m4,addr=0x2080000000'));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  t.is(s.refusals[0].command, 'human-monitor-command');
  t.is(s.refusals[0].effective, 'device_add');
  t.deepEqual(await s.guard(hmp('device_add pc-dimm,id=d2,memdev=m4,addr=0x200000000')), { action: 'forward' });
});

test('migrate (QMP uri, QMP channels, HMP) to a narrower peer is refused; to a wider one forwarded', async (t) => {
  const s = setup({ facts: guestFacts({ physBits: 46, qemuVersion: '10.0.2' }) });
  const refused = [
    cmd('migrate', { uri: 'tcp:10.0.0.2:4444' }),
    cmd('migrate', {
      channels: [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '10.0.0.2', port: '4444' } },
      ],
    }),
    hmp('migrate -d tcp:10.0.0.2:4444'),
  ];
  for (const c of refused) {
    const r = await s.guard(c);
    t.is(r.action === 'reply-error' && r.code, 'REFUSED_MIGRATION_PEER_NARROWER', c.execute);
  }
  t.deepEqual(
    s.refusals.map((r) => [r.command, r.effective]),
    [
      ['migrate', 'migrate'],
      ['migrate', 'migrate'],
      ['human-monitor-command', 'migrate'],
    ],
  );
  t.deepEqual(await s.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:4444' })), { action: 'forward' });
  t.deepEqual(await s.guard(hmp('migrate tcp:10.0.0.3:4444')), { action: 'forward' });
});

test("migrate uris are read as the guest's QEMU reads them; readings that differ by release are refused when the release is not known", async (t) => {
  const on72 = setup({ facts: guestFacts({ physBits: 46, qemuVersion: '7.2.0' }) });
  const on10 = setup({ facts: guestFacts({ physBits: 46, qemuVersion: '10.0.2' }) });
  const on81 = setup({
    facts: guestFacts({ physBits: 46, qemuVersion: '8.1.5' }),
    config: { guard: { unknownPeer: 'allow' } },
  });
  const code = (r: { action: string; code?: string }) => (r.action === 'reply-error' ? r.code : r.action);
  // 7.2 and 10.0 both send tcp:tcp:10.0.0.3:4444 to a host named "tcp": not a peer.
  t.is(code(await on72.guard(cmd('migrate', { uri: 'tcp:tcp:10.0.0.3:4444' }))), 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(on72.refusals.at(-1)!.desc, /"tcp:tcp:10\.0\.0\.3:4444"/);
  t.is(code(await on10.guard(hmp('migrate -d tcp:tcp:10.0.0.3:4444'))), 'REFUSED_MIGRATION_UNKNOWN_PEER');
  // 8.0/8.1 would reach 10.0.0.3: not run here, so refused as unreadable even with unknownPeer allow.
  t.is(code(await on81.guard(cmd('migrate', { uri: 'tcp:tcp:10.0.0.3:4444' }))), 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(on81.refusals.at(-1)!.desc, /QEMU releases read this uri differently/);
  t.is(code(await on81.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:4444' }))), 'forward');
  // channels do not exist on 7.2.
  const channels = [
    { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '10.0.0.3', port: '4444' } },
  ];
  t.is(code(await on72.guard(cmd('migrate', { channels }))), 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(on72.refusals.at(-1)!.desc, /QEMU before 8\.2 takes no channels argument/);
  t.is(code(await on10.guard(cmd('migrate', { channels }))), 'forward');
});

test('an allowed migrate of a host-phys-bits=on guest tells each destination peer its width first; a refused one tells none', async (t) => {
  const told: Array<[string, unknown]> = [];
  const notifyIncoming = async (peer: string, notice: unknown) => {
    told.push([peer, notice]);
    return peer === 'hv3' ? null : 'PEER_UNREACHABLE: no answer';
  };
  const s = setup({ facts: guestFacts({ physBits: 39, hostPhysBits: true }), notifyIncoming });
  t.deepEqual(await s.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:4444' })), { action: 'forward' });
  t.deepEqual(told, [['hv3', { vm: 'web1', port: '4444', physBits: 39, from: 'hv1' }]]);
  // A peer that cannot be told does not stop the migration.
  told.length = 0;
  t.deepEqual(await s.guard(cmd('migrate', { uri: 'tcp:10.0.0.2:5555' })), { action: 'forward' });
  t.deepEqual(
    told.map(([peer, n]) => [peer, (n as { port: string }).port]),
    [['hv2', '5555']],
  );
  // Refused (wider than hv2 would be for a 46-bit guest): nobody is told.
  told.length = 0;
  const wide = setup({ facts: guestFacts({ physBits: 46, hostPhysBits: true }), notifyIncoming });
  const r = await wide.guard(cmd('migrate', { uri: 'tcp:10.0.0.2:4444' }));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_MIGRATION_PEER_NARROWER');
  t.deepEqual(told, []);
  // A fixed phys-bits guest keeps its width on any host: nothing to tell.
  const fixed = setup({ facts: guestFacts({ physBits: 39 }), notifyIncoming });
  t.deepEqual(await fixed.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:4444' })), { action: 'forward' });
  t.deepEqual(told, []);
});

test('unknown peers follow guard.unknownPeer', async (t) => {
  const refuse = setup();
  const r = await refuse.guard(cmd('migrate', { uri: 'tcp:10.9.9.9:4444' }));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_MIGRATION_UNKNOWN_PEER');
  const allow = setup({ config: { guard: { unknownPeer: 'allow' } } });
  t.deepEqual(await allow.guard(cmd('migrate', { uri: 'tcp:10.9.9.9:4444' })), { action: 'forward' });
});

test('an HMP line that cannot be read is refused without waiting for facts', async (t) => {
  const s = setup({ facts: null });
  const r = await s.guard(hmp('migrate -x tcp:10.0.0.3:1'));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_HMP_UNPARSABLE');
  const r2 = await s.guard(hmp('device_add "pc-dimm,memdev=m4'));
  t.is(r2.action === 'reply-error' && r2.code, 'REFUSED_HMP_UNPARSABLE');
  t.deepEqual(s.waits, []);
});

test('unknown state: a dangerous command waits up to holdMs; facts arriving in time decide it', async (t) => {
  const timers = manualTimers();
  const gate = new FactsGate(timers);
  const s = setup({ facts: null, config: { guard: { holdMs: 3000 } }, waitForFacts: (ms) => gate.wait(ms) });
  const pending = s.guard(cmd('device_add', { driver: 'pc-dimm', memdev: 'm4', addr: 130 * GiB }));
  await Promise.resolve();
  t.deepEqual(s.waits, [3000]);
  timers.advance(2999);
  gate.set(straddling);
  const r = await pending;
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  t.is(timers.pending(), 0, 'the hold timer was cleared');
});

test('unknown state: no facts within holdMs is REFUSED_FACTS_UNKNOWN (or forwarded with onUnknown=allow)', async (t) => {
  const timers = manualTimers();
  const gate = new FactsGate(timers);
  const s = setup({ facts: null, config: { guard: { holdMs: 3000 } }, waitForFacts: (ms) => gate.wait(ms) });
  const pending = s.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:1' }));
  if (!(pending instanceof Promise)) return t.fail('a migrate is decided by its rule, later');
  let settled = false;
  void pending.then(() => (settled = true));
  timers.advance(2999);
  await new Promise((r) => setImmediate(r));
  t.false(settled, 'still held at 2999 ms');
  timers.advance(1);
  const r = await pending;
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_FACTS_UNKNOWN');
  t.regex((r as { desc: string }).desc, /after waiting 3000 ms/);
  gate.set(straddling);

  const lenient = setup({ facts: null, config: { guard: { onUnknown: 'allow' } } });
  t.deepEqual(await lenient.guard(cmd('migrate', { uri: 'tcp:10.0.0.3:1' })), { action: 'forward' });
  t.deepEqual(lenient.refusals, []);
});

test('a placement that cannot be predicted follows guard.onUnknown', async (t) => {
  const q = fakeQemu({});
  const strict = setup({ q });
  const r = await strict.guard(cmd('device_add', { driver: 'pc-dimm', memdev: 'nosuch' }));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_MEMORY_PLACEMENT_UNKNOWN');
  const lenient = setup({ q, config: { guard: { onUnknown: 'allow' } } });
  t.deepEqual(await lenient.guard(cmd('device_add', { driver: 'pc-dimm', memdev: 'nosuch' })), { action: 'forward' });
});

test('a failing rule is REFUSED_GUARD_ERROR, not a crash', async (t) => {
  const broken: PeerLookup = {
    findByAddress: () => peerList[0],
    facts: async () => {
      throw new Error('boom');
    },
  };
  const s = setup({ peers: broken, facts: guestFacts({ physBits: 39 }) });
  const r = await s.guard(cmd('migrate', { uri: 'tcp:10.0.0.2:1' }));
  t.is(r.action === 'reply-error' && r.code, 'REFUSED_GUARD_ERROR');
  t.regex((r as { desc: string }).desc, /boom/);
});

test("concurrent DIMMs: the second sees the first one's placement; the reservation expires", async (t) => {
  let now = 0;
  // [6 GiB, 120 GiB) taken: a 4 GiB DIMM fits at 120 GiB (end 124), the next at 124 (end 128), a third would cross.
  const q = fakeQemu({ m4: 4 * GiB }, [{ addr: 6 * GiB, size: 114 * GiB }]);
  const s = setup({ q, clock: () => now });
  const add = () => s.guard(cmd('device_add', { driver: 'pc-dimm', memdev: 'm4' }));
  const [a, b, c] = await Promise.all([add(), add(), add()]);
  t.deepEqual(a, { action: 'forward' });
  t.deepEqual(b, { action: 'forward' });
  t.is(c.action === 'reply-error' && c.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  now += RESERVATION_MS;
  t.deepEqual(
    await add(),
    { action: 'forward' },
    'QEMU never plugged them: after the reservation lapses the slot is free again',
  );
});

/** A firmware-booted guest: root port rp1's prefetchable window at 768 GiB, rp2's below 4 GiB. */
const firmwareBooted = guestFacts({
  layout: layout({
    deviceMemory: null,
    pciHole64: { start: 768 * GiB, end: 800 * GiB },
    highestAddress: 800 * GiB,
    pciBars: [],
    pciBridges: [
      {
        address: '00:01.0',
        bus: 0,
        slot: 1,
        function: 0,
        id: 'rp1',
        secondaryBus: 1,
        memory: null,
        prefetchable: { start: 768 * GiB, end: 768 * GiB + 2 ** 29 },
      },
      {
        address: '00:02.0',
        bus: 0,
        slot: 2,
        function: 0,
        id: 'rp2',
        secondaryBus: 2,
        memory: null,
        prefetchable: { start: 0xfe000000, end: 0xfe200000 },
      },
    ],
  }),
});

test('device_add of a PCI device with a 64-bit BAR into a window above the limit is refused (QMP and HMP)', async (t) => {
  const s = setup({ facts: firmwareBooted });
  for (const c of [
    cmd('device_add', { driver: 'virtio-rng-pci', id: 'hot1', bus: 'rp1' }),
    hmp('device_add ivshmem-plain,memdev=sh,bus=rp1,id=sh1'),
    cmd('device_add', { driver: 'vfio-pci', host: '0000:01:00.0' }),
  ]) {
    const a = await s.guard(c);
    t.like(a, { action: 'reply-error', code: 'REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT' }, JSON.stringify(c));
    t.regex((a as { desc: string }).desc, /^refused by physbits guard: .*37-bit physical addresses/);
  }
  t.regex(
    s.refusals[0].desc,
    /virtio-rng-pci "hot1" on bus "rp1" .*prefetchable window of bridge "rp1" \(00:01.0\), 0xc000000000-0xc01fffffff/,
  );
  t.regex(s.refusals[1].desc, /ivshmem-plain "sh1"/);
  t.regex(s.refusals[2].desc, /root bus's 64-bit PCI hole \(no bus= given/);
  t.deepEqual(
    s.refusals.map((r) => [r.command, r.effective]),
    [
      ['device_add', 'device_add'],
      ['human-monitor-command', 'device_add'],
      ['device_add', 'device_add'],
    ],
  );
  t.deepEqual(await s.guard(cmd('device_add', { driver: 'virtio-rng-pci', id: 'ok', bus: 'rp2' })), {
    action: 'forward',
  });
  t.deepEqual(s.q.calls, [], 'decided from the facts alone');
});

test('a PCI window that is not known follows guard.onUnknown', async (t) => {
  const c = cmd('device_add', { driver: 'virtio-rng-pci', id: 'hot1', bus: 'hotplugged-bridge' });
  const refused = await setup({ facts: firmwareBooted }).guard(c);
  t.like(refused, { action: 'reply-error', code: 'REFUSED_PCI_WINDOW_UNKNOWN' });
  t.regex((refused as { desc: string }).desc, /no PCI bridge with id "hotplugged-bridge".*guard.onUnknown is 'refuse'/);
  const allowed = await setup({ facts: firmwareBooted, config: { guard: { onUnknown: 'allow' } } }).guard(c);
  t.deepEqual(allowed, { action: 'forward' });
});

test('classifyCommand', (t) => {
  t.like(classifyCommand(cmd('device_add', { driver: 'vfio-pci', bus: 'rp1' })), { kind: 'pci', via: 'qmp' });
  t.like(classifyCommand(hmp('device_add virtio-net-pci,bus=rp1')), { kind: 'pci', via: 'hmp' });
  // virtio-mem-pci is a memory device first.
  t.is(classifyCommand(cmd('device_add', { driver: 'virtio-mem-pci', memdev: 'm' })).kind, 'memory');
  t.deepEqual(classifyCommand(cmd('query-cpus-fast')), { kind: 'safe' });
  t.is(classifyCommand(cmd('device_add', { driver: 'nvdimm', memdev: 'm' })).kind, 'memory');
  t.is(classifyCommand(hmp('device_add nvdimm,memdev=m')).kind, 'memory');
  t.deepEqual(classifyCommand(hmp('migrate unix:/x')), {
    kind: 'migrate',
    via: 'hmp',
    targets: [{ kind: 'local', transport: 'unix', detail: '/x' }],
  });
  t.deepEqual(classifyCommand(cmd('migrate', { uri: 'tcp:h:1' })), {
    kind: 'migrate',
    via: 'qmp',
    targets: [{ kind: 'network', transport: 'tcp', host: 'h', port: '1' }],
  });
});

test('INSPECTED_COMMANDS names every command a rule looks at; any other name is safe whatever its arguments', (t) => {
  // The proxy passes every command outside this set without asking the guard (QmpProxyOptions.inspects).
  const dangerous: Record<string, Record<string, unknown>> = {
    device_add: { driver: 'pc-dimm', memdev: 'm' },
    migrate: { uri: 'tcp:h:1' },
    'human-monitor-command': { 'command-line': 'device_add vfio-pci,bus=rp1' },
  };
  t.deepEqual([...INSPECTED_COMMANDS].sort(), Object.keys(dangerous).sort());
  for (const [name, args] of Object.entries(dangerous)) t.not(classifyCommand(cmd(name, args)).kind, 'safe', name);
  // QEMU finds a command by its exact name (qapi/qmp-registry.c qmp_find_command: strcmp).
  for (const name of ['Device_add', 'device-add', 'device_add ', 'migrate-incoming', 'object-add', 'qom-set'])
    for (const args of Object.values(dangerous)) t.deepEqual(classifyCommand(cmd(name, args)), { kind: 'safe' }, name);
});

test('virtio-mem-pci meets the memory rule and then the PCI rule: memory that fits, a BAR that does not', async (t) => {
  const facts = {
    ...firmwareBooted,
    layout: { ...firmwareBooted.layout!, deviceMemory: { base: 4 * GiB, size: 8 * GiB } },
  };
  const s = setup({ facts });
  const refused = await s.guard(cmd('device_add', { driver: 'virtio-mem-pci', id: 'vm1', memdev: 'm4', bus: 'rp1' }));
  t.like(refused, { action: 'reply-error', code: 'REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT' });
  t.regex((refused as { desc: string }).desc, /virtio-mem-pci "vm1" on bus "rp1" has a 64-bit memory BAR/);
  t.deepEqual(await s.guard(cmd('device_add', { driver: 'virtio-mem-pci', id: 'vm2', memdev: 'm4', bus: 'rp2' })), {
    action: 'forward',
  });
  // The short name of a PCI device (QEMU's alias) is the -pci device, over HMP too.
  const alias = await s.guard(hmp('device_add virtio-rng,id=r1,bus=rp1'));
  t.like(alias, { action: 'reply-error', code: 'REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT' });
  t.regex((alias as { desc: string }).desc, /virtio-rng \(virtio-rng-pci\) "r1" on bus "rp1"/);
});

test('a device the PCI table does not list waits for facts; a PCI type of this QEMU above the limit is REFUSED_PCI_DEVICE_UNKNOWN', async (t) => {
  const facts = { ...firmwareBooted, pciDeviceTypes: ['kvaser_pci'] };
  const s = setup({ facts });
  const c = cmd('device_add', { driver: 'kvaser_pci', id: 'can1', bus: 'rp1' });
  t.true(s.guard(c) instanceof Promise);
  const refused = await s.guard(c);
  t.like(refused, { action: 'reply-error', code: 'REFUSED_PCI_DEVICE_UNKNOWN' });
  t.regex(
    (refused as { desc: string }).desc,
    /kvaser_pci "can1" is a PCI device whose BARs physbits does not know.*guard.onUnknown is 'refuse'/,
  );
  t.deepEqual(await setup({ facts, config: { guard: { onUnknown: 'allow' } } }).guard(c), { action: 'forward' });
  t.deepEqual(await s.guard(cmd('device_add', { driver: 'usb-tablet', id: 'tab' })), { action: 'forward' });
});
