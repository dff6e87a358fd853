/**
 * Discovery on real directories: globs expanded to the sockets that exist (never other files),
 * new and vanished sockets reported within a second through the directory watch, a socket
 * re-created at a known path reported as `replaced`, nothing after stop().
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Discovery, socketIdentity, watchDirOf } from '../../agent/daemon/discovery';
import type { Logger } from '../../agent/core/logger';
import { tempDir } from '../helpers/tmp';

const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };

test('watchDirOf: the directory of a glob, when it has no magic of its own', (t) => {
  const table: Array<[string, string | null]> = [
    ['/run/qemu/*.qmp', '/run/qemu'],
    ['/var/lib/libvirt/qemu/domain-*/monitor.sock', null],
    ['/run/qemu-server/{100,101}.qmp', '/run/qemu-server'],
    ['/run/{a,b}/x.qmp', null],
    ['/run/qemu/web1.qmp', '/run/qemu'],
    ['relative/*.qmp', 'relative'],
  ];
  for (const [glob, dir] of table) t.is(watchDirOf(glob), dir, glob);
});

async function listen(path: string): Promise<net.Server> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(path, () => r()));
  return s;
}

function recorder(d: Discovery): Array<[string, string]> {
  const log: Array<[string, string]> = [];
  for (const ev of ['added', 'removed', 'replaced'] as const) d.on(ev, (s) => log.push([ev, s.path]));
  return log;
}

async function until(what: string, fn: () => boolean, ms = 3000): Promise<number> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return Date.now() - start;
}

test('sockets appear, vanish and are replaced within a second; other files are ignored', async (t) => {
  const dir = tempDir('physbits-disc-');
  const servers: net.Server[] = [];
  t.teardown(() => servers.forEach((s) => s.close()));
  servers.push(await listen(join(dir, 'a.qmp')));
  writeFileSync(join(dir, 'notes.qmp'), 'not a socket');
  mkdirSync(join(dir, 'dir.qmp'));
  const d = new Discovery({
    patterns: [{ glob: join(dir, '*.qmp'), mode: 'poll' }],
    schedule: '0 0 1 1 *',
    logger: quiet,
  });
  t.teardown(() => d.stop());
  const log = recorder(d);
  await d.start();
  t.deepEqual(log, [['added', join(dir, 'a.qmp')]]);
  t.deepEqual(d.sockets(), [{ path: join(dir, 'a.qmp'), mode: 'poll', base: dir }]);

  const b = await listen(join(dir, 'b.qmp'));
  const addMs = await until('b added', () => log.length === 2);
  t.deepEqual(log[1], ['added', join(dir, 'b.qmp')]);

  // Re-created at the same path (the old listener gone, a new one bound in the same moment).
  const before = socketIdentity(join(dir, 'b.qmp'));
  b.close();
  const b2 = await listen(join(dir, 'b.qmp'));
  servers.push(b2);
  t.not(socketIdentity(join(dir, 'b.qmp')), before);
  const replaceMs = await until('b replaced', () => log.length === 3);
  t.deepEqual(log[2], ['replaced', join(dir, 'b.qmp')]);

  servers[0].close();
  const removeMs = await until('a removed', () => log.length === 4);
  t.deepEqual(log[3], ['removed', join(dir, 'a.qmp')]);
  t.deepEqual(d.sockets(), [{ path: join(dir, 'b.qmp'), mode: 'poll', base: dir }]);
  t.log(`added after ${addMs} ms, replaced after ${replaceMs} ms, removed after ${removeMs} ms`);
  for (const ms of [addMs, replaceMs, removeMs]) t.true(ms < 1000);

  // A burst of 40 sockets: each reported once.
  for (let i = 0; i < 40; i++) servers.push(await listen(join(dir, `burst${i}.qmp`)));
  await until('the burst', () => log.length === 44);
  t.is(new Set(log.slice(4).map(([, p]) => p)).size, 40);
  t.true(log.slice(4).every(([ev]) => ev === 'added'));

  d.stop();
  servers.push(await listen(join(dir, 'after-stop.qmp')));
  unlinkSync(join(dir, 'notes.qmp'));
  await new Promise((r) => setTimeout(r, 400));
  t.is(log.length, 44);
});

test('a pattern with magic in its directory is found on rescan; the first pattern naming a socket sets its mode', async (t) => {
  const dir = tempDir('physbits-disc-');
  mkdirSync(join(dir, 'domain-1-web'));
  mkdirSync(join(dir, 'domain-2-db'));
  const servers = [await listen(join(dir, 'domain-1-web', 'monitor.sock'))];
  t.teardown(() => servers.forEach((s) => s.close()));
  const d = new Discovery({
    patterns: [
      { glob: join(dir, 'domain-*', 'monitor.sock'), mode: 'hold' },
      { glob: join(dir, '**', '*.sock'), mode: 'poll' },
    ],
    schedule: '0 0 1 1 *',
    logger: quiet,
  });
  t.teardown(() => d.stop());
  const log = recorder(d);
  await d.start();
  servers.push(await listen(join(dir, 'domain-2-db', 'monitor.sock')));
  servers.push(await listen(join(dir, 'domain-2-db', 'other.sock')));
  await d.rescan();
  t.deepEqual(
    d
      .sockets()
      .map((s) => [s.path.slice(dir.length), s.mode])
      .sort(),
    [
      ['/domain-1-web/monitor.sock', 'hold'],
      ['/domain-2-db/monitor.sock', 'hold'],
      ['/domain-2-db/other.sock', 'poll'],
    ],
  );
  t.is(log.length, 3);
});

