/**
 * The memory hot-plug rule: refuse a `device_add` of a memory device whose end (address + size)
 * would pass 2^host.physBits while the guest runs under an enforced accelerator. Under KVM the
 * guest would be told memory exists where the host's page tables (EPT/NPT) cannot map it.
 *
 * The address is the device's own property when given (pc-dimm/nvdimm/hv-balloon `addr`,
 * virtio-mem/virtio-pmem `memaddr`; the `addr` of a *-pci device is its PCI slot), read the way
 * QEMU reads it: a QMP number, or a string parsed like qemu_strtou64 with base 0 (decimal, 0x hex,
 * 0 octal; qapi/qobject-input-visitor.c type_uint64_keyval), 0 meaning "choose for me"
 * (hw/mem/memory-device.c memory_device_pre_plug). Otherwise QEMU's own choice is predicted with
 * agent/facts/memory-placement.ts. Passing 2^guest.physBits is left to QEMU: it refuses at start-up a
 * device-memory region that the guest's phys-bits cannot reach (hw/i386/pc.c pc_memory_init), and
 * refuses any device outside that region.
 */
import { parseMemoryDevices, type QmpExecutor } from '../facts/guest-facts';
import { predictPlacement, resolveMemoryDevice, type ResolveOptions } from '../facts/memory-placement';
import type { GuestFacts, HostFacts, Policy } from '../core/types';
import { formatBytes, hex } from '../core/format';
import { quote, REFUSED } from './refusal';

/** Drivers that plug into the device-memory region, and the property holding their address. */
export const MEMORY_DRIVERS: Readonly<Record<string, 'addr' | 'memaddr'>> = {
  'pc-dimm': 'addr',
  nvdimm: 'addr',
  'virtio-mem-pci': 'memaddr',
  'virtio-mem': 'memaddr',
  'virtio-pmem-pci': 'memaddr',
  'virtio-pmem': 'memaddr',
  'hv-balloon': 'addr',
};

export type AddrArgument = { kind: 'absent' } | { kind: 'value'; value: number } | { kind: 'invalid' };

export interface MemoryDeviceRequest {
  /** The driver as QEMU names it (lower case). */
  driver: string;
  id: string | null;
  addrProperty: 'addr' | 'memaddr';
  addr: AddrArgument;
  /** The device_add arguments, driver normalised. */
  args: Record<string, unknown>;
}

const U64 = 1n << 64n;

