import test from 'ava';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { bitsNeeded, REASON_SEVERITY } from '../../agent/judge/reasons';
import { maxSeverity, severityRank } from '../../agent/core/severity';
import { computeVerdict, REASON_CODES } from '../../agent/judge/verdict';
import type {
  GuestFacts,
  GuestLayout,
  PciBarFact,
  HostFacts,
  HostFlags,
  HostKvm,
  PeerFacts,
  Policy,
  Relation,
  Severity,
} from '../../agent/core/types';
import {
  GiB,
  guestFacts,
  hostFacts,
  hostFromReadings,
  type GuestOverride,
  type HostOverride,
  type ReadingsOverride,
} from '../helpers/facts';

/** A 46-bit Intel host with EPT and allow_smaller_maxphyaddr=Y (nothing noteworthy). */
function host(over: HostOverride = {}): HostFacts {
  return hostFacts(46, 'hv1', {
    physBitsSource: 'cpuinfo',
    cpuidPhysBits: 46,
    sources: {},
    ...over,
    kvm: { allowSmallerMaxphyaddr: true, ...over.kvm },
  });
}

/** An EPYC with SME/SEV on: Linux reports 43 bits, raw CPUID 48, reduction 5, npt on: limit 48. */
type AmdOverride = Omit<ReadingsOverride, 'flags' | 'kvm'> & {
  flags?: Partial<HostFlags>;
  kvm?: Partial<HostKvm>;
};

function amd(over: AmdOverride = {}): HostFacts {
  return hostFromReadings('hv1', {
    vendor: 'AuthenticAMD',
    cpuinfoPhysBits: 43,
    cpuidPhysBits: 48,
    memEncryptionReduction: 5,
    ...over,
    flags: { sme: true, sev: true, sev_es: false, sev_snp: false, tme: false, ...over.flags },
    kvm: { module: 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt: true, ...over.kvm },
  });
}

function guest(over: GuestOverride = {}): GuestFacts {
  return guestFacts({ physBits: 46, layout: null, ...over });
}

/** A layout whose reach ends at `highest` and whose memory in use ends at `used`. */
function layout(highest: number, used = 4 * GiB): GuestLayout {
  return {
    ramAbove4g: used > 4 * GiB ? used - 4 * GiB : 0,
    ramBelow4g: 2 * GiB,
    deviceMemory: null,
    memoryDevices: [],
    pciHole64: { start: highest - 32 * GiB, end: highest },
    highestAddress: highest,
    usedEnd: used,
  };
}

const POLICY: Policy = { accelerators: ['kvm'], narrowerSeverity: 'ok' };

/** A 16 KiB prefetchable 64-bit BAR 4 of "rng64" at 01:00.0. */
function bar(base: number, id: string | null = 'rng64'): PciBarFact {
  return { address: '01:00.0', bus: 1, slot: 0, function: 0, id, bar: 4, base, size: 16 * 1024, prefetchable: true };
}

interface Row {
  name: string;
  host: HostFacts;
  guest: GuestFacts;
  policy?: Policy;
  peers?: PeerFacts[];
  relation: Relation;
  severity: Severity;
  /** Every reason code in order (most severe first); codes[0] is what the table shows. */
  codes: string[];
  /** Expected severity of each reason, when it is not the code's obvious one. */
  severities?: Severity[];
}

const peer = (name: string, physBits: number | null, reachable = true): PeerFacts => ({ name, physBits, reachable });