test('socketIdentity: null for a path that is not there', (t) => {
  t.is(socketIdentity('/nonexistent/physbits/x.qmp'), null);
});

test('a glob directory that does not exist yet is waited for: its first socket is seen within a second', async (t) => {
  const root = tempDir('physbits-disc-late-');
  const dir = join(root, 'run', 'qemu');
  const servers: net.Server[] = [];
  t.teardown(() => servers.forEach((s) => s.close()));
  const d = new Discovery({
    patterns: [{ glob: join(dir, '*.qmp'), mode: 'hold' }],
    schedule: '0 0 1 1 *',
    logger: quiet,
  });
  t.teardown(() => d.stop());
  const log = recorder(d);
  await d.start();
  t.deepEqual(log, []);
  mkdirSync(dir, { recursive: true });
  servers.push(await listen(join(dir, 'late.qmp')));
  const ms = await until('late added', () => log.length === 1);
  t.deepEqual(log, [['added', join(dir, 'late.qmp')]]);
  t.true(ms < 1000, `${ms} ms`);
});

test('a glob directory removed and made again is watched anew', async (t) => {
  const root = tempDir('physbits-disc-again-');
  const dir = join(root, 'vms');
  mkdirSync(dir);
  const servers: net.Server[] = [];
  t.teardown(() => servers.forEach((s) => s.close()));
  const d = new Discovery({
    patterns: [{ glob: join(dir, '*.qmp'), mode: 'hold' }],
    schedule: '0 0 1 1 *',
    logger: quiet,
  });
  t.teardown(() => d.stop());
  const log = recorder(d);
  await d.start();
  const { rmSync } = await import('node:fs');
  rmSync(dir, { recursive: true });
  await new Promise((r) => setTimeout(r, 300));
  mkdirSync(dir);
  await new Promise((r) => setTimeout(r, 300));
  servers.push(await listen(join(dir, 'again.qmp')));
  await until('again added', () => log.length === 1);
  t.deepEqual(log, [['added', join(dir, 'again.qmp')]]);
});

/**
 * Discovery in a child process as uid 65534 (setpriv), so that a directory made 0700 by root cannot
 * be listed: each line on stdin asks for a rescan, each event comes back as a JSON line.
 */
function unprivilegedDiscovery(glob: string) {
  const modulePath = join(__dirname, '..', '..', 'agent', 'daemon', 'discovery.js');
  const script = `
    const { Discovery } = require(${JSON.stringify(modulePath)});
    const quiet = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };
    const d = new Discovery({ patterns: [{ glob: ${JSON.stringify(glob)}, mode: 'hold' }], schedule: '0 0 1 1 *', logger: quiet });
    const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
    for (const ev of ['added', 'removed']) d.on(ev, (s) => say([ev, s.path]));
    d.on('listing', (errors) => say(['listing', errors.length]));
    process.stdin.on('data', () => d.rescan().then(() => say(['pass'])));
    d.start().then(() => say(['pass']));`;
  const child = spawn(
    '/usr/bin/setpriv',
    ['--reuid', '65534', '--regid', '65534', '--clear-groups', '--', process.execPath, '-e', script],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const seen: unknown[][] = [];
  let partial = '';
  child.stdout.on('data', (c: Buffer) => {
    const parts = (partial + c.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) seen.push(JSON.parse(p) as unknown[]);
  });
  const passes = () => seen.filter((e) => e[0] === 'pass').length;
  return {
    seen,
    async pass(): Promise<void> {
      const n = passes();
      child.stdin.write('\n');
      await until('a discovery pass', () => passes() > n, 5000);
    },
    started: () => until('the first pass', () => passes() >= 1, 5000),
    kill: () => child.kill('SIGKILL'),
  };
}

test('a listing error never counts as gone: a socket is removed only once it is shown to be gone', async (t) => {
  const root = tempDir('physbits-disc-err-');
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'web1'), { mode: 0o755 });
  const server = await listen(join(root, 'web1', 'qmp.sock'));
  t.teardown(() => server.close());
  const d = unprivilegedDiscovery(join(root, '*', 'qmp.sock'));
  t.teardown(() => d.kill());
  await d.started();
  const sock = join(root, 'web1', 'qmp.sock');
  t.deepEqual(d.seen.slice(0, 1), [['added', sock]]);
  // uid 65534 can no longer list or stat inside web1 (EACCES): the socket is kept, the error said.
  chmodSync(join(root, 'web1'), 0o700);
  await d.pass();
  t.false(
    d.seen.some((e) => e[0] === 'removed'),
    JSON.stringify(d.seen),
  );
  t.deepEqual(
    d.seen.filter((e) => e[0] === 'listing'),
    [['listing', 2]],
    'the glob and the known socket: EACCES each',
  );
  await d.pass();
  t.is(d.seen.filter((e) => e[0] === 'listing').length, 1, 'the same errors are said once');
  // Readable again and the socket gone: now it is removed, and the listing is clean.
  server.close();
  chmodSync(join(root, 'web1'), 0o755);
  await until('the socket file gone', () => !existsSync(sock), 2000);
  await d.pass();
  t.deepEqual(
    d.seen.filter((e) => e[0] === 'removed'),
    [['removed', sock]],
  );
  t.deepEqual(
    d.seen.filter((e) => e[0] === 'listing'),
    [
      ['listing', 2],
      ['listing', 0],
    ],
  );
});
