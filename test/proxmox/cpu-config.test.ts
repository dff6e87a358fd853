import test from 'ava';
import { configuredPhysBits, forcedVendor, planCpu, planFromCpuArg } from '../../agent/proxmox/cpu-config';
import { parseCpuModels } from '../../agent/proxmox/vm-config';

// The custom models of qemu-server's own cfg2cmd tests (src/test/run_config2command_tests.pl).
const customModels = () =>
  parseCpuModels(
    [
      'cpu-model: qemu64',
      '    reported-model athlon',
      '    flags +aes;+avx;-kvm_pv_unhalt',
      '    hv-vendor-id testvend',
      '    phys-bits 40',
      '',
      'cpu-model: alldefault',
      '',
    ].join('\n'),
  );

type Row = [cpu: string | undefined, kvm: boolean, width: number | null, cpuArg: string, followsHost?: boolean];
const rows: Row[] = [
  // No cpu: line: kvm64 under KVM, qemu64 with kvm: 0 (CPUConfig.pm get_default_cpu_type); 40 bits.
  [undefined, true, 40, 'kvm64'],
  [undefined, false, 40, 'qemu64'],
  // Built-in x86-64-v* models run as qemu64.
  ['x86-64-v2-AES', true, 40, 'qemu64'],
  ['x86-64-v3,phys-bits=42', true, 42, 'qemu64,phys-bits=42'],
  ['x86-64-v2-AES,flags=+pcid;+spec-ctrl,hidden=1,level=30', true, 40, 'qemu64'],
  // host and max follow the host under KVM, whatever phys-bits says.
  ['host', true, null, 'host', true],
  ['max', true, null, 'max', true],
  ['host,phys-bits=39', true, null, 'host,phys-bits=39', true],
  ['host,guest-phys-bits=39', true, null, 'host,guest-phys-bits=39', true],
  // phys-bits=host is host-phys-bits=true: the host's width under KVM, inert under TCG.
  ['kvm64,phys-bits=host', true, null, 'kvm64,host-phys-bits=true', true],
  ['kvm64,phys-bits=host', false, 40, 'kvm64,host-phys-bits=true', false],
  ['max', false, 40, 'max', false],
  // Named models force their vendor.
  ['EPYC-Rome,phys-bits=43', true, 43, 'EPYC-Rome,vendor=AuthenticAMD,phys-bits=43'],
  ['Skylake-Server', true, 40, 'Skylake-Server,vendor=GenuineIntel'],
  ['Icelake-Client', true, 40, 'Icelake-Server,vendor=GenuineIntel'],
  // Custom models run as their reported model; the VM's phys-bits wins over the model's.
  ['custom-qemu64', true, 40, 'athlon,vendor=AuthenticAMD,phys-bits=40'],
  ['custom-qemu64,phys-bits=host', true, null, 'athlon,vendor=AuthenticAMD,host-phys-bits=true', true],
  ['custom-qemu64,phys-bits=45', true, 45, 'athlon,vendor=AuthenticAMD,phys-bits=45'],
  ['custom-alldefault', true, 40, 'kvm64'],
];

for (const [cpu, kvm, width, cpuArg, followsHost = false] of rows) {
  test(`cpu: ${cpu ?? '(none)'}${kvm ? '' : ', kvm: 0'} → -cpu ${cpuArg}, ${width ?? 'host'} bits`, (t) => {
    const plan = planCpu({ cpu, kvm, customModels });
    t.is(plan.physBits, width);
    t.is(plan.cpuArg, cpuArg);
    t.is(plan.followsHost, followsHost);
    t.is(plan.accelerator, kvm ? 'kvm' : 'tcg');
  });
}

test('a phys-bits the host model ignores is said so', (t) => {
  t.deepEqual(planCpu({ cpu: 'host,phys-bits=39', kvm: true }).notes, [
    "phys-bits=39 has no effect: QEMU's 'host' model keeps host-phys-bits on under KVM, so the guest gets the host's width",
  ]);
});

test('guest-phys-bits is passed on', (t) => {
  const plan = planCpu({ cpu: 'x86-64-v2-AES,phys-bits=46,guest-phys-bits=39', kvm: true });
  t.is(plan.guestPhysBits, 39);
  t.is(plan.physBits, 46);
  t.is(plan.cpuArg, 'qemu64,guest-phys-bits=39,phys-bits=46');
});

test('values qemu-server would reject are refused with the key named', (t) => {
  const bad: [string, string][] = [
    ['host,phys-bits=99', 'cpu phys-bits: 99 is not within 8-64'],
    ['host,phys-bits=wide', "cpu phys-bits: 'wide' is not a whole number"],
    ['kvm64,guest-phys-bits=16', 'cpu guest-phys-bits: 16 is not within 32-64'],
    ['kvm64,hidden=maybe', "cpu hidden: 'maybe' is not a boolean"],
    ['kvm64,speed=9', "cpu 'kvm64,speed=9': unknown property 'speed'"],
    ['kvm64,reported-model=EPYC', "cpu: 'reported-model' is only for custom models"],
    ['custom-nope', "cpu: custom model 'nope' is not in virtual-guest/cpu-models.conf"],
    ['$(reboot)', "cpu: '$(reboot)' is not a CPU model"],
  ];
  for (const [cpu, message] of bad) {
    const err = t.throws(() => planCpu({ cpu, kvm: true, customModels }));
    t.is(err!.message, message, cpu);
    t.is((err as { code?: string }).code, 'PROXMOX_CONFIG_INVALID');
  }
});

test('a forced -cpu (runningcpu, args) is read as QEMU reads it', (t) => {
  const plan = planFromCpuArg('kvm64,enforce,+kvm_pv_eoi,+lahf_lm,+sep,phys-bits=44', 'kvm', 'kvm64');
  t.is(plan.physBits, 44);
  t.false(plan.followsHost);
  t.true(planFromCpuArg('host,+kvm_pv_eoi', 'kvm', 'host').followsHost);
  t.is(planFromCpuArg('qemu64,host-phys-bits=off', 'kvm', 'x').physBits, 40);
});

test('vendors: generic models keep the host vendor', (t) => {
  t.is(forcedVendor('kvm64'), null);
  t.is(forcedVendor('host'), null);
  t.is(forcedVendor('Opteron_G5'), 'AuthenticAMD');
  t.is(forcedVendor('Haswell-noTSX'), 'GenuineIntel');
});

test("Memory.pm reads only the VM's own phys-bits", (t) => {
  t.deepEqual(configuredPhysBits('custom-qemu64,flags=+aes'), { cputype: 'custom-qemu64', physBits: null });
  t.deepEqual(configuredPhysBits('host,phys-bits=host'), { cputype: 'host', physBits: 'host' });
  t.deepEqual(configuredPhysBits(undefined), { cputype: null, physBits: null });
});
