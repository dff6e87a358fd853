/**
 * The PCI hot-plug rule: refuse a `device_add` of a PCI device with a 64-bit memory BAR when the
 * window the BAR would be placed in reaches above 2^host.physBits while the guest runs under an
 * enforced accelerator. A hot-plugged device's BARs are assigned by the guest OS (or by firmware at
 * the next boot) inside the window of the bus it sits on, so the window's end bounds the address:
 *  - behind a bridge (pcie-root-port, pci-bridge, ...; `bus=` names it, the bus taking the bridge's
 *    id, hw/pci/pci_bridge.c pci_bridge_initfn): a prefetchable BAR goes into the bridge's
 *    prefetchable window, a non-prefetchable one into its memory window, which the PCI bridge
 *    spec limits to 32 bits; a bridge whose prefetchable window is off (none was reserved for it)
 *    leaves the guest OS to carve one out of the root bus's 64-bit hole;
 *  - on the root bus (no `bus=`, or `pcie.0` / `pci.0`): the 64-bit hole, [pci-hole64-start,
 *    pci-hole64-end) of the host bridge (hw/pci-host/q35.c, i440fx.c: firmware's placed range, at
 *    least pci-hole64-size), which QEMU also describes to the guest in ACPI _CRS.
 * vfio-pci and ivshmem BARs are host memory mapped into the guest: KVM refuses the memory slot
 * above the limit and QEMU aborts the VM; an emulated device's MMIO BAR above it cannot be reached.
 * Which drivers have a 64-bit BAR is a table (PCI_BAR64_DRIVERS); anything else is forwarded.
 * Pure: the guest's facts in, a decision out.
 */
import { hex } from '../core/format';
import type { AddressRange, GuestFacts, HostFacts, PciBridgeFact, Policy } from '../core/types';
import { quote } from './refusal';

export interface Bar64Kinds {
  /** The device has (or may have) a 64-bit prefetchable memory BAR. */
  prefetchable: boolean;
  /** The device has (or may have) a 64-bit non-prefetchable memory BAR. */
  nonPrefetchable: boolean;
  /** Where the classification comes from, for the message and the docs. */
  source: string;
}

const VIRTIO_MODERN: Bar64Kinds = {
  prefetchable: true,
  nonPrefetchable: false,
  source: 'the virtio 1.0 BAR 4 (hw/virtio/virtio-pci.c virtio_pci_device_plugged: 64-bit, prefetchable)',
};

/**
 * Drivers with a 64-bit memory BAR, by name (lower case). virtio-*-pci and vhost-*-pci devices are
 * matched by pattern (virtioBar64) and carry the modern BAR unless disable-modern=on.
 */
export const PCI_BAR64_DRIVERS: Readonly<Record<string, Bar64Kinds>> = {
  // The host device's BARs: any of them may be 64-bit, prefetchable or not.
  'vfio-pci': { prefetchable: true, nonPrefetchable: true, source: "the host device's BARs (hw/vfio/pci.c)" },
  'vfio-pci-nohotplug': {
    prefetchable: true,
    nonPrefetchable: true,
    source: "the host device's BARs (hw/vfio/pci.c)",
  },
  'ivshmem-plain': {
    prefetchable: true,
    nonPrefetchable: false,
    source: 'the shared memory BAR 2 (hw/misc/ivshmem.c: 64-bit, prefetchable)',
  },
  'ivshmem-doorbell': {
    prefetchable: true,
    nonPrefetchable: false,
    source: 'the shared memory BAR 2 (hw/misc/ivshmem.c: 64-bit, prefetchable)',
  },
  nvme: { prefetchable: false, nonPrefetchable: true, source: 'BAR 0 (hw/nvme/ctrl.c: 64-bit)' },
  'qemu-xhci': { prefetchable: false, nonPrefetchable: true, source: 'BAR 0 (hw/usb/hcd-xhci-pci.c: 64-bit)' },
  'nec-usb-xhci': { prefetchable: false, nonPrefetchable: true, source: 'BAR 0 (hw/usb/hcd-xhci-pci.c: 64-bit)' },
  'virtio-vga': VIRTIO_MODERN,
  'virtio-vga-gl': VIRTIO_MODERN,
};

/** virtio-*-pci, vhost-*-pci, vhost-user-*-pci and their -transitional / -non-transitional forms. */
const VIRTIO_PCI = /^(virtio|vhost|vhost-user)-[a-z0-9-]+-pci(-non-transitional|-transitional)?$/;

/** true, "on", "yes" as QEMU's bool property parser reads them (qapi/qobject-input-visitor.c). */
function isOn(v: unknown): boolean {
  return v === true || (typeof v === 'string' && /^(on|yes|true|y)$/i.test(v));
}

/** The 64-bit BAR kinds of a device_add's driver, or null when it has none (as far as known). */
export function bar64Kinds(args: Record<string, unknown>, driver: string): Bar64Kinds | null {
  const known = Object.prototype.hasOwnProperty.call(PCI_BAR64_DRIVERS, driver) ? PCI_BAR64_DRIVERS[driver] : null;
  const virtio = known === VIRTIO_MODERN || VIRTIO_PCI.test(driver);
  if (virtio) return isOn(args['disable-modern']) ? null : VIRTIO_MODERN;
  return known;
}

