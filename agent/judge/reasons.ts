/**
 * The catalogue of verdict reasons: every stable code, its default severity, and the builders of
 * the sentence an operator reads. docs/reasons.md lists every code here (a test checks it).
 */
import type { Reason, Severity } from '../core/types';

export type ReasonCode =
  | 'GUEST_EQUALS_HOST'
  | 'GUEST_NARROWER_THAN_HOST'
  | 'GUEST_WIDER_THAN_HOST'
  | 'GUEST_WIDER_NOT_ENFORCED'
  | 'GUEST_WIDER_BY_MEMORY_ENCRYPTION'
  | 'LAYOUT_BEYOND_HOST_LIMIT'
  | 'KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED'
  | 'HOST_PHYS_BITS_LIMITED'
  | 'GUEST_PHYS_BITS_SET'
  | 'GUEST_FACT_UNREADABLE'
  | 'MIGRATION_PEER_NARROWER'
  | 'MIGRATION_PEER_LAYOUT'
  | 'PEER_UNREACHABLE'
  | 'MIGRATION_UNVERIFIED';

/** Code → default severity. A builder may lower it where docs/reasons.md says so. */
export const REASON_SEVERITY: Readonly<Record<ReasonCode, Severity>> = {
  GUEST_EQUALS_HOST: 'ok',
  GUEST_NARROWER_THAN_HOST: 'ok',
  GUEST_WIDER_THAN_HOST: 'critical',
  GUEST_WIDER_NOT_ENFORCED: 'info',
  GUEST_WIDER_BY_MEMORY_ENCRYPTION: 'warning',
  LAYOUT_BEYOND_HOST_LIMIT: 'critical',
  KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED: 'info',
  HOST_PHYS_BITS_LIMITED: 'ok',
  GUEST_PHYS_BITS_SET: 'info',
  GUEST_FACT_UNREADABLE: 'warning',
  MIGRATION_PEER_NARROWER: 'warning',
  MIGRATION_PEER_LAYOUT: 'warning',
  PEER_UNREACHABLE: 'info',
  // Raised by the daemon (agent/daemon/daemon-alerts.ts) on a MIGRATION event the guard did not see;
  // critical when a configured peer is narrower than the guest, warning otherwise.
  MIGRATION_UNVERIFIED: 'critical',
};

export const REASON_CODES: readonly ReasonCode[] = Object.freeze(Object.keys(REASON_SEVERITY) as ReasonCode[]);

const RANK: Readonly<Record<Severity, number>> = { ok: 0, info: 1, warning: 2, critical: 3 };

/** 0 ok, 1 info, 2 warning, 3 critical (the physbits_vm_severity metric's scale). */
export function severityRank(s: Severity): number {
  return RANK[s];
}

export function maxSeverity(a: Severity, b: Severity): Severity {
  return RANK[b] > RANK[a] ? b : a;
}

/** Orders reasons most severe first; Array.prototype.sort is stable, so ties keep their order. */
export function byDescendingSeverity(a: Reason, b: Reason): number {
  return RANK[b.severity] - RANK[a.severity];
}

// ---- numbers in sentences -------------------------------------------------------------------

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** 70368744177664 → "64 TiB"; 1.5 GiB → "1.5 GiB". */
export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(1).replace(/\.0$/, '');
  return `${text} ${UNITS[i]}`;
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** The smallest width whose address space holds the exclusive end `end` (2^bits >= end). */
export function bitsNeeded(end: number): number {
  let bits = 0;
  while (2 ** bits < end && bits < 64) bits++;
  return bits;
}

function reason(code: ReasonCode, message: string, severity: Severity = REASON_SEVERITY[code]): Reason {
  return { code, severity, message };
}

// ---- builders -------------------------------------------------------------------------------

export function guestEqualsHost(bits: number): Reason {
  return reason('GUEST_EQUALS_HOST', `guest phys-bits ${bits} equals the host's ${bits} physical address bits`);
}

export function guestNarrowerThanHost(guestBits: number, hostBits: number, severity: 'ok' | 'info'): Reason {
  return reason(
    'GUEST_NARROWER_THAN_HOST',
    `guest phys-bits ${guestBits} is narrower than the host's ${hostBits} bits: safe here; ` +
      `the guest addresses at most ${formatBytes(2 ** guestBits)}`,
    severity,
  );
}

