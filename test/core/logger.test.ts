import test from 'ava';
import { PassThrough } from 'node:stream';
import { createLogger, safeValue } from '../../agent/core/logger';

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

test("a child's child carries both contexts; children follow a level set on the logger they came from, made before or after", async (t) => {
  const { log, out } = capture('journal');
  const early = log.child({ vm: 'db1' });
  early.child({ component: 'guard' }).info('ready', { vm: 'db2' });
  early.debug('hidden');
  log.setLevel?.('debug');
  early.debug('shown', { n: 1 });
  log.child({ vm: 'web1' }).debug('also shown');
  log.setLevel?.('warn');
  early.info('hidden again');
  early.warn('careful');
  await tick();
  t.deepEqual(out, [
    '<6>ready vm=db2 component=guard',
    '<7>shown vm=db1 n=1',
    '<7>also shown vm=web1',
    '<4>careful vm=db1',
  ]);
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

test('C1 controls and U+2028/2029 are escaped in values and messages, in every format', async (t) => {
  const hostile = 'a\u001b[2J\u009b31m\u0085b\u2028c\u2029d';
  const shown = 'a\\u001b[2J\\u009b31m\\u0085b\\u2028c\\u2029d';
  const raw = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
  for (const format of ['journal', 'text', 'json'] as const) {
    const { log, out } = capture(format);
    log.info(`peer said ${hostile}`, { vm: hostile });
    await tick();
    t.is(out.length, 1, format);
    t.false(raw.test(out[0]), `${format}: ${JSON.stringify(out[0])}`);
    if (format === 'json') {
      t.like(JSON.parse(out[0]), { message: `peer said ${hostile}`, vm: hostile });
    } else {
      t.true(out[0].endsWith(`peer said ${shown} vm="${shown}"`), `${format}: ${out[0]}`);
    }
  }
  t.is(safeValue('x\u0085y'), '"x\\u0085y"');
  t.is(safeValue('web\u2028'), '"web\\u2028"');
});
