/**
 * The fleet benchmark's floor (bench/fleet-floor.ts) must send the instant queries physbits sends for
 * the fleet view, or the ratio against it measures a different job: both ask the same recording
 * HTTP server, and the queries each sent (in any order) are compared, with the default lookback and
 * job and with others.
 */
import test from 'ava';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PrometheusClient } from '../../agent/peers/prometheus-client';
import { readPrometheusFleet } from '../../agent/peers/prometheus-fleet';
import { floorQueries, readFleetFloor } from '../../bench/fleet-floor';

const EMPTY = JSON.stringify({ status: 'success', data: { resultType: 'vector', result: [] } });

async function queriesOf(read: (url: string) => Promise<unknown>): Promise<string[]> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/api/v1/query' && u.searchParams.has('time')) seen.push(u.searchParams.get('query') ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end(EMPTY);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    await read(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  } finally {
    server.close();
  }
  return seen.sort();
}

for (const [lookbackSeconds, job] of [
  [3600, 'physbits'],
  [600, 'hypervisors'],
] as const) {
  test(`the floor sends the fleet view's queries: lookback ${lookbackSeconds} s, job ${job}`, async (t) => {
    const physbits = await queriesOf((url) =>
      readPrometheusFleet(new PrometheusClient({ url, timeoutMs: 5000, maxBytes: 1 << 20 }), {
        lookbackSeconds,
        staleSeconds: 300,
        job: [job],
      }),
    );
    const floor = await queriesOf((url) => readFleetFloor(url, floorQueries(lookbackSeconds, job), Date.now() / 1000));
    t.true(physbits.length >= 4, physbits.join('\n'));
    t.deepEqual(floor, physbits);
  });
}
