/**
 * The one cache of answers about other hosts (a live agent's width, Prometheus's host list): a good
 * answer is reused for `goodSeconds`, a failed one for at most `failedSeconds` (and never longer than
 * a good one), so a peer that was down a moment ago is asked again soon; concurrent asks for one key
 * share one request. Keys are the configured peers or one per source: the map stays that small.
 */

export interface AnswerCacheOptions<V> {
  /** Milliseconds, as Date.now(). */
  clock: () => number;
  /** How long a good answer is reused (guard.peerCacheSeconds, fleet.cacheSeconds). */
  goodSeconds: number;
  /** How long a failure is remembered (guard.peerFailureCacheSeconds), capped at goodSeconds. */
  failedSeconds: number;
  /** Whether a resolved answer is a failure (a live peer that did not answer); a rejection always is. */
  failed?: (value: V) => boolean;
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
    if (entry.ttlMs > 0) this.entries.set(key, entry);
    else this.entries.delete(key);
  }
}
