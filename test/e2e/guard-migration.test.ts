/**
 * Migration through the guard on real QEMU: a guest held by the daemon migrates over loopback to a
 * second QEMU waiting with -incoming on 127.0.0.3 (a configured peer wide enough), and completes;
 * the same guest is refused toward 127.0.0.2 (a peer narrower than it) and toward an unknown host,
 * with the contract's reply, and the refusal is counted. On both QEMUs (this machine's 7.2 and
 * Debian 13's 10.0, two 10.0 guests migrating between each other); on 10.0 `migrate` also takes its
 * destination as `channels` (QEMU 8.2+), which the guard reads like `uri`.
 */
import test from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { QEMUS, startGuest, startMigrationTarget, type Guest } from '../helpers/qemu';
import { freePort } from '../helpers/net';

/** The `channels` form of a tcp destination (qapi/migration.json MigrationChannel, QEMU 8.2+). */
const channels = (host: string, port: number | string) =>
  JSON.stringify([{ 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host, port: String(port) } }]);

for (const qemu of QEMUS) {
  const withChannels = !qemu.label.startsWith('QEMU 7.');
  test(`${qemu.label}: migrate through the guarded socket: completes to a wide peer, refused to a narrow or unknown one${withChannels ? ' (uri and channels)' : ''}`, async (t) => {
    const dir = qemu.tempDir('physbits-migrate-');
    const vms = join(dir, 'vms');
    mkdirSync(vms, { recursive: true });
    let daemon: DaemonProcess | null = null;
    let source: Guest | null = null;
    let dest: Guest | null = null;
    t.teardown(async () => {
      await daemon?.stop();
      await dest?.kill();
      await source?.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    source = await startGuest({ name: 'mover', dir: vms, cpu: 'phys-bits=42', memory: '32M', qemu });
    const port = await freePort('127.0.0.3');
    // The destination: same machine and CPU, waiting for the stream on 127.0.0.3 (outside the discovery glob).
    dest = await startMigrationTarget({
      name: 'mover',
      cpu: 'phys-bits=42',
      memory: '32M',
      qemu,
      ip: '127.0.0.3',
      port,
    });
    daemon = await startDaemon({
      dir,
      config: {
        host: { physBits: 48 },
        peers: [
          { name: 'narrow', address: '127.0.0.2', physBits: 39 },
          { name: 'wide', address: '127.0.0.3', physBits: 46 },
        ],
      },
    });
    const guarded = join(dir, 'guard', 'mover.qmp');
    await daemon.waitForStatus((d) => d.vms.some((v) => v.name === 'mover' && v.guest), 'the source guest read');
    await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'the guarded socket');
    const { client } = await LineClient.negotiated(guarded);
    t.teardown(() => client.socket.destroy());

    client.send('{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.2:4444"}, "id": "to-narrow"}');
    const narrow = await client.next((m) => m.id === 'to-narrow');
    t.is((narrow.error as { class: string }).class, 'GenericError');
    t.regex(
      (narrow.error as { desc: string }).desc,
      /^refused by physbits guard: .*narrow.*39.*\[REFUSED_MIGRATION_PEER_NARROWER\]$/,
    );

    client.send('{"execute": "migrate", "arguments": {"uri": "tcp:192.0.2.7:4444"}, "id": "to-unknown"}');
    const unknown = await client.next((m) => m.id === 'to-unknown');
    t.regex((unknown.error as { desc: string }).desc, /\[REFUSED_MIGRATION_UNKNOWN_PEER\]$/);

    if (withChannels) {
      client.send(
        `{"execute": "migrate", "arguments": {"channels": ${channels('127.0.0.2', 4444)}}, "id": "ch-narrow"}`,
      );
      t.regex(
        ((await client.next((m) => m.id === 'ch-narrow')).error as { desc: string }).desc,
        /\[REFUSED_MIGRATION_PEER_NARROWER\]$/,
      );
    }

    // Refused migrations never reached QEMU.
    client.send('{"execute": "query-migrate", "id": "q0"}');
    t.deepEqual((await client.next((m) => m.id === 'q0')).return, {});

    const to = withChannels ? `"channels": ${channels('127.0.0.3', port)}` : `"uri": "tcp:127.0.0.3:${port}"`;
    client.send(`{"execute": "migrate", "arguments": {${to}}, "id": 41}`);
    t.deepEqual(await client.next((m) => m.id === 41), { return: {}, id: 41 });
    // QEMU sends MIGRATION events only with the 'events' capability: ask until it is done.
    let status = '';
    for (let i = 0; i < 600 && status !== 'completed' && status !== 'failed'; i++) {
      client.send(`{"execute": "query-migrate", "id": "poll-${i}"}`);
      status = ((await client.next((m) => m.id === `poll-${i}`)).return as { status?: string }).status ?? '';
      if (status !== 'completed') await new Promise((r) => setTimeout(r, 100));
    }
    t.is(status, 'completed');
    const metrics = await daemon.metrics();
    t.true(
      new RegExp(
        `physbits_refused_commands_total\\{vm="mover",id="[0-9a-f]{12}",host="[^"]+",command="migrate"\\} ${withChannels ? 3 : 2}\\n`,
      ).test(metrics),
      metrics,
    );
  });
}
