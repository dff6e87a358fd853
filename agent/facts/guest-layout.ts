/**
 * The guest-physical memory layout of an x86 "pc" (i440fx) or "q35" machine. Pure: QMP values in
 * (read by guest-facts.ts), a GuestLayout out; plus an estimator for callers that know only a
 * configuration (libvirt domain XML, remediation advice).
 *
 * The rules follow QEMU 7.2 (the version this project is tested against):
 *  - RAM split below/above 4 GiB: hw/i386/pc_q35.c pc_q35_init and hw/i386/pc_piix.c pc_init1.
 *  - Start of the above-4G RAM: 4 GiB, moved to 1 TiB on AMD vCPUs when the highest used address
 *    would reach the HyperTransport hole at 0xfd00000000 (hw/i386/pc.c pc_memory_init, QEMU 7.1+,
 *    machine types 7.1 and later: enforce_amd_1tb_hole).
 *  - Device-memory (hot-plug) region: hw/i386/pc.c pc_get_device_memory_range: base = the end of
 *    above-4G RAM rounded up to 1 GiB; size = maxmem - mem + 1 GiB per slot (enforce_aligned_dimm,
 *    machine types 2.2 and later).
 *  - 64-bit PCI hole: hw/i386/pc.c pc_pci_hole64_start (end of device memory, or of above-4G RAM,
 *    rounded up to 1 GiB) and hw/pci-host/q35.c / i440fx.c (end = start + pci-hole64-size rounded
 *    up to 1 GiB; default size 32 GiB on q35, 2 GiB on i440fx).
 *  - The highest used address that phys-bits must reach: hw/i386/pc.c pc_max_used_gpa
 *    (7.2: hole64 start + hole64 size - 1, or 2^phys-bits - 1 when phys-bits <= 32; 8.2 changed
 *    the 32-bit case to test the long-mode flag and to count device memory).
 */
import type { GuestLayout, MemoryDeviceFact } from '../core/types';
import { atLeast, parseMachineType } from './qemu-version';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
export const FOUR_GIB = 4 * GiB;
/** First address of the AMD HyperTransport reserved range (hw/i386/pc.c AMD_HT_START). */
export const AMD_HT_START = 0xfd00000000;
/** Where above-4G RAM moves on AMD vCPUs when the layout would reach AMD_HT_START. */
export const AMD_ABOVE_1TB_START = 0x10000000000;
/** The host bridges' default pci-hole64-size (hw/pci-host/q35.c, hw/pci-host/i440fx.c). */
export const DEFAULT_PCI_HOLE64_SIZE = { q35: 32 * GiB, pc: 2 * GiB } as const;
/** The machine property max-ram-below-4g defaults to 3.5 GiB (hw/i386/pc.c). */
export const DEFAULT_MAX_RAM_BELOW_4G = 0xe0000000;
/** q35 keeps RAM below 4 GiB up to 2.75 GiB, else splits at 2 GiB (hw/i386/pc_q35.c). */
const Q35_LOWMEM = 0xb0000000;
const Q35_SPLIT = 0x80000000;
/** i440fx splits at 3 GiB once RAM reaches max-ram-below-4g (gigabyte_align, hw/i386/pc_piix.c). */
const PC_GIGABYTE_SPLIT = 0xc0000000;

export type PcFamily = 'q35' | 'pc';
type MachineVersion = { major: number; minor: number } | null;

/** x rounded up to a multiple of `align` (exact for integers below 2^53). */
export function alignUp(x: number, align: number): number {
  if (align <= 1) return x;
  const r = x % align;
  return r === 0 ? x : x + (align - r);
}

/** x rounded down to a multiple of `align` (towards minus infinity, so a negative x stays below 0). */
export function alignDown(x: number, align: number): number {
  return Math.floor(x / align) * align;
}

/**
 * Where above-4G RAM starts in a reported layout: AMD_ABOVE_1TB_START when QEMU moved it past the
 * HyperTransport hole (highRegions), else 4 GiB. The region QEMU places right after that RAM tells:
 * the device-memory region, else the 64-bit PCI hole, else the end of RAM itself; from 4 GiB each of
 * them starts below 1 TiB + the RAM above 4 GiB, from 1 TiB none does.
 */
