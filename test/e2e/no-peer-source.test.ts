/**
 * End to end: physbitsd started on a config that knows no peer while guard.unknownPeer is refuse
 * says so once, at warn, before it is ready; with a peer it does not.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../helpers/daemon';

const WARNING = /no peer source is configured/;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'physbits-peers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('no peers and no fleet.prometheus with unknownPeer refuse: one warn line at start', async (t) => {
  const daemon = await startDaemon({ dir: tempDir(t), config: { peers: [] } });
  t.teardown(() => daemon.kill());
  const line = await daemon.waitForLog((l) => WARNING.test(l.message));
  t.is(line.level, 'warn');
  t.regex(line.message, /every migration through the guard will be refused as going to an unknown peer/);
  t.regex(line.message, /docs\/configuration\.md/);
  t.is(daemon.lines().filter((l) => WARNING.test(l.message)).length, 1);
});

test('a configured peer: no such warning', async (t) => {
  const daemon = await startDaemon({ dir: tempDir(t) });
  t.teardown(() => daemon.kill());
  t.false(daemon.lines().some((l) => WARNING.test(l.message)));
});
