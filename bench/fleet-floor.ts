#!/usr/bin/env node
/**
 * The fleet floor, run as its own process: the instant queries `physbitsctl fleet --prometheus`
 * sends, all at once against the same Prometheus at one evaluation time, each answer read whole and
 * parsed with JSON.parse; nothing is judged, bounded or rendered. No program can have the fleet's
 * series in hand with less work of its own.
 *
 *   node build/bench/fleet-floor.js URL [--lookback SECONDS] [--job NAME]
 *
 * The queries are written out here, not taken from agent/peers/prometheus-fleet.ts (the floor loads
 * nothing of physbits); test/bench/fleet-floor.test.ts holds the two lists equal.
 * Prints one JSON line: {"series": {name: count}, "bytes", "elapsedMs"}.
 */
import { parseArgs } from 'node:util';
import { nowMs } from './stats';

/** The fleet view's queries as physbits writes them, for one job. */
export function floorQueries(lookbackSeconds: number, job: string): Record<string, string> {
  const j = `{job="${job}"}`;
  const range = `[${lookbackSeconds}s]`;
  return {
    hosts: `last_over_time(physbits_host_info${j}${range})`,
    up: `up${j} and on (job, instance) last_over_time(physbits_host_info${j}${range})`,
    widths: `last_over_time(physbits_host_phys_bits${j}${range})`,
    fresh: `timestamp(physbits_host_phys_bits${j})`,
    guests: `physbits_guest_phys_bits${j}`,
    layouts: `physbits_guest_highest_address_bytes${j}`,
    vmsUp: `physbits_vm_up${j}`,
  };
}

/** Every query at once; each answer's series counted after a plain JSON.parse. */
export async function readFleetFloor(
  url: string,
  queries: Record<string, string>,
  time: number,
): Promise<{ series: Record<string, number>; bytes: number }> {
  const base = `${url.replace(/\/+$/, '')}/api/v1/query`;
  const names = Object.keys(queries);
  let bytes = 0;
  const counts = await Promise.all(
    names.map(async (name) => {
      const res = await fetch(`${base}?${new URLSearchParams({ query: queries[name], time: time.toFixed(3) })}`, {
        headers: { accept: 'application/json' },
      });
      const text = await res.text();
      bytes += text.length;
      const doc = JSON.parse(text) as { status: string; data?: { result?: unknown[] } };
      if (doc.status !== 'success' || !Array.isArray(doc.data?.result))
        throw new Error(`${name}: ${text.slice(0, 200)}`);
      return doc.data.result.length;
    }),
  );
  return { series: Object.fromEntries(names.map((n, i) => [n, counts[i]])), bytes };
}

async function main(): Promise<void> {
  const started = nowMs();
  const { values, positionals } = parseArgs({
    options: { lookback: { type: 'string', default: '3600' }, job: { type: 'string', default: 'physbits' } },
    allowPositionals: true,
  });
  const r = await readFleetFloor(positionals[0], floorQueries(Number(values.lookback), values.job!), Date.now() / 1000);
  process.stdout.write(`${JSON.stringify({ ...r, elapsedMs: nowMs() - started })}\n`);
}

if (require.main === module)
  main().catch((err) => {
    process.stderr.write(`fleet-floor: ${(err as Error).message}\n`);
    process.exit(1);
  });
