/**
 * The PCI hot-plug rule as a table: which drivers have a 64-bit BAR, which window each device_add
 * lands in, and the decision against the host's limit.
 */
import test from 'ava';
import type { GuestLayout, PciBridgeFact } from '../../agent/core/types';
import { decidePciHotplug, pciDeviceRequest, targetWindows } from '../../agent/guard/pci-hotplug-rule';
import { GiB, guestFacts, hostFacts, layout } from '../helpers/guard-facts';

const ENFORCED = { accelerators: ['kvm'] };

function bridge(id: string, slot: number, prefetchable: { start: number; end: number } | null): PciBridgeFact {
  return {
    address: `00:0${slot}.0`,
    bus: 0,
    slot,
    function: 0,
    id,
    secondaryBus: slot,
    memory: { start: 0xfe600000, end: 0xfe800000 },
    prefetchable,
  };
}

/** SeaBIOS 1.16.3 / OVMF on a 40-bit guest: windows near 768 GiB; QEMU 7.2's SeaBIOS: below 4 GiB. */
const HIGH = { start: 768 * GiB + 512 * 2 ** 20, end: 769 * GiB };
const LOW = { start: 0xfe000000, end: 0xfe200000 };
const firmwareLayout = (over: Partial<GuestLayout> = {}): GuestLayout =>
  layout({
    deviceMemory: null,
    pciHole64: { start: 768 * GiB, end: 800 * GiB },
    highestAddress: 800 * GiB,
    pciBars: [],
    pciBridges: [bridge('rp1', 1, HIGH), bridge('rp2', 2, LOW), bridge('rp3', 3, null)],
    ...over,
  });
const guest = guestFacts({ layout: firmwareLayout() });