export function above4gStartOf(
  layout: Pick<GuestLayout, 'ramAbove4g' | 'deviceMemory' | 'pciHole64' | 'usedEnd'>,
): number {
  const after = layout.deviceMemory?.base ?? layout.pciHole64?.start ?? layout.usedEnd;
  return after >= AMD_ABOVE_1TB_START + layout.ramAbove4g ? AMD_ABOVE_1TB_START : FOUR_GIB;
}

/** The smallest phys-bits whose address space contains `addr` (0 → 0). */
export function bitsToAddress(addr: number): number {
  let bits = 0;
  while (2 ** bits <= addr) bits++;
  return bits;
}

/** RAM below and above 4 GiB for `ramBytes` of initial RAM. */
export function splitRam(
  family: PcFamily,
  ramBytes: number,
  opts: { maxRamBelow4g?: number | null; version?: MachineVersion } = {},
): { below: number; above: number } {
  const limit = opts.maxRamBelow4g && opts.maxRamBelow4g > 0 ? opts.maxRamBelow4g : DEFAULT_MAX_RAM_BELOW_4G;
  let lowmem: number;
  if (family === 'q35') {
    lowmem = ramBytes >= Q35_LOWMEM ? Q35_SPLIT : Q35_LOWMEM;
    if (lowmem > limit) lowmem = limit;
  } else {
    lowmem = limit;
    // pc-i440fx-1.7 and older keep the 3.5 GiB split (gigabyte_align off).
    const gigabyteAlign = !opts.version || atLeast(opts.version, 2, 0);
    if (ramBytes >= limit && gigabyteAlign && lowmem > PC_GIGABYTE_SPLIT) lowmem = PC_GIGABYTE_SPLIT;
  }
  return ramBytes >= lowmem ? { below: lowmem, above: ramBytes - lowmem } : { below: ramBytes, above: 0 };
}

/** Size of the device-memory region QEMU creates for -m mem,slots=N,maxmem=M (0: none). */
export function deviceMemoryRegionSize(
  ramBytes: number,
  maxRamBytes: number,
  slots: number,
  version: MachineVersion = null,
): number {
  if (!(maxRamBytes > ramBytes)) return 0;
  // enforce_aligned_dimm (2.2+): room for a 1 GiB alignment gap per slot.
  const alignedDimm = !version || atLeast(version, 2, 2);
  return maxRamBytes - ramBytes + (alignedDimm ? slots * GiB : 0);
}

export interface HighRegionsInput {
  family: PcFamily;
  version: MachineVersion;
  vendor?: string | null;
  physBits?: number | null;
  ramAbove4g: number;
  deviceMemorySize: number;
  pciHole64Size: number;
}

export interface HighRegions {
  above4gStart: number;
  deviceMemory: { base: number; size: number } | null;
  pciHole64: { start: number; end: number };
  /** pc_max_used_gpa: the address phys-bits must reach for QEMU to start. */
  maxUsedGpa: number;
}

/** Lays out above-4G RAM, device memory and the 64-bit hole from a given above-4G start. */
function regionsFrom(start: number, input: HighRegionsInput): HighRegions {
  const ramEnd = start + input.ramAbove4g;
  const deviceMemory = input.deviceMemorySize > 0 ? { base: alignUp(ramEnd, GiB), size: input.deviceMemorySize } : null;
  const holeStart = alignUp(deviceMemory ? deviceMemory.base + deviceMemory.size : ramEnd, GiB);
  const pciHole64 = { start: holeStart, end: alignUp(holeStart + input.pciHole64Size, GiB) };
  const pb = input.physBits ?? null;
  const maxUsedGpa = pb !== null && pb > 0 && pb <= 32 ? 2 ** pb - 1 : holeStart + input.pciHole64Size - 1;
  return { above4gStart: start, deviceMemory, pciHole64, maxUsedGpa };
}

/**
 * Where QEMU puts above-4G RAM, device memory and the 64-bit PCI hole (hw/i386/pc.c): from 4 GiB,
 * unless the vCPU vendor is AuthenticAMD, the machine type is 7.1 or later, and the highest used
 * address computed from 4 GiB reaches AMD_HT_START; then everything starts at 1 TiB.
 */
