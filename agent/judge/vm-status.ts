/**
 * One VM's status from its facts: the verdict over (host, guest, peers, policy), with the reasons
 * the daemon added from what it saw happen (an unverified migration) merged in. Pure: every VM,
 * held, polled or scanned, is judged here.
 */
import type { GuestFacts, HostFacts, PeerFacts, Policy, Reason, VmStatus } from '../core/types';
import { nameFromSocket, vmId } from '../core/vm-name';
import { byDescendingSeverity, maxSeverity } from '../core/severity';
import { migratedWidthNotified, migratedWidthUnverified } from './reasons';
import { computeVerdict } from './verdict';

export interface VmJudgement {
  socket: string;
  /** The VM's id when the caller keeps it (agent/core/vm-name.ts vmId of `socket`); else worked out here. */
  id?: string;
  /** Mode label for the status document ('hold', 'poll', 'libvirt', 'scan'). */
  mode?: string;
  guest: GuestFacts;
  host: HostFacts;
  peers: PeerFacts[];
  policy: Policy;
  /** Reasons from outside the facts, kept until cleared. */
  extraReasons?: readonly Reason[];
  /**
   * The guest arrived by migration and has not been reset since (the daemon's supervisor keeps
   * this): `notice` is what the source's guard told this agent (POST /v1/incoming), null if nothing.
   */
  arrival?: Arrival | null;
  /** ISO time of the read. */
  checkedAt: string;
}

export interface Arrival {
  notice: { physBits: number; from: string | null } | null;
  /**
   * Without a notice: what the daemon found of the guest's width at its source (agent/peers/
   * source-width.ts); absent until found.
   */
  found?: ArrivalFound;
}

/** agent/peers/source-width.ts SourceWidth. */
export type ArrivalFound =
  { kind: 'guest' | 'host'; physBits: number; host: string; source: string } | { kind: 'unknown'; why: string };

/**
 * A host-phys-bits=on guest keeps the width it booted with across a migration, while QEMU here
 * reports this host's (target/i386/host-cpu.c host_cpu_adjust_phys_bits sets phys-bits from the
 * host at realize; CPUID is not part of the migration stream). With the source guard's notice, or
 * else the width found at the source (the guest's own there, or at most its source host's limit),
 * the guest is judged by its booted width, from the moment it waits for the stream; without
 * either, once it has arrived, the width QEMU reports is unverified.
 */
export function applyArrival(
  guest: GuestFacts,
  arrival: Arrival | null | undefined,
): { guest: GuestFacts; reason: Reason | null } {
  if (!arrival || !guest.hostPhysBits || !guest.incoming) return { guest, reason: null };
  const qemuPhysBits = guest.physBits;
  const found = arrival.found;
  const known = arrival.notice
    ? { physBits: arrival.notice.physBits, from: arrival.notice.from, via: undefined }
    : found && found.kind !== 'unknown'
      ? {
          // A host-phys-bits-limit caps what the source host gave it.
          physBits:
            found.kind === 'host' && guest.hostPhysBitsLimit > 0
              ? Math.min(found.physBits, guest.hostPhysBitsLimit)
              : found.physBits,
          from: found.host,
          via: { source: found.source, atMost: found.kind === 'host' },
        }
      : null;
  if (known) {
    const booted = known.physBits;
    return {
      guest: { ...guest, physBits: booted, migratedIn: { bootedPhysBits: booted, qemuPhysBits, from: known.from } },
      reason: booted !== qemuPhysBits ? migratedWidthNotified(booted, qemuPhysBits, known.from, known.via) : null,
    };
  }
  if (guest.incoming.state !== 'completed') return { guest, reason: null };
  return {
    guest: { ...guest, migratedIn: { bootedPhysBits: null, qemuPhysBits, from: null } },
    reason: migratedWidthUnverified(qemuPhysBits, found?.kind === 'unknown' ? found.why : undefined),
  };
}

/** The guest's facts as the status document shows them: without the PCI rule's list of this QEMU's PCI types. */
function documentFacts(guest: GuestFacts): GuestFacts {
  if (guest.pciDeviceTypes === undefined) return guest;
  const shown = { ...guest };
  delete shown.pciDeviceTypes;
  return shown;
}

export function judgeVm(input: VmJudgement): VmStatus {
  const { socket, host, peers, policy } = input;
  const arrived = applyArrival(input.guest, input.arrival);
  const guest = arrived.guest;
  let verdict = computeVerdict({ host, guest, policy, peers });
  const extra = arrived.reason ? [...(input.extraReasons ?? []), arrived.reason] : (input.extraReasons ?? []);
  if (extra.length) {
    const reasons = [...verdict.reasons, ...extra].sort(byDescendingSeverity);
    verdict = {
      ...verdict,
      reasons,
      severity: reasons.reduce((worst, reason) => maxSeverity(worst, reason.severity), verdict.severity),
    };
  }
  return {
    socket,
    id: input.id ?? vmId(socket),
    name: guest.name || nameFromSocket(socket),
    mode: input.mode,
    accelerator: guest.accelerator,
    guest: documentFacts(guest),
    verdict,
    checkedAt: input.checkedAt,
  };
}
