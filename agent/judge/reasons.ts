/**
 * The catalogue of verdict reasons: every stable code, its default severity, and the builders of
 * the sentence an operator reads. docs/reasons.md lists every code here (a test checks it).
 */
import { formatBytes, hex } from '../core/format';
import { describeBar } from '../facts/pci-layout';
import type { PciBarFact, Reason, Severity } from '../core/types';

export type ReasonCode =
  | 'GUEST_EQUALS_HOST'
  | 'GUEST_NARROWER_THAN_HOST'
  | 'GUEST_WIDER_THAN_HOST'
  | 'GUEST_WIDER_THAN_KNOWN_LIMIT'
  | 'GUEST_WIDER_WITHIN_GUEST_PHYS_BITS'
  | 'GUEST_WIDER_NOT_ENFORCED'
  | 'GUEST_WIDER_BY_MEMORY_ENCRYPTION'
  | 'LAYOUT_BEYOND_HOST_LIMIT'
  | 'PCI_BAR_BEYOND_HOST_LIMIT'
  | 'KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED'
  | 'HOST_PHYS_BITS_LIMITED'
  | 'GUEST_PHYS_BITS_SET'
  | 'HOST_FACTS_CONTRADICTORY'
  | 'GUEST_FACT_UNREADABLE'
  | 'MIGRATED_WIDTH_NOTIFIED'
  | 'MIGRATED_WIDTH_UNVERIFIED'
  | 'MIGRATION_PEER_NARROWER'
  | 'MIGRATION_PEER_LAYOUT'
  | 'PEER_UNREACHABLE'
  | 'MIGRATION_UNVERIFIED'
  | 'GUARD_UNAVAILABLE'
  | 'DISCOVERY_FAILED'
  | 'DESCRIPTORS_LOW';

/** Code → default severity. A builder may lower it where docs/reasons.md says so. */
export const REASON_SEVERITY: Readonly<Record<ReasonCode, Severity>> = {
  GUEST_EQUALS_HOST: 'ok',
  GUEST_NARROWER_THAN_HOST: 'ok',
  GUEST_WIDER_THAN_HOST: 'critical',
  // The host's limit is 48 or its raw width, and which is not known (host-limit.ts eptLevelsOf).
  GUEST_WIDER_THAN_KNOWN_LIMIT: 'warning',
  // phys-bits above the limit, guest-phys-bits at or below it (QEMU 9.1+ -cpu host on a capped host).
  GUEST_WIDER_WITHIN_GUEST_PHYS_BITS: 'info',
  GUEST_WIDER_NOT_ENFORCED: 'info',
  GUEST_WIDER_BY_MEMORY_ENCRYPTION: 'info',
  LAYOUT_BEYOND_HOST_LIMIT: 'critical',
  PCI_BAR_BEYOND_HOST_LIMIT: 'critical',
  KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED: 'info',
  HOST_PHYS_BITS_LIMITED: 'ok',
  GUEST_PHYS_BITS_SET: 'warning',
  HOST_FACTS_CONTRADICTORY: 'warning',
  GUEST_FACT_UNREADABLE: 'warning',
  MIGRATED_WIDTH_NOTIFIED: 'info',
  MIGRATED_WIDTH_UNVERIFIED: 'warning',
  MIGRATION_PEER_NARROWER: 'warning',
  MIGRATION_PEER_LAYOUT: 'warning',
  PEER_UNREACHABLE: 'info',
  // On a MIGRATION event the guard did not see (judge/unseen-migration.ts); critical when a
  // configured peer is narrower than the guest, warning otherwise.
  MIGRATION_UNVERIFIED: 'critical',
  // While a held VM's guarded socket cannot be served (guardUnavailable below).
  GUARD_UNAVAILABLE: 'critical',
  // The daemon's own conditions (agent/daemon/daemon-health.ts), alerted with an empty vm label.
  DISCOVERY_FAILED: 'warning',
  DESCRIPTORS_LOW: 'warning',
};

