import test from 'ava';
import type { PeerConfig } from '../../agent/core/config';
import { checkMigration, decideMigration, type PeerLookup } from '../../agent/guard/migration-rule';
import { migrateTargets } from '../../agent/guard/migration-target';
import { GiB, guestFacts, hostFacts, layout } from '../helpers/guard-facts';

const host = hostFacts(46);
const kvm = { accelerators: ['kvm'] };

type Row = [
  string,
  {
    guestBits: number;
    highest?: number | null;
    peerBits: number | null | 'none';
    unknownPeer?: 'refuse' | 'allow';
    accel?: string;
  },
  boolean,
  string | undefined,
];

const table: Row[] = [
  ['static narrower peer', { guestBits: 46, peerBits: 39 }, false, 'REFUSED_MIGRATION_PEER_NARROWER'],
  ['equal peer', { guestBits: 46, peerBits: 46, highest: 2 ** 46 }, true, undefined],
  ['wider peer', { guestBits: 40, peerBits: 52 }, true, undefined],
  [
    'layout too high for an equal-bits peer',
    { guestBits: 39, peerBits: 39, highest: 2 ** 39 + GiB },
    false,
    'REFUSED_MIGRATION_LAYOUT_TOO_HIGH',
  ],
  ['layout exactly at the peer limit', { guestBits: 39, peerBits: 39, highest: 2 ** 39 }, true, undefined],
  ['layout unknown: phys-bits alone decide', { guestBits: 39, peerBits: 40, highest: null }, true, undefined],
  [
    'narrower wins over layout',
    { guestBits: 46, peerBits: 39, highest: 2 ** 45 },
    false,
    'REFUSED_MIGRATION_PEER_NARROWER',
  ],
  ['unknown peer, refuse (default)', { guestBits: 40, peerBits: 'none' }, false, 'REFUSED_MIGRATION_UNKNOWN_PEER'],
  ['unknown peer, allow', { guestBits: 40, peerBits: 'none', unknownPeer: 'allow' }, true, undefined],
  ['peer of unknown width, refuse', { guestBits: 40, peerBits: null }, false, 'REFUSED_MIGRATION_UNKNOWN_PEER'],
  ['peer of unknown width, allow', { guestBits: 40, peerBits: null, unknownPeer: 'allow' }, true, undefined],
  ['TCG guest is not enforced', { guestBits: 52, peerBits: 39, accel: 'tcg' }, true, undefined],
];

for (const [title, c, allowed, code] of table) {
  test(`checkMigration: ${title}`, (t) => {
    const guest = guestFacts({
      physBits: c.guestBits,
      accelerator: c.accel ?? 'kvm',
      layout: c.highest === null ? null : layout({ highestAddress: c.highest ?? 2 ** 36 }),
    });
    const peer = c.peerBits === 'none' ? null : { name: 'hv2', physBits: c.peerBits };
    const r = checkMigration({ guest, host, peer, policy: { ...kvm, unknownPeer: c.unknownPeer } });
    t.is(r.allowed, allowed);
    t.is(r.code, code);
    t.true(r.message.length > 10);
  });
}

test('checkMigration messages say the numbers and what to do', (t) => {
  const narrower = checkMigration({
    guest: guestFacts({ physBits: 46 }),
    host,
    peer: { name: 'hv2', physBits: 39 },
    policy: kvm,
  });
  t.is(
    narrower.message,
    'web1 has phys-bits=46 but peer hv2 has 39-bit physical addresses (this host hv1: 46); the guest could map memory the destination cannot back. Restart the guest with phys-bits=39 (or host-phys-bits-limit=39) before moving it, or pick a peer with at least 46 bits',
  );
  const high = checkMigration({
    guest: guestFacts({ physBits: 39, layout: layout({ highestAddress: 2 ** 39 + GiB }) }),
    host,
    peer: { name: 'hv2', physBits: 39 },
    policy: kvm,
  });
  t.is(
    high.message,
    "web1's memory layout reaches 0x803fffffff, above peer hv2's 39-bit limit 0x8000000000; shrink maxmem or the 64-bit PCI hole (pci-hole64-size), or pick a wider peer",
  );
});

