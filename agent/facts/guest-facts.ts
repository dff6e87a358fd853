/**
 * Reads what the agent needs to know about one guest over QMP: its CPU's phys-bits and how QEMU
 * resolved them, the accelerator, memory encryption and the memory layout.
 *
 * Two rounds of concurrent commands: the first finds the CPU's QOM path, the host bridge and the
 * machine's own properties; the second reads the CPU and bridge properties. Only the phys-bits
 * read is essential; any other failed read leaves its field null (or the layout null).
 * The reply parsers are pure and exported for tests on literal replies.
 */
import { AgentError } from '../core/errors';
import { normalizeUuid } from '../core/uuid';
import { computeLayout } from './guest-layout';
import { parseQueryPci, pciEnd } from './pci-layout';
import { qemuVersionString } from './qemu-version';
import type { GuestFacts, GuestIncoming, GuestLayout, GuestMemoryEncryption, MemoryDeviceFact } from '../core/types';
import { asObject } from '../core/checks';

/** What readGuestFacts needs of a QMP connection: the QmpClient, or a libvirt monitor passthrough. */
export interface QmpExecutor {
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts?: { timeoutMs?: number }): Promise<T>;
}

/** The CPU's phys-bits could not be read: no CPU listed, or QEMU refused the property (not x86). */
export class GuestFactsError extends AgentError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('GUEST_PHYS_BITS_UNREADABLE', message, options);
  }
}

/** At most this many memory devices are kept from query-memory-devices. */
export const MAX_MEMORY_DEVICES = 1024;
const MAX_TEXT = 256;

/** SEV guest policy bit 2: SEV-ES (AMD SEV API, "Guest Policy"). */
const SEV_POLICY_ES = 0x4;

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' && v.length <= MAX_TEXT ? v : null);
const obj = asObject;

/** The QMP error class of a failed command (CommandError or anything shaped like it). */
export function errorClassOf(err: unknown): string | null {
  const c = (err as { errorClass?: unknown } | null)?.errorClass;
  return typeof c === 'string' ? c : null;
}

/**
 * 'kvm' when query-kvm says enabled; 'tcg' when the TCG-only JIT statistics answer
 * (x-query-jit, QEMU 6.2+, or HMP "info jit" before it); else 'unknown'. QEMU 7.2 has no command
 * naming the accelerator (query-accelerators arrived in 10.x) and no QOM path to the accel object.
 */
export function acceleratorFrom(kvm: unknown, tcgAnswered: boolean | null): string {
  if (obj(kvm)?.enabled === true) return 'kvm';
  if (tcgAnswered === true) return 'tcg';
  return 'unknown';
}

/** "qemu64" from the CPU's QOM type "qemu64-x86_64-cpu"; null for other shapes. */
export function cpuModelFromType(type: unknown): string | null {
  const t = str(type);
  if (!t) return null;
  const m = /^(.+)-(x86_64|i386)-cpu$/.exec(t);
  return m ? m[1] : null;
}

/** The QOM path of the pc/q35 host bridge from `qom-list /machine`. */
export function findHostBridge(qomList: unknown): string | null {
  if (!Array.isArray(qomList)) return null;
  for (const p of qomList.slice(0, 4096)) {
    const name = str(obj(p)?.name);
    const type = str(obj(p)?.type);
    if (name && (type === 'child<q35-pcihost>' || type === 'child<i440FX-pcihost>')) return `/machine/${name}`;
  }
  return null;
}

/**
 * Memory devices from query-memory-devices. addr is `addr` (dimm, nvdimm) or `memaddr`
 * (virtio-mem, virtio-pmem, sgx-epc); size is the guest-physical space taken: `max-size` for
 * virtio-mem (its whole region), else `size`. Entries of unknown shape are skipped.
 */
export function parseMemoryDevices(reply: unknown): MemoryDeviceFact[] {
  if (!Array.isArray(reply)) return [];
  const out: MemoryDeviceFact[] = [];
  for (const entry of reply) {
    if (out.length >= MAX_MEMORY_DEVICES) break;
    const type = str(obj(entry)?.type);
    const data = obj(obj(entry)?.data);
    if (!type || !data) continue;
    const addr = num(data.addr ?? data.memaddr);
    const size = num(data['max-size'] ?? data.size);
    if (addr === null || size === null) continue;
    out.push({ type, id: str(data.id), addr, size });
  }
  return out;
}

export interface EncryptionReads {
  /** query-sev reply, undefined when the command failed (SEV not available). */
  sev: unknown;
  /** QOM type of the machine's confidential-guest-support object, null when none. */
  cgsType: string | null;
  /** Its reduced-phys-bits property. */
  reducedPhysBits: unknown;
}

