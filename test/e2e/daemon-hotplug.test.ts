/**
 * A DIMM plugged through the guarded socket: QEMU 7.2 sends no event for it, so the daemon reads
 * the layout again after the guard lets one through; the status shows the device at once. On both
 * QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { QEMUS, startGuest } from '../helpers/qemu';

for (const qemu of QEMUS) {
  test(`${qemu.label}: a DIMM plugged through the guard shows in the status without waiting for the re-verify`, async (t) => {
    const dir = qemu.tempDir('physbits-hotplug-');
    mkdirSync(join(dir, 'vms'), { recursive: true });
    const guest = await startGuest({
      name: 'grow',
      dir: join(dir, 'vms'),
      cpu: 'phys-bits=40',
      memory: '64M,slots=2,maxmem=1G',
      qemu,
    });
    let daemon: DaemonProcess | null = null;
    t.teardown(async () => {
      await daemon?.stop();
      await guest.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    daemon = await startDaemon({ dir, config: { host: { physBits: 40 } } });
    const before = await daemon.waitForStatus((d) => !!d.vms.find((v) => v.name === 'grow')?.guest, 'the guest read');
    t.deepEqual(before.vms.find((v) => v.name === 'grow')!.guest!.layout!.memoryDevices, []);
    const { client } = await waitUntil(
      () => LineClient.negotiated(join(dir, 'guard', 'grow.qmp')).catch(() => null),
      'the guarded socket',
    );
    t.teardown(() => client.socket.destroy());
    client.send(
      '{"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "m1", "size": 134217728}, "id": 1}',
    );
    t.deepEqual(await client.next((m) => m.id === 1), { return: {}, id: 1 });
    client.send(
      '{"execute": "device_add", "arguments": {"driver": "pc-dimm", "id": "dimm1", "memdev": "m1"}, "id": 2}',
    );
    t.deepEqual(await client.next((m) => m.id === 2), { return: {}, id: 2 });
    const after = await daemon.waitForStatus(
      (d) => (d.vms.find((v) => v.name === 'grow')?.guest?.layout?.memoryDevices.length ?? 0) === 1,
      'the DIMM in the status',
      3000,
    );
    t.like(after.vms.find((v) => v.name === 'grow')!.guest!.layout!.memoryDevices[0], {
      type: 'dimm',
      id: 'dimm1',
      addr: 2 ** 32,
      size: 128 * 2 ** 20,
    });
  });
}