export interface PciDeviceRequest {
  driver: string;
  id: string | null;
  /** `bus=` as given; null: QEMU picks the first PCI bus, the root bus. */
  bus: string | null;
  kinds: Bar64Kinds;
}

/** The PCI device with a 64-bit BAR a device_add would create; null for every other device. */
export function pciDeviceRequest(args: Record<string, unknown> | undefined): PciDeviceRequest | null {
  const raw = args?.driver;
  if (typeof raw !== 'string') return null;
  const driver = raw.toLowerCase();
  const kinds = bar64Kinds(args!, driver);
  if (!kinds) return null;
  const bus = typeof args!.bus === 'string' && args!.bus !== '' ? args!.bus : null;
  return { driver, id: typeof args!.id === 'string' ? args!.id : null, bus, kinds };
}

export type PciDecision =
  | { outcome: 'allow'; message: string }
  | { outcome: 'refuse'; message: string }
  | { outcome: 'unknown'; message: string };

/** The root buses' names: q35's pcie.0, i440fx's pci.0 (hw/pci-host/q35.c, i440fx.c). */
const ROOT_BUSES = new Set(['pcie.0', 'pci.0']);

interface Window {
  range: AddressRange;
  /** "the prefetchable window of rp2 (00:02.0)". */
  name: string;
}

function bridgeName(b: PciBridgeFact): string {
  return `${quote(b.id)} (${b.address})`;
}

/** Where each kind of 64-bit BAR of `dev` would be placed; a string says why it is not known. */
export function targetWindows(dev: PciDeviceRequest, guest: GuestFacts): Window[] | string {
  const layout = guest.layout;
  if (!layout) return `the layout of the guest is not known`;
  const hole = layout.pciHole64;
  const rootWindow = (why: string): Window | string =>
    hole
      ? { range: hole, name: `the root bus's 64-bit PCI hole${why}` }
      : `the guest's 64-bit PCI hole is not known (the host bridge reports no pci-hole64-start/-end)`;
  const out: Window[] = [];
  const push = (w: Window | string): string | null => {
    if (typeof w === 'string') return w;
    out.push(w);
    return null;
  };
  if (dev.bus === null || ROOT_BUSES.has(dev.bus)) {
    const err = push(rootWindow(dev.bus === null ? ' (no bus= given: QEMU picks the root bus)' : ''));
    return err ?? out;
  }
  if (!layout.pciBridges) return `the guest's PCI bridges are not known (query-pci was not answered)`;
  const bridge = layout.pciBridges.find((b) => b.id === dev.bus);
  if (!bridge) return `no PCI bridge with id ${quote(dev.bus)} was seen in query-pci`;
  if (dev.kinds.prefetchable) {
    const err = bridge.prefetchable
      ? push({ range: bridge.prefetchable, name: `the prefetchable window of bridge ${bridgeName(bridge)}` })
      : push(
          rootWindow(` (bridge ${bridgeName(bridge)} has no prefetchable window: the guest OS would open one there)`),
        );
    if (err) return err;
  }
  if (dev.kinds.nonPrefetchable && bridge.memory) {
    push({ range: bridge.memory, name: `the memory window of bridge ${bridgeName(bridge)}` });
  }
  // Without a memory window a non-prefetchable BAR behind a bridge still stays below 4 GiB (32-bit
  // bridge memory windows, PCI-to-PCI Bridge Architecture 3.2.5.8): nothing to check.
  return out;
}

export interface PciRuleInput {
  device: PciDeviceRequest;
  guest: GuestFacts;
  host: HostFacts;
  policy: Pick<Policy, 'accelerators'>;
}

function name(dev: PciDeviceRequest): string {
  return dev.id ? `${dev.driver} ${quote(dev.id)}` : dev.driver;
}

/** The PCI rule for one device_add (QMP or HMP). */
export function decidePciHotplug(input: PciRuleInput): PciDecision {
  const { device: dev, guest, host } = input;
  if (!input.policy.accelerators.includes(guest.accelerator)) {
    return { outcome: 'allow', message: `${guest.accelerator} is not an enforced accelerator (policy.accelerators)` };
  }
  const windows = targetWindows(dev, guest);
  if (typeof windows === 'string') {
    return { outcome: 'unknown', message: `where the 64-bit BARs of ${name(dev)} would be placed: ${windows}` };
  }
  const limit = 2 ** host.physBits;
  const above = windows.find((w) => w.range.end > limit);
  if (above) {
    const bus = dev.bus === null ? '' : ` on bus ${quote(dev.bus)}`;
    return {
      outcome: 'refuse',
      message:
        `${name(dev)}${bus} has a 64-bit memory BAR (${dev.kinds.source}) that the guest would place in ` +
        `${above.name}, ${hex(above.range.start)}-${hex(above.range.end - 1)}, which reaches above this host's ` +
        `${host.physBits}-bit physical addresses (${hex(limit)}): KVM cannot map a BAR there. Plug it into a bus ` +
        `whose window ends below ${hex(limit)}, or restart the guest with phys-bits=${host.physBits} so that ` +
        `firmware places its 64-bit windows below the limit`,
    };
  }
  const within = windows.map((w) => `${w.name} ends at ${hex(w.range.end)}`).join('; ');
  return { outcome: 'allow', message: `${within || 'no 64-bit window applies'}, within ${host.physBits} bits` };
}
