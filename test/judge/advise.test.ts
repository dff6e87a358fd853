import test from 'ava';
import net from 'node:net';
import { AdviceError, adviceExitCode, advise, type AdviseInput } from '../../agent/judge/advise';
import { cpuModelName, qemuSize, qemuVersionOf, settingsFor } from '../../agent/judge/advice-settings';
import { layoutAdvice } from '../../agent/judge/layout-advice';
import { renderAdvice } from '../../agent/cli/render-fleet';
import type { GuestFacts, GuestLayout, HostFacts, PeerFacts, StatusDocument, VmStatus } from '../../agent/core/types';
import { withDeadline } from '../../agent/core/async-limits';
import { guestFacts, hostFacts } from '../helpers/facts';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';

const GIB = 2 ** 30;

function host(name: string, physBits: number): HostFacts {
  return hostFacts(physBits, name, { sources: {} });
}

/** q35 with -m 1G and no hot-plug: RAM below 4 GiB, the default 32 GiB window from 4 GiB. */
const SMALL: GuestLayout = {
  ramBelow4g: GIB,
  ramAbove4g: 0,
  deviceMemory: null,
  memoryDevices: [],
  pciHole64: { start: 4 * GIB, end: 36 * GIB },
  highestAddress: 36 * GIB,
  usedEnd: GIB,
  pciHole64Size: 32 * GIB,
};

/** q35 with -m 1G,slots=4,maxmem=500G as QEMU 7.2 and 10.0 lay it out (read over QMP, see the last tests). */
const HOTPLUG: GuestLayout = {
  ramBelow4g: GIB,
  ramAbove4g: 0,
  deviceMemory: { base: 4 * GIB, size: 503 * GIB },
  memoryDevices: [],
  pciHole64: { start: 507 * GIB, end: 539 * GIB },
  highestAddress: 539 * GIB,
  usedEnd: GIB,
  memoryConfig: { size: GIB, maxSize: 500 * GIB, slots: 4 },
  pciHole64Size: 32 * GIB,
};

function guest(physBits: number, over: Partial<GuestFacts> = {}): GuestFacts {
  return guestFacts({
    name: null,
    qemuVersion: '7.2.22',
    physBits,
    cpuModel: 'Skylake-Server',
    layout: SMALL,
    ...over,
  });
}

function vm(name: string, g: GuestFacts): VmStatus {
  return {
    socket: `/run/qemu/${name}.qmp`,
    name,
    accelerator: g.accelerator,
    guest: { ...g, name },
    verdict: { relation: 'equal', severity: 'ok', reasons: [] },
  };
}

function status(hostName: string, bits: number, vms: VmStatus[]): StatusDocument {
  return { host: host(hostName, bits), vms };
}

function fleet(localVms: VmStatus[], peers: PeerFacts[] = [{ name: 'hv2', physBits: 39, reachable: true }]) {
  return { local: status('hv1', 46, localVms), localName: 'hv1', peers, policy: { accelerators: ['kvm'] } };
}

test('a 46-bit guest in a 39-bit pool: width 39, not safe, every form named exactly', (t) => {
  const doc = advise(fleet([vm('web1', guest(46))]));
  t.is(doc.poolBits, 39);
  t.is(doc.poolBitsSource, 'pool');
  t.deepEqual(doc.pool, {
    hosts: [
      { name: 'hv1', physBits: 46, reachable: true },
      { name: 'hv2', physBits: 39, reachable: true },
    ],
    unreachable: [],
  });
  const g = doc.guests[0];
  t.like(g, {
    host: 'hv1',
    vm: 'web1',
    physBits: 46,
    poolBits: 39,
    safe: false,
    layoutFits: true,
    current: 'phys-bits=46',
    state: 'warning',
  });
  t.deepEqual(g.poolHosts, ['hv1', 'hv2']);
  t.deepEqual(g.settings, {
    qemu: '-cpu Skylake-Server,phys-bits=39',
    qemuHostPhysBits: '-cpu Skylake-Server,host-phys-bits=on,host-phys-bits-limit=39',
    libvirt: "<maxphysaddr mode='emulate' bits='39'/>",
    libvirtPassthrough: "<maxphysaddr mode='passthrough' limit='39'/>",
    proxmox: 'cpu: Skylake-Server,phys-bits=39',
  });
  t.deepEqual(g.layout, {
    limit: 2 ** 39,
    highestAddress: 36 * GIB,
    end: 36 * GIB,
    fits: true,
    overshoot: 0,
    passes: [],
    fixes: [],
    approximate: false,
  });
  t.deepEqual(g.notes, [
    "guest 46 bits > pool 39 bits: it may address memory the narrowest host cannot back; set 39; it takes effect when QEMU restarts (a running guest's width cannot change)",
  ]);
  t.deepEqual(doc.summary, { worst: 'warning', exitCode: 1 });
  t.is(adviceExitCode(doc), 1);
});

