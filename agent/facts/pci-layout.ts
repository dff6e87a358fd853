/**
 * The PCI part of a guest's layout, from QEMU's `query-pci` reply: every 64-bit memory BAR that is
 * mapped now, and every bridge with the windows it forwards. Pure: a reply in, facts out.
 *
 * What QEMU reports (hw/pci/pci-qmp-cmds.c; hw/pci/pci.c before 8.0, qmp_query_pci_regions and
 * qmp_query_pci_bridge), checked on QEMU 7.2 and 10.0:
 *  - a BAR's `address` is the device's io_regions[i].addr: where the BAR is mapped now, or
 *    PCI_BAR_UNMAPPED (all ones, shown as -1 since the field is a QAPI int) while firmware or the
 *    guest OS has not programmed it or memory decoding is off (hw/pci/pci.c pci_bar_address);
 *  - a bridge's windows are pci_bridge_get_base / pci_bridge_get_limit (hw/pci/pci_bridge.c): the
 *    limit is inclusive; a window is off while base > limit; the prefetchable window carries the
 *    upper 32 bits when the bridge implements them (every QEMU bridge does);
 *  - a window nobody programmed reads base 0, limit 0xfffff on pci-bridge, pcie-pci-bridge and the
 *    xio3130/x3130 switch ports: pci_bridge_reset (hw/pci/pci_bridge.c) clears the base and limit
 *    registers, and a zero limit register reads as 0xfffff (the low 20 bits of a limit are all
 *    ones). Only pcie-root-port resets to the disabled encoding (base 0xfff00000, limit 0xfffff:
 *    hw/pci-bridge/pcie_root_port.c rp_reset, pci_bridge_disable_base_limit). Measured on QEMU 7.2
 *    and 10.0 before firmware runs. A window at address 0 would overlap RAM, which no firmware
 *    or OS programs, so [0, 1 MiB) is read as not programmed;
 *  - devices behind a bridge are listed only once its secondary bus number is set (by firmware):
 *    before that a paused guest shows its root ports with no devices and no windows.
 */
import type { PciInfo, PciDeviceInfo } from '../../qmp/pci-info';
import type { AddressRange, PciBarFact, PciBridgeFact } from '../core/types';
import { asObject } from '../core/checks';

/** At most this many devices are looked at (256 buses × 32 slots × 8 functions is the PCI maximum). */
export const MAX_PCI_DEVICES = 4096;
/** Bridges nested deeper than this are not followed (PCI bus numbers are 8-bit). */
const MAX_DEPTH = 32;
const MAX_ID = 256;
/** PCI_BAR_UNMAPPED as query-pci shows it. */
export const BAR_UNMAPPED = -1;

export interface PciLayout {
  bars: PciBarFact[];
  bridges: PciBridgeFact[];
}

const obj = asObject;
const int = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) ? v : null);
const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** "00:02.0" like lspci. */
export function pciAddress(bus: number, slot: number, fn: number): string {
  return `${hex2(bus)}:${hex2(slot)}.${fn.toString(16)}`;
}

/** What an unprogrammed window reads after pci_bridge_reset: base 0, limit 0xfffff (see the header). */
export const UNPROGRAMMED_LIMIT = 0xfffff;

/**
 * [base, limit] as an exclusive range; null when the window is off (base > limit), not programmed
 * (base 0, limit 0xfffff) or unreadable.
 */
export function bridgeWindow(range: unknown): AddressRange | null {
  const r = obj(range);
  const base = int(r?.base);
  const limit = int(r?.limit);
  if (base === null || limit === null || base < 0 || limit < base) return null;
  if (base === 0 && limit === UNPROGRAMMED_LIMIT) return null;
  return { start: base, end: limit + 1 };
}

/** The facts of a query-pci reply; devices of unexpected shape are skipped. */
export function parseQueryPci(reply: unknown): PciLayout {
  const out: PciLayout = { bars: [], bridges: [] };
  let seen = 0;
  const walk = (devices: unknown, depth: number): void => {
    if (!Array.isArray(devices) || depth > MAX_DEPTH) return;
    for (const raw of devices as unknown[]) {
      if (++seen > MAX_PCI_DEVICES) return;
      const d = obj(raw) as Partial<PciDeviceInfo> | null;
      const bus = int(d?.bus);
      const slot = int(d?.slot);
      const fn = int(d?.function);
      if (!d || bus === null || slot === null || fn === null) continue;
      const address = pciAddress(bus, slot, fn);
      const qdevId = typeof d.qdev_id === 'string' && d.qdev_id !== '' ? d.qdev_id.slice(0, MAX_ID) : null;
      for (const region of Array.isArray(d.regions) ? d.regions : []) {
        const r = obj(region);
        const bar = int(r?.bar);
        const base = int(r?.address);
        const size = int(r?.size);
        if (r?.type !== 'memory' || r.mem_type_64 !== true || bar === null || size === null || size <= 0) continue;
        if (base === null || base === BAR_UNMAPPED || base < 0) continue;
        out.bars.push({
          address,
          bus,
          slot,
          function: fn,
          id: qdevId,
          bar,
          base,
          size,
          prefetchable: r.prefetch === true,
        });
      }
      const bridge = obj(d.pci_bridge);
      if (bridge) {
        const info = obj(bridge.bus);
        out.bridges.push({
          address,
          bus,
          slot,
          function: fn,
          id: qdevId,
          secondaryBus: int(info?.secondary) ?? 0,
          memory: bridgeWindow(info?.memory_range),
          prefetchable: bridgeWindow(info?.prefetchable_range),
        });
        walk(bridge.devices, depth + 1);
      }
    }
  };
  for (const bus of Array.isArray(reply) ? (reply as unknown[]) : []) walk(obj(bus as PciInfo)?.devices, 0);
  return out;
}

/** One past the highest address a placed BAR or an open bridge window reaches (0: none). */
export function pciEnd(layout: PciLayout): number {
  let end = 0;
  for (const b of layout.bars) end = Math.max(end, b.base + b.size);
  for (const w of layout.bridges) end = Math.max(end, w.prefetchable?.end ?? 0, w.memory?.end ?? 0);
  return end;
}

/** "BAR 4 of 01:00.0 (rng64)". */
export function describeBar(b: PciBarFact): string {
  return `BAR ${b.bar} of ${b.address}${b.id ? ` (${JSON.stringify(b.id)})` : ''}`;
}
