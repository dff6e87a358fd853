import test from 'ava';
import { asObject, isObject, isWidth, widthOrNull } from '../../agent/core/checks';

test('isObject: JSON objects only', (t) => {
  t.deepEqual([{}, { a: 1 }, [], null, undefined, 'x', 1, true].map(isObject), [
    true,
    true,
    false,
    false,
    false,
    false,
    false,
    false,
  ]);
  t.deepEqual(asObject({ a: 1 }), { a: 1 });
  t.is(asObject([1]), null);
});

test('isWidth: whole numbers from 1 to 64', (t) => {
  const rows: [unknown, boolean][] = [
    [1, true],
    [39, true],
    [64, true],
    [0, false],
    [65, false],
    [-1, false],
    [40.5, false],
    [NaN, false],
    [Infinity, false],
    ['40', false],
    [null, false],
  ];
  t.deepEqual(
    rows.map(([v]) => [v, isWidth(v)]),
    rows,
  );
  t.is(widthOrNull(52), 52);
  t.is(widthOrNull(0), null);
});
