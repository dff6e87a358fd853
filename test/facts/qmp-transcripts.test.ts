/**
 * The facts reader on recorded QEMU 7.2 and 10.0 answers (test/fixtures/qmp-transcripts, recorded
 * by test/tools/record-transcripts.ts): exactly what physbits sends, replayed. A QEMU release that
 * answers differently shows here as a failing fixture test.
 */
import test from 'ava';
import { readGuestFacts } from '../../agent/facts/guest-facts';
import { predictPlacement, resolveMemoryDevice } from '../../agent/facts/memory-placement';
import { computeVerdict } from '../../agent/judge/verdict';
import { hostFacts } from '../helpers/facts';
import { exchangeKey, loadTranscripts, replaying, type Transcript } from '../helpers/transcripts';

const M = 2 ** 20;
const G = 2 ** 30;
const transcripts = loadTranscripts();
const VERSIONS = ['7.2', '10.0'] as const;
const SCENARIOS = ['paused-dimm', 'seabios', 'ovmf'] as const;

function transcript(version: string, scenario: string): Transcript {
  const found = transcripts.get(`qemu-${version}-${scenario}.json`);
  if (!found) throw new Error(`no transcript qemu-${version}-${scenario}.json in test/fixtures/qmp-transcripts`);
  return found;
}

/** Where each firmware put the 64-bit window of a phys-bits=40 guest (query-pci / pci-hole64-*). */
const FIRMWARE_HOLE64: Record<string, { start: number; end: number }> = {
  // SeaBIOS 1.16.2 keeps a 16 KiB BAR below 4 GiB: the bridge reports QEMU's default window.
  '7.2-seabios': { start: 5 * G, end: 37 * G },
  // OVMF 2022.11: 2^40 - 2^37.
  '7.2-ovmf': { start: 896 * G, end: 928 * G },
  // SeaBIOS 1.16.3 and OVMF 2025.02: 2^40 - 2^38.
  '10.0-seabios': { start: 768 * G, end: 800 * G },
  '10.0-ovmf': { start: 768 * G, end: 800 * G },
};

/**
 * What query-pci showed once firmware ran (phys-bits=40, 3 root ports, virtio-rng-pci "rng64" on rp1):
 * the 64-bit BAR 4 of rng64 (null: not mapped when recorded) and root port rp2's prefetchable window.
 */
const FIRMWARE_PCI: Record<string, { bar: number | null; rp2: { start: number; end: number } }> = {
  // SeaBIOS 1.16.2: 2 MiB windows below 4 GiB.
  '7.2-seabios': { bar: 0xfea00000, rp2: { start: 0xfe800000, end: 0xfea00000 } },
  // OVMF 2022.11: 512 MiB windows from 896 GiB.
  '7.2-ovmf': { bar: 0xe000000000, rp2: { start: 0xe020000000, end: 0xe040000000 } },
  // SeaBIOS 1.16.3: 512 MiB windows (2^(40-11), src/fw/pciinit.c) from 768 GiB, rp3 lowest.
  '10.0-seabios': { bar: 0xc040000000, rp2: { start: 0xc020000000, end: 0xc040000000 } },
  // OVMF 2025.02 placed rng64 at 768 GiB (it turns the device's memory decoding off again later,
  // when no driver bound it, and the BAR then reads -1; this recording caught it mapped).
  '10.0-ovmf': { bar: 0xc000000000, rp2: { start: 0xc020000000, end: 0xc040000000 } },
};

test('every transcript is present and was recorded on the QEMU its name says', (t) => {
  for (const v of VERSIONS) {
    for (const s of SCENARIOS) {
      const tr = transcript(v, s);
      t.true(tr.qemu.startsWith(`${v}.`), `${v} ${s}: recorded on ${tr.qemu}`);
      t.is(tr.scenario, s);
    }
  }
});

