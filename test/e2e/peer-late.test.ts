/**
 * Two hosts' daemons started together: hvA asks its live peer hvB before hvB listens. A moment later,
 * once hvB answers, a migration check on hvA is judged on hvB's own answer (39 bits), not on the
 * failure: a failed ask is remembered guard.peerFailureCacheSeconds (2 s), a good answer
 * guard.peerCacheSeconds (30 s).
 */
import test from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ctl, LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { freePort } from '../helpers/net';
import { startGuest, type Guest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'e2e-peer-late-token-0123456789abcdef';

interface Check {
  allowed: boolean;
  code?: string;
  message: string;
  peerPhysBits: number | null;
  source?: string;
}

test('a peer that did not answer a moment ago and answers now is judged on its answer, within the good-answer cache', async (t) => {
  const root = tempDir('physbits-peer-late-');
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const portB = await freePort();
  const daemons: DaemonProcess[] = [];
  let guest: Guest | null = null;
  t.teardown(async () => {
    for (const d of daemons) await d.stop();
    await guest?.kill();
    rmSync(root, { recursive: true, force: true });
  });

  const dirA = join(root, 'hvA');
  const hvA = await startDaemon({
    dir: dirA,
    config: {
      host: { name: 'hvA', physBits: 46 },
      discovery: { sockets: [join(dirA, 'vms', '*.qmp')], pollIntervalSeconds: 1 },
      peers: [{ name: 'hvB', address: '127.0.0.2', url: `http://127.0.0.1:${portB}`, tokenFile }],
      guard: { peerCacheSeconds: 30 },
    },
  });
  daemons.push(hvA);
  guest = await startGuest({ dir: join(dirA, 'vms'), name: 'web1', cpu: 'phys-bits=46' });
  await hvA.waitForStatus((doc) => doc.vms.some((v) => v.guest?.physBits === 46), 'hvA: web1 read', 60000);
  const check = async (): Promise<Check> => {
    const r = await ctl(['check-migration', 'web1', '--to', 'hvB', '--json', '--api', hvA.apiSocket]);
    return JSON.parse(r.stdout) as Check;
  };

  // hvB does not listen yet: its width is unknown.
  const before = await check();
  t.like(before, { allowed: false, code: 'REFUSED_MIGRATION_UNKNOWN_PEER', peerPhysBits: null });
  t.regex(before.message, /its agent did not answer \(PEER_UNREACHABLE: /);

  const dirB = join(root, 'hvB');
  const hvB = await startDaemon({
    dir: dirB,
    config: {
      host: { name: 'hvB', physBits: 39 },
      api: { socket: join(dirB, 'api.sock'), listen: `127.0.0.1:${portB}`, tokenFile },
      peers: [],
    },
  });
  daemons.push(hvB);
  const listening = Date.now();

  // Asked again once the failure is 2 s old, long before a 30 s cache would let it go.
  const judged = await waitUntil(
    async () => {
      const c = await check();
      return c.peerPhysBits !== null ? c : null;
    },
    'hvB judged on its own answer',
    20000,
    250,
  );
  const afterMs = Date.now() - listening;
  t.log(`judged on hvB's answer ${afterMs} ms after it listened`);
  t.like(judged, { allowed: false, code: 'REFUSED_MIGRATION_PEER_NARROWER', peerPhysBits: 39, source: 'live' });
  t.true(afterMs < 10000, `${afterMs} ms`);

  // The guard agrees: a migrate to hvB's address is refused as narrower.
  const guarded = join(dirA, 'guard', 'web1.qmp');
  const { client } = await LineClient.negotiated(guarded);
  t.teardown(() => client.socket.destroy());
  client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.2:4444"}, "id": "to-hvB"}');
  const refused = await client.next((m) => m.id === 'to-hvB');
  t.regex((refused.error as { desc: string }).desc, /peer hvB has 39-bit.*\[REFUSED_MIGRATION_PEER_NARROWER\]$/);
});
