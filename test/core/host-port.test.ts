import test from 'ava';
import { splitHostPort } from '../../agent/core/host-port';

test('splitHostPort: names, IPv4 and bracketed IPv6 with a port; anything else is null', (t) => {
  const rows: [string, { host: string; port: number } | null][] = [
    ['127.0.0.1:9741', { host: '127.0.0.1', port: 9741 }],
    ['hv1.example:0', { host: 'hv1.example', port: 0 }],
    ['[::1]:9742', { host: '::1', port: 9742 }],
    ['[fd00::3]:65535', { host: 'fd00::3', port: 65535 }],
    ['hv1:65536', null],
    ['::1:9742', null],
    ['hv1', null],
    [':9741', null],
    ['hv1:', null],
    ['hv 1:80', null],
    ['[::1]', null],
  ];
  t.deepEqual(
    rows.map(([text]) => [text, splitHostPort(text)]),
    rows,
  );
});
