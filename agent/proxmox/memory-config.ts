/**
 * The memory part of the QEMU command line qemu-server builds (src/PVE/QemuServer/Memory.pm) and
 * the guest-physical layout QEMU makes of it. Pure: config values in, a MemoryPlan out.
 *
 * Memory.pm:
 *  - `memory:` (`N` or `current=N`, MiB, default 512).
 *  - config: without memory hot-plug, `-m N`. With `hotplug: ...memory...` (which needs `numa: 1`
 *    and no `numaN:` lines), `-m size=1024,slots=255,maxmem=<MAX_MEM>M`: 1024 MiB static (times
 *    `sockets` with 1 GiB huge pages), and the rest cold-plugged at start as pc-dimm devices
 *    (foreach_dimm: 32 DIMMs of 512 MiB, then 32 of 1 GiB, 32 of 2 GiB..., 1 GiB steps with 1 GiB
 *    huge pages; each DIMM on NUMA node i mod nodes).
 *  - get_max_mem: the width is the VM's own `phys-bits` (a number, or `host`: the node's
 *    /proc/cpuinfo "address sizes", Helpers.pm get_host_phys_address_bits), else that cpuinfo width
 *    for `cpu: host`/`max`, else the smaller of it and 40 (36 when cpuinfo has none); rounded down
 *    to even; MAX_MEM = 2^(bits-21) MiB (half the address space), at most 4 TiB.
 *  - `numa: 1`: one memory backend per `numaN:` (whose memory must add up to the static memory),
 *    or the static memory split evenly over `sockets` nodes.
 * qemu-server has no virtio-mem: nothing in Memory.pm or QemuServer.pm creates one.
 * The layout (RAM split, device-memory region, 64-bit PCI hole) is agent/facts/guest-layout.ts's
 * estimatePcLayout; the DIMMs are placed by agent/facts/memory-placement.ts predictPlacement.
 */
import { estimatePcLayout, GiB, MiB, type PcLayoutEstimate } from '../facts/guest-layout';
import { predictPlacement, RAM_BACKEND_ALIGN } from '../facts/memory-placement';
import type { MemoryDeviceFact } from '../core/types';
import { clip, invalid, parseInteger, parsePropertyString } from './vm-config';

export const STATIC_MEMORY_MIB = 1024;
export const MAX_NUMA = 8;
/** get_max_mem's cap: 4 TiB in MiB. */
export const MAX_MEM_CAP_MIB = 4 * 1024 * 1024;
const HOTPLUG_FEATURES = new Set(['network', 'disk', 'cpu', 'memory', 'usb', 'cloudinit']);

export interface DimmPlan {
  id: string;
  sizeMiB: number;
  node: number;
}

export interface MemoryPlan {
  /** `memory:` in MiB. */
  memoryMiB: number;
  hotplug: boolean;
  /** -m size (MiB). */
  staticMiB: number;
  /** -m maxmem (MiB) with memory hot-plug; null without. */
  maxMemMiB: number | null;
  /** The width get_max_mem derived maxmem from; null without memory hot-plug. */
  maxMemBits: number | null;
  slots: number;
  dimms: DimmPlan[];
  /** -numa nodes: id, cpus ("0-1"), memory (MiB); empty without `numa: 1`. */
  numaNodes: { id: number; cpus: string; sizeMiB: number }[];
  /** `hugepages:` 2, 1024 or 'any'; null when unset. */
  hugepages: string | null;
  /** The -m argument. */
  mArg: string;
}

export interface MemoryInput {
  conf: Readonly<Record<string, string>>;
  /** /proc/cpuinfo's physical address width on this node (null when it has none). */
  cpuinfoPhysBits: number | null;
  /** The VM's own `cpu:` type and phys-bits (cpu-config.ts configuredPhysBits). */
  cpu: { cputype: string | null; physBits: number | 'host' | null };
  sockets: number;
  cores: number;
}

/** hotplug: '1' is network,disk,usb, '0' nothing (QemuServer.pm parse_hotplug_features). */
export function hotplugFeatures(value: string | undefined): Set<string> {
  if (value === undefined || value === '1') return new Set(['network', 'disk', 'usb']);
  if (value === '0') return new Set();
  const out = new Set<string>();
  for (const f of value.split(/[,;\s]+/).filter(Boolean)) {
    if (!HOTPLUG_FEATURES.has(f)) throw invalid(`hotplug: invalid feature '${clip(f)}'`);
    out.add(f);
  }
  return out;
}

