/**
 * The whole chain on real parts: a wide QEMU guest found by physbitsd fires a critical alert that a
 * real Alertmanager shows with the contract's labels; a guard refusal fires its own REFUSED_ alert;
 * quitting the guest resolves its condition alert while the refusal's runs out its hold. On both
 * QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ALERTMANAGER, requireTool, startAlertmanager, waitFor } from '../helpers/alertmanager';
import { LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { QEMUS, startGuest } from '../helpers/qemu';
import { vmId } from '../../agent/core/vm-name';

for (const qemu of QEMUS) {
  test(`${qemu.label}: wide guest → critical alert in Alertmanager; refusal → REFUSED_ alert; guest quits → resolved`, async (t) => {
    if (!requireTool(t, ALERTMANAGER, 'prometheus-alertmanager')) return t.pass();
    const am = await startAlertmanager();
    t.teardown(() => am.stop());
    const dir = qemu.tempDir('physbits-daemon-alerts-');
    mkdirSync(join(dir, 'vms'), { recursive: true });
    const guest = await startGuest({ name: 'wide1', dir: join(dir, 'vms'), cpu: 'phys-bits=46', memory: '64M', qemu });
    let daemon: DaemonProcess | null = null;
    t.teardown(async () => {
      await daemon?.stop();
      await guest.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    daemon = await startDaemon({
      dir,
      config: { host: { physBits: 40, name: 'hv-test' }, alerts: { alertmanagers: [am.url], resendSeconds: 5 } },
    });

    const firing = await waitFor('the critical alert in Alertmanager', async () =>
      (await am.alerts()).find((a) => a.labels.vm === 'wide1' && a.labels.reason === 'GUEST_WIDER_THAN_HOST'),
    );
    t.deepEqual(firing.labels, {
      alertname: 'PhysbitsGuestWiderThanHost',
      vm: 'wide1',
      id: vmId(guest.socket),
      host: 'hv-test',
      severity: 'critical',
      reason: 'GUEST_WIDER_THAN_HOST',
    });
    t.truthy(firing.annotations.summary);
    t.regex(firing.annotations.description, /phys-bits 46 is wider than the host's 40[- ]bit/);

    const guarded = join(dir, 'guard', 'wide1.qmp');
    const { client } = await waitUntil(() => LineClient.negotiated(guarded).catch(() => null), 'the guarded socket');
    t.teardown(() => client.socket.destroy());
    client.send(
      '{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m", "size": 134217728}, "id": 1}',
    );
    await client.next((m) => m.id === 1);
    client.send(
      `{"execute": "device_add", "arguments": {"driver": "pc-dimm", "id": "d", "memdev": "m", "addr": ${2 ** 40}}, "id": 2}`,
    );
    const refused = await client.next((m) => m.id === 2);
    t.regex((refused.error as { desc: string }).desc, /^refused by physbits guard: /);
    const refusal = await waitFor('the refusal alert in Alertmanager', async () =>
      (await am.alerts()).find((a) => a.labels.vm === 'wide1' && a.labels.reason.startsWith('REFUSED_')),
    );
    t.is(refusal.labels.reason, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
    t.is(refusal.labels.host, 'hv-test');
    t.is(refusal.labels.id, vmId(guest.socket));
    // The refusal fires for alerts.refusalHoldMinutes (default 15) from the refusal.
    const holdMs = Date.parse(refusal.endsAt) - Date.parse(refusal.startsAt);
    t.true(holdMs > 14 * 60_000 && holdMs <= 15 * 60_000 + 1000, `${holdMs}`);

    // The guest quits: QEMU removes its socket, the daemon drops the VM and resolves its condition.
    client.send('{"execute": "quit", "id": 3}');
    if (guest.process.exitCode === null) await new Promise((r) => guest.process.once('exit', r));
    await waitFor('the condition alert resolved', async () =>
      (await am.alerts()).some((a) => a.labels.vm === 'wide1' && a.labels.reason === 'GUEST_WIDER_THAN_HOST')
        ? undefined
        : true,
    );
    // The refusal still fires: it reports something that happened.
    t.true(
      (await am.alerts()).some((a) => a.labels.vm === 'wide1' && a.labels.reason === 'REFUSED_MEMORY_ABOVE_HOST_LIMIT'),
    );
  });
}
