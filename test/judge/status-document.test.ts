import test from 'ava';
import { buildStatusDocument, statusDocumentText } from '../../agent/judge/status-document';
import { judgeVm } from '../../agent/judge/vm-status';
import type { VmStatus } from '../../agent/core/types';
import { guestFacts, hostFacts } from '../helpers/facts';

const policy = { accelerators: ['kvm'], narrowerSeverity: 'ok' as const };

test("the status document put together from each VM's own JSON text is the text of the whole document", (t) => {
  const host = hostFacts(46);
  const vms: VmStatus[] = [
    judgeVm({
      socket: '/run/qemu/web1.qmp',
      mode: 'hold',
      guest: guestFacts({ name: 'web "1"\u2028', physBits: 52 }),
      host,
      peers: [],
      policy,
      checkedAt: '2026-12-07T06:00:00.000Z',
    }),
    {
      ...judgeVm({
        socket: '/run/qemu/db1.qmp',
        guest: guestFacts({ physBits: 40 }),
        host,
        peers: [],
        policy,
        checkedAt: 'x',
      }),
      guardSocket: null,
    },
    {
      socket: '/run/qemu/down.qmp',
      id: 'aaaaaaaaaaaa',
      name: 'down',
      mode: 'hold',
      error: { code: 'PENDING', message: 'not read yet' },
    },
  ];
  const texts = vms.map((vm) => JSON.stringify(vm));
  t.is(statusDocumentText(host, vms, texts), JSON.stringify(buildStatusDocument(host, vms)));
  t.is(statusDocumentText(host, [], []), JSON.stringify(buildStatusDocument(host, [])));
});
