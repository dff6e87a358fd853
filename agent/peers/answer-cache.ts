/**
 * The one cache of answers about other hosts (a live agent's width, Prometheus's host list): a good
 * answer is reused for `goodSeconds`, a failed one for at most `failedSeconds` (and never longer than
 * a good one), so a peer that was down a moment ago is asked again soon; concurrent asks for one key
 * share one request. Keys are the configured peers, one per source, or the lookups of one host
 * (fleet-peers.ts); `maxKeys` bounds what is remembered: past it, expired answers go first, then the
 * oldest.
 */

const DEFAULT_MAX_KEYS = 256;

export interface AnswerCacheOptions<V> {
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  /** How long a good answer is reused (guard.peerCacheSeconds, fleet.cacheSeconds). */
  goodSeconds: number;
  /** How long a failure is remembered (guard.peerFailureCacheSeconds), capped at goodSeconds. */
  failedSeconds: number;
  /** Whether a resolved answer is a failure (a live peer that did not answer); a rejection always is. */
  failed?: (value: V) => boolean;
  /** At most this many answers are remembered (default 256). */
  maxKeys?: number;
}

interface Entry<V> {
  at: number;
  ttlMs: number;
  value?: V;
  error?: unknown;
  rejected: boolean;
}

export class AnswerCache<K, V> {
  private readonly entries = new Map<K, Entry<V>>();
  private readonly inflight = new Map<K, Promise<V>>();

  constructor(private readonly opts: AnswerCacheOptions<V>) {}

  /** The remembered answer for `key` while it is fresh and good; undefined otherwise (nothing is asked). */
  peek(key: K): V | undefined {
    const hit = this.entries.get(key);
    if (!hit || hit.rejected || this.opts.clock() - hit.at >= hit.ttlMs) return undefined;
    return this.opts.failed?.(hit.value as V) ? undefined : hit.value;
  }

  /** Forgets the answers of every key `drop` holds for (an ask under way is kept). */
  forget(drop: (key: K) => boolean): void {
    for (const k of [...this.entries.keys()]) if (drop(k)) this.entries.delete(k);
  }

  /** The remembered answer for `key` while it is fresh, else `ask()`'s (one ask at a time per key). */
  get(key: K, ask: () => Promise<V>): Promise<V> {
    const hit = this.entries.get(key);
    if (hit && this.opts.clock() - hit.at < hit.ttlMs) {
      return hit.rejected ? Promise.reject(hit.error as Error) : Promise.resolve(hit.value as V);
    }
    const running = this.inflight.get(key);
    if (running) return running;
    const p = ask().then(
      (value) => {
        this.remember(key, {
          at: this.opts.clock(),
          ttlMs: this.ttl(this.opts.failed?.(value) ?? false),
          value,
          rejected: false,
        });
        return value;
      },
      (error: unknown) => {
        this.remember(key, { at: this.opts.clock(), ttlMs: this.ttl(true), error, rejected: true });
        throw error;
      },
    );
    const shared = p.finally(() => this.inflight.delete(key));
    this.inflight.set(key, shared);
    return shared;
  }

  private ttl(failed: boolean): number {
    const good = Math.max(0, this.opts.goodSeconds) * 1000;
    return failed ? Math.min(good, Math.max(0, this.opts.failedSeconds) * 1000) : good;
  }

  private remember(key: K, entry: Entry<V>): void {
    this.entries.delete(key);
    if (entry.ttlMs <= 0) return;
    this.entries.set(key, entry);
    const max = this.opts.maxKeys ?? DEFAULT_MAX_KEYS;
    if (this.entries.size <= max) return;
    const now = this.opts.clock();
    for (const [k, e] of this.entries) if (now - e.at >= e.ttlMs) this.entries.delete(k);
    // Oldest first (a Map keeps insertion order, and an answer is re-inserted when it is renewed).
    for (const k of this.entries.keys()) {
      if (this.entries.size <= max) break;
      this.entries.delete(k);
    }
  }
}
