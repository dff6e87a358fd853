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
 * vfio-pci, ivshmem and nvme PMR BARs are host memory mapped into the guest: KVM refuses the memory
 * slot above the CPU's width (QEMU aborts the VM), and under the 48-bit cap of 4-level nested paging
 * accepts it and aliases it below 2^48; an emulated device's MMIO BAR above the limit is not
 * reliably reachable either way (agent/judge/reasons.ts aboveLimit).
 * Which drivers have a 64-bit BAR, under the name QEMU resolves, is pci-device-table.ts; a driver
 * it does not list is judged as if it had 64-bit BARs of both kinds, and where such a BAR would not
 * fit, guard.onUnknown decides, unless the guest's QEMU says the driver is no PCI device type.
 * Pure: the guest's facts in, a decision out.
 */
import { hex } from '../core/format';
import type { AddressRange, GuestFacts, HostFacts, PciBridgeFact, Policy } from '../core/types';
import { parseMachineType, atLeast } from '../facts/qemu-version';
import { classifyPciDriver, resolveDriver, type Bar64Kinds } from './pci-device-table';
import { quote } from './refusal';

export type { Bar64Kinds } from './pci-device-table';

export interface PciDeviceRequest {
  /** The type QEMU creates (lower case): the alias resolved (pci-device-table.ts). */
  driver: string;
  /** The short name asked for (`virtio-rng`), when it was an alias. */
  alias: string | null;
  id: string | null;
  /** `bus=` as given; null: QEMU picks the first PCI bus, the root bus. */
  bus: string | null;
  kinds: Bar64Kinds;
  /** false: the BAR table does not know the driver; it is judged as if it had 64-bit BARs of both kinds. */
  classified: boolean;
  /** A virtio device whose modern BAR depends on the machine type's default (disable-modern not given). */
  virtioDefault: boolean;
}

const UNLISTED: Bar64Kinds = {
  prefetchable: true,
  nonPrefetchable: true,
  source: 'not in the BAR table of agent/guard/pci-device-table.ts: its BARs are not known',
};

/**
 * The device a device_add would create that may have a 64-bit BAR: listed with one, a virtio PCI
 * device, or a driver the table does not list (which may be a PCI device); null for the drivers
 * the table knows have none.
 */
export function pciDeviceRequest(args: Record<string, unknown> | undefined): PciDeviceRequest | null {
  const raw = args?.driver;
  if (typeof raw !== 'string') return null;
  const { driver, alias } = resolveDriver(raw);
  const c = classifyPciDriver(driver, args!);
  if (c.kind === 'none') return null;
  const bus = typeof args!.bus === 'string' && args!.bus !== '' ? args!.bus : null;
  const id = typeof args!.id === 'string' ? args!.id : null;
  if (c.kind === 'unlisted')
    return { driver, alias, id, bus, kinds: UNLISTED, classified: false, virtioDefault: false };
  return { driver, alias, id, bus, kinds: c.kinds, classified: true, virtioDefault: c.virtio && !c.modernAsked };
}

export type PciDecision =
  | { outcome: 'allow'; message: string }
  | { outcome: 'refuse'; message: string }
  /** `what`: the window is not known, or the device's BARs are not (guard.onUnknown decides). */
  | { outcome: 'unknown'; what: 'window' | 'device'; message: string };

/** The root buses' names: q35's pcie.0, i440fx's pci.0 (hw/pci-host/q35.c, i440fx.c). */
const ROOT_BUSES = new Set(['pcie.0', 'pci.0']);
const FOUR_GIB = 2 ** 32;

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
  const rootWindow = (why: string): Window | string => {
    if (hole) return { range: hole, name: `the root bus's 64-bit PCI hole${why}` };
    // Machine types 2.10 and older (pc_compat_2_10: x-pci-hole64-fix=off) report 0/0 while no BAR
    // sits above 4 GiB, and then offer the guest no 64-bit window in ACPI _CRS
    // (hw/i386/acpi-build.c build_dsdt adds the QWord window only when the hole is not empty):
    // the guest OS keeps the BARs of the root bus, and of every bridge on it, below 4 GiB.
    if (layout.pciHole64Fix === false)
      return {
        range: { start: 0, end: FOUR_GIB },
        name: `the 32-bit PCI space below 4 GiB${why} (the machine type offers the guest no 64-bit window: x-pci-hole64-fix=off and no 64-bit BAR above 4 GiB)`,
      };
    return `the guest's 64-bit PCI hole is not known (the host bridge reports no pci-hole64-start/-end)`;
  };
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
  const driver = dev.alias ? `${dev.alias} (${dev.driver})` : dev.driver;
  return dev.id ? `${driver} ${quote(dev.id)}` : driver;
}