export function highRegions(input: HighRegionsInput): HighRegions {
  const low = regionsFrom(FOUR_GIB, input);
  const amdHole = input.vendor === 'AuthenticAMD' && (!input.version || atLeast(input.version, 7, 1));
  if (amdHole && low.maxUsedGpa >= AMD_HT_START) return regionsFrom(AMD_ABOVE_1TB_START, input);
  return low;
}

function rangesEnd(ramBelow4g: number, above4gStart: number, ramAbove4g: number): number {
  return ramAbove4g > 0 ? above4gStart + ramAbove4g : ramBelow4g;
}

function devicesEnd(devices: readonly MemoryDeviceFact[]): number {
  let end = 0;
  for (const d of devices) end = Math.max(end, d.addr + d.size);
  return end;
}

/** The values guest-facts.ts reads over QMP; null where a read failed or does not apply. */
export interface LayoutInputs {
  /** qom-get /machine type, e.g. "pc-q35-7.2-machine". */
  machineType: string | null;
  /** CPU "vendor" property (qom-get on the first CPU). */
  vendor: string | null;
  physBits: number;
  /** query-memory-size-summary base-memory. */
  ramSize: number | null;
  /** qom-get /machine max-ram-below-4g. */
  maxRamBelow4g: number | null;
  /** Host bridge below-4g-mem-size / above-4g-mem-size (q35 on 7.2; i440fx only from 8.1). */
  ramBelow4g: number | null;
  ramAbove4g: number | null;
  /** qom-get /machine/device-memory[0] addr (the region's base). */
  deviceMemoryBase: number | null;
  /** The device-memory region's size (guest-facts.ts deviceMemorySizeFrom; 0 when there is none). */
  deviceMemorySize: number | null;
  /** Host bridge pci-hole64-start / -end / -size. */
  pciHole64Start: number | null;
  pciHole64End: number | null;
  pciHole64Size: number | null;
  memoryDevices: MemoryDeviceFact[];
}

/**
 * The layout from what QEMU reported, with the rules above filling what it did not: the RAM split
 * for i440fx on QEMU < 8.1, the device-memory base when its region could not be read. Reported
 * values win over computed ones. Null for machines that are neither pc nor q35 and report nothing.
 */
export function computeLayout(v: LayoutInputs): GuestLayout | null {
  const mt = v.machineType ? parseMachineType(v.machineType) : null;
  const family: PcFamily | null = mt?.family === 'q35' || mt?.family === 'pc' ? mt.family : null;
  const version = mt?.version ?? null;

  let below = v.ramBelow4g;
  let above = v.ramAbove4g;
  if ((below === null || above === null) && family && v.ramSize !== null) {
    const split = splitRam(family, v.ramSize, { maxRamBelow4g: v.maxRamBelow4g, version });
    below = split.below;
    above = split.above;
  }
  if (below === null || above === null) return null;

  const dmSize = v.deviceMemorySize ?? 0;
  const regions = highRegions({
    family: family ?? 'q35',
    version,
    vendor: v.vendor,
    physBits: v.physBits,
    ramAbove4g: above,
    deviceMemorySize: dmSize,
    pciHole64Size: v.pciHole64Size ?? DEFAULT_PCI_HOLE64_SIZE[family ?? 'q35'],
  });
  let above4gStart = regions.above4gStart;
  let deviceMemory: GuestLayout['deviceMemory'] = null;
  if (dmSize > 0) {
    const base = v.deviceMemoryBase ?? regions.deviceMemory?.base ?? alignUp(above4gStart + above, GiB);
    deviceMemory = { base, size: dmSize };
    // The reported base shows whether QEMU moved above-4G RAM to 1 TiB: only then does it sit at
    // or beyond the 1 TiB layout's base.
    above4gStart = base >= alignUp(AMD_ABOVE_1TB_START + above, GiB) ? AMD_ABOVE_1TB_START : FOUR_GIB;
  }

  // Before firmware programs BARs (or on machine types without x-pci-hole64-fix) the bridge may
  // report 0 for both ends: no usable window is known then.
  const pciHole64 =
    v.pciHole64Start !== null && v.pciHole64End !== null && v.pciHole64End > v.pciHole64Start
      ? { start: v.pciHole64Start, end: v.pciHole64End }
      : null;

  const ramEnd = rangesEnd(below, above4gStart, above);
  const usedEnd = Math.max(ramEnd, devicesEnd(v.memoryDevices));
  const highestAddress = Math.max(
    ramEnd,
    deviceMemory ? deviceMemory.base + deviceMemory.size : 0,
    pciHole64 ? pciHole64.end : 0,
    usedEnd,
  );
  return {
    ramBelow4g: below,
    ramAbove4g: above,
    deviceMemory,
    memoryDevices: v.memoryDevices,
    pciHole64,
    highestAddress,
    usedEnd,
  };
}

