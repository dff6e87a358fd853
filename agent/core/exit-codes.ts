import type { Severity } from './types';

/**
 * Monitoring-plugin exit codes, plus sysexits for usage and config mistakes and for the daemon's
 * internal errors (EX_SOFTWARE: an uncaught exception or unhandled rejection).
 */
export const EXIT = { OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3, USAGE: 64, SOFTWARE: 70, CONFIG: 78 } as const;

export type State = Severity | 'unknown';

/** Rank for "several at once": critical beats unknown beats warning beats ok/info. */
const RANK: Record<State, number> = { ok: 0, info: 0, warning: 1, unknown: 2, critical: 3 };

export function worstState(states: Iterable<State>): State {
  let worst: State = 'ok';
  for (const s of states)
    if (RANK[s] > RANK[worst] || (RANK[s] === RANK[worst] && s === 'info' && worst === 'ok')) worst = s;
  return worst;
}

export function exitCodeFor(state: State): number {
  switch (state) {
    case 'critical':
      return EXIT.CRITICAL;
    case 'unknown':
      return EXIT.UNKNOWN;
    case 'warning':
      return EXIT.WARNING;
    default:
      return EXIT.OK;
  }
}
