/**
 * The host's limit: the widest guest-physical address width KVM on this host can map for a guest
 * (docs/reasons.md, "The host's limit"). Every rule compares with this one number; nothing else
 * in the agent derives a host width from the readings.
 *
 * What KVM does (Linux):
 * - arch/x86/kvm/cpuid.c, __do_cpuid_func() case 0x80000008 (the values kvm_set_cpu_caps() and
 *   KVM_GET_SUPPORTED_CPUID report): without TDP (nested paging: EPT on Intel, NPT on AMD) the
 *   guest's width is boot_cpu_data.x86_phys_bits, the width /proc/cpuinfo prints, already reduced
 *   by memory encryption (SME/SEV, TME-MK), because shadow paging shares the host's physical
 *   address space. With TDP it is the raw CPUID 0x80000008 EAX[7:0] width ("reductions to the HPAs
 *   do not affect GPAs"), and the addressable width (g_phys_as) is capped at 48 bits when
 *   kvm_mmu_get_max_tdp_level() < 5: bits 51:48 are only walked by a fifth page-table level.
 * - arch/x86/kvm/mmu/mmu.c, kvm_mmu_get_max_tdp_level(): the level kvm_configure_mmu() was given.
 *   Intel: arch/x86/kvm/vmx/vmx.c vmx_get_max_ept_level() is 5 when the CPU has 5-level EPT
 *   (cpu_has_vmx_ept_5levels(), shown as `ept_5level` in /proc/cpuinfo's "vmx flags").
 *   AMD: arch/x86/kvm/svm/svm.c get_npt_level() is 5 only when the host itself runs 5-level paging
 *   (pgtable_l5_enabled(), shown as the `la57` flag, which Linux clears when it does not use it).
 * - Above the limit: with nested paging KVM refuses a memory slot beyond the raw width
 *   (arch/x86/kvm/x86.c kvm_arch_prepare_memory_region, kvm_mmu_max_gfn() on kvm_host.maxphyaddr)
 *   and QEMU aborts the whole VM (accel/kvm/kvm-all.c kvm_set_phys_mem, "error registering slot").
 *   Under the 48-bit cap the slot is accepted (the check uses the raw width) and the 4-level TDP
 *   MMU drops the address bits above 47: guest memory aliases silently (Linux KVM "Don't create
 *   SPTEs for addresses that aren't mappable", 2026-02, refuses instead). Without nested paging
 *   kvm_mmu_max_gfn() allows 52 bits. reasons.ts says which applies.
 * - Intel kernels before 6.9 do not show ept_5level: the depth comes from IA32_VMX_EPT_VPID_CAP
 *   through /dev/cpu/0/msr (what vmx_get_max_ept_level itself reads), else it is not known, and the
 *   limit is the 48 bits known with the raw width beside it (upperPhysBits).
 *
 * Pure: readings in (agent/facts/host-facts.ts readHost), the limit with its reasoning out. Whoever
 * needs the limit (the daemon, `physbitsctl scan`, the libvirt hook) reads, then calls judgeHost.
 */
import { HostFactsError } from '../core/errors';
import type { HostFacts, HostFlags, HostPaging, HostReadings } from '../core/types';
import { isWidth } from '../core/checks';
import { EPT_5LEVEL_FLAG_SINCE, kernelVersion } from '../facts/cpuinfo';

export { EPT_5LEVEL_FLAG_SINCE, kernelVersion } from '../facts/cpuinfo';

export type { HostPaging };

/** The readings the limit is decided from: HostFacts' readings, the config's override, read problems. */
export type HostLimitReadings = Pick<
  HostReadings,
  | 'vendor'
  | 'cpuinfoPhysBits'
  | 'cpuinfoVirtBits'
  | 'cpuidPhysBits'
  | 'memEncryptionReduction'
  | 'flags'
  | 'paging'
  | 'kvm'
> & {
  /** The config's host.physBits. */
  override?: number;
  /** Problems found while reading (vendors that disagree), to be carried into the limit. */
  readProblems?: string[];
};

export type LimitSource = 'config' | 'cpuid' | 'cpuinfo' | 'tdp-levels';

export interface HostLimit {
  physBits: number;
  /** Which reading decided it ('tdp-levels': the 48-bit cap of 4-level nested paging). */
  source: LimitSource;
  /** kvm_intel ept / kvm_amd npt; null when no KVM module (or its parameter) was read. */
  nestedPaging: boolean | null;
  /** The nested paging depth: 5, 4, or null when not known. */
  tdpLevels: 4 | 5 | null;
  /** Depth not known on a CPU wider than 48 bits: its raw width (what KVM maps with 5 levels). */
  upperPhysBits: number | null;
  /** The width detection would give, before the config's host.physBits. */
  detectedPhysBits: number | null;
  /** Each step, in order, in sentences an operator can follow. */
  reasoning: string[];
  /** Contradictory or missing readings (a reason in every enforced guest's verdict). */
  problems: string[];
  /** Advice that is not a problem (a nested host's CPUID). */
  notes: string[];
}

