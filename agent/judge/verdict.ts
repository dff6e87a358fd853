/**
 * The verdict for one guest: how its phys-bits relate to the host's limit (host.physBits, decided by
 * host-limit.ts), and every reason that matters (accelerator, memory encryption, address-space use,
 * KVM quirks, migration peers).
 * Pure: facts in, verdict out. Each rule and its severity is documented in docs/reasons.md.
 */
import * as R from './reasons';
import { hostCpuMaxPhysAddr, qemuHostPhysBits } from './host-limit';
import type { GuestFacts, HostFacts, PeerFacts, Policy, Reason, Relation, Severity, Verdict } from '../core/types';
import { byDescendingSeverity, maxSeverity } from '../core/severity';

export { REASON_CODES } from './reasons';
export type { ReasonCode } from './reasons';

export interface VerdictInput {
  host: HostFacts;
  guest: GuestFacts;
  policy: Policy;
  peers?: PeerFacts[];
}

export function relationOf(guestBits: number, hostBits: number): Relation {
  if (guestBits === hostBits) return 'equal';
  return guestBits < hostBits ? 'narrower' : 'wider';
}

/** Names of the host's memory-encryption flags that are set, in a fixed order. */
export function encryptionFlags(host: HostFacts): string[] {
  const f = host.flags;
  const names: string[] = [];
  if (f.sme) names.push('sme');
  if (f.sev) names.push('sev');
  if (f.sev_es) names.push('sev_es');
  if (f.sev_snp) names.push('sev_snp');
  if (f.tme) names.push('tme');
  return names;
}

/** The host's limit is the 48-bit cap of 4-level nested paging below a wider CPU. */
function cappedByTdpLevels(host: HostFacts): boolean {
  return host.physBitsSource === 'tdp-levels';
}

function relationReason(host: HostFacts, guest: GuestFacts, policy: Policy, enforced: boolean): Reason {
  const g = guest.physBits;
  const h = host.physBits;
  const relation = relationOf(g, h);
  if (relation === 'equal') return R.guestEqualsHost(g);
  if (relation === 'narrower') return R.guestNarrowerThanHost(g, h, policy.narrowerSeverity);
  if (!enforced) return R.guestWiderNotEnforced(g, h, guest.accelerator);
  const gpb = guest.guestPhysBits;
  if (gpb !== null && gpb > 0 && gpb <= h) return R.guestWiderWithinGuestPhysBits(g, gpb, h);
  const upper = host.limit.upperPhysBits ?? null;
  if (upper !== null && g <= upper && host.physBitsSource !== 'config') {
    const why = host.reasoning.find((line) => line.includes('not known')) ?? 'the nested paging depth is not known';
    return R.guestWiderThanKnownLimit(g, h, {
      accelerator: guest.accelerator,
      upperBits: upper,
      why: why.split(':')[0],
    });
  }
  return R.guestWiderThanHost(g, h, {
    accelerator: guest.accelerator,
    fromConfig: host.physBitsSource === 'config',
    encryptionFlags: encryptionFlags(host),
    cpuidUnreadable: host.cpuidPhysBits === null,
    amd: host.vendor === 'AuthenticAMD' || host.vendor === 'HygonGenuine',
    nestedPagingOff: host.limit.nestedPaging === false ? (host.kvm.module ?? 'kvm') : null,
    cappedAt48: cappedByTdpLevels(host) ? qemuHostPhysBits(host) : null,
  });
}

/**
 * A guest within the limit but wider than the width Linux reports, only because memory encryption
 * takes bits of host-physical addresses: backed here (nested paging keeps guest-physical addresses
 * whole), so info; whether other hosts can take it is the peer rules' business.
 */
function memoryEncryptionReason(host: HostFacts, guest: GuestFacts, enforced: boolean): Reason | null {
  const reported = host.cpuinfoPhysBits;
  const raw = host.cpuidPhysBits;
  if (!enforced || reported === null || raw === null || raw <= reported) return null;
  if (host.limit.nestedPaging !== true) return null;
  if (guest.physBits <= reported || guest.physBits > host.physBits) return null;
  const me = guest.memoryEncryption;
  return R.guestWiderByMemoryEncryption(guest.physBits, reported, {
    encryptionFlags: encryptionFlags(host),
    rawBits: raw,
    reduction: raw - reported,
    limitBits: host.physBits,
    guestReducedPhysBits: me.active ? me.reducedPhysBits : null,
  });
}

/** The width the guest's layout is checked against: the host's limit, or a lower guest-phys-bits. */
export function layoutLimitBits(host: HostFacts, guest: GuestFacts): { bits: number; byGuestPhysBits: boolean } {
  const gpb = guest.guestPhysBits;
  if (gpb !== null && gpb > 0 && gpb <= host.physBits && gpb < guest.physBits)
    return { bits: gpb, byGuestPhysBits: gpb < host.physBits };
  return { bits: host.physBits, byGuestPhysBits: false };
}

