import test from 'ava';
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CachedHosts, FleetPeers } from '../../agent/peers/fleet-peers';
import { PeerResolver } from '../../agent/peers/peer-resolver';
import { PrometheusClient } from '../../agent/peers/prometheus-client';
import {
  fleetQueries,
  guestWidthQueries,
  hostQueries,
  hostQueriesAt,
  hostQueriesNamed,
  jobMatcher,
  readPrometheusHosts,
  readPrometheusHostsIn,
} from '../../agent/peers/prometheus-fleet';
import { PROMTOOL } from '../helpers/alertmanager';
import { startPrometheus } from '../helpers/prometheus';
import { tempDir } from '../helpers/tmp';

test('every query selects fleet.job: one job by equality, several by an anchored, escaped regular expression', (t) => {
  t.is(jobMatcher(), 'job="physbits"');
  t.is(jobMatcher(['hv "east"']), 'job="hv \\"east\\""');
  t.is(jobMatcher(['physbits', 'lab.b', 'a|b']), 'job=~"physbits|lab\\\\.b|a\\\\|b"');
  t.deepEqual(hostQueries({ lookbackSeconds: 600 }), {
    hosts: 'last_over_time(physbits_host_info{job="physbits"}[600s])',
    up: 'up{job="physbits"} and on (job, instance) last_over_time(physbits_host_info{job="physbits"}[600s])',
    widths: 'last_over_time(physbits_host_phys_bits{job="physbits"}[600s])',
    fresh: 'timestamp(physbits_host_phys_bits{job="physbits"})',
  });
  const fleet = fleetQueries({ lookbackSeconds: 60, jobs: ['a', 'b'] });
  for (const q of Object.values(fleet)) t.regex(q, /\{job=~"a\|b"\}/, q);
  t.is(fleet.guests, 'physbits_guest_phys_bits{job=~"a|b"}');
  t.deepEqual(guestWidthQueries({ name: 'web1', uuid: null }, ['x']), ['physbits_guest_phys_bits{job="x",vm="web1"}']);
});

test('one-host queries select the hosts an address may name, with all their targets; non-ASCII addresses are not narrowed', (t) => {
  const at = hostQueriesAt('[HV1.Example.]', { lookbackSeconds: 600 })!;
  const matched =
    '(last_over_time(physbits_host_info{job="physbits",host=~"(?is)(.*[^0-9a-z])?hv1\\\\.example([^0-9a-z].*)?"}[600s])' +
    ' or last_over_time(physbits_host_info{job="physbits",instance=~"(?is)(.*[^0-9a-z])?hv1\\\\.example([^0-9a-z].*)?"}[600s]))';
  t.is(at.hosts, `(last_over_time(physbits_host_info{job="physbits"}[600s]) and on (host) ${matched})`);
  t.is(at.up, `up{job="physbits"} and on (job, instance) ${at.hosts}`);
  t.is(at.widths, `last_over_time(physbits_host_phys_bits{job="physbits"}[600s]) and on (host) ${matched}`);
  t.is(at.fresh, `timestamp(physbits_host_phys_bits{job="physbits"}) and on (host) ${matched}`);
  t.is(hostQueriesAt('h\u0130v', { lookbackSeconds: 600 }), null);
  t.is(hostQueriesAt('hv 1', { lookbackSeconds: 600 }), null);
  t.deepEqual(hostQueriesNamed('hv"1', { lookbackSeconds: 60, jobs: ['a', 'b'] }), {
    hosts: 'last_over_time(physbits_host_info{job=~"a|b",host="hv\\"1"}[60s])',
    up: 'up{job=~"a|b"} and on (job, instance) last_over_time(physbits_host_info{job=~"a|b",host="hv\\"1"}[60s])',
    widths: 'last_over_time(physbits_host_phys_bits{job=~"a|b",host="hv\\"1"}[60s])',
    fresh: 'timestamp(physbits_host_phys_bits{job=~"a|b",host="hv\\"1"})',
  });
});

/**
 * Hosts whose names and targets make address matching hard: case and a trailing dot, one host with two
 * targets (one down), two hosts on one target, an IPv6 target, a host whose name holds a regular
 * expression's characters, one not up, one in another job.
 */
function trickyFleet(now: number): string {
  const hosts: Array<{ host: string; instance: string; job?: string; up: number; bits: number }> = [
    { host: 'hv1', instance: '10.0.0.1:9741', up: 1, bits: 46 },
    { host: 'hv10', instance: '10.0.0.10:9741', up: 1, bits: 39 },
    { host: 'HV2.Example.', instance: 'hv2.example:9741', up: 1, bits: 44 },
    { host: 'hv3', instance: '10.0.0.3:9741', up: 0, bits: 44 },
    { host: 'hv3', instance: '10.0.0.33:9741', up: 1, bits: 42 },
    { host: 'hv6', instance: '[fd00::6]:9741', up: 1, bits: 48 },
    { host: 'hv7a', instance: '10.0.0.7:9741', up: 1, bits: 40 },
    { host: 'hv7b', instance: '10.0.0.7:9741', up: 1, bits: 41 },
    { host: 'hv8', instance: '10.0.0.8:9741', up: 0, bits: 45 },
    { host: 'hv+1.(a)', instance: '10.0.0.11:9741', up: 1, bits: 43 },
    { host: 'hv9', instance: '10.0.0.9:9741', job: 'other', up: 1, bits: 52 },
  ];
  const times = [now - 30, now - 15, now];
  const lines: string[] = [];
  const family = (name: string, each: (h: (typeof hosts)[number]) => [string, number] | null) => {
    lines.push(`# TYPE ${name} gauge`);
    const seen = new Set<string>();
    for (const h of hosts) {
      const sample = each(h);
      if (!sample || seen.has(sample[0])) continue;
      seen.add(sample[0]);
      for (const time of times) lines.push(`${name}{${sample[0]}} ${sample[1]} ${time}`);
    }
  };
  const target = (h: (typeof hosts)[number]) => `job="${h.job ?? 'physbits'}",instance="${h.instance}"`;
  family('up', (h) => [target(h), h.up]);
  family('physbits_host_info', (h) => [`${target(h)},host="${h.host}"`, 1]);
  family('physbits_host_phys_bits', (h) => [`${target(h)},host="${h.host}"`, h.bits]);
  lines.push('# EOF');
  return lines.join('\n') + '\n';
}

