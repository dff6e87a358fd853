/**
 * Migration peers from two sources: the config's peers[] (static widths and live agents, through
 * PeerResolver) and, with fleet.prometheus set, every host Prometheus sees running physbits. A host
 * known from both gets the lower width (merge.ts); a host Prometheus lists but whose agent is not up
 * or whose width is stale is unknown there, and the guard applies guard.unknownPeer when no other
 * source knows it. Prometheus answers are cached for fleet.cacheSeconds, a failure for at most
 * guard.peerFailureCacheSeconds (answer-cache.ts), so a Prometheus that is down costs one bounded
 * query per period and never blocks the guard longer.
 */
import type { PeerFacts } from '../core/types';
import { AnswerCache } from './answer-cache';
import { lowerWidth } from './merge';
import { errorText, normalizeAddress } from './peer';
import type { PeerResolver } from './peer-resolver';
import type { PromHost } from './prometheus-hosts';

/** A host list that is read rarely and asked often. */
export interface HostsSource {
  hosts(): Promise<PromHost[]>;
}

export interface CachedHostsOptions {
  read: () => Promise<PromHost[]>;
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  /** How long an answer is reused (fleet.cacheSeconds). */
  cacheSeconds: number;
  /** How long a failure is remembered (guard.peerFailureCacheSeconds), at most cacheSeconds. */
  failureCacheSeconds: number;
}

/** The last answer of `read`, reused for cacheSeconds (a failure for failureCacheSeconds); one read at a time. */
export class CachedHosts implements HostsSource {
  private readonly cache: AnswerCache<'hosts', PromHost[]>;

  constructor(private readonly opts: CachedHostsOptions) {
    this.cache = new AnswerCache({
      clock: opts.clock,
      goodSeconds: opts.cacheSeconds,
      failedSeconds: opts.failureCacheSeconds,
    });
  }

  hosts(): Promise<PromHost[]> {
    return this.cache.get('hosts', this.opts.read);
  }
}

/** A peer as the guard names it: a configured one, or a host known from Prometheus. */
export type PeerRef = Pick<PeerFacts, 'name'>;

export interface FleetPeersOptions {
  resolver: () => PeerResolver;
  /** null when fleet.prometheus is not set. */
  prometheus: () => HostsSource | null;
}

export class FleetPeers {
  constructor(private readonly opts: FleetPeersOptions) {}

  /** Prometheus's hosts, or the reason there are none now. */
  private async promHosts(): Promise<{ hosts: PromHost[] } | { error: string } | null> {
    const source = this.opts.prometheus();
    if (!source) return null;
    try {
      return { hosts: await source.hosts() };
    } catch (err) {
      return { error: errorText(err) };
    }
  }

  /**
   * A configured peer by name, else a host Prometheus lists under that name; while Prometheus cannot
   * be asked, any name (its width is then unknown, and facts() says why).
   */
  async findByName(name: string): Promise<PeerRef | null> {
    const cfg = this.opts.resolver().findByName(name);
    if (cfg) return cfg;
    const prom = await this.promHosts();
    if (prom && 'error' in prom) return { name };
    return prom && prom.hosts.some((h) => h.name === name) ? { name } : null;
  }

  /**
   * A configured peer by its address, else the one host Prometheus lists with that name or target
   * address (two hosts on one address match neither: the guard cannot tell which would receive);
   * while Prometheus cannot be asked, the address itself, of unknown width.
   */
  async findByAddress(address: string): Promise<PeerRef | null> {
    const cfg = this.opts.resolver().findByAddress(address);
    if (cfg) return cfg;
    const want = normalizeAddress(address);
    if (!want) return null;
    const prom = await this.promHosts();
    if (!prom) return null;
    if ('error' in prom) return { name: address };
    const found = prom.hosts.filter((h) => h.addresses.some((a) => normalizeAddress(a) === want));
    return found.length === 1 ? { name: found[0].name } : null;
  }

  /** The peer's width: the lower of the config's (or its live agent's) and Prometheus's, each when known. */
  async facts(peer: PeerRef): Promise<PeerFacts> {
    const cfg = this.opts.resolver().findByName(peer.name);
    const [own, prom] = await Promise.all([
      cfg ? this.opts.resolver().facts(cfg) : Promise.resolve(null),
      this.promHosts(),
    ]);
    let fromProm: PeerFacts['prometheus'];
    let promWhy: string | undefined;
    if (prom && 'error' in prom) promWhy = `Prometheus cannot be asked (${prom.error})`;
    else if (prom) {
      const h = prom.hosts.find((x) => x.name === peer.name);
      if (h) {
        fromProm = h.reachable
          ? { physBits: h.physBits, reachable: true }
          : { physBits: null, reachable: false, error: h.error && errorText(h.error) };
        if (!h.reachable)
          promWhy = `Prometheus has no current width for ${peer.name} (${h.error ? errorText(h.error) : 'not up'})`;
      } else promWhy = `Prometheus lists no physbits host named ${peer.name}`;
    }
    const physBits = lowerWidth(own?.physBits, fromProm?.physBits);
    const result: PeerFacts = own
      ? { ...own, physBits }
      : { name: peer.name, physBits, reachable: fromProm?.reachable ?? false, source: 'none' };
    if (!own && fromProm) result.source = 'prometheus';
    if (fromProm) result.prometheus = fromProm;
    if (physBits === null) {
      const reasons = [own?.error ? `its agent did not answer (${own.error.code})` : null, promWhy].filter(Boolean);
      result.why = `the width of peer ${peer.name} is unknown${reasons.length ? `: ${reasons.join('; ')}` : ''}`;
    }
    return result;
  }
}
