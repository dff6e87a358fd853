/**
 * Remediation advice: the width that makes each guest safe on every host of its pool, the setting
 * that pins it in QEMU, libvirt and Proxmox, and what to shrink when the guest's address layout does
 * not fit under that width. Pure: the input is the same as the fleet view's.
 *
 * The layout arithmetic follows QEMU's PC machines (hw/i386/pc.c, 7.1+): RAM above 4 GiB starts at
 * 4 GiB; the device-memory (hot-plug) region starts at the next GiB after it and is
 * (maxmem - memory) + 1 GiB per slot long; the 64-bit PCI hole starts at the next GiB after that and
 * is pci-hole64-size long. QEMU refuses to start ("phys-bits too low") when the hole ends above
 * 2^phys-bits.
 */
import { AgentError } from '../core/errors';
import { EXIT, exitCodeFor, worstState, type State } from '../core/exit-codes';
import { formatBytes } from '../core/format';
import { fleetHosts, fleetVms, isBound, type FleetHost, type FleetInput } from './fleet';
import type { GuestFacts, GuestLayout, PrometheusSource, VmErrorInfo, VmStatus } from '../core/types';

/** An advice request that cannot be answered. `exitCode` is what the CLI exits with. */
export class AdviceError extends AgentError {
  readonly exitCode: number;
  constructor(code: 'VM_NOT_FOUND' | 'VM_AMBIGUOUS' | 'POOL_BITS_INVALID', message: string, exitCode: number) {
    super(code, message);
    this.exitCode = exitCode;
  }
}

export interface AdviseOptions {
  /** Only this VM: its name, or "host/name". */
  vm?: string;
  /** Plan for this width instead of the pool's narrowest host. */
  poolBits?: number;
}

/** The fleet view's input (this host's status, its peers, the policy), inline or under `fleet`. */
export type AdviseInput = (FleetInput | { fleet: FleetInput }) & AdviseOptions;

export interface AdviceSettings {
  /** `-cpu MODEL,phys-bits=N` */
  qemu: string;
  /** `-cpu MODEL,host-phys-bits=on,host-phys-bits-limit=N` (KVM: the host's width, capped at N). */
  qemuHostPhysBits: string;
  /** `<maxphysaddr mode='emulate' bits='N'/>` inside `<cpu>` (libvirt 8.7.0+). */
  libvirt: string;
  /** `<maxphysaddr mode='passthrough' limit='N'/>` (libvirt 9.3.0+, host-passthrough CPUs only). */
  libvirtPassthrough: string;
  /** `cpu: MODEL,phys-bits=N` in /etc/pve/qemu-server/VMID.conf. */
  proxmox: string;
  /** `-cpu MODEL,guest-phys-bits=N`, when the guest's QEMU has guest-phys-bits (9.1+). */
  qemuGuestPhysBits?: string;
}

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

export interface GuestAdvice {
  host: string;
  vm: string;
  /** The VM's id on its host, when the status it came from had one. */
  id?: string;
  physBits: number | null;
  poolBits: number | null;
  poolHosts: string[];
  safe: boolean | null;
  layoutFits: boolean | null;
  accelerator: string | null;
  bound: boolean | null;
  /** How the width is set now: "phys-bits=46", "host-phys-bits=on", "host-phys-bits=on,host-phys-bits-limit=39". */
  current: string | null;
  settings: AdviceSettings | null;
  layout: LayoutAdvice | null;
  notes: string[];
  state: 'ok' | 'warning' | 'unknown';
  error?: VmErrorInfo;
}

export interface AdviceDocument {
  poolBits: number | null;
  poolBitsSource: 'requested' | 'pool';
  pool: { hosts: Array<{ name: string; physBits: number | null; reachable: boolean }>; unreachable: string[] };
  guests: GuestAdvice[];
  summary: { worst: State; exitCode: number };
  prometheus?: PrometheusSource;
}

const MIB = 2 ** 20;
const GIB = 2 ** 30;
const FOUR_GIB = 4 * GIB;
const floorTo = (x: number, unit: number) => Math.floor(x / unit) * unit;
const ceilTo = (x: number, unit: number) => Math.ceil(x / unit) * unit;

