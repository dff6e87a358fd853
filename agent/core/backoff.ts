/**
 * Retry and reconnection delays: exponential from `baseMs`, capped at `maxMs`, with `jitter` (0..1)
 * of each delay random. The supervisor reconnects with 0.2; alert delivery retries with 0.5 ("equal
 * jitter": half fixed, half random, so an HA pair of senders restarted together does not retry in
 * lockstep).
 */
export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 250, maxMs: 30000, jitter: 0.2 };

/**
 * Delay before attempt number `attempt` (0 = the first). `random` returns a number in [0, 1]: at 1
 * the delay is the full exponential step, at 0 the step less its jitter.
 */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 40);
  const step = Math.min(opts.maxMs, opts.baseMs * 2 ** exponent);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(step * (1 - opts.jitter * (1 - r)));
}
