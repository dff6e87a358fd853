import test from 'ava';
import type { PublishedEvent } from '../../agent/api/api-types';
import type { Reason, Severity, VmStatus } from '../../agent/core/types';
import { statusEvents } from '../../agent/daemon/status-events';

const SOCKET = '/run/qemu/web1.qmp';
const reason = (code: string, severity: Severity): Reason => ({ code, severity, message: code.toLowerCase() });
const WIDER = reason('GUEST_WIDER_THAN_HOST', 'critical');
const EQUAL = reason('GUEST_EQUALS_HOST', 'ok');
const UNVERIFIED = reason('MIGRATION_UNVERIFIED', 'warning');

const pending: VmStatus = { socket: SOCKET, name: 'web1', error: { code: 'PENDING', message: 'not read yet' } };
const failed = (code: string): VmStatus => ({ socket: SOCKET, name: 'web1', error: { code, message: `${code} here` } });
const judged = (severity: Severity, reasons: Reason[], relation: 'equal' | 'wider' = 'equal'): VmStatus => ({
  socket: SOCKET,
  name: 'web1',
  verdict: { severity, relation, reasons },
});

const verdictEvent = (
  previous: string | null,
  severity: Severity,
  reasons: Reason[],
  relation: 'equal' | 'wider',
): PublishedEvent => ({
  type: 'verdict',
  vm: 'web1',
  socket: SOCKET,
  previous: previous as never,
  severity,
  relation,
  reason: reasons[0]?.code,
  reasons,
});
const unknownEvent = (previous: string | null, code: string): PublishedEvent => ({
  type: 'verdict',
  vm: 'web1',
  socket: SOCKET,
  previous: previous as never,
  severity: 'unknown',
  relation: null,
  reason: code,
});
const errorEvent = (code: string): PublishedEvent => ({
  type: 'vm-error',
  vm: 'web1',
  socket: SOCKET,
  code,
  message: `${code} here`,
});

const table: Array<[string, VmStatus, VmStatus, PublishedEvent[]]> = [
  [
    'first verdict: previous is null',
    pending,
    judged('critical', [WIDER], 'wider'),
    [verdictEvent(null, 'critical', [WIDER], 'wider')],
  ],
  ['the same verdict again: nothing', judged('ok', [EQUAL]), judged('ok', [EQUAL]), []],
  [
    'a new severity',
    judged('ok', [EQUAL]),
    judged('critical', [WIDER], 'wider'),
    [verdictEvent('ok', 'critical', [WIDER], 'wider')],
  ],
  [
    'the same severity, another reason',
    judged('warning', [EQUAL, UNVERIFIED]),
    judged('warning', [UNVERIFIED, EQUAL]),
    [verdictEvent('warning', 'warning', [UNVERIFIED, EQUAL], 'equal')],
  ],
  [
    'a judged VM turns unreachable: the error, then unknown',
    judged('ok', [EQUAL]),
    failed('QMP_CLOSED'),
    [errorEvent('QMP_CLOSED'), unknownEvent('ok', 'QMP_CLOSED')],
  ],
  [
    'the first read fails: the error only (a pending VM is already unknown)',
    pending,
    failed('QMP_CONNECT_FAILED'),
    [errorEvent('QMP_CONNECT_FAILED')],
  ],
  ['the same error again: nothing', failed('QMP_CLOSED'), failed('QMP_CLOSED'), []],
  [
    'another error while unknown: only the error',
    failed('QMP_CLOSED'),
    failed('QMP_TIMEOUT'),
    [errorEvent('QMP_TIMEOUT')],
  ],
  [
    'back from an error',
    failed('QMP_CLOSED'),
    judged('ok', [EQUAL]),
    [verdictEvent('unknown', 'ok', [EQUAL], 'equal')],
  ],
];

for (const [title, prev, now, events] of table) {
  test(`status events: ${title}`, (t) => {
    t.deepEqual(statusEvents(SOCKET, prev, now), events);
  });
}
