/**
 * The fleet read from a Prometheus-compatible query API: the instant queries of
 * agent/judge/fleet-prometheus.ts, all evaluated at one time, run at once; the pure code there turns
 * their results into hosts and the fleet view's input.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import type { Config } from '../core/config';
import type { FleetPeerInput, PrometheusSource } from '../judge/fleet';
import {
  fleetPeersFromSamples,
  fleetQueries,
  hostQueries,
  hostsFromSamples,
  type PromHost,
} from '../judge/fleet-prometheus';
import { PrometheusClient, PrometheusError, tokenOf, type PrometheusFetch, type PromSample } from './prometheus-client';

export type FleetSettings = Config['fleet'];

export interface PrometheusFleetDeps {
  /** Milliseconds, as Date.now(). */
  clock?: () => number;
  readFile?: (path: string) => Promise<string>;
  fetch?: PrometheusFetch;
}

/** A client for `url` (or fleet.prometheus) with fleet.* bounds, its token read from fleet.tokenFile. */
export async function prometheusClient(
  fleet: FleetSettings,
  url: string,
  deps: PrometheusFleetDeps = {},
): Promise<PrometheusClient> {
  let token: string | undefined;
  if (fleet.tokenFile) {
    let text: string;
    try {
      text = await (deps.readFile ?? ((p: string) => fsReadFile(p, 'utf8')))(fleet.tokenFile);
    } catch (err) {
      throw new PrometheusError(
        'PROM_TOKEN_UNREADABLE',
        `fleet.tokenFile: cannot read ${fleet.tokenFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`,
      );
    }
    token = tokenOf(text, fleet.tokenFile);
  }
  return new PrometheusClient({
    url,
    timeoutMs: fleet.timeoutMs,
    maxBytes: fleet.maxResponseBytes,
    token,
    tenant: fleet.tenant,
    fetch: deps.fetch,
  });
}

async function runAll<K extends string>(
  client: PrometheusClient,
  queries: Record<K, string>,
  time: number,
): Promise<Record<K, PromSample[]>> {
  const keys = Object.keys(queries) as K[];
  const results = await Promise.all(keys.map((k) => client.query(queries[k], time)));
  return Object.fromEntries(keys.map((k, i) => [k, results[i]])) as Record<K, PromSample[]>;
}

function sourceOf(client: PrometheusClient, time: number, queries: Record<string, string>): PrometheusSource {
  return { url: client.url, time: new Date(time * 1000).toISOString(), unixTime: time, queries };
}

/** Every host and guest Prometheus knows, as the fleet view's peers; rejects with a PrometheusError. */
export async function readPrometheusFleet(
  client: PrometheusClient,
  fleet: Pick<FleetSettings, 'lookbackSeconds' | 'staleSeconds'>,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<{ peers: FleetPeerInput[]; source: PrometheusSource }> {
  const time = (deps.clock ?? Date.now)() / 1000;
  const queries = fleetQueries({ lookbackSeconds: fleet.lookbackSeconds });
  const samples = await runAll(client, queries, time);
  return { peers: fleetPeersFromSamples(samples, time, fleet.staleSeconds), source: sourceOf(client, time, queries) };
}

/** Every host Prometheus knows, with its limit and whether it is up and fresh; rejects with a PrometheusError. */
export async function readPrometheusHosts(
  client: PrometheusClient,
  fleet: Pick<FleetSettings, 'lookbackSeconds' | 'staleSeconds'>,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<{ hosts: PromHost[]; source: PrometheusSource }> {
  const time = (deps.clock ?? Date.now)() / 1000;
  const queries = hostQueries({ lookbackSeconds: fleet.lookbackSeconds });
  const samples = await runAll(client, queries, time);
  return { hosts: hostsFromSamples(samples, time, fleet.staleSeconds), source: sourceOf(client, time, queries) };
}
