import test from 'ava';
import { MAX_NOTICE_BYTES, parseIncomingNotice } from '../../agent/peers/incoming-notice';

test('a notice with every field, and with only the required ones', (t) => {
  t.deepEqual(parseIncomingNotice({ vm: 'web1', port: '4444', physBits: 46, from: 'hv1' }), {
    vm: 'web1',
    port: '4444',
    physBits: 46,
    from: 'hv1',
  });
  t.deepEqual(parseIncomingNotice({ vm: 'web1', physBits: 52 }), { vm: 'web1', port: null, physBits: 52, from: null });
  t.deepEqual(parseIncomingNotice({ vm: 'web1', physBits: 52, port: null, from: null, extra: 1 }), {
    vm: 'web1',
    port: null,
    physBits: 52,
    from: null,
  });
});

const bad: Array<[unknown, string]> = [
  [null, 'expected a JSON object'],
  [[], 'expected a JSON object'],
  [{ physBits: 46 }, 'vm must be a name of 1 to 256 printable characters'],
  [{ vm: '', physBits: 46 }, 'vm must be a name of 1 to 256 printable characters'],
  [{ vm: 'a\nb', physBits: 46 }, 'vm must be a name of 1 to 256 printable characters'],
  [{ vm: 'x'.repeat(257), physBits: 46 }, 'vm must be a name of 1 to 256 printable characters'],
  [{ vm: 'web1' }, 'physBits must be a whole number from 1 to 64'],
  [{ vm: 'web1', physBits: 0 }, 'physBits must be a whole number from 1 to 64'],
  [{ vm: 'web1', physBits: 46.5 }, 'physBits must be a whole number from 1 to 64'],
  [{ vm: 'web1', physBits: '46' }, 'physBits must be a whole number from 1 to 64'],
  [{ vm: 'web1', physBits: 46, port: 4444 }, 'port must be a TCP port number as a string'],
  [{ vm: 'web1', physBits: 46, port: '123456' }, 'port must be a TCP port number as a string'],
  [{ vm: 'web1', physBits: 46, from: 7 }, 'from must be a host name of 1 to 256 printable characters'],
];

for (const [body, error] of bad) {
  test(`refused: ${JSON.stringify(body)?.slice(0, 60)}`, (t) => {
    t.deepEqual(parseIncomingNotice(body), { error });
  });
}

test('the largest valid notice fits the body bound', (t) => {
  const notice = { vm: 'v'.repeat(256), port: '65535', physBits: 64, from: 'h'.repeat(256) };
  t.false('error' in parseIncomingNotice(notice));
  t.true(JSON.stringify(notice).length < MAX_NOTICE_BYTES);
});
