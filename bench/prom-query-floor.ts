#!/usr/bin/env node
/**
 * The least a program can do to ask Prometheus what physbits asks it: the given instant queries,
 * sent at once over fresh connections (node:http, no keep-alive), every answer read whole and
 * parsed with JSON.parse, nothing else. No physbits code: the queries come on the command line.
 *
 *   node build/bench/prom-query-floor.js --url http://127.0.0.1:9090 --query Q [--query Q]... [--rounds N]
 *
 * Prints one JSON line: {"ms": [round 1, round 2, ...], "series": n, "bytes": n} (of the first round).
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

function get(url: string): Promise<{ bytes: number; series: number }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          const body = Buffer.concat(chunks);
          const doc = JSON.parse(body.toString('utf8')) as { status: string; data?: { result?: unknown[] } };
          if (res.statusCode !== 200 || doc.status !== 'success')
            throw new Error(`HTTP ${res.statusCode}: ${doc.status}`);
          resolve({ bytes: body.length, series: doc.data?.result?.length ?? 0 });
        } catch (err) {
          reject(err as Error);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { url: { type: 'string' }, query: { type: 'string', multiple: true }, rounds: { type: 'string' } },
  });
  const base = values.url?.replace(/\/+$/, '');
  const queries = values.query ?? [];
  if (!base || queries.length === 0) throw new Error('usage: prom-query-floor --url URL --query Q [--query Q]...');
  const ms: number[] = [];
  let first = { bytes: 0, series: 0 };
  for (let r = 0; r < Number(values.rounds ?? 1); r++) {
    const time = (Date.now() / 1000).toFixed(3);
    const t0 = performance.now();
    const answers = await Promise.all(
      queries.map((query) => get(`${base}/api/v1/query?${new URLSearchParams({ query, time })}`)),
    );
    ms.push(performance.now() - t0);
    if (r === 0) first = answers.reduce((a, b) => ({ bytes: a.bytes + b.bytes, series: a.series + b.series }), first);
  }
  process.stdout.write(JSON.stringify({ ms, ...first }) + '\n');
}

main().catch((err) => {
  process.stderr.write(`prom-query-floor: ${(err as Error).message}\n`);
  process.exit(1);
});