const KNOWN_VENDORS = new Set(['GenuineIntel', 'AuthenticAMD', 'HygonGenuine']);
const AMD_VENDORS = new Set(['AuthenticAMD', 'HygonGenuine']);

/** 4-level nested paging maps guest-physical addresses below 2^48 only. */
export const FOUR_LEVEL_TDP_BITS = 48;

function isAmd(vendor: string | null): boolean {
  return vendor !== null && AMD_VENDORS.has(vendor);
}

function nestedPagingOf(r: HostLimitReadings, problems: string[]): boolean | null {
  const k = r.kvm;
  if (k.module === 'kvm_intel') {
    if (k.ept === null) problems.push('kvm_intel is loaded but its ept parameter could not be read');
    if (r.vendor !== null && r.vendor !== 'GenuineIntel' && KNOWN_VENDORS.has(r.vendor))
      problems.push(`kvm_intel is loaded on a ${r.vendor} CPU`);
    return k.ept;
  }
  if (k.module === 'kvm_amd') {
    if (k.npt === null) problems.push('kvm_amd is loaded but its npt parameter could not be read');
    if (r.vendor !== null && !isAmd(r.vendor) && KNOWN_VENDORS.has(r.vendor))
      problems.push(`kvm_amd is loaded on a ${r.vendor} CPU`);
    return k.npt;
  }
  return null;
}

/**
 * Intel's EPT depth: KVM uses 5 levels when the CPU has them (arch/x86/kvm/vmx/vmx.c
 * vmx_get_max_ept_level: cpu_has_vmx_ept_5levels(), bit 7 of IA32_VMX_EPT_VPID_CAP). Linux shows
 * that bit as `ept_5level` in "vmx flags" only from 6.9; before, the flag's absence says nothing,
 * and only the MSR itself (`/dev/cpu/0/msr`) tells. Where neither tells, the depth is not known.
 */
function eptLevelsOf(p: HostPaging): { levels: 4 | 5 | null; why: string } {
  if (p.ept5Level === true) return { levels: 5, why: 'the CPU has 5-level EPT (ept_5level)' };
  if (p.eptMsr5Level === true)
    return { levels: 5, why: 'the CPU has 5-level EPT (IA32_VMX_EPT_VPID_CAP bit 7, read through /dev/cpu/0/msr)' };
  if (p.eptMsr5Level === false)
    return {
      levels: 4,
      why: 'the CPU has 4-level EPT only (IA32_VMX_EPT_VPID_CAP bit 7 clear, read through /dev/cpu/0/msr)',
    };
  if (p.ept5Level === null)
    return { levels: null, why: '/proc/cpuinfo has no "vmx flags" line, so the EPT depth is not known' };
  const kernel = kernelVersion(p.kernelRelease);
  const since = EPT_5LEVEL_FLAG_SINCE;
  if (kernel && (kernel.major > since.major || (kernel.major === since.major && kernel.minor >= since.minor)))
    return {
      levels: 4,
      why: `the CPU has 4-level EPT only (no ept_5level in "vmx flags", which Linux ${p.kernelRelease} shows)`,
    };
  const which = kernel
    ? `Linux ${p.kernelRelease} predates`
    : 'the kernel release was not read, and Linux before 6.9 lacks';
  return {
    levels: null,
    why: `${which} the ept_5level flag and /dev/cpu/0/msr could not be read (modprobe msr; root), so whether EPT has 5 levels is not known`,
  };
}

/** The nested paging depth KVM uses (see the file comment). */
function tdpLevelsOf(r: HostLimitReadings): { levels: 4 | 5 | null; why: string } {
  if (isAmd(r.vendor)) {
    if (r.paging.la57 === true) return { levels: 5, why: 'the host runs 5-level paging (la57), so NPT has 5 levels' };
    if (r.paging.la57 === false)
      return { levels: 4, why: 'the host runs 4-level paging (no la57 flag), so NPT has 4 levels' };
    return { levels: null, why: '/proc/cpuinfo has no flags line, so the NPT depth is unknown' };
  }
  if (r.vendor === 'GenuineIntel') return eptLevelsOf(r.paging);
  return { levels: null, why: `the nested paging depth of a ${r.vendor ?? 'unknown'} CPU is unknown` };
}

