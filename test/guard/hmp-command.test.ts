import test from 'ava';
import {
  parseHmpCommandLine,
  parseQemuOpts,
  readHmpString,
  truncateBytes,
  type HmpCommand,
} from '../../agent/guard/hmp-command';

const table: Array<[string, HmpCommand]> = [
  [
    'device_add pc-dimm,id=d1,memdev=m1,addr=0x100000000',
    { kind: 'device_add', args: { driver: 'pc-dimm', id: 'd1', memdev: 'm1', addr: '0x100000000' } },
  ],
  ['  device_add   nvdimm,memdev=m2  ', { kind: 'device_add', args: { driver: 'nvdimm', memdev: 'm2' } }],
  [
    'device_add driver=virtio-mem-pci,memdev=m3,memaddr=4294967296,addr=04.0',
    { kind: 'device_add', args: { driver: 'virtio-mem-pci', memdev: 'm3', memaddr: '4294967296', addr: '04.0' } },
  ],
  [
    'device_add "pc-dimm,id=d 1,memdev=m1"',
    { kind: 'device_add', args: { driver: 'pc-dimm', id: 'd 1', memdev: 'm1' } },
  ],
  [
    'device_add "pc-dimm,id=\\"q\\",memdev=m1"',
    { kind: 'device_add', args: { driver: 'pc-dimm', id: '"q"', memdev: 'm1' } },
  ],
  [
    'device_add pc-dimm,addr=0x1000,addr=0x4000000000000',
    { kind: 'device_add', args: { driver: 'pc-dimm', addr: '0x4000000000000' } },
  ],
  ['device_add pc-dimm,id=a,id=b', { kind: 'device_add', args: { driver: 'pc-dimm', id: 'a' } }],
  ['device_add', { kind: 'device_add', args: {} }],
  ['DEVICE_ADD pc-dimm,memdev=m1', { kind: 'device_add', args: { driver: 'pc-dimm', memdev: 'm1' } }],
  [
    'device_add pc-dimm,memdev=m1 extra',
    { kind: 'unparsable', name: 'device_add', reason: 'extraneous characters after the device options' },
  ],
  [
    'device_add "pc-dimm,memdev=m1',
    { kind: 'unparsable', name: 'device_add', reason: 'bad or unterminated quoted string' },
  ],
  ['device_add "pc-dimm\\x"', { kind: 'unparsable', name: 'device_add', reason: 'bad or unterminated quoted string' }],
  ['migrate tcp:hv2:4444', { kind: 'migrate', uri: 'tcp:hv2:4444', flags: [] }],
  ['migrate -d tcp:[2001:db8::7]:4444', { kind: 'migrate', uri: 'tcp:[2001:db8::7]:4444', flags: ['-d'] }],
  ['migrate -d -b -i tcp:hv2:4444', { kind: 'migrate', uri: 'tcp:hv2:4444', flags: ['-d', '-b', '-i'] }],
  ['migrate -r "tcp:hv2:4444"', { kind: 'migrate', uri: 'tcp:hv2:4444', flags: ['-r'] }],
  ['migrate -d-r tcp:hv2:1', { kind: 'migrate', uri: 'tcp:hv2:1', flags: ['-d', '-r'] }],
  ['migrate -dtcp:hv2:1', { kind: 'migrate', uri: 'tcp:hv2:1', flags: ['-d'] }],
  ['migrate -x tcp:hv2:1', { kind: 'unparsable', name: 'migrate', reason: 'unsupported option -x' }],
  ['migrate -d', { kind: 'unparsable', name: 'migrate', reason: 'no uri' }],
  ['migrate', { kind: 'unparsable', name: 'migrate', reason: 'no uri' }],
  [
    'migrate tcp:hv2:1 tcp:hv3:1',
    { kind: 'unparsable', name: 'migrate', reason: 'extraneous characters after the uri' },
  ],
  ['migrate/x tcp:hv2:1', { kind: 'unparsable', name: 'migrate', reason: 'extraneous characters after the uri' }],
  ['object_add memory-backend-ram,id=m1,size=1G', { kind: 'other', name: 'object_add' }],
  ['info status', { kind: 'other', name: 'info' }],
  ['migrate_set_parameter max-bandwidth 1G', { kind: 'other', name: 'migrate_set_parameter' }],
  ['', { kind: 'other', name: '' }],
];

for (const [line, want] of table) {
  test(`HMP ${JSON.stringify(line)}`, (t) => {
    t.deepEqual(parseHmpCommandLine(line), want);
  });
}

test('QemuOpts: ",," is a literal comma in values; flags; the implied driver only comes first', (t) => {
  t.deepEqual(parseQemuOpts('pc-dimm,id=a,,b,memdev=m'), { driver: 'pc-dimm', id: 'a,b', memdev: 'm' });
  t.deepEqual(parseQemuOpts('pc,,dimm,memdev=m'), { driver: 'pc,dimm', memdev: 'm' });
  t.deepEqual(parseQemuOpts('pc-dimm,share,noprealloc'), { driver: 'pc-dimm', share: 'on', prealloc: 'off' });
  t.deepEqual(parseQemuOpts('memdev=m,driver=nvdimm'), { memdev: 'm', driver: 'nvdimm' });
  t.deepEqual(parseQemuOpts('pc-dimm,driver=nvdimm'), { driver: 'nvdimm' });
  t.deepEqual(parseQemuOpts(',addr=5'), { driver: '', addr: '5' });
  t.deepEqual(parseQemuOpts('pc-dimm,addr='), { driver: 'pc-dimm', addr: '' });
  t.deepEqual(
    parseQemuOpts('pc-dimm,__proto__=x'),
    Object.fromEntries([
      ['driver', 'pc-dimm'],
      ['__proto__', 'x'],
    ]),
  );
});

test('HMP strings: quotes, escapes, and the 1023-byte buffer', (t) => {
  t.deepEqual(readHmpString('  "a\\nb\\\\c" rest', 0), { value: 'a\nb\\c', next: 11 });
  t.deepEqual(readHmpString('plain rest', 0), { value: 'plain', next: 5 });
  t.is(readHmpString('   ', 0), null);
  t.is(truncateBytes('x'.repeat(2000)).length, 1023);
  t.is(truncateBytes('short'), 'short');
});

test('an address past the 1023rd byte is cut off, as QEMU cuts it off', (t) => {
  const pad = 'p'.repeat(1000);
  const line = `device_add pc-dimm,memdev=m1,x=${pad},addr=0x4000000000000`;
  const parsed = parseHmpCommandLine(line);
  t.is(parsed.kind, 'device_add');
  t.false('addr' in (parsed as { args: Record<string, string> }).args);
});
