/**
 * The daemon's view of its migration peers: a PeerResolver over the current config (rebuilt on
 * reload), the last known widths for verdicts, and peers' status documents for the fleet view.
 */
import { readFile } from 'node:fs/promises';

import { hostName, peersWithCaFiles, type Config } from '../core/config';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { PeerFacts } from '../core/types';
import { CachedHosts, FleetPeers, type HostsSource, type PeerRef } from '../peers/fleet-peers';
import { MAX_NOTICE_BYTES, type IncomingNotice } from '../peers/incoming-notice';
import { isLivePeer } from '../peers/peer';
import { PeerError, postPeerJson } from '../peers/peer-client';
import { PeerResolver } from '../peers/peer-resolver';
import { collectPeers } from '../peers/peer-status';
import { prometheusClient, readPrometheusHosts, readPrometheusHostsIn } from '../peers/prometheus-fleet';
import { lookupSourceWidth, type GuestIdentity, type SourceWidth, type SourceWidthDeps } from '../peers/source-width';
import { prometheusSourceDeps } from '../peers/source-width-deps';

const PEER_TIMEOUT_MS = 3000;

/**
 * A live peer's width is asked for at most 3 s, or fleet.timeoutMs when that is shorter: the guard
 * asks the peer and Prometheus at once, so a decision waits for no source longer than
 * fleet.timeoutMs (docs/guard.md).
 */
function askTimeoutMs(cfg: Config): number {
  return Math.min(PEER_TIMEOUT_MS, cfg.fleet.timeoutMs);
}

export class LivePeers {
  private resolver: PeerResolver;
  private resolverFor: Config['peers'] | null = null;
  private resolverTimeoutMs = PEER_TIMEOUT_MS;
  private known: PeerFacts[] = [];
  private prometheus: HostsSource | null = null;
  private prometheusFor: Config['fleet'] | null = null;
  private readonly fleetPeers: FleetPeers;

  constructor(
    private readonly config: () => Config,
    private readonly logger: Logger,
    private readonly timers: Pick<Timers, 'now'>,
  ) {
    this.resolver = this.build();
    this.fleetPeers = new FleetPeers({ resolver: () => this.current(), prometheus: () => this.prometheusHosts() });
  }

  /** fleet.prometheus's hosts, cached for fleet.cacheSeconds; rebuilt when the fleet settings change. */
  private prometheusHosts(): HostsSource | null {
    const fleet = this.config().fleet;
    if (fleet === this.prometheusFor) return this.prometheus;
    this.prometheusFor = fleet;
    const url = fleet.prometheus;
    this.prometheus = url
      ? new CachedHosts({
          read: async () => {
            const client = await prometheusClient(fleet, url);
            return (await readPrometheusHosts(client, fleet)).hosts;
          },
          readIn: async (scope) => readPrometheusHostsIn(await prometheusClient(fleet, url), scope, fleet),
          clock: () => Date.now(),
          cacheSeconds: fleet.cacheSeconds,
          failureCacheSeconds: this.config().guard.peerFailureCacheSeconds,
        })
      : null;
    return this.prometheus;
  }

  private build(): PeerResolver {
    const cfg = this.config();
    this.resolverFor = cfg.peers;
    this.resolverTimeoutMs = askTimeoutMs(cfg);
    return new PeerResolver({
      peers: peersWithCaFiles(cfg),
      readFile: (p) => readFile(p, 'utf8'),
      clock: () => this.timers.now(),
      cacheSeconds: cfg.guard.peerCacheSeconds,
      failureCacheSeconds: cfg.guard.peerFailureCacheSeconds,
      timeoutMs: this.resolverTimeoutMs,
    });
  }

  private current(): PeerResolver {
    const cfg = this.config();
    if (this.resolverFor !== cfg.peers || this.resolverTimeoutMs !== askTimeoutMs(cfg)) this.resolver = this.build();
    return this.resolver;
  }

  /** A configured peer, else a host fleet.prometheus lists under that name. */
  findByName(name: string): Promise<PeerRef | null> {
    return this.fleetPeers.findByName(name);
  }

  /** A configured peer by address, else the one host fleet.prometheus lists at that address. */
  findByAddress(address: string): Promise<PeerRef | null> {
    return this.fleetPeers.findByAddress(address);
  }

  /** The lower of the config's (or live agent's) width and Prometheus's, each when known. */
  factsOf(peer: PeerRef): Promise<PeerFacts> {
    return this.fleetPeers.facts(peer);
  }

  /** What the guard asks: configured peers (live answers cached for guard.peerCacheSeconds) and fleet.prometheus's hosts. */
  lookup(): FleetPeers {
    return this.fleetPeers;
  }

  /** Peers' widths as last refreshed, for verdicts. */
  facts(): PeerFacts[] {
    return this.known;
  }

  async refresh(): Promise<void> {
    const r = this.current();
    const all = await Promise.all(
      r.list().map((p) =>
        r.facts(p).catch(
          (err) =>
            ({
              name: p.name,
              physBits: null,
              reachable: false,
              error: { code: 'PEER_UNREACHABLE', message: String(err) },
            }) as PeerFacts,
        ),
      ),
    );
    for (const f of all) {
      const before = this.known.find((k) => k.name === f.name);
      if (before && before.reachable !== f.reachable) {
        this.logger.warn(f.reachable ? 'peer reachable again' : 'peer unreachable', {
          peer: f.name,
          error: f.error?.message,
        });
      }
    }
    this.known = all.map((f) => ({ name: f.name, physBits: f.physBits, reachable: f.reachable }));
  }

  /**
   * Tells a live peer's agent the width a guest migrating there booted with (POST /v1/incoming).
   * Null when told; else why not (a static peer has no agent to tell, or the agent did not answer).
   */
  async notifyIncoming(peerName: string, notice: IncomingNotice): Promise<string | null> {
    const peer = this.config().peers.find((p) => p.name === peerName);
    if (!peer || !isLivePeer(peer)) return `peer ${peerName} has no agent url to tell`;
    try {
      // Node's http/https client (nodePeerFetch): an https peer is verified against its caFile.
      await postPeerJson(peer, 'v1/incoming', notice, {
        timeoutMs: askTimeoutMs(this.config()),
        maxBytes: MAX_NOTICE_BYTES,
        readFile: (p) => readFile(p, 'utf8'),
      });
      return null;
    } catch (err) {
      return err instanceof PeerError ? `${err.code}: ${err.message}` : String((err as Error)?.message ?? err);
    }
  }

  /** Every peer's status document (live peers asked now), for the fleet view. */
  statuses(): Promise<PeerFacts[]> {
    return collectPeers(peersWithCaFiles(this.config()), { timeoutMs: PEER_TIMEOUT_MS });
  }

  /**
   * The width a guest arriving here by migration has at its source (docs/guard.md "host-phys-bits=on guests after a
   * migration"): its status on a live peer or its fleet.prometheus series. QEMU does not say which
   * host the stream came from, so the source host's limit is not a fallback here. Never rejects.
   */
  sourceWidth(guest: GuestIdentity): Promise<SourceWidth> {
    const cfg = this.config();
    const live = peersWithCaFiles(cfg).filter(isLivePeer);
    const fleet = cfg.fleet;
    const url = fleet.prometheus;
    const deps: SourceWidthDeps = { self: hostName(cfg) };
    if (live.length > 0) deps.peerStatuses = () => collectPeers(live, { timeoutMs: PEER_TIMEOUT_MS });
    if (url)
      Object.assign(
        deps,
        prometheusSourceDeps(fleet, url, () => this.timers.now()),
      );
    return lookupSourceWidth(guest, deps);
  }
}
