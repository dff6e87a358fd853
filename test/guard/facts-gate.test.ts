import test from 'ava';
import { FactsGate } from '../../agent/guard/facts-gate';
import { guestFacts } from '../helpers/guard-facts';

function manualTimers() {
  const due = new Map<number, () => void>();
  let seq = 0;
  return {
    setTimeout(fn: () => void) {
      due.set(++seq, fn);
      return seq;
    },
    clearTimeout(h: unknown) {
      due.delete(h as number);
    },
    fireAll() {
      for (const [id, fn] of [...due]) {
        due.delete(id);
        fn();
      }
    },
    size: () => due.size,
  };
}

test('known facts answer at once', async (t) => {
  const gate = new FactsGate(manualTimers());
  const f = guestFacts();
  gate.set(f);
  t.is(await gate.wait(1000), f);
});

test('waiters wake when facts arrive, and their timers are cleared', async (t) => {
  const timers = manualTimers();
  const gate = new FactsGate(timers);
  const a = gate.wait(1000);
  const b = gate.wait(1000);
  t.is(gate.waiting, 2);
  const f = guestFacts();
  gate.set(f);
  t.deepEqual(await Promise.all([a, b]), [f, f]);
  t.is(timers.size(), 0);
  t.is(gate.waiting, 0);
});

test('a wait times out with null; set(null) wakes nobody', async (t) => {
  const timers = manualTimers();
  const gate = new FactsGate(timers);
  const a = gate.wait(1000);
  gate.set(null);
  t.is(gate.waiting, 1);
  timers.fireAll();
  t.is(await a, null);
  t.is(gate.waiting, 0);
});

test('bounded: past maxWaiters a wait answers null at once; close() answers all', async (t) => {
  const timers = manualTimers();
  const gate = new FactsGate(timers, 2);
  const a = gate.wait(1000);
  const b = gate.wait(1000);
  t.is(await gate.wait(1000), null);
  t.is(await gate.wait(0), null);
  gate.close();
  t.deepEqual(await Promise.all([a, b]), [null, null]);
  t.is(timers.size(), 0);
});
