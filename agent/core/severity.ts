/** The order of severities, one copy: ok < info < warning < critical. */
import type { Severity } from './types';

const RANK: Readonly<Record<Severity, number>> = { ok: 0, info: 1, warning: 2, critical: 3 };

/** 0 ok, 1 info, 2 warning, 3 critical (the physbits_vm_severity metric's scale). */
export function severityRank(s: Severity): number {
  return RANK[s];
}

/** The more severe of the two. */
export function maxSeverity(a: Severity, b: Severity): Severity {
  return RANK[b] > RANK[a] ? b : a;
}

/** Orders by severity, most severe first; Array.prototype.sort is stable, so ties keep their order. */
export function byDescendingSeverity(a: { severity: Severity }, b: { severity: Severity }): number {
  return RANK[b.severity] - RANK[a.severity];
}
