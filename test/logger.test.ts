import test from 'ava';
import { PassThrough } from 'node:stream';
import { createLogger, safeValue } from '../agent/core/logger';

function capture(format: 'journal' | 'text' | 'json', level: 'info' | 'debug' = 'info') {
  const stream = new PassThrough();
  const out: string[] = [];
  stream.on('data', (d: Buffer) => out.push(...d.toString().split('\n').filter(Boolean)));
  return { log: createLogger({ format, level, stream }), out };
}

const tick = () => new Promise((r) => setImmediate(r));

test('journal format: syslog priority prefix, no timestamp, context as key=value', async (t) => {
  const { log, out } = capture('journal', 'debug');
  log.error('boom', { vm: 'web1' });
  log.warn('careful');
  log.info('hello', { socket: '/run/qemu/web1.qmp' });
  log.debug('detail');
  await tick();
  t.deepEqual(out, ['<3>boom vm=web1', '<4>careful', '<6>hello socket=/run/qemu/web1.qmp', '<7>detail']);
});

test('a child logger carries its context into every line', async (t) => {
  const { log, out } = capture('journal');
  log.child({ vm: 'db1' }).info('verdict', { severity: 'critical' });
  await tick();
  t.deepEqual(out, ['<6>verdict vm=db1 severity=critical']);
});

test('values from VMs and clients cannot forge lines: newlines and controls are escaped, length bounded', async (t) => {
  const { log, out } = capture('journal');
  log.info('VM found', { vm: 'evil\n<3>forged line', other: 'a b' });
  await tick();
  t.is(out.length, 1);
  t.is(out[0], '<6>VM found vm="evil\\n<3>forged line" other="a b"');
  t.is(safeValue('x'.repeat(300)).length, 259);
  t.is(safeValue('$(rm -rf /)'), '"$(rm -rf /)"');
});

test('text format is timestamped; level filtering applies', async (t) => {
  const { log, out } = capture('text', 'info');
  log.debug('hidden');
  log.info('shown');
  await tick();
  t.is(out.length, 1);
  t.regex(out[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO shown$/);
});
