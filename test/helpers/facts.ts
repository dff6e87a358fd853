/** Literal host and guest facts for tests: a plain Intel host and a running q35 guest, with overrides. */
import type { GuestFacts, GuestLayout, HostFacts, HostReadings } from '../../agent/core/types';
import { judgeHost } from '../../agent/judge/host-limit';

export const GiB = 2 ** 30;

/** Host fields to replace; `flags` and `kvm` may be given in part. */
export type HostOverride = Partial<Omit<HostFacts, 'flags' | 'kvm' | 'paging' | 'limit'>> & {
  flags?: Partial<HostFacts['flags']>;
  kvm?: Partial<HostFacts['kvm']>;
  paging?: Partial<HostFacts['paging']>;
  limit?: Partial<HostFacts['limit']>;
};

/** Guest fields to replace; `memoryEncryption` may be given in part. */
export type GuestOverride = Partial<Omit<GuestFacts, 'memoryEncryption'>> & {
  memoryEncryption?: Partial<GuestFacts['memoryEncryption']>;
};

/**
 * A `physBits`-wide Intel host with EPT and the width from the config; `over` replaces fields, and
 * `flags` and `kvm` field by field.
 */
export function hostFacts(physBits: number, name = 'hv1', over: HostOverride = {}): HostFacts {
  const base: HostFacts = {
    name,
    physBits,
    physBitsSource: 'config',
    reasoning: [`host.physBits in the config sets ${physBits} bits`],
    limit: { nestedPaging: true, tdpLevels: 4, detectedPhysBits: physBits, problems: [], notes: [] },
    vendor: 'GenuineIntel',
    cpuinfoPhysBits: physBits,
    cpuinfoVirtBits: 48,
    cpuidPhysBits: null,
    memEncryptionReduction: null,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    paging: { la57: false, ept5Level: false, hypervisor: false },
    kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: null, ept: true, npt: null },
    sources: { physBits: 'config' },
  };
  return {
    ...base,
    ...(over as Partial<HostFacts>),
    flags: { ...base.flags, ...over.flags },
    kvm: { ...base.kvm, ...over.kvm },
    paging: { ...base.paging, ...over.paging },
    limit: { ...base.limit, ...over.limit },
  };
}

/** 2 GiB below and above 4 GiB, 64 GiB of hot-plug space from 6 GiB, the 32 GiB window above it. */
export function layout(over: Partial<GuestLayout> = {}): GuestLayout {
  return {
    ramBelow4g: 2 * GiB,
    ramAbove4g: 2 * GiB,
    deviceMemory: { base: 6 * GiB, size: 64 * GiB },
    memoryDevices: [],
    pciHole64: { start: 70 * GiB, end: 102 * GiB },
    highestAddress: 102 * GiB,
    usedEnd: 6 * GiB,
    ...over,
  };
}

/** A running 40-bit qemu64 KVM guest "web1" with layout(); `over` replaces fields, and `memoryEncryption` field by field. */
export function guestFacts(over: GuestOverride = {}): GuestFacts {
  const base: GuestFacts = {
    name: 'web1',
    qemuVersion: '7.2.0',
    accelerator: 'kvm',
    physBits: 40,
    hostPhysBits: false,
    hostPhysBitsLimit: 0,
    guestPhysBits: null,
    cpuModel: 'qemu64',
    memoryEncryption: { active: false, type: null, reducedPhysBits: null },
    runState: 'running',
    layout: layout(),
  };
  return {
    ...base,
    ...(over as Partial<GuestFacts>),
    memoryEncryption: { ...base.memoryEncryption, ...over.memoryEncryption },
  };
}

/** Readings to replace in hostFromReadings; `override` is the config's host.physBits. */
export type ReadingsOverride = Partial<Omit<HostReadings, 'name'>> & { override?: number };

/**
 * Host facts as the daemon builds them from these readings (agent/judge/host-limit.ts judgeHost):
 * a 46-bit-capable Intel host with EPT unless `readings` says otherwise.
 */
export function hostFromReadings(name: string, readings: ReadingsOverride): HostFacts {
  const { override, ...read } = readings;
  return judgeHost(
    {
      name,
      vendor: 'GenuineIntel',
      cpuinfoPhysBits: null,
      cpuinfoVirtBits: 48,
      cpuidPhysBits: null,
      memEncryptionReduction: null,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
      paging: { la57: false, ept5Level: false, hypervisor: false, kernelRelease: '6.12.12-amd64' },
      kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: true, ept: true, npt: null },
      sources: {},
      notes: [],
      problems: [],
      ...read,
    },
    override,
  );
}
