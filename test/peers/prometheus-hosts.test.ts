import test from 'ava';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  PrometheusClient,
  PrometheusError,
  parseQueryResponse,
  type PromSample,
} from '../../agent/peers/prometheus-client';
import { buildFleet } from '../../agent/judge/fleet';
import {
  fleetPeersFromSamples,
  hostsFromSamples,
  instanceHost,
  type HostSamples,
} from '../../agent/peers/prometheus-hosts';
import { CachedHosts, FleetPeers } from '../../agent/peers/fleet-peers';
import { PeerResolver } from '../../agent/peers/peer-resolver';

const T = 1_700_000_000;
const s = (labels: Record<string, string>, value: number): PromSample => ({ labels, value, time: T });
const target = (host: string, n: number, pool?: string) => ({
  job: 'physbits',
  instance: `10.0.0.${n}:9741`,
  host,
  ...(pool ? { pool } : {}),
});

/** hv1 up and fresh; hv2 down; hv3 up but its width 400 s old; hv4 has no up series. */
function samples(): HostSamples {
  return {
    hosts: [s(target('hv1', 1, 'east'), 1), s(target('hv2', 2), 1), s(target('hv3', 3), 1), s(target('hv4', 4), 1)],
    up: [
      s({ job: 'physbits', instance: '10.0.0.1:9741' }, 1),
      s({ job: 'physbits', instance: '10.0.0.2:9741' }, 0),
      s({ job: 'physbits', instance: '10.0.0.3:9741' }, 1),
    ],
    widths: [
      s(target('hv1', 1, 'east'), 46),
      s(target('hv2', 2), 39),
      s(target('hv3', 3), 48),
      s(target('hv4', 4), 44),
    ],
    fresh: [s(target('hv1', 1, 'east'), T - 2), s(target('hv3', 3), T - 400)],
  };
}

test('hosts: up and fresh is reachable; down, stale or unscraped keeps its last width, unreachable, with the reason', (t) => {
  const hosts = hostsFromSamples(samples(), T, 300);
  t.deepEqual(
    hosts.map((h) => [h.name, h.physBits, h.reachable, h.pool ?? null, h.error?.code ?? null]),
    [
      ['hv1', 46, true, 'east', null],
      ['hv2', 39, false, null, 'PROM_TARGET_DOWN'],
      ['hv3', 48, false, null, 'PROM_SERIES_STALE'],
      ['hv4', 44, false, null, 'PROM_TARGET_DOWN'],
    ],
  );
  t.regex(hosts[1].error!.message, /up\{job="physbits",instance="10\.0\.0\.2:9741"\} is 0/);
  t.regex(hosts[2].error!.message, /last sample 400 s old \(fleet\.staleSeconds 300\)/);
  t.regex(hosts[3].error!.message, /no up series for/);
  t.deepEqual(hosts[0].addresses, ['hv1', '10.0.0.1']);
  t.is(hostsFromSamples(samples(), T, 500)[2].reachable, true, 'fresh enough under a longer staleSeconds');
});

test('instance host parts', (t) => {
  t.is(instanceHost('10.0.0.3:9741'), '10.0.0.3');
  t.is(instanceHost('[fd00::3]:9741'), 'fd00::3');
  t.is(instanceHost('hv3.example.com:9741'), 'hv3.example.com');
  t.is(instanceHost('hv3'), 'hv3');
});