export interface WiderContext {
  accelerator: string;
  /** The host width came from the config's host.physBits. */
  fromConfig: boolean;
  /** Names of active host memory-encryption flags ("sme", "sev"...), empty when none. */
  encryptionFlags: string[];
  /** Raw CPUID width when known. */
  rawBits: number | null;
  /** kvm_amd npt=0 or kvm_intel ept=N: guests share the host's (reduced) address space. */
  shadowPaging: boolean;
}

export function guestWiderThanHost(guestBits: number, hostBits: number, ctx: WiderContext): Reason {
  const source = ctx.fromConfig ? ' (host.physBits in the config)' : '';
  let why = '';
  if (ctx.encryptionFlags.length && ctx.rawBits === null) {
    why =
      `; host memory encryption (${ctx.encryptionFlags.join(', ')}) may reduce the width Linux reports: ` +
      `make /dev/cpu/0/cpuid readable (modprobe cpuid, run as root) so the raw width can be weighed`;
  } else if (ctx.rawBits !== null && ctx.rawBits > hostBits && ctx.shadowPaging) {
    why = `; without nested paging (ept/npt off) guests share the host's reduced ${hostBits}-bit address space`;
  } else if (ctx.rawBits !== null && ctx.rawBits > hostBits && guestBits > ctx.rawBits) {
    why = `; it is wider than the host CPU's raw ${ctx.rawBits} bits too`;
  }
  return reason(
    'GUEST_WIDER_THAN_HOST',
    `guest phys-bits ${guestBits} is wider than the host's ${hostBits} bits${source} under ${ctx.accelerator}: ` +
      `guest memory placed at or above ${formatBytes(2 ** hostBits)} cannot be backed${why}; ` +
      `set phys-bits=${hostBits} or host-phys-bits=on`,
  );
}

export function guestWiderNotEnforced(guestBits: number, hostBits: number, accelerator: string): Reason {
  return reason(
    'GUEST_WIDER_NOT_ENFORCED',
    `guest phys-bits ${guestBits} is wider than the host's ${hostBits} bits, but ${accelerator} does not back ` +
      `guest memory with host page tables, so the host limit does not apply; set phys-bits=${hostBits} ` +
      `before moving this guest to an accelerator in policy.accelerators`,
  );
}

export interface EncryptionContext {
  encryptionFlags: string[];
  rawBits: number;
  reduction: number;
  /** The guest's own SEV reduced-phys-bits, when the guest is encrypted. */
  guestReducedPhysBits: number | null;
}

/**
 * Warning by default; info when the guest is itself an encrypted guest whose reduced-phys-bits
 * brings its usable width within the host's (see docs/reasons.md).
 */
export function guestWiderByMemoryEncryption(guestBits: number, hostBits: number, ctx: EncryptionContext): Reason {
  const flags = ctx.encryptionFlags.length ? ctx.encryptionFlags.join(', ') : 'memory encryption';
  let message =
    `guest phys-bits ${guestBits} is wider than the ${hostBits} bits Linux reports, only because host ` +
    `memory encryption (${flags}) takes ${ctx.reduction} of the CPU's raw ${ctx.rawBits} bits; with nested ` +
    `paging guest-physical addresses keep all ${ctx.rawBits} bits, so this host backs the guest`;
  let severity: Severity = 'warning';
  const r = ctx.guestReducedPhysBits;
  if (r !== null && r > 0) {
    const usable = guestBits - r;
    message += `; the guest is encrypted itself with reduced-phys-bits=${r}, so it uses at most ${usable} bits`;
    if (usable <= hostBits) severity = 'info';
  }
  if (severity === 'warning') {
    message += `; hosts without memory encryption need ${guestBits} bits for it: set phys-bits=${hostBits} to fit both`;
  }
  return reason('GUEST_WIDER_BY_MEMORY_ENCRYPTION', message, severity);
}

export interface LayoutContext {
  /** One past the address compared (highestAddress or usedEnd). */
  end: number;
  /** Memory already sits above the limit (usedEnd), rather than only a reachable region. */
  used: boolean;
  limitBits: number;
  enforced: boolean;
  accelerator: string;
}

