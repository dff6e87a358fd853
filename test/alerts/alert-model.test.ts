import test from 'ava';
import {
  alertKey,
  alertName,
  alertingReasons,
  conditionAlert,
  diffConditions,
  isFiring,
  refusalAlert,
  refusalCode,
  toPostable,
  MAX_LABEL_CHARS,
} from '../../agent/alerts/alert-model';
import type { Reason } from '../../agent/core/types';

const T0 = Date.parse('2030-01-02T03:04:05.000Z');
const wider: Reason = { code: 'GUEST_WIDER_THAN_HOST', severity: 'critical', message: 'guest 52 bits > host 46 bits' };
const enc: Reason = { code: 'GUEST_WIDER_BY_MEMORY_ENCRYPTION', severity: 'warning', message: 'SME takes 5 bits' };

test('alertname is derived from the reason code', (t) => {
  const table: Array<[string, string]> = [
    ['GUEST_WIDER_THAN_HOST', 'PhysbitsGuestWiderThanHost'],
    ['REFUSED_MEMORY_ABOVE_HOST_LIMIT', 'PhysbitsRefusedMemoryAboveHostLimit'],
    ['KVM_SMALLER_MAXPHYADDR_NOT_ALLOWED', 'PhysbitsKvmSmallerMaxphyaddrNotAllowed'],
    ['PEER_UNREACHABLE', 'PhysbitsPeerUnreachable'],
    ['weird--code 9', 'PhysbitsWeirdCode9'],
  ];
  for (const [code, name] of table) t.is(alertName(code), name, code);
});

test('refusal codes always carry REFUSED_', (t) => {
  t.is(refusalCode('REFUSED_MIGRATION_PEER_NARROWER'), 'REFUSED_MIGRATION_PEER_NARROWER');
  t.is(refusalCode('memory_above_host_limit'), 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
  t.is(refusalCode('  '), 'REFUSED_UNSPECIFIED');
});

test('a condition alert has exactly the contract labels and annotations', (t) => {
  const a = conditionAlert('hv1', 'web1', wider, T0);
  t.deepEqual(a, {
    key: 'web1\u001fGUEST_WIDER_THAN_HOST\u001fcritical',
    kind: 'condition',
    labels: {
      alertname: 'PhysbitsGuestWiderThanHost',
      vm: 'web1',
      host: 'hv1',
      severity: 'critical',
      reason: 'GUEST_WIDER_THAN_HOST',
    },
    annotations: { summary: 'web1 on hv1: guest wider than host', description: 'guest 52 bits > host 46 bits' },
    startsAt: T0,
    endsAt: null,
  });
  t.throws(() => conditionAlert('hv1', 'web1', { code: 'GUEST_EQUALS_HOST', severity: 'ok', message: '' }, T0), {
    instanceOf: RangeError,
  });
});

test('labels from untrusted names are bounded', (t) => {
  const a = conditionAlert('hv1', 'x'.repeat(5000), wider, T0);
  t.is(a.labels.vm.length, MAX_LABEL_CHARS);
  t.true(a.labels.vm.endsWith('…'));
});

test('ok reasons raise nothing; the strongest severity per code wins', (t) => {
  const r = alertingReasons([
    { code: 'GUEST_EQUALS_HOST', severity: 'ok', message: '' },
    { code: 'A', severity: 'info', message: 'i' },
    { code: 'A', severity: 'critical', message: 'c' },
    { code: 'A', severity: 'warning', message: 'w' },
  ]);
  t.deepEqual(r, [{ code: 'A', severity: 'critical', message: 'c' }]);
});

test('diff: new reasons fire, held reasons keep startsAt, gone reasons resolve at now', (t) => {
  const d1 = diffConditions([], 'hv1', 'web1', [wider, enc], T0);
  t.deepEqual(
    d1.fired.map((a) => a.labels.reason),
    ['GUEST_WIDER_THAN_HOST', 'GUEST_WIDER_BY_MEMORY_ENCRYPTION'],
  );
  t.deepEqual([d1.resolved.length, d1.updated.length], [0, 0]);

  const d2 = diffConditions(d1.fired, 'hv1', 'web1', [wider, enc], T0 + 60_000);
  t.deepEqual(d2, { fired: [], resolved: [], updated: [] });

  const d3 = diffConditions(
    d1.fired,
    'hv1',
    'web1',
    [{ ...wider, message: 'guest 52 bits > host 39 bits' }],
    T0 + 120_000,
  );
  t.deepEqual(d3.fired, []);
  t.deepEqual(
    d3.updated.map((a) => [a.annotations.description, a.startsAt]),
    [['guest 52 bits > host 39 bits', T0]],
  );
  t.deepEqual(
    d3.resolved.map((a) => [a.labels.reason, a.startsAt, a.endsAt]),
    [['GUEST_WIDER_BY_MEMORY_ENCRYPTION', T0, T0 + 120_000]],
  );
});

test('diff: a severity change resolves the old alert and fires a new one', (t) => {
  const [a] = diffConditions([], 'hv1', 'web1', [enc], T0).fired;
  const d = diffConditions([a], 'hv1', 'web1', [{ ...enc, severity: 'critical' }], T0 + 5000);
  t.deepEqual(
    d.fired.map((x) => [x.labels.severity, x.startsAt]),
    [['critical', T0 + 5000]],
  );
  t.deepEqual(
    d.resolved.map((x) => [x.labels.severity, x.endsAt]),
    [['warning', T0 + 5000]],
  );
});

test('diff only looks at the condition alerts it is given', (t) => {
  const refusal = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_X',
    message: 'm',
    command: 'c',
    time: T0,
    holdMs: 60_000,
  });
  const d = diffConditions([refusal], 'hv1', 'web1', [], T0 + 1);
  t.deepEqual(d, { fired: [], resolved: [], updated: [] });
});