test('on a real Prometheus, one-host lookups find exactly what the fleet-wide host list finds, and read only those hosts', async (t) => {
  const dir = tempDir('physbits-prom-lookup-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'fleet.om'), trickyFleet(Math.floor(Date.now() / 1000)));
  const made = spawnSync(
    PROMTOOL,
    ['tsdb', 'create-blocks-from', 'openmetrics', join(dir, 'fleet.om'), join(dir, 'data')],
    {
      encoding: 'utf8',
    },
  );
  t.is(made.status, 0, made.stderr);
  const prom = await startPrometheus({ targets: [], storageDir: join(dir, 'data') });
  t.teardown(() => prom.stop());
  const fleet = { lookbackSeconds: 3600, staleSeconds: 300, job: ['physbits'], timeoutMs: 10000 };
  const client = new PrometheusClient({ url: prom.url, timeoutMs: 10000, maxBytes: 1 << 20 });
  const resolver = new PeerResolver({
    peers: [],
    readFile: () => '',
    clock: Date.now,
    cacheSeconds: 0,
    timeoutMs: 100,
  });
  const narrowed: Array<{ address?: string; name?: string; hosts: string[] }> = [];
  const peers = (oneHost: boolean) => {
    const hosts = new CachedHosts({
      read: async () => (await readPrometheusHosts(client, fleet)).hosts,
      readIn: oneHost
        ? async (scope) => {
            const found = await readPrometheusHostsIn(client, scope, fleet);
            narrowed.push({ ...scope, hosts: found.map((h) => h.name) });
            return found;
          }
        : undefined,
      clock: Date.now,
      cacheSeconds: 0,
      failureCacheSeconds: 0,
    });
    return new FleetPeers({ resolver: () => resolver, prometheus: () => hosts });
  };
  const wide = peers(false);
  const one = peers(true);
  const addresses = [
    'hv1',
    'HV1',
    'hv1.',
    '[hv1]',
    '10.0.0.1',
    'hv10',
    '10.0.0.10',
    'hv2.example',
    'HV2.EXAMPLE.',
    'hv2.example.',
    '10.0.0.3',
    '10.0.0.33',
    'hv3',
    'fd00::6',
    '[fd00::6]',
    '10.0.0.7',
    'hv7a',
    'hv8',
    'hv9',
    '10.0.0.9',
    'hv+1.(a)',
    'hv+1',
    'hv',
    '10.0.0',
    'nothere',
    'h\u0130v1',
  ];
  const facts = async (p: FleetPeers, ref: { name: string } | null) => {
    if (!ref) return null;
    const f = await p.facts(ref);
    // The evaluation time in a reason differs between two asks.
    const why = f.why?.replace(/ at \d{4}-\d\d-\d\dT[\d:.]+Z/g, ' at T');
    return { name: f.name, physBits: f.physBits, reachable: f.reachable, why, source: f.source };
  };
  for (const address of addresses) {
    const [a, b] = [await wide.findByAddress(address), await one.findByAddress(address)];
    t.deepEqual(b?.name ?? null, a?.name ?? null, address);
    t.deepEqual(await facts(one, b), await facts(wide, a), address);
  }
  for (const name of ['hv1', 'hv3', 'HV2.Example.', 'hv2.example', 'hv8', 'hv9', 'nothere']) {
    t.deepEqual(await facts(one, await one.findByName(name)), await facts(wide, await wide.findByName(name)), name);
  }
  // Not vacuous: what the fleet-wide list says of the hard cases.
  t.like(await facts(wide, await wide.findByAddress('10.0.0.3')), { name: 'hv3', physBits: 42, reachable: true });
  t.like(await facts(wide, await wide.findByAddress('hv2.example')), { name: 'HV2.Example.', physBits: 44 });
  t.like(await facts(wide, await wide.findByAddress('[fd00::6]')), { name: 'hv6', physBits: 48 });
  t.is(await wide.findByAddress('10.0.0.7'), null, 'two hosts on one target');
  t.like(await facts(wide, await wide.findByAddress('hv8')), { name: 'hv8', physBits: null, reachable: false });
  t.is(await wide.findByAddress('hv9'), null, 'another job');
  // And the one-host lookups read a few hosts, not the fleet (a non-ASCII address reads every host).
  const read = (address: string) => narrowed.find((n) => n.address === address)?.hosts;
  t.deepEqual(read('10.0.0.3'), ['hv3']);
  t.deepEqual(read('hv1'), ['hv1']);
  t.deepEqual(read('10.0.0.7'), ['hv7a', 'hv7b']);
  t.deepEqual(read('nothere'), []);
  t.deepEqual(narrowed.find((n) => n.name === 'hv3')?.hosts, ['hv3']);
  t.is(read('h\u0130v1')?.length, 9, 'every physbits host');
});