export function layoutBeyondHostLimit(ctx: LayoutContext): Reason {
  const limit = formatBytes(2 ** ctx.limitBits);
  const what = ctx.used
    ? `guest memory is already placed up to ${hex(ctx.end)}`
    : `the guest's address layout (RAM, hot-plug region, 64-bit PCI hole) reaches ${hex(ctx.end)}`;
  const need = `${bitsNeeded(ctx.end)} bits`;
  if (!ctx.enforced) {
    return reason(
      'LAYOUT_BEYOND_HOST_LIMIT',
      `${what}, beyond the host's ${ctx.limitBits}-bit limit (${limit}), but ${ctx.accelerator} is not bound by it; ` +
        `it needs ${need} under an enforced accelerator`,
      'info',
    );
  }
  const fix = ctx.used
    ? 'migrate the guest to a host with at least that width or restart it with less memory'
    : 'lower maxmem or pci-hole64-size so the layout ends below the limit';
  return reason(
    'LAYOUT_BEYOND_HOST_LIMIT',
    `${what}, beyond the host's ${ctx.limitBits}-bit limit (${limit}); it needs ${need}: ${fix}`,
  );
}

export function kvmSmallerMaxphyaddrNotAllowed(guestBits: number, hostCpuBits: number): Reason {
  return reason(
    'KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED',
    `kvm_intel runs with ept=Y and allow_smaller_maxphyaddr=N: the guest's ${guestBits}-bit MAXPHYADDR is ` +
      `below the host CPU's ${hostCpuBits} bits, so page faults on reserved address bits ` +
      `${guestBits}-${hostCpuBits - 1} are not reported exactly to the guest; harmless for common guests, ` +
      `otherwise load kvm_intel with allow_smaller_maxphyaddr=Y or set phys-bits=${hostCpuBits}`,
  );
}

export function hostPhysBitsLimited(limit: number, rawBits: number, against: string): Reason {
  return reason(
    'HOST_PHYS_BITS_LIMITED',
    `host-phys-bits-limit=${limit} caps host-phys-bits=on below this host's raw ${rawBits} bits; ` +
      `without it the guest would get ${rawBits} bits, wider than ${against}: keep the limit`,
  );
}

export function guestPhysBitsSet(guestPhysBits: number, physBits: number): Reason {
  return reason(
    'GUEST_PHYS_BITS_SET',
    `guest-phys-bits=${guestPhysBits} asks the guest firmware and OS to use only ${guestPhysBits} of its ` +
      `${physBits} phys-bits; the hint is advisory, so physbits compares phys-bits=${physBits}; ` +
      `set phys-bits=${guestPhysBits} to make the limit binding`,
  );
}

/** `read` names what QEMU did not answer, e.g. "qom-get /machine/device-memory[0] size". */
export function guestFactUnreadable(read: string): Reason {
  return reason(
    'GUEST_FACT_UNREADABLE',
    `this QEMU did not answer ${read}, so the guest's layout lacks what it gives (the device-memory ` +
      `region's size): layout checks and hot-plug predictions that need it cannot be made; ` +
      `see docs/guest-facts.md, "Supported QEMU versions"`,
  );
}

export function migrationPeerNarrower(peer: string, peerBits: number, guestBits: number): Reason {
  return reason(
    'MIGRATION_PEER_NARROWER',
    `peer ${peer} has ${peerBits} physical address bits, fewer than the guest's phys-bits ${guestBits}: ` +
      `migration to ${peer} is refused; set phys-bits=${peerBits} ` +
      `(or host-phys-bits=on,host-phys-bits-limit=${peerBits}) at the next restart to make it portable`,
  );
}

export function migrationPeerLayout(peer: string, peerBits: number, end: number, used: boolean): Reason {
  const what = used
    ? `guest memory is already placed up to ${hex(end)}`
    : `the guest's address layout reaches ${hex(end)}`;
  return reason(
    'MIGRATION_PEER_LAYOUT',
    `${what}, beyond peer ${peer}'s ${peerBits}-bit limit (${formatBytes(2 ** peerBits)}): migration to ${peer} ` +
      `is refused; lower maxmem or pci-hole64-size so the layout ends below ${hex(2 ** peerBits)}`,
  );
}

export function peerUnreachable(peer: string, fallbackBits: number | null): Reason {
  const tail =
    fallbackBits === null
      ? `no physBits is configured for it, so migration to ${peer} cannot be checked until it answers`
      : `using its configured ${fallbackBits} bits`;
  return reason('PEER_UNREACHABLE', `peer ${peer} is unreachable; ${tail}`);
}