test('a guest already within the pool is safe; exit 0', (t) => {
  const doc = advise(fleet([vm('small', guest(39))]));
  t.like(doc.guests[0], { safe: true, layoutFits: true, state: 'ok', notes: [] });
  t.is(adviceExitCode(doc), 0);
});

test('a guest whose layout cannot fit 39 bits: what passes, and the largest maxmem or hole that fits', (t) => {
  const doc = advise(fleet([vm('big', guest(46, { layout: HOTPLUG }))]));
  const g = doc.guests[0];
  t.is(g.safe, false);
  t.is(g.layoutFits, false);
  const l = g.layout!;
  t.is(l.end, 539 * GIB);
  t.is(l.overshoot, 27 * GIB);
  t.false(l.approximate);
  t.deepEqual(l.passes, [{ region: 'pci-hole64', end: 539 * GIB }]);
  t.deepEqual(l.fixes, [
    {
      setting: 'pci-hole64-size',
      current: 32 * GIB,
      atMost: 5 * GIB,
      shrinkBy: 27 * GIB,
      alone: true,
      qemu: '-global q35-pcihost.pci-hole64-size=5G',
      libvirt: "<pcihole64 unit='KiB'>5242880</pcihole64>",
      message:
        "pci-hole64-size at most 5 GiB (now 32 GiB); the 64-bit BARs of the guest's devices must still fit in it (i440FX-pcihost on pc machines)",
    },
    {
      setting: 'maxmem',
      current: 500 * GIB,
      atMost: 473 * GIB,
      shrinkBy: 27 * GIB,
      alone: true,
      qemu: '-m 1G,slots=4,maxmem=473G',
      libvirt: "<maxMemory slots='4' unit='KiB'>495976448</maxMemory>",
      message: 'maxmem at most 473 GiB with 4 slots (now 500 GiB); each slot reserves 1 GiB more',
    },
  ]);
  t.true(
    g.notes.includes(
      'the address layout ends at 539 GiB, above 2^39 (512 GiB): QEMU 7.1+ refuses to start it with phys-bits=39 ("phys-bits too low") until it shrinks',
    ),
  );
});

test('without maxmem and slots read, the device-memory region is what to shrink', (t) => {
  const l = layoutAdvice({ ...HOTPLUG, memoryConfig: undefined }, 39);
  t.deepEqual(l.fixes[1], {
    setting: 'device-memory',
    current: 503 * GIB,
    atMost: 476 * GIB,
    shrinkBy: 27 * GIB,
    alone: true,
    message:
      'the device-memory region, (maxmem - memory) + 1 GiB per slot, at most 476 GiB (now 503 GiB): lower maxmem or slots by 27 GiB',
  });
});