/** Applies the 48-bit cap of 4-level (or unknown-depth) nested paging to a TDP width. */
function tdpWidth(
  bits: number,
  levels: 4 | 5 | null,
  levelsWhy: string,
  reasoning: string[],
): { bits: number; capped: boolean } {
  if (levels === 5 || bits <= FOUR_LEVEL_TDP_BITS) {
    if (bits > FOUR_LEVEL_TDP_BITS) reasoning.push(`${levelsWhy}: all ${bits} bits are mapped`);
    return { bits, capped: false };
  }
  if (levels === null) {
    reasoning.push(
      `${levelsWhy}: KVM maps guest-physical addresses below 2^${FOUR_LEVEL_TDP_BITS} either way, and up to 2^${bits} only with 5 levels; the limit is taken as the ${FOUR_LEVEL_TDP_BITS} bits that are known, and guests between ${FOUR_LEVEL_TDP_BITS} and ${bits} bits are reported as not known`,
    );
    return { bits: FOUR_LEVEL_TDP_BITS, capped: true };
  }
  reasoning.push(
    `${levelsWhy}: KVM maps guest-physical addresses below 2^${FOUR_LEVEL_TDP_BITS} only, so ${bits} bits are capped at ${FOUR_LEVEL_TDP_BITS}`,
  );
  return { bits: FOUR_LEVEL_TDP_BITS, capped: true };
}

function encryptionNames(flags: HostFlags): string[] {
  return (['sme', 'sev', 'sev_es', 'sev_snp', 'tme'] as const).filter((f) => flags[f]);
}

/** The host's limit (see the file comment); null physBits only when no width was read at all. */
export function computeHostLimit(r: HostLimitReadings): HostLimit | null {
  const reasoning: string[] = [];
  const problems: string[] = [...(r.readProblems ?? [])];
  const notes: string[] = [];

  if (r.vendor === null) problems.push('the CPU vendor could not be read');
  else if (!KNOWN_VENDORS.has(r.vendor)) problems.push(`unknown CPU vendor ${JSON.stringify(r.vendor)}`);

  let raw = r.cpuidPhysBits;
  let reduced = r.cpuinfoPhysBits;
  if (raw !== null && reduced !== null && raw < reduced) {
    problems.push(
      `the raw CPUID 0x80000008 width (${raw}) is below the /proc/cpuinfo width (${reduced}), which Linux derives from it; the smaller is used`,
    );
    reduced = raw;
  }
  if (raw === null && reduced !== null) {
    reasoning.push(
      `/dev/cpu/0/cpuid was not read: the raw width is taken to be the ${reduced} bits /proc/cpuinfo shows`,
    );
    if (isAmd(r.vendor))
      notes.push(
        'AMD host with /dev/cpu/0/cpuid unreadable: if SME/SEV is enabled in firmware, Linux reports fewer bits than the CPU has, and guests may use more; load the cpuid module so the raw width can be read',
      );
    raw = reduced;
  }
  if (reduced === null && raw !== null) reduced = raw;
  const reducedSource: LimitSource = r.cpuinfoPhysBits !== null ? 'cpuinfo' : 'cpuid';

  const nestedPaging = nestedPagingOf(r, problems);
  const tdp = tdpLevelsOf(r);
  const tdpLevels = nestedPaging === false ? null : tdp.levels;

  let detected: number | null = null;
  let upperPhysBits: number | null = null;
  let source: LimitSource = 'cpuinfo';
  if (raw !== null && reduced !== null) {
    const encryption = encryptionNames(r.flags);
    const gap = raw - reduced;
    if (gap > 0) {
      const why = encryption.length
        ? `memory encryption (${encryption.join(', ')})`
        : (r.memEncryptionReduction ?? 0) > 0
          ? `memory encryption (CPUID 0x8000001F reduction ${r.memEncryptionReduction})`
          : 'a reduction of host-physical addresses';
      reasoning.push(
        `the CPU has ${raw} physical address bits (CPUID 0x80000008); Linux uses ${reduced} because ${why} takes ${gap}`,
      );
    } else {
      reasoning.push(`the CPU has ${raw} physical address bits, as /proc/cpuinfo shows`);
    }
    if (nestedPaging === true) {
      const w = tdpWidth(raw, tdp.levels, tdp.why, reasoning);
      detected = w.bits;
      if (w.capped && tdp.levels === null) upperPhysBits = raw;
      source = w.capped ? 'tdp-levels' : r.cpuidPhysBits !== null ? 'cpuid' : 'cpuinfo';
      reasoning.push(
        gap > 0
          ? `nested paging is on (${r.kvm.module} ${r.kvm.module === 'kvm_intel' ? 'ept' : 'npt'}): reductions of host-physical addresses do not touch guest-physical ones, so guests get ${detected} bits`
          : `nested paging is on: guests get ${detected} bits`,
      );
    } else if (nestedPaging === false) {
      detected = reduced;
      source = reducedSource;
      reasoning.push(
        `nested paging is off (${r.kvm.module === 'kvm_intel' ? 'kvm_intel ept=N' : 'kvm_amd npt=0'}): guests share the host's ${reduced}-bit physical address space`,
      );
    } else {
      // Without a KVM module (or its parameter) either answer may hold: the smaller of them.
      const w = tdpWidth(raw, tdp.levels, tdp.why, []);
      detected = Math.min(reduced, w.bits);
      source = w.capped && w.bits < reduced ? 'tdp-levels' : reducedSource;
      reasoning.push(
        `whether nested paging is on is not known (no kvm_intel/kvm_amd parameters read): the smaller of the shadow-paging width (${reduced}) and the nested-paging width (${w.bits}) is used`,
      );
    }
  }

  if (r.paging.hypervisor === true)
    notes.push(
      "this host is itself a guest (the hypervisor flag): its CPUID is what the outer hypervisor reports, and may claim more address bits than the machine has; set host.physBits to the outer host's limit if they differ",
    );

  if (r.override !== undefined) {
    reasoning.push(
      detected === null
        ? `host.physBits in the config sets ${r.override} bits`
        : `host.physBits in the config sets ${r.override} bits, replacing the detected ${detected}`,
    );
    return {
      physBits: r.override,
      source: 'config',
      nestedPaging,
      tdpLevels,
      upperPhysBits: null,
      detectedPhysBits: detected,
      reasoning,
      problems,
      notes,
    };
  }
  if (detected === null) return null;
  return {
    physBits: detected,
    source,
    nestedPaging,
    tdpLevels,
    upperPhysBits,
    detectedPhysBits: detected,
    reasoning,
    problems,
    notes,
  };
}