export const REASON_CODES: readonly ReasonCode[] = Object.freeze(Object.keys(REASON_SEVERITY) as ReasonCode[]);

// ---- numbers in sentences -------------------------------------------------------------------

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
  /** /dev/cpu/0/cpuid could not be read. */
  cpuidUnreadable: boolean;
  /** An AMD (or Hygon) CPU, where SME/SEV may reduce the width Linux reports without showing a flag. */
  amd: boolean;
  /** The KVM module whose nested paging is off (npt=0 / ept=N); null when it is on or unknown. */
  nestedPagingOff: string | null;
  /** The CPU's raw width when the limit is the 48-bit cap of 4-level nested paging. */
  cappedAt48: number | null;
}

export function guestWiderThanHost(guestBits: number, hostBits: number, ctx: WiderContext): Reason {
  const source = ctx.fromConfig ? ' (host.physBits in the config)' : '';
  const why: string[] = [];
  if (!ctx.fromConfig && ctx.cappedAt48 !== null) {
    why.push(
      `the CPU has ${ctx.cappedAt48} bits, but without 5-level nested paging KVM maps guest-physical addresses below 2^${hostBits} only`,
    );
  }
  if (ctx.nestedPagingOff !== null) {
    why.push(
      `nested paging is off (${ctx.nestedPagingOff === 'kvm_amd' ? 'kvm_amd npt=0' : 'kvm_intel ept=N'}), so guests share the host's ${hostBits}-bit physical address space`,
    );
  }
  if (!ctx.fromConfig && ctx.cpuidUnreadable && (ctx.amd || ctx.encryptionFlags.length)) {
    const flags = ctx.encryptionFlags.length ? ` (${ctx.encryptionFlags.join(', ')})` : ' (SME/SEV)';
    why.push(
      `memory encryption${flags} may reduce the width Linux reports below the CPU's; make /dev/cpu/0/cpuid readable (modprobe cpuid, run as root) so the raw width can be read`,
    );
  }
  return reason(
    'GUEST_WIDER_THAN_HOST',
    `guest phys-bits ${guestBits} is wider than the host's ${hostBits}-bit limit${source} under ${ctx.accelerator}: ` +
      `${aboveLimit(hostBits, ctx)}${why.map((w) => `; ${w}`).join('')}; ` +
      `set phys-bits=${hostBits} or host-phys-bits=on,host-phys-bits-limit=${hostBits}`,
  );
}

/**
 * What happens to guest memory at or above 2^hostBits, said as KVM does it:
 *  - under the 48-bit cap of 4-level nested paging (cappedAt48): KVM accepts a memory slot up to the
 *    CPU's raw width (arch/x86/kvm/x86.c kvm_arch_prepare_memory_region checks kvm_mmu_max_gfn(),
 *    which uses kvm_host.maxphyaddr, the raw width, with TDP), and the 4-level TDP MMU walks only
 *    bits 47:0 of a guest-physical address, so memory above 2^48 aliases memory below it: silent
 *    corruption, not an abort (Linux KVM "Don't create SPTEs for addresses that aren't mappable",
 *    2026-02, makes KVM refuse instead);
 *  - without nested paging: kvm_mmu_max_gfn() allows 52 bits, so the slot is accepted, while shadow
 *    paging shares the host's (reduced) physical address space (arch/x86/kvm/cpuid.c advertises
 *    boot_cpu_data.x86_phys_bits then): accepted, not reliably usable;
 *  - otherwise (the raw width with nested paging): KVM refuses the memory slot and QEMU stops the VM
 *    (accel/kvm/kvm-all.c kvm_set_phys_mem, "error registering slot").
 */
