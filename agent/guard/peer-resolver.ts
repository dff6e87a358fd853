/**
 * The configured migration peers: lookup by the address a `migrate` names, and each peer's width,
 * either from the config (static peers) or asked live from its agent (GET {url}/v1/host with the
 * shared bearer token; https verified against the peer's CA file), cached for guard.peerCacheSeconds
 * on an injected clock. A live peer that also has a configured physBits gets the lower of the two.
 *
 * Address matching is deliberately plain: the target host string equals a peer's `address` after
 * trimming, dropping IPv6 brackets and one trailing dot, ignoring case. Nothing is resolved through
 * DNS; "localhost" or 127.0.0.1 match only a peer configured with exactly that address.
 */
import type { PeerConfig } from '../core/config';
import { getPeerJson, PeerError, peerUrl, type PeerFetch } from '../api/peer-client';

const HOST_PATH = 'v1/host';
const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

export interface PeerFactsResult {
  name: string;
  /** The width to compare with; null when neither the agent nor the config tells it. */
  physBits: number | null;
  /** Static peers: true (nothing to reach). Live peers: whether the agent answered. */
  reachable: boolean;
  /**
   * 'static' config value, 'live' agent answer, 'fallback' static value after a failed ask, 'none';
   * 'prometheus' a host known only from Prometheus (agent/guard/fleet-peers.ts).
   */
  source: 'static' | 'live' | 'fallback' | 'none' | 'prometheus';
  /** The live agent's host document. */
  host?: Record<string, unknown>;
  /** Why a live peer could not be asked (PEER_* code). */
  error?: { code: string; message: string };
}

/** What the resolver asks through; the global fetch fits. */
export type FetchLike = PeerFetch;

export interface PeerResolverOptions {
  peers: readonly PeerConfig[];
  readFile: (path: string) => Promise<string> | string;
  /** Default: node's http/https client, verifying https peers against their caFile. */
  fetch?: FetchLike;
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  cacheSeconds: number;
  timeoutMs: number;
  /** Bound on a live agent's answer (default 64 KiB). */
  maxBodyBytes?: number;
}

export { PeerError };

/** Canonical form of a host string for matching. */
export function normalizeAddress(host: string): string {
  let h = host.trim();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.') && h.length > 1) h = h.slice(0, -1);
  return h.toLowerCase();
}

function isLive(p: PeerConfig): p is Extract<PeerConfig, { url: string }> {
  return typeof (p as { url?: unknown }).url === 'string';
}

/** The width in a host document ({ physBits } or a status document's { host: { physBits } }). */
export function physBitsOfHostDocument(doc: unknown): number | null {
  if (typeof doc !== 'object' || doc === null) return null;
  const d = doc as Record<string, unknown>;
  const v = typeof d.physBits === 'number' ? d.physBits : (d.host as Record<string, unknown> | undefined)?.physBits;
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 64 ? v : null;
}

export class PeerResolver {
  private readonly peers: readonly PeerConfig[];
  private readonly cache = new Map<string, { at: number; value: PeerFactsResult }>();
  private readonly inflight = new Map<string, Promise<PeerFactsResult>>();

  constructor(private readonly opts: PeerResolverOptions) {
    this.peers = opts.peers;
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
  async facts(peer: PeerConfig): Promise<PeerFactsResult> {
    if (!isLive(peer)) return { name: peer.name, physBits: peer.physBits, reachable: true, source: 'static' };
    const ttl = this.opts.cacheSeconds * 1000;
    const hit = this.cache.get(peer.name);
    if (hit && ttl > 0 && this.opts.clock() - hit.at < ttl) return hit.value;
    const running = this.inflight.get(peer.name);
    if (running) return running;
    const p = this.askLive(peer).finally(() => this.inflight.delete(peer.name));
    this.inflight.set(peer.name, p);
    const value = await p;
    if (ttl > 0) this.cache.set(peer.name, { at: this.opts.clock(), value });
    return value;
  }

  private async askLive(peer: Extract<PeerConfig, { url: string }>): Promise<PeerFactsResult> {
    try {
      const host = await this.fetchHost(peer);
      const live = physBitsOfHostDocument(host);
      if (live === null) throw new PeerError('PEER_BAD_RESPONSE', 'the host document has no valid physBits');
      // A configured physBits is a ceiling: the agent may report less, never more.
      const physBits = peer.physBits === undefined ? live : Math.min(live, peer.physBits);
      return { name: peer.name, physBits, reachable: true, source: 'live', host };
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

  private async fetchHost(peer: Extract<PeerConfig, { url: string }>): Promise<Record<string, unknown>> {
    const doc = await getPeerJson(peer, HOST_PATH, {
      timeoutMs: this.opts.timeoutMs,
      maxBytes: this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      readFile: this.opts.readFile,
      fetch: this.opts.fetch,
    });
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
      throw new PeerError('PEER_BAD_RESPONSE', `${peerUrl(peer.url, HOST_PATH)} did not answer a JSON object`);
    }
    return doc as Record<string, unknown>;
  }
}
