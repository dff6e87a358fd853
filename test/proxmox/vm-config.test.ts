import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  parseCpuModels,
  parsePropertyString,
  parseVmConfig,
  VM_CONFIG_MAX_BYTES,
  VmConfigError,
} from '../../agent/proxmox/vm-config';

const PVE = join(__dirname, '..', '..', '..', 'test', 'fixtures', 'proxmox', 'pve');

test('the current section is what comes before [PENDING] and the snapshots; comments are the description', (t) => {
  const file = parseVmConfig(readFileSync(join(PVE, 'qemu-server', '100.conf'), 'utf8'));
  t.is(file.current.cpu, 'x86-64-v2-AES,phys-bits=42');
  t.is(file.current.memory, '2048');
  t.is(file.current.meta, 'creation-qemu=8.1.5,ctime=1706270000');
  t.is(file.current.vmgenid, '0b0e5f3a-7c21-4d8e-9b1f-2a3c4d5e6f70');
  t.is(file.current.parent, 'before-upgrade');
  t.is(file.description, 'Web front end%3A nginx and php-fpm\nowner%3A web team');
  t.deepEqual({ ...file.pending!.values }, { cpu: 'x86-64-v2-AES,phys-bits=48', memory: '4096' });
  t.deepEqual(file.pending!.delete, ['agent']);
  t.deepEqual(file.snapshots, ['before-upgrade']);
  t.deepEqual(file.skipped, []);
  // The snapshot's `cpu: host` and `memory: 8192` never reach the current section.
  t.false(Object.values(file.current).includes('host'));
});

test('parse_vm_config rules: last line wins, trimmed values, special and unknown sections skipped, junk lines noted', (t) => {
  const file = parseVmConfig(
    [
      'memory: 1024',
      '   ',
      'memory:   2048  \r',
      'this line is not a key',
      'Cpu: host',
      '[special:cloudinit]',
      'cpu: host',
      '[weird section!]',
      'cpu: max',
      '[PENDING]',
      'memory: 4096',
      '[snap1]',
      'cpu: host',
      '',
    ].join('\n'),
  );
  t.deepEqual({ ...file.current }, { memory: '2048' });
  t.deepEqual(
    file.skipped.map((s) => s.line),
    [4, 5],
  );
  t.deepEqual(file.snapshots, ['snap1']);
  t.deepEqual({ ...file.pending!.values }, { memory: '4096' });
  t.is(parseVmConfig('').pending, null);
});

test('keys that would meet Object.prototype are plain keys', (t) => {
  const file = parseVmConfig('constructor: x\nproto: y\n');
  t.is(file.current['constructor'] as unknown, 'x');
  t.is(Object.getPrototypeOf(file.current), null);
});

test('a config larger than the bound is refused', (t) => {
  const err = t.throws(() => parseVmConfig('#'.repeat(VM_CONFIG_MAX_BYTES + 1)), { instanceOf: VmConfigError });
  t.is(err!.code, 'PROXMOX_CONFIG_INVALID');
});

test('property strings: the default key, key=value, unknown and repeated keys', (t) => {
  t.deepEqual(
    { ...parsePropertyString('host,phys-bits=39', ['cputype', 'phys-bits'], 'cputype', 'cpu') },
    {
      cputype: 'host',
      'phys-bits': '39',
    },
  );
  t.is(
    t.throws(() => parsePropertyString('host,bits=39', ['cputype', 'phys-bits'], 'cputype', 'cpu'))!.message,
    "cpu: unknown property 'bits'",
  );
  t.is(
    t.throws(() => parsePropertyString('host,max', ['cputype'], 'cputype', 'cpu'))!.message,
    "cpu: 'cputype' given twice",
  );
  t.is(t.throws(() => parsePropertyString('x', ['a'], null, 'm'))!.message, "m: 'x' is not key=value");
});

test('custom CPU models: sections and their indented properties', (t) => {
  const models = parseCpuModels(readFileSync(join(PVE, 'virtual-guest', 'cpu-models.conf'), 'utf8'));
  t.deepEqual(Object.keys(models), ['lab41', 'plain']);
  t.deepEqual(
    { ...models.lab41 },
    { flags: '+aes', 'phys-bits': '41', hidden: '0', 'reported-model': 'Skylake-Server' },
  );
});