/** QEMU's valid phys-bits for a 64-bit CPU (target/i386/cpu.c: 32 to TARGET_PHYS_ADDR_SPACE_BITS). */
export const MIN_PHYS_BITS = 32;
export const MAX_PHYS_BITS = 52;

/** "qemu64-x86_64-cpu" → "qemu64"; null → "MODEL", a placeholder for the operator to fill in. */
export function cpuModelName(model: string | null): string {
  if (!model) return 'MODEL';
  return model.replace(/-(x86_64|i386)-cpu$/, '');
}

/** [major, minor] of "9.1.0", "7.2.22 (Debian ...)"; null when unreadable. */
export function qemuVersionOf(text: string): [number, number] | null {
  const m = /^v?(\d+)\.(\d+)/.exec(text.trim());
  return m ? [Number(m[1]), Number(m[2])] : null;
}

function hasGuestPhysBits(g: GuestFacts): boolean {
  if (g.guestPhysBits !== null && g.guestPhysBits !== undefined) return true;
  const v = qemuVersionOf(g.qemuVersion ?? '');
  return v !== null && (v[0] > 9 || (v[0] === 9 && v[1] >= 1));
}

export function settingsFor(model: string | null, bits: number, guestPhysBits: boolean): AdviceSettings {
  const m = cpuModelName(model);
  const s: AdviceSettings = {
    qemu: `-cpu ${m},phys-bits=${bits}`,
    qemuHostPhysBits: `-cpu ${m},host-phys-bits=on,host-phys-bits-limit=${bits}`,
    libvirt: `<maxphysaddr mode='emulate' bits='${bits}'/>`,
    libvirtPassthrough: `<maxphysaddr mode='passthrough' limit='${bits}'/>`,
    proxmox: `cpu: ${m},phys-bits=${bits}`,
  };
  if (guestPhysBits) s.qemuGuestPhysBits = `-cpu ${m},guest-phys-bits=${bits}`;
  return s;
}

export function currentSetting(g: GuestFacts): string {
  if (!g.hostPhysBits) return `phys-bits=${g.physBits}`;
  return g.hostPhysBitsLimit > 0
    ? `host-phys-bits=on,host-phys-bits-limit=${g.hostPhysBitsLimit}`
    : 'host-phys-bits=on';
}

/** A size for QEMU's command line: "473G", "1536M" (whole MiB; -m reads a bare number as MiB). */
export function qemuSize(bytes: number): string {
  return bytes % GIB === 0 ? `${bytes / GIB}G` : `${Math.floor(bytes / MIB)}M`;
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
  const ramEnd = FOUR_GIB + layout.ramAbove4g;

  const devBaseModel = ceilTo(ramEnd, GIB);
  const holeStartModel = ceilTo(dev ? devBaseModel + dev.size : ramEnd, GIB);
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
  if (hole && configuredHole !== null && hole.end > ceilTo(holeEnd, GIB)) advice.firmwareEnd = hole.end;
  return advice;
}