for (const v of VERSIONS) {
  test(`QEMU ${v}, paused guest with maxmem and a DIMM: facts from the transcript, nothing sent that was not recorded`, async (t) => {
    const q = replaying(transcript(v, 'paused-dimm'));
    const f = await readGuestFacts(q);
    t.deepEqual(q.misses, []);
    t.like(f, {
      name: 'rec',
      accelerator: 'tcg',
      physBits: 46,
      hostPhysBits: false,
      hostPhysBitsLimit: 0,
      guestPhysBits: null,
      cpuModel: 'qemu64',
      runState: 'prelaunch',
    });
    t.is(f.unreadable, undefined);
    t.deepEqual(f.layout, {
      ramBelow4g: 64 * M,
      ramAbove4g: 0,
      // -m 64M,slots=4,maxmem=1G: maxmem - mem + 1 GiB per slot (hw/i386/pc.c pc_memory_init).
      deviceMemory: { base: 4 * G, size: G - 64 * M + 4 * G },
      memoryDevices: [{ type: 'dimm', id: 'd1', addr: 4 * G, size: 128 * M }],
      pciHole64: { start: 9 * G, end: 41 * G },
      highestAddress: 41 * G,
      usedEnd: 4 * G + 128 * M,
      memoryConfig: { size: 64 * M, maxSize: G, slots: 4 },
      pciHole64Size: 32 * G,
      pciHole64Fix: true,
      // Paused before firmware: q35 has no bridge and nothing on the root bus has a 64-bit BAR.
      pciBars: [],
      pciBridges: [],
    });
    // The guard's reads for a second DIMM, and where it predicts QEMU puts it.
    const dev = await resolveMemoryDevice(q, { driver: 'pc-dimm', id: 'd2', memdev: 'm2' });
    t.deepEqual(q.misses, []);
    t.like(dev, { size: 64 * M, align: 2 * M });
    t.deepEqual(
      predictPlacement({
        deviceMemory: f.layout!.deviceMemory!,
        existing: f.layout!.memoryDevices,
        size: dev!.size,
        align: dev!.align,
      }),
      { addr: 4 * G + 128 * M },
    );
  });

  for (const fw of ['seabios', 'ovmf'] as const) {
    test(`QEMU ${v}, ${fw}-booted guest: the 64-bit window firmware placed; equal width is not past the host limit`, async (t) => {
      const q = replaying(transcript(v, fw));
      const f = await readGuestFacts(q);
      t.deepEqual(q.misses, []);
      t.like(f, { physBits: 40, runState: 'running', guestPhysBits: null });
      const hole = FIRMWARE_HOLE64[`${v}-${fw}`];
      t.like(f.layout, {
        ramBelow4g: 2 * G,
        ramAbove4g: G,
        deviceMemory: null,
        pciHole64: hole,
        highestAddress: hole.end,
        usedEnd: 5 * G,
      });
      const verdict = computeVerdict({
        host: hostFacts(40),
        guest: { ...f, accelerator: 'kvm' },
        policy: { accelerators: ['kvm'], narrowerSeverity: 'ok' },
      });
      t.is(verdict.severity, 'ok');
      t.deepEqual(
        verdict.reasons.map((r) => r.code),
        ['GUEST_EQUALS_HOST'],
      );
      // The BARs and bridge windows firmware placed: within 2^40 like the window that holds them.
      const pci = FIRMWARE_PCI[`${v}-${fw}`];
      const layout = f.layout!;
      t.deepEqual(
        layout.pciBars,
        pci.bar === null
          ? []
          : [
              {
                address: '01:00.0',
                bus: 1,
                slot: 0,
                function: 0,
                id: 'rng64',
                bar: 4,
                base: pci.bar,
                size: 16 * 1024,
                prefetchable: true,
              },
            ],
      );
      t.deepEqual(
        layout.pciBridges!.map((b) => [b.id, b.address, b.secondaryBus]),
        [
          ['rp1', '00:01.0', 1],
          ['rp2', '00:02.0', 2],
          ['rp3', '00:03.0', 3],
        ],
      );
      t.deepEqual(layout.pciBridges![1].prefetchable, pci.rp2);
      for (const b of layout.pciBridges!) t.true(b.prefetchable!.end <= 2 ** 40 && b.memory!.end <= 4 * G);
      // A 39-bit host: a BAR placed at or above 512 GiB is named.
      const narrow = computeVerdict({
        host: hostFacts(39),
        guest: { ...f, accelerator: 'kvm' },
        policy: { accelerators: ['kvm'], narrowerSeverity: 'ok' },
      });
      const barReason = narrow.reasons.find((r) => r.code === 'PCI_BAR_BEYOND_HOST_LIMIT');
      if (pci.bar !== null && pci.bar >= 2 ** 39) {
        t.is(barReason?.severity, 'critical');
        t.regex(barReason!.message, new RegExp(`BAR 4 of 01:00.0 \\("rng64"\\) at 0x${pci.bar.toString(16)}-`));
      } else {
        t.is(barReason, undefined);
      }
    });
  }
}

test('the guest facts of QEMU 7.2 and 10.0 are the same for the same guest', async (t) => {
  for (const s of SCENARIOS) {
    const [a, b] = await Promise.all(VERSIONS.map((v) => readGuestFacts(replaying(transcript(v, s)))));
    // The machine type names its release; the PCI device types differ (igb, ufs, virtio-sound new in 10.0).
    const same = (f: typeof a) => ({ ...f, qemuVersion: '', machineType: '', pciDeviceTypes: [] });
    if (s === 'paused-dimm') t.deepEqual(same(a), same(b));
    else
      t.deepEqual(
        { ...a.layout, pciHole64: null, highestAddress: 0, pciBars: [], pciBridges: [] },
        { ...b.layout, pciHole64: null, highestAddress: 0, pciBars: [], pciBridges: [] },
        s,
      );
  }
});