function aboveLimit(hostBits: number, ctx: WiderContext): string {
  const at = formatBytes(2 ** hostBits);
  if (!ctx.fromConfig && ctx.cappedAt48 !== null)
    return (
      `KVM accepts guest memory up to the CPU's ${ctx.cappedAt48} bits, but its 4-level nested page tables ` +
      `drop the address bits above ${hostBits}: memory placed at or above ${at} silently aliases memory below it`
    );
  if (!ctx.fromConfig && ctx.nestedPagingOff !== null)
    return (
      `without nested paging KVM's memory-slot check allows 52 bits (kvm_mmu_max_gfn), but its shadow page tables ` +
      `share the host's ${hostBits}-bit physical address space: memory placed at or above ${at} is accepted and not reliably usable by the guest`
    );
  return `guest memory placed at or above ${at} cannot be mapped: KVM refuses the memory slot and QEMU stops the guest`;
}

/**
 * Info: phys-bits above the host's limit, but guest-phys-bits (CPUID 0x80000008 EAX[23:16]) at or
 * below it, as QEMU 9.1+ sets it for -cpu host from KVM's addressable width (target/i386/kvm/kvm-cpu.c
 * kvm_set_guest_phys_bits). OVMF sizes its 64-bit window by guest-phys-bits (OvmfPkg/Library/
 * PlatformInitLib/MemDetect.c PlatformAddressWidthFromCpuid); SeaBIOS reads only EAX[7:0]
 * (src/fw/paravirt.c) but caps its 64-bit window at 2^46 (1.16.3) or 2^44 (1.17.0) below a wider
 * phys-bits (src/fw/pciinit.c). What is placed is checked against 2^guest-phys-bits by the layout
 * and BAR reasons, which stay critical.
 */
export function guestWiderWithinGuestPhysBits(guestBits: number, gpb: number, hostBits: number): Reason {
  return reason(
    'GUEST_WIDER_WITHIN_GUEST_PHYS_BITS',
    `guest phys-bits ${guestBits} is wider than the host's ${hostBits}-bit limit, but guest-phys-bits=${gpb} tells ` +
      `its firmware and OS that only ${gpb} bits are addressable: OVMF keeps its 64-bit window below 2^${gpb}, and ` +
      `SeaBIOS below 2^46; what is actually placed is checked against 2^${gpb}; set phys-bits=${gpb} to remove the doubt`,
  );
}

export interface NotKnownContext {
  accelerator: string;
  /** The width KVM maps if nested paging has 5 levels. */
  upperBits: number;
  /** Why the depth is not known (host-limit.ts reasoning). */
  why: string;
}

