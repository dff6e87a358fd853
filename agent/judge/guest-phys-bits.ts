/**
 * The guest-phys-bits QEMU will give a guest that has not started yet, so that the hooks (libvirt,
 * Proxmox) judge it as the verdict will judge it once it runs (docs/reasons.md,
 * GUEST_WIDER_WITHIN_GUEST_PHYS_BITS). Pure: facts in, a prediction out.
 *
 * What QEMU does (9.1 and later; "target/i386: add guest-phys-bits cpu property" and "kvm: add
 * support for guest physical bits", both in 9.1):
 * - target/i386/cpu.c: the `guest-phys-bits` property defaults to -1 ("not set"); x86_cpu_realizefn
 *   turns a value nobody set into 0 (CPUID 0x80000008 EAX[23:16] stays 0), and refuses one outside
 *   32..phys-bits. hw/i386/pc.c pc_compat_9_0 sets it to 0 on every machine type up to 9.0, so only
 *   9.1 and later machine types (and the unversioned `pc`/`q35`, the newest) leave it unset.
 * - target/i386/kvm/kvm-cpu.c kvm_cpu_realizefn, under KVM only, for a 64-bit CPU whose property is
 *   still -1 (any model, not only host/max): kvm_set_guest_phys_bits takes KVM_GET_SUPPORTED_CPUID
 *   0x80000008 EAX[23:16]; 0 leaves it unset; otherwise it is capped at the CPU's phys-bits and, with
 *   host-phys-bits, at host-phys-bits-limit.
 * - The value is the running QEMU's own: CPUID is not part of the migration stream, so on a
 *   migration destination that QEMU and this host's KVM decide it.
 *
 * What KVM reports there (Linux arch/x86/kvm/cpuid.c __do_cpuid_func, case 0x80000008, since 6.10:
 * "KVM: x86: Advertise max mappable GPA in CPUID.0x80000008.GuestPhysBits", kvm-x86-misc-6.10):
 * without TDP (ept=N / npt=0) 0; with TDP the raw CPUID width, capped at 48 when
 * kvm_mmu_get_max_tdp_level() < 5. Before 6.10 those bits are 0. A distribution kernel older than
 * 6.10 that carries the change is predicted as 0: the hooks then judge by width alone, the stricter
 * answer.
 */
import type { GuestFacts, HostFacts, Policy, Reason } from '../core/types';
import { atLeast, parseMachineType } from '../facts/qemu-version';
import type { QemuBinaryVersion } from '../facts/qemu-binary';
import { FOUR_LEVEL_TDP_BITS, kernelVersion, qemuHostPhysBits } from './host-limit';
import { computeVerdict } from './verdict';

/** QEMU releases that set guest-phys-bits from KVM (and have the property at all). */
export const GUEST_PHYS_BITS_QEMU_SINCE = { major: 9, minor: 1 } as const;
/** Linux releases whose KVM reports GuestPhysBits in KVM_GET_SUPPORTED_CPUID 0x80000008. */
export const GUEST_PHYS_BITS_KERNEL_SINCE = { major: 6, minor: 10 } as const;

export type { QemuBinaryVersion };

export interface GuestPhysBitsQuestion {
  qemu: QemuBinaryVersion;
  accelerator: string;
  /** The machine type QEMU gets ('pc-q35-9.0', 'q35'); null: QEMU's default ('pc', the newest). */
  machineType: string | null;
  /** guest-phys-bits given on -cpu; null when absent. */
  explicit: number | null;
  /** The CPU's phys-bits as QEMU resolves it. */
  physBits: number;
  hostPhysBits: boolean;
  /** host-phys-bits-limit; 0 when unset. */
  hostPhysBitsLimit: number;
  host: Pick<HostFacts, 'cpuidPhysBits' | 'cpuinfoPhysBits' | 'physBits' | 'paging'> & {
    limit: Pick<HostFacts['limit'], 'nestedPaging' | 'tdpLevels'>;
  };
}

