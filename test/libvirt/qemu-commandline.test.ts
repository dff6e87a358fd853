import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../agent/core/config';
import { DomainXmlError, parseDomainXml } from '../../agent/libvirt/domain-xml';
import { runLibvirtHook } from '../../agent/libvirt/libvirt-hook';
import { judgeQemuArgs, QemuCommandlineError, qemuSize } from '../../agent/libvirt/qemu-commandline';
import { QmpClient } from '../../qmp/client';
import { hostFacts } from '../helpers/facts';
import { QEMUS, startGuest } from '../helpers/qemu';

const FIXTURES = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'libvirt');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const G = 2 ** 30;
const M = 2 ** 20;

/** A TCG domain with libvirt's own -cpu qemu64,phys-bits=46 and -m 64M, plus `args` in <qemu:commandline>. */
function domain(args: string[], opts: { prefix?: string; type?: string; extra?: string } = {}): string {
  const p = opts.prefix ?? 'qemu';
  const argXml = args.map((a) => `<${p}:arg value='${a.replace(/&/g, '&amp;').replace(/'/g, '&apos;')}'/>`).join('');
  return (
    `<domain type='${opts.type ?? 'qemu'}' xmlns:${p}='http://libvirt.org/schemas/domain/qemu/1.0'>` +
    `<name>c1</name><memory unit='MiB'>64</memory><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>` +
    `<cpu mode='custom'><model>qemu64</model><maxphysaddr mode='emulate' bits='46'/></cpu>` +
    (args.length ? `<${p}:commandline>${argXml}</${p}:commandline>` : '') +
    (opts.extra ?? '') +
    `</domain>`
  );
}

function unjudgeable(t: import('ava').ExecutionContext, xml: string, message: RegExp): void {
  const err = t.throws(() => parseDomainXml(xml), { instanceOf: QemuCommandlineError });
  t.is((err as QemuCommandlineError).code, 'DOMAIN_XML_UNJUDGEABLE');
  t.regex(err!.message, message);
}

test('issue 28: -cpu Skylake-Server,phys-bits=52 in <qemu:commandline> overrides <maxphysaddr bits=46>; the hook refuses it', async (t) => {
  const xml = fixture('commandline-cpu-52.xml');
  const d = parseDomainXml(xml);
  t.is(d.physBits, 52);
  t.is(d.cpuModel, 'Skylake-Server');
  const lines: string[] = [];
  const code = await runLibvirtHook(['sneaky1', 'prepare', 'begin', '-'], xml, {
    config: parseConfig({}),
    hostFacts: hostFacts(46, 'hv1', { physBitsSource: 'cpuinfo', cpuidPhysBits: 46 }),
    stderr: (l) => lines.push(l),
  });
  t.is(code, 1);
  // The fixture's <emulator> is this machine's QEMU 7.2, which has no guest-phys-bits: the refusal
  // says so (agent/judge/guest-phys-bits.ts); its point release is the machine's.
  t.is(lines.length, 1);
  t.regex(
    lines[0],
    new RegExp(
      "^physbits refused the start of domain 'sneaky1': GUEST_WIDER_THAN_HOST: guest phys-bits 52 is wider than this " +
        "host's 46 bits under kvm; no guest-phys-bits keeps it within that limit: QEMU 7\\.2\\.\\d+ " +
        '\\(/usr/bin/qemu-system-x86_64\\) has no guest-phys-bits \\(QEMU 9\\.1 and later set it\\); ' +
        "fix: set <maxphysaddr mode='emulate' bits='46'/> in <cpu>$",
    ),
  );
});

