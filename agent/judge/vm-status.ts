/**
 * One VM's status from its facts: the verdict over (host, guest, peers, policy), with the reasons
 * the daemon added from what it saw happen (an unverified migration) merged in. Pure: every VM,
 * held, polled or scanned, is judged here.
 */
import type { GuestFacts, HostFacts, PeerFacts, Policy, Reason, VmStatus } from '../core/types';
import { nameFromSocket } from '../core/vm-name';
import { byDescendingSeverity, maxSeverity } from './reasons';
import { computeVerdict } from './verdict';

export interface VmJudgement {
  socket: string;
  /** Mode label for the status document ('hold', 'poll', 'libvirt', 'scan'). */
  mode?: string;
  guest: GuestFacts;
  host: HostFacts;
  peers: PeerFacts[];
  policy: Policy;
  /** Reasons from outside the facts, kept until cleared. */
  extraReasons?: readonly Reason[];
  /** ISO time of the read. */
  checkedAt: string;
}

export function judgeVm(input: VmJudgement): VmStatus {
  const { socket, guest, host, peers, policy } = input;
  let verdict = computeVerdict({ host, guest, policy, peers });
  const extra = input.extraReasons ?? [];
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
    name: guest.name || nameFromSocket(socket),
    mode: input.mode,
    accelerator: guest.accelerator,
    guest,
    verdict,
    checkedAt: input.checkedAt,
  };
}