export type GuestPhysBitsPrediction =
  /** QEMU sets guest-phys-bits to `bits`; `why` says where it comes from. */
  | { kind: 'set'; bits: number; why: string }
  /** QEMU leaves it 0 (none); `why` says what leaves it unset. */
  | { kind: 'none'; why: string }
  /** Not knowable from what was read; `why` says what is missing. */
  | { kind: 'unknown'; why: string };

const ALIASES = new Set(['pc', 'q35', 'pc-i440fx']);

function versionText(v: { major: number; minor: number }): string {
  return `${v.major}.${v.minor}`;
}

/** What machine types say: null when the machine leaves guest-phys-bits to KVM. */
function machineRule(machineType: string | null): GuestPhysBitsPrediction | null {
  if (machineType === null) return null;
  const bare = machineType.trim().replace(/-machine$/, '');
  if (ALIASES.has(bare)) return null;
  const m = parseMachineType(bare);
  if (m.family === 'microvm') return null;
  if (m.version === null)
    return {
      kind: 'unknown',
      why: `machine type ${bare} is not an upstream versioned type, so whether it keeps guest-phys-bits at 0 is not known`,
    };
  if (!atLeast(m.version, GUEST_PHYS_BITS_QEMU_SINCE.major, GUEST_PHYS_BITS_QEMU_SINCE.minor))
    return {
      kind: 'none',
      why: `machine type ${bare} keeps guest-phys-bits at 0 (QEMU's pc_compat_9_0, machine types up to 9.0)`,
    };
  return null;
}

/**
 * The value KVM_GET_SUPPORTED_CPUID puts in 0x80000008 EAX[23:16] on this host with Linux 6.10 or
 * later; a prediction when it says 0 or is unknown.
 */
function tdpGuestPhysBits(host: GuestPhysBitsQuestion['host']): number | GuestPhysBitsPrediction {
  const tdp = host.limit.nestedPaging;
  if (tdp === false) return { kind: 'none', why: 'KVM reports no guest-phys-bits without nested paging (ept/npt off)' };
  if (tdp === null)
    return {
      kind: 'unknown',
      why: 'whether nested paging is on is not known, and KVM reports guest-phys-bits only with it',
    };
  const raw = qemuHostPhysBits(host);
  if (raw <= FOUR_LEVEL_TDP_BITS || host.limit.tdpLevels === 5) return raw;
  if (host.limit.tdpLevels === 4) return FOUR_LEVEL_TDP_BITS;
  return {
    kind: 'unknown',
    why: 'the nested paging depth is not known, and KVM reports 48 with 4 levels, the raw width with 5',
  };
}

/** tdpGuestPhysBits, from the kernel that runs here. */
function kvmGuestPhysBits(host: GuestPhysBitsQuestion['host']): number | GuestPhysBitsPrediction {
  const release = host.paging.kernelRelease ?? null;
  const kernel = kernelVersion(release);
  const since = GUEST_PHYS_BITS_KERNEL_SINCE;
  if (kernel === null)
    return {
      kind: 'unknown',
      why: 'the kernel release was not read, and KVM reports guest-phys-bits only from Linux 6.10',
    };
  if (!atLeast(kernel, since.major, since.minor))
    return {
      kind: 'none',
      why: `KVM in Linux ${release} does not report guest-phys-bits (Linux ${versionText(since)} and later do), so QEMU leaves it at 0`,
    };
  return tdpGuestPhysBits(host);
}

/**
 * Whether the guest-phys-bits KVM gives on this host (with a QEMU and a kernel new enough) keeps a
 * guest of `physBits` within the host's limit: only then is it worth asking QEMU its version, or
 * saying in a refusal why it does not.
 */
export function guestPhysBitsMayHelp(host: GuestPhysBitsQuestion['host'], physBits: number): boolean {
  const kvm = tdpGuestPhysBits(host);
  return typeof kvm === 'number' && Math.min(kvm, physBits) <= host.physBits;
}

