import test from 'ava';
import { renderStatus } from '../agent/cli/render-status';
import { hostFacts } from './helpers/facts';

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