function layoutReason(host: HostFacts, guest: GuestFacts, enforced: boolean): Reason | null {
  const layout = guest.layout;
  if (!layout) return null;
  const { bits: limitBits, byGuestPhysBits } = layoutLimitBits(host, guest);
  const limit = 2 ** limitBits;
  const used = layout.usedEnd > limit;
  if (!used && layout.highestAddress <= limit) return null;
  return R.layoutBeyondHostLimit({
    end: used ? layout.usedEnd : layout.highestAddress,
    used,
    limitBits,
    byGuestPhysBits,
    enforced,
    accelerator: guest.accelerator,
  });
}

/** The 64-bit BARs mapped above the layout's limit (QEMU registers each as a memory slot under KVM). */
function pciBarReason(host: HostFacts, guest: GuestFacts, enforced: boolean): Reason | null {
  const bars = guest.layout?.pciBars;
  if (!bars?.length) return null;
  const { bits: limitBits, byGuestPhysBits } = layoutLimitBits(host, guest);
  const above = bars.filter((b) => b.base + b.size > 2 ** limitBits);
  if (above.length === 0) return null;
  return R.pciBarBeyondHostLimit({ bars: above, limitBits, byGuestPhysBits, enforced, accelerator: guest.accelerator });
}

function smallerMaxphyaddrReason(host: HostFacts, guest: GuestFacts): Reason | null {
  const k = host.kvm;
  if (guest.accelerator !== 'kvm' || k.module !== 'kvm_intel') return null;
  if (k.ept !== true || k.allowSmallerMaxphyaddr !== false) return null;
  const cpuBits = hostCpuMaxPhysAddr(host);
  return guest.physBits < cpuBits ? R.kvmSmallerMaxphyaddrNotAllowed(guest.physBits, cpuBits) : null;
}

/**
 * host-phys-bits=on with a limit below the width QEMU would give it (raw CPUID), where the limit is
 * what keeps the guest safe: without it the guest would be wider than the host's limit or a peer's.
 */
function hostPhysBitsLimitedReason(host: HostFacts, guest: GuestFacts, peers: PeerFacts[]): Reason | null {
  const limit = guest.hostPhysBitsLimit;
  if (!guest.hostPhysBits || !(limit > 0)) return null;
  const raw = qemuHostPhysBits(host);
  if (limit >= raw || guest.physBits > limit) return null;
  if (raw > host.physBits) return R.hostPhysBitsLimited(limit, raw, `the host's limit of ${host.physBits} bits`);
  const peer = peers.find((p) => p.physBits !== null && p.physBits < raw);
  if (peer) return R.hostPhysBitsLimited(limit, raw, `peer ${peer.name}'s ${peer.physBits} bits`);
  return null;
}

function guestPhysBitsReason(host: HostFacts, guest: GuestFacts): Reason | null {
  const gpb = guest.guestPhysBits;
  return gpb !== null && gpb > 0 && gpb < guest.physBits
    ? R.guestPhysBitsSet(gpb, guest.physBits, host.physBits)
    : null;
}

/** Contradictory or missing host readings: a warning for enforced guests (info under a config override). */
function hostFactsReason(host: HostFacts, enforced: boolean): Reason | null {
  const problems = host.limit.problems;
  if (!enforced || problems.length === 0) return null;
  return R.hostFactsContradictory(problems, host.physBits, host.physBitsSource === 'config');
}

/** Peer reasons never exceed warning: a narrower peer is the guard's business at migration time. */
function peerReasons(guest: GuestFacts, peers: PeerFacts[]): Reason[] {
  const out: Reason[] = [];
  for (const peer of peers) {
    if (!peer.reachable) out.push(R.peerUnreachable(peer.name, peer.physBits));
    const bits = peer.physBits;
    if (bits === null) continue;
    if (bits < guest.physBits) out.push(R.migrationPeerNarrower(peer.name, bits, guest.physBits));
    const layout = guest.layout;
    if (layout) {
      const limit = 2 ** bits;
      const used = layout.usedEnd > limit;
      if (used || layout.highestAddress > limit) {
        out.push(R.migrationPeerLayout(peer.name, bits, used ? layout.usedEnd : layout.highestAddress, used));
      }
    }
  }
  return out;
}

export function computeVerdict(input: VerdictInput): Verdict {
  const { host, guest, policy } = input;
  const peers = input.peers ?? [];
  const enforced = policy.accelerators.includes(guest.accelerator);
  const candidates: Array<Reason | null> = [
    relationReason(host, guest, policy, enforced),
    memoryEncryptionReason(host, guest, enforced),
    layoutReason(host, guest, enforced),
    pciBarReason(host, guest, enforced),
    hostFactsReason(host, enforced),
    smallerMaxphyaddrReason(host, guest),
    hostPhysBitsLimitedReason(host, guest, peers),
    guestPhysBitsReason(host, guest),
    ...(guest.unreadable ?? []).map(R.guestFactUnreadable),
    ...peerReasons(guest, peers),
  ];
  const reasons = candidates.filter((r): r is Reason => r !== null).sort(byDescendingSeverity);
  let severity: Severity = 'ok';
  for (const r of reasons) severity = maxSeverity(severity, r.severity);
  return { relation: relationOf(guest.physBits, host.physBits), severity, reasons };
}
