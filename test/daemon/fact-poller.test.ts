/**
 * FactPoller: reads on its schedule and on demand; a read that ends after a later read has reported
 * is stale and dropped (a libvirt event's read can overtake a scheduled one started before the change).
 */
import test from 'ava';
import type { GuestFacts } from '../../agent/core/types';
import { FactPoller } from '../../agent/daemon/fact-poller';
import { guestFacts } from '../helpers/facts';
import { ManualTimers } from '../helpers/manual-timers';

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test('a read that ends after a later one reported is dropped; the schedule goes on', async (t) => {
  const reads: Array<ReturnType<typeof deferred<GuestFacts>>> = [];
  const reported: string[] = [];
  const timers = new ManualTimers();
  const poller = new FactPoller({
    readFacts: () => {
      const d = deferred<GuestFacts>();
      reads.push(d);
      return d.promise;
    },
    intervalMs: () => 600_000,
    timers,
    report: {
      read: (g) => reported.push(`read ${g.physBits}`),
      failed: (e) => reported.push(`failed ${(e as Error).message}`),
      event: () => undefined,
    },
  });
  poller.start();
  const refreshed = poller.refresh();
  reads[1].resolve(guestFacts({ physBits: 41 }));
  await refreshed;
  reads[0].resolve(guestFacts({ physBits: 40 }));
  await new Promise((r) => setImmediate(r));
  t.deepEqual(reported, ['read 41']);
  t.deepEqual(timers.delays(), [600_000]);
  // The same for a failure that ends late.
  const again = poller.refresh();
  timers.fire();
  reads[3].resolve(guestFacts({ physBits: 42 }));
  reads[2].reject(new Error('late'));
  await again;
  await new Promise((r) => setImmediate(r));
  t.deepEqual(reported, ['read 41', 'read 42']);
  await poller.stop();
});