/** Warning: the guest fits the raw width but not the 48 bits known; the depth of nested paging is not known. */
export function guestWiderThanKnownLimit(guestBits: number, hostBits: number, ctx: NotKnownContext): Reason {
  return reason(
    'GUEST_WIDER_THAN_KNOWN_LIMIT',
    `guest phys-bits ${guestBits} is wider than the ${hostBits} bits this host is known to map under ${ctx.accelerator}, ` +
      `and within the CPU's ${ctx.upperBits}: KVM maps it only if EPT has 5 levels, which is not known (${ctx.why}); ` +
      `load the msr module (modprobe msr) so physbits can read IA32_VMX_EPT_VPID_CAP, or set host.physBits, ` +
      `or set phys-bits=${hostBits} to be safe either way`,
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
  /** The host's limit. */
  limitBits: number;
  /** The guest's own SEV reduced-phys-bits, when the guest is encrypted. */
  guestReducedPhysBits: number | null;
}

/** Info: the guest is within the host's limit, only wider than the width memory encryption leaves Linux. */
export function guestWiderByMemoryEncryption(guestBits: number, reportedBits: number, ctx: EncryptionContext): Reason {
  const flags = ctx.encryptionFlags.length ? ctx.encryptionFlags.join(', ') : 'memory encryption';
  let message =
    `guest phys-bits ${guestBits} is wider than the ${reportedBits} bits Linux reports, only because host ` +
    `memory encryption (${flags}) takes ${ctx.reduction} of the CPU's raw ${ctx.rawBits} bits; with nested ` +
    `paging guest-physical addresses keep the raw width, so this host maps the guest (limit ${ctx.limitBits} bits)`;
  const r = ctx.guestReducedPhysBits;
  if (r !== null && r > 0) {
    message += `; the guest is encrypted itself with reduced-phys-bits=${r}, so it uses at most ${guestBits - r} bits`;
  }
  message += `; a host that must take it by migration needs a limit of ${guestBits} bits (the peer rules check it)`;
  return reason('GUEST_WIDER_BY_MEMORY_ENCRYPTION', message);
}

export interface LayoutContext {
  /** One past the address compared (highestAddress or usedEnd). */
  end: number;
  /** Memory already sits above the limit (usedEnd), rather than only a reachable region. */
  used: boolean;
  limitBits: number;
  /** The limit is the guest's own guest-phys-bits, below the host's. */
  byGuestPhysBits?: boolean;
  enforced: boolean;
  accelerator: string;
}

export function layoutBeyondHostLimit(ctx: LayoutContext): Reason {
  const limit = formatBytes(2 ** ctx.limitBits);
  const what = ctx.used
    ? `guest memory is already placed up to ${hex(ctx.end)}`
    : `the guest's address layout (RAM, hot-plug region, 64-bit PCI hole, placed BARs) reaches ${hex(ctx.end)}`;
  const whose = ctx.byGuestPhysBits
    ? `guest-phys-bits limit of ${ctx.limitBits} bits`
    : `host's ${ctx.limitBits}-bit limit`;
  const need = `${bitsNeeded(ctx.end)} bits`;
  if (!ctx.enforced) {
    return reason(
      'LAYOUT_BEYOND_HOST_LIMIT',
      `${what}, beyond the ${whose} (${limit}), but ${ctx.accelerator} is not bound by it; ` +
        `it needs ${need} under an enforced accelerator`,
      'info',
    );
  }
  const fix = ctx.used
    ? 'migrate the guest to a host with at least that width or restart it with less memory'
    : 'lower maxmem or pci-hole64-size so the layout ends below the limit';
  return reason('LAYOUT_BEYOND_HOST_LIMIT', `${what}, beyond the ${whose} (${limit}); it needs ${need}: ${fix}`);
}

/** At most this many BARs are named in one PCI_BAR_BEYOND_HOST_LIMIT message. */
export const MAX_NAMED_BARS = 4;

export interface PciBarContext {
  /** The BARs whose end is above the limit (non-empty). */
  bars: readonly PciBarFact[];
  limitBits: number;
  byGuestPhysBits?: boolean;
  enforced: boolean;
  accelerator: string;
}

/** Critical (info when not enforced): 64-bit BARs mapped where the host's page tables cannot reach. */
export function pciBarBeyondHostLimit(ctx: PciBarContext): Reason {
  const limit = 2 ** ctx.limitBits;
  const named = ctx.bars
    .slice(0, MAX_NAMED_BARS)
    .map((b) => `${describeBar(b)} at ${hex(b.base)}-${hex(b.base + b.size - 1)}`);
  const more = ctx.bars.length > MAX_NAMED_BARS ? ` and ${ctx.bars.length - MAX_NAMED_BARS} more` : '';
  const whose = ctx.byGuestPhysBits
    ? `guest-phys-bits limit of ${ctx.limitBits} bits`
    : `host's ${ctx.limitBits}-bit limit`;
  const what = `PCI ${ctx.bars.length > 1 ? 'BARs are' : 'BAR is'} mapped above the ${whose} (${hex(limit)}): ${named.join('; ')}${more}`;
  if (!ctx.enforced) {
    return reason(
      'PCI_BAR_BEYOND_HOST_LIMIT',
      `${what}; ${ctx.accelerator} is not bound by the limit, but under an enforced accelerator KVM could not map ${ctx.bars.length > 1 ? 'them' : 'it'}`,
      'info',
    );
  }
  return reason(
    'PCI_BAR_BEYOND_HOST_LIMIT',
    `${what}; KVM cannot map ${ctx.bars.length > 1 ? 'them' : 'it'} (QEMU aborts the VM when it registers such a slot, or the device does not work): ` +
      `restart the guest with phys-bits=${ctx.limitBits} so that firmware places its 64-bit window below ${hex(limit)}, ` +
      `or migrate it to a host with at least ${bitsNeeded(Math.max(...ctx.bars.map((b) => b.base + b.size)))} bits`,
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

export function guestPhysBitsSet(guestPhysBits: number, physBits: number, hostBits: number): Reason {
  const layout =
    guestPhysBits < hostBits
      ? `its layout is checked against 2^${guestPhysBits}, below the host's ${hostBits}-bit limit`
      : `the host's ${hostBits}-bit limit is the lower one and stays the check`;
  return reason(
    'GUEST_PHYS_BITS_SET',
    `guest-phys-bits=${guestPhysBits} tells the guest firmware and OS that only ${guestPhysBits} of its ` +
      `${physBits} phys-bits are addressable (CPUID 0x80000008 EAX[23:16]); ${layout}; ` +
      `memory or BARs placed above 2^${guestPhysBits} break the promise: set phys-bits=${guestPhysBits} to make the two agree`,
  );
}

export function hostFactsContradictory(problems: string[], limitBits: number, fromConfig: boolean): Reason {
  const tail = fromConfig
    ? `host.physBits in the config (${limitBits}) is used regardless`
    : `the limit of ${limitBits} bits is the conservative reading; set host.physBits in the config to the right limit`;
  return reason(
    'HOST_FACTS_CONTRADICTORY',
    `the host's readings contradict each other or are missing: ${problems.join('; ')}; ${tail}`,
    fromConfig ? 'info' : 'warning',
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

/**
 * Where a migrated guest's booted width was read when no guard told this host
 * (agent/peers/source-width.ts): the guest itself at its source, or its source host's limit.
 */
export interface WidthFound {
  /** "live peer hv1's status", "fleet.prometheus's physbits_guest_phys_bits{host=\"hv1\"}", "the limit of source host hv1". */
  source: string;
  /** The source host's limit: the guest booted with at most this. */
  atMost: boolean;
}

export function migratedWidthNotified(
  bootedBits: number,
  qemuBits: number,
  from: string | null,
  found?: WidthFound,
): Reason {
  const kept = found?.atMost
    ? `the width it booted with, at most ${bootedBits} bits (the limit of the host it came from, read from ${found.source})`
    : `the ${bootedBits} bits it booted with (${found ? `read from ${found.source}` : "the source's guard told this host"})`;
  return reason(
    'MIGRATED_WIDTH_NOTIFIED',
    `host-phys-bits=on guest that arrived by migration${from ? ` from ${from}` : ''}: it keeps ${kept}, ` +
      `not the ${qemuBits} bits QEMU here reports, which it takes at its next reset; every rule here judges ${bootedBits} bits`,
  );
}

/**
 * `why`: the source's width was asked for and nothing knew it. Still a warning, whatever
 * guard.unknownPeer says: the guest is already here, and QEMU shows a guest restored from a save
 * file exactly as one that arrived (libvirt 9.0's `virsh restore`: query-migrate answers
 * `{"status": "completed"}`), so a critical alert would fire on every restore.
 */
export function migratedWidthUnverified(qemuBits: number, why?: string): Reason {
  return reason(
    'MIGRATED_WIDTH_UNVERIFIED',
    `host-phys-bits=on guest that arrived by migration: it keeps the width it booted with on the source, which QEMU here ` +
      `does not report (it reports ${qemuBits} bits, this host's width), and no guard told this host the booted width` +
      `${why ? `; ${why}` : ''}; the rules here use ${qemuBits} bits, which may not be the guest's. Migrate through a ` +
      `guarded socket whose peer is this agent (url), give the source a live agent in peers[] or set fleet.prometheus, ` +
      `or reset the guest so that it takes ${qemuBits} bits`,
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

/** `error` says why the guarded socket could not be served (agent/daemon/guard-attach.ts). */
export function guardUnavailable(error: string): Reason {
  return reason(
    'GUARD_UNAVAILABLE',
    `No guarded socket for this VM (${error}); physbits released QEMU's socket, so nothing guards it until the cause is fixed.`,
  );
}
