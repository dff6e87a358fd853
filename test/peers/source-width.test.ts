import test from 'ava';
import type { StatusDocument } from '../../agent/core/types';
import {
  findInSamples,
  findInStatuses,
  guestQueries,
  lookupSourceWidth,
  sameGuest,
  type PeerStatus,
  type SourceWidthDeps,
} from '../../agent/peers/source-width';

const U1 = '6f1c3a52-9b0e-4c55-8a44-1e0f7b2d9c01';
const U2 = '6f1c3a52-9b0e-4c55-8a44-1e0f7b2d9c02';

function status(host: number, vms: Array<{ name: string; physBits: number; uuid?: string }>): StatusDocument {
  return {
    host: { physBits: host } as StatusDocument['host'],
    vms: vms.map((v) => ({
      socket: `/run/${v.name}.qmp`,
      name: v.name,
      guest: { physBits: v.physBits, ...(v.uuid ? { uuid: v.uuid } : {}) } as never,
    })),
  };
}

test('sameGuest: UUIDs decide when both sides know one; otherwise the name', (t) => {
  t.true(sameGuest({ name: 'web1', uuid: U1 }, 'other', U1.toUpperCase()));
  t.false(sameGuest({ name: 'web1', uuid: U1 }, 'web1', U2));
  t.true(sameGuest({ name: 'web1', uuid: U1 }, 'web1', undefined));
  t.true(sameGuest({ name: 'web1', uuid: U1 }, 'web1', '00000000-0000-0000-0000-000000000000'));
  t.true(sameGuest({ name: 'web1' }, 'web1', U2));
  t.false(sameGuest({ name: 'web1' }, 'web2', undefined));
});

test('findInStatuses: skips this host, unreachable peers and VMs without a width', (t) => {
  const peers: PeerStatus[] = [
    { name: 'hvA', reachable: true, status: status(46, [{ name: 'web1', physBits: 46, uuid: U1 }]) },
    { name: 'self', reachable: true, status: status(39, [{ name: 'web1', physBits: 39, uuid: U1 }]) },
    { name: 'hvB', reachable: false, error: { code: 'PEER_TIMEOUT', message: 'x' } },
    {
      name: 'hvC',
      reachable: true,
      status: {
        host: { physBits: 52 } as never,
        vms: [{ socket: '', name: 'web1', error: { code: 'X', message: 'y' } }],
      },
    },
  ];
  t.deepEqual(findInStatuses({ name: 'web1', uuid: U1 }, peers, 'self'), [
    { physBits: 46, host: 'hvA', source: "live peer hvA's status" },
  ]);
});

test('findInSamples: by uuid label, else vm; never this host', (t) => {
  const samples: Array<{ labels: Record<string, string>; value: number }> = [
    { labels: { host: 'hvA', vm: 'web1', uuid: U1 }, value: 46 },
    { labels: { host: 'hvB', vm: 'web1', uuid: U2 }, value: 52 },
    { labels: { host: 'self', vm: 'web1', uuid: U1 }, value: 39 },
    { labels: { host: 'hvD', vm: 'web1' }, value: 44 },
    { labels: { host: 'hvE', vm: 'web1' }, value: 99 },
  ];
  t.deepEqual(
    findInSamples({ name: 'web1', uuid: U1 }, samples, 'self').map((f) => [f.host, f.physBits]),
    [
      ['hvA', 46],
      ['hvD', 44],
    ],
  );
});

test('guestQueries: the series of fleet.job only; a name is quoted as a PromQL string; the UUID query only for a real UUID', (t) => {
  t.deepEqual(guestQueries({ name: 'a"b\\c', uuid: U1.toUpperCase() }), [
    'physbits_guest_phys_bits{job="physbits",vm="a\\"b\\\\c"}',
    `physbits_guest_phys_bits{job="physbits",uuid="${U1}"}`,
  ]);
  t.deepEqual(guestQueries({ name: 'x', uuid: 'not-a-uuid' }, ['hv', 'lab.x']), [
    'physbits_guest_phys_bits{job=~"hv|lab\\\\.x",vm="x"}',
  ]);
});

const base = (over: Partial<SourceWidthDeps>): SourceWidthDeps => ({ self: 'self', deadlineMs: 200, ...over });

test('lookup: the guest at its source wins; two sources that disagree give the widest', async (t) => {
  const deps = base({
    peerStatuses: () =>
      Promise.resolve([
        { name: 'hvA', reachable: true, status: status(46, [{ name: 'web1', physBits: 44, uuid: U1 }]) },
      ]),
    prometheusQuery: () => Promise.resolve([{ labels: { host: 'hvA', vm: 'web1', uuid: U1 }, value: 46 }]),
    hostLimit: () => Promise.resolve({ physBits: 52 }),
  });
  t.deepEqual(await lookupSourceWidth({ name: 'web1', uuid: U1, sourceHost: 'hvA' }, deps), {
    kind: 'guest',
    physBits: 46,
    host: 'hvA',
    source: `fleet.prometheus's physbits_guest_phys_bits{host="hvA"}`,
  });
});

test('lookup: not found anywhere, the source host known: its limit', async (t) => {
  const deps = base({
    peerStatuses: () => Promise.resolve([{ name: 'hvA', reachable: true, status: status(46, []) }]),
    hostLimit: (name) => Promise.resolve(name === 'hvA' ? { physBits: 46 } : null),
  });
  t.deepEqual(await lookupSourceWidth({ name: 'web1', sourceHost: 'hvA' }, deps), {
    kind: 'host',
    physBits: 46,
    host: 'hvA',
    source: 'the limit of source host hvA',
  });
  const none = await lookupSourceWidth({ name: 'web1', sourceHost: 'hvZ' }, deps);
  t.is(none.kind, 'unknown');
  t.regex((none as { why: string }).why, /no peer or fleet host is named hvZ/);
});

test('lookup: unknown names every source it asked and why each said nothing', async (t) => {
  const deps = base({
    peerStatuses: () =>
      Promise.resolve([{ name: 'hvB', reachable: false, error: { code: 'PEER_TIMEOUT', message: 'no answer' } }]),
    prometheusQuery: () => Promise.reject(Object.assign(new Error('connect refused'), { code: 'PROM_UNREACHABLE' })),
  });
  const r = await lookupSourceWidth({ name: 'web1', uuid: U1 }, deps);
  t.is(r.kind, 'unknown');
  t.is(
    (r as { why: string }).why,
    `the width of guest 'web1' (UUID ${U1}) at its source is unknown: 0 live peers do not run it; ` +
      'peer hvB did not answer (PEER_TIMEOUT: no answer); fleet.prometheus could not be asked ' +
      '(PROM_UNREACHABLE: connect refused); the source host is not known',
  );
  const bare = await lookupSourceWidth({ name: 'web1' }, base({}));
  t.regex((bare as { why: string }).why, /no live peers\[\] and no fleet\.prometheus to ask/);
});

test('lookup: a source that never answers costs at most the deadline', async (t) => {
  const start = Date.now();
  const r = await lookupSourceWidth(
    { name: 'web1' },
    base({
      deadlineMs: 100,
      peerStatuses: () => new Promise(() => undefined),
      prometheusQuery: () => new Promise(() => undefined),
    }),
  );
  t.is(r.kind, 'unknown');
  t.regex(
    (r as { why: string }).why,
    /live peers: no answer within 100 ms.*fleet\.prometheus: no answer within 100 ms/,
  );
  t.true(Date.now() - start < 2000);
});
