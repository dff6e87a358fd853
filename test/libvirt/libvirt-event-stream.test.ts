/**
 * LibvirtEventStream's policy with injected timers and a scripted process in place of virsh: lines
 * split across reads, restarts with backoff (and its reset once a virsh ran long), onUp after the
 * settle time, the bound on a line, a handler that throws, and stop() killing virsh. Then the real
 * spawn path on a script standing in for virsh: lines read as printed, a missing binary named, and
 * the process really gone after stop().
 */
import test from 'ava';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  LibvirtEventStream,
  spawnVirshStream,
  type EventStreamOptions,
} from '../../agent/libvirt/libvirt-event-stream';
import type { LibvirtDomainEvent } from '../../agent/libvirt/libvirt-events';
import { fakeSpawn, type FakeVirshEvents } from '../helpers/fake-virsh-events';
import { ManualTimers } from '../helpers/manual-timers';
import { tempDir } from '../helpers/tmp';

const TS = '2026-12-07 03:54:16.136+0000';
const tick = () => new Promise((r) => setImmediate(r));

interface Run {
  stream: LibvirtEventStream;
  timers: ManualTimers;
  spawned: FakeVirshEvents[];
  events: LibvirtDomainEvent[];
  log: string[];
}

function run(over: Partial<EventStreamOptions> = {}): Run {
  const timers = new ManualTimers();
  const { spawn, spawned } = fakeSpawn();
  const events: LibvirtDomainEvent[] = [];
  const log: string[] = [];
  const stream = new LibvirtEventStream({
    uri: 'qemu:///system',
    virsh: () => '/usr/bin/virsh',
    timers,
    random: () => 1,
    spawn,
    onEvent: (e) => events.push(e),
    onUnreadable: (why) => log.push(`unreadable: ${why}`),
    onUp: (first) => log.push(`up first=${first}`),
    onDown: (reason, retryMs) => log.push(`down ${retryMs}: ${reason}`),
    ...over,
  });
  return { stream, timers, spawned, events, log };
}

test('virsh event --all --loop --timestamp on the configured URI; lines split across reads are whole again', async (t) => {
  const { stream, timers, spawned, events, log } = run();
  stream.start();
  t.deepEqual(spawned[0].args, [
    '/usr/bin/virsh',
    '--connect=qemu:///system',
    'event',
    '--all',
    '--loop',
    '--timestamp',
  ]);
  spawned[0].stdout.write(`${TS}: event 'lifecycle' for domain 'web1': Started Boo`);
  spawned[0].stdout.write(`ted\n${TS}: event 'device-added' for domain 'web1': dimm0\n`);
  spawned[0].stdout.write(`${TS}: event 'memory-device-size-change' for domain 'db':\nalias: vm0\nsize: 1024\n`);
  spawned[0].stdout.write(`${TS}: event 'lifecycle' for domain 'x': Exploded\n`);
  await tick();
  t.deepEqual(
    events.map((e) => `${e.domain} ${e.type} ${e.change}`),
    ['web1 lifecycle started', 'web1 device-added changed', 'db memory-device-size-change changed'],
  );
  t.deepEqual(log, ["unreadable: a 'lifecycle' event virsh printed unreadably"]);
  t.deepEqual(timers.delays(), [1000]);
  timers.fireDelay(1000);
  t.deepEqual(log.slice(1), ['up first=true']);
  const stopped = stream.stop();
  t.deepEqual(spawned[0].signals, ['SIGTERM']);
  await spawned[0].end('killed by SIGTERM');
  await stopped;
  t.deepEqual(timers.delays(), []);
  t.is(spawned.length, 1);
});

test('virsh ending is retried with backoff, doubling while it fails at once, from the start again after a long run', async (t) => {
  const { stream, timers, spawned, log } = run();
  stream.start();
  timers.advance(60_000);
  spawned[0].stderr.write(
    'error: Disconnected from qemu:///system due to end of file\nerror: internal error: client socket is closed\n',
  );
  await spawned[0].end();
  t.deepEqual(log, ['down 500: Disconnected from qemu:///system due to end of file']);
  timers.fireDelay(500);
  t.is(spawned.length, 2);
  spawned[1].stderr.write(
    "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n",
  );
  await spawned[1].end();
  t.is(
    log[1],
    "down 1000: failed to connect to the hypervisor: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
  );
  timers.fireDelay(1000);
  await spawned[2].end('exited with code 1');
  t.is(log[2], 'down 2000: exited with code 1');
  timers.fireDelay(2000);
  // The fourth stays: after the settle time it counts as listening, and events were lost meanwhile.
  timers.fireDelay(1000);
  t.is(log[3], 'up first=false');
  // It ends after a short run: the backoff goes on; after a long one it starts over.
  await spawned[3].end();
  t.is(log[4], 'down 4000: exited with code 1');
  timers.fireDelay(4000);
  timers.fireDelay(1000);
  timers.advance(30_000);
  await spawned[4].end();
  t.deepEqual(log.slice(5), ['up first=false', 'down 500: exited with code 1']);
  await stream.stop();
  t.deepEqual(timers.delays(), []);
});

