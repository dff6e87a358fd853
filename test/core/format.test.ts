import test from 'ava';
import { formatBytes, hex } from '../../agent/core/format';
import { joinHostPort } from '../../qmp/address';

const GiB = 2 ** 30;

test('formatBytes: the largest binary unit that reads well', (t) => {
  const cases: [number, string][] = [
    [0, '0 B'],
    [512, '512 B'],
    [36 * GiB, '36 GiB'],
    [2 ** 39, '512 GiB'],
    [2 ** 46, '64 TiB'],
    [1.5 * GiB, '1.5 GiB'],
    [3.25 * GiB, '3.25 GiB'],
    [1536 * GiB, '1.5 TiB'],
    [12.25 * GiB, '12.3 GiB'],
    [3 * 2 ** 20 + 1, '3 MiB'],
    [2 ** 63, '8 EiB'],
  ];
  for (const [n, text] of cases) t.is(formatBytes(n), text, String(n));
});

test('hex: 0x-prefixed for addresses, anything else as it is', (t) => {
  t.is(hex(2 ** 46), '0x400000000000');
  t.is(hex(0), '0x0');
  t.is(hex(-1), '-1');
  t.is(hex(Number.NaN), 'NaN');
});

test('joinHostPort brackets IPv6 literals only', (t) => {
  t.is(joinHostPort('127.0.0.1', 9100), '127.0.0.1:9100');
  t.is(joinHostPort('::1', 9100), '[::1]:9100');
  t.is(joinHostPort('fe80::1%eth0', '80'), '[fe80::1%eth0]:80');
  t.is(joinHostPort('hv1.example', 4444), 'hv1.example:4444');
});
