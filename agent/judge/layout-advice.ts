/**
 * What to shrink when a guest's address layout does not fit under a width. The arithmetic is QEMU's
 * PC machines' (hw/i386/pc.c, 7.1+), as agent/facts/guest-layout.ts models it: RAM above 4 GiB
 * starts at 4 GiB, or at 1 TiB where QEMU moved it past AMD's HyperTransport hole (above4gStartOf);
 * the device-memory (hot-plug) region starts at the next GiB after it and is (maxmem - memory) +
 * 1 GiB per slot long; the 64-bit PCI hole starts at the next GiB after that and is pci-hole64-size
 * long. QEMU refuses to start ("phys-bits too low") when the hole ends above 2^phys-bits. Pure.
 */
import { formatBytes } from '../core/format';
import type { GuestLayout } from '../core/types';
import { above4gStartOf, alignDown, alignUp, GiB, MiB } from '../facts/guest-layout';
import { qemuSize } from './advice-settings';

export type LayoutRegion = 'ram-above-4g' | 'device-memory' | 'memory-device' | 'pci-hole64';

export interface LayoutFix {
  /** What to change: pci-hole64-size; maxmem (or the device-memory region, when maxmem/slots were not read); memory (-m). */
  setting: 'pci-hole64-size' | 'maxmem' | 'device-memory' | 'memory';
  current: number | null;
  /** The largest value that fits; null when no value of this setting alone is enough. */
  atMost: number | null;
  shrinkBy: number | null;
  /** True when this change alone makes the layout fit. */
  alone: boolean;
  qemu?: string;
  libvirt?: string;
  message: string;
}

export interface LayoutAdvice {
  /** 2^poolBits: the first address a host of the pool cannot back. */
  limit: number;
  /** The layout's highest address as reported now. */
  highestAddress: number;
  /** The end QEMU checks phys-bits against at start (hw/i386/pc.c pc_max_used_gpa + 1). */
  end: number;
  fits: boolean;
  /** end - limit, when positive. */
  overshoot: number;
  /** Where firmware has placed 64-bit BARs beyond the configured window, when it has. */
  firmwareEnd?: number;
  /** The regions that end above the limit. */
  passes: Array<{ region: LayoutRegion; id?: string; end: number }>;
  fixes: LayoutFix[];
  /** The region arithmetic did not reproduce the reported layout exactly: the numbers are estimates. */
  approximate: boolean;
}

/**
 * Pure: where the layout passes 2^bits and the largest value of each setting that would fit. The
 * layout judged is the one QEMU checks phys-bits against at start (pc_max_used_gpa): RAM, device
 * memory and the configured 64-bit PCI window. Firmware may since have placed 64-bit BARs higher
 * (`firmwareEnd`); it places them within the CPU's width, so that part follows the new setting.
 */
export function layoutAdvice(layout: GuestLayout, bits: number): LayoutAdvice {
  const limit = 2 ** bits;
  const hole = layout.pciHole64;
  const configuredHole = layout.pciHole64Size ?? null;
  const holeSize = configuredHole ?? (hole ? Math.max(0, hole.end - hole.start) : 0);
  const dev = layout.deviceMemory && layout.deviceMemory.size > 0 ? layout.deviceMemory : null;
  const ramEnd = above4gStartOf(layout) + layout.ramAbove4g;

  const devBaseModel = alignUp(ramEnd, GiB);
  const holeStartModel = alignUp(dev ? devBaseModel + dev.size : ramEnd, GiB);
  const devBase = dev ? dev.base : devBaseModel;
  const holeStart = hole ? hole.start : holeStartModel;
  const holeEnd = hole ? holeStart + holeSize : 0;
  const devEnd = dev ? dev.base + dev.size : 0;
  const end = configuredHole !== null ? Math.max(layout.usedEnd, devEnd, holeEnd) : layout.highestAddress;
  const endModel = hole ? holeStartModel + holeSize : dev ? devBaseModel + dev.size : ramEnd;
  const approximate =
    endModel !== end || (dev !== null && dev.base !== devBaseModel) || (hole !== null && hole.start !== holeStartModel);
  const fits = end <= limit;

  const passes: LayoutAdvice['passes'] = [];
  if (layout.ramAbove4g > 0 && ramEnd > limit) passes.push({ region: 'ram-above-4g', end: ramEnd });
  if (dev && devEnd > limit) passes.push({ region: 'device-memory', end: devEnd });
  for (const d of layout.memoryDevices) {
    if (d.addr + d.size > limit) passes.push({ region: 'memory-device', id: d.id ?? d.type, end: d.addr + d.size });
  }
  if (hole && holeEnd > limit) passes.push({ region: 'pci-hole64', end: holeEnd });

  const fixes: LayoutFix[] = [];
  if (!fits) {
    if (hole && holeSize > 0) fixes.push(holeFix(limit, holeStart, holeSize));
    if (dev) fixes.push(deviceMemoryFix(layout, limit, devBase, dev.size, holeSize, ramEnd));
    if (layout.ramAbove4g > 0) fixes.push(memoryFix(layout, limit, holeSize, dev !== null));
  }
  const advice: LayoutAdvice = {
    limit,
    highestAddress: layout.highestAddress,
    end,
    fits,
    overshoot: Math.max(0, end - limit),
    passes,
    fixes,
    approximate,
  };
  if (hole && configuredHole !== null && hole.end > alignUp(holeEnd, GiB)) advice.firmwareEnd = hole.end;
  return advice;
}