function holeFix(limit: number, holeStart: number, holeSize: number): LayoutFix {
  const room = floorTo(limit - holeStart, MIB);
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
  const maxRegion = floorTo(limit - holeSize, GIB) - devBase;
  const mc = layout.memoryConfig;
  const withoutDevice = ceilTo(ramEnd, GIB) + holeSize <= limit;
  if (mc) {
    const biggest = floorTo(mc.size + maxRegion - mc.slots * GIB, MIB);
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
  // With no device memory: roundUp(4 GiB + above, 1 GiB) + holeSize <= limit.
  const maxAbove = floorTo(limit - holeSize, GIB) - FOUR_GIB;
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
  const atMost = floorTo(layout.ramBelow4g + maxAbove, MIB);
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

/** Pure: advice for every guest of the fleet, or for the one named. */
export function advise(request: AdviseInput): AdviceDocument {
  const input: FleetInput & AdviseOptions =
    'fleet' in request ? { ...request.fleet, vm: request.vm, poolBits: request.poolBits } : request;
  const hosts = fleetHosts(input);
  const unreachable = hosts.filter((h) => !h.reachable).map((h) => h.name);
  if (
    input.poolBits !== undefined &&
    (!Number.isInteger(input.poolBits) || input.poolBits < MIN_PHYS_BITS || input.poolBits > MAX_PHYS_BITS)
  ) {
    throw new AdviceError(
      'POOL_BITS_INVALID',
      `pool width ${input.poolBits}: QEMU takes phys-bits from ${MIN_PHYS_BITS} to ${MAX_PHYS_BITS}`,
      EXIT.USAGE,
    );
  }
  const known = hosts.map((h) => h.physBits).filter((b): b is number => b !== null);
  const poolBits = input.poolBits ?? (known.length ? Math.min(...known) : null);
  let vms = fleetVms(input);
  if (input.vm !== undefined) {
    const want = input.vm;
    const byId = vms.filter(({ vm }) => vm.id === want);
    vms = byId.length ? byId : vms.filter(({ host, vm }) => vm.name === want || `${host}/${vm.name}` === want);
    if (vms.length === 0) {
      const where = unreachable.length ? ` (not reachable: ${unreachable.join(', ')})` : '';
      // Unknown, like any other thing physbits cannot find (exit 3).
      throw new AdviceError(
        'VM_NOT_FOUND',
        `no VM named '${want}' on ${hosts
          .filter((h) => h.reachable)
          .map((h) => h.name)
          .join(', ')}${where}`,
        EXIT.UNKNOWN,
      );
    }
    const hostsOfName = vms.map(({ host }) => host);
    if (new Set(hostsOfName).size < hostsOfName.length)
      throw new AdviceError(
        'VM_AMBIGUOUS',
        `${vms.length} VMs are named '${want}': name one by its id (${vms
          .map(({ host, vm }) => `${vm.id ?? '?'} on ${host}`)
          .join(', ')})`,
        EXIT.USAGE,
      );
  }
  const guests = vms.map(({ host, vm }) => {
    // Hosts that carry a pool label (from Prometheus) are advised within their own pool.
    const pool = poolOf(hosts, host);
    const bits = input.poolBits ?? (pool === hosts ? poolBits : narrowest(pool));
    return guestAdvice(
      host,
      vm,
      bits,
      pool.map((h) => h.name),
      input,
    );
  });
  const states: State[] = guests.map((g) => g.state);
  if (unreachable.length) states.push('unknown');
  const worst = worstState(states);
  return {
    poolBits,
    poolBitsSource: input.poolBits !== undefined ? 'requested' : 'pool',
    pool: { hosts: hosts.map(({ name, physBits, reachable }) => ({ name, physBits, reachable })), unreachable },
    guests,
    summary: { worst, exitCode: exitCodeFor(worst) },
  };
}

/** The hosts of `host`'s pool: every host, unless hosts carry `pool` labels. */
function poolOf(hosts: FleetHost[], host: string): FleetHost[] {
  if (!hosts.some((h) => h.pool !== undefined)) return hosts;
  const pool = hosts.find((h) => h.name === host)?.pool;
  return hosts.filter((h) => h.pool === pool);
}

function narrowest(hosts: FleetHost[]): number | null {
  const known = hosts.map((h) => h.physBits).filter((b): b is number => b !== null);
  return known.length ? Math.min(...known) : null;
}

function guestAdvice(
  host: string,
  vm: VmStatus,
  poolBits: number | null,
  poolHosts: string[],
  input: FleetInput,
): GuestAdvice {
  const g = vm.guest;
  const base = { host, vm: vm.name, ...(vm.id ? { id: vm.id } : {}), poolBits, poolHosts };
  if (vm.error || !g) {
    const error = vm.error ?? {
      code: 'GUEST_FACTS_MISSING',
      message: 'the status document has no guest facts for this VM',
    };
    return {
      ...base,
      physBits: null,
      safe: null,
      layoutFits: null,
      accelerator: vm.accelerator ?? null,
      bound: null,
      current: null,
      settings: null,
      layout: null,
      notes: [],
      state: 'unknown',
      error,
    };
  }
  const accelerator = vm.accelerator ?? g.accelerator;
  const bound = isBound(accelerator, input.policy);
  const current = currentSetting(g);
  if (poolBits === null) {
    const notes = ['no host width is known: nothing to advise'];
    return {
      ...base,
      physBits: g.physBits,
      safe: null,
      layoutFits: null,
      accelerator,
      bound,
      current,
      settings: null,
      layout: null,
      notes,
      state: 'unknown',
    };
  }
  const guestPhysBits = hasGuestPhysBits(g);
  const layout = g.layout ? layoutAdvice(g.layout, poolBits) : null;
  const layoutFits = layout ? layout.fits : null;
  const widthFits = g.physBits <= poolBits;
  const safe = bound ? widthFits && layoutFits !== false : true;
  const notes = adviceNotes(g, poolBits, { bound, accelerator, widthFits, layout, guestPhysBits });
  const settings = settingsFor(
    g.cpuModel,
    poolBits,
    guestPhysBits && g.physBits > poolBits && poolBits >= MIN_PHYS_BITS,
  );
  const state = safe ? 'ok' : 'warning';
  return {
    ...base,
    physBits: g.physBits,
    safe,
    layoutFits,
    accelerator,
    bound,
    current,
    settings,
    layout,
    notes,
    state,
  };
}

function adviceNotes(
  g: GuestFacts,
  poolBits: number,
  c: { bound: boolean; accelerator: string; widthFits: boolean; layout: LayoutAdvice | null; guestPhysBits: boolean },
): string[] {
  const notes: string[] = [];
  if (!c.bound)
    notes.push(
      `${c.accelerator} guest: host widths do not bind it (policy.accelerators); the settings matter once it runs under KVM`,
    );
  if (poolBits < MIN_PHYS_BITS || poolBits > MAX_PHYS_BITS)
    notes.push(`QEMU takes phys-bits from ${MIN_PHYS_BITS} to ${MAX_PHYS_BITS}; ${poolBits} cannot be set`);
  if (!c.widthFits)
    notes.push(
      `guest ${g.physBits} bits > pool ${poolBits} bits: it may address memory the narrowest host cannot back; set ${poolBits}; it takes effect when QEMU restarts (a running guest's width cannot change)`,
    );
  if (g.hostPhysBits && (g.hostPhysBitsLimit === 0 || g.hostPhysBitsLimit > poolBits)) {
    notes.push(
      'host-phys-bits=on takes the width of the host it starts on and keeps it when migrating: started on a wider host it carries that width to narrower ones',
    );
  }
  if (c.layout?.firmwareEnd !== undefined) {
    notes.push(
      `firmware has placed 64-bit PCI BARs up to ${formatBytes(c.layout.firmwareEnd)}; it places them within the CPU's width, so they follow the width set at the next start`,
    );
  }
  if (c.layout && !c.layout.fits) {
    notes.push(
      `the address layout ends at ${formatBytes(c.layout.end)}, above 2^${poolBits} (${formatBytes(c.layout.limit)}): QEMU 7.1+ refuses to start it with phys-bits=${poolBits} ("phys-bits too low") until it shrinks`,
    );
    if (c.layout.fixes.length && !c.layout.fixes.some((f) => f.alone))
      notes.push('no single change is enough: combine the changes listed');
    if (c.layout.approximate)
      notes.push('the reported layout differs from the PC machine arithmetic: treat the sizes as estimates');
  }
  if (g.layout === null) notes.push('the address layout was not read: only the width is checked');
  if (c.guestPhysBits && g.physBits > poolBits && poolBits >= MIN_PHYS_BITS) {
    notes.push(
      `this QEMU has guest-phys-bits (9.1+): guest-phys-bits=${poolBits} has the firmware place the 64-bit PCI window below 2^${poolBits} without changing the CPU's width, the lighter change when only the layout must stay within the pool; the CPU still reports ${g.physBits} bits, so phys-bits=${poolBits} remains the setting that matches the narrowest host`,
    );
  }
  if (g.memoryEncryption?.active && g.memoryEncryption.reducedPhysBits) {
    notes.push(
      `memory encryption is active: the guest loses ${g.memoryEncryption.reducedPhysBits} more bits (reduced-phys-bits) on top of the width set here`,
    );
  }
  return notes;
}

/** The CLI's exit code for advice: 3 when a pool host or a guest is unknown, else 1 when a guest is not safe, else 0. */
export function adviceExitCode(doc: Pick<AdviceDocument, 'pool' | 'guests'>): number {
  const states: State[] = doc.guests.map((g) => g.state);
  if (doc.pool.unreachable.length) states.push('unknown');
  return exitCodeFor(worstState(states));
}

export { adviceExitCode as adviseExitCode };
