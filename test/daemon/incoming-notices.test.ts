import test from 'ava';
import { IncomingNotices, MAX_NOTICES, NOTICE_TTL_MS } from '../../agent/daemon/incoming-notices';

const notice = (vm: string, port: string | null, physBits = 46) => ({ vm, port, physBits, from: 'hv1' });

test('matched by the port QEMU listens on first, then by name; taken once', (t) => {
  const n = new IncomingNotices(() => 0);
  n.add(notice('web1', '4444', 46));
  n.add(notice('web2', '5555', 44));
  // The port decides, whatever the name (QEMU on this host listens on one port per incoming guest).
  t.deepEqual(n.take({ name: 'renamed', port: '5555' }), notice('web2', '5555', 44));
  t.is(n.take({ name: 'other', port: '7777' }), null);
  t.deepEqual(n.take({ name: 'web1', port: null }), notice('web1', '4444', 46));
  t.is(n.take({ name: 'web1', port: null }), null);
  t.is(n.size, 0);
});

test('a newer notice for the same VM and port replaces the older', (t) => {
  const n = new IncomingNotices(() => 0);
  n.add(notice('web1', '4444', 46));
  n.add(notice('web1', '4444', 48));
  t.is(n.size, 1);
  t.is(n.take({ name: 'web1', port: '4444' })?.physBits, 48);
});

test('bounded in time and in number', (t) => {
  let now = 1000;
  const n = new IncomingNotices(() => now);
  n.add(notice('old', '1'));
  now += NOTICE_TTL_MS - 1;
  n.add(notice('young', '2'));
  t.is(n.size, 2);
  now += 1;
  t.is(n.take({ name: 'old', port: '1' }), null);
  t.is(n.size, 1);
  for (let i = 0; i < MAX_NOTICES + 10; i++) n.add(notice(`vm${i}`, String(10000 + i)));
  t.is(n.size, MAX_NOTICES);
  t.is(n.take({ name: 'vm0', port: null }), null);
  t.is(n.take({ name: `vm${MAX_NOTICES + 9}`, port: null })?.vm, `vm${MAX_NOTICES + 9}`);
});
