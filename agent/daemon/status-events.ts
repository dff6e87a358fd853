/**
 * What a VM's status change means on the event stream. Pure: (previous status, new status) → the
 * events to publish, tested as a table in test/daemon/status-events.test.ts.
 */
import type { PublishedEvent } from '../api/api-types';
import type { State } from '../core/exit-codes';
import type { VmStatus } from '../core/types';

/** A status's place on the severity scale: `unknown` while the VM cannot be read. */
export function statusState(status: VmStatus): State | undefined {
  return status.error ? 'unknown' : status.verdict?.severity;
}

const reasonCodes = (status: VmStatus): string => status.verdict?.reasons.map((r) => r.code).join() ?? '';

/**
 * - A new error code: `vm-error`; a VM turning unknown: `verdict` with severity `unknown`, no
 *   relation, and the error's code as its reason.
 * - A new severity or another set of reasons: `verdict` with the first reason and all of them.
 * - `previous` is null for the VM's first verdict (the status before was the initial PENDING).
 */
export function statusEvents(socket: string, prev: VmStatus, now: VmStatus): PublishedEvent[] {
  const before = statusState(prev);
  const after = statusState(now);
  const previous = prev.error?.code === 'PENDING' ? null : (before ?? null);
  const events: PublishedEvent[] = [];
  if (now.error) {
    if (prev.error?.code !== now.error.code)
      events.push({
        type: 'vm-error',
        vm: now.name,
        ...(now.id ? { id: now.id } : {}),
        socket,
        code: now.error.code,
        message: now.error.message,
      });
    if (before !== after)
      events.push({
        type: 'verdict',
        vm: now.name,
        ...(now.id ? { id: now.id } : {}),
        socket,
        previous,
        severity: 'unknown',
        relation: null,
        reason: now.error.code,
      });
    return events;
  }
  const verdict = now.verdict;
  if (!verdict || (before === after && reasonCodes(prev) === reasonCodes(now))) return events;
  events.push({
    type: 'verdict',
    vm: now.name,
    ...(now.id ? { id: now.id } : {}),
    socket,
    previous,
    severity: verdict.severity,
    relation: verdict.relation,
    reason: verdict.reasons[0]?.code,
    reasons: verdict.reasons,
  });
  return events;
}
