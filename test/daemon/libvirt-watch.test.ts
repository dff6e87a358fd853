/**
 * LibvirtWatch between libvirt's events and the daemon's VMs: a scripted virsh lists the domains
 * (a file the test rewrites), a scripted event process prints what libvirt would, timers are fired
 * by hand. Shows what each event leads to: one read per domain for a burst, a listing for a start
 * or a stop, a new supervisor for a domain of the same name and another UUID, and every domain read
 * again after an unreadable event or a lost stream.
 */
import test from 'ava';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../agent/core/config';
import type { Logger } from '../../agent/core/logger';
import { COALESCE_MS, LibvirtWatch, type SupervisedVms } from '../../agent/daemon/libvirt-watch';
import { fakeSpawn, type FakeVirshEvents } from '../helpers/fake-virsh-events';
import { ManualTimers } from '../helpers/manual-timers';
import { tempDir } from '../helpers/tmp';

const TS = '2026-12-07 03:54:16.136+0000';
const UUID = (n: number) => `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };

interface World {
  watch: LibvirtWatch;
  timers: ManualTimers;
  events: FakeVirshEvents[];
  /** What happened to the daemon's VMs, in order. */
  log: string[];
  vms: Set<string>;
  list(domains: Array<[number, string]>): void;
  listings(): number;
}

function world(t: { teardown(fn: () => void | Promise<void>): void }): World {
  const dir = tempDir('physbits-libvirt-watch-');
  const virsh = join(dir, 'virsh');
  writeFileSync(virsh, `#!/bin/sh\necho "$*" >> ${dir}/calls\ncat ${dir}/list\n`);
  chmodSync(virsh, 0o755);
  writeFileSync(join(dir, 'calls'), '');
  const config = parseConfig({ discovery: { libvirt: 'qemu:///system', libvirtPollSeconds: 600, virsh } });
  const timers = new ManualTimers();
  const { spawn, spawned } = fakeSpawn();
  const log: string[] = [];
  const vms = new Set<string>();
  const supervised: SupervisedVms = {
    keys: () => vms.keys(),
    has: (key) => vms.has(key),
    add: (key) => {
      vms.add(key);
      log.push(`add ${key}`);
    },
    remove: (key) => {
      vms.delete(key);
      log.push(`remove ${key}`);
      return Promise.resolve();
    },
    refresh: (key) => {
      log.push(`read ${key}`);
      return Promise.resolve();
    },
  };
  const watch = new LibvirtWatch({ config: () => config, logger: quiet, timers, vms: supervised, spawn });
  t.teardown(async () => {
    const stopping = watch.stop();
    for (const child of spawned) await child.end('killed by SIGTERM');
    await stopping;
    rmSync(dir, { recursive: true, force: true });
  });
  return {
    watch,
    timers,
    events: spawned,
    log,
    vms,
    list: (domains) => writeFileSync(join(dir, 'list'), domains.map(([n, name]) => `${UUID(n)} ${name}\n`).join('')),
    listings: () => readFileSync(join(dir, 'calls'), 'utf8').split('\n').filter(Boolean).length,
  };
}

