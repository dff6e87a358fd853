/** Who may send POST /v1/incoming over TCP: the peer the notice names, from an address of that peer. */
import test from 'ava';
import { noticeRefusal } from '../../agent/daemon/notice-origin';
import { parseConfig } from '../../agent/core/config';
import type { IncomingNotice } from '../../agent/peers/incoming-notice';

const peers = parseConfig({
  peers: [
    { name: 'hv1', address: '10.0.0.1', physBits: 46 },
    { name: 'hv2', address: 'hv2.example:4444', url: 'https://api.hv2.example:9742', tokenFile: '/t' },
    { name: 'hv3', address: '[fd00::3]:4444', physBits: 46 },
  ],
}).peers;
const dns: Record<string, string[]> = { 'hv2.example': ['10.0.0.2'], 'api.hv2.example': ['10.0.1.2'] };
const resolve = (host: string) => (dns[host] ? Promise.resolve(dns[host]) : Promise.resolve([host]));
const notice = (from: string | null): IncomingNotice => ({ vm: 'web1', port: '4444', physBits: 46, from });

test('a notice is taken only from an address of the peer it names', async (t) => {
  const table: Array<[string | null, string, string | null]> = [
    ['hv1', '10.0.0.1', null],
    ['hv1', '::ffff:10.0.0.1', null],
    ['hv2', '10.0.0.2', null],
    ['hv2', '10.0.1.2', null],
    ['hv3', 'fd00::3', null],
    ['hv1', '10.0.0.2', "peer 'hv1' (10.0.0.1) does not have the address 10.0.0.2"],
    ['hv2', '10.0.0.1', "peer 'hv2' (hv2.example, api.hv2.example) does not have the address 10.0.0.1"],
    ['evil', '10.0.0.1', "no peer named 'evil' in the config"],
    [null, '10.0.0.1', 'the notice does not name the host it comes from (from)'],
  ];
  for (const [from, remote, want] of table)
    t.is(await noticeRefusal(notice(from), remote, peers, resolve), want, `${from} from ${remote}`);
});