test("the last -cpu wins, libvirt's own included; -cpu properties beat -global; the last -global wins", (t) => {
  t.is(parseDomainXml(domain([])).physBits, 46);
  t.is(parseDomainXml(domain(['-cpu', 'qemu64,phys-bits=44', '-cpu', 'qemu64,phys-bits=48'])).physBits, 48);
  t.is(parseDomainXml(domain(['-cpu', 'qemu64'])).physBits, 40);
  t.is(parseDomainXml(domain(['-global', 'qemu64-x86_64-cpu.phys-bits=44'])).physBits, 46);
  t.is(parseDomainXml(domain(['-cpu', 'qemu64', '-global', 'x86_64-cpu.phys-bits=44'])).physBits, 44);
  t.is(
    parseDomainXml(
      domain([
        '-cpu',
        'qemu64',
        '-global',
        'x86_64-cpu.phys-bits=44',
        '-global',
        'driver=qemu64-x86_64-cpu,property=phys-bits,value=50',
      ]),
    ).physBits,
    50,
  );
  // A global for another model does not reach this one.
  t.is(parseDomainXml(domain(['-cpu', 'qemu64', '-global', 'EPYC-x86_64-cpu.phys-bits=50'])).physBits, 40);
  // Under KVM, -cpu host follows the host unless host-phys-bits is turned off.
  const kvm = parseDomainXml(domain(['-cpu', 'host'], { type: 'kvm' }));
  t.is(kvm.physBits, null);
  t.true(kvm.hostPhysBits);
  const off = parseDomainXml(domain(['-cpu', 'host,host-phys-bits=off,phys-bits=52'], { type: 'kvm' }));
  t.is(off.physBits, 52);
  t.is(
    parseDomainXml(domain(['-global', 'host-x86_64-cpu.host-phys-bits-limit=39', '-cpu', 'host'], { type: 'kvm' }))
      .hostPhysBitsLimit,
    39,
  );
  // Any prefix bound to libvirt's QEMU namespace counts, as libvirt reads it by URI.
  t.is(parseDomainXml(domain(['-cpu', 'qemu64,phys-bits=52'], { prefix: 'q' })).physBits, 52);
});

test("-m keys merge over libvirt's; -machine type and pci-hole64-size globals move the layout", (t) => {
  const d = parseDomainXml(domain(['-m', 'maxmem=600G,slots=4']));
  t.is(d.ramBytes, 64 * M);
  t.is(d.maxMemoryBytes, 600 * G);
  t.is(d.slots, 4);
  t.is(parseDomainXml(domain(['-m', '128'])).ramBytes, 128 * M);
  t.is(parseDomainXml(domain(['-m', 'size=1.5G'])).ramBytes, 1.5 * G);
  const pc = parseDomainXml(domain(['-machine', 'pc-i440fx-7.2,usb=off']));
  t.is(pc.machine, 'pc');
  t.is(pc.machineType, 'pc-i440fx-7.2');
  const hole = parseDomainXml(domain(['-global', 'q35-pcihost.pci-hole64-size=1T']));
  t.is(hole.pciHole64Bytes, 1024 * G);
  t.is(qemuSize('2048', 'm', 'x'), 2 * G);
  t.is(qemuSize('4G', 'b', 'x'), 4 * G);
});

test('what cannot be judged is refused, naming it: override, capabilities, -accel, -set, unknown options, a vCPU device', (t) => {
  const ns = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'";
  unjudgeable(
    t,
    domain([], {
      extra: `<qemu:override><qemu:device alias='vcpu1'><qemu:frontend><qemu:property name='phys-bits' type='unsigned' value='52'/></qemu:frontend></qemu:device></qemu:override>`,
    }),
    /<qemu:override> sets device properties QEMU applies after libvirt's/,
  );
  unjudgeable(
    t,
    domain([], { extra: `<qemu:capabilities><qemu:del capability='blockdev'/></qemu:capabilities>` }),
    /<qemu:capabilities> changes the arguments libvirt builds/,
  );
  // Declared on the element itself, under another prefix.
  unjudgeable(
    t,
    domain([]).replace('</domain>', `<x:override xmlns:x='http://libvirt.org/schemas/domain/qemu/1.0'/></domain>`),
    /<x:override>/,
  );
  unjudgeable(t, domain(['-accel', 'tcg']), /value='-accel'\/> is an option physbits does not judge/);
  unjudgeable(t, domain(['-enable-kvm']), /value='-enable-kvm'\/> is an option physbits does not judge/);
  unjudgeable(t, domain(['-machine', 'q35,accel=kvm']), /-machine accel=: physbits does not judge it/);
  unjudgeable(t, domain(['-machine', 'max-ram-below-4g=1G']), /-machine max-ram-below-4g=/);
  unjudgeable(t, domain(['-set', 'device.vcpu1.phys-bits=52']), /value='-set'\/> is an option/);
  unjudgeable(t, domain(['-readconfig', '/etc/qemu.cfg']), /value='-readconfig'\/> is an option/);
  unjudgeable(
    t,
    domain(['-device', 'Skylake-Server-x86_64-cpu,socket-id=1,phys-bits=52']),
    /a vCPU added on the command line/,
  );
  unjudgeable(t, domain(['-device', '{"driver":"host-x86_64-cpu","id":"v1"}']), /a vCPU added/);
  unjudgeable(t, domain(['-cpu']), /-cpu has no argument/);
  unjudgeable(t, domain(['-cpu', 'qemu64,phys-bits=4,,6']), /an escaped comma is not judged/);
  unjudgeable(t, domain(['-m', 'size=lots']), /-m size: 'lots' is not a size/);
  // Harmless options and XML the namespace does not hold pass.
  t.is(parseDomainXml(domain(['-fw_cfg', 'name=opt/x,string=1', '-device', 'virtio-rng-pci', '-S'])).physBits, 46);
  t.is(parseDomainXml(domain([]).replace('<name>', `<metadata><qemu:override ${ns}/></metadata><name>`)).physBits, 46);
  t.true(judgeQemuArgs(['-name', 'x']).globals.length === 0);
});

