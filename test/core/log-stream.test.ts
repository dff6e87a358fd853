import test from 'ava';
import { spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { LogStream } from '../../agent/core/log-stream';

const tick = () => new Promise((r) => setImmediate(r));

test('a full stream holds at most maxQueuedBytes; the rest is counted, and told once when it drains', async (t) => {
  const target = new PassThrough({ highWaterMark: 1024 });
  const recovered: number[] = [];
  const stream = new LogStream(target, { maxQueuedBytes: 4096, onRecovered: (n) => recovered.push(n) });
  const line = `${'x'.repeat(99)}\n`;
  for (let i = 0; i < 1000; i++) stream.write(line);
  await tick();
  t.true(target.writableLength < 4096 + 100, `${target.writableLength} bytes queued`);
  const dropped = stream.dropped();
  t.true(dropped > 900, `${dropped} dropped`);
  t.is(stream.failure(), null);
  t.deepEqual(recovered, []);
  let received = 0;
  target.on('data', (d: Buffer) => (received += d.length));
  await new Promise((r) => target.once('drain', r));
  await tick();
  t.is(received / line.length + dropped, 1000, 'every line either reached the stream or was counted');
  t.deepEqual(recovered, [dropped]);
  stream.write(line);
  await tick();
  t.is(stream.dropped(), dropped, 'lines are written again once it drained');
});

test('a failed stream is never written again; the failure is told once and never thrown', async (t) => {
  const target = new PassThrough();
  const failures: string[] = [];
  const stream = new LogStream(target, { onFailure: (r) => failures.push(r) });
  stream.write('first\n');
  const epipe = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
  target.emit('error', epipe);
  target.emit('error', epipe);
  let written = 0;
  target.on('data', () => written++);
  for (let i = 0; i < 100; i++) stream.write('after\n');
  await tick();
  t.deepEqual(failures, ['EPIPE']);
  t.is(stream.failure(), 'EPIPE');
  t.is(stream.dropped(), 100);
  t.is(written, 1, 'only the line before the failure');
});

test('a real process whose stderr reader is gone: logging through the fuse neither throws nor loops', async (t) => {
  // A child logs 2000 lines to a stderr pipe the parent closes at once; it must end normally.
  const script = `
    const { LogStream } = require(${JSON.stringify(require.resolve('../../agent/core/log-stream'))});
    const { createLogger } = require(${JSON.stringify(require.resolve('../../agent/core/logger'))});
    let failed = null;
    const log = createLogger({ format: 'text', stream: new LogStream(process.stderr, { onFailure: (r) => (failed = r) }) });
    process.on('uncaughtException', (e) => { process.stdout.write('uncaught ' + e.message + '\\n'); process.exit(9); });
    let n = 0;
    const timer = setInterval(() => {
      for (let i = 0; i < 100; i++) log.info('line', { n: n++ });
      if (n >= 2000) { clearInterval(timer); process.stdout.write('failed=' + failed + '\\n'); }
    }, 5);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  child.stderr.destroy();
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  t.is(code, 0, out);
  t.is(out, 'failed=EPIPE\n');
});
