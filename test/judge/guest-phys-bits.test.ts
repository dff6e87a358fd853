import test from 'ava';
import {
  predictGuestPhysBits,
  type GuestPhysBitsQuestion,
  type QemuBinaryVersion,
} from '../../agent/judge/guest-phys-bits';
import { computeVerdict } from '../../agent/judge/verdict';
import { guestFacts, hostFromReadings } from '../helpers/facts';
import { parseConfig } from '../../agent/core/config';

const QEMU = (major: number, minor: number, micro = 0): QemuBinaryVersion => ({
  version: { major, minor, micro },
  binary: '/usr/bin/qemu-system-x86_64',
});
const Q72 = QEMU(7, 2, 22);
const Q90 = QEMU(9, 0, 2);
const Q91 = QEMU(9, 1, 0);
const Q100 = QEMU(10, 0, 13);

/** A raw 52-bit AMD host with NPT; `la57` picks 5 or 4 levels; `kernel` its release. */
function amd52(kernel: string | null, la57 = false, npt: boolean | null = true) {
  return hostFromReadings('hv1', {
    vendor: 'AuthenticAMD',
    cpuinfoPhysBits: 52,
    cpuidPhysBits: 52,
    paging: { la57, ept5Level: null, hypervisor: false, kernelRelease: kernel },
    kvm: { module: npt === null ? null : 'kvm_amd', allowSmallerMaxphyaddr: null, ept: null, npt },
  });
}

/** `-cpu host` (host-phys-bits on, 52 bits) under KVM on `host`, machine q35 (the newest). */
function hostCpu(
  qemu: QemuBinaryVersion,
  host = amd52('6.12.48+deb13-amd64'),
  over: Partial<GuestPhysBitsQuestion> = {},
) {
  return {
    qemu,
    accelerator: 'kvm',
    machineType: 'q35',
    explicit: null,
    physBits: 52,
    hostPhysBits: true,
    hostPhysBitsLimit: 0,
    host,
    ...over,
  } satisfies GuestPhysBitsQuestion;
}