function lookup(peers: PeerConfig[], live: Record<string, number | null> = {}): PeerLookup & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    findByAddress: (h) => peers.find((p) => p.address.toLowerCase() === h.toLowerCase()) ?? null,
    facts: async (p) => {
      asked.push(p.name);
      const physBits = p.name in live ? live[p.name] : ((p as { physBits?: number }).physBits ?? null);
      return { name: p.name, physBits, reachable: physBits !== null };
    },
  };
}

const peers: PeerConfig[] = [
  { name: 'hv2', address: '10.0.0.2', physBits: 39 },
  { name: 'hv3', address: '2001:db8::3', physBits: 48 },
  { name: 'hv4', address: 'hv4', url: 'http://hv4:9742', tokenFile: '/etc/physbits/token' },
];

test('decideMigration: the uri host is looked up among the peers', async (t) => {
  const guest = guestFacts({ physBits: 46 });
  const d = (args: Record<string, unknown>, l = lookup(peers), unknownPeer?: 'allow') =>
    decideMigration({ targets: migrateTargets(args), guest, host, policy: { ...kvm, unknownPeer }, peers: l });
  t.is((await d({ uri: 'tcp:10.0.0.2:4444' })).code, 'REFUSED_MIGRATION_PEER_NARROWER');
  t.true((await d({ uri: 'tcp:[2001:db8::3]:4444' })).allowed);
  t.true(
    (
      await d({
        channels: [
          { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '2001:db8::3', port: '1' } },
        ],
      })
    ).allowed,
  );
  t.is((await d({ uri: 'tcp:10.0.0.9:4444' })).code, 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.true((await d({ uri: 'tcp:10.0.0.9:4444' }, lookup(peers), 'allow')).allowed);
  const unix = await d({ uri: 'unix:/run/m.sock' });
  t.is(unix.code, 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(unix.message, /^a unix: destination does not say which host receives the guest \("unix:\/run\/m.sock"\)/);
  const bad = await d({ uri: 'hv2:4444' });
  t.is(bad.code, 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(bad.message, /^the migration destination cannot be read as the guest's QEMU reads it: not a migration uri/);
  // Refused even where guard.unknownPeer allows unknown destinations: QEMU would not read it as physbits does.
  const badAllowed = await d({ uri: 'rdma:' }, lookup(peers), 'allow');
  t.false(badAllowed.allowed);
  t.regex(badAllowed.message, /refused whatever guard\.unknownPeer says$/);
});

test('decideMigration: live peer widths come from the lookup; an unknown width follows unknownPeer', async (t) => {
  const guest = guestFacts({ physBits: 46 });
  const l = lookup(peers, { hv4: 40 });
  const r = await decideMigration({
    targets: migrateTargets({ uri: 'tcp:hv4:1' }),
    guest,
    host,
    policy: kvm,
    peers: l,
  });
  t.is(r.code, 'REFUSED_MIGRATION_PEER_NARROWER');
  t.deepEqual(l.asked, ['hv4']);
  const down = await decideMigration({
    targets: migrateTargets({ uri: 'tcp:hv4:1' }),
    guest,
    host,
    policy: kvm,
    peers: lookup(peers, { hv4: null }),
  });
  t.is(down.code, 'REFUSED_MIGRATION_UNKNOWN_PEER');
  t.regex(down.message, /width of peer hv4 is unknown/);
});

test('decideMigration: every channel must pass', async (t) => {
  const guest = guestFacts({ physBits: 46 });
  const r = await decideMigration({
    targets: migrateTargets({
      channels: [
        { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '2001:db8::3', port: '1' } },
        { 'channel-type': 'cpr', addr: { transport: 'socket', type: 'inet', host: '10.0.0.2', port: '2' } },
      ],
    }),
    guest,
    host,
    policy: kvm,
    peers: lookup(peers),
  });
  t.is(r.code, 'REFUSED_MIGRATION_PEER_NARROWER');
});