test('RAM beyond the limit: only less memory helps; the hole cannot', (t) => {
  // -m 600G, no hot-plug: 2 GiB below 4 GiB, 598 GiB above, RAM ends at 602 GiB.
  const layout: GuestLayout = {
    ramBelow4g: 2 * GIB,
    ramAbove4g: 598 * GIB,
    deviceMemory: null,
    memoryDevices: [],
    pciHole64: { start: 602 * GIB, end: 634 * GIB },
    highestAddress: 634 * GIB,
    usedEnd: 602 * GIB,
    pciHole64Size: 32 * GIB,
  };
  const l = layoutAdvice(layout, 39);
  t.deepEqual(l.passes, [
    { region: 'ram-above-4g', end: 602 * GIB },
    { region: 'pci-hole64', end: 634 * GIB },
  ]);
  t.is(l.fixes.length, 2);
  t.like(l.fixes[0], { setting: 'pci-hole64-size', atMost: null, alone: false });
  t.is(
    l.fixes[0].message,
    'the 64-bit PCI hole starts at 602 GiB, already above the limit: shrinking it alone is not enough',
  );
  t.deepEqual(l.fixes[1], {
    setting: 'memory',
    current: 600 * GIB,
    atMost: 478 * GIB,
    shrinkBy: 122 * GIB,
    alone: true,
    qemu: '-m 478G',
    libvirt: "<memory unit='KiB'>501219328</memory>",
    message: 'memory at most 478 GiB and the 64-bit PCI hole as it is (now 600 GiB)',
  });
});

test('a maxmem cut alone can make room even when RAM sits high', (t) => {
  // 400 GiB above 4 GiB, a 202 GiB hot-plug region (-m 402G,slots=4,maxmem=600G), the 32 GiB window.
  const layout: GuestLayout = {
    ramBelow4g: 2 * GIB,
    ramAbove4g: 400 * GIB,
    deviceMemory: { base: 404 * GIB, size: 202 * GIB },
    memoryDevices: [],
    pciHole64: { start: 606 * GIB, end: 638 * GIB },
    highestAddress: 638 * GIB,
    usedEnd: 404 * GIB,
    memoryConfig: { size: 402 * GIB, maxSize: 600 * GIB, slots: 4 },
    pciHole64Size: 32 * GIB,
  };
  const l = layoutAdvice(layout, 39);
  t.false(l.approximate);
  t.deepEqual(
    l.fixes.map((f) => [f.setting, f.atMost === null ? null : f.atMost / GIB, f.alone]),
    [
      ['pci-hole64-size', null, false],
      ['maxmem', 474, true],
      ['memory', 478, false],
    ],
  );
  t.is(l.fixes[1].qemu, '-m 402G,slots=4,maxmem=474G');
});

test('when no single change is enough, the advice says to combine them', (t) => {
  // 490 GiB above 4 GiB, a 30 GiB hot-plug region with a DIMM at its top, the 32 GiB window: 556 GiB.
  const layout: GuestLayout = {
    ramBelow4g: 2 * GIB,
    ramAbove4g: 490 * GIB,
    deviceMemory: { base: 494 * GIB, size: 30 * GIB },
    memoryDevices: [{ type: 'dimm', id: 'dimm9', addr: 510 * GIB, size: 4 * GIB }],
    pciHole64: { start: 524 * GIB, end: 556 * GIB },
    highestAddress: 556 * GIB,
    usedEnd: 514 * GIB,
    memoryConfig: { size: 492 * GIB, maxSize: 518 * GIB, slots: 4 },
    pciHole64Size: 32 * GIB,
  };
  const doc = advise(fleet([vm('huge', guest(46, { layout }))]));
  const l = doc.guests[0].layout!;
  t.false(l.approximate);
  t.deepEqual(
    l.passes.map((p) => [p.region, p.id ?? null, p.end / GIB]),
    [
      ['device-memory', null, 524],
      ['memory-device', 'dimm9', 514],
      ['pci-hole64', null, 556],
    ],
  );
  t.deepEqual(
    l.fixes.map((f) => [f.setting, f.atMost === null ? null : f.atMost / GIB, f.alone]),
    [
      ['pci-hole64-size', null, false],
      ['maxmem', null, false],
      ['memory', 478, false],
    ],
  );
  t.is(l.fixes[1].message, 'no maxmem is small enough alone: RAM and the 64-bit PCI hole already pass the limit');
  t.is(
    l.fixes[2].message,
    'memory at most 478 GiB with no device memory (maxmem = memory) and the 64-bit PCI hole as it is (now 492 GiB)',
  );
  t.true(doc.guests[0].notes.includes('no single change is enough: combine the changes listed'));
});