const rows: Array<{
  name: string;
  q: GuestPhysBitsQuestion;
  kind: 'set' | 'none' | 'unknown';
  bits?: number;
  why: RegExp;
}> = [
  {
    name: 'QEMU 10.0, Linux 6.12, 4-level NPT, -cpu host: KVM reports 48',
    q: hostCpu(Q100),
    kind: 'set',
    bits: 48,
    why: /QEMU 10\.0\.13 on Linux 6\.12\.48\+deb13-amd64 sets guest-phys-bits 48 from KVM's 48/,
  },
  { name: 'QEMU 9.1.0 is the first', q: hostCpu(Q91), kind: 'set', bits: 48, why: /QEMU 9\.1\.0/ },
  {
    name: 'QEMU 9.0 has no guest-phys-bits',
    q: hostCpu(Q90),
    kind: 'none',
    why: /QEMU 9\.0\.2 \(\/usr\/bin\/qemu-system-x86_64\) has no guest-phys-bits \(QEMU 9\.1 and later set it\)/,
  },
  { name: 'QEMU 7.2 has no guest-phys-bits', q: hostCpu(Q72), kind: 'none', why: /QEMU 7\.2\.22/ },
  {
    name: 'QEMU version unknown',
    q: hostCpu({ unknown: '/usr/bin/kvm: ENOENT' }),
    kind: 'unknown',
    why: /^\/usr\/bin\/kvm: ENOENT$/,
  },
  {
    name: 'Linux 6.9: KVM leaves GuestPhysBits 0',
    q: hostCpu(Q100, amd52('6.9.12-amd64')),
    kind: 'none',
    why: /KVM in Linux 6\.9\.12-amd64 does not report guest-phys-bits \(Linux 6\.10 and later do\)/,
  },
  {
    name: 'Linux 6.10.0 is the first',
    q: hostCpu(Q100, amd52('6.10.0')),
    kind: 'set',
    bits: 48,
    why: /Linux 6\.10\.0/,
  },
  {
    name: 'Debian 12 Linux 6.1',
    q: hostCpu(Q100, amd52('6.1.0-28-amd64')),
    kind: 'none',
    why: /Linux 6\.1\.0-28-amd64/,
  },
  {
    name: 'kernel release not read',
    q: hostCpu(Q100, amd52(null)),
    kind: 'unknown',
    why: /kernel release was not read/,
  },
  {
    name: '5-level NPT (la57): KVM reports the raw 52',
    q: hostCpu(Q100, amd52('6.12.1', true)),
    kind: 'set',
    bits: 52,
    why: /from KVM's 52/,
  },
  {
    name: 'npt=0: KVM reports no guest-phys-bits',
    q: hostCpu(Q100, amd52('6.12.1', false, false)),
    kind: 'none',
    why: /without nested paging/,
  },
  {
    name: 'no KVM module read: not known',
    q: hostCpu(Q100, amd52('6.12.1', false, null)),
    kind: 'unknown',
    why: /whether nested paging is on is not known/,
  },
  {
    name: 'machine type pc-q35-9.0 keeps it at 0 (pc_compat_9_0)',
    q: hostCpu(Q100, undefined, { machineType: 'pc-q35-9.0' }),
    kind: 'none',
    why: /machine type pc-q35-9\.0 keeps guest-phys-bits at 0/,
  },
  {
    name: 'machine type pc-i440fx-9.1 leaves it to KVM',
    q: hostCpu(Q100, undefined, { machineType: 'pc-i440fx-9.1' }),
    kind: 'set',
    bits: 48,
    why: /KVM's 48/,
  },
  {
    name: 'no machine type: QEMU default pc, the newest',
    q: hostCpu(Q100, undefined, { machineType: null }),
    kind: 'set',
    bits: 48,
    why: /KVM's 48/,
  },
  {
    name: 'a distribution machine type: not known',
    q: hostCpu(Q100, undefined, { machineType: 'pc-q35-rhel9.4.0' }),
    kind: 'unknown',
    why: /pc-q35-rhel9\.4\.0 is not an upstream versioned type/,
  },
  {
    name: 'TCG: never set by QEMU',
    q: hostCpu(Q100, undefined, { accelerator: 'tcg', physBits: 40, hostPhysBits: false }),
    kind: 'none',
    why: /only under KVM, not tcg/,
  },
  {
    name: 'guest-phys-bits given on -cpu wins, whatever QEMU and kernel',
    q: hostCpu({ unknown: 'x' }, amd52(null), { explicit: 46 }),
    kind: 'set',
    bits: 46,
    why: /guest-phys-bits=46 on -cpu/,
  },
  {
    name: 'a named model (not only host/max): capped at its phys-bits',
    q: hostCpu(Q100, undefined, { physBits: 40, hostPhysBits: false }),
    kind: 'set',
    bits: 40,
    why: /sets guest-phys-bits 40 from KVM's 48/,
  },
  {
    name: 'phys-bits=52 on a named model: 48 as for host',
    q: hostCpu(Q100, undefined, { physBits: 52, hostPhysBits: false }),
    kind: 'set',
    bits: 48,
    why: /KVM's 48/,
  },
  {
    name: "host-phys-bits-limit below KVM's value caps it",
    q: hostCpu(Q100, amd52('6.12.1', true), { physBits: 50, hostPhysBitsLimit: 50 }),
    kind: 'set',
    bits: 50,
    why: /guest-phys-bits 50 from KVM's 52/,
  },
  {
    name: 'a 46-bit host: KVM reports the raw width whatever the depth',
    q: hostCpu(
      Q100,
      hostFromReadings('hv1', {
        cpuinfoPhysBits: 46,
        cpuidPhysBits: 46,
        paging: { la57: false, ept5Level: null, hypervisor: false, kernelRelease: '6.12.1' },
      }),
      { physBits: 46 },
    ),
    kind: 'set',
    bits: 46,
    why: /KVM's 46/,
  },
];

for (const row of rows) {
  test(`predictGuestPhysBits: ${row.name}`, (t) => {
    const p = predictGuestPhysBits(row.q);
    t.is(p.kind, row.kind);
    t.is(p.kind === 'set' ? p.bits : undefined, row.bits);
    t.regex(p.why, row.why);
  });
}

test('the prediction fed into the verdict: a -cpu host guest on a 4-level 52-bit host is critical by width alone, info with QEMU 10.0 on Linux 6.12, critical again with QEMU 7.2', (t) => {
  const host = amd52('6.12.48+deb13-amd64');
  const policy = parseConfig({}).policy;
  const guest = guestFacts({ physBits: 52, hostPhysBits: true, cpuModel: 'host', layout: undefined });
  t.is(host.physBits, 48);
  t.is(computeVerdict({ host, guest, policy }).severity, 'critical');
  for (const [qemu, severity] of [
    [Q100, 'warning'],
    [Q72, 'critical'],
  ] as const) {
    const p = predictGuestPhysBits(hostCpu(qemu, host));
    const v = computeVerdict({ host, guest: { ...guest, guestPhysBits: p.kind === 'set' ? p.bits : null }, policy });
    t.is(v.severity, severity);
    if (severity === 'warning')
      t.deepEqual(
        v.reasons.map((r) => r.code),
        ['GUEST_PHYS_BITS_SET', 'GUEST_WIDER_WITHIN_GUEST_PHYS_BITS'],
      );
  }
});
