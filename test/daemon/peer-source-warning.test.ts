import test from 'ava';
import { parseConfig } from '../../agent/core/config';
import { peerSourceWarning } from '../../agent/daemon/peer-source-warning';

const peer = { name: 'narrow', address: '127.0.0.2', physBits: 39 };

const cases: Array<[string, Record<string, unknown>, boolean]> = [
  ['no peers, no fleet.prometheus, unknownPeer refuse (the default)', {}, true],
  ['no peers, no fleet.prometheus, unknownPeer refuse', { guard: { unknownPeer: 'refuse' } }, true],
  ['no peers, no fleet.prometheus, unknownPeer allow', { guard: { unknownPeer: 'allow' } }, false],
  ['a peer', { peers: [peer] }, false],
  ['fleet.prometheus', { fleet: { prometheus: 'http://127.0.0.1:9090' } }, false],
];

for (const [title, raw, warns] of cases)
  test(`peerSourceWarning: ${title}`, (t) => {
    const warning = peerSourceWarning(parseConfig(raw));
    if (!warns) return t.is(warning, null);
    t.regex(warning ?? '', /every migration through the guard will be refused as going to an unknown peer/);
    t.regex(warning ?? '', /docs\/configuration\.md/);
  });
