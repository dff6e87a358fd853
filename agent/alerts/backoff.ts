/**
 * Retry delays for alert delivery: exponential from one second, capped at alerts.retryMaxSeconds,
 * with "equal jitter" (half fixed, half random) so that an HA pair of senders restarted together
 * does not retry in lockstep.
 */
export interface BackoffPolicy {
  /** Delay before the first retry (ms). */
  baseMs: number;
  /** Upper bound of any delay (ms). */
  maxMs: number;
}

/**
 * Delay before retry number `attempt` (0 = the first retry). `random` returns a number in [0, 1);
 * with random = () => 0.999… the delay is the full exponential step, with () => 0 half of it.
 */
export function backoffDelay(attempt: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const exp = Math.min(Math.max(0, Math.floor(attempt)), 40);
  const step = Math.min(policy.maxMs, policy.baseMs * 2 ** exp);
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(step / 2 + (step / 2) * r);
}