/** qemu_strtou64(str, NULL, 0): null where QEMU fails; a negative value wraps like strtoull. */
export function parseQemuUint64(text: string): number | null {
  const m = /^[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(text);
  if (!m) return null;
  const digits = m[2];
  let v: bigint;
  if (/^0[xX]/.test(digits)) v = BigInt(digits);
  else if (digits.length > 1 && digits.startsWith('0')) v = BigInt(`0o${digits.slice(1)}`);
  else v = BigInt(digits);
  if (v >= U64) return null;
  if (m[1] === '-' && v !== 0n) v = U64 - v;
  return Number(v);
}

/**
 * An address property as QEMU will see it. QMP numbers and strings both reach QEMU's keyval
 * parser (system/qdev-monitor.c: qemu_opts_from_qdict turns numbers into text, and drops values
 * that are neither number, string nor bool).
 */
export function addrArgument(v: unknown): AddrArgument {
  let n: number | null;
  if (v === undefined || v === null || typeof v === 'object') return { kind: 'absent' };
  if (typeof v === 'number') n = Number.isInteger(v) ? (v < 0 ? 2 ** 64 + v : v) : null;
  else if (typeof v === 'string') n = parseQemuUint64(v);
  else n = null;
  if (n === null) return { kind: 'invalid' };
  return n === 0 ? { kind: 'absent' } : { kind: 'value', value: n };
}

/** The memory device a device_add would create; null for every other device. */
export function memoryDeviceRequest(args: Record<string, unknown> | undefined): MemoryDeviceRequest | null {
  const raw = args?.driver;
  if (typeof raw !== 'string') return null;
  const driver = raw.toLowerCase();
  const addrProperty = MEMORY_DRIVERS[driver];
  if (!addrProperty || !Object.prototype.hasOwnProperty.call(MEMORY_DRIVERS, driver)) return null;
  // hv-balloon without a memdev only balloons: it takes no device memory.
  if (driver === 'hv-balloon' && args!.memdev === undefined) return null;
  const id = typeof args!.id === 'string' ? args!.id : null;
  return { driver, id, addrProperty, addr: addrArgument(args![addrProperty]), args: { ...args, driver } };
}

export type MemoryDecision =
  | { outcome: 'allow'; message: string; placement?: { addr: number; size: number; predicted: boolean } }
  | { outcome: 'refuse'; code: string; message: string }
  | { outcome: 'unknown'; message: string };

function name(dev: MemoryDeviceRequest): string {
  return dev.id ? `${dev.driver} ${quote(dev.id)}` : dev.driver;
}

/**
 * Pure: the verdict for a device at [addr, addr+size) on a host of `hostBits`; `size` null when it
 * could not be told (only decisive when the address itself is at or past the limit).
 */
export function checkMemoryEnd(
  dev: MemoryDeviceRequest,
  addr: number,
  size: number | null,
  hostBits: number,
  predicted: boolean,
): MemoryDecision {
  const limit = 2 ** hostBits;
  const where = predicted ? 'QEMU would place it at' : 'it is asked at';
  const fix = `plug a smaller device, give ${dev.addrProperty}= low enough, or shrink maxmem so that device memory ends below ${hex(limit)}`;
  if (size === null) {
    if (addr < limit) return { outcome: 'unknown', message: `cannot tell the size of ${name(dev)}` };
    return {
      outcome: 'refuse',
      code: REFUSED.MEMORY_ABOVE_HOST_LIMIT,
      message: `${name(dev)}: ${where} ${hex(addr)}, past the end of this host's ${hostBits}-bit physical addresses (${hex(limit)}). The guest would be given memory the host cannot map; ${fix}`,
    };
  }
  const end = addr + size;
  if (end > limit) {
    const room = limit > addr ? ` (only ${formatBytes(limit - addr)} of it below the limit)` : '';
    return {
      outcome: 'refuse',
      code: REFUSED.MEMORY_ABOVE_HOST_LIMIT,
      message: `${name(dev)} of ${formatBytes(size)} would end at ${hex(end)}: ${where} ${hex(addr)}, and this host's ${hostBits}-bit physical addresses end at ${hex(limit)}${room}. The guest would be given memory the host cannot map; ${fix}`,
    };
  }
  return {
    outcome: 'allow',
    message: `${name(dev)} ends at ${hex(end)}, within ${hostBits} bits`,
    placement: { addr, size, predicted },
  };
}

export interface MemoryRuleInput {
  device: MemoryDeviceRequest;
  guest: GuestFacts;
  host: HostFacts;
  policy: Pick<Policy, 'accelerators'>;
  /** Upstream QMP, for the backend's size and the plugged devices. */
  q: QmpExecutor;
  /** Ranges approved moments ago whose device_add QEMU may not have run yet. */
  reserved?: readonly { addr: number; size: number }[];
  /** Device resolution, injectable (default: memory-placement.ts resolveMemoryDevice). */
  resolve?: typeof resolveMemoryDevice;
  /** Where QEMU's paths are measured (its root, `/proc/<pid>/root`) and the host's huge page size. */
  resolveOptions?: () => Promise<ResolveOptions>;
}

/** The memory rule for one device_add (QMP or HMP). */
export async function decideMemoryHotplug(input: MemoryRuleInput): Promise<MemoryDecision> {
  const { device: dev, guest, host } = input;
  if (!input.policy.accelerators.includes(guest.accelerator)) {
    return { outcome: 'allow', message: `${guest.accelerator} is not an enforced accelerator (policy.accelerators)` };
  }
  const limit = 2 ** host.physBits;
  const region = guest.layout?.deviceMemory ?? null;
  // QEMU keeps every memory device inside the device-memory region (hw/mem/memory-device.c).
  const regionFits = !!region && region.base + region.size <= limit;
  if (dev.addr.kind === 'value' && dev.addr.value >= limit) {
    // Refused here even though QEMU would refuse an address outside the region too: the operator
    // learns the real reason (the host's width), and the attempt is counted and alerted.
    return checkMemoryEnd(dev, dev.addr.value, null, host.physBits, false);
  }
  if (regionFits) {
    return {
      outcome: 'allow',
      message: `device memory ends at ${hex(region!.base + region!.size)}, within ${host.physBits} bits`,
    };
  }
  if (dev.addr.kind === 'invalid') {
    return { outcome: 'unknown', message: `cannot read ${dev.addrProperty} of ${name(dev)} as QEMU would` };
  }
  const resolved =
    dev.driver === 'hv-balloon'
      ? null
      : await (input.resolve ?? resolveMemoryDevice)(input.q, dev.args, await (input.resolveOptions?.() ?? {}));
  const size = resolved && resolved.size > 0 ? resolved.size : null;
  if (dev.addr.kind === 'value') return checkMemoryEnd(dev, dev.addr.value, size, host.physBits, false);
  if (!resolved || size === null) {
    return {
      outcome: 'unknown',
      message: `cannot tell the size of ${name(dev)} (memdev ${quote(dev.args.memdev ?? null)})`,
    };
  }
  if (resolved.backend.unmeasured) {
    return {
      outcome: 'unknown',
      message: `cannot measure the page size of ${name(dev)}'s mem-path ${quote(resolved.backend.unmeasured)} (QEMU's root not reachable from here, and the path not found here), so its alignment is not known`,
    };
  }
  if (!region) {
    return {
      outcome: 'unknown',
      message:
        `the device-memory region of the guest is not known` +
        (guest.unreadable?.length ? ` (QEMU did not answer ${guest.unreadable.join(', ')})` : '') +
        `, so where QEMU would place ${name(dev)} cannot be predicted`,
    };
  }
  let plugged: { addr: number; size: number; id?: string | null }[];
  try {
    plugged = parseMemoryDevices(await input.q.execute('query-memory-devices'));
  } catch {
    return {
      outcome: 'unknown',
      message: `query-memory-devices failed, so where QEMU would place ${name(dev)} cannot be predicted`,
    };
  }
  const placed = predictPlacement({
    deviceMemory: region,
    existing: [...plugged, ...(input.reserved ?? [])],
    size,
    align: resolved.align,
  });
  if ('error' in placed) {
    return {
      outcome: 'unknown',
      message: `where QEMU would place ${name(dev)} cannot be predicted (${placed.code}: ${placed.error})`,
    };
  }
  return checkMemoryEnd(dev, placed.addr, size, host.physBits, true);
}
