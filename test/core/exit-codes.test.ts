import test from 'ava';
import { EXIT, exitCodeFor, worstState, type State } from '../../agent/core/exit-codes';
import { buildStatusDocument } from '../../agent/judge/status-document';
import { hostFacts } from '../helpers/facts';

const cases: Array<[State[], State, number]> = [
  [[], 'ok', 0],
  [['ok', 'info'], 'info', 0],
  [['ok', 'warning'], 'warning', 1],
  [['warning', 'unknown'], 'unknown', 3],
  [['unknown', 'critical'], 'critical', 2],
  [['critical', 'unknown', 'warning', 'ok'], 'critical', 2],
];
for (const [states, worst, code] of cases) {
  test(`worst of [${states.join(', ')}] is ${worst}, exit ${code}`, (t) => {
    t.is(worstState(states), worst);
    t.is(exitCodeFor(worst), code);
  });
}

test('the status document sums its VMs; an error row is unknown', (t) => {
  const doc = buildStatusDocument(hostFacts(40), [
    { socket: '/a', name: 'a', error: { code: 'QMP_CONNECT_FAILED', message: 'x' } },
    { socket: '/b', name: 'b', verdict: { relation: 'equal', severity: 'warning', reasons: [] } },
  ]);
  t.deepEqual(doc.summary, {
    worst: 'unknown',
    exitCode: EXIT.UNKNOWN,
    counts: { ok: 0, info: 0, warning: 1, critical: 0, unknown: 1 },
  });
});
