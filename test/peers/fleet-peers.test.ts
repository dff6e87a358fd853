/**
 * The guard's peer lookups on fleet.prometheus (fleet-peers.ts): one-host asks instead of the fleet's,
 * each cached, bounded in number, and a peer found by its address judged on the answer it was found
 * with, so that a decision asks Prometheus once.
 */
import test from 'ava';
import { CachedHosts, FleetPeers, MAX_HOST_LOOKUPS } from '../../agent/peers/fleet-peers';
import { PeerResolver } from '../../agent/peers/peer-resolver';
import { PrometheusError } from '../../agent/peers/prometheus-client';
import type { PromHost } from '../../agent/peers/prometheus-hosts';

const host = (name: string, physBits: number, address: string): PromHost => ({
  name,
  instances: [`${address}:9741`],
  physBits,
  reachable: true,
  addresses: [name, address],
});
const FLEET = [host('hv1', 46, '10.0.0.1'), host('hv2', 39, '10.0.0.2')];

function setup(opts: { failureCacheSeconds?: number; oneHost?: boolean } = {}) {
  const state = {
    now: 0,
    down: null as string | null,
    refuseOneHost: false,
    wide: 0,
    asks: [] as string[],
    fleet: [...FLEET],
  };
  const fail = () => {
    if (state.down) throw new PrometheusError(state.down, `http://prom/api/v1/query: ${state.down}`);
  };
  const hosts = new CachedHosts({
    read: async () => {
      state.wide++;
      fail();
      return state.fleet;
    },
    readIn:
      opts.oneHost === false
        ? undefined
        : async (scope) => {
            state.asks.push('name' in scope ? `=${scope.name}` : `@${scope.address}`);
            fail();
            if (state.refuseOneHost) throw new PrometheusError('PROM_QUERY_FAILED', 'bad_data: unknown regexp flag');
            return state.fleet.filter((h) =>
              'name' in scope ? h.name === scope.name : h.addresses.includes(scope.address),
            );
          },
    clock: () => state.now,
    cacheSeconds: 5,
    failureCacheSeconds: opts.failureCacheSeconds ?? 2,
  });
  const resolver = new PeerResolver({
    peers: [],
    readFile: () => '',
    clock: () => state.now,
    cacheSeconds: 0,
    timeoutMs: 100,
  });
  return { state, peers: new FleetPeers({ resolver: () => resolver, prometheus: () => hosts }) };
}

test('a host found by its address is judged on the answer it was found with: one ask for the decision', async (t) => {
  const { state, peers } = setup({ failureCacheSeconds: 0 });
  const ref = await peers.findByAddress('10.0.0.2');
  t.like(await peers.facts(ref!), { name: 'hv2', physBits: 39, source: 'prometheus' });
  t.deepEqual(state.asks, ['@10.0.0.2']);
  t.is(state.wide, 0, 'the fleet is not read');

  // Prometheus down and no failure memory: still one ask, not one for the lookup and one for the width.
  state.down = 'PROM_TIMEOUT';
  state.now = 10_000;
  const down = await peers.findByAddress('10.0.0.1');
  t.is(down?.name, '10.0.0.1');
  const facts = await peers.facts(down!);
  t.is(facts.physBits, null);
  t.regex(facts.why!, /Prometheus cannot be asked \(PROM_TIMEOUT: /);
  t.deepEqual(state.asks, ['@10.0.0.2', '@10.0.0.1']);
});

test('a peer found by name is asked once too; a name Prometheus does not list is no peer', async (t) => {
  const { state, peers } = setup();
  t.like(await peers.facts((await peers.findByName('hv1'))!), { physBits: 46 });
  t.is(await peers.findByName('hv9'), null);
  t.deepEqual(state.asks, ['=hv1', '=hv9']);
  t.like(await peers.facts({ name: 'hv2' }), { physBits: 39 }, 'a ref made elsewhere: asked by name');
  t.deepEqual(state.asks, ['=hv1', '=hv9', '=hv2']);
});

test('one-host answers are cached for fleet.cacheSeconds; a fresh fleet-wide answer serves every lookup', async (t) => {
  const { state, peers } = setup();
  await peers.findByAddress('10.0.0.1');
  await peers.findByAddress('10.0.0.1');
  t.deepEqual(state.asks, ['@10.0.0.1']);
  state.now = 5000;
  await peers.findByAddress('10.0.0.1');
  t.deepEqual(state.asks, ['@10.0.0.1', '@10.0.0.1'], 'asked again once stale');
  const wide = setup({ oneHost: false });
  t.is((await wide.peers.findByAddress('10.0.0.2'))?.name, 'hv2');
  t.is((await wide.peers.findByName('hv1'))?.name, 'hv1');
  t.is(wide.state.wide, 1, 'without one-host reads: the fleet, once');
});

test(`past ${MAX_HOST_LOOKUPS} one-host asks per fleet.cacheSeconds the fleet is read, and answers the rest`, async (t) => {
  const { state, peers } = setup();
  for (let i = 0; i < MAX_HOST_LOOKUPS; i++) t.is(await peers.findByAddress(`192.0.2.${i}`), null);
  t.is(state.asks.length, MAX_HOST_LOOKUPS);
  t.is(state.wide, 0);
  t.is((await peers.findByAddress('10.0.0.2'))?.name, 'hv2');
  t.is((await peers.findByAddress('10.0.0.1'))?.name, 'hv1');
  t.is(await peers.findByAddress('192.0.2.200'), null);
  t.is(state.wide, 1, 'one fleet-wide read serves every later lookup');
  t.is(state.asks.length, MAX_HOST_LOOKUPS);
  state.now = 5000;
  await peers.findByAddress('192.0.2.201');
  t.is(state.asks.length, MAX_HOST_LOOKUPS + 1, 'a new period: one-host asks again');
});

test('a failed ask answers every lookup for guard.peerFailureCacheSeconds; a query the server refuses reads the fleet', async (t) => {
  const { state, peers } = setup();
  state.down = 'PROM_UNREACHABLE';
  t.regex((await peers.facts((await peers.findByAddress('10.0.0.1'))!)).why!, /PROM_UNREACHABLE/);
  t.regex((await peers.facts((await peers.findByAddress('10.0.0.2'))!)).why!, /PROM_UNREACHABLE/);
  t.regex((await peers.facts((await peers.findByName('hv1'))!)).why!, /PROM_UNREACHABLE/);
  t.is(state.asks.length, 1, 'remembered for every address and name');
  state.down = null;
  state.now = 2000;
  t.is((await peers.findByAddress('10.0.0.2'))?.name, 'hv2');

  const q = setup();
  q.state.refuseOneHost = true;
  const ask = q.peers.findByAddress('10.0.0.2');
  t.is((await ask)?.name, 'hv2');
  t.is(q.state.wide, 1, 'the fleet-wide queries answered instead');
});

test('the newest answer wins: a lookup never reuses an answer older than the last one read', async (t) => {
  const { state, peers } = setup();
  t.like(await peers.facts((await peers.findByAddress('10.0.0.2'))!), { physBits: 39, reachable: true });
  state.fleet = [FLEET[0], { ...FLEET[1], reachable: false, physBits: null }];
  state.now = 500;
  t.like(await peers.facts((await peers.findByName('hv2'))!), { physBits: null }, 'asked by name: down');
  t.like(await peers.facts((await peers.findByAddress('10.0.0.2'))!), { physBits: null }, 'by address: down too');
  t.deepEqual(state.asks, ['@10.0.0.2', '=hv2', '@10.0.0.2']);
});