/** The answers that differ between 7.2 and 10.0 for one scenario (volatile values left out). */
function differing(scenario: string): string[] {
  const [a, b] = VERSIONS.map(
    (v) => new Map(transcript(v, scenario).exchanges.map((e) => [exchangeKey(e.execute, e.arguments), e])),
  );
  const volatile = new Set([
    'query-version',
    'query-cpus-fast',
    'x-query-jit',
    'qom-get {"path":"/machine","property":"type"}',
  ]);
  const out: string[] = [];
  for (const key of new Set([...a.keys(), ...b.keys()])) {
    if (volatile.has(key)) continue;
    const ea = a.get(key);
    const eb = b.get(key);
    const answer = (e: typeof ea) =>
      JSON.stringify(e ? (e.error ? { error: e.error.class } : { return: e.return }) : null);
    if (answer(ea) !== answer(eb)) out.push(key);
  }
  return out.sort();
}

test('what differs between QEMU 7.2 and 10.0 in the answers to what physbits sends', (t) => {
  const common = [
    // 8.2 dropped the machine property; the region's own size is read instead.
    'qom-get {"path":"/machine","property":"device-memory-region-size"}',
    // 9.1 added guest-phys-bits (0: unset).
    'qom-get {"path":"/machine/unattached/device[0]","property":"guest-phys-bits"}',
    // Its property list (device-memory-region-size, rtc_state gone; aux-ram-share, fd-bootchk, shim, smp-cache new).
    'qom-list {"path":"/machine"}',
    // The PCI device types (10.0: igb, ufs, virtio-sound, ...; Debian 13 does not ship qxl).
    'qom-list-types {"abstract":false,"implements":"pci-device"}',
    // 10.0 adds sev-type.
    'query-sev',
    // 10.0 drops singlestep.
    'query-status',
  ];
  t.deepEqual(differing('paused-dimm'), common);
  const firmwarePlaced = [
    'qom-get {"path":"/machine/q35","property":"pci-hole64-end"}',
    'qom-get {"path":"/machine/q35","property":"pci-hole64-start"}',
    // Where firmware put BARs and bridge windows; the devices and their BAR sizes are the same.
    'query-pci',
  ];
  t.deepEqual(differing('seabios'), [...common, ...firmwarePlaced].sort());
  t.deepEqual(differing('ovmf'), [...common, ...firmwarePlaced].sort());
  // query-pci differs only in the addresses firmware chose.
  const placementless = (v: string, s: string): string =>
    JSON.stringify(transcript(v, s).exchanges.find((e) => e.execute === 'query-pci')!.return, (k, x: unknown) =>
      k === 'address' || k === 'base' || k === 'limit' ? 0 : x,
    );
  for (const s of SCENARIOS) t.is(placementless('7.2', s), placementless('10.0', s), s);
});

test('every command physbits sends or guards exists in both schemas; migrate takes channels from 10.0', (t) => {
  for (const v of VERSIONS) {
    const tr = transcript(v, 'paused-dimm');
    for (const e of tr.exchanges) t.not(tr.commands[e.execute], null, `${v}: ${e.execute}`);
    for (const c of ['device_add', 'object-add', 'migrate', 'migrate_cancel', 'human-monitor-command']) {
      t.true(Array.isArray(tr.commands[c]), `${v}: ${c}`);
    }
    t.true(tr.qom['/machine/device-memory[0]']?.includes('size'), `${v}: the region's size property`);
    t.true(tr.qom['/machine/device-memory[0]']?.includes('addr'), `${v}: the region's addr property`);
  }
  t.false(transcript('7.2', 'paused-dimm').commands.migrate!.includes('channels'));
  t.true(transcript('10.0', 'paused-dimm').commands.migrate!.includes('channels'));
  t.true(transcript('7.2', 'paused-dimm').qom['/machine']!.includes('device-memory-region-size'));
  t.false(transcript('10.0', 'paused-dimm').qom['/machine']!.includes('device-memory-region-size'));
});

test('a QEMU that answers neither device-memory size names the read instead of reporting no region', async (t) => {
  const tr = transcript('10.0', 'paused-dimm');
  const cut: Transcript = {
    ...tr,
    exchanges: tr.exchanges.map((e) =>
      e.execute === 'qom-get' && e.arguments?.path === '/machine/device-memory[0]' && e.arguments?.property === 'size'
        ? { ...e, return: undefined, error: { class: 'GenericError', desc: "Property 'memory-region.size' not found" } }
        : e,
    ),
  };
  const f = await readGuestFacts(replaying(cut));
  t.deepEqual(f.unreadable, ['qom-get /machine/device-memory[0] size']);
  t.is(f.layout!.deviceMemory, null);
  const verdict = computeVerdict({
    host: hostFacts(46),
    guest: f,
    policy: { accelerators: ['tcg'], narrowerSeverity: 'ok' },
  });
  t.is(verdict.severity, 'warning');
  t.regex(verdict.reasons.find((r) => r.code === 'GUEST_FACT_UNREADABLE')!.message, /device-memory\[0\] size/);
});
