/**
 * Where QEMU's pc and q35 machines will place guest RAM and the memory hot-plug region, worked out
 * before the guest exists (from a libvirt domain definition). Pure arithmetic; the rules follow
 * QEMU 7.2:
 *
 * - hw/i386/pc_q35.c pc_q35_init: RAM below 4 GiB is cut at 2 GiB when the guest has 2.75 GiB or
 *   more (0xb0000000), else all of it stays below 4 GiB.
 * - hw/i386/pc_piix.c pc_init1: the cut is at 3.5 GiB (max-ram-below-4g default 0xe0000000), and
 *   lowered to 3 GiB when RAM reaches it (gigabyte alignment of current machine types).
 * - hw/i386/pc.c pc_memory_init: RAM above the cut is mapped from 4 GiB; the device-memory region
 *   starts at the next 1 GiB boundary after it and is (maxmem - mem) + 1 GiB per slot long.
 *   On AMD guest CPUs and machine types 7.1 or newer, when the highest address QEMU might use
 *   (including the 64-bit PCI hole, 32 GiB by default) reaches the HyperTransport window at
 *   1012 GiB, RAM above 4 GiB moves to start at 1 TiB instead.
 */

export const GiB = 1024 * 1024 * 1024;
const FOUR_GIB = 4 * GiB;
/** AMD HyperTransport reserved window start (hw/i386/pc.c AMD_HT_START). */
export const AMD_HT_START = 0xfd00000000;
/** First address past the window (AMD_ABOVE_1TB_START). */
export const AMD_ABOVE_1TB_START = 0x10000000000;
/** Default 64-bit PCI hole size of both host bridges (Q35/I440FX_PCI_HOST_HOLE64_SIZE_DEFAULT). */
export const PCI_HOLE64_DEFAULT = 32 * GiB;

export interface PcLayoutInput {
  machine: 'q35' | 'pc';
  /** QEMU's -m size: RAM present at boot (bytes). */
  ramBytes: number;
  /** -m maxmem, bytes; null or <= ramBytes means no hot-plug region. */
  maxMemoryBytes: number | null;
  /** -m slots. */
  slots: number;
  /** The guest CPU reports AMD (the 1 TiB relocation applies only then). */
  amdGuest: boolean;
  /** Machine type version, e.g. [7, 2]; null for the unversioned alias (the newest). */
  machineVersion: [number, number] | null;
}

export interface PcLayoutEstimate {
  ramBelow4g: number;
  ramAbove4g: number;
  /** Where RAM above 4 GiB starts: 4 GiB, or 1 TiB after the AMD relocation. */
  above4gStart: number;
  deviceMemory: { base: number; size: number } | null;
  /** One past the highest address RAM and the hot-plug region can reach (exclusive end). */
  highestAddress: number;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function splitBelow4g(machine: 'q35' | 'pc', ram: number): [number, number] {
  let lowmem: number;
  if (machine === 'q35') {
    lowmem = ram >= 0xb0000000 ? 0x80000000 : 0xb0000000;
  } else {
    lowmem = 0xe0000000;
    if (ram >= lowmem) lowmem = 0xc0000000;
  }
  return ram >= lowmem ? [lowmem, ram - lowmem] : [ram, 0];
}

function atLeast(version: [number, number] | null, major: number, minor: number): boolean {
  if (version === null) return true;
  return version[0] > major || (version[0] === major && version[1] >= minor);
}

export function estimatePcLayout(input: PcLayoutInput): PcLayoutEstimate {
  const [ramBelow4g, ramAbove4g] = splitBelow4g(input.machine, input.ramBytes);
  const hotplug = input.maxMemoryBytes !== null && input.maxMemoryBytes > input.ramBytes;
  const deviceSize = hotplug ? input.maxMemoryBytes! - input.ramBytes + GiB * input.slots : 0;

  let above4gStart = FOUR_GIB;
  if (input.amdGuest && atLeast(input.machineVersion, 7, 1)) {
    const maxUsed = roundUp(FOUR_GIB + ramAbove4g, GiB) + deviceSize + PCI_HOLE64_DEFAULT;
    if (maxUsed >= AMD_HT_START) above4gStart = AMD_ABOVE_1TB_START;
  }

  let deviceMemory: PcLayoutEstimate['deviceMemory'] = null;
  let highestAddress = ramAbove4g > 0 ? above4gStart + ramAbove4g : ramBelow4g;
  if (hotplug) {
    deviceMemory = { base: roundUp(above4gStart + ramAbove4g, GiB), size: deviceSize };
    highestAddress = deviceMemory.base + deviceMemory.size;
  }
  return { ramBelow4g, ramAbove4g, above4gStart, deviceMemory, highestAddress };
}