test('firmware-placed BARs above the configured window follow the width and do not fail the layout', (t) => {
  const layout: GuestLayout = { ...SMALL, pciHole64: { start: 4 * GIB, end: 2 ** 46 }, highestAddress: 2 ** 46 };
  const doc = advise(fleet([vm('ovmf', guest(46, { layout }))]));
  const l = doc.guests[0].layout!;
  t.is(l.fits, true);
  t.is(l.end, 36 * GIB);
  t.is(l.firmwareEnd, 2 ** 46);
  t.true(
    doc.guests[0].notes.includes(
      "firmware has placed 64-bit PCI BARs up to 64 TiB; it places them within the CPU's width, so they follow the width set at the next start",
    ),
  );
  // Without the configured window size the reported end is all there is to judge.
  const unknownSize = layoutAdvice({ ...layout, pciHole64Size: undefined }, 39);
  t.is(unknownSize.fits, false);
  t.is(unknownSize.end, 2 ** 46);
  t.is(unknownSize.firmwareEnd, undefined);
});

test('an unreachable peer is reported, not fatal: its configured width still narrows the pool; exit 3', (t) => {
  const doc = advise(
    fleet(
      [vm('web1', guest(40))],
      [
        { name: 'hv2', physBits: 44, reachable: true },
        { name: 'hv3', physBits: 40, reachable: false, error: { code: 'PEER_TIMEOUT', message: 'slow' } },
        { name: 'hv4', physBits: null, reachable: false, error: { code: 'PEER_UNREACHABLE', message: 'ECONNREFUSED' } },
      ],
    ),
  );
  t.is(doc.poolBits, 40);
  t.deepEqual(doc.pool.unreachable, ['hv3', 'hv4']);
  t.like(doc.guests[0], { safe: true, state: 'ok' });
  t.is(adviceExitCode(doc), 3);
  t.deepEqual(doc.summary, { worst: 'unknown', exitCode: 3 });
});

test('the guests of a live peer get advice too, named by the peer', (t) => {
  const peers: PeerFacts[] = [
    { name: 'hv2', physBits: 39, reachable: true, status: status('x', 39, [vm('db1', guest(39))]) },
  ];
  const doc = advise({ ...fleet([vm('web1', guest(46))], peers), vm: 'hv2/db1' });
  t.deepEqual(
    doc.guests.map((g) => [g.host, g.vm, g.safe]),
    [['hv2', 'db1', true]],
  );
});

test('unknown VM name: VM_NOT_FOUND, exit 3 (unknown, like other unknowns), with or without an unreachable host', (t) => {
  const err = t.throws(() => advise({ ...fleet([vm('web1', guest(46))]), vm: 'nope' }), { instanceOf: AdviceError });
  t.is(err!.code, 'VM_NOT_FOUND');
  t.is(err!.exitCode, 3);
  t.is(err!.message, "no VM named 'nope' on hv1, hv2");
  const peers: PeerFacts[] = [{ name: 'hv3', physBits: null, reachable: false }];
  const err3 = t.throws(() => advise({ ...fleet([vm('web1', guest(46))], peers), vm: 'nope' }), {
    instanceOf: AdviceError,
  });
  t.is(err3!.exitCode, 3);
  t.is(err3!.message, "no VM named 'nope' on hv1 (not reachable: hv3)");
});

test('a named VM, a requested pool width, and the fleet input given under `fleet`', (t) => {
  const input: AdviseInput = { fleet: fleet([vm('web1', guest(46)), vm('web2', guest(39))]), vm: 'web1', poolBits: 44 };
  const doc = advise(input);
  t.is(doc.poolBits, 44);
  t.is(doc.poolBitsSource, 'requested');
  t.is(doc.guests.length, 1);
  t.like(doc.guests[0], { vm: 'web1', poolBits: 44, safe: false });
  t.is(doc.guests[0].settings!.qemu, '-cpu Skylake-Server,phys-bits=44');
});

