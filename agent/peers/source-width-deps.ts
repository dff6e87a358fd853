/**
 * lookupSourceWidth's dependencies from a config, for programs that run once (the libvirt hook, the
 * Proxmox hookscript): the live peers of peers[] asked for their status documents, fleet.prometheus
 * asked for the guest's series, and the source host's limit from peers[] and Prometheus's hosts
 * (the lower of the two, as the guard takes it). The daemon passes its own LivePeers instead.
 */
import { readFile } from 'node:fs/promises';
import { hostName, peersWithCaFiles, type Config } from '../core/config';
import { CachedHosts, FleetPeers } from './fleet-peers';
import { isLivePeer } from './peer';
import { PeerResolver } from './peer-resolver';
import { collectPeers } from './peer-status';
import { prometheusClient, readPrometheusHosts, readPrometheusHostsIn } from './prometheus-fleet';
import type { SourceWidthDeps } from './source-width';

/** Each live peer's answer is bounded by this (the daemon's LivePeers uses the same). */
export const PEER_ASK_TIMEOUT_MS = 3000;

/** The Prometheus half of the deps: the query runner and fleet.job, always together. */
export function prometheusSourceDeps(
  fleet: Config['fleet'],
  url: string,
  clock: () => number,
): Required<Pick<SourceWidthDeps, 'prometheusQuery' | 'prometheusJobs'>> {
  return {
    prometheusQuery: async (query) => (await prometheusClient(fleet, url)).query(query, clock() / 1000),
    prometheusJobs: fleet.job,
  };
}

export function sourceWidthDepsFromConfig(
  config: Config,
  opts: { clock?: () => number; deadlineMs?: number } = {},
): SourceWidthDeps {
  const clock = opts.clock ?? Date.now;
  const peers = peersWithCaFiles(config);
  const live = peers.filter(isLivePeer);
  const fleet = config.fleet;
  const url = fleet.prometheus;
  const deps: SourceWidthDeps = { self: hostName(config), deadlineMs: opts.deadlineMs };
  if (live.length > 0) deps.peerStatuses = () => collectPeers(live, { timeoutMs: PEER_ASK_TIMEOUT_MS });
  if (url) Object.assign(deps, prometheusSourceDeps(fleet, url, clock));
  const resolver = new PeerResolver({
    peers,
    readFile: (p) => readFile(p, 'utf8'),
    clock,
    cacheSeconds: 0,
    failureCacheSeconds: 0,
    timeoutMs: PEER_ASK_TIMEOUT_MS,
  });
  const prometheus = url
    ? new CachedHosts({
        read: async () => (await readPrometheusHosts(await prometheusClient(fleet, url), fleet)).hosts,
        readIn: async (scope) => readPrometheusHostsIn(await prometheusClient(fleet, url), scope, fleet),
        clock,
        cacheSeconds: fleet.cacheSeconds,
        failureCacheSeconds: config.guard.peerFailureCacheSeconds,
      })
    : null;
  const fleetPeers = new FleetPeers({ resolver: () => resolver, prometheus: () => prometheus });
  if (peers.length > 0 || prometheus) {
    deps.hostLimit = async (name) => {
      const ref = await fleetPeers.findByName(name);
      if (!ref) return null;
      const facts = await fleetPeers.facts(ref);
      return { physBits: facts.physBits, why: facts.why };
    };
  }
  return deps;
}
