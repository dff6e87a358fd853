/**
 * slottedTimers over a hand-driven clock: callbacks due in one slot share one timer of the base,
 * none runs later than asked or more than a slot early, and clearing the last callback of a slot
 * clears its timer.
 */
import test from 'ava';
import { slottedTimers, type Timers } from '../../agent/core/timers';

/** A clock moved by hand; advance() runs the timers that fall due, in order. */
class HandClock implements Timers {
  time = 0;
  private seq = 0;
  readonly waiting = new Map<number, { at: number; fn: () => void }>();
  now(): number {
    return this.time;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.waiting.set(id, { at: this.time + ms, fn });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.waiting.delete(handle as number);
  }
  advance(to: number): void {
    for (;;) {
      const next = [...this.waiting.entries()].filter(([, t]) => t.at <= to).sort((a, b) => a[1].at - b[1].at)[0];
      if (!next) break;
      this.waiting.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = to;
  }
}

test('callbacks due in the same slot run together from one timer, at the start of the slot', (t) => {
  const clock = new HandClock();
  const slotted = slottedTimers(clock, () => 1000);
  const ran: Array<[string, number]> = [];
  clock.time = 120;
  slotted.setTimeout(() => ran.push(['a', clock.time]), 5000); // due 5120 → slot 5000
  clock.time = 480;
  slotted.setTimeout(() => ran.push(['b', clock.time]), 5000); // due 5480 → slot 5000
  slotted.setTimeout(() => ran.push(['c', clock.time]), 5600); // due 6080 → slot 6000
  t.is(clock.waiting.size, 2, 'one base timer per slot');
  clock.advance(10000);
  t.deepEqual(ran, [
    ['a', 5000],
    ['b', 5000],
    ['c', 6000],
  ]);
});

test('never later than asked, at most one slot early', (t) => {
  const slot = 700;
  for (const [start, ms] of [
    [0, 700],
    [1, 700],
    [699, 700],
    [12345, 5000],
    [999, 1401],
  ]) {
    const clock = new HandClock();
    const slotted = slottedTimers(clock, () => slot);
    clock.time = start;
    let ranAt = -1;
    slotted.setTimeout(() => (ranAt = clock.time), ms);
    clock.advance(start + ms + slot);
    t.true(ranAt > start, `asked at ${start} for ${ms} ms: ran at ${ranAt}, after it was asked`);
    t.true(ranAt <= start + ms && ranAt > start + ms - slot, `asked at ${start} for ${ms} ms: ran at ${ranAt}`);
  }
});

test('a delay shorter than a slot is kept as asked', (t) => {
  const clock = new HandClock();
  const slotted = slottedTimers(clock, () => 1000);
  clock.time = 1999;
  let ranAt = -1;
  slotted.setTimeout(() => (ranAt = clock.time), 300);
  clock.advance(5000);
  t.is(ranAt, 2299);
});

test('clearing one callback leaves the others of its slot; clearing the last clears the timer', (t) => {
  const clock = new HandClock();
  const slotted = slottedTimers(clock, () => 1000);
  const ran: string[] = [];
  const a = slotted.setTimeout(() => ran.push('a'), 1500);
  const b = slotted.setTimeout(() => ran.push('b'), 1500);
  slotted.clearTimeout(a);
  t.is(clock.waiting.size, 1);
  slotted.clearTimeout(b);
  t.is(clock.waiting.size, 0, 'the slot has no callback left, so no timer');
  slotted.clearTimeout(b);
  slotted.clearTimeout(null);
  const c = slotted.setTimeout(() => ran.push('c'), 1500);
  clock.advance(3000);
  slotted.clearTimeout(c);
  t.deepEqual(ran, ['c']);
});

test('a callback may set the next one and clear another of its own slot', (t) => {
  const clock = new HandClock();
  const slotted = slottedTimers(clock, () => 1000);
  const ran: Array<[string, number]> = [];
  let second: unknown = null;
  const beat = (): void => {
    ran.push(['beat', clock.time]);
    if (clock.time < 3000) slotted.setTimeout(beat, 1000);
    slotted.clearTimeout(second);
  };
  slotted.setTimeout(beat, 1000);
  second = slotted.setTimeout(() => ran.push(['second', clock.time]), 1000);
  clock.advance(10000);
  t.deepEqual(ran, [
    ['beat', 1000],
    ['beat', 2000],
    ['beat', 3000],
  ]);
  t.is(clock.waiting.size, 0);
});

test('the slot width is read at each call (a reloaded qmp.heartbeatMs)', (t) => {
  const clock = new HandClock();
  let width = 1000;
  const slotted = slottedTimers(clock, () => width);
  const ran: number[] = [];
  clock.time = 100;
  slotted.setTimeout(() => ran.push(clock.time), 1000);
  width = 500;
  slotted.setTimeout(() => ran.push(clock.time), 1000);
  clock.advance(5000);
  t.deepEqual(ran, [1000, 1000]);
  t.is(slotted.now(), 5000);
});

test('a base timer that fires before its slot on the clock does not run a callback twice in that slot', (t) => {
  const clock = new HandClock();
  const slotted = slottedTimers(clock, () => 1000);
  const ran: number[] = [];
  // The base runs the slot at 999: its clock lags the slot by a millisecond.
  const early: Timers = {
    now: () => clock.now(),
    setTimeout: (fn, ms) => clock.setTimeout(fn, Math.max(0, ms - 1)),
    clearTimeout: (h) => clock.clearTimeout(h),
  };
  const lagging = slottedTimers(early, () => 1000);
  const beat = (): void => {
    ran.push(clock.time);
    if (ran.length < 4) lagging.setTimeout(beat, 1000);
  };
  lagging.setTimeout(beat, 1000);
  clock.advance(10000);
  t.deepEqual(ran, [999, 1999, 2999, 3999], 'once per slot, each a slot after the last');
  t.is(slotted.now(), 10000);
});
