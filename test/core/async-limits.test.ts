/** ConcurrencyGate: at most `limit()` tasks at once, the rest in order, a failing task frees its turn. */
import test from 'ava';
import { ConcurrencyGate } from '../../agent/core/async-limits';

/** A promise settled by hand. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

const settle = () => new Promise((r) => setImmediate(r));

test('at most limit() tasks run at once; the others start in order as turns free up', async (t) => {
  const gate = new ConcurrencyGate(() => 2);
  const started: number[] = [];
  const tasks = [0, 1, 2, 3, 4].map(() => deferred<number>());
  const results = tasks.map((d, i) =>
    gate.run(() => {
      started.push(i);
      return d.promise;
    }),
  );
  await settle();
  t.deepEqual(started, [0, 1]);
  t.deepEqual(gate.counts, { running: 2, waiting: 3 });
  tasks[1].resolve(11);
  await settle();
  t.deepEqual(started, [0, 1, 2]);
  tasks[0].resolve(10);
  tasks[2].resolve(12);
  await settle();
  t.deepEqual(started, [0, 1, 2, 3, 4]);
  t.deepEqual(gate.counts, { running: 2, waiting: 0 });
  tasks[3].resolve(13);
  tasks[4].resolve(14);
  t.deepEqual(await Promise.all(results), [10, 11, 12, 13, 14]);
  t.deepEqual(gate.counts, { running: 0, waiting: 0 });
});

test('a task that fails gives its turn to the next and its caller gets the error', async (t) => {
  const gate = new ConcurrencyGate(() => 1);
  const first = deferred();
  const a = gate.run(() => first.promise);
  let secondRan = false;
  const b = gate.run(async () => {
    secondRan = true;
    return 'b';
  });
  await settle();
  t.false(secondRan);
  first.reject(new Error('unreadable VM'));
  await t.throwsAsync(a, { message: 'unreadable VM' });
  t.is(await b, 'b');
  t.deepEqual(gate.counts, { running: 0, waiting: 0 });
});

test('a task that throws before returning a promise frees its turn too', async (t) => {
  const gate = new ConcurrencyGate(() => 1);
  await t.throwsAsync(
    gate.run(() => {
      throw new Error('bad');
    }),
    { message: 'bad' },
  );
  t.is(await gate.run(async () => 7), 7);
  t.deepEqual(gate.counts, { running: 0, waiting: 0 });
});

test('the limit is read at each start (a reloaded qmp.concurrency); below 1 it is 1', async (t) => {
  let limit = 0;
  const gate = new ConcurrencyGate(() => limit);
  const held = [deferred(), deferred(), deferred()];
  const runs = held.map((d) => gate.run(() => d.promise));
  await settle();
  t.deepEqual(gate.counts, { running: 1, waiting: 2 });
  limit = 3;
  t.is(await gate.run(async () => 'extra'), 'extra', 'a raised limit admits a new task at once');
  await settle();
  t.deepEqual(gate.counts, { running: 2, waiting: 1 }, 'its turn then went to the first one waiting');
  for (const d of held) d.resolve();
  await Promise.all(runs);
  t.deepEqual(gate.counts, { running: 0, waiting: 0 });
});