test('the hook refuses a commandline it cannot judge under libvirtHook.failClosed, and says why', async (t) => {
  const lines: string[] = [];
  const code = await runLibvirtHook(['c1', 'migrate', 'begin', '-'], domain(['-accel', 'kvm']), {
    config: parseConfig({}),
    hostFacts: hostFacts(46, 'hv1', { physBitsSource: 'cpuinfo' }),
    stderr: (l) => lines.push(l),
  });
  t.is(code, 1);
  t.deepEqual(lines, [
    "physbits cannot check domain 'c1' (DOMAIN_XML_UNJUDGEABLE: <qemu:arg value='-accel'/> is an option physbits does not judge); refusing because libvirtHook.failClosed is on",
  ]);
  t.false(DomainXmlError === (QemuCommandlineError as unknown));
});

/** The phys-bits QEMU gives the guest and the -m it holds, for libvirt's own arguments followed by `args`. */
async function qemuReads(qemu: (typeof QEMUS)[number], args: string[]) {
  const guest = await startGuest({ qemu, cpu: 'phys-bits=46', memory: '64M', extraArgs: args });
  try {
    const c = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    try {
      const cpus = await c.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
      const physBits = await c.execute<number>('qom-get', { path: cpus[0]['qom-path'], property: 'phys-bits' });
      const memory = await c.execute<{ size: number; slots?: number; 'max-size'?: number }>('qom-get', {
        path: '/machine',
        property: 'memory',
      });
      return { physBits, memory };
    } finally {
      await c.close();
    }
  } finally {
    await guest.kill();
  }
}

const REAL_CASES: string[][] = [
  ['-cpu', 'Skylake-Server,phys-bits=52'],
  ['-cpu', 'qemu64,phys-bits=44', '-cpu', 'qemu64,phys-bits=48'],
  ['-global', 'qemu64-x86_64-cpu.phys-bits=44'],
  ['-cpu', 'qemu64', '-global', 'x86_64-cpu.phys-bits=44'],
  ['-global', 'x86_64-cpu.phys-bits=39', '-cpu', 'qemu64', '-global', 'qemu64-x86_64-cpu.phys-bits=50'],
  ['-m', 'maxmem=1G,slots=2'],
];

for (const qemu of QEMUS) {
  test(`${qemu.label}: the width and memory the hook reads from <qemu:commandline> are QEMU's`, async (t) => {
    for (const args of REAL_CASES) {
      const d = parseDomainXml(domain(args));
      const real = await qemuReads(qemu, args);
      t.is(d.physBits, real.physBits, args.join(' '));
      t.is(d.ramBytes, real.memory.size, args.join(' '));
      // QEMU leaves max-size out when no maxmem was given.
      t.is(d.maxMemoryBytes ?? d.ramBytes, real.memory['max-size'] ?? real.memory.size, args.join(' '));
      t.is(d.slots, real.memory.slots ?? 0, args.join(' '));
    }
  });
}
