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
  /**
   * Sends several commands at once and gives each one's outcome in order (QmpClient.executeAll);
   * absent, each is run with execute().
   */
  executeAll?(commands: readonly RoundCommand[], opts?: { timeoutMs?: number }): Promise<CommandOutcome[]>;
}

/** One command of a round: its name and arguments. */
export type RoundCommand = readonly [command: string, args?: Record<string, unknown>];

/** What became of one command: QEMU's reply (its return value or its error), or why none came. */
export type CommandOutcome = { return: unknown } | { error: { class: string; desc: string } } | Error;

/** Each command run with execute(), for an executor that cannot send a round at once. */
function executeEach(
  q: QmpExecutor,
  commands: readonly RoundCommand[],
  opts: { timeoutMs?: number } | undefined,
): Promise<CommandOutcome[]> {
  return Promise.all(
    commands.map(([command, args]) =>
      q.execute<unknown>(command, args, opts).then(
        (value): CommandOutcome => ({ return: value }),
        (err: unknown): CommandOutcome => {
          const errorClass = errorClassOf(err);
          if (errorClass === null) return err instanceof Error ? err : new Error(String(err));
          const desc = (err as { desc?: unknown }).desc;
          return { error: { class: errorClass, desc: typeof desc === 'string' ? desc : (err as Error).message } };
        },
      ),
    ),
  );
}

/** A reply's return value; undefined when the command failed (a read that may fail). */
const valueOf = (outcome: CommandOutcome | undefined): unknown =>
  outcome !== undefined && !(outcome instanceof Error) && 'return' in outcome ? outcome.return : undefined;

/** A reply's return value, or the read's failure: GuestFactsError for QEMU's refusal, a coded error as it came. */
function requiredValue(outcome: CommandOutcome, command: string, what: string): unknown {
  if (outcome instanceof Error) return rethrow(outcome, what);
  if ('error' in outcome)
    throw new GuestFactsError(`${what}: ${command}: ${outcome.error.class}: ${outcome.error.desc}`);
  return outcome.return;
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
  // Each round's commands leave together and are answered in order; their outcomes come back as
  // values (no promise, timer or error object per command when the executor sends a round at once).
  const round = (commands: RoundCommand[]) =>
    q.executeAll ? q.executeAll(commands, execOpts) : executeEach(q, commands, execOpts);
  const qomGet = (path: string, property: string): RoundCommand => ['qom-get', { path, property }];

  // Round 1: independent reads.
  const first = await round([
    ['query-cpus-fast'],
    ['query-name'],
    ['query-uuid'],
    ['query-version'],
    ['query-kvm'],
    ['query-status'],
    ['query-sev'],
    qomGet('/machine', 'type'),
    ['qom-list', { path: '/machine' }],
    // QEMU 7.2 only: 8.2 dropped the machine property (the region's own size is read below).
    qomGet('/machine', 'device-memory-region-size'),
    qomGet('/machine', 'max-ram-below-4g'),
    ['query-memory-devices'],
    ['query-memory-size-summary'],
    qomGet('/machine', 'confidential-guest-support'),
    // -m size,slots,maxmem as the machine holds it (hw/core/machine.c "memory" property).
    qomGet('/machine', 'memory'),
    // 64-bit BARs and bridge windows as firmware or the guest OS placed them (pci-layout.ts).
    ['query-pci'],
    // The PCI device types of this QEMU, for drivers the PCI rule's table does not list.
    ['qom-list-types', { implements: 'pci-device', abstract: false }],
  ]);
  const cpuPath = firstCpuPath(requiredValue(first[0], 'query-cpus-fast', 'query-cpus-fast failed'));
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
  ] = first.slice(1).map(valueOf);

  const machine = str(machineType);
  const bridge =
    findHostBridge(machineList) ??
    (machine?.startsWith('pc-q35') ? '/machine/q35' : machine?.startsWith('pc-i440fx') ? '/machine/i440fx' : null);
  const hasDeviceMemory =
    (num(dmSize) ?? 0) > 0 ||
    (Array.isArray(machineList) && machineList.some((p) => obj(p)?.name === 'device-memory[0]'));
  const cgs = str(cgsPath);
  const askTcg = obj(kvm)?.enabled !== true;

  // Round 2: the CPU, the host bridge, the accelerator probe and the encryption object (by place).
  const second: RoundCommand[] = [
    qomGet(cpuPath, 'phys-bits'),
    qomGet(cpuPath, 'host-phys-bits'),
    qomGet(cpuPath, 'host-phys-bits-limit'),
    qomGet(cpuPath, 'guest-phys-bits'),
    qomGet(cpuPath, 'vendor'),
    qomGet(cpuPath, 'type'),
  ];
  const at = (commands: RoundCommand[]): number => {
    second.push(...commands);
    return second.length - commands.length;
  };
  const tcgAt = askTcg ? at([['x-query-jit']]) : -1;
  const BRIDGE = [
    'pci-hole64-start',
    'pci-hole64-end',
    'pci-hole64-size',
    'x-pci-hole64-fix',
    'below-4g-mem-size',
    'above-4g-mem-size',
  ];
  const bridgeAt = bridge ? at(BRIDGE.map((p) => qomGet(bridge, p))) : -1;
  const dmAt = hasDeviceMemory ? at([qomGet(DEVICE_MEMORY_REGION, 'addr'), qomGet(DEVICE_MEMORY_REGION, 'size')]) : -1;
  const cgsAt = cgs ? at([qomGet(cgs, 'type'), qomGet(cgs, 'reduced-phys-bits')]) : -1;
  const r2 = await round(second);
  const from = (start: number, i: number): unknown => (start < 0 ? undefined : valueOf(r2[start + i]));
  const [hostPhysBits, hostPhysBitsLimit, guestPhysBits, vendor, cpuType] = r2.slice(1, 6).map(valueOf);
  const tcg = askTcg ? await tcgFrom(r2[tcgAt], run) : false;
  const [hole64Start, hole64End, hole64Size, hole64Fix, below4g, above4g] = BRIDGE.map((_, i) => from(bridgeAt, i));
  const [dmBase, dmRegionSize] = [from(dmAt, 0), from(dmAt, 1)];
  const [cgsType, reducedPhysBits] = [from(cgsAt, 0), from(cgsAt, 1)];
  const physBits = num(requiredValue(r2[0], 'qom-get', `qom-get ${cpuPath} phys-bits failed`));
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

/**
 * From x-query-jit's outcome: true when TCG's JIT statistics answered, false when QEMU says it is
 * not TCG, null when unknown; a QEMU without the command (before 6.2) is asked HMP "info jit".
 */
async function tcgFrom(
  jit: CommandOutcome | undefined,
  run: (command: string, args?: Record<string, unknown>) => Promise<unknown>,
): Promise<boolean | null> {
  if (jit === undefined || jit instanceof Error) return null;
  if (!('error' in jit)) return true;
  if (jit.error.class !== 'CommandNotFound') return false;
  try {
    const text = await run('human-monitor-command', { 'command-line': 'info jit' });
    if (typeof text !== 'string') return null;
    return /Translation buffer state/.test(text);
  } catch {
    return null;
  }
}