test('a pool width QEMU cannot take is refused with POOL_BITS_INVALID (exit 64)', (t) => {
  for (const poolBits of [31, 53, 39.5]) {
    const err = t.throws(() => advise({ ...fleet([]), poolBits }), { instanceOf: AdviceError });
    t.is(err!.code, 'POOL_BITS_INVALID');
    t.is(err!.exitCode, 64);
  }
  t.is(advise({ ...fleet([]), poolBits: 32 }).poolBits, 32);
  t.is(advise({ ...fleet([]), poolBits: 52 }).poolBits, 52);
});

test('QEMU 9.1+ guests booting OVMF (pflash) get the guest-phys-bits form and a note; 7.2 and SeaBIOS guests do not', (t) => {
  const newer = advise(fleet([vm('new', guest(46, { qemuVersion: '9.1.0', guestPhysBits: 0, firmware: 'pflash' }))]))
    .guests[0];
  t.is(newer.settings!.qemuGuestPhysBits, '-cpu Skylake-Server,guest-phys-bits=39');
  t.true(
    newer.notes.some((n) =>
      n.startsWith('this QEMU has guest-phys-bits (9.1+): guest-phys-bits=39 has the firmware place'),
    ),
  );
  const byVersion = advise(fleet([vm('v10', guest(46, { qemuVersion: '10.0.2', firmware: 'pflash' }))])).guests[0];
  t.is(byVersion.settings!.qemuGuestPhysBits, '-cpu Skylake-Server,guest-phys-bits=39');
  // SeaBIOS reads only phys-bits (src/fw/paravirt.c): guest-phys-bits would not move its window.
  for (const firmware of ['bios', null] as const) {
    const seabios = advise(fleet([vm('sb', guest(46, { qemuVersion: '10.0.2', firmware }))])).guests[0];
    t.is(seabios.settings!.qemuGuestPhysBits, undefined, String(firmware));
    t.false(seabios.notes.some((n) => n.includes('guest-phys-bits')));
  }
  const old = advise(fleet([vm('old', guest(46, { qemuVersion: '9.0.2' }))])).guests[0];
  t.is(old.settings!.qemuGuestPhysBits, undefined);
  t.false(old.notes.some((n) => n.includes('guest-phys-bits')));
  // Not offered when the guest is not wider than the pool: it is safe, and given no settings at all.
  const narrow = advise(fleet([vm('n', guest(39, { qemuVersion: '9.1.0', guestPhysBits: 0 }))])).guests[0];
  t.is(narrow.settings, null);
});

test('host-phys-bits guests: current setting named, and the migration caveat unless capped at the pool', (t) => {
  const open = advise(fleet([vm('hp', guest(46, { hostPhysBits: true, cpuModel: 'host' }))])).guests[0];
  t.is(open.current, 'host-phys-bits=on');
  t.is(open.settings!.proxmox, 'cpu: host,phys-bits=39');
  t.true(
    open.notes.includes(
      'host-phys-bits=on takes the width of the host it starts on and keeps it when migrating: started on a wider host it carries that width to narrower ones',
    ),
  );
  const capped = advise(fleet([vm('hp', guest(39, { hostPhysBits: true, hostPhysBitsLimit: 39 }))])).guests[0];
  t.is(capped.current, 'host-phys-bits=on,host-phys-bits-limit=39');
  t.deepEqual(capped.notes, []);
});

