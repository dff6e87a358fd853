import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  classifyMachine,
  DOMAIN_XML_MAX_BYTES,
  DomainXmlError,
  parseDomainXml,
  resolvePhysBits,
  scaledBytes,
} from '../../agent/libvirt/domain-xml';

const FIXTURES = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'libvirt');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function domain(cpu: string, extra = '', type = 'kvm'): string {
  return (
    `<domain type='${type}'><name>t</name><memory unit='MiB'>64</memory>${extra}` +
    `<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>${cpu}</domain>`
  );
}

test('live XML from libvirt 9.0: emulate 42 under TCG', (t) => {
  const d = parseDomainXml(fixture('live-emulate-42.xml'));
  t.like(d, {
    name: 'web1',
    domainType: 'qemu',
    accelerator: 'tcg',
    machineType: 'pc-q35-7.2',
    machine: 'q35',
    cpuMode: 'custom',
    cpuModel: 'qemu64',
    physBits: 42,
    hostPhysBits: false,
    hostPhysBitsLimit: 0,
    emulatedBits: 42,
    ramBytes: 64 * MiB,
    memoryBytes: 64 * MiB,
    currentMemoryBytes: 64 * MiB,
    maxMemoryBytes: null,
    slots: 0,
    highestAddress: 64 * MiB,
  });
  t.deepEqual(d.machineVersion, { major: 7, minor: 2 });
  t.deepEqual(d.notes, []);
  t.is(resolvePhysBits(d, 39), 42);
});

test('passthrough without limit follows the host under KVM', (t) => {
  const d = parseDomainXml(fixture('passthrough.xml'));
  t.like(d, {
    name: 'db1',
    accelerator: 'kvm',
    cpuModel: 'Skylake-Server-IBRS',
    physBits: null,
    hostPhysBits: true,
    hostPhysBitsLimit: 0,
    emulatedBits: null,
  });
  // q35 with 4 GiB: 2 GiB below 4 GiB, 2 GiB from 4 GiB up.
  t.like(d.layout!, { ramBelow4g: 2 * GiB, ramAbove4g: 2 * GiB, above4gStart: 4 * GiB, deviceMemory: null });
  t.is(d.highestAddress, 6 * GiB);
  t.is(resolvePhysBits(d, 46), 46);
});

test('passthrough with a limit is capped by it', (t) => {
  const d = parseDomainXml(fixture('passthrough-limit.xml'));
  t.like(d, {
    name: 'db2',
    machine: 'pc',
    physBits: null,
    hostPhysBits: true,
    hostPhysBitsLimit: 39,
    currentMemoryBytes: GiB,
    ramBytes: 2 * GiB,
  });
  t.is(resolvePhysBits(d, 48), 39);
  t.is(resolvePhysBits(d, 36), 36);
  t.is(d.highestAddress, 2 * GiB);
});

test('host-passthrough defaults to host-phys-bits under KVM', (t) => {
  const d = parseDomainXml(fixture('host-passthrough.xml'));
  t.like(d, {
    cpuMode: 'host-passthrough',
    cpuModel: 'host',
    physBits: null,
    hostPhysBits: true,
    hostPhysBitsLimit: 0,
    machine: 'q35',
    machineVersion: null,
  });
  t.is(resolvePhysBits(d, 52), 52);
  // 16 GiB on q35: 2 GiB below, 14 GiB above 4 GiB.
  t.is(d.highestAddress, 18 * GiB);
});

test('host-passthrough ignores emulate bits, and says so', (t) => {
  const d = parseDomainXml(fixture('host-passthrough-emulate.xml'));
  t.like(d, { physBits: null, hostPhysBits: true, emulatedBits: 42 });
  t.is(resolvePhysBits(d, 48), 48);
  t.is(d.notes.length, 1);
  t.regex(d.notes[0], /bits='42'.*no effect.*host-phys-bits=on/);
});