test('jitter shortens a delay by at most a fifth', async (t) => {
  const { stream, spawned, log } = run({ random: () => 0 });
  stream.start();
  await spawned[0].end();
  t.is(log[0], 'down 400: exited with code 1');
  await stream.stop();
});

test('a line past the bound ends that virsh and asks for every domain to be read again', async (t) => {
  const { stream, timers, spawned, events, log } = run({ maxLineBytes: 64 });
  stream.start();
  spawned[0].stdout.write(`event 'device-added' for domain 'a': dimm0\n${'x'.repeat(100)}`);
  spawned[0].stdout.write(`\nevent 'device-added' for domain 'b': dimm0\n`);
  await tick();
  t.deepEqual(
    events.map((e) => e.domain),
    ['a'],
  );
  t.deepEqual(spawned[0].signals, ['SIGTERM']);
  t.deepEqual(log, ['unreadable: the event stream broke off']);
  await spawned[0].end('killed by SIGTERM');
  t.deepEqual(log.slice(1), ['down 500: a message exceeded the 64-byte line limit']);
  timers.fireDelay(500);
  t.is(spawned.length, 2);
  const stopped = stream.stop();
  await spawned[1].end('killed by SIGTERM');
  await stopped;
});

test('a handler that throws ends that virsh, never the process', async (t) => {
  const { stream, spawned, log } = run({
    onEvent: () => {
      throw new Error('handler broke');
    },
  });
  stream.start();
  spawned[0].stdout.write(`event 'device-added' for domain 'a': dimm0\n`);
  await tick();
  t.deepEqual(spawned[0].signals, ['SIGTERM']);
  await spawned[0].end('killed by SIGTERM');
  t.deepEqual(log, ['unreadable: the event stream broke off', 'down 500: handler broke']);
  await stream.stop();
});

test('stop(): SIGTERM, SIGKILL after the grace when virsh stays; no restart; a second stop is harmless', async (t) => {
  const { stream, timers, spawned, log } = run();
  stream.start();
  const stopped = stream.stop();
  t.deepEqual(spawned[0].signals, ['SIGTERM']);
  timers.fireDelay(2000);
  t.deepEqual(spawned[0].signals, ['SIGTERM', 'SIGKILL']);
  let done = false;
  void stopped.then(() => (done = true));
  await tick();
  t.false(done);
  await spawned[0].end('killed by SIGKILL');
  await stopped;
  t.deepEqual(log, []);
  t.deepEqual(timers.delays(), []);
  await stream.stop();
  stream.start();
  t.is(spawned.length, 1);
});

test('stop() while waiting to retry cancels the retry', async (t) => {
  const { stream, timers, spawned } = run();
  stream.start();
  await spawned[0].end();
  t.deepEqual(timers.delays(), [500]);
  await stream.stop();
  t.deepEqual(timers.delays(), []);
});

// ---- the real spawn path ------------------------------------------------------------------------

function script(dir: string, body: string): string {
  const path = join(dir, 'virsh');
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, check: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a real process: its arguments, its lines as printed, its error line when it exits, and stop() kills it', async (t) => {
  const dir = tempDir('physbits-virsh-event-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pidFile = join(dir, 'pid');
  const virsh = script(
    dir,
    `echo $$ > ${pidFile}\nprintf "%s\\n" "${TS}: event 'device-added' for domain 'web 1': dimm0"\nexec sleep 60`,
  );
  const downs: string[] = [];
  const events: string[] = [];
  const timers = new ManualTimers();
  const opts: EventStreamOptions = {
    uri: 'qemu:///system',
    virsh: () => virsh,
    timers,
    onEvent: (e) => events.push(`${e.domain}/${e.detail}`),
    onUnreadable: () => undefined,
    onUp: () => undefined,
    onDown: (reason) => downs.push(reason),
  };
  const stream = new LibvirtEventStream(opts);
  stream.start();
  await until('the event', () => events.length > 0);
  t.deepEqual(events, ['web 1/dimm0']);
  const pid = Number(readFileSync(pidFile, 'utf8'));
  t.true(alive(pid));
  await stream.stop();
  await until('virsh gone', () => !alive(pid));
  t.deepEqual(downs, []);
  t.false(stream.running);
});

test('a real process that fails: the reason is its error line, or the missing binary', async (t) => {
  const dir = tempDir('physbits-virsh-event-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const failing = script(dir, 'echo "error: failed to connect to the hypervisor" >&2\nexit 1');
  for (const [virsh, expected] of [
    [failing, 'failed to connect to the hypervisor'],
    [join(dir, 'absent'), `${join(dir, 'absent')}: not found (install libvirt-clients or set discovery.virsh)`],
  ]) {
    const downs: string[] = [];
    const stream = new LibvirtEventStream({
      uri: 'qemu:///system',
      virsh: () => virsh,
      timers: new ManualTimers(),
      spawn: spawnVirshStream,
      onEvent: () => undefined,
      onUnreadable: () => undefined,
      onUp: () => undefined,
      onDown: (reason) => downs.push(reason),
    });
    stream.start();
    await until('the end', () => downs.length > 0);
    t.deepEqual(downs, [expected]);
    await stream.stop();
  }
});
