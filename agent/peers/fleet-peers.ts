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
  /** Every host. */
  hosts(): Promise<PromHost[]>;
  /** At least every host whose name or target address is `address` (normalizeAddress); default hosts(). */
  hostsAt?(address: string): Promise<PromHost[]>;
  /** At least the host named `name`; default hosts(). */
  hostsNamed?(name: string): Promise<PromHost[]>;
}

export interface CachedHostsOptions {
  /** Every host (the fleet-wide host queries). */
  read: () => Promise<PromHost[]>;
  /** The hosts one address may name, or one name (a few host series instead of the fleet's). */
  readIn?: (scope: { address: string } | { name: string }) => Promise<PromHost[]>;
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  /** How long an answer is reused (fleet.cacheSeconds). */
  cacheSeconds: number;
  /** How long a failure is remembered (guard.peerFailureCacheSeconds), at most cacheSeconds. */
  failureCacheSeconds: number;
}

/**
 * One-host lookups asked per fleet.cacheSeconds before the next lookup reads every host instead (and
 * that answer serves every lookup for fleet.cacheSeconds): a burst of `migrate`s to many addresses
 * costs Prometheus this many small asks and one fleet-wide one, as before there were small ones.
 */
export const MAX_HOST_LOOKUPS = 16;

/**
 * The last answers of `read` (every host) and `readIn` (one address or name), each reused for
 * cacheSeconds; a failed ask of either is remembered for failureCacheSeconds and answers every
 * lookup meanwhile (the source is down, whatever was asked); one ask at a time per key.
 */
export class CachedHosts implements HostsSource {
  private readonly cache: AnswerCache<string, PromHost[]>;
  private failure: { at: number; error: unknown } | null = null;
  private lookups: number[] = [];

  constructor(private readonly opts: CachedHostsOptions) {
    this.cache = new AnswerCache({
      clock: opts.clock,
      goodSeconds: opts.cacheSeconds,
      failedSeconds: opts.failureCacheSeconds,
      maxKeys: 4 * MAX_HOST_LOOKUPS,
    });
  }

  hosts(): Promise<PromHost[]> {
    return this.remembering(this.cache.get('', () => this.opts.read().then((hosts) => this.newest('', hosts))));
  }

  /**
   * The newest answer wins: when one arrives, every other remembered one is forgotten, so that two
   * lookups of one host (check-migration by name, then `migrate` by its address) never see Prometheus
   * older than what was last read.
   */
  private newest(key: string, hosts: PromHost[]): PromHost[] {
    this.cache.forget((k) => k !== key);
    return hosts;
  }

  hostsAt(address: string): Promise<PromHost[]> {
    return this.lookup(`@${normalizeAddress(address)}`, { address });
  }

  hostsNamed(name: string): Promise<PromHost[]> {
    return this.lookup(`=${name}`, { name });
  }

  private lookup(key: string, scope: { address: string } | { name: string }): Promise<PromHost[]> {
    const all = this.cache.peek('');
    if (all) return Promise.resolve(all);
    const now = this.opts.clock();
    const failedMs = Math.min(this.opts.failureCacheSeconds, this.opts.cacheSeconds) * 1000;
    if (this.failure && now - this.failure.at < failedMs) return Promise.reject(this.failure.error as Error);
    const readIn = this.opts.readIn;
    if (!readIn) return this.hosts();
    const known = this.cache.peek(key);
    if (known) return Promise.resolve(known);
    this.lookups = this.lookups.filter((at) => now - at < this.opts.cacheSeconds * 1000);
    if (this.lookups.length >= MAX_HOST_LOOKUPS) return this.hosts();
    this.lookups.push(now);
    // A server that does not take the one-host queries (PROM_QUERY_FAILED: a PromQL dialect without
    // them) is asked for every host instead.
    const ask = () =>
      readIn(scope)
        .then((hosts) => this.newest(key, hosts))
        .catch((err: unknown) =>
          (err as { code?: string })?.code === 'PROM_QUERY_FAILED' ? this.hosts() : Promise.reject(err as Error),
        );
    return this.remembering(this.cache.get(key, ask));
  }

  private remembering(answer: Promise<PromHost[]>): Promise<PromHost[]> {
    return answer.catch((error: unknown) => {
      this.failure = { at: this.opts.clock(), error };
      throw error;
    });
  }
}

/** A peer as the guard names it: a configured one, or a host known from Prometheus. */
export type PeerRef = Pick<PeerFacts, 'name'>;

export interface FleetPeersOptions {
  resolver: () => PeerResolver;
  /** null when fleet.prometheus is not set. */
  prometheus: () => HostsSource | null;
}

/** What Prometheus answered for a lookup: the hosts it may concern, or why it could not be asked. */
type PromAnswer = { hosts: PromHost[] } | { error: string };

export class FleetPeers {
  /** The answer each ref that findByName/findByAddress made was found with, so facts() asks nothing more. */
  private readonly foundWith = new WeakMap<PeerRef, PromAnswer>();

  constructor(private readonly opts: FleetPeersOptions) {}

  /** Prometheus's hosts that the lookup concerns, or the reason there are none now; null without fleet.prometheus. */
  private async promHosts(scope: { address: string } | { name: string }): Promise<PromAnswer | null> {
    const source = this.opts.prometheus();
    if (!source) return null;
    try {
      if ('name' in scope) return { hosts: await (source.hostsNamed?.(scope.name) ?? source.hosts()) };
      return { hosts: await (source.hostsAt?.(scope.address) ?? source.hosts()) };
    } catch (err) {
      return { error: errorText(err) };
    }
  }

  private found(ref: PeerRef, answer: PromAnswer): PeerRef {
    this.foundWith.set(ref, answer);
    return ref;
  }

  /**
   * A configured peer by name, else a host Prometheus lists under that name; while Prometheus cannot
   * be asked, any name (its width is then unknown, and facts() says why).
   */
  async findByName(name: string): Promise<PeerRef | null> {
    const cfg = this.opts.resolver().findByName(name);
    if (cfg) return cfg;
    const prom = await this.promHosts({ name });
    if (prom && 'error' in prom) return this.found({ name }, prom);
    return prom && prom.hosts.some((h) => h.name === name) ? this.found({ name }, prom) : null;
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
    const prom = await this.promHosts({ address });
    if (!prom) return null;
    if ('error' in prom) return this.found({ name: address }, prom);
    const found = prom.hosts.filter((h) => h.addresses.some((a) => normalizeAddress(a) === want));
    return found.length === 1 ? this.found({ name: found[0].name }, prom) : null;
  }

  /**
   * The peer's width: the lower of the config's (or its live agent's) and Prometheus's, each when
   * known. Prometheus's is the answer the peer was found with, else it is asked now, with the agent.
   */
  async facts(peer: PeerRef): Promise<PeerFacts> {
    const cfg = this.opts.resolver().findByName(peer.name);
    const known = this.foundWith.get(peer);
    const [own, prom] = await Promise.all([
      cfg ? this.opts.resolver().facts(cfg) : Promise.resolve(null),
      known ?? this.promHosts({ name: peer.name }),
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
      const reasons = [own?.error ? `its agent did not answer (${errorText(own.error)})` : null, promWhy].filter(
        Boolean,
      );
      result.why = `the width of peer ${peer.name} is unknown${reasons.length ? `: ${reasons.join('; ')}` : ''}`;
    }
    return result;
  }
}
