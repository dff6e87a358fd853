/**
 * The spool's on-disk format: one JSON object per line. `put` records a state change with the sinks
 * that still need it, `settle` the sinks that have it now, `del` an entry that is gone. Replaying the
 * lines in order gives the spool's content; a line that is not one of these is skipped.
 */
import type { AlertRecord } from './alert-model';

/** A log line longer than this is not ours (an entry is a few KiB at most). */
export const MAX_LINE_CHARS = 64 * 1024;

export type LogOp =
  | { op: 'put'; seq: number; id: string; notify: boolean; pending: string[]; rec: AlertRecord }
  | { op: 'settle'; seq: number; sinks: string[] }
  | { op: 'del'; seq: number };

/** One log line, checked field by field; null when it is not one of ours. */
export function parseOp(line: string): LogOp | null {
  if (line.length > MAX_LINE_CHARS) return null;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (!Number.isSafeInteger(o.seq) || (o.seq as number) < 1) return null;
  const seq = o.seq as number;
  const strings = (x: unknown): x is string[] => Array.isArray(x) && x.every((s) => typeof s === 'string');
  switch (o.op) {
    case 'put': {
      if (typeof o.id !== 'string' || typeof o.notify !== 'boolean' || !strings(o.pending) || !isRecord(o.rec))
        return null;
      return { op: 'put', seq, id: o.id, notify: o.notify, pending: o.pending, rec: o.rec };
    }
    case 'settle':
      return strings(o.sinks) ? { op: 'settle', seq, sinks: o.sinks } : null;
    case 'del':
      return { op: 'del', seq };
    default:
      return null;
  }
}

function isRecord(v: unknown): v is AlertRecord {
  if (!v || typeof v !== 'object') return false;
  const r = v as Record<string, unknown>;
  const l = r.labels as Record<string, unknown> | undefined;
  const a = r.annotations as Record<string, unknown> | undefined;
  return (
    typeof r.key === 'string' &&
    (r.kind === 'condition' || r.kind === 'refusal') &&
    !!l &&
    ['alertname', 'vm', 'host', 'severity', 'reason'].every((k) => typeof l[k] === 'string') &&
    !!a &&
    typeof a.summary === 'string' &&
    typeof a.description === 'string' &&
    Number.isFinite(r.startsAt) &&
    (r.endsAt === null || Number.isFinite(r.endsAt))
  );
}
