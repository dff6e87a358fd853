/**
 * `physbitsctl scan --config` while physbitsd holds the config's sockets: the daemon's view, said
 * to be its, instead of waiting on each socket QEMU will not serve to a second client.
 */
import test from 'ava';
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { ctl, startDaemon } from '../helpers/daemon';
import { QEMUS, startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

test(`${QEMUS[0].label}: scan --config while the daemon holds the sockets answers with the daemon's view at once`, async (t) => {
  const dir = tempDir('physbits-scan-daemon-');
  const d = await startDaemon({ dir, config: { host: { physBits: 46 }, policy: { accelerators: ['tcg'] } } });
  t.teardown(() => d.kill());
  const guest = await startGuest({ qemu: QEMUS[0], dir: join(dir, 'vms'), name: 'held', cpu: 'phys-bits=46' });
  t.teardown(() => guest.kill());
  await d.waitForStatus((doc) => doc.vms.some((v) => v.name === 'held' && !!v.verdict), 'held judged by the daemon');
  const began = Date.now();
  const run = await ctl(['scan', '--json', '--config', d.configPath]);
  const ms = Date.now() - began;
  const doc = JSON.parse(run.stdout) as StatusDocument;
  t.is(run.code, doc.summary!.exitCode, run.stderr);
  t.like(
    doc.vms.find((v) => v.name === 'held'),
    { guest: { physBits: 46 }, verdict: { relation: 'equal' } },
  );
  t.regex(run.stderr, /physbitsd is running \(.*api\.sock\) and holds the QMP sockets: this is its view/);
  t.log(`answered in ${ms} ms`);
  // Naming a socket still scans it directly (and here finds it held).
  const direct = await ctl(['scan', '--json', '--config', d.configPath, '--socket', guest.socket]);
  t.notRegex(direct.stderr, /this is its view/);
});
