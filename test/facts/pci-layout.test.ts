/**
 * query-pci replies read into BARs and bridge windows (agent/facts/pci-layout.ts), on literal
 * replies shaped as QEMU 7.2 and 10.0 answer (the recorded ones are replayed in qmp-transcripts.test.ts).
 */
import test from 'ava';
import { bridgeWindow, MAX_PCI_DEVICES, parseQueryPci, pciAddress, pciEnd } from '../../agent/facts/pci-layout';

const G = 2 ** 30;
const range = (base: number, limit: number) => ({ base, limit });
/** QEMU's reset state of a bridge window (hw/pci/pci_bridge.c pci_bridge_get_base/limit on zeroed registers). */
const OFF = range(0xfff00000, 0xfffff);

function rootPort(
  id: string,
  slot: number,
  secondary: number,
  pref: { base: number; limit: number },
  devices?: unknown[],
) {
  return {
    bus: 0,
    slot,
    function: 0,
    class_info: { desc: 'PCI bridge', class: 1540 },
    id: { vendor: 6966, device: 12 },
    qdev_id: id,
    regions: [{ bar: 0, type: 'memory', address: 0xfea00000, size: 4096, prefetch: false, mem_type_64: false }],
    pci_bridge: {
      bus: {
        number: 0,
        secondary,
        subordinate: secondary,
        io_range: range(0xc000, 0xcfff),
        memory_range: secondary ? range(0xfe800000, 0xfe9fffff) : OFF,
        prefetchable_range: pref,
      },
      ...(devices ? { devices } : {}),
    },
  };
}

function rng(id: string, bus: number, address: number) {
  return {
    bus,
    slot: 0,
    function: 0,
    class_info: { class: 255 },
    id: { vendor: 6900, device: 4164 },
    qdev_id: id,
    regions: [
      {
        bar: 1,
        type: 'memory',
        address: address === -1 ? -1 : 0xfe800000,
        size: 4096,
        prefetch: false,
        mem_type_64: false,
      },
      { bar: 4, type: 'memory', address, size: 16384, prefetch: true, mem_type_64: true },
    ],
  };
}

test('a firmware-booted guest: the placed 64-bit BAR and each root port with its windows', (t) => {
  const reply = [
    {
      bus: 0,
      devices: [
        {
          bus: 0,
          slot: 0,
          function: 0,
          class_info: { class: 1536 },
          id: { vendor: 32902, device: 10688 },
          qdev_id: '',
          regions: [],
        },
        rootPort('rp1', 1, 1, range(0xc040000000, 0xc05fffffff), [rng('rng64', 1, 0xc040000000)]),
        rootPort('rp2', 2, 2, range(0xc020000000, 0xc03fffffff), [rng('hot1', 2, -1)]),
        {
          bus: 0,
          slot: 31,
          function: 2,
          class_info: { class: 262 },
          id: { vendor: 1, device: 2 },
          qdev_id: '',
          regions: [{ bar: 4, type: 'io', address: 0xc040, size: 32 }],
        },
      ],
    },
  ];
  const pci = parseQueryPci(reply);
  t.deepEqual(pci.bars, [
    {
      address: '01:00.0',
      bus: 1,
      slot: 0,
      function: 0,
      id: 'rng64',
      bar: 4,
      base: 0xc040000000,
      size: 16384,
      prefetchable: true,
    },
  ]);
  t.deepEqual(pci.bridges, [
    {
      address: '00:01.0',
      bus: 0,
      slot: 1,
      function: 0,
      id: 'rp1',
      secondaryBus: 1,
      memory: { start: 0xfe800000, end: 0xfea00000 },
      prefetchable: { start: 0xc040000000, end: 0xc060000000 },
    },
    {
      address: '00:02.0',
      bus: 0,
      slot: 2,
      function: 0,
      id: 'rp2',
      secondaryBus: 2,
      memory: { start: 0xfe800000, end: 0xfea00000 },
      prefetchable: { start: 0xc020000000, end: 0xc040000000 },
    },
  ]);
  t.is(pciEnd(pci), 0xc060000000);
});

test('a paused guest: unmapped BARs (-1) are left out, windows in their reset state are off', (t) => {
  const pci = parseQueryPci([{ bus: 0, devices: [rootPort('rp1', 1, 0, OFF)] }]);
  t.deepEqual(pci.bars, []);
  t.like(pci.bridges[0], { id: 'rp1', secondaryBus: 0, memory: null, prefetchable: null });
  t.is(pciEnd(pci), 0);
  t.is(bridgeWindow(OFF), null);
  // pci-bridge, pcie-pci-bridge and the xio3130 ports read base 0 / limit 0xfffff until programmed
  // (pci_bridge_reset; measured on QEMU 7.2 and 10.0): not a window at [0, 1 MiB).
  t.is(bridgeWindow(range(0, 0xfffff)), null);
  const bridge = parseQueryPci([{ bus: 0, devices: [rootPort('pb1', 3, 0, range(0, 0xfffff))] }]);
  t.like(bridge.bridges[0], { id: 'pb1', memory: null, prefetchable: null });
  // A programmed window that starts at 0 but is larger is still read.
  t.deepEqual(bridgeWindow(range(0, 0x1fffff)), { start: 0, end: 0x200000 });
  t.deepEqual(bridgeWindow(range(0x100000, 0x1fffff)), { start: 0x100000, end: 0x200000 });
});

test('32-bit and I/O BARs are not 64-bit BARs; a device without qdev id has id null', (t) => {
  const pci = parseQueryPci([
    {
      bus: 0,
      devices: [
        {
          bus: 0,
          slot: 3,
          function: 1,
          qdev_id: '',
          regions: [
            { bar: 0, type: 'memory', address: 0xc0000000, size: 4096, prefetch: true, mem_type_64: false },
            { bar: 2, type: 'memory', address: 64 * G, size: G, prefetch: false, mem_type_64: true },
            { bar: 5, type: 'io', address: 0x700, size: 64 },
          ],
        },
      ],
    },
  ]);
  t.deepEqual(pci.bars, [
    { address: '00:03.1', bus: 0, slot: 3, function: 1, id: null, bar: 2, base: 64 * G, size: G, prefetchable: false },
  ]);
  t.is(pciAddress(0x1a, 0x1f, 7), '1a:1f.7');
});

test('replies of the wrong shape give nothing; the number of devices looked at is bounded', (t) => {
  for (const bad of [null, {}, 'x', [{ bus: 0, devices: 'no' }], [{ devices: [{ bus: 'a', slot: 0, function: 0 }] }]]) {
    t.deepEqual(parseQueryPci(bad), { bars: [], bridges: [] });
  }
  const many = Array.from({ length: MAX_PCI_DEVICES + 10 }, (_, i) => ({
    bus: 0,
    slot: i % 32,
    function: 0,
    qdev_id: `d${i}`,
    regions: [{ bar: 4, type: 'memory', address: 8 * G + i * 16384, size: 16384, prefetch: true, mem_type_64: true }],
  }));
  t.is(parseQueryPci([{ bus: 0, devices: many }]).bars.length, MAX_PCI_DEVICES);
});
