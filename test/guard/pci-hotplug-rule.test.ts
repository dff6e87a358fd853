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
    [{ driver: 'virtio-net-device' }, null],
    [{ driver: 'usb-tablet' }, null],
    [{ driver: 42 }, null],
    [{}, null],
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
      'addresses (0x8000000000): KVM cannot map a BAR there. Plug it into a bus whose window ends below ' +
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
