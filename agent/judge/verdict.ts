/**
 * The verdict for one guest: how its phys-bits relate to the host's, and every reason that
 * matters (accelerator, memory encryption, address-space use, KVM quirks, migration peers).
 * Pure: facts in, verdict out. Each rule and its severity is documented in docs/reasons.md.
 */
import * as R from './reasons';
import type { GuestFacts, HostFacts, PeerFacts, Policy, Reason, Relation, Severity, Verdict } from '../core/types';

export { REASON_CODES, maxSeverity, severityRank } from './reasons';
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

/** kvm_amd npt=0 or kvm_intel ept=N: no nested paging, guests live in the host's address space. */
export function shadowPaging(host: HostFacts): boolean {
  return (
    (host.kvm.module === 'kvm_amd' && host.kvm.npt === false) ||
    (host.kvm.module === 'kvm_intel' && host.kvm.ept === false)
  );
}

/**
 * The raw width and reduction when the host's effective width is the detected one AND is smaller
 * than raw CPUID because of memory encryption (an active sme/sev/sev_es/sev_snp/tme flag, or a
 * non-zero CPUID 0x8000001F reduction). Null when no such reduction is in play, or when the width
 * comes from the config (the operator's number is the limit, whatever the CPU says).
 */
export function encryptionReduction(host: HostFacts): { rawBits: number; reduction: number } | null {
  if (host.physBitsSource === 'config') return null;
  const raw = host.cpuidPhysBits;
  if (raw === null || raw <= host.physBits) return null;
  if (encryptionFlags(host).length === 0 && !((host.memEncryptionReduction ?? 0) > 0)) return null;
  return { rawBits: raw, reduction: raw - host.physBits };
}

/**
 * The width that bounds guest-physical addresses under an enforced accelerator on this host:
 * the raw CPUID width when only memory encryption reduces the reported one and nested paging is
 * on (Linux arch/x86/kvm/cpuid.c: with TDP, reductions of host-physical addresses do not affect
 * guest-physical ones); otherwise the effective host width.
 */
export function backingBits(host: HostFacts): number {
  const enc = encryptionReduction(host);
  return enc && !shadowPaging(host) ? enc.rawBits : host.physBits;
}

function relationReason(host: HostFacts, guest: GuestFacts, policy: Policy, enforced: boolean): Reason {
  const g = guest.physBits;
  const h = host.physBits;
  const relation = relationOf(g, h);
  if (relation === 'equal') return R.guestEqualsHost(g);
  if (relation === 'narrower') return R.guestNarrowerThanHost(g, h, policy.narrowerSeverity);
  if (!enforced) return R.guestWiderNotEnforced(g, h, guest.accelerator);
  const enc = encryptionReduction(host);
  const shadow = shadowPaging(host);
  if (enc && !shadow && g <= enc.rawBits) {
    const me = guest.memoryEncryption;
    return R.guestWiderByMemoryEncryption(g, h, {
      encryptionFlags: encryptionFlags(host),
      rawBits: enc.rawBits,
      reduction: enc.reduction,
      guestReducedPhysBits: me.active ? me.reducedPhysBits : null,
    });
  }
  return R.guestWiderThanHost(g, h, {
    accelerator: guest.accelerator,
    fromConfig: host.physBitsSource === 'config',
    encryptionFlags: encryptionFlags(host),
    rawBits: host.cpuidPhysBits,
    shadowPaging: shadow,
  });
}

function layoutReason(host: HostFacts, guest: GuestFacts, enforced: boolean): Reason | null {
  const layout = guest.layout;
  if (!layout) return null;
  const limitBits = backingBits(host);
  const limit = 2 ** limitBits;
  const used = layout.usedEnd > limit;
  if (!used && layout.highestAddress <= limit) return null;
  return R.layoutBeyondHostLimit({
    end: used ? layout.usedEnd : layout.highestAddress,
    used,
    limitBits,
    enforced,
    accelerator: guest.accelerator,
  });
}

/** The width of the host CPU itself, as KVM compares it with a guest's MAXPHYADDR. */
function hostCpuBits(host: HostFacts): number {
  return host.cpuinfoPhysBits ?? host.cpuidPhysBits ?? host.physBits;
}

function smallerMaxphyaddrReason(host: HostFacts, guest: GuestFacts): Reason | null {
  const k = host.kvm;
  if (guest.accelerator !== 'kvm' || k.module !== 'kvm_intel') return null;
  if (k.ept !== true || k.allowSmallerMaxphyaddr !== false) return null;
  const cpuBits = hostCpuBits(host);
  return guest.physBits < cpuBits ? R.kvmSmallerMaxphyaddrNotAllowed(guest.physBits, cpuBits) : null;
}

/**
 * host-phys-bits=on with a limit below the host's raw width, where the limit is what keeps the
 * guest safe: without it the guest would be wider than the host's effective width or a peer's.
 */
function hostPhysBitsLimitedReason(host: HostFacts, guest: GuestFacts, peers: PeerFacts[]): Reason | null {
  const limit = guest.hostPhysBitsLimit;
  if (!guest.hostPhysBits || !(limit > 0)) return null;
  const raw = host.cpuidPhysBits ?? host.cpuinfoPhysBits ?? host.physBits;
  if (limit >= raw || guest.physBits > limit) return null;
  if (raw > host.physBits) return R.hostPhysBitsLimited(limit, raw, `the host's usable ${host.physBits} bits`);
  const peer = peers.find((p) => p.physBits !== null && p.physBits < raw);
  if (peer) return R.hostPhysBitsLimited(limit, raw, `peer ${peer.name}'s ${peer.physBits} bits`);
  return null;
}

function guestPhysBitsReason(guest: GuestFacts): Reason | null {
  const gpb = guest.guestPhysBits;
  return gpb !== null && gpb > 0 && gpb < guest.physBits ? R.guestPhysBitsSet(gpb, guest.physBits) : null;
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
    layoutReason(host, guest, enforced),
    smallerMaxphyaddrReason(host, guest),
    hostPhysBitsLimitedReason(host, guest, peers),
    guestPhysBitsReason(guest),
    ...(guest.unreadable ?? []).map(R.guestFactUnreadable),
    ...peerReasons(guest, peers),
  ];
  const reasons = candidates.filter((r): r is Reason => r !== null).sort(R.byDescendingSeverity);
  let severity: Severity = 'ok';
  for (const r of reasons) severity = R.maxSeverity(severity, r.severity);
  return { relation: relationOf(guest.physBits, host.physBits), severity, reasons };
}
