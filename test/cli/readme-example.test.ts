/**
 * README.md's example table is what `npm run demo` prints for `physbitsctl scan` on a 48-bit AMD
 * host: the same guests (contrib/demo/demo.ts: equal, narrow, wide, and recent on QEMU 10.0), the same
 * config (policy.accelerators kvm and tcg, the static peer small-hv of 39 bits), judged and rendered by
 * the code scan runs, cut to the demo's 100 columns. A change to a reason's wording or to the table
 * fails here until the README shows it.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderStatus } from '../../agent/cli/render-status';
import { staticPeerFacts } from '../../agent/cli/scan-command';
import { parseConfig } from '../../agent/core/config';
import { buildStatusDocument } from '../../agent/judge/status-document';
import { judgeVm } from '../../agent/judge/vm-status';
import { guestFacts, hostFacts } from '../helpers/facts';

const README = join(__dirname, '..', '..', '..', 'README.md');

/** The fenced block after the paragraph that introduces the demo's scan. */
function readmeExample(): string {
  const text = readFileSync(README, 'utf8');
  const at = text.indexOf('Example: what `npm run demo` prints for `physbitsctl scan`');
  if (at < 0) throw new Error('README.md has no example of the demo scan');
  const open = text.indexOf('```\n', at) + 4;
  return text.slice(open, text.indexOf('\n```', open));
}

test("README's example table is the renderer's output for the demo's guests", (t) => {
  const config = parseConfig({
    host: { name: 'demo-host' },
    policy: { accelerators: ['kvm', 'tcg'] },
    peers: [{ name: 'small-hv', address: '127.0.0.2', physBits: 39 }],
  });
  const host = hostFacts(48, 'demo-host', { vendor: 'AuthenticAMD', physBitsSource: 'cpuinfo' });
  const guests = [
    { name: 'equal', physBits: 48, qemuVersion: '7.2.0' },
    { name: 'narrow', physBits: 39, qemuVersion: '7.2.0' },
    { name: 'wide', physBits: 52, qemuVersion: '7.2.0' },
    { name: 'recent', physBits: 48, qemuVersion: '10.0.0' },
  ];
  const vms = guests.map((g) =>
    judgeVm({
      socket: `/tmp/physbits-demo/vms/${g.name}.qmp`,
      mode: 'scan',
      guest: guestFacts({ ...g, accelerator: 'tcg', runState: 'prelaunch' }),
      host,
      peers: staticPeerFacts(config),
      policy: config.policy,
      checkedAt: '2026-12-02T00:00:00.000Z',
    }),
  );
  t.is(renderStatus(buildStatusDocument(host, vms), { width: 100 }), readmeExample());
});
