import test from 'ava';
import { computeHostLimit, type HostLimitReadings, type LimitSource } from '../../agent/judge/host-limit';
import type { HostFlags, HostKvm, HostPaging } from '../../agent/core/types';

const NO_FLAGS: HostFlags = { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false };
const SME: HostFlags = { ...NO_FLAGS, sme: true, sev: true };
const FOUR: HostPaging = { la57: false, ept5Level: null, hypervisor: false };
const LA57: HostPaging = { la57: true, ept5Level: null, hypervisor: false };
/** Linux 6.9+ shows ept_5level when the CPU has it: its absence means 4 levels. */
const EPT4: HostPaging = { la57: false, ept5Level: false, hypervisor: false, kernelRelease: '6.12.12-amd64' };
const EPT5: HostPaging = { la57: true, ept5Level: true, hypervisor: false };
const NPT: HostKvm = { module: 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt: true };
const NO_NPT: HostKvm = { ...NPT, npt: false };
const EPT: HostKvm = { module: 'kvm_intel', allowSmallerMaxphyaddr: true, ept: true, npt: null };
const NO_EPT: HostKvm = { ...EPT, ept: false };
const NO_KVM: HostKvm = { module: null, allowSmallerMaxphyaddr: null, ept: null, npt: null };

function amd(over: Partial<HostLimitReadings> = {}): HostLimitReadings {
  return {
    vendor: 'AuthenticAMD',
    cpuinfoPhysBits: 43,
    cpuinfoVirtBits: 48,
    cpuidPhysBits: 48,
    memEncryptionReduction: 5,
    flags: SME,
    paging: FOUR,
    kvm: NPT,
    ...over,
  };
}

function intel(over: Partial<HostLimitReadings> = {}): HostLimitReadings {
  return {
    vendor: 'GenuineIntel',
    cpuinfoPhysBits: 46,
    cpuinfoVirtBits: 48,
    cpuidPhysBits: 46,
    memEncryptionReduction: null,
    flags: NO_FLAGS,
    paging: EPT4,
    kvm: EPT,
    ...over,
  };
}

interface Row {
  name: string;
  readings: HostLimitReadings;
  bits: number;
  source: LimitSource;
  problems?: RegExp[];
  notes?: RegExp[];
  reasoning?: RegExp;
}