/** Memory encryption from query-sev and the confidential-guest-support object. */
export function memoryEncryptionFrom(r: EncryptionReads): GuestMemoryEncryption {
  const sev = obj(r.sev);
  const reduced = num(r.reducedPhysBits);
  if (r.cgsType === 'tdx-guest') return { active: true, type: 'tdx', reducedPhysBits: null };
  if (sev?.enabled !== true) return { active: false, type: null, reducedPhysBits: null };
  let type = 'sev';
  if (sev['sev-type'] === 'sev-snp' || r.cgsType === 'sev-snp-guest') type = 'sev-snp';
  else if (((num(sev.policy) ?? 0) & SEV_POLICY_ES) !== 0) type = 'sev-es';
  return { active: true, type, reducedPhysBits: reduced };
}

/** The device-memory (hot-plug) region's QOM path, the same on every QEMU since 2.x. */
export const DEVICE_MEMORY_REGION = '/machine/device-memory[0]';

export interface DeviceMemoryReads {
  /** /machine/device-memory[0] exists (qom-list /machine) or the 7.2 machine property said so. */
  exists: boolean;
  /** qom-get /machine/device-memory[0] size: the MemoryRegion's own "size" (system/memory.c). */
  regionSize: unknown;
  /** qom-get /machine device-memory-region-size: QEMU 7.2's machine property (gone in 8.2+). */
  machineProperty: unknown;
}

/**
 * The device-memory region's size from what QEMU answered: the region object's own `size` (every
 * QEMU: hw/mem/memory-device.c machine_memory_devices_init, 8.2+, and hw/i386/pc.c pc_memory_init
 * before it create the MemoryRegion "device-memory" as a child of the machine), else QEMU 7.2's
 * machine property `device-memory-region-size`, else (neither answered) null with the read that
 * failed named in `unreadable`, never 0: a region that exists is never reported as absent.
 */
export function deviceMemorySizeFrom(r: DeviceMemoryReads): { size: number | null; unreadable: string | null } {
  const region = num(r.regionSize);
  if (region !== null && region > 0) return { size: region, unreadable: null };
  const property = num(r.machineProperty);
  if (property !== null && property > 0) return { size: property, unreadable: null };
  if (!r.exists) return { size: 0, unreadable: null };
  return { size: null, unreadable: `qom-get ${DEVICE_MEMORY_REGION} size` };
}

export interface ReadOptions {
  /** Per-command timeout handed to the executor. */
  timeoutMs?: number;
}