test('fleet from samples: guests of reachable hosts, a guest not answering is unknown, the layout end decides a cell', (t) => {
  const g = (host: string, vm: string, acc: string) => ({ job: 'physbits', instance: 'x', host, vm, accelerator: acc });
  const peers = fleetPeersFromSamples(
    {
      ...samples(),
      guests: [
        s(g('hv1', 'web1', 'kvm'), 39),
        s(g('hv1', 'ci', 'tcg'), 46),
        s(g('hv1', 'gone', 'kvm'), 40),
        s(g('hv2', 'x', 'kvm'), 39),
      ],
      layouts: [s({ host: 'hv1', vm: 'web1' }, 2 ** 39 + 2 ** 30)],
      vmsUp: [s({ host: 'hv1', vm: 'web1' }, 1), s({ host: 'hv1', vm: 'ci' }, 1), s({ host: 'hv1', vm: 'gone' }, 0)],
    },
    T,
    300,
  );
  const doc = buildFleet({ peers, policy: { accelerators: ['kvm'] } });
  t.deepEqual(
    doc.hosts.map((h) => [h.name, h.physBits, h.reachable, h.source]),
    [
      ['hv1', 46, true, 'prometheus'],
      ['hv2', 39, false, 'prometheus'],
      ['hv3', 48, false, 'prometheus'],
      ['hv4', 44, false, 'prometheus'],
    ],
  );
  t.deepEqual(
    doc.guests.map((x) => [x.vm, x.physBits, x.state, x.fits!.hv1, x.fits!.hv3]),
    [
      ['ci', 46, 'unknown', true, true],
      ['gone', null, 'unknown', undefined, undefined],
      ['web1', 39, 'unknown', true, true],
    ],
  );
  const web1 = doc.guests.find((x) => x.vm === 'web1')!;
  t.is(web1.fits!.hv2, false, 'its layout ends above 2^39');
  t.is(web1.why!.hv2, 'layout ends at 513 GiB > 2^39 (512 GiB) (last width Prometheus saw; host unreachable)');
  t.is(doc.guests.find((x) => x.vm === 'gone')!.error?.code, 'PROM_VM_DOWN');
  t.is(doc.summary.exitCode, 3);
});

test('the query API answer: vector, scalar, error, junk', (t) => {
  t.deepEqual(
    parseQueryResponse(
      '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[12.5,"1"]}]}}',
      'q',
    ),
    [{ labels: { job: 'a' }, value: 1, time: 12.5 }],
  );
  t.deepEqual(parseQueryResponse('{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}', 'q'), [
    { labels: {}, value: 7, time: 1 },
  ]);
  const failed = t.throws(() =>
    parseQueryResponse('{"status":"error","errorType":"bad_data","error":"parse error at char 3"}', 'q'),
  );
  t.is((failed as PrometheusError).code, 'PROM_QUERY_FAILED');
  t.regex(failed!.message, /bad_data: parse error/);
  for (const junk of ['nope', '[]', '{"status":"success","data":{"resultType":"matrix","result":[]}}'])
    t.is((t.throws(() => parseQueryResponse(junk, 'q')) as PrometheusError).code, 'PROM_BAD_RESPONSE');
});

async function server(handler: Parameters<typeof createServer>[1]): Promise<{ url: string; server: Server }> {
  const srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, server: srv };
}

test('the client: token and tenant sent, bounded in time and size, typed failures', async (t) => {
  const seen: Array<Record<string, unknown>> = [];
  const { url, server: srv } = await server((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization, org: req.headers['x-scope-orgid'] });
    const q = new URL(req.url!, 'http://x').searchParams.get('query');
    if (q === 'slow') return; // never answers
    if (q === 'big') return void res.end(JSON.stringify({ pad: 'x'.repeat(200_000) }));
    if (q === 'denied') return void res.writeHead(401).end();
    if (q === 'moved') return void res.writeHead(302, { location: 'http://elsewhere/' }).end();
    if (q === 'bad') return void res.writeHead(400).end('{"status":"error","errorType":"bad_data","error":"no"}');
    res.end('{"status":"success","data":{"resultType":"vector","result":[]}}');
  });
  t.teardown(() => {
    srv.closeAllConnections();
    srv.close();
  });
  const client = new PrometheusClient({
    url: `${url}/prefix/`,
    timeoutMs: 10000,
    maxBytes: 65536,
    token: 'tok',
    tenant: 'org1',
  });
  t.deepEqual(await client.query('up', 1234.5), []);
  t.deepEqual(seen[0], { url: '/prefix/api/v1/query?query=up&time=1234.500', auth: 'Bearer tok', org: 'org1' });
  const code = async (q: string) => ((await t.throwsAsync(client.query(q, 1))) as PrometheusError).code;
  const impatient = new PrometheusClient({ url, timeoutMs: 200, maxBytes: 65536 });
  t.is(((await t.throwsAsync(impatient.query('slow', 1))) as PrometheusError).code, 'PROM_TIMEOUT');
  t.is(await code('big'), 'PROM_RESPONSE_TOO_LARGE');
  t.is(await code('denied'), 'PROM_UNAUTHORIZED');
  t.is(await code('moved'), 'PROM_HTTP_STATUS');
  t.is(await code('bad'), 'PROM_QUERY_FAILED');
  const closed = new PrometheusClient({ url: 'http://127.0.0.1:1', timeoutMs: 1000, maxBytes: 1024 });
  t.is(((await t.throwsAsync(closed.query('up', 1))) as PrometheusError).code, 'PROM_UNREACHABLE');
});