const ROWS: Row[] = [
  // relation
  { name: 'equal', host: host(), guest: guest(), relation: 'equal', severity: 'ok', codes: ['GUEST_EQUALS_HOST'] },
  {
    name: 'narrower, default policy',
    host: host(),
    guest: guest({ physBits: 40 }),
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'narrower, narrowerSeverity info',
    host: host(),
    guest: guest({ physBits: 40 }),
    policy: { accelerators: ['kvm'], narrowerSeverity: 'info' },
    relation: 'narrower',
    severity: 'info',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'wider under kvm',
    host: host(),
    guest: guest({ physBits: 48 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'wider under tcg',
    host: host(),
    guest: guest({ physBits: 48, accelerator: 'tcg' }),
    relation: 'wider',
    severity: 'info',
    codes: ['GUEST_WIDER_NOT_ENFORCED'],
  },
  {
    name: 'wider under tcg when the policy enforces tcg',
    host: host(),
    guest: guest({ physBits: 48, accelerator: 'tcg' }),
    policy: { accelerators: ['kvm', 'tcg'], narrowerSeverity: 'ok' },
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'wider under kvm when the policy enforces nothing',
    host: host(),
    guest: guest({ physBits: 48 }),
    policy: { accelerators: [], narrowerSeverity: 'ok' },
    relation: 'wider',
    severity: 'info',
    codes: ['GUEST_WIDER_NOT_ENFORCED'],
  },
  {
    name: 'wider than a config override, though the CPU is wider still',
    host: host({ physBits: 40, physBitsSource: 'config' }),
    guest: guest({ physBits: 46 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },

  // kvm_intel allow_smaller_maxphyaddr
  {
    name: 'narrower on kvm_intel ept=Y allow_smaller_maxphyaddr=N',
    host: host({ kvm: { allowSmallerMaxphyaddr: false } }),
    guest: guest({ physBits: 40 }),
    relation: 'narrower',
    severity: 'info',
    codes: ['KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED', 'GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'same, but under tcg: not a KVM matter',
    host: host({ kvm: { allowSmallerMaxphyaddr: false } }),
    guest: guest({ physBits: 40, accelerator: 'tcg' }),
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'same, but ept=N: shadow paging checks reserved bits itself',
    host: host({ kvm: { allowSmallerMaxphyaddr: false, ept: false } }),
    guest: guest({ physBits: 40 }),
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'same, but the parameter is unknown',
    host: host({ kvm: { allowSmallerMaxphyaddr: null } }),
    guest: guest({ physBits: 40 }),
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'equal to an override but narrower than the CPU: the KVM note still applies',
    host: host({ physBits: 40, physBitsSource: 'config', kvm: { allowSmallerMaxphyaddr: false } }),
    guest: guest({ physBits: 40 }),
    relation: 'equal',
    severity: 'info',
    codes: ['KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'TME-MK host (cpuinfo 46, raw 52, 5-level EPT): a 46-bit guest is narrower than kvm_host.maxphyaddr',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true },
      paging: { la57: true, ept5Level: true, hypervisor: false },
      kvm: { module: 'kvm_intel', ept: true, npt: null, allowSmallerMaxphyaddr: false },
    }),
    guest: guest({ physBits: 46 }),
    relation: 'narrower',
    severity: 'info',
    codes: ['KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED', 'GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'equal on kvm_intel allow_smaller_maxphyaddr=N: nothing to say',
    host: host({ kvm: { allowSmallerMaxphyaddr: false } }),
    guest: guest(),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },

  // memory encryption: the limit is the raw width with nested paging
  {
    name: 'SME host (raw 48, cpuinfo 43), guest at the raw 48 bits: info',
    host: amd(),
    guest: guest({ physBits: 48 }),
    relation: 'equal',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'SME host, guest at 45 bits: info',
    host: amd(),
    guest: guest({ physBits: 45 }),
    relation: 'narrower',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'SME host, guest at the reported 43 bits: nothing to say',
    host: amd(),
    guest: guest({ physBits: 43 }),
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'SME host, SEV guest with reduced-phys-bits=5',
    host: amd(),
    guest: guest({ physBits: 48, memoryEncryption: { active: true, type: 'sev', reducedPhysBits: 5 } }),
    relation: 'equal',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'SME host, guest wider than the raw width',
    host: amd(),
    guest: guest({ physBits: 52 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'SME host with npt=0: the reduction binds guests',
    host: amd({ kvm: { npt: false } }),
    guest: guest({ physBits: 48 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'SME host whose width comes from the config',
    host: amd({ override: 43 }),
    guest: guest({ physBits: 48 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'reduced host without sme/sev flags (SME firmware-enabled, kernel not using it): still the raw width',
    host: amd({ flags: { sme: false, sev: false } }),
    guest: guest({ physBits: 48 }),
    relation: 'equal',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'SME host with unreadable cpuid: only the reported width is known, so critical',
    host: amd({ cpuidPhysBits: null, memEncryptionReduction: null }),
    guest: guest({ physBits: 48 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'Intel TME-MK host with 5-level EPT: cpuinfo 46, raw 52, guest 52',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true },
      paging: { la57: true, ept5Level: true, hypervisor: false },
    }),
    guest: guest({ physBits: 52 }),
    relation: 'equal',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'Intel TME-MK host without 5-level EPT: capped at 48, guest 52 critical',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true },
    }),
    guest: guest({ physBits: 52 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: 'Intel on Linux 6.1, EPT depth not known: a 52-bit guest is a warning, not critical',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      paging: { la57: true, ept5Level: false, hypervisor: false, kernelRelease: '6.1.0-28-amd64', eptMsr5Level: null },
    }),
    guest: guest({ physBits: 52 }),
    relation: 'wider',
    severity: 'warning',
    codes: ['GUEST_WIDER_THAN_KNOWN_LIMIT'],
  },
  {
    name: 'QEMU 9.1+ -cpu host on a 4-level 52-bit host: phys-bits 52, guest-phys-bits 48 = the limit: not critical',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true },
    }),
    guest: guest({ physBits: 52, hostPhysBits: true, guestPhysBits: 48 }),
    relation: 'wider',
    severity: 'warning',
    codes: ['GUEST_PHYS_BITS_SET', 'GUEST_WIDER_WITHIN_GUEST_PHYS_BITS'],
  },
  {
    name: 'guest-phys-bits above the limit does not help: critical',
    host: hostFromReadings('hv1', {
      cpuinfoPhysBits: 46,
      cpuidPhysBits: 52,
      flags: { sme: false, sev: false, sev_es: false, sev_snp: false, tme: true },
    }),
    guest: guest({ physBits: 52, guestPhysBits: 50 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST', 'GUEST_PHYS_BITS_SET'],
  },
  {
    name: '52-bit AMD without la57: a 52-bit guest is critical on the 48-bit cap',
    host: hostFromReadings('hv1', {
      vendor: 'AuthenticAMD',
      cpuinfoPhysBits: 52,
      cpuidPhysBits: 52,
      kvm: { module: 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt: true },
    }),
    guest: guest({ physBits: 52 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },
  {
    name: '52-bit AMD with la57: a 52-bit guest is fine',
    host: hostFromReadings('hv1', {
      vendor: 'AuthenticAMD',
      cpuinfoPhysBits: 52,
      cpuidPhysBits: 52,
      paging: { la57: true, ept5Level: null, hypervisor: false },
      kvm: { module: 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt: true },
    }),
    guest: guest({ physBits: 52 }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },
  {
    name: 'contradictory readings (raw below cpuinfo): a warning naming them',
    host: hostFromReadings('hv1', { cpuinfoPhysBits: 46, cpuidPhysBits: 40 }),
    guest: guest({ physBits: 40 }),
    relation: 'equal',
    severity: 'warning',
    codes: ['HOST_FACTS_CONTRADICTORY', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'contradictory readings under a config override: info, the override stands',
    host: hostFromReadings('hv1', { cpuinfoPhysBits: 46, cpuidPhysBits: 40, override: 46 }),
    guest: guest({ physBits: 46 }),
    relation: 'equal',
    severity: 'info',
    codes: ['HOST_FACTS_CONTRADICTORY', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'laptop with a tme flag but no reduction: plain critical',
    host: host({ physBits: 39, cpuinfoPhysBits: 39, cpuidPhysBits: 39, flags: { tme: true } }),
    guest: guest({ physBits: 40 }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST'],
  },

  // layout
  {
    name: 'equal width, but the 64-bit PCI hole ends past 2^46',
    host: host(),
    guest: guest({ layout: layout(2 ** 46 + 32 * GiB) }),
    relation: 'equal',
    severity: 'critical',
    codes: ['LAYOUT_BEYOND_HOST_LIMIT', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'a layout ending exactly at 2^46 fits',
    host: host(),
    guest: guest({ layout: layout(2 ** 46) }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },
  {
    name: 'wider and memory already above the limit: two criticals, relation first',
    host: host(),
    guest: guest({ physBits: 48, layout: layout(2 ** 47, 2 ** 46 + 8 * GiB) }),
    relation: 'wider',
    severity: 'critical',
    codes: ['GUEST_WIDER_THAN_HOST', 'LAYOUT_BEYOND_HOST_LIMIT'],
  },
  {
    name: 'layout beyond under tcg is info',
    host: host(),
    guest: guest({ physBits: 48, accelerator: 'tcg', layout: layout(2 ** 47) }),
    relation: 'wider',
    severity: 'info',
    codes: ['GUEST_WIDER_NOT_ENFORCED', 'LAYOUT_BEYOND_HOST_LIMIT'],
  },
  {
    name: 'SME host: layout above 2^43 but within the raw 2^48 is backed',
    host: amd(),
    guest: guest({ physBits: 48, layout: layout(2 ** 45, 2 ** 44) }),
    relation: 'equal',
    severity: 'info',
    codes: ['GUEST_WIDER_BY_MEMORY_ENCRYPTION', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'SME host with npt=0: layout above 2^43 is not',
    host: amd({ kvm: { npt: false } }),
    guest: guest({ physBits: 43, layout: layout(2 ** 45) }),
    relation: 'equal',
    severity: 'critical',
    codes: ['LAYOUT_BEYOND_HOST_LIMIT', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'a 64-bit BAR mapped above 2^46 is named besides the layout',
    host: host(),
    guest: guest({ layout: { ...layout(2 ** 46 + 32 * GiB), pciBars: [bar(2 ** 46)] } }),
    relation: 'equal',
    severity: 'critical',
    codes: ['LAYOUT_BEYOND_HOST_LIMIT', 'PCI_BAR_BEYOND_HOST_LIMIT', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'a BAR ending exactly at 2^46 fits',
    host: host(),
    guest: guest({ layout: { ...layout(2 ** 46), pciBars: [bar(2 ** 46 - 16 * 1024)] } }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },
  {
    name: 'a BAR above the limit under tcg is info',
    host: host(),
    guest: guest({ physBits: 48, accelerator: 'tcg', layout: { ...layout(2 ** 47), pciBars: [bar(2 ** 47 - GiB)] } }),
    relation: 'wider',
    severity: 'info',
    codes: ['GUEST_WIDER_NOT_ENFORCED', 'LAYOUT_BEYOND_HOST_LIMIT', 'PCI_BAR_BEYOND_HOST_LIMIT'],
  },
  {
    name: 'a BAR above a lower guest-phys-bits is named',
    host: host(),
    guest: guest({ guestPhysBits: 44, layout: { ...layout(2 ** 45), pciBars: [bar(2 ** 45 - GiB), bar(2 ** 40)] } }),
    relation: 'equal',
    severity: 'critical',
    codes: ['LAYOUT_BEYOND_HOST_LIMIT', 'PCI_BAR_BEYOND_HOST_LIMIT', 'GUEST_PHYS_BITS_SET', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'no layout read: no layout reason',
    host: host(),
    guest: guest({ layout: null }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },

  // guest-phys-bits and host-phys-bits-limit
  {
    name: 'guest-phys-bits narrower than phys-bits',
    host: host(),
    guest: guest({ guestPhysBits: 40 }),
    relation: 'equal',
    severity: 'warning',
    codes: ['GUEST_PHYS_BITS_SET', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'guest-phys-bits below the host limit: the layout is checked against it',
    host: host(),
    guest: guest({ guestPhysBits: 40, layout: layout(2 ** 41) }),
    relation: 'equal',
    severity: 'critical',
    codes: ['LAYOUT_BEYOND_HOST_LIMIT', 'GUEST_PHYS_BITS_SET', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'guest-phys-bits equal to phys-bits',
    host: host(),
    guest: guest({ guestPhysBits: 46 }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },
  {
    name: 'guest-phys-bits 0 (unset)',
    host: host(),
    guest: guest({ guestPhysBits: 0 }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },
  {
    name: 'host-phys-bits-limit keeps a guest within the 48-bit cap of a 52-bit host without 5-level NPT',
    host: amd({ cpuinfoPhysBits: 52, cpuidPhysBits: 52, memEncryptionReduction: 0, flags: { sme: false, sev: false } }),
    guest: guest({ physBits: 48, hostPhysBits: true, hostPhysBitsLimit: 48 }),
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST', 'HOST_PHYS_BITS_LIMITED'],
  },
  {
    name: 'host-phys-bits-limit keeps a guest within a narrower peer',
    host: host(),
    guest: guest({ physBits: 39, hostPhysBits: true, hostPhysBitsLimit: 39 }),
    peers: [peer('hv2', 39)],
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST', 'HOST_PHYS_BITS_LIMITED'],
  },
  {
    name: 'host-phys-bits-limit with nothing narrower around: not worth a word',
    host: host(),
    guest: guest({ physBits: 39, hostPhysBits: true, hostPhysBitsLimit: 39 }),
    peers: [peer('hv2', 46)],
    relation: 'narrower',
    severity: 'ok',
    codes: ['GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'host-phys-bits=on without a limit',
    host: host(),
    guest: guest({ hostPhysBits: true }),
    peers: [peer('hv2', 46)],
    relation: 'equal',
    severity: 'ok',
    codes: ['GUEST_EQUALS_HOST'],
  },

  // peers
  {
    name: 'one narrower peer among two',
    host: host(),
    guest: guest(),
    peers: [peer('hv2', 39), peer('hv3', 46)],
    relation: 'equal',
    severity: 'warning',
    codes: ['MIGRATION_PEER_NARROWER', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'two narrower peers: one reason each, in peer order',
    host: host(),
    guest: guest(),
    peers: [peer('hv2', 39), peer('hv3', 40)],
    relation: 'equal',
    severity: 'warning',
    codes: ['MIGRATION_PEER_NARROWER', 'MIGRATION_PEER_NARROWER', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'unreachable peer without a configured width',
    host: host(),
    guest: guest(),
    peers: [peer('hv4', null, false)],
    relation: 'equal',
    severity: 'info',
    codes: ['PEER_UNREACHABLE', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'unreachable peer with a narrower configured width',
    host: host(),
    guest: guest(),
    peers: [peer('hv4', 39, false)],
    relation: 'equal',
    severity: 'warning',
    codes: ['MIGRATION_PEER_NARROWER', 'PEER_UNREACHABLE', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'narrow guest whose layout is beyond a peer of the same width',
    host: host(),
    guest: guest({ physBits: 39, layout: layout(2 ** 39 + 32 * GiB) }),
    peers: [peer('hv2', 39)],
    relation: 'narrower',
    severity: 'warning',
    codes: ['MIGRATION_PEER_LAYOUT', 'GUEST_NARROWER_THAN_HOST'],
  },
  {
    name: 'peer narrower and layout beyond it: both',
    host: host(),
    guest: guest({ layout: layout(2 ** 41) }),
    peers: [peer('hv2', 39)],
    relation: 'equal',
    severity: 'warning',
    codes: ['MIGRATION_PEER_NARROWER', 'MIGRATION_PEER_LAYOUT', 'GUEST_EQUALS_HOST'],
  },
  {
    name: 'everything at once, sorted most severe first',
    host: host({ kvm: { allowSmallerMaxphyaddr: false } }),
    guest: guest({ physBits: 48, guestPhysBits: 47, layout: layout(2 ** 47) }),
    peers: [peer('hv2', 39), peer('hv4', null, false)],
    relation: 'wider',
    severity: 'critical',
    codes: [
      'GUEST_WIDER_THAN_HOST',
      'LAYOUT_BEYOND_HOST_LIMIT',
      'GUEST_PHYS_BITS_SET',
      'MIGRATION_PEER_NARROWER',
      'MIGRATION_PEER_LAYOUT',
      'PEER_UNREACHABLE',
    ],
  },
];

for (const row of ROWS) {
  test(`table: ${row.name}`, (t) => {
    const v = computeVerdict({ host: row.host, guest: row.guest, policy: row.policy ?? POLICY, peers: row.peers });
    t.is(v.relation, row.relation);
    t.is(v.severity, row.severity);
    t.deepEqual(
      v.reasons.map((r) => r.code),
      row.codes,
    );
    for (const r of v.reasons)
      t.true(r.message.length > 20 && !r.message.includes('undefined') && !r.message.includes('NaN'));
  });
}

function verdict(h: HostFacts, g: GuestFacts, peers?: PeerFacts[], policy = POLICY) {
  return computeVerdict({ host: h, guest: g, policy, peers });
}

test('messages: wider names both widths and the fix', (t) => {
  const [r] = verdict(host(), guest({ physBits: 48 })).reasons;
  t.deepEqual(r, {
    code: 'GUEST_WIDER_THAN_HOST',
    severity: 'critical',
    message:
      "guest phys-bits 48 is wider than the host's 46-bit limit under kvm: guest memory placed at or above 64 TiB " +
      'cannot be mapped: KVM refuses the memory slot and QEMU stops the guest; set phys-bits=46 or host-phys-bits=on,host-phys-bits-limit=46',
  });
});

test('messages: wider than an override says where the number comes from', (t) => {
  const [r] = verdict(host({ physBits: 40, physBitsSource: 'config' }), guest()).reasons;
  t.regex(
    r.message,
    /^guest phys-bits 46 is wider than the host's 40-bit limit \(host\.physBits in the config\) under kvm/,
  );
  t.regex(r.message, /set phys-bits=40 or host-phys-bits=on,host-phys-bits-limit=40$/);
});

test('messages: wider on an SME host with unreadable cpuid asks for the device', (t) => {
  const [r] = verdict(amd({ cpuidPhysBits: null, memEncryptionReduction: null }), guest({ physBits: 48 })).reasons;
  t.regex(
    r.message,
    /memory encryption \(sme, sev\) may reduce the width Linux reports below the CPU's; make \/dev\/cpu\/0\/cpuid readable/,
  );
});

test('messages: an AMD host with unreadable cpuid and no encryption flag hints at SME', (t) => {
  const h = amd({ cpuidPhysBits: null, memEncryptionReduction: null, flags: { sme: false, sev: false } });
  const [r] = verdict(h, guest({ physBits: 48 })).reasons;
  t.regex(r.message, /memory encryption \(SME\/SEV\) may reduce the width Linux reports/);
  t.regex(h.limit.notes.join(' '), /AMD host with \/dev\/cpu\/0\/cpuid unreadable/);
  const intel = hostFromReadings('hv1', { cpuinfoPhysBits: 46 });
  t.notRegex(verdict(intel, guest({ physBits: 48 })).reasons[0].message, /SME/);
});

test('messages: wider with nested paging off says so', (t) => {
  const [r] = verdict(amd({ kvm: { npt: false } }), guest({ physBits: 48 })).reasons;
  t.regex(
    r.message,
    /nested paging is off \(kvm_amd npt=0\), so guests share the host's 43-bit physical address space/,
  );
  // Also when no memory encryption is in play: a plain Intel host with ept=N.
  const [i] = verdict(
    hostFromReadings('hv1', {
      cpuinfoPhysBits: 39,
      kvm: { module: 'kvm_intel', allowSmallerMaxphyaddr: null, ept: false, npt: null },
    }),
    guest({ physBits: 40 }),
  ).reasons;
  t.regex(i.message, /nested paging is off \(kvm_intel ept=N\)/);
});

test('messages: the 48-bit cap names the CPU width and the missing fifth level', (t) => {
  const h = amd({
    cpuinfoPhysBits: 52,
    cpuidPhysBits: 52,
    memEncryptionReduction: 0,
    flags: { sme: false, sev: false },
  });
  const [r] = verdict(h, guest({ physBits: 52 })).reasons;
  t.regex(r.message, /^guest phys-bits 52 is wider than the host's 48-bit limit under kvm/);
  t.regex(
    r.message,
    /the CPU has 52 bits, but without 5-level nested paging KVM maps guest-physical addresses below 2\^48 only/,
  );
});

test('messages: not enforced says the host page tables do not back guest memory', (t) => {
  const [r] = verdict(host(), guest({ physBits: 48, accelerator: 'tcg' })).reasons;
  t.is(
    r.message,
    "guest phys-bits 48 is wider than the host's 46 bits, but tcg does not back guest memory with host page tables, " +
      'so the host limit does not apply; set phys-bits=46 before moving this guest to an accelerator in policy.accelerators',
  );
});

test('messages: memory encryption names the flags, reduction and raw width', (t) => {
  const [r] = verdict(amd(), guest({ physBits: 48 })).reasons;
  t.is(
    r.message,
    "guest phys-bits 48 is wider than the 43 bits Linux reports, only because host memory encryption (sme, sev) takes 5 of the CPU's raw 48 bits; " +
      'with nested paging guest-physical addresses keep the raw width, so this host maps the guest (limit 48 bits); ' +
      'a host that must take it by migration needs a limit of 48 bits (the peer rules check it)',
  );
  const [sev] = verdict(
    amd(),
    guest({ physBits: 48, memoryEncryption: { active: true, type: 'sev', reducedPhysBits: 5 } }),
  ).reasons;
  t.regex(sev.message, /the guest is encrypted itself with reduced-phys-bits=5, so it uses at most 43 bits;/);
});

test('messages: layout reach versus memory already placed', (t) => {
  const reach = verdict(host(), guest({ layout: layout(2 ** 46 + 32 * GiB) })).reasons[0];
  t.is(
    reach.message,
    "the guest's address layout (RAM, hot-plug region, 64-bit PCI hole, placed BARs) reaches 0x400800000000, beyond the host's " +
      '46-bit limit (64 TiB); it needs 47 bits: lower maxmem or pci-hole64-size so the layout ends below the limit',
  );
  const used = verdict(host(), guest({ layout: layout(2 ** 47, 2 ** 46 + 8 * GiB) })).reasons[0];
  t.regex(used.message, /^guest memory is already placed up to 0x400200000000, beyond the host's 46-bit limit/);
  t.regex(used.message, /migrate the guest to a host with at least that width or restart it with less memory$/);
});

test('messages: a BAR above the limit names the device, the BAR and its addresses', (t) => {
  const one = verdict(
    host({ physBits: 39 }),
    guest({ physBits: 40, layout: { ...layout(800 * GiB), pciBars: [bar(0xc040000000)] } }),
  );
  t.is(
    one.reasons.find((r) => r.code === 'PCI_BAR_BEYOND_HOST_LIMIT')!.message,
    'PCI BAR is mapped above the host\'s 39-bit limit (0x8000000000): BAR 4 of 01:00.0 ("rng64") at ' +
      '0xc040000000-0xc040003fff; KVM cannot map it (QEMU aborts the VM when it registers such a slot, or the ' +
      'device does not work): restart the guest with phys-bits=39 so that firmware places its 64-bit window ' +
      'below 0x8000000000, or migrate it to a host with at least 40 bits',
  );
  const bars = [0, 1, 2, 3, 4, 5].map((i) => bar(2 ** 39 + i * GiB, i % 2 ? null : `d${i}`));
  const many = verdict(
    host({ physBits: 39 }),
    guest({ physBits: 40, layout: { ...layout(800 * GiB), pciBars: bars } }),
  );
  const message = many.reasons.find((r) => r.code === 'PCI_BAR_BEYOND_HOST_LIMIT')!.message;
  t.regex(
    message,
    /^PCI BARs are mapped above .*BAR 4 of 01:00.0 \("d0"\) at 0x8000000000-.*; BAR 4 of 01:00.0 at 0x8040000000-.* and 2 more; KVM cannot map them/,
  );
});

test('messages: KVM smaller MAXPHYADDR names the bits and both fixes', (t) => {
  const [r] = verdict(host({ kvm: { allowSmallerMaxphyaddr: false } }), guest({ physBits: 40 })).reasons;
  t.is(
    r.message,
    "kvm_intel runs with ept=Y and allow_smaller_maxphyaddr=N: the guest's 40-bit MAXPHYADDR is below the host CPU's 46 bits, " +
      'so page faults on reserved address bits 40-45 are not reported exactly to the guest; harmless for common guests, ' +
      'otherwise load kvm_intel with allow_smaller_maxphyaddr=Y or set phys-bits=46',
  );
});

test('messages: peers are named', (t) => {
  const v = verdict(host(), guest({ layout: layout(2 ** 41) }), [peer('hv2', 39), peer('hv9', null, false)]);
  t.deepEqual(
    v.reasons.map((r) => r.message),
    [
      "peer hv2 has 39 physical address bits, fewer than the guest's phys-bits 46: migration to hv2 is refused; " +
        'set phys-bits=39 (or host-phys-bits=on,host-phys-bits-limit=39) at the next restart to make it portable',
      "the guest's address layout reaches 0x20000000000, beyond peer hv2's 39-bit limit (512 GiB): migration to hv2 is refused; " +
        'lower maxmem or pci-hole64-size so the layout ends below 0x8000000000',
      'peer hv9 is unreachable; no physBits is configured for it, so migration to hv9 cannot be checked until it answers',
      "guest phys-bits 46 equals the host's 46 physical address bits",
    ],
  );
});

test('messages: host-phys-bits-limit and guest-phys-bits', (t) => {
  const capped = amd({
    cpuinfoPhysBits: 52,
    cpuidPhysBits: 52,
    memEncryptionReduction: 0,
    flags: { sme: false, sev: false },
  });
  const lim = verdict(capped, guest({ physBits: 48, hostPhysBits: true, hostPhysBitsLimit: 48 })).reasons[1];
  t.is(
    lim.message,
    "host-phys-bits-limit=48 caps host-phys-bits=on below this host's raw 52 bits; without it the guest would get 52 bits, " +
      "wider than the host's limit of 48 bits: keep the limit",
  );
  const gpb = verdict(host(), guest({ guestPhysBits: 40 })).reasons[0];
  t.is(gpb.code, 'GUEST_PHYS_BITS_SET');
  t.is(gpb.severity, 'warning');
  t.regex(
    gpb.message,
    /^guest-phys-bits=40 tells the guest firmware and OS that only 40 of its 46 phys-bits are addressable/,
  );
  t.regex(gpb.message, /its layout is checked against 2\^40, below the host's 46-bit limit/);
  const layoutReason = verdict(host(), guest({ guestPhysBits: 40, layout: layout(2 ** 41) })).reasons[0];
  t.regex(layoutReason.message, /beyond the guest-phys-bits limit of 40 bits \(1 TiB\)/);
});

test('severity helpers', (t) => {
  t.deepEqual((['ok', 'info', 'warning', 'critical'] as Severity[]).map(severityRank), [0, 1, 2, 3]);
  t.is(maxSeverity('ok', 'info'), 'info');
  t.is(maxSeverity('critical', 'warning'), 'critical');
  t.is(maxSeverity('warning', 'warning'), 'warning');
});

test('number helpers', (t) => {
  t.is(bitsNeeded(2 ** 46), 46);
  t.is(bitsNeeded(2 ** 46 + 1), 47);
  t.is(bitsNeeded(1), 0);
});

test('every reason code is documented in docs/reasons.md, with its default severity', (t) => {
  const doc = readFileSync(join(__dirname, '..', '..', '..', 'docs', 'reasons.md'), 'utf8');
  const rows = [...doc.matchAll(/^\| `([A-Z][A-Z0-9_]+)` \| (ok|info|warning|critical) \|/gm)].map((m) => [m[1], m[2]]);
  t.deepEqual(Object.fromEntries(rows), { ...REASON_SEVERITY });
  t.is(rows.length, REASON_CODES.length);
  for (const code of REASON_CODES) t.true(doc.includes(`### \`${code}\``), `${code} has no section in docs/reasons.md`);
});

test('property: severity is the max of the reasons, sorted; peers alone never exceed warning', (t) => {
  const bits = fc.integer({ min: 32, max: 52 });
  const sev = fc.constantFrom<'ok' | 'info'>('ok', 'info');
  fc.assert(
    fc.property(
      bits,
      bits,
      fc.option(bits, { nil: null }),
      fc.constantFrom('kvm', 'tcg'),
      sev,
      fc.array(
        fc.record({
          name: fc.string({ minLength: 1, maxLength: 8 }),
          physBits: fc.option(bits, { nil: null }),
          reachable: fc.boolean(),
        }),
        { maxLength: 4 },
      ),
      fc.option(fc.integer({ min: 33, max: 53 }), { nil: null }),
      (hb, gb, raw, accel, narrowerSeverity, peers, layoutBits) => {
        const h = host({
          physBits: hb,
          cpuinfoPhysBits: hb,
          cpuidPhysBits: raw === null ? null : Math.max(raw, hb),
          flags: { sme: true },
        });
        const g = guest({
          physBits: gb,
          accelerator: accel,
          layout: layoutBits === null ? null : layout(2 ** layoutBits),
        });
        const v = computeVerdict({ host: h, guest: g, policy: { accelerators: ['kvm'], narrowerSeverity }, peers });
        let max: Severity = 'ok';
        for (const r of v.reasons) max = maxSeverity(max, r.severity);
        const ranks = v.reasons.map((r) => severityRank(r.severity));
        const peerOnly = v.reasons.filter((r) => /^(MIGRATION_|PEER_)/.test(r.code));
        return (
          v.severity === max &&
          ranks.every((r, i) => i === 0 || ranks[i - 1] >= r) &&
          peerOnly.every((r) => severityRank(r.severity) <= 2) &&
          v.relation === (gb === hb ? 'equal' : gb < hb ? 'narrower' : 'wider') &&
          v.reasons.length >= 1 &&
          v.reasons.every((r) => REASON_CODES.includes(r.code as never))
        );
      },
    ),
    { numRuns: 500 },
  );
  t.pass();
});
