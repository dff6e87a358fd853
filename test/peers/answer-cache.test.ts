import test from 'ava';
import { AnswerCache } from '../../agent/peers/answer-cache';

function cache(clock: { now: number }, failedSeconds = 2, goodSeconds = 30) {
  return new AnswerCache<string, { ok: boolean; n: number }>({
    clock: () => clock.now,
    goodSeconds,
    failedSeconds,
    failed: (v) => !v.ok,
  });
}

test('a good answer is kept goodSeconds, a failed one failedSeconds, a rejection like a failure', async (t) => {
  const clock = { now: 0 };
  const c = cache(clock);
  let n = 0;
  const ok = () => Promise.resolve({ ok: true, n: ++n });
  const bad = () => Promise.resolve({ ok: false, n: ++n });
  t.is((await c.get('a', ok)).n, 1);
  clock.now = 29_999;
  t.is((await c.get('a', ok)).n, 1);
  clock.now = 30_000;
  t.is((await c.get('a', ok)).n, 2);

  t.is((await c.get('b', bad)).n, 3);
  clock.now += 1_999;
  t.is((await c.get('b', ok)).n, 3, 'the failure is remembered');
  clock.now += 1;
  t.is((await c.get('b', ok)).n, 4, 'asked again after failedSeconds');

  const err = new Error('down');
  await t.throwsAsync(
    c.get('c', () => Promise.reject(err)),
    { is: err },
  );
  await t.throwsAsync(c.get('c', ok), { is: err }, 'the rejection is remembered');
  clock.now += 2_000;
  t.true((await c.get('c', ok)).ok);
});

test('concurrent asks share one; goodSeconds 0 keeps nothing; a failure never outlives a good answer', async (t) => {
  const clock = { now: 0 };
  let n = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const slow = async () => {
    n++;
    await gate;
    return { ok: true, n };
  };
  const c = cache(clock, 2, 0);
  const all = Promise.all([c.get('a', slow), c.get('a', slow), c.get('a', slow)]);
  release();
  t.deepEqual(
    (await all).map((v) => v.n),
    [1, 1, 1],
  );
  await c.get('a', slow);
  t.is(n, 2, 'nothing kept at goodSeconds 0');
  const short = cache(clock, 10, 1);
  await short.get('x', () => Promise.resolve({ ok: false, n: 0 }));
  clock.now += 1_000;
  t.true((await short.get('x', () => Promise.resolve({ ok: true, n: 1 }))).ok);
});

test('at most maxKeys answers are remembered: expired ones go first, then the oldest', async (t) => {
  const clock = { now: 0 };
  const c = new AnswerCache<string, number>({ clock: () => clock.now, goodSeconds: 10, failedSeconds: 2, maxKeys: 2 });
  let n = 0;
  const ask = () => Promise.resolve(++n);
  await c.get('a', ask);
  clock.now = 5000;
  await c.get('b', ask);
  clock.now = 10_000; // a has expired
  await c.get('c', ask);
  t.is(c.peek('a'), undefined);
  t.is(c.peek('b'), 2);
  t.is(c.peek('c'), 3);
  await c.get('d', ask); // nothing expired: the oldest (b) goes
  t.is(c.peek('b'), undefined);
  t.is(c.peek('c'), 3);
  t.is(c.peek('d'), 4);
  t.is(await c.get('c', ask), 3, 'still cached');
});