test('a TCG guest outside policy.accelerators is safe, with a note; an unread VM is unknown', (t) => {
  const broken: VmStatus = { socket: '/s/dead.qmp', name: 'dead', error: { code: 'QMP_TIMEOUT', message: 'no reply' } };
  const doc = advise(fleet([vm('lab', guest(46, { accelerator: 'tcg' })), broken]));
  t.like(doc.guests[0], { safe: true, bound: false, state: 'ok' });
  t.is(
    doc.guests[0].notes[0],
    'tcg guest: host widths do not bind it (policy.accelerators), so there is nothing to change; advise it again once it runs under KVM',
  );
  t.deepEqual(doc.guests[0].notes, [doc.guests[0].notes[0]]);
  t.like(doc.guests[1], {
    vm: 'dead',
    physBits: null,
    safe: null,
    settings: null,
    state: 'unknown',
    error: { code: 'QMP_TIMEOUT', message: 'no reply' },
  });
  t.is(adviceExitCode(doc), 3);
});

test('a fleet with no guests: empty advice, exit 0', (t) => {
  const none = advise({ local: status('hv1', 46, []), localName: 'hv1', peers: [], policy: { accelerators: ['kvm'] } });
  t.is(none.poolBits, 46);
  t.deepEqual(none.guests, []);
  t.is(adviceExitCode(none), 0);
  t.is(renderAdvice(none), 'pool width: 46 bits (narrowest host)\nno guests');
});

test('small pure helpers', (t) => {
  t.is(cpuModelName('qemu64-x86_64-cpu'), 'qemu64');
  t.is(cpuModelName(null), 'MODEL');
  t.deepEqual(qemuVersionOf('7.2.22 (Debian 1:7.2+dfsg-7)'), [7, 2]);
  t.is(qemuVersionOf('garbage'), null);
  t.is(qemuSize(473 * GIB), '473G');
  t.is(qemuSize(1536 * 2 ** 20 + 5), '1536M');
  t.deepEqual(settingsFor(null, 40, false), {
    qemu: '-cpu MODEL,phys-bits=40',
    qemuHostPhysBits: '-cpu MODEL,host-phys-bits=on,host-phys-bits-limit=40',
    libvirt: "<maxphysaddr mode='emulate' bits='40'/>",
    libvirtPassthrough: "<maxphysaddr mode='passthrough' limit='40'/>",
    proxmox: 'cpu: MODEL,phys-bits=40',
  });
});

test('renderAdvice: one block per guest with every form, ASCII on request', (t) => {
  const doc = advise(fleet([vm('web1', guest(46)), vm('big', guest(46, { layout: HOTPLUG }))]));
  const text = renderAdvice(doc);
  const web1 = [
    'pool width: 39 bits (narrowest host)',
    '',
    'hv1/web1: phys-bits=46 (kvm), pool hv1, hv2 → 39 bits: NOT SAFE',
    '  layout:   ends at 36 GiB, within 2^39 (512 GiB)',
    '  qemu:     -cpu Skylake-Server,phys-bits=39',
    "            -cpu Skylake-Server,host-phys-bits=on,host-phys-bits-limit=39   (KVM: the host's width, capped)",
    "  libvirt:  <maxphysaddr mode='emulate' bits='39'/>   (in <cpu>, libvirt 8.7+)",
    "            <maxphysaddr mode='passthrough' limit='39'/>   (libvirt 9.3+, host-passthrough only)",
    '  proxmox:  cpu: Skylake-Server,phys-bits=39',
  ].join('\n');
  t.true(text.startsWith(web1), text);
  t.true(
    text.includes(
      '  layout:   ends at 539 GiB, 27 GiB above 2^39 (512 GiB)\n  passes:   pci-hole64 (ends at 539 GiB)\n',
    ),
  );
  t.true(
    text.includes(
      '  shrink:   maxmem at most 473 GiB with 4 slots (now 500 GiB); each slot reserves 1 GiB more\n            qemu:    -m 1G,slots=4,maxmem=473G\n',
    ),
  );
  const ascii = renderAdvice(doc, { ascii: true });
  t.true(ascii.includes('pool hv1, hv2 -> 39 bits: NOT SAFE'));
  t.false(/[^\x00-\x7f]/.test(ascii));
});

// ---- the arithmetic against QEMU itself ----------------------------------------------------------

/**
 * Connects to a QMP socket, retrying while it refuses: QEMU creates the socket file when it binds,
 * a moment before it listens.
 */