test('maximum under TCG: host-phys-bits is inert, 40 bits', (t) => {
  const d = parseDomainXml(fixture('maximum-tcg.xml'));
  t.like(d, { accelerator: 'tcg', cpuModel: 'max', physBits: 40, hostPhysBits: true, emulatedBits: null });
  t.is(resolvePhysBits(d, 48), 40);
  t.deepEqual(d.notes, ["<maxphysaddr mode='passthrough'/> has no effect under tcg: the guest gets 40 bits"]);
});

test('named model and host-model: QEMU default 40', (t) => {
  const named = parseDomainXml(fixture('named-model.xml'));
  t.like(named, { cpuModel: 'Cascadelake-Server', physBits: 40, hostPhysBits: false, machine: 'pc' });
  // pc with 3.5 GiB: the cut drops to 3 GiB, 0.5 GiB above 4 GiB.
  t.like(named.layout!, { ramBelow4g: 3 * GiB, ramAbove4g: 512 * MiB });
  t.is(named.highestAddress, 4 * GiB + 512 * MiB);
  const hostModel = parseDomainXml(fixture('host-model.xml'));
  t.like(hostModel, { cpuMode: 'host-model', cpuModel: null, physBits: 40, hostPhysBits: false });
  t.deepEqual(hostModel.machineVersion, { major: 6, minor: 2 });
});

test('no <cpu>: qemu64 at 40 bits, memory in KiB by default', (t) => {
  const d = parseDomainXml(fixture('no-cpu.xml'));
  t.like(d, {
    cpuMode: 'custom',
    cpuModel: 'qemu64',
    physBits: 40,
    ramBytes: 64 * MiB,
    machine: 'other',
    layout: null,
    highestAddress: null,
  });
  t.is(d.notes.length, 1);
  t.regex(d.notes[0], /not pc or q35/);
});

test('maxMemory slots: hot-plug region after RAM, 1 GiB per slot', (t) => {
  const d = parseDomainXml(fixture('hotplug-slots.xml'));
  t.like(d, { physBits: 39, memoryBytes: 9 * GiB, ramBytes: 8 * GiB, maxMemoryBytes: 64 * GiB, slots: 4 });
  // 8 GiB on q35: 2 below, 6 from 4 GiB → 10 GiB; region (64 - 8) + 4 = 60 GiB → 70 GiB.
  t.like(d.layout!, {
    ramBelow4g: 2 * GiB,
    ramAbove4g: 6 * GiB,
    above4gStart: 4 * GiB,
    deviceMemory: { base: 10 * GiB, size: 60 * GiB },
  });
  t.is(d.highestAddress, 70 * GiB);
  // The 64-bit PCI hole (32 GiB on q35) follows: QEMU needs 2^bits > 102 GiB - 1.
  t.deepEqual(d.layout!.pciHole64, { start: 70 * GiB, end: 102 * GiB });
  t.is(d.layout!.minPhysBits, 37);
});

test('AMD guest near 1 TiB: RAM above 4 GiB moves to 1 TiB (as QEMU 7.2 does)', (t) => {
  const d = parseDomainXml(fixture('hotplug-over-1t.xml'));
  t.is(d.layout!.above4gStart, 1024 * GiB);
  t.deepEqual(d.layout!.deviceMemory, { base: 1024 * GiB, size: 973 * GiB - 64 * MiB + 4 * GiB });
  t.true(d.highestAddress! > 2 ** 40);
  // The same layout with an Intel model stays at 4 GiB.
  const intel = parseDomainXml(
    fixture('hotplug-over-1t.xml').replace('<model>qemu64</model>', '<model>Cascadelake-Server</model>'),
  );
  t.is(intel.layout!.above4gStart, 4 * GiB);
  // Older machine types keep the old layout.
  const old = parseDomainXml(fixture('hotplug-over-1t.xml').replace('pc-q35-7.2', 'pc-q35-7.0'));
  t.is(old.layout!.above4gStart, 4 * GiB);
});

