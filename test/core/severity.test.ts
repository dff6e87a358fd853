import test from 'ava';
import type { Severity } from '../../agent/core/types';
import { byDescendingSeverity, maxSeverity, severityRank } from '../../agent/core/severity';

test('severity order: ok < info < warning < critical', (t) => {
  const all: Severity[] = ['ok', 'info', 'warning', 'critical'];
  t.deepEqual(all.map(severityRank), [0, 1, 2, 3]);
  t.is(maxSeverity('info', 'ok'), 'info');
  t.is(maxSeverity('warning', 'critical'), 'critical');
  const sorted = [
    { severity: 'info' as const, n: 1 },
    { severity: 'critical' as const, n: 2 },
    { severity: 'info' as const, n: 3 },
    { severity: 'warning' as const, n: 4 },
  ].sort(byDescendingSeverity);
  t.deepEqual(
    sorted.map((s) => s.n),
    [2, 4, 1, 3],
  );
});