export async function readGuestFacts(q: QmpExecutor, opts: ReadOptions = {}): Promise<GuestFacts> {
  const execOpts = opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : undefined;
  const run = (command: string, args?: Record<string, unknown>) => q.execute<unknown>(command, args, execOpts);
  const soft = (command: string, args?: Record<string, unknown>) => run(command, args).catch(() => undefined);
  const qomGet = (path: string, property: string) => soft('qom-get', { path, property });

  // Round 1: independent reads.
  const cpusP = run('query-cpus-fast');
  cpusP.catch(() => undefined);
  const [
    name,
    uuidReply,
    version,
    kvm,
    status,
    sev,
    machineType,
    machineList,
    dmSize,
    maxBelow,
    memDevs,
    summary,
    cgsPath,
    memoryOpts,
    pci,
    pciTypes,
  ] = await Promise.all([
    soft('query-name'),
    soft('query-uuid'),
    soft('query-version'),
    soft('query-kvm'),
    soft('query-status'),
    soft('query-sev'),
    qomGet('/machine', 'type'),
    soft('qom-list', { path: '/machine' }),
    // QEMU 7.2 only: 8.2 dropped the machine property (the region's own size is read below).
    qomGet('/machine', 'device-memory-region-size'),
    qomGet('/machine', 'max-ram-below-4g'),
    soft('query-memory-devices'),
    soft('query-memory-size-summary'),
    qomGet('/machine', 'confidential-guest-support'),
    // -m size,slots,maxmem as the machine holds it (hw/core/machine.c "memory" property).
    qomGet('/machine', 'memory'),
    // 64-bit BARs and bridge windows as firmware or the guest OS placed them (pci-layout.ts).
    soft('query-pci'),
    // The PCI device types of this QEMU, for drivers the PCI rule's table does not list.
    soft('qom-list-types', { implements: 'pci-device', abstract: false }),
  ]);
  const cpuPath = await cpusP.then(firstCpuPath, (err) => rethrow(err, 'query-cpus-fast failed'));

  const machine = str(machineType);
  const bridge =
    findHostBridge(machineList) ??
    (machine?.startsWith('pc-q35') ? '/machine/q35' : machine?.startsWith('pc-i440fx') ? '/machine/i440fx' : null);
  const hasDeviceMemory =
    (num(dmSize) ?? 0) > 0 ||
    (Array.isArray(machineList) && machineList.some((p) => obj(p)?.name === 'device-memory[0]'));
  const cgs = str(cgsPath);

  // Round 2: the CPU, the host bridge, the accelerator probe and the encryption object.
  const physBitsP = run('qom-get', { path: cpuPath, property: 'phys-bits' });
  physBitsP.catch(() => undefined);
  const bridgeProp = (p: string) => (bridge ? qomGet(bridge, p) : Promise.resolve(undefined));
  const [hostPhysBits, hostPhysBitsLimit, guestPhysBits, vendor, cpuType, tcg, ...rest] = await Promise.all([
    qomGet(cpuPath, 'host-phys-bits'),
    qomGet(cpuPath, 'host-phys-bits-limit'),
    qomGet(cpuPath, 'guest-phys-bits'),
    qomGet(cpuPath, 'vendor'),
    qomGet(cpuPath, 'type'),
    obj(kvm)?.enabled === true ? Promise.resolve(false) : probeTcg(run),
    bridgeProp('pci-hole64-start'),
    bridgeProp('pci-hole64-end'),
    bridgeProp('pci-hole64-size'),
    bridgeProp('x-pci-hole64-fix'),
    bridgeProp('below-4g-mem-size'),
    bridgeProp('above-4g-mem-size'),
    hasDeviceMemory ? qomGet(DEVICE_MEMORY_REGION, 'addr') : Promise.resolve(undefined),
    hasDeviceMemory ? qomGet(DEVICE_MEMORY_REGION, 'size') : Promise.resolve(undefined),
    cgs ? qomGet(cgs, 'type') : Promise.resolve(undefined),
    cgs ? qomGet(cgs, 'reduced-phys-bits') : Promise.resolve(undefined),
  ]);
  const [
    hole64Start,
    hole64End,
    hole64Size,
    hole64Fix,
    below4g,
    above4g,
    dmBase,
    dmRegionSize,
    cgsType,
    reducedPhysBits,
  ] = rest;
  const physBits = num(await physBitsP.catch((err) => rethrow(err, `qom-get ${cpuPath} phys-bits failed`)));
  if (physBits === null || physBits === 0) {
    throw new GuestFactsError(`${cpuPath} reported no phys-bits value`);
  }
  // Only a host-phys-bits=on guest can keep a width other than QEMU's after a migration: ask then.
  const runState = str(obj(status)?.status);
  const incoming = hostPhysBits === true ? incomingMigrationFrom(await soft('query-migrate'), runState) : null;

  const uuid = normalizeUuid(str(obj(uuidReply)?.UUID));
  const memoryDevices = parseMemoryDevices(memDevs);
  const deviceMemory = deviceMemorySizeFrom({
    exists: hasDeviceMemory,
    regionSize: dmRegionSize,
    machineProperty: dmSize,
  });
  const unreadable: string[] = [];
  if (deviceMemory.unreadable) unreadable.push(deviceMemory.unreadable);
  let layout: GuestLayout | null = null;
  try {
    layout = computeLayout({
      machineType: machine,
      vendor: str(vendor),
      physBits,
      ramSize: num(obj(summary)?.['base-memory']),
      maxRamBelow4g: num(maxBelow),
      ramBelow4g: num(below4g),
      ramAbove4g: num(above4g),
      deviceMemoryBase: num(dmBase),
      deviceMemorySize: deviceMemory.size,
      pciHole64Start: num(hole64Start),
      pciHole64End: num(hole64End),
      pciHole64Size: num(hole64Size),
      memoryDevices,
    });
  } catch {
    layout = null;
  }
  if (layout) {
    const m = obj(memoryOpts);
    const size = num(m?.size);
    layout.memoryConfig =
      m && size !== null ? { size, maxSize: num(m['max-size']) ?? size, slots: num(m.slots) ?? 0 } : null;
    layout.pciHole64Size = num(hole64Size);
    layout.pciHole64Fix = typeof hole64Fix === 'boolean' ? hole64Fix : null;
    if (Array.isArray(pci)) {
      const placed = parseQueryPci(pci);
      layout.pciBars = placed.bars;
      layout.pciBridges = placed.bridges;
      layout.highestAddress = Math.max(layout.highestAddress, pciEnd(placed));
    }
  }

  return {
    name: str(obj(name)?.name),
    qemuVersion: qemuVersionString(version) ?? 'unknown',
    accelerator: acceleratorFrom(kvm, tcg),
    physBits,
    hostPhysBits: hostPhysBits === true,
    hostPhysBitsLimit: num(hostPhysBitsLimit) ?? 0,
    guestPhysBits: guestPhysBitsFrom(guestPhysBits),
    cpuModel: cpuModelFromType(cpuType),
    memoryEncryption: memoryEncryptionFrom({ sev, cgsType: str(cgsType), reducedPhysBits }),
    runState,
    layout,
    machineType: machine,
    firmware: firmwareFrom(machineList),
    pciDeviceTypes: parsePciDeviceTypes(pciTypes),
    ...(incoming ? { incoming } : {}),
    ...(unreadable.length > 0 ? { unreadable } : {}),
    ...(uuid !== null ? { uuid } : {}),
  };
}