/** The guest-phys-bits QEMU will give the guest of `q` (see the file comment). */
export function predictGuestPhysBits(q: GuestPhysBitsQuestion): GuestPhysBitsPrediction {
  if (q.explicit !== null) return { kind: 'set', bits: q.explicit, why: `guest-phys-bits=${q.explicit} on -cpu` };
  if (q.accelerator !== 'kvm')
    return { kind: 'none', why: `QEMU sets guest-phys-bits only under KVM, not ${q.accelerator}` };
  if ('unknown' in q.qemu) return { kind: 'unknown', why: q.qemu.unknown };
  const v = q.qemu.version;
  const since = GUEST_PHYS_BITS_QEMU_SINCE;
  if (!atLeast(v, since.major, since.minor))
    return {
      kind: 'none',
      why: `QEMU ${v.major}.${v.minor}.${v.micro} (${q.qemu.binary}) has no guest-phys-bits (QEMU ${versionText(since)} and later set it)`,
    };
  const machine = machineRule(q.machineType);
  if (machine) return machine;
  const kvm = kvmGuestPhysBits(q.host);
  if (typeof kvm !== 'number') return kvm;
  let bits = Math.min(kvm, q.physBits);
  if (q.hostPhysBits && q.hostPhysBitsLimit > 0) bits = Math.min(bits, q.hostPhysBitsLimit);
  const kernel = q.host.paging.kernelRelease ?? '';
  return {
    kind: 'set',
    bits,
    why: `QEMU ${v.major}.${v.minor}.${v.micro} on Linux ${kernel} sets guest-phys-bits ${bits} from KVM's ${kvm}`,
  };
}

/** A guest arriving with the width it booted with elsewhere: its firmware placed its memory there. */
export function bootedElsewhere(source: string | null): GuestPhysBitsPrediction {
  return {
    kind: 'unknown',
    why: `it booted on ${source === null ? 'its source host' : source}, where its firmware placed memory by that host's guest-phys-bits, which is not known here`,
  };
}

/** The clause a width refusal adds: why guest-phys-bits does not keep the guest within the limit. */
export function guestPhysBitsClause(p: GuestPhysBitsPrediction): string {
  if (p.kind === 'set') return `its guest-phys-bits ${p.bits} (${p.why}) is above that limit too`;
  if (p.kind === 'none') return `no guest-phys-bits keeps it within that limit: ${p.why}`;
  return `guest-phys-bits not predicted: ${p.why}`;
}

/** What a hook refuses a guest for, and the prediction that was asked, if any. */
export interface HookJudgement {
  /** The verdict's critical reasons; none: the guest may start. */
  blocking: Reason[];
  prediction: GuestPhysBitsPrediction | null;
}

/**
 * A hook's judgement of a guest that has not started yet (the libvirt and Proxmox hooks): the
 * verdict's critical reasons, judged again with the guest-phys-bits QEMU will give the guest when
 * that could clear a width refusal. QEMU sets it itself only under KVM, and only where KVM's value
 * keeps the guest within the limit is it worth asking; elsewhere only a guest-phys-bits given on
 * -cpu counts. `predict` (which may run the QEMU binary) is called only then; a prediction that
 * sets a value is written into `guest`, as the verdict of the running guest will see it.
 */
export async function judgeBeforeStart(
  host: HostFacts,
  guest: GuestFacts,
  policy: Policy,
  predict: () => Promise<GuestPhysBitsPrediction>,
): Promise<HookJudgement> {
  const critical = (): Reason[] =>
    computeVerdict({ host, guest, policy }).reasons.filter((r) => r.severity === 'critical');
  const blocking = critical();
  const mayHave =
    guest.guestPhysBits !== null || (guest.accelerator === 'kvm' && guestPhysBitsMayHelp(host, guest.physBits));
  if (!mayHave || !blocking.some((r) => r.code === 'GUEST_WIDER_THAN_HOST')) return { blocking, prediction: null };
  const prediction = await predict();
  if (prediction.kind !== 'set' || prediction.bits === guest.guestPhysBits) return { blocking, prediction };
  guest.guestPhysBits = prediction.bits;
  return { blocking: critical(), prediction };
}
