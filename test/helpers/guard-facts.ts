/** Literal host and guest facts for the guard's rule tests. */
import type { GuestFacts, GuestLayout, HostFacts } from '../../agent/types';

export const GiB = 2 ** 30;

export function hostFacts(physBits: number, name = 'hv1'): HostFacts {
  return {
    name,
    physBits,
    physBitsSource: 'config',
    vendor: 'GenuineIntel',
    cpuinfoPhysBits: physBits,
    cpuinfoVirtBits: 48,
    cpuidPhysBits: null,
    memEncryptionReduction: null,
    flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: false },
    kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: null, ept: true, npt: null },
    sources: { physBits: 'config' },
  };
}

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

export function guestFacts(over: Partial<GuestFacts> = {}): GuestFacts {
  return {
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
    ...over,
  };
}