/** `memory:` in MiB (Memory.pm parse_memory; default 512). */
export function currentMemoryMiB(value: string | undefined): number {
  if (value === undefined) return 512;
  const parsed = parsePropertyString(value, ['current'], 'current', `memory '${clip(value)}'`);
  return parseInteger(parsed.current ?? '', 'memory', 16, 2 ** 31);
}

/** Memory.pm get_max_mem: the maxmem (MiB) memory hot-plug gets, and the width it came from. */
export function maxMemMiB(input: Pick<MemoryInput, 'cpuinfoPhysBits' | 'cpu'>): { mib: number; bits: number } {
  let bits: number | null = null;
  const pb = input.cpu.physBits;
  if (pb === 'host') bits = input.cpuinfoPhysBits;
  else if (typeof pb === 'number') bits = pb;
  if (bits === null) {
    const host = input.cpuinfoPhysBits ?? 36;
    bits = input.cpu.cputype === 'host' || input.cpu.cputype === 'max' ? host : Math.min(host, 40);
  }
  const even = bits & ~1;
  const mib = 2 ** (even - 21);
  return { mib: Math.min(mib, MAX_MEM_CAP_MIB), bits };
}

/** Memory.pm foreach_dimm: the DIMMs cold-plugged at start for `memoryMiB` above `staticMiB`. */
export function dimmsFor(memoryMiB: number, staticMiB: number, hugepages: string | null, nodes: number[]): DimmPlan[] {
  const dimms: DimmPlan[] = [];
  if (memoryMiB === staticMiB) return dimms;
  let size = hugepages === '1024' ? 1024 : 512;
  let current = staticMiB;
  for (let j = 0; j < 8; j++) {
    for (let i = 0; i < 32; i++) {
      current += size;
      dimms.push({ id: `dimm${dimms.length}`, sizeMiB: size, node: nodes[i % nodes.length] });
      if (current > memoryMiB) throw invalid(`memory size (${memoryMiB}) must be aligned to ${size} for hotplugging`);
      if (current >= memoryMiB) return dimms;
    }
    size *= 2;
  }
  return dimms;
}

/** A `numaN:` value's cpus and memory (Memory.pm $numa_fmt). */
function parseNumaNode(value: string, i: number): { cpus: string; sizeMiB: number | null } {
  const p = parsePropertyString(value, ['cpus', 'memory', 'hostnodes', 'policy'], 'cpus', `numa${i}`);
  if (!p.cpus || !/^\d+(-\d+)?(;\d+(-\d+)?)*$/.test(p.cpus)) throw invalid(`numa${i}: missing or bad cpus`);
  const sizeMiB = p.memory === undefined ? null : parseInteger(p.memory, `numa${i} memory`, 1, 2 ** 31);
  return { cpus: p.cpus.replace(/;/g, ',cpus='), sizeMiB };
}