export interface PcLayoutInput {
  machine: PcFamily;
  /** -m size (initial RAM). */
  ramBytes: number;
  /** -m maxmem (equal to ramBytes, or 0, when there is no hot-plug region). */
  maxRamBytes: number;
  /** -m slots. */
  slots: number;
  /** The vCPU's CPUID vendor ("AuthenticAMD", "GenuineIntel"); absent: no AMD 1 TiB relocation. */
  vendor?: string;
  /** The vCPU's phys-bits; only phys-bits <= 32 changes the result (the 7.2 32-bit rule). */
  physBits?: number;
  /** -machine max-ram-below-4g (default 3.5 GiB). */
  maxRamBelow4g?: number;
  /** Host bridge pci-hole64-size (default 32 GiB on q35, 2 GiB on pc). */
  pciHole64Size?: number;
  /** Machine type version "7.2" (default: current). Matters below 7.1 (no AMD relocation) and 2.2. */
  machineVersion?: string;
}

export interface PcLayoutEstimate extends GuestLayout {
  /** 4 GiB, or 1 TiB after the AMD HyperTransport relocation. */
  above4gStart: number;
  /** QEMU's pc_max_used_gpa: it refuses to start when 2^phys-bits - 1 is below this. */
  maxUsedGpa: number;
  /** The smallest phys-bits QEMU accepts for this configuration. */
  minPhysBits: number;
}

/**
 * The layout QEMU 7.2 gives a pc/q35 machine started with `-m ramBytes,slots=N,maxmem=M`, before
 * firmware runs and with nothing plugged: the rules in this file's header, applied to the
 * configuration alone. pciHole64 is QEMU's default window (start + pci-hole64-size rounded to
 * 1 GiB), which is also what it checks phys-bits against. Firmware may later place 64-bit BARs
 * higher than this window (the bridge then reports the larger end); SGX EPC and CXL windows,
 * which sit between RAM and device memory, are not modelled.
 */
export function estimatePcLayout(input: PcLayoutInput): PcLayoutEstimate {
  const mv = input.machineVersion ? /^(\d+)\.(\d+)/.exec(input.machineVersion) : null;
  const version = mv ? { major: Number(mv[1]), minor: Number(mv[2]) } : null;
  const { below, above } = splitRam(input.machine, input.ramBytes, { maxRamBelow4g: input.maxRamBelow4g, version });
  const r = highRegions({
    family: input.machine,
    version,
    vendor: input.vendor ?? null,
    physBits: input.physBits ?? null,
    ramAbove4g: above,
    deviceMemorySize: deviceMemoryRegionSize(input.ramBytes, input.maxRamBytes, input.slots, version),
    pciHole64Size: input.pciHole64Size ?? DEFAULT_PCI_HOLE64_SIZE[input.machine],
  });
  const ramEnd = rangesEnd(below, r.above4gStart, above);
  return {
    ramBelow4g: below,
    ramAbove4g: above,
    deviceMemory: r.deviceMemory,
    memoryDevices: [],
    pciHole64: r.pciHole64,
    highestAddress: Math.max(ramEnd, r.deviceMemory ? r.deviceMemory.base + r.deviceMemory.size : 0, r.pciHole64.end),
    usedEnd: ramEnd,
    above4gStart: r.above4gStart,
    maxUsedGpa: r.maxUsedGpa,
    minPhysBits: bitsToAddress(r.maxUsedGpa),
  };
}
