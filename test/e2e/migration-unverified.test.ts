/**
 * A migration started through a second monitor never passes the guard: the daemon sees QEMU's
 * MIGRATION event, marks the guest critical (a narrower peer exists) with MIGRATION_UNVERIFIED,
 * and with guard.cancelUnsafe cancels it. On both QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { EventStream, LineClient, startDaemon, vmNamed, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { QEMUS, startGuest, startMigrationTarget, type Guest } from '../helpers/qemu';
import { freePort } from '../helpers/net';

for (const qemu of QEMUS) {
  test(`${qemu.label}: an unseen migration turns the guest critical and, with guard.cancelUnsafe, is cancelled`, async (t) => {
    const dir = qemu.tempDir('physbits-unseen-');
    const vms = join(dir, 'vms');
    const side = join(dir, 'side');
    mkdirSync(vms, { recursive: true });
    mkdirSync(side, { recursive: true });
    let daemon: DaemonProcess | null = null;
    let source: Guest | null = null;
    let dest: Guest | null = null;
    t.teardown(async () => {
      await daemon?.stop();
      await dest?.kill();
      await source?.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    // A second QMP monitor outside the discovery glob: what another tool would use.
    source = await startGuest({
      name: 'sneaky',
      dir: vms,
      cpu: 'phys-bits=42',
      memory: '64M',
      qemu,
      extraArgs: ['-qmp', `unix:${qemu.inner(join(side, 'other.qmp'))},server=on,wait=off`],
    });
    const port = await freePort('127.0.0.3');
    dest = await startMigrationTarget({ cpu: 'phys-bits=42', memory: '64M', qemu, ip: '127.0.0.3', port });
    daemon = await startDaemon({ dir, config: { host: { physBits: 48 }, guard: { cancelUnsafe: true } } });
    const before = await daemon.waitForStatus(
      (d) => d.vms.some((v) => v.name === 'sneaky' && v.verdict),
      'the guest judged',
    );
    // The reason lives from QEMU's MIGRATION event until the daemon's migrate_cancel takes effect, a
    // round trip: too short to catch by polling the status, so the daemon's events are read instead.
    const events = await EventStream.open(daemon.apiSocket);
    t.teardown(() => events.close());

    const other = await waitUntil(
      () => LineClient.negotiated(join(side, 'other.qmp')).catch(() => null),
      'the second monitor',
    );
    t.teardown(() => other.client.socket.destroy());
    const c = other.client;
    c.send(
      '{"execute": "migrate-set-capabilities", "arguments": {"capabilities": [{"capability": "events", "state": true}]}, "id": 1}',
    );
    t.deepEqual(await c.next((m) => m.id === 1), { return: {}, id: 1 });
    // Slow enough that the daemon's answer arrives while the migration runs.
    c.send('{"execute": "migrate-set-parameters", "arguments": {"max-bandwidth": 65536}, "id": 2}');
    t.deepEqual(await c.next((m) => m.id === 2), { return: {}, id: 2 });
    c.send(`{"execute": "migrate", "arguments": {"uri": "tcp:127.0.0.3:${port}"}, "id": 3}`);
    t.deepEqual(await c.next((m) => m.id === 3), { return: {}, id: 3 });

    const unverified = await events.next(
      (e) => e.type === 'migration' && e.vm === 'sneaky',
      'the migration event of sneaky',
      15000,
    );
    t.like(unverified, { verified: false, severity: 'critical' });
    t.regex(String(unverified.message), /narrow \(39 bits\)/);
    const verdict = await events.next(
      (e) => e.type === 'verdict' && e.vm === 'sneaky' && e.severity === 'critical',
      'the verdict of sneaky turning critical',
      15000,
    );
    t.is(vmNamed(before, 'sneaky')!.verdict!.severity, 'warning');
    t.like(verdict, { previous: 'warning', severity: 'critical', reason: 'MIGRATION_UNVERIFIED' });
    const reasons = verdict.reasons as Array<{ code: string; message: string }>;
    t.regex(reasons.find((r) => r.code === 'MIGRATION_UNVERIFIED')!.message, /narrow \(39 bits\)/);
    const cancelled = await c.next(
      (m) => m.event === 'MIGRATION' && (m.data as { status: string }).status === 'cancelled',
      20000,
    );
    t.truthy(cancelled);
    await daemon.waitForStatus(
      (d) => !d.vms.find((v) => v.name === 'sneaky')?.verdict?.reasons.some((r) => r.code === 'MIGRATION_UNVERIFIED'),
      'the reason cleared after the cancel',
      15000,
    );
  });
}