/** 'pflash' when `qom-list /machine` has system.flash0 (measured: OVMF guests on QEMU 7.2 and 10.0), else 'bios'. */
export function firmwareFrom(machineList: unknown): 'pflash' | 'bios' | null {
  if (!Array.isArray(machineList)) return null;
  return machineList.slice(0, 4096).some((p) => obj(p)?.name === 'system.flash0') ? 'pflash' : 'bios';
}

/** At most this many PCI device types are kept (QEMU 10.0 has about 150 on x86_64). */
export const MAX_PCI_DEVICE_TYPES = 2048;

/** The type names of a `qom-list-types` reply, lower case; null when it is not a list. */
export function parsePciDeviceTypes(reply: unknown): string[] | null {
  if (!Array.isArray(reply)) return null;
  const out: string[] = [];
  for (const t of reply.slice(0, MAX_PCI_DEVICE_TYPES)) {
    const n = str(obj(t)?.name);
    if (n && n.length <= 128) out.push(n.toLowerCase());
  }
  return out;
}

/**
 * Whether this QEMU received its guest by migration, from `query-migrate` and the run state.
 * A QEMU started with `-incoming` runs in state `inmigrate` until the stream is loaded; meanwhile
 * query-migrate lists the address it listens on (`socket-address`, QEMU 4.0+). Once loaded, the
 * destination answers only `{"status": "completed"}`: migration/migration.c
 * fill_destination_migration_info sets the status alone, while a source's answer also carries its
 * `ram` statistics and `total-time` (fill_source_migration_info). Null: not received by migration.
 */
export function incomingMigrationFrom(reply: unknown, runState: string | null): GuestIncoming | null {
  const r = obj(reply);
  const addresses = Array.isArray(r?.['socket-address']) ? (r['socket-address'] as unknown[]) : [];
  const inet = addresses.map(obj).find((a) => a?.type === 'inet' && str(a.port) !== null);
  const port = inet ? str(inet.port) : null;
  if (runState === 'inmigrate') return { state: 'pending', port };
  if (r?.status === 'completed' && r.ram === undefined && r['total-time'] === undefined)
    return { state: 'completed', port };
  return null;
}

/**
 * The CPU's guest-phys-bits (QEMU 9.1+), null when unset: QEMU answers 0 when neither the user nor
 * the accelerator set it (target/i386/cpu.c x86_cpu_realizefn clears the -1 default), and CPUID
 * 0x80000008 EAX[23:16] = 0 tells the guest to use phys-bits. QEMU 7.2 has no such property.
 */
export function guestPhysBitsFrom(value: unknown): number | null {
  const bits = num(value);
  return bits !== null && bits > 0 ? bits : null;
}

/** The first CPU's QOM path from query-cpus-fast. */
export function firstCpuPath(reply: unknown): string {
  const first = Array.isArray(reply) ? obj(reply[0]) : null;
  const path = str(first?.['qom-path']);
  if (!path || !path.startsWith('/machine/'))
    throw new GuestFactsError('query-cpus-fast listed no CPU with a QOM path');
  return path;
}

/** Errors that carry a stable code (protocol, timeout, closed) pass through; QEMU refusals become GuestFactsError. */
function rethrow(err: unknown, what: string): never {
  if (errorClassOf(err) !== null || !(err instanceof Error) || typeof (err as { code?: unknown }).code !== 'string') {
    throw new GuestFactsError(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  throw err;
}

/** True when TCG's JIT statistics answer, false when QEMU says it is not TCG, null when unknown. */
async function probeTcg(
  run: (command: string, args?: Record<string, unknown>) => Promise<unknown>,
): Promise<boolean | null> {
  try {
    await run('x-query-jit');
    return true;
  } catch (err) {
    if (errorClassOf(err) !== 'CommandNotFound') return errorClassOf(err) === null ? null : false;
  }
  try {
    const text = await run('human-monitor-command', { 'command-line': 'info jit' });
    if (typeof text !== 'string') return null;
    return /Translation buffer state/.test(text);
  } catch {
    return null;
  }
}
