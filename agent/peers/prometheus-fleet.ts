/**
 * The fleet read from a Prometheus-compatible query API. Every PromQL query physbits sends is written
 * here (the fleet view, the guard's and check-migration's peer widths): all evaluated at one time,
 * run at once; prometheus-hosts.ts turns their results into hosts and the fleet view's peers.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import type { Config } from '../core/config';
import type { PeerFacts, PrometheusSource } from '../core/types';
import {
  AskBudget,
  PrometheusClient,
  PrometheusError,
  tokenOf,
  type PrometheusFetch,
  type PromSample,
} from './prometheus-client';
import {
  fleetPeersFromSamples,
  hostsFromSamples,
  type FleetQueryName,
  type HostQueryName,
  type PromHost,
} from './prometheus-hosts';
import { normalizeAddress } from './peer';

export interface FleetQueryOptions {
  /** A host seen within this window but not up now is listed as unreachable. */
  lookbackSeconds: number;
  /** fleet.job: only series of these scrape jobs count (default ["physbits"]). */
  jobs?: readonly string[];
}

/** fleet.job's default: the job name docs/metrics.md gives physbits's scrape config. */
export const DEFAULT_JOBS: readonly string[] = ['physbits'];

/** A PromQL string literal (double quotes, backslash escapes). */
export function promString(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/** RE2 syntax escaped, so a job name is matched literally inside `=~`. */
function regexLiteral(value: string): string {
  return value.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&');
}

/**
 * The label matcher that keeps only fleet.job's series: `job="physbits"`, or `job=~"a|b"` for a
 * list (PromQL regular expressions are anchored at both ends).
 */
export function jobMatcher(jobs: readonly string[] = DEFAULT_JOBS): string {
  const list = jobs.length > 0 ? jobs : DEFAULT_JOBS;
  return list.length === 1 ? `job=${promString(list[0])}` : `job=~${promString(list.map(regexLiteral).join('|'))}`;
}

/** The queries that describe the hosts (what the guard needs), each limited to fleet.job's series. */
export function hostQueries(opts: FleetQueryOptions): Record<HostQueryName, string> {
  const range = `[${opts.lookbackSeconds}s]`;
  const job = `{${jobMatcher(opts.jobs)}}`;
  return {
    hosts: `last_over_time(physbits_host_info${job}${range})`,
    up: `up${job} and on (job, instance) last_over_time(physbits_host_info${job}${range})`,
    widths: `last_over_time(physbits_host_phys_bits${job}${range})`,
    fresh: `timestamp(physbits_host_phys_bits${job})`,
  };
}

/**
 * A PromQL (RE2) pattern that matches every label value in which `text` stands between two
 * characters that are not letters or digits (or the ends), in any case: every value whose host part
 * normalizeAddress (peer.ts) makes equal to `text` (what surrounds it is white space, brackets, one
 * dot, a port), and a few more, which the caller filters out exactly.
 */
function aroundPattern(text: string): string {
  return `(?is)(.*[^0-9a-z])?${regexLiteral(text)}([^0-9a-z].*)?`;
}

/**
 * The host queries for the hosts one migration address may name (fleet-peers.ts findByAddress):
 * every series of each host that has a physbits_host_info series whose `host` label or `instance`
 * contains the address as a word, so the hosts come out exactly as from hostQueries (all of each
 * host's targets and widths), only fewer of them; the caller matches the address exactly. Null when
 * the address, normalized, is not printable ASCII: a pattern could then miss a value
 * normalizeAddress matches, and the fleet-wide queries answer instead.
 */
export function hostQueriesAt(address: string, opts: FleetQueryOptions): Record<HostQueryName, string> | null {
  const want = normalizeAddress(address);
  if (!/^[\x21-\x7e]+$/.test(want)) return null;
  const range = `[${opts.lookbackSeconds}s]`;
  const job = jobMatcher(opts.jobs);
  const around = promString(aroundPattern(want));
  const matched =
    `(last_over_time(physbits_host_info{${job},host=~${around}}${range})` +
    ` or last_over_time(physbits_host_info{${job},instance=~${around}}${range}))`;
  const info = `(last_over_time(physbits_host_info{${job}}${range}) and on (host) ${matched})`;
  return {
    hosts: info,
    up: `up{${job}} and on (job, instance) ${info}`,
    widths: `last_over_time(physbits_host_phys_bits{${job}}${range}) and on (host) ${matched}`,
    fresh: `timestamp(physbits_host_phys_bits{${job}}) and on (host) ${matched}`,
  };
}

/** The host queries for the one host named `name` (its `host` label), as hostQueries has it. */
export function hostQueriesNamed(name: string, opts: FleetQueryOptions): Record<HostQueryName, string> {
  const range = `[${opts.lookbackSeconds}s]`;
  const sel = `{${jobMatcher(opts.jobs)},host=${promString(name)}}`;
  const info = `last_over_time(physbits_host_info${sel}${range})`;
  return {
    hosts: info,
    up: `up{${jobMatcher(opts.jobs)}} and on (job, instance) ${info}`,
    widths: `last_over_time(physbits_host_phys_bits${sel}${range})`,
    fresh: `timestamp(physbits_host_phys_bits${sel})`,
  };
}

/** Every query of the fleet view: the hosts', and the guests'. */
export function fleetQueries(opts: FleetQueryOptions): Record<FleetQueryName, string> {
  const job = `{${jobMatcher(opts.jobs)}}`;
  return {
    ...hostQueries(opts),
    guests: `physbits_guest_phys_bits${job}`,
    layouts: `physbits_guest_highest_address_bytes${job}`,
    vmsUp: `physbits_vm_up${job}`,
  };
}

/** The queries that find one guest's width: by name, and by UUID when one is given (source-width.ts). */
export function guestWidthQueries(guest: { name: string; uuid: string | null }, jobs?: readonly string[]): string[] {
  const job = jobMatcher(jobs);
  const queries = [`physbits_guest_phys_bits{${job},vm=${promString(guest.name)}}`];
  if (guest.uuid !== null) queries.push(`physbits_guest_phys_bits{${job},uuid=${promString(guest.uuid)}}`);
  return queries;
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
    maxSeries: fleet.maxSeries,
    token,
    tenant: fleet.tenant,
    fetch: deps.fetch,
  });
}

