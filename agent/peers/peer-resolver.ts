/**
 * The configured peers (peers[]): lookup by name or by the address a `migrate` names, and each
 * peer's width, either from the config (static peers) or asked live from its agent (GET {url}/v1/host
 * with the shared bearer token; https verified against the peer's CA file). A live answer is kept for
 * guard.peerCacheSeconds, a failed ask for guard.peerFailureCacheSeconds (answer-cache.ts); a live
 * peer that also has a configured physBits gets the lower of the two (merge.ts).
 */
import type { PeerConfig } from '../core/config';
import type { PeerFacts } from '../core/types';
import { AnswerCache } from './answer-cache';
import { lowerWidth } from './merge';
import { isLivePeer, normalizeAddress, physBitsOfHostDocument, type LivePeerConfig } from './peer';
import { getPeerJson, PeerError, peerUrl, type PeerFetch } from './peer-client';
import { isObject } from '../core/checks';

const HOST_PATH = 'v1/host';
const DEFAULT_MAX_BODY_BYTES = 64 * 1024;
/** How long a failed ask is remembered when the caller does not say (guard.peerFailureCacheSeconds). */
export const DEFAULT_FAILURE_CACHE_SECONDS = 2;

export interface PeerResolverOptions {
  peers: readonly PeerConfig[];
  readFile: (path: string) => Promise<string> | string;
  /** Default: node's http/https client, verifying https peers against their caFile. */
  fetch?: PeerFetch;
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  /** How long a live agent's answer is reused (guard.peerCacheSeconds). */
  cacheSeconds: number;
  /** How long a live agent that did not answer is remembered so (guard.peerFailureCacheSeconds, default 2). */
  failureCacheSeconds?: number;
  timeoutMs: number;
  /** Bound on a live agent's answer (default 64 KiB). */
  maxBodyBytes?: number;
}

export class PeerResolver {
  private readonly peers: readonly PeerConfig[];
  private readonly cache: AnswerCache<string, PeerFacts>;

  constructor(private readonly opts: PeerResolverOptions) {
    this.peers = opts.peers;
    this.cache = new AnswerCache({
      clock: opts.clock,
      goodSeconds: opts.cacheSeconds,
      failedSeconds: opts.failureCacheSeconds ?? DEFAULT_FAILURE_CACHE_SECONDS,
      failed: (facts) => !facts.reachable,
    });
  }

  list(): readonly PeerConfig[] {
    return this.peers;
  }

  findByAddress(host: string): PeerConfig | null {
    const want = normalizeAddress(host);
    if (want === '') return null;
    return this.peers.find((p) => normalizeAddress(p.address) === want) ?? null;
  }

  findByName(name: string): PeerConfig | null {
    return this.peers.find((p) => p.name === name) ?? null;
  }

  /** What is known of a peer now: static config, or the live agent (cached), or its fallback. */
  facts(peer: PeerConfig): Promise<PeerFacts> {
    if (!isLivePeer(peer))
      return Promise.resolve({ name: peer.name, physBits: peer.physBits, reachable: true, source: 'static' });
    return this.cache.get(peer.name, () => this.askLive(peer));
  }

  private async askLive(peer: LivePeerConfig): Promise<PeerFacts> {
    try {
      const host = await this.fetchHost(peer);
      const live = physBitsOfHostDocument(host);
      if (live === null) throw new PeerError('PEER_BAD_RESPONSE', 'the host document has no valid physBits');
      // A configured physBits is a ceiling: the agent may report less, never more.
      return { name: peer.name, physBits: lowerWidth(live, peer.physBits), reachable: true, source: 'live', host };
    } catch (err) {
      // docs/guard.md reports an answer past maxBodyBytes as PEER_BAD_RESPONSE.
      const code =
        err instanceof PeerError
          ? err.code === 'PEER_RESPONSE_TOO_LARGE'
            ? 'PEER_BAD_RESPONSE'
            : err.code
          : 'PEER_UNREACHABLE';
      const error = { code, message: err instanceof PeerError ? err.message : String((err as Error)?.message ?? err) };
      const fallback = peer.physBits ?? null;
      return {
        name: peer.name,
        physBits: fallback,
        reachable: false,
        source: fallback === null ? 'none' : 'fallback',
        error,
      };
    }
  }

  private async fetchHost(peer: LivePeerConfig): Promise<Record<string, unknown>> {
    const doc = await getPeerJson(peer, HOST_PATH, {
      timeoutMs: this.opts.timeoutMs,
      maxBytes: this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      readFile: this.opts.readFile,
      fetch: this.opts.fetch,
    });
    if (!isObject(doc)) {
      throw new PeerError('PEER_BAD_RESPONSE', `${peerUrl(peer.url, HOST_PATH)} did not answer a JSON object`);
    }
    return doc as Record<string, unknown>;
  }
}