test('layout: boundaries checked against QEMU 7.2', (t) => {
  const hotplug = (max: string, model = 'qemu64', machine = 'pc-q35-7.2', ram = "<memory unit='MiB'>64</memory>") =>
    parseDomainXml(
      `<domain type='qemu'><name>t</name>${ram}<maxMemory slots='${max === '' ? 0 : 4}' unit='GiB'>${max || 0}</maxMemory>` +
        `<os><type arch='x86_64' machine='${machine}'>hvm</type></os><cpu><model>${model}</model></cpu></domain>`,
    );
  // qemu-system-x86_64 -cpu qemu64 -m 64M,slots=4,maxmem=972G starts at 4 GiB; 972.5G relocates.
  t.is(hotplug('972').layout!.above4gStart, 4 * GiB);
  t.is(
    parseDomainXml(
      domain('<cpu><model>qemu64</model></cpu>', "<maxMemory slots='4' unit='MiB'>995840</maxMemory>", 'qemu'),
    ).layout!.above4gStart,
    1024 * GiB,
  );
  // 2.5 GiB on q35 and 3.25 GiB on pc stay below 4 GiB.
  t.is(hotplug('', 'qemu64', 'pc-q35-7.2', "<memory unit='MiB'>2560</memory>").highestAddress, 2.5 * GiB);
  t.is(hotplug('', 'qemu64', 'pc-i440fx-7.2', "<memory unit='MiB'>3328</memory>").highestAddress, 3.25 * GiB);
  // As QEMU's "info mtree" shows: q35 -m 4G,slots=2,maxmem=8G → device-memory 6 GiB..12 GiB, pc → 5..11.
  const two = (machine: string) =>
    parseDomainXml(
      `<domain type='qemu'><name>t</name><memory unit='GiB'>4</memory>` +
        `<maxMemory slots='2' unit='GiB'>8</maxMemory><os><type arch='x86_64' machine='${machine}'>hvm</type></os></domain>`,
    );
  t.deepEqual(two('q35').layout!.deviceMemory, { base: 6 * GiB, size: 6 * GiB });
  t.deepEqual(two('pc').layout!.deviceMemory, { base: 5 * GiB, size: 6 * GiB });
});

test('host and max models, and host-model, take the vendor from the host', (t) => {
  const xml = fixture('host-passthrough.xml').replace(
    "<memory unit='GiB'>16</memory>",
    "<memory unit='MiB'>64</memory><maxMemory slots='4' unit='MiB'>995840</maxMemory>",
  );
  t.is(parseDomainXml(xml, { hostVendor: 'AuthenticAMD' }).layout!.above4gStart, 1024 * GiB);
  t.is(parseDomainXml(xml, { hostVendor: 'GenuineIntel' }).layout!.above4gStart, 4 * GiB);
  t.is(parseDomainXml(xml).layout!.above4gStart, 4 * GiB);
});

test('DIMMs without NUMA are subtracted from <memory>', (t) => {
  const d = parseDomainXml(
    domain(
      "<cpu mode='custom'><model>qemu64</model></cpu>",
      "<maxMemory slots='2' unit='GiB'>8</maxMemory><devices><memory model='dimm'><target><size unit='MiB'>32</size></target></memory></devices>",
    ),
  );
  t.is(d.ramBytes, 32 * MiB);
  t.is(d.maxMemoryBytes, 8 * GiB);
});

test('malformed XML is DOMAIN_XML_MALFORMED', (t) => {
  const err = t.throws(() => parseDomainXml(fixture('malformed.xml')), { instanceOf: DomainXmlError });
  t.is(err!.code, 'DOMAIN_XML_MALFORMED');
  t.is(t.throws(() => parseDomainXml('<notadomain/>'))!.message, 'the document is not a <domain>');
  t.is((t.throws(() => parseDomainXml('')) as DomainXmlError).code, 'DOMAIN_XML_MALFORMED');
});

test('entities are never expanded: a DTD is refused', (t) => {
  const err = t.throws(() => parseDomainXml(fixture('entity.xml')), { instanceOf: DomainXmlError });
  t.is(err!.code, 'DOMAIN_XML_MALFORMED');
  t.regex(err!.message, /DOCTYPE/);
});