async function connectQmp(socket: string, timeoutMs = 5000): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const conn = net.connect(socket);
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      conn.once('connect', () => resolve(null));
      conn.once('error', (e) => resolve(e));
    });
    if (!err) return conn;
    conn.destroy();
    if (err.code !== 'ECONNREFUSED' || Date.now() > deadline) throw err;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs QMP commands in order on a fresh connection and returns their `return` values. */
async function qmp(socket: string, commands: Array<{ execute: string; arguments?: unknown }>): Promise<unknown[]> {
  const conn = await connectQmp(socket);
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  let buf = '';
  let closed = false;
  conn.on('close', () => {
    closed = true;
    wake?.();
  });
  conn.on('error', () => undefined);
  conn.on('data', (d) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
    wake?.();
  });
  const next = async (): Promise<{ return?: unknown; error?: { desc: string } }> => {
    for (;;) {
      const line = lines.shift();
      if (line === undefined) {
        if (closed) throw new Error('qmp: connection closed');
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      const msg = JSON.parse(line);
      if (!msg.event) return msg;
    }
  };
  const run = async () => {
    await next();
    conn.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n');
    await next();
    const out: unknown[] = [];
    for (const c of commands) {
      conn.write(JSON.stringify(c) + '\n');
      const reply = await next();
      if (reply.error) throw new Error(`${c.execute}: ${reply.error.desc}`);
      out.push(reply.return);
    }
    return out;
  };
  try {
    return await withDeadline(run(), 20000, () => new Error('qmp: no answer within 20 s'));
  } finally {
    conn.destroy();
  }
}

/**
 * Starts a paused 39-bit TCG guest on `qemu` and reports whether QEMU got past machine set-up:
 * 'started' once it answers query-status (commands run only after set-up), 'refused' when it exits
 * saying phys-bits are too low, else QEMU's own words.
 */
async function boot(qemu: Qemu, memory: string, extra: string[] = []): Promise<string> {
  const verdict = (words: string): string => (/phys-bits too low \(39\)/.test(words) ? 'refused' : words.trim());
  let guest: Guest;
  try {
    guest = await startGuest({ qemu, cpu: 'phys-bits=39', memory, extraArgs: extra });
  } catch (err) {
    return verdict((err as Error).message);
  }
  try {
    await qmp(guest.socket, [{ execute: 'query-status' }]);
    return 'started';
  } catch {
    // The monitor's socket is bound before the machine is set up: QEMU may have refused since.
    const gone = new Promise<void>((resolve) =>
      guest.process.exitCode !== null ? resolve() : guest.process.once('exit', () => resolve()),
    );
    await withDeadline(gone, 20000, () => new Error('qemu neither answered nor exited'));
    return verdict(guest.stderr());
  } finally {
    await guest.kill();
  }
}