test('peers from two sources: the lower width wins; Prometheus-only hosts by name or target; Prometheus down is unknown', async (t) => {
  const resolver = new PeerResolver({
    peers: [
      { name: 'hv1', address: '10.9.9.1', physBits: 48 },
      { name: 'hv3', address: '10.9.9.3', physBits: 40 },
    ],
    readFile: () => '',
    fetch: () => Promise.reject(new Error('no live peers here')),
    clock: () => 0,
    cacheSeconds: 0,
    timeoutMs: 100,
  });
  let now = 0;
  let reads = 0;
  let down = false;
  const hosts = new CachedHosts({
    read: async () => {
      reads++;
      if (down) throw new PrometheusError('PROM_UNREACHABLE', 'http://prom/api/v1/query: ECONNREFUSED');
      return hostsFromSamples(samples(), T, 300);
    },
    clock: () => now,
    cacheSeconds: 5,
    failureCacheSeconds: 2,
  });
  const peers = new FleetPeers({ resolver: () => resolver, prometheus: () => hosts });
  t.like(await peers.facts({ name: 'hv1' }), { physBits: 46, source: 'static' }, 'configured 48, Prometheus 46');
  t.like(await peers.facts({ name: 'hv3' }), { physBits: 40 }, 'stale in Prometheus: the configured width');
  t.is((await peers.findByAddress('10.0.0.1'))?.name, 'hv1');
  t.is((await peers.findByAddress('10.0.0.2'))?.name, 'hv2');
  t.is(await peers.findByAddress('192.0.2.1'), null);
  const hv2 = await peers.facts({ name: 'hv2' });
  t.like(hv2, { physBits: null, source: 'prometheus', reachable: false });
  t.regex(hv2.why!, /Prometheus has no current width for hv2 \(PROM_TARGET_DOWN/);
  t.is(reads, 1, 'cached');
  down = true;
  now = 6000;
  const unknown = await peers.facts({ name: 'hv2' });
  t.is(unknown.physBits, null);
  t.regex(unknown.why!, /Prometheus cannot be asked \(PROM_UNREACHABLE/);
  t.like(await peers.facts({ name: 'hv1' }), { physBits: 48 }, 'static peers still work');
  t.is((await peers.findByAddress('10.0.0.2'))?.name, '10.0.0.2', 'an unknown peer while Prometheus is down');
  t.is(reads, 2, 'the failure is cached too');
});

test('a host with two width series that disagree takes the lower, whichever is fresher', (t) => {
  const a = { job: 'physbits', instance: '10.0.0.2:9741', host: 'hvB' };
  const b = { job: 'physbits', instance: '10.0.0.9:9741', host: 'hvB' };
  for (const [wa, wb, freshest] of [
    [39, 52, b],
    [52, 39, a],
    [39, 52, a],
  ] as const) {
    const hosts = hostsFromSamples(
      {
        hosts: [s(a, 1), s(b, 1)],
        up: [s({ job: a.job, instance: a.instance }, 1), s({ job: b.job, instance: b.instance }, 1)],
        widths: [s(a, wa), s(b, wb)],
        fresh: [s(a, T - (freshest === a ? 1 : 5)), s(b, T - (freshest === b ? 1 : 5))],
      },
      T,
      300,
    );
    t.like(hosts[0], { name: 'hvB', physBits: 39, reachable: true }, `${wa} and ${wb}`);
  }
});