test('oversized input is refused before parsing', (t) => {
  const pad = `<!--${'x'.repeat(DOMAIN_XML_MAX_BYTES)}-->`;
  const started = Date.now();
  const err = t.throws(() => parseDomainXml(domain('', pad)), { instanceOf: DomainXmlError });
  t.is(err!.code, 'DOMAIN_XML_TOO_LARGE');
  t.true(Date.now() - started < 1000);
});

test('invalid values are DOMAIN_XML_INVALID with the element named', (t) => {
  const cases: Array<[string, RegExp]> = [
    [domain("<cpu><maxphysaddr mode='emulate' bits='forty'/></cpu>"), /maxphysaddr bits.*not a whole number/],
    [domain("<cpu><maxphysaddr mode='emulate' bits='65'/></cpu>"), /65 is out of range/],
    [domain("<cpu><maxphysaddr mode='emulate'/></cpu>"), /needs bits/],
    [domain("<cpu><maxphysaddr mode='sideways'/></cpu>"), /neither 'emulate' nor 'passthrough'/],
    [domain("<cpu mode='fancy'/>"), /unknown <cpu mode='fancy'>/],
    [domain('', "<maxMemory slots='4' unit='lightyears'>1</maxMemory>"), /unknown unit 'lightyears'/],
    [domain('', "<maxMemory slots='4' unit='PiB'>99999999</maxMemory>"), /out of range/],
    ["<domain type='kvm'><memory>1</memory></domain>", /<name> is missing/],
    ['<domain><name>x</name><memory>1</memory></domain>', /<domain type=…> is missing/],
    ["<domain type='kvm'><name>x</name></domain>", /<memory> is missing/],
  ];
  for (const [xml, re] of cases) {
    const err = t.throws(() => parseDomainXml(xml), { instanceOf: DomainXmlError }, xml);
    t.is(err!.code, 'DOMAIN_XML_INVALID');
    t.regex(err!.message, re);
  }
});

test('predefined entities and character references are decoded, nothing else', (t) => {
  const d = parseDomainXml(
    "<domain type='kvm'><name>a&amp;b&quot;c&#x41;&#66;&lt;&nbsp;</name><memory unit='KiB'>1</memory></domain>",
  );
  t.is(d.name, 'a&b"cAB<&nbsp;');
});

test('pcihole64 and launchSecurity are read', (t) => {
  const d = parseDomainXml(
    domain(
      '<cpu><model>EPYC</model></cpu>',
      "<devices><controller type='pci' index='0' model='pcie-root'><pcihole64 unit='GiB'>1</pcihole64></controller></devices>" +
        "<launchSecurity type='sev'><cbitpos>47</cbitpos><reducedPhysBits>1</reducedPhysBits><policy>0x0003</policy></launchSecurity>",
    ),
  );
  t.like(d, { pciHole64Bytes: GiB, launchSecurity: 'sev', reducedPhysBits: 1 });
  // 64 MiB below 4 GiB; the 1 GiB hole starts at 4 GiB.
  t.deepEqual(d.layout!.pciHole64, { start: 4 * GiB, end: 5 * GiB });
});

test('scaled integers follow libvirt units', (t) => {
  t.is(scaledBytes('1', undefined, 'x'), 1024);
  t.is(scaledBytes('1', 'KB', 'x'), 1000);
  t.is(scaledBytes('1', 'G', 'x'), GiB);
  t.is(scaledBytes('2', 'bytes', 'x'), 2);
  t.is(scaledBytes('1', 'TiB', 'x'), 1024 * GiB);
});

test('machine types', (t) => {
  t.deepEqual(classifyMachine('pc-q35-8.1'), { machine: 'q35', version: { major: 8, minor: 1 } });
  t.deepEqual(classifyMachine('pc-i440fx-2.11'), { machine: 'pc', version: { major: 2, minor: 11 } });
  t.deepEqual(classifyMachine('pc-1.3'), { machine: 'pc', version: { major: 1, minor: 3 } });
  t.deepEqual(classifyMachine('pc'), { machine: 'pc', version: null });
  t.deepEqual(classifyMachine('microvm'), { machine: 'other', version: null });
  t.deepEqual(classifyMachine(null), { machine: 'other', version: null });
});