/** hw_compat_2_6 (hw/core/machine.c): virtio-pci disable-modern=on on machine types 2.6 and older. */
export function legacyVirtioMachine(machineType: string | null | undefined): boolean {
  if (!machineType) return false;
  const mt = parseMachineType(machineType);
  return (mt.family === 'pc' || mt.family === 'q35') && mt.version !== null && !atLeast(mt.version, 2, 7);
}

/** Whether this guest's QEMU has `driver` among its PCI device types; null when it did not say. */
function isPciType(driver: string, guest: GuestFacts): boolean | null {
  const types = guest.pciDeviceTypes;
  if (!types) return null;
  return types.some((t) => t.toLowerCase() === driver);
}

/** The PCI rule for one device_add (QMP or HMP). */
export function decidePciHotplug(input: PciRuleInput): PciDecision {
  const { device: dev, guest, host } = input;
  if (!input.policy.accelerators.includes(guest.accelerator)) {
    return { outcome: 'allow', message: `${guest.accelerator} is not an enforced accelerator (policy.accelerators)` };
  }
  if (!dev.classified && isPciType(dev.driver, guest) === false) {
    return { outcome: 'allow', message: `${quote(dev.driver)} is not a PCI device type of this QEMU` };
  }
  if (dev.virtioDefault && legacyVirtioMachine(guest.machineType)) {
    return {
      outcome: 'allow',
      message: `machine type ${guest.machineType} makes virtio devices legacy-only (hw_compat_2_6: disable-modern=on): no 64-bit BAR`,
    };
  }
  const windows = targetWindows(dev, guest);
  if (typeof windows === 'string') {
    return {
      outcome: 'unknown',
      what: 'window',
      message: `where the 64-bit BARs of ${name(dev)} would be placed: ${windows}`,
    };
  }
  const limit = 2 ** host.physBits;
  const above = windows.find((w) => w.range.end > limit);
  if (above && !dev.classified) {
    const listed =
      isPciType(dev.driver, guest) === null
        ? 'may be a PCI device (this QEMU did not list its PCI device types)'
        : 'is a PCI device';
    return {
      outcome: 'unknown',
      what: 'device',
      message:
        `${name(dev)} ${listed} whose BARs physbits does not know, and ${above.name}, ${hex(above.range.start)}-` +
        `${hex(above.range.end - 1)}, reaches above this host's ${host.physBits}-bit physical addresses (${hex(limit)}): ` +
        `plug it into a bus whose windows end below ${hex(limit)}`,
    };
  }
  if (above) {
    const bus = dev.bus === null ? '' : ` on bus ${quote(dev.bus)}`;
    return {
      outcome: 'refuse',
      message:
        `${name(dev)}${bus} has a 64-bit memory BAR (${dev.kinds.source}) that the guest would place in ` +
        `${above.name}, ${hex(above.range.start)}-${hex(above.range.end - 1)}, which reaches above this host's ` +
        `${host.physBits}-bit physical addresses (${hex(limit)}): KVM cannot back a BAR there (it refuses the memory ` +
        `slot above the CPU's width, and under the 48-bit cap of 4-level nested paging the address aliases one below it). Plug it into a bus ` +
        `whose window ends below ${hex(limit)}, or restart the guest with phys-bits=${host.physBits} so that ` +
        `firmware places its 64-bit windows below the limit`,
    };
  }
  const within = windows.map((w) => `${w.name} ends at ${hex(w.range.end)}`).join('; ');
  return { outcome: 'allow', message: `${within || 'no 64-bit window applies'}, within ${host.physBits} bits` };
}