/**
 * The host's facts from its readings and the config's host.physBits (`override`). Throws
 * HostFactsError when the override is not a width, or when no width is left to compare with (no
 * override, no "address sizes" line, no readable cpuid device).
 */
export function judgeHost(readings: HostReadings, override?: number): HostFacts {
  if (override !== undefined && !isWidth(override)) {
    throw new HostFactsError(`host.physBits must be an integer from 1 to 64, got ${override}`);
  }
  const limit = computeHostLimit({ ...readings, override, readProblems: readings.problems });
  if (!limit) {
    throw new HostFactsError(
      `no physical address width found (${readings.notes.join('; ')}); set host.physBits in the config`,
    );
  }
  const facts: HostFacts = {
    name: readings.name,
    physBits: limit.physBits,
    physBitsSource: limit.source,
    reasoning: limit.reasoning,
    limit: {
      nestedPaging: limit.nestedPaging,
      tdpLevels: limit.tdpLevels,
      ...(limit.upperPhysBits !== null ? { upperPhysBits: limit.upperPhysBits } : {}),
      detectedPhysBits: limit.detectedPhysBits,
      problems: limit.problems,
      notes: limit.notes,
    },
    vendor: readings.vendor ?? 'unknown',
    cpuinfoPhysBits: readings.cpuinfoPhysBits,
    cpuinfoVirtBits: readings.cpuinfoVirtBits,
    cpuidPhysBits: readings.cpuidPhysBits,
    memEncryptionReduction: readings.memEncryptionReduction,
    flags: readings.flags,
    paging: readings.paging,
    kvm: readings.kvm,
    sources: { ...readings.sources, physBits: limit.source },
  };
  if (readings.notes.length) facts.notes = [...readings.notes];
  return facts;
}

/** The width QEMU gives a host-phys-bits=on guest here: raw CPUID (target/i386/host-cpu.c host_cpu_phys_bits). */
export function qemuHostPhysBits(host: {
  cpuidPhysBits: number | null;
  cpuinfoPhysBits: number | null;
  physBits: number;
}): number {
  return host.cpuidPhysBits ?? host.cpuinfoPhysBits ?? host.physBits;
}

/**
 * The MAXPHYADDR KVM compares a guest's with for allow_smaller_maxphyaddr: kvm_host.maxphyaddr
 * (arch/x86/kvm/vmx/vmx.h vmx_need_pf_intercept: cpuid_maxphyaddr(vcpu) < kvm_host.maxphyaddr),
 * which arch/x86/kvm/mmu/spte.c kvm_get_host_maxphyaddr() takes from the raw CPUID 0x80000008
 * ("boot_cpu_data.x86_phys_bits is reduced for MKTME/SME; use raw MAXPHYADDR"), not the width
 * /proc/cpuinfo shows.
 */
export function hostCpuMaxPhysAddr(host: {
  cpuidPhysBits: number | null;
  cpuinfoPhysBits: number | null;
  physBits: number;
}): number {
  return host.cpuidPhysBits ?? host.cpuinfoPhysBits ?? host.physBits;
}