test("under KVM a named model shows the host's vendor unless <vendor> says otherwise (the AMD 1 TiB relocation follows it)", (t) => {
  const xml = (type: string, cpu: string) =>
    `<domain type='${type}'><name>t</name><memory unit='MiB'>64</memory>` +
    `<maxMemory slots='4' unit='MiB'>995840</maxMemory><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os>` +
    `${cpu}</domain>`;
  const intelModel = "<cpu mode='custom'><model>Skylake-Server</model></cpu>";
  // KVM on an AMD host: Skylake-Server shows AuthenticAMD, so RAM above 4 GiB moves to 1 TiB.
  t.is(parseDomainXml(xml('kvm', intelModel), { hostVendor: 'AuthenticAMD' }).layout!.above4gStart, 1024 * GiB);
  // <vendor> overrides the host's.
  const forced = "<cpu mode='custom'><model>Skylake-Server</model><vendor>Intel</vendor></cpu>";
  t.is(parseDomainXml(xml('kvm', forced), { hostVendor: 'AuthenticAMD' }).layout!.above4gStart, 4 * GiB);
  // TCG keeps the model's own vendor.
  t.is(parseDomainXml(xml('qemu', intelModel), { hostVendor: 'AuthenticAMD' }).layout!.above4gStart, 4 * GiB);
  const amdModel = "<cpu mode='custom'><model>EPYC</model></cpu>";
  t.is(parseDomainXml(xml('kvm', amdModel), { hostVendor: 'GenuineIntel' }).layout!.above4gStart, 4 * GiB);
  t.is(parseDomainXml(xml('qemu', amdModel), { hostVendor: 'GenuineIntel' }).layout!.above4gStart, 1024 * GiB);
});

/** Names every JavaScript object has or that parsers treat specially. */
const OBJECT_NAMES = [
  '__proto__',
  'constructor',
  'prototype',
  'hasOwnProperty',
  'toString',
  'valueOf',
  'isPrototypeOf',
  'propertyIsEnumerable',
  'toLocaleString',
  '__defineGetter__',
  '__lookupSetter__',
];

/** Places in a domain document where libvirt (or a hand-written file) can carry any name. */
const PLACES: Array<[string, (xml: string, name: string) => string]> = [
  [
    'metadata',
    (x, n) => x.replace('</domain>', `<metadata><${n}><memory unit='TiB'>9</memory></${n}></metadata></domain>`),
  ],
  [
    'namespaced metadata',
    (x, n) =>
      x.replace('</domain>', `<metadata><${n} xmlns="http://example.org/${n}"><cpu/></${n}></metadata></domain>`),
  ],
  ['domain child', (x, n) => x.replace('</domain>', `<${n}/><${n}>twice</${n}></domain>`)],
  ['cpu child', (x, n) => x.replace('</cpu>', `<${n} bits='64'/></cpu>`)],
  [
    'inside maxphysaddr',
    (x, n) =>
      x.replace(
        "<maxphysaddr mode='emulate' bits='42'/>",
        `<maxphysaddr mode='emulate' bits='42'><${n}/></maxphysaddr>`,
      ),
  ],
  [
    'devices child',
    (x, n) => x.replace('</devices>', `<${n}><target><size unit='GiB'>1</size></target></${n}></devices>`),
  ],
  [
    'attribute',
    (x, n) =>
      x.replace("<domain type='qemu'", `<domain ${n}='1' type='qemu'`).replace('<cpu mode', `<cpu ${n}='x' mode`),
  ],
];

for (const [place, insert] of PLACES) {
  test(`any element or attribute name is judged, in ${place} (Object.prototype names, __proto__ included)`, (t) => {
    const base = fixture('live-emulate-42.xml');
    const want = parseDomainXml(base);
    for (const name of OBJECT_NAMES) {
      const xml = insert(base, name);
      t.not(xml, base, `${name} was inserted`);
      t.deepEqual(parseDomainXml(xml), want, `${place}: ${name}`);
    }
    t.is(({} as Record<string, unknown>).memory, undefined, 'Object.prototype is untouched');
    t.is(Object.getPrototypeOf({}), Object.prototype);
  });
}
