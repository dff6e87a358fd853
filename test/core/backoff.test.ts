import test from 'ava';
import { backoffDelay, DEFAULT_BACKOFF } from '../../agent/core/backoff';

/** Alert delivery's policy: equal jitter. */
const policy = { baseMs: 1000, maxMs: 300_000, jitter: 0.5 };

test('delays double from the base and stop at the cap (full step)', (t) => {
  const full = () => 1;
  t.deepEqual(
    [0, 1, 2, 3, 8, 9, 50].map((a) => backoffDelay(a, policy, full)),
    [1000, 2000, 4000, 8000, 256_000, 300_000, 300_000],
  );
});

test('jitter keeps at least half of each step', (t) => {
  const none = () => 0;
  t.deepEqual(
    [0, 1, 9].map((a) => backoffDelay(a, policy, none)),
    [500, 1000, 150_000],
  );
  t.is(
    backoffDelay(2, policy, () => 0.5),
    3000,
  );
});

test('negative or fractional attempts and odd random values stay in range', (t) => {
  t.is(
    backoffDelay(-3, policy, () => 1),
    1000,
  );
  t.is(
    backoffDelay(1.9, policy, () => 1),
    2000,
  );
  t.is(
    backoffDelay(0, policy, () => 7),
    1000,
  );
  t.is(
    backoffDelay(0, { baseMs: 1000, maxMs: 400, jitter: 0.5 }, () => 1),
    400,
  );
});

test('the jitter is a parameter: none gives the exact step, the reconnect default takes up to a fifth off', (t) => {
  const exact = { baseMs: 100, maxMs: 400, jitter: 0 };
  t.deepEqual(
    [0, 1, 2, 3].map((a) => backoffDelay(a, exact, () => 0)),
    [100, 200, 400, 400],
  );
  t.is(
    backoffDelay(0, DEFAULT_BACKOFF, () => 1),
    250,
  );
  t.is(
    backoffDelay(0, DEFAULT_BACKOFF, () => 0),
    200,
  );
  t.is(
    backoffDelay(30, DEFAULT_BACKOFF, () => 1),
    30000,
  );
});