test('a refusal ends holdMs after the refusal time; a repeat while firing extends it', (t) => {
  const hold = 15 * 60_000;
  const a = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
    message: 'DIMM at 64 TiB is above the host limit',
    command: 'device_add',
    time: T0,
    holdMs: hold,
  });
  t.deepEqual(a.labels, {
    alertname: 'PhysbitsRefusedMemoryAboveHostLimit',
    vm: 'web1',
    host: 'hv1',
    severity: 'warning',
    reason: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
  });
  t.is(a.annotations.summary, 'physbits guard refused device_add on web1 (hv1)');
  t.is(
    a.annotations.description,
    'DIMM at 64 TiB is above the host limit (command: device_add; refused at 2030-01-02T03:04:05.000Z)',
  );
  t.deepEqual([a.kind, a.startsAt, a.endsAt], ['refusal', T0, T0 + hold]);
  t.true(isFiring(a, T0 + hold - 1));
  t.false(isFiring(a, T0 + hold));

  const again = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
    message: 'm',
    command: 'object-add',
    time: T0 + 60_000,
    holdMs: hold,
    previous: a,
  });
  t.deepEqual([again.key, again.startsAt, again.endsAt], [a.key, T0, T0 + 60_000 + hold]);

  const later = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
    message: 'm',
    command: 'c',
    time: T0 + hold + 1,
    holdMs: hold,
    previous: a,
  });
  t.deepEqual([later.startsAt, later.endsAt], [T0 + hold + 1, T0 + hold + 1 + hold]);
});

test('postable: open conditions end four re-send periods after the send; fixed ends are kept', (t) => {
  const open = conditionAlert('hv1', 'web1', wider, T0);
  const sendAt = T0 + 3_600_000;
  t.deepEqual(toPostable(open, sendAt, { resendMs: 60_000, generatorURL: 'http://hv1:9741/' }), {
    labels: open.labels,
    annotations: open.annotations,
    startsAt: '2030-01-02T03:04:05.000Z',
    endsAt: '2030-01-02T04:08:05.000Z',
    generatorURL: 'http://hv1:9741/',
  });
  const refusal = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_X',
    message: 'm',
    command: 'c',
    time: T0,
    holdMs: 900_000,
  });
  const p = toPostable(refusal, T0 + 86_400_000, { resendMs: 60_000 });
  t.deepEqual(
    [p.startsAt, p.endsAt, 'generatorURL' in p],
    ['2030-01-02T03:04:05.000Z', '2030-01-02T03:19:05.000Z', false],
  );
});

test('alert keys differ by vm, reason and severity only', (t) => {
  t.is(alertKey({ vm: 'a', reason: 'R', severity: 'info' }), 'a\u001fR\u001finfo');
  t.not(alertKey({ vm: 'a', reason: 'R', severity: 'info' }), alertKey({ vm: 'a', reason: 'R', severity: 'warning' }));
});
