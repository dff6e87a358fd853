import test from 'ava';
import { renderStatus } from '../../agent/cli/render-status';
import { terminalColumns } from '../../agent/cli/cli-io';
import { hostFacts } from '../helpers/facts';

test('one row per VM; names and messages from VMs cannot forge rows or drive the terminal', (t) => {
  const text = renderStatus({
    host: hostFacts(40, 'hv1'),
    vms: [
      { socket: '/x', name: 'evil\nFAKE ROW\u001b[2J', error: { code: 'QMP_PROTOCOL', message: 'bad\r\ngreeting' } },
      {
        socket: '/y',
        name: 'web1',
        accelerator: 'kvm',
        guest: { physBits: 46 } as never,
        verdict: {
          relation: 'wider',
          severity: 'critical',
          reasons: [{ code: 'GUEST_WIDER_THAN_HOST', severity: 'critical', message: 'too wide' }],
        },
      },
    ],
  });
  const lines = text.split('\n');
  t.is(lines.length, 4);
  t.regex(lines[0], /^host hv1: 40 bits physical \(\w+\), /);
  t.is(
    lines[2],
    'evil\\u000aFAKE ROW\\u001b[2J  -      -      40    -         unknown   QMP_PROTOCOL: bad\\u000d\\u000agreeting',
  );
  t.regex(lines[3], /^web1\s+kvm\s+46\s+40\s+wider\s+critical\s+GUEST_WIDER_THAN_HOST: too wide$/);
});

test('no VMs', (t) => {
  t.regex(renderStatus({ host: hostFacts(40, 'hv1'), vms: [] }), /\nno VMs found$/);
});

const longReason = {
  socket: '/y',
  name: 'web1',
  accelerator: 'kvm',
  guest: { physBits: 46 } as never,
  verdict: {
    relation: 'wider' as const,
    severity: 'critical' as const,
    reasons: [{ code: 'GUEST_WIDER_THAN_HOST', severity: 'critical' as const, message: 'x'.repeat(300) }],
  },
};

test('with a terminal width, REASON is cut so every line fits; without one (--wide, pipes) it is whole', (t) => {
  const doc = { host: hostFacts(40, 'hv1'), vms: [longReason] };
  const cutText = renderStatus(doc, { width: 80 });
  const rows = cutText.split('\n').slice(1);
  for (const line of rows) t.true([...line].length <= 80, line);
  t.true(rows[1].endsWith('x…'));
  t.regex(rows[1], /^web1\s+kvm\s+46\s+40\s+wider\s+critical\s+GUEST_WIDER_THAN_HOST: x+…$/);
  const whole = renderStatus(doc);
  t.true(whole.split('\n')[2].endsWith(`: ${'x'.repeat(300)}`));
  // A reason that fits is left alone.
  const short = renderStatus(
    {
      host: hostFacts(40, 'hv1'),
      vms: [
        {
          ...longReason,
          verdict: { ...longReason.verdict, reasons: [{ ...longReason.verdict.reasons[0], message: 'short' }] },
        },
      ],
    },
    { width: 80 },
  );
  t.regex(short, /GUEST_WIDER_THAN_HOST: short$/);
});

test('a terminal too narrow for the columns still shows 20 characters of REASON', (t) => {
  const line = renderStatus({ host: hostFacts(40, 'hv1'), vms: [longReason] }, { width: 10 }).split('\n')[2];
  t.true(line.endsWith(`GUEST_WIDER_THAN_HO…`));
});

test('terminalColumns: a terminal, else $COLUMNS, else none', (t) => {
  t.is(terminalColumns({ isTTY: true, columns: 132 }, {}), 132);
  t.is(terminalColumns({ isTTY: false }, { COLUMNS: '100' }), 100);
  t.is(terminalColumns({ isTTY: false }, {}), undefined);
  t.is(terminalColumns({ isTTY: false }, { COLUMNS: 'wide' }), undefined);
});