async function until(what: string, check: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Starts the watch on domains a and b, and waits for both. */
async function started(t: { teardown(fn: () => void | Promise<void>): void }): Promise<World> {
  const w = world(t);
  w.list([
    [1, 'a'],
    [2, 'b'],
  ]);
  w.watch.start();
  await until('a and b', () => w.vms.size === 2);
  w.log.length = 0;
  return w;
}

/** Fires the coalescing timer and waits until the log has `n` entries (and a moment more). */
async function flush(w: World, n: number): Promise<void> {
  w.timers.fireDelay(COALESCE_MS);
  await until(`${n} entries in ${JSON.stringify(w.log)}`, () => w.log.length >= n);
  await new Promise((r) => setTimeout(r, 50));
}

test('a burst of device and lifecycle events is one read per domain, with no listing', async (t) => {
  const w = await started(t);
  const listings = w.listings();
  await w.events[0].print(
    ...Array.from({ length: 50 }, (_, i) => `${TS}: event 'device-added' for domain 'a': dimm${i}`),
    `${TS}: event 'lifecycle' for domain 'a': Resumed Unpaused`,
    `${TS}: event 'memory-device-size-change' for domain 'b':`,
    'alias: virtiomem0',
    'size: 1048576',
    `${TS}: event 'rtc-change' for domain 'b': 0`,
  );
  t.deepEqual(w.timers.delays(), [COALESCE_MS, 1000, 600_000]);
  await flush(w, 2);
  t.deepEqual(w.log, ['read libvirt:a', 'read libvirt:b']);
  t.is(w.listings(), listings);
});

test('a domain started is listed and added (its first read is its own); one stopped is removed', async (t) => {
  const w = await started(t);
  w.list([
    [1, 'a'],
    [3, 'c'],
  ]);
  await w.events[0].print(
    `${TS}: event 'lifecycle' for domain 'c': Started Booted`,
    `${TS}: event 'lifecycle' for domain 'b': Stopped Destroyed`,
  );
  await flush(w, 2);
  t.deepEqual(w.log, ['remove libvirt:b', 'add libvirt:c']);
});

test('a domain of the same name with another UUID is another domain: removed and added', async (t) => {
  const w = await started(t);
  w.list([
    [1, 'a'],
    [9, 'b'],
  ]);
  await w.events[0].print(
    `${TS}: event 'lifecycle' for domain 'b': Stopped Destroyed`,
    `${TS}: event 'lifecycle' for domain 'b': Started Booted`,
  );
  await flush(w, 2);
  t.deepEqual(w.log, ['remove libvirt:b', 'add libvirt:b']);
});

test('a domain restarted with the same UUID is read again', async (t) => {
  const w = await started(t);
  await w.events[0].print(
    `${TS}: event 'lifecycle' for domain 'a': Stopped Destroyed`,
    `${TS}: event 'lifecycle' for domain 'a': Started Booted`,
  );
  await flush(w, 1);
  t.deepEqual(w.log, ['read libvirt:a']);
});

test('an event for a domain not supervised yet lists the domains', async (t) => {
  const w = await started(t);
  w.list([
    [1, 'a'],
    [2, 'b'],
    [4, 'd'],
  ]);
  await w.events[0].print(`${TS}: event 'device-added' for domain 'd': dimm0`);
  await flush(w, 1);
  t.deepEqual(w.log, ['add libvirt:d']);
});

test('an unreadable event reads every domain', async (t) => {
  const w = await started(t);
  const listings = w.listings();
  await w.events[0].print(`${TS}: event 'lifecycle' for domain 'a': Started`);
  await flush(w, 2);
  t.deepEqual(w.log.sort(), ['read libvirt:a', 'read libvirt:b']);
  t.is(w.listings(), listings + 1);
});

test('after the stream was lost and is back, every domain is listed and read again', async (t) => {
  const w = await started(t);
  w.timers.fireDelay(1000);
  await w.events[0].end();
  w.list([
    [1, 'a'],
    [2, 'b'],
    [5, 'e'],
  ]);
  // The restart after its backoff (jittered: the earliest timer).
  w.timers.fire();
  t.is(w.events.length, 2);
  w.timers.fireDelay(1000);
  await flush(w, 3);
  // e is new: it is added (and read by its own start). Whether the re-read of every domain listed
  // also reads it depends on whether its add landed before that list was taken: both are right.
  const log = w.log.filter((l) => l !== 'read libvirt:e').sort();
  t.deepEqual(log, ['add libvirt:e', 'read libvirt:a', 'read libvirt:b']);
  t.true(w.log.filter((l) => l === 'read libvirt:e').length <= 1, JSON.stringify(w.log));
});

test('events arriving while a batch is applied make one more batch', async (t) => {
  const w = await started(t);
  await w.events[0].print(`${TS}: event 'device-added' for domain 'a': dimm0`);
  w.timers.fireDelay(COALESCE_MS);
  await w.events[0].print(
    `${TS}: event 'device-added' for domain 'b': dimm0`,
    `${TS}: event 'device-added' for domain 'b': dimm1`,
  );
  await until('the first read', () => w.log.length >= 1);
  await until('the next batch', () => w.timers.delays().includes(COALESCE_MS));
  await flush(w, 2);
  t.deepEqual(w.log, ['read libvirt:a', 'read libvirt:b']);
});

test('stop() kills the event process and nothing runs after it', async (t) => {
  const w = await started(t);
  const stopping = w.watch.stop();
  t.deepEqual(w.events[0].signals, ['SIGTERM']);
  await w.events[0].end('killed by SIGTERM');
  await stopping;
  t.deepEqual(w.timers.delays(), []);
});
