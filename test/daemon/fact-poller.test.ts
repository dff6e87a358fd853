import test from 'ava';
import type { Timers } from '../../agent/core/timers';
import type { GuestFacts } from '../../agent/core/types';
import { FactPoller } from '../../agent/daemon/fact-poller';
import { guestFacts } from '../helpers/facts';

/** Timers the test fires by hand: each pending callback with the delay it asked for. */
function manualTimers() {
  const pending = new Map<number, { fn: () => void; ms: number }>();
  let next = 0;
  const timers: Timers = {
    now: () => 0,
    setTimeout: (fn, ms) => {
      pending.set(++next, { fn, ms });
      return next;
    },
    clearTimeout: (handle) => void pending.delete(handle as number),
  };
  return {
    timers,
    delays: () => [...pending.values()].map((p) => p.ms),
    fire: () => {
      const entries = [...pending.entries()];
      pending.clear();
      for (const [, p] of entries) p.fn();
    },
  };
}

/** A read the test settles: each call of readFacts adds one. */
function reads() {
  const calls: { resolve: (g: GuestFacts) => void; reject: (e: Error) => void }[] = [];
  const readFacts = () =>
    new Promise<GuestFacts>((resolve, reject) => {
      calls.push({ resolve, reject });
    });
  return { calls, readFacts };
}

const settle = () => new Promise((r) => setImmediate(r));

function poller(interval = 30_000) {
  const clock = manualTimers();
  const r = reads();
  const log: string[] = [];
  const p = new FactPoller({
    readFacts: r.readFacts,
    intervalMs: () => interval,
    timers: clock.timers,
    report: {
      read: (g) => log.push(`read ${g.name}`),
      failed: (e) => log.push(`failed ${(e as Error).message}`),
      event: () => log.push('event'),
    },
  });
  return { p, clock, r, log };
}

test('reads at start, then again after intervalMs', async (t) => {
  const { p, clock, r, log } = poller(30_000);
  p.start();
  t.is(r.calls.length, 1);
  r.calls[0].resolve(guestFacts({ name: 'web1' }));
  await settle();
  t.deepEqual(log, ['read web1']);
  t.deepEqual(clock.delays(), [30_000]);
  clock.fire();
  t.is(r.calls.length, 2);
  r.calls[1].reject(new Error('gone'));
  await settle();
  t.deepEqual(log, ['read web1', 'failed gone']);
  t.deepEqual(clock.delays(), [30_000]);
});

test('a read that ends after a later one was reported is dropped', async (t) => {
  const { p, r, log } = poller();
  p.start();
  const refreshed = p.refresh();
  t.is(r.calls.length, 2);
  r.calls[1].resolve(guestFacts({ name: 'new' }));
  await refreshed;
  r.calls[0].resolve(guestFacts({ name: 'old' }));
  await settle();
  t.deepEqual(log, ['read new']);
});

test('kick reads at once only after a failed read', async (t) => {
  const { p, clock, r } = poller();
  p.start();
  r.calls[0].resolve(guestFacts());
  await settle();
  p.kick();
  t.is(r.calls.length, 1);
  clock.fire();
  r.calls[1].reject(new Error('unreachable'));
  await settle();
  t.deepEqual(clock.delays(), [30_000]);
  p.kick();
  t.is(r.calls.length, 3);
  t.deepEqual(clock.delays(), []);
});

test('after stop nothing is reported and nothing is scheduled', async (t) => {
  const { p, clock, r, log } = poller();
  p.start();
  await p.stop();
  r.calls[0].resolve(guestFacts());
  await settle();
  t.deepEqual(log, []);
  t.deepEqual(clock.delays(), []);
  t.is(p.upstream(), null);
});
