/**
 * The fleet read from a Prometheus-compatible query API. Every PromQL query physbits sends is written
 * here (the fleet view, the guard's and check-migration's peer widths): all evaluated at one time,
 * run at once; prometheus-hosts.ts turns their results into hosts and the fleet view's peers.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import type { Config } from '../core/config';
import type { PeerFacts, PrometheusSource } from '../core/types';
import { PrometheusClient, PrometheusError, tokenOf, type PrometheusFetch, type PromSample } from './prometheus-client';
import {
  fleetPeersFromSamples,
  hostsFromSamples,
  type FleetQueryName,
  type HostQueryName,
  type PromHost,
} from './prometheus-hosts';

export interface FleetQueryOptions {
  /** A host seen within this window but not up now is listed as unreachable. */
  lookbackSeconds: number;
}

/** The queries that describe the hosts (what the guard needs). */
export function hostQueries(opts: FleetQueryOptions): Record<HostQueryName, string> {
  const range = `[${opts.lookbackSeconds}s]`;
  return {
    hosts: `last_over_time(physbits_host_info${range})`,
    up: `up and on (job, instance) last_over_time(physbits_host_info${range})`,
    widths: `last_over_time(physbits_host_phys_bits${range})`,
    fresh: 'timestamp(physbits_host_phys_bits)',
  };
}

/** Every query of the fleet view: the hosts', and the guests'. */
export function fleetQueries(opts: FleetQueryOptions): Record<FleetQueryName, string> {
  return {
    ...hostQueries(opts),
    guests: 'physbits_guest_phys_bits',
    layouts: 'physbits_guest_highest_address_bytes',
    vmsUp: 'physbits_vm_up',
  };
}

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
): Promise<{ peers: PeerFacts[]; source: PrometheusSource }> {
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