test('which device_add has a 64-bit BAR', (t) => {
  const rows: [Record<string, unknown>, { prefetchable: boolean; nonPrefetchable: boolean } | null][] = [
    [
      { driver: 'vfio-pci', host: '0000:01:00.0' },
      { prefetchable: true, nonPrefetchable: true },
    ],
    [
      { driver: 'ivshmem-plain', memdev: 'sh' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [
      { driver: 'ivshmem-doorbell', chardev: 'c' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [{ driver: 'virtio-net-pci' }, { prefetchable: true, nonPrefetchable: false }],
    [
      { driver: 'Virtio-Blk-PCI', drive: 'd' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [{ driver: 'virtio-scsi-pci-non-transitional' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'vhost-user-fs-pci' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'vhost-vsock-pci' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'virtio-vga' }, { prefetchable: true, nonPrefetchable: false }],
    [
      { driver: 'nvme', serial: 'x' },
      { prefetchable: false, nonPrefetchable: true },
    ],
    [{ driver: 'qemu-xhci' }, { prefetchable: false, nonPrefetchable: true }],
    // Legacy-only virtio has no modern BAR.
    [{ driver: 'virtio-net-pci', 'disable-modern': true }, null],
    [{ driver: 'virtio-net-pci', 'disable-modern': 'on' }, null],
    [
      { driver: 'virtio-net-pci', 'disable-modern': 'off' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [{ driver: 'e1000e' }, null],
    [{ driver: 'pcie-root-port' }, null],
    [{ driver: 42 }, null],
    [{}, null],
    // QEMU's short names are the -pci devices on x86 (qdev_alias_table).
    [{ driver: 'virtio-rng' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'virtio-net' }, { prefetchable: true, nonPrefetchable: false }],
    [
      { driver: 'virtio-blk', drive: 'd' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [{ driver: 'virtio-balloon' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'virtio-keyboard' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'virtio-sound' }, { prefetchable: true, nonPrefetchable: false }],
    [{ driver: 'e1000-82540em' }, null],
    [{ driver: 'ahci' }, null],
    // BARs the first table missed (measured with query-pci on QEMU 7.2 and 10.0).
    [
      { driver: 'nvme', serial: 'x', cmb_size_mb: 16 },
      { prefetchable: true, nonPrefetchable: true },
    ],
    [
      { driver: 'nvme', serial: 'x', pmrdev: 'pm' },
      { prefetchable: true, nonPrefetchable: true },
    ],
    [{ driver: 'qxl' }, null],
    [{ driver: 'qxl', vram64_size_mb: 64 }, null],
    [
      { driver: 'qxl', vram64_size_mb: '65' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [
      { driver: 'qxl-vga', vram64_size_mb: 256, vram_size_mb: 128 },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [
      { driver: 'igb', netdev: 'n' },
      { prefetchable: false, nonPrefetchable: true },
    ],
    [{ driver: 'megasas' }, { prefetchable: false, nonPrefetchable: true }],
    [{ driver: 'megasas-gen2' }, { prefetchable: false, nonPrefetchable: true }],
    [
      { driver: 'pci-bridge', chassis_nr: 3 },
      { prefetchable: false, nonPrefetchable: true },
    ],
    [{ driver: 'pci-bridge', chassis_nr: 3, shpc: 'off' }, null],
    [{ driver: 'pcie-pci-bridge' }, { prefetchable: false, nonPrefetchable: true }],
    [
      { driver: 'virtio-mem-pci', memdev: 'm' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    [
      { driver: 'virtio-pmem-pci', memdev: 'm' },
      { prefetchable: true, nonPrefetchable: false },
    ],
    // Drivers the table does not list: judged as if they had both kinds.
    [{ driver: 'usb-tablet' }, { prefetchable: true, nonPrefetchable: true }],
    [{ driver: 'kvaser_pci' }, { prefetchable: true, nonPrefetchable: true }],
  ];
  for (const [args, kinds] of rows) {
    const req = pciDeviceRequest(args);
    t.deepEqual(
      req ? { prefetchable: req.kinds.prefetchable, nonPrefetchable: req.kinds.nonPrefetchable } : null,
      kinds,
      JSON.stringify(args),
    );
  }
  t.like(pciDeviceRequest({ driver: 'vfio-pci', id: 'gpu', bus: 'rp1' }), {
    driver: 'vfio-pci',
    id: 'gpu',
    bus: 'rp1',
  });
  t.like(pciDeviceRequest({ driver: 'vfio-pci', bus: '' }), { id: null, bus: null });
  t.like(pciDeviceRequest({ driver: 'virtio-rng', id: 'r' }), {
    driver: 'virtio-rng-pci',
    alias: 'virtio-rng',
    classified: true,
  });
  t.like(pciDeviceRequest({ driver: 'usb-tablet' }), { driver: 'usb-tablet', classified: false });
  t.regex(pciDeviceRequest({ driver: 'virtio-vga' })!.kinds.source, /BAR 2/);
});

test('the window a device lands in: the bridge named by bus=, else the 64-bit hole', (t) => {
  const rows: [Record<string, unknown>, string | { start: number; end: number }[]][] = [
    [{ driver: 'virtio-rng-pci', bus: 'rp1' }, [HIGH]],
    [{ driver: 'virtio-rng-pci', bus: 'rp2' }, [LOW]],
    // No prefetchable window on rp3: the guest OS opens one in the 64-bit hole.
    [{ driver: 'virtio-rng-pci', bus: 'rp3' }, [{ start: 768 * GiB, end: 800 * GiB }]],
    [{ driver: 'virtio-rng-pci' }, [{ start: 768 * GiB, end: 800 * GiB }]],
    [{ driver: 'virtio-rng-pci', bus: 'pcie.0' }, [{ start: 768 * GiB, end: 800 * GiB }]],
    // Non-prefetchable 64-bit BARs behind a bridge go into its 32-bit memory window.
    [{ driver: 'nvme', bus: 'rp1' }, [{ start: 0xfe600000, end: 0xfe800000 }]],
    [{ driver: 'vfio-pci', bus: 'rp1' }, [HIGH, { start: 0xfe600000, end: 0xfe800000 }]],
    [{ driver: 'nvme' }, [{ start: 768 * GiB, end: 800 * GiB }]],
    [{ driver: 'virtio-rng-pci', bus: 'rp9' }, 'no PCI bridge with id "rp9" was seen in query-pci'],
  ];
  for (const [args, want] of rows) {
    const got = targetWindows(pciDeviceRequest(args)!, guest);
    t.deepEqual(typeof got === 'string' ? got : got.map((w) => w.range), want, JSON.stringify(args));
  }
  const noPci = guestFacts({ layout: firmwareLayout({ pciBridges: undefined }) });
  t.regex(targetWindows(pciDeviceRequest({ driver: 'ivshmem-plain', bus: 'rp1' })!, noPci) as string, /query-pci/);
  const noHole = guestFacts({ layout: firmwareLayout({ pciHole64: null }) });
  t.regex(
    targetWindows(pciDeviceRequest({ driver: 'ivshmem-plain' })!, noHole) as string,
    /64-bit PCI hole is not known/,
  );
  t.regex(targetWindows(pciDeviceRequest({ driver: 'ivshmem-plain', bus: 'rp3' })!, noHole) as string, /hole/);
  t.regex(
    targetWindows(pciDeviceRequest({ driver: 'ivshmem-plain' })!, guestFacts({ layout: null })) as string,
    /layout/,
  );
});

test('decision: refused when the window reaches above 2^host.physBits, naming device and window', (t) => {
  const rows: [Record<string, unknown>, number, 'allow' | 'refuse' | 'unknown'][] = [
    [{ driver: 'virtio-rng-pci', id: 'hot1', bus: 'rp1' }, 39, 'refuse'],
    [{ driver: 'virtio-rng-pci', id: 'hot1', bus: 'rp1' }, 40, 'allow'],
    // QEMU 7.2's SeaBIOS put rp2's window below 4 GiB: fits even a 32-bit limit.
    [{ driver: 'ivshmem-plain', bus: 'rp2' }, 32, 'allow'],
    [{ driver: 'ivshmem-plain', bus: 'rp3' }, 39, 'refuse'],
    [{ driver: 'ivshmem-plain' }, 39, 'refuse'],
    [{ driver: 'nvme', bus: 'rp1' }, 32, 'allow'],
    [{ driver: 'nvme' }, 39, 'refuse'],
    [{ driver: 'vfio-pci', bus: 'rp1' }, 39, 'refuse'],
    [{ driver: 'vfio-pci', bus: 'rp2' }, 39, 'allow'],
    [{ driver: 'vfio-pci', bus: 'nowhere' }, 48, 'unknown'],
  ];
  for (const [args, bits, outcome] of rows) {
    const d = decidePciHotplug({ device: pciDeviceRequest(args)!, guest, host: hostFacts(bits), policy: ENFORCED });
    t.is(d.outcome, outcome, `${JSON.stringify(args)} on ${bits} bits: ${d.message}`);
  }
  const refused = decidePciHotplug({
    device: pciDeviceRequest({ driver: 'virtio-rng-pci', id: 'hot1', bus: 'rp1' })!,
    guest,
    host: hostFacts(39),
    policy: ENFORCED,
  });
  t.is(
    refused.message,
    'virtio-rng-pci "hot1" on bus "rp1" has a 64-bit memory BAR (the virtio 1.0 BAR 4 (hw/virtio/virtio-pci.c ' +
      'virtio_pci_device_plugged: 64-bit, prefetchable)) that the guest would place in the prefetchable window of ' +
      'bridge "rp1" (00:01.0), 0xc020000000-0xc03fffffff, which reaches above this host\'s 39-bit physical ' +
      "addresses (0x8000000000): KVM cannot back a BAR there (it refuses the memory slot above the CPU's width, " +
      'and under the 48-bit cap of 4-level nested paging the address aliases one below it). Plug it into a bus whose window ends below ' +
      '0x8000000000, or restart the guest with phys-bits=39 so that firmware places its 64-bit windows below the limit',
  );
});

test('decision: a window ending exactly at 2^host.physBits fits (exclusive end); one byte more does not', (t) => {
  const at = (end: number) =>
    guestFacts({ layout: firmwareLayout({ pciBridges: [bridge('rp1', 1, { start: end - 2 ** 29, end })] }) });
  const device = pciDeviceRequest({ driver: 'ivshmem-plain', bus: 'rp1' })!;
  t.is(decidePciHotplug({ device, guest: at(2 ** 39), host: hostFacts(39), policy: ENFORCED }).outcome, 'allow');
  t.is(decidePciHotplug({ device, guest: at(2 ** 39 + 1), host: hostFacts(39), policy: ENFORCED }).outcome, 'refuse');
});

test('decision: a guest under an accelerator not in policy.accelerators is not checked', (t) => {
  const d = decidePciHotplug({
    device: pciDeviceRequest({ driver: 'vfio-pci', bus: 'nowhere' })!,
    guest: guestFacts({ accelerator: 'tcg', layout: firmwareLayout() }),
    host: hostFacts(32),
    policy: ENFORCED,
  });
  t.like(d, { outcome: 'allow' });
});

test('decision: a short name is judged as the -pci device QEMU creates, and the message names both', (t) => {
  const d = decidePciHotplug({
    device: pciDeviceRequest({ driver: 'virtio-rng', id: 'r1', bus: 'rp1' })!,
    guest,
    host: hostFacts(39),
    policy: ENFORCED,
  });
  t.is(d.outcome, 'refuse');
  t.regex(d.message, /^virtio-rng \(virtio-rng-pci\) "r1" on bus "rp1" has a 64-bit memory BAR/);
});

test('decision: a driver the table does not list fails closed only where a window reaches above the limit', (t) => {
  const pciTypes = ['kvaser_pci', 'virtio-rng-pci'];
  const withTypes = guestFacts({ layout: firmwareLayout(), pciDeviceTypes: pciTypes });
  const decide = (args: Record<string, unknown>, g = withTypes, bits = 39) =>
    decidePciHotplug({ device: pciDeviceRequest(args)!, guest: g, host: hostFacts(bits), policy: ENFORCED });
  // A PCI device of this QEMU the table does not know: unknown where a window is above the limit.
  const high = decide({ driver: 'kvaser_pci', bus: 'rp1' });
  t.like(high, { outcome: 'unknown', what: 'device' });
  t.regex(
    high.message,
    /^kvaser_pci is a PCI device whose BARs physbits does not know, and the prefetchable window of bridge "rp1"/,
  );
  // ... and allowed where every window it could use fits.
  t.is(decide({ driver: 'kvaser_pci', bus: 'rp2' }, withTypes, 32).outcome, 'allow');
  // Not a PCI device type of this QEMU: no BAR at all.
  t.like(decide({ driver: 'usb-tablet' }), {
    outcome: 'allow',
    message: '"usb-tablet" is not a PCI device type of this QEMU',
  });
  // This QEMU did not list its types: it may be one.
  const noTypes = decide({ driver: 'usb-tablet' }, guest);
  t.like(noTypes, { outcome: 'unknown', what: 'device' });
  t.regex(noTypes.message, /may be a PCI device \(this QEMU did not list its PCI device types\)/);
});

test('decision: machine types 2.6 and older make virtio legacy-only (hw_compat_2_6); 2.7 and later do not', (t) => {
  const at = (machineType: string) =>
    decidePciHotplug({
      device: pciDeviceRequest({ driver: 'virtio-rng-pci', bus: 'rp1' })!,
      guest: guestFacts({ layout: firmwareLayout(), machineType }),
      host: hostFacts(39),
      policy: ENFORCED,
    });
  t.like(at('pc-i440fx-2.6-machine'), { outcome: 'allow' });
  t.regex(at('pc-i440fx-2.6-machine').message, /legacy-only \(hw_compat_2_6: disable-modern=on\)/);
  t.is(at('pc-i440fx-2.7-machine').outcome, 'refuse');
  t.is(at('pc-i440fx-2.10-machine').outcome, 'refuse');
  t.is(at('pc-q35-7.2-machine').outcome, 'refuse');
  // disable-modern=off asks for the modern BAR on any machine type.
  const asked = decidePciHotplug({
    device: pciDeviceRequest({ driver: 'virtio-rng-pci', bus: 'rp1', 'disable-modern': 'off' })!,
    guest: guestFacts({ layout: firmwareLayout(), machineType: 'pc-i440fx-2.6-machine' }),
    host: hostFacts(39),
    policy: ENFORCED,
  });
  t.is(asked.outcome, 'refuse');
});

test('decision: no 64-bit hole on a machine type without x-pci-hole64-fix is the space below 4 GiB, not unknown', (t) => {
  const old = (fix: boolean | null | undefined) =>
    guestFacts({
      machineType: 'pc-i440fx-2.10-machine',
      layout: layout({ deviceMemory: null, pciHole64: null, pciHole64Fix: fix, pciBars: [], pciBridges: [] }),
    });
  const device = pciDeviceRequest({ driver: 'virtio-rng-pci', id: 'r' })!;
  const fixOff = decidePciHotplug({ device, guest: old(false), host: hostFacts(32), policy: ENFORCED });
  t.is(fixOff.outcome, 'allow');
  t.regex(fixOff.message, /32-bit PCI space below 4 GiB .*x-pci-hole64-fix=off.* ends at 0x100000000, within 32 bits/);
  // Not read, or on: still unknown.
  t.like(decidePciHotplug({ device, guest: old(null), host: hostFacts(32), policy: ENFORCED }), {
    outcome: 'unknown',
    what: 'window',
  });
  t.like(decidePciHotplug({ device, guest: old(true), host: hostFacts(32), policy: ENFORCED }), { outcome: 'unknown' });
});