for (const qemu of QEMUS) {
  test(`${qemu.label}: the largest maxmem and pci-hole64-size advised for 39 bits start, one GiB more is refused`, async (t) => {
    const big = await startGuest({ cpu: 'phys-bits=46', memory: '1G,slots=4,maxmem=500G', qemu });
    t.teardown(() => big.kill());
    const [mem, devSize, holeStart, holeEnd, holeSize] = (await qmp(big.socket, [
      { execute: 'qom-get', arguments: { path: '/machine', property: 'memory' } },
      // The region's own size: QEMU 8.2 dropped the machine property device-memory-region-size.
      { execute: 'qom-get', arguments: { path: '/machine/device-memory[0]', property: 'size' } },
      { execute: 'qom-get', arguments: { path: '/machine/q35', property: 'pci-hole64-start' } },
      { execute: 'qom-get', arguments: { path: '/machine/q35', property: 'pci-hole64-end' } },
      { execute: 'qom-get', arguments: { path: '/machine/q35', property: 'pci-hole64-size' } },
    ])) as [{ size: number; 'max-size': number; slots: number }, number, number, number, number];
    const layout: GuestLayout = {
      ramBelow4g: mem.size,
      ramAbove4g: 0,
      deviceMemory: { base: 4 * GIB, size: devSize },
      memoryDevices: [],
      pciHole64: { start: holeStart, end: holeEnd },
      highestAddress: holeEnd,
      usedEnd: mem.size,
      memoryConfig: { size: mem.size, maxSize: mem['max-size'], slots: mem.slots },
      pciHole64Size: holeSize,
    };
    t.deepEqual(layout, HOTPLUG, `${qemu.label} lays out -m 1G,slots=4,maxmem=500G as the HOTPLUG fixture says`);
    await big.kill();

    const l = layoutAdvice(layout, 39);
    const maxmem = l.fixes.find((f) => f.setting === 'maxmem')!.atMost!;
    const hole = l.fixes.find((f) => f.setting === 'pci-hole64-size')!.atMost!;
    t.is(await boot(qemu, `1G,slots=4,maxmem=${qemuSize(maxmem)}`), 'started');
    t.is(await boot(qemu, `1G,slots=4,maxmem=${qemuSize(maxmem + GIB)}`), 'refused');
    t.is(
      await boot(qemu, '1G,slots=4,maxmem=500G', ['-global', `q35-pcihost.pci-hole64-size=${qemuSize(hole)}`]),
      'started',
    );
    t.is(
      await boot(qemu, '1G,slots=4,maxmem=500G', ['-global', `q35-pcihost.pci-hole64-size=${qemuSize(hole + GIB)}`]),
      'refused',
    );
  });
}

test('two guests of one host with one name: the name is ambiguous (exit 64, naming both ids); each id names one', (t) => {
  const a = { ...vm('dup', guest(39)), socket: '/run/qemu/a.qmp', id: 'aaaaaaaaaaaa' };
  const b = { ...vm('dup', guest(46)), socket: '/run/qemu/b.qmp', id: 'bbbbbbbbbbbb' };
  const err = t.throws(() => advise({ ...fleet([a, b]), vm: 'dup' }), { instanceOf: AdviceError });
  t.is(err!.code, 'VM_AMBIGUOUS');
  t.is(err!.exitCode, 64);
  t.is(err!.message, "2 VMs are named 'dup': name one by its id (aaaaaaaaaaaa on hv1, bbbbbbbbbbbb on hv1)");
  const doc = advise({ ...fleet([a, b]), vm: 'bbbbbbbbbbbb' });
  t.is(doc.guests.length, 1);
  t.like(doc.guests[0], { vm: 'dup', id: 'bbbbbbbbbbbb', physBits: 46 });
});

/** Every kind of guest advise calls safe: none is given a change to make (settings null, no layout fixes). */
const safeCases: Array<[string, VmStatus, number | undefined]> = [
  ['narrower than the pool', vm('n', guest(38)), undefined],
  ['exactly the pool width', vm('e', guest(39)), undefined],
  ['host-phys-bits capped at the pool', vm('hp', guest(39, { hostPhysBits: true, hostPhysBitsLimit: 39 })), undefined],
  [
    'QEMU 9.1+ on OVMF, not wider than the pool',
    vm('g', guest(39, { qemuVersion: '9.1.0', firmware: 'pflash' })),
    undefined,
  ],
  ['a TCG guest wider than the pool', vm('t', guest(46, { accelerator: 'tcg' })), undefined],
  ['a TCG guest whose layout does not fit', vm('tl', guest(46, { accelerator: 'tcg', layout: HOTPLUG })), undefined],
];

for (const [title, status, poolBits] of safeCases)
  test(`a safe guest is given no change to make: ${title}`, (t) => {
    const g = advise({ ...fleet([status]), poolBits }).guests[0];
    t.is(g.safe, true);
    t.is(g.state, 'ok');
    t.is(g.settings, null);
    t.deepEqual(g.layout?.fixes, []);
    t.false(
      g.notes.some((n) => /\bset \d+|guest-phys-bits=|combine the changes/.test(n)),
      g.notes.join('\n'),
    );
    t.false(renderAdvice(advise({ ...fleet([status]), poolBits })).includes('qemu:'));
  });
