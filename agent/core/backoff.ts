/** Reconnection delays: exponential from `baseMs` to `maxMs`, with up to `jitter` of each delay random. */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  jitter: number; // 0..1
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 250, maxMs: 30000, jitter: 0.2 };

export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exp = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(exp * (1 - opts.jitter * random()));
}
