import test from 'ava';
import { MAX_DESC_CHARS, quote, REFUSAL_PREFIX, REFUSED, refusalDesc } from '../../agent/guard/refusal';

test('the refusal text names the guard, the reason and its code', (t) => {
  const desc = refusalDesc('REFUSED_FACTS_UNKNOWN', 'not known');
  t.is(desc, 'refused by physbits guard: not known [REFUSED_FACTS_UNKNOWN]');
});

test('desc is one line and bounded, code kept', (t) => {
  const d = refusalDesc('REFUSED_GUARD_ERROR', `a\nb${'x'.repeat(5000)}`);
  t.is(d.length, MAX_DESC_CHARS);
  t.true(d.startsWith(`${REFUSAL_PREFIX}a b`));
  t.true(d.endsWith('… [REFUSED_GUARD_ERROR]'));
  t.false(d.includes('\n'));
});

test('every code starts with REFUSED_ and is unique', (t) => {
  const codes = Object.values(REFUSED);
  t.true(codes.every((c) => /^REFUSED_[A-Z_]+$/.test(c)));
  t.is(new Set(codes).size, codes.length);
});

test('message helpers', (t) => {
  t.is(quote('d"1\n'), '"d\\"1\\n"');
  t.is(quote('x'.repeat(100), 4), '"xxxx…"');
});