/** Memory.pm config for this VM (see the header). Throws VmConfigError where qemu-server would die. */
export function planMemory(input: MemoryInput): MemoryPlan {
  const { conf, sockets, cores } = input;
  const memoryMiB = currentMemoryMiB(conf.memory);
  const hotplug = hotplugFeatures(conf.hotplug).has('memory');
  const numa = conf.numa !== undefined && /^(1|yes|on|true)$/i.test(conf.numa);
  const hugepages = conf.hugepages ?? null;
  if (hugepages !== null && !['2', '1024', 'any'].includes(hugepages))
    throw invalid(`hugepages: '${clip(hugepages)}' is not 2, 1024 or any`);
  const custom = [...Array(MAX_NUMA).keys()].filter((i) => conf[`numa${i}`] !== undefined);

  let staticMiB: number;
  let maxMem: { mib: number; bits: number } | null = null;
  let mArg: string;
  if (hotplug) {
    if (!numa) throw invalid('NUMA needs to be enabled for memory hotplug (qemu-server refuses to start it)');
    maxMem = maxMemMiB(input);
    if (memoryMiB > maxMem.mib) throw invalid(`total memory ${memoryMiB} MiB is bigger than ${maxMem.mib} MiB`);
    if (custom.length > 0) throw invalid('memory hotplug does not work with a custom NUMA topology (numaN)');
    staticMiB = STATIC_MEMORY_MIB * (hugepages === '1024' ? sockets : 1);
    if (memoryMiB < staticMiB) throw invalid(`minimum memory must be ${staticMiB} MiB with memory hotplug`);
    mArg = `size=${staticMiB},slots=255,maxmem=${maxMem.mib}M`;
  } else {
    staticMiB = memoryMiB;
    mArg = String(memoryMiB);
  }
  if (hugepages !== null && !numa) throw invalid('numa needs to be enabled to use hugepages');

  const numaNodes: MemoryPlan['numaNodes'] = [];
  if (numa) {
    let total = 0;
    for (const i of custom) {
      const node = parseNumaNode(conf[`numa${i}`], i);
      if (node.sizeMiB === null) throw invalid(`numa${i}: missing memory`);
      total += node.sizeMiB;
      numaNodes.push({ id: i, cpus: node.cpus, sizeMiB: node.sizeMiB });
    }
    if (custom.length > 0 && total !== staticMiB)
      throw invalid(`total memory of the NUMA nodes (${total} MiB) must equal the static memory (${staticMiB} MiB)`);
    if (custom.length === 0) {
      for (let i = 0; i < sockets; i++) {
        const first = cores * i;
        numaNodes.push({
          id: i,
          cpus: cores > 1 ? `${first}-${first + cores - 1}` : `${first}`,
          sizeMiB: staticMiB / sockets,
        });
      }
    }
  }
  const nodeIds = custom.length > 0 ? custom : [...Array(sockets).keys()];
  const dimms = hotplug ? dimmsFor(memoryMiB, staticMiB, hugepages, nodeIds) : [];
  return {
    memoryMiB,
    hotplug,
    staticMiB,
    maxMemMiB: maxMem?.mib ?? null,
    maxMemBits: maxMem?.bits ?? null,
    slots: hotplug ? 255 : 0,
    dimms,
    numaNodes,
    hugepages,
    mArg,
  };
}

export interface LayoutInput {
  family: 'pc' | 'q35';
  /** "7.2"; undefined: the newest. */
  machineVersion?: string;
  /** The vCPU's CPUID vendor (the AMD 1 TiB relocation follows it). */
  vendor?: string;
  physBits?: number;
}

/** The layout QEMU gives this memory plan, cold-plugged DIMMs placed in the device-memory region. */
export function layoutFor(plan: MemoryPlan, input: LayoutInput): PcLayoutEstimate {
  const layout = estimatePcLayout({
    machine: input.family,
    ramBytes: plan.staticMiB * MiB,
    maxRamBytes: plan.maxMemMiB === null ? 0 : plan.maxMemMiB * MiB,
    slots: plan.slots,
    ...(input.vendor !== undefined ? { vendor: input.vendor } : {}),
    ...(input.physBits !== undefined ? { physBits: input.physBits } : {}),
    ...(input.machineVersion !== undefined ? { machineVersion: input.machineVersion } : {}),
  });
  const dm = layout.deviceMemory;
  if (!dm || plan.dimms.length === 0) return layout;
  // memory-backend-ram regions align to 2 MiB; a hugetlbfs file backend to its page size.
  const align = plan.hugepages === '1024' ? GiB : plan.hugepages === '2' ? 2 * MiB : RAM_BACKEND_ALIGN;
  const devices: MemoryDeviceFact[] = [];
  for (const d of plan.dimms) {
    const size = d.sizeMiB * MiB;
    const placed = predictPlacement({
      deviceMemory: dm,
      existing: devices,
      size,
      align,
    });
    if ('error' in placed) throw invalid(`DIMM ${d.id}: ${placed.error}`);
    devices.push({ type: 'dimm', id: d.id, addr: placed.addr, size });
  }
  const usedEnd = Math.max(layout.usedEnd, ...devices.map((d) => d.addr + d.size));
  return { ...layout, memoryDevices: devices, usedEnd, highestAddress: Math.max(layout.highestAddress, usedEnd) };
}