function holeFix(limit: number, holeStart: number, holeSize: number): LayoutFix {
  const room = alignDown(limit - holeStart, MiB);
  if (room < 0 || room >= holeSize) {
    return {
      setting: 'pci-hole64-size',
      current: holeSize,
      atMost: null,
      shrinkBy: null,
      alone: false,
      message: `the 64-bit PCI hole starts at ${formatBytes(holeStart)}, ${room < 0 ? 'already above' : 'and its size is not what passes'} the limit: shrinking it alone is not enough`,
    };
  }
  return {
    setting: 'pci-hole64-size',
    current: holeSize,
    atMost: room,
    shrinkBy: holeSize - room,
    alone: true,
    qemu: `-global q35-pcihost.pci-hole64-size=${qemuSize(room)}`,
    libvirt: `<pcihole64 unit='KiB'>${room / 1024}</pcihole64>`,
    message: `pci-hole64-size at most ${formatBytes(room)} (now ${formatBytes(holeSize)}); the 64-bit BARs of the guest's devices must still fit in it (i440FX-pcihost on pc machines)`,
  };
}

function deviceMemoryFix(
  layout: GuestLayout,
  limit: number,
  devBase: number,
  devSize: number,
  holeSize: number,
  ramEnd: number,
): LayoutFix {
  // roundUp(devBase + size, 1 GiB) + holeSize <= limit  <=>  size <= floor(limit - holeSize, 1 GiB) - devBase
  const maxRegion = alignDown(limit - holeSize, GiB) - devBase;
  const mc = layout.memoryConfig;
  const withoutDevice = alignUp(ramEnd, GiB) + holeSize <= limit;
  if (mc) {
    const biggest = alignDown(mc.size + maxRegion - mc.slots * GiB, MiB);
    if (maxRegion >= 0 && biggest > mc.size) {
      return {
        setting: 'maxmem',
        current: mc.maxSize,
        atMost: biggest,
        shrinkBy: mc.maxSize - biggest,
        alone: true,
        qemu: `-m ${qemuSize(mc.size)},slots=${mc.slots},maxmem=${qemuSize(biggest)}`,
        libvirt: `<maxMemory slots='${mc.slots}' unit='KiB'>${biggest / 1024}</maxMemory>`,
        message: `maxmem at most ${formatBytes(biggest)} with ${mc.slots} slots (now ${formatBytes(mc.maxSize)}); each slot reserves 1 GiB more`,
      };
    }
    return {
      setting: 'maxmem',
      current: mc.maxSize,
      atMost: withoutDevice ? mc.size : null,
      shrinkBy: withoutDevice ? mc.maxSize - mc.size : null,
      alone: withoutDevice,
      message: withoutDevice
        ? `no device-memory region fits with ${mc.slots} slots: drop maxmem and slots (no memory hot-plug)`
        : 'no maxmem is small enough alone: RAM and the 64-bit PCI hole already pass the limit',
    };
  }
  if (maxRegion >= 0) {
    return {
      setting: 'device-memory',
      current: devSize,
      atMost: maxRegion,
      shrinkBy: devSize - maxRegion,
      alone: true,
      message: `the device-memory region, (maxmem - memory) + 1 GiB per slot, at most ${formatBytes(maxRegion)} (now ${formatBytes(devSize)}): lower maxmem or slots by ${formatBytes(devSize - maxRegion)}`,
    };
  }
  return {
    setting: 'device-memory',
    current: devSize,
    atMost: withoutDevice ? 0 : null,
    shrinkBy: withoutDevice ? devSize : null,
    alone: withoutDevice,
    message: withoutDevice
      ? 'no device-memory region fits: drop maxmem and slots (no memory hot-plug)'
      : 'no maxmem is small enough alone: RAM and the 64-bit PCI hole already pass the limit',
  };
}

function memoryFix(layout: GuestLayout, limit: number, holeSize: number, hasDevice: boolean): LayoutFix {
  // With no device memory: roundUp(start + above, 1 GiB) + holeSize <= limit, where above-4G RAM
  // starts at 4 GiB or, moved past AMD's HyperTransport hole, at 1 TiB.
  const maxAbove = alignDown(limit - holeSize, GiB) - above4gStartOf(layout);
  const current = layout.memoryConfig?.size ?? layout.ramBelow4g + layout.ramAbove4g;
  if (maxAbove < 0) {
    return {
      setting: 'memory',
      current,
      atMost: null,
      shrinkBy: null,
      alone: false,
      message: 'RAM is not what passes the limit: the 64-bit PCI hole alone does',
    };
  }
  const atMost = alignDown(layout.ramBelow4g + maxAbove, MiB);
  const cond = hasDevice ? ' with no device memory (maxmem = memory)' : '';
  return {
    setting: 'memory',
    current,
    atMost,
    shrinkBy: Math.max(0, current - atMost),
    alone: !hasDevice,
    qemu: `-m ${qemuSize(atMost)}`,
    libvirt: `<memory unit='KiB'>${atMost / 1024}</memory>`,
    message: `memory at most ${formatBytes(atMost)}${cond} and the 64-bit PCI hole as it is (now ${formatBytes(current)})`,
  };
}