export type AskSettings = Pick<FleetSettings, 'lookbackSeconds' | 'staleSeconds' | 'job'> &
  Partial<Pick<FleetSettings, 'maxResponseBytes' | 'maxSeries' | 'maxHosts'>>;

/** The queries of one ask, run at once against one budget (fleet.maxResponseBytes, fleet.maxSeries). */
async function runAll<K extends string>(
  client: PrometheusClient,
  queries: Record<K, string>,
  time: number,
  fleet: AskSettings,
): Promise<Record<K, PromSample[]>> {
  const budget = new AskBudget(fleet.maxResponseBytes ?? DEFAULT_MAX_BYTES, fleet.maxSeries ?? DEFAULT_MAX_SERIES);
  const keys = Object.keys(queries) as K[];
  const results = await Promise.all(keys.map((k) => client.query(queries[k], time, budget)));
  return Object.fromEntries(keys.map((k, i) => [k, results[i]])) as Record<K, PromSample[]>;
}

/** fleet.maxHosts: the hosts named by physbits_host_info, counted before anything is built from them. */
function checkHostCount(samples: PromSample[], fleet: AskSettings, where: string): void {
  const max = fleet.maxHosts ?? DEFAULT_MAX_HOSTS;
  const names = new Set<string>();
  for (const s of samples) {
    if (s.labels.host) names.add(s.labels.host);
    if (names.size > max)
      throw new PrometheusError('PROM_TOO_MANY_HOSTS', `${where}: more than fleet.maxHosts (${max}) hosts`);
  }
}

const DEFAULT_MAX_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_SERIES = 200_000;
const DEFAULT_MAX_HOSTS = 10_000;

function sourceOf(client: PrometheusClient, time: number, queries: Record<string, string>): PrometheusSource {
  return { url: client.url, time: new Date(time * 1000).toISOString(), unixTime: time, queries };
}

/** Every host and guest Prometheus knows, as the fleet view's peers; rejects with a PrometheusError. */
export async function readPrometheusFleet(
  client: PrometheusClient,
  fleet: AskSettings,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<{ peers: PeerFacts[]; source: PrometheusSource }> {
  const time = (deps.clock ?? Date.now)() / 1000;
  const queries = fleetQueries({ lookbackSeconds: fleet.lookbackSeconds, jobs: fleet.job });
  const samples = await runAll(client, queries, time, fleet);
  checkHostCount(samples.hosts, fleet, client.url);
  return { peers: fleetPeersFromSamples(samples, time, fleet.staleSeconds), source: sourceOf(client, time, queries) };
}

/** Every host Prometheus knows, with its limit and whether it is up and fresh; rejects with a PrometheusError. */
export async function readPrometheusHosts(
  client: PrometheusClient,
  fleet: AskSettings,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<{ hosts: PromHost[]; source: PrometheusSource }> {
  const time = (deps.clock ?? Date.now)() / 1000;
  const queries = hostQueries({ lookbackSeconds: fleet.lookbackSeconds, jobs: fleet.job });
  const samples = await runAll(client, queries, time, fleet);
  checkHostCount(samples.hosts, fleet, client.url);
  return { hosts: hostsFromSamples(samples, time, fleet.staleSeconds), source: sourceOf(client, time, queries) };
}

/**
 * The hosts Prometheus knows that `scope` may name: every host (as readPrometheusHosts), the hosts
 * one migration address may name (a few more than match it: the caller matches exactly), or the
 * host of one name. Rejects with a PrometheusError.
 */
export async function readPrometheusHostsIn(
  client: PrometheusClient,
  scope: { address: string } | { name: string },
  fleet: AskSettings,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<PromHost[]> {
  const opts = { lookbackSeconds: fleet.lookbackSeconds, jobs: fleet.job };
  const queries = 'name' in scope ? hostQueriesNamed(scope.name, opts) : hostQueriesAt(scope.address, opts);
  if (!queries) return (await readPrometheusHosts(client, fleet, deps)).hosts;
  const time = (deps.clock ?? Date.now)() / 1000;
  const samples = await runAll(client, queries, time, fleet);
  checkHostCount(samples.hosts, fleet, client.url);
  return hostsFromSamples(samples, time, fleet.staleSeconds);
}

/** One guest's width series on fleet.prometheus, by name and by UUID, against one budget (source-width.ts). */
export async function readGuestWidths(
  client: PrometheusClient,
  guest: { name: string; uuid: string | null },
  fleet: AskSettings,
  deps: Pick<PrometheusFleetDeps, 'clock'> = {},
): Promise<PromSample[]> {
  const time = (deps.clock ?? Date.now)() / 1000;
  const queries = guestWidthQueries(guest, fleet.job);
  const budget = new AskBudget(fleet.maxResponseBytes ?? DEFAULT_MAX_BYTES, fleet.maxSeries ?? DEFAULT_MAX_SERIES);
  return (await Promise.all(queries.map((q) => client.query(q, time, budget)))).flat();
}