const ROWS: Row[] = [
  {
    name: 'SME EPYC, npt on: the raw 48, not the reported 43',
    readings: amd(),
    bits: 48,
    source: 'cpuid',
    reasoning:
      /memory encryption \(sme, sev\) takes 5.*reductions of host-physical addresses do not touch guest-physical ones/,
  },
  {
    name: 'SME EPYC, npt=0: the reported 43',
    readings: amd({ kvm: NO_NPT }),
    bits: 43,
    source: 'cpuinfo',
    reasoning: /nested paging is off \(kvm_amd npt=0\)/,
  },
  {
    name: 'SME firmware-enabled without a flag: the reduction still shows in the widths',
    readings: amd({ flags: NO_FLAGS }),
    bits: 48,
    source: 'cpuid',
    reasoning: /memory encryption \(CPUID 0x8000001F reduction 5\)/,
  },
  {
    name: '52-bit AMD without la57: capped at 48',
    readings: amd({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, memEncryptionReduction: 0, flags: NO_FLAGS }),
    bits: 48,
    source: 'tdp-levels',
    reasoning: /no la57 flag.*capped at 48/,
  },
  {
    name: '52-bit AMD with la57: 52',
    readings: amd({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, memEncryptionReduction: 0, flags: NO_FLAGS, paging: LA57 }),
    bits: 52,
    source: 'cpuid',
  },
  {
    name: '52-bit AMD without la57 and npt=0: shadow paging is not capped',
    readings: amd({
      cpuinfoPhysBits: 52,
      cpuidPhysBits: 52,
      memEncryptionReduction: 0,
      flags: NO_FLAGS,
      kvm: NO_NPT,
    }),
    bits: 52,
    source: 'cpuinfo',
  },
  {
    name: 'Intel 52 bits without ept_5level: 48',
    readings: intel({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, paging: { ...EPT4, la57: true } }),
    bits: 48,
    source: 'tdp-levels',
    reasoning: /4-level EPT only \(no ept_5level in "vmx flags", which Linux 6\.12\.12-amd64 shows\)/,
  },
  {
    name: 'Intel 52 bits on Linux 6.1 (no ept_5level flag yet), msr not read: 48 known, depth not known',
    readings: intel({
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      paging: { la57: true, ept5Level: false, hypervisor: false, kernelRelease: '6.1.0-28-amd64', eptMsr5Level: null },
    }),
    bits: 48,
    source: 'tdp-levels',
    reasoning: /Linux 6\.1\.0-28-amd64 predates the ept_5level flag .* not known/,
  },
  {
    name: 'Intel 52 bits on Linux 6.1, IA32_VMX_EPT_VPID_CAP bit 7 set: 52',
    readings: intel({
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      paging: { la57: true, ept5Level: false, hypervisor: false, kernelRelease: '6.1.0-28-amd64', eptMsr5Level: true },
    }),
    bits: 52,
    source: 'cpuid',
    reasoning: /5-level EPT \(IA32_VMX_EPT_VPID_CAP bit 7/,
  },
  {
    name: 'Intel 52 bits with ept_5level: 52',
    readings: intel({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, paging: EPT5 }),
    bits: 52,
    source: 'cpuid',
  },
  {
    name: 'Intel 52 bits, no vmx flags line: 48 known, the depth not known',
    readings: intel({
      cpuinfoPhysBits: 52,
      cpuidPhysBits: 52,
      paging: { la57: true, ept5Level: null, hypervisor: false },
    }),
    bits: 48,
    source: 'tdp-levels',
    reasoning: /no "vmx flags" line, so the EPT depth is not known: KVM maps .* below 2\^48 either way/,
  },
  {
    name: 'Intel TME-MK, 5-level EPT: raw 52 over reported 46',
    readings: intel({ cpuidPhysBits: 52, flags: { ...NO_FLAGS, tme: true }, paging: EPT5 }),
    bits: 52,
    source: 'cpuid',
  },
  {
    name: 'Intel ept=N: the reported width',
    readings: intel({ cpuidPhysBits: 52, flags: { ...NO_FLAGS, tme: true }, paging: EPT5, kvm: NO_EPT }),
    bits: 46,
    source: 'cpuinfo',
  },
  {
    name: 'plain 46-bit Intel',
    readings: intel(),
    bits: 46,
    source: 'cpuid',
  },
  {
    name: 'cpuid unreadable on AMD: the reported width, and a note about SME',
    readings: amd({ cpuidPhysBits: null, memEncryptionReduction: null, flags: NO_FLAGS }),
    bits: 43,
    source: 'cpuinfo',
    notes: [/AMD host with \/dev\/cpu\/0\/cpuid unreadable: if SME\/SEV is enabled in firmware/],
  },
  {
    name: 'cpuinfo without a width: the raw width',
    readings: amd({ cpuinfoPhysBits: null }),
    bits: 48,
    source: 'cpuid',
  },
  {
    name: 'no KVM module: the smaller of both answers',
    readings: amd({ kvm: NO_KVM }),
    bits: 43,
    source: 'cpuinfo',
    reasoning: /whether nested paging is on is not known/,
  },
  {
    name: 'no KVM module on a 52-bit host without la57: 48',
    readings: amd({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, memEncryptionReduction: 0, flags: NO_FLAGS, kvm: NO_KVM }),
    bits: 48,
    source: 'tdp-levels',
  },
  {
    name: 'nested L1 host: a note that CPUID may claim more than the machine has',
    readings: intel({ paging: { ...EPT4, hypervisor: true } }),
    bits: 46,
    source: 'cpuid',
    notes: [/this host is itself a guest \(the hypervisor flag\).*may claim more address bits than the machine has/],
  },
  {
    name: 'contradiction: raw below cpuinfo, the smaller is used',
    readings: intel({ cpuidPhysBits: 40 }),
    bits: 40,
    source: 'cpuid',
    problems: [/the raw CPUID 0x80000008 width \(40\) is below the \/proc\/cpuinfo width \(46\)/],
  },
  {
    name: 'contradiction: unknown vendor, depth unknown, capped',
    readings: intel({ vendor: 'VortexVortex', cpuinfoPhysBits: 52, cpuidPhysBits: 52 }),
    bits: 48,
    source: 'tdp-levels',
    problems: [/unknown CPU vendor "VortexVortex"/],
  },
  {
    name: 'contradiction: npt unreadable, the smaller answer',
    readings: amd({ kvm: { ...NPT, npt: null } }),
    bits: 43,
    source: 'cpuinfo',
    problems: [/kvm_amd is loaded but its npt parameter could not be read/],
  },
  {
    name: 'contradiction: kvm_intel on an AMD CPU',
    readings: amd({ kvm: EPT }),
    bits: 48,
    source: 'cpuid',
    problems: [/kvm_intel is loaded on a AuthenticAMD CPU/],
  },
  {
    name: 'the config wins, even over contradictions',
    readings: intel({ cpuidPhysBits: 40, override: 44 }),
    bits: 44,
    source: 'config',
    problems: [/below the \/proc\/cpuinfo width/],
    reasoning: /host\.physBits in the config sets 44 bits, replacing the detected 40/,
  },
  {
    name: 'the config wins on the SME host too',
    readings: amd({ override: 43 }),
    bits: 43,
    source: 'config',
  },
];

for (const row of ROWS) {
  test(`table: ${row.name}`, (t) => {
    const limit = computeHostLimit(row.readings);
    if (!limit) return t.fail('no limit');
    t.is(limit.physBits, row.bits);
    t.is(limit.source, row.source);
    t.is(limit.problems.length, row.problems?.length ?? 0, limit.problems.join(' | '));
    row.problems?.forEach((re, i) => t.regex(limit.problems[i], re));
    t.is(limit.notes.length, row.notes?.length ?? 0, limit.notes.join(' | '));
    row.notes?.forEach((re, i) => t.regex(limit.notes[i], re));
    if (row.reasoning) t.regex(limit.reasoning.join('; '), row.reasoning);
    t.true(limit.reasoning.length > 0);
  });
}

test('no width at all: null (the reader turns it into HOST_FACTS_UNAVAILABLE)', (t) => {
  t.is(computeHostLimit(intel({ cpuinfoPhysBits: null, cpuidPhysBits: null })), null);
  t.is(computeHostLimit(intel({ cpuinfoPhysBits: null, cpuidPhysBits: null, override: 40 }))?.physBits, 40);
});
