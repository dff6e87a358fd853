/**
 * End to end: every source of a peer's width down, the first `migrate` after the daemon's start.
 * A live peer on a closed loopback port and fleet.prometheus on another: refused at once with both
 * reasons. A live peer and fleet.prometheus that accept connections and never answer (blackholed):
 * each ask ends at fleet.timeoutMs, the live peer's too (its own bound is 3 s), and the refusal
 * names both timeouts. The refusal's code is REFUSED_MIGRATION_UNKNOWN_PEER in both.
 */
import test from 'ava';
import net from 'node:net';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, startDaemon, waitUntil } from '../helpers/daemon';
import { startFakeQmp } from '../helpers/fake-qmp';
import { freePort } from '../helpers/net';
import { tempDir } from '../helpers/tmp';

const TIMEOUT_MS = 400;

/** A loopback port that accepts connections and never answers. */
async function blackhole(t: { teardown(fn: () => Promise<void>): void }): Promise<number> {
  const held = new Set<net.Socket>();
  const server = net.createServer((s) => {
    held.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of held) s.destroy();
        server.close(() => r());
      }),
  );
  return (server.address() as net.AddressInfo).port;
}

for (const kind of ['closed', 'blackholed'] as const) {
  test(`every source ${kind}: the first migrate is refused as going to a peer of unknown width, each ask bounded by fleet.timeoutMs`, async (t) => {
    const dir = tempDir('physbits-sources-down-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, 'e2e-sources-down-token-0123456789\n', { mode: 0o600 });
    const [peerPort, promPort] =
      kind === 'closed' ? [await freePort(), await freePort()] : [await blackhole(t), await blackhole(t)];
    mkdirSync(join(dir, 'vms'));
    const fake = await startFakeQmp({ dir: join(dir, 'vms'), socketName: 'web1.qmp', physBits: 40 });
    t.teardown(() => fake.close());
    const daemon = await startDaemon({
      dir,
      config: {
        peers: [{ name: 'hvdown', address: 'hvdown', url: `http://127.0.0.1:${peerPort}`, tokenFile }],
        fleet: { prometheus: `http://127.0.0.1:${promPort}`, timeoutMs: TIMEOUT_MS },
        guard: { peerFailureCacheSeconds: 0 },
      },
    });
    t.teardown(() => daemon.kill());
    const guarded = join(dir, 'guard', 'web1.qmp');
    await daemon.waitForStatus((doc) => doc.vms.some((v) => v.verdict) && existsSync(guarded), 'web1 judged', 30000);
    await waitUntil(() => existsSync(guarded), 'guarded socket');
    const { client } = await LineClient.negotiated(guarded);
    t.teardown(() => client.close());
    const reply = await client.command('{"execute":"migrate","arguments":{"uri":"tcp:hvdown:4444"},"id":"m1"}', 'm1');
    const desc = String((reply.error as { desc?: string } | undefined)?.desc);
    t.is(reply.id, 'm1');
    t.regex(desc, /^refused by physbits guard: the width of peer hvdown is unknown: /);
    t.regex(desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);
    if (kind === 'closed') {
      t.regex(desc, /its agent did not answer \(PEER_UNREACHABLE: http:\/\/127\.0\.0\.1:\d+\/v1\/host: ECONNREFUSED\)/);
      t.regex(
        desc,
        /Prometheus cannot be asked \(PROM_UNREACHABLE: http:\/\/127\.0\.0\.1:\d+\/api\/v1\/query: ECONNREFUSED\)/,
      );
    } else {
      t.regex(desc, new RegExp(`its agent did not answer \\(PEER_TIMEOUT: [^)]*no answer within ${TIMEOUT_MS} ms\\)`));
      t.regex(desc, new RegExp(`Prometheus cannot be asked \\(PROM_TIMEOUT: .*no answer within ${TIMEOUT_MS} ms\\)`));
    }
  });
}
