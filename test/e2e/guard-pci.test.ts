/**
 * The PCI hot-plug rule end to end, on firmware-booted guests (SeaBIOS and OVMF, QEMU 7.2 and 10.0):
 * q35 with three pcie-root-ports and phys-bits=40, read by a daemon whose host.physBits plays a
 * narrower host. A virtio-rng-pci (64-bit BAR 4) sent through the guarded socket into root port
 * rp2 is refused where firmware put rp2's prefetchable window above the limit, and passed to QEMU
 * once the limit is wide enough (SIGHUP with host.physBits=40). Where firmware kept the windows
 * below 4 GiB (SeaBIOS 1.16.2), the root port takes the device even on a 32-bit host, and the root
 * bus, whose 64-bit hole starts at 5 GiB, is refused.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { PciBridgeFact } from '../../agent/core/types';
import {
  LineClient,
  mergeConfig,
  baseConfig,
  startDaemon,
  waitUntil,
  writeConfig,
  type DaemonProcess,
} from '../helpers/daemon';
import { startFirmwareGuest, type FirmwareGuest } from '../helpers/firmware-guest';
import { QEMUS } from '../helpers/qemu';

const NAME = 'pcifw';

interface Reply {
  id?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
}

async function send(client: LineClient, id: number, execute: string, args: Record<string, unknown>): Promise<Reply> {
  client.send(JSON.stringify({ execute, arguments: args, id }));
  return (await client.next((m) => m.id === id, 60000, `the reply to ${execute} (id ${id})`)) as Reply;
}

/** Whether query-pci (through the guarded socket) lists a device with this qdev id behind rp2. */
async function onRp2(client: LineClient, id: number, qdevId: string): Promise<boolean> {
  const reply = await send(client, id, 'query-pci', {});
  const buses = reply.return as { devices: { qdev_id: string; pci_bridge?: { devices?: { qdev_id: string }[] } }[] }[];
  const rp2 = buses[0].devices.find((d) => d.qdev_id === 'rp2');
  return !!rp2?.pci_bridge?.devices?.some((d) => d.qdev_id === qdevId);
}

async function run(t: ExecutionContext, qemuIndex: number, firmware: 'seabios' | 'ovmf'): Promise<void> {
  const qemu = QEMUS[qemuIndex];
  const dir = qemu.tempDir('physbits-pci-');
  let fw: FirmwareGuest | null = null;
  let daemon: DaemonProcess | null = null;
  t.teardown(async () => {
    await daemon?.stop();
    await fw?.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  mkdirSync(join(dir, 'vms'));
  fw = await startFirmwareGuest({ qemu, firmware, name: NAME, dir: join(dir, 'vms'), cpu: 'phys-bits=40' });

  // First a host as wide as the guest, to read where firmware put rp2's window.
  daemon = await startDaemon({ dir, config: { host: { physBits: 40 }, peers: [] } });
  const read = await daemon.waitForStatus(
    (d) => !!d.vms.find((v) => v.name === NAME)?.guest?.layout?.pciBridges?.length,
    'the guest read with its PCI bridges',
    60000,
  );
  const vm = read.vms.find((v) => v.name === NAME)!;
  const bridges = vm.guest!.layout!.pciBridges!;
  t.deepEqual(
    bridges.map((b) => b.id),
    ['rp1', 'rp2', 'rp3'],
  );
  const rp2 = bridges.find((b) => b.id === 'rp2') as PciBridgeFact;
  t.truthy(rp2.prefetchable, 'firmware opened a prefetchable window on rp2');
  // Equal width: nothing past the limit, BARs included.
  t.like(vm.verdict, { relation: 'equal', severity: 'ok' });
  t.deepEqual(
    vm.verdict!.reasons.map((r) => r.code),
    ['GUEST_EQUALS_HOST'],
  );
  t.true(vm.guest!.layout!.highestAddress <= 2 ** 40);
  const high = rp2.prefetchable!.end > 2 ** 39;
  t.log(
    `${qemu.label} ${firmware}: rp2 prefetchable ${JSON.stringify(rp2.prefetchable)}, BARs ` +
      JSON.stringify(vm.guest!.layout!.pciBars),
  );

  // Then the narrower host: 39 bits where the window is high, 32 where firmware kept it low.
  const narrowBits = high ? 39 : 32;
  writeConfig(daemon.configPath, mergeConfig(baseConfig(dir), { host: { physBits: narrowBits }, peers: [] }));
  const reloads = daemon.lines().filter((l) => l.message === 'configuration reloaded').length;
  process.kill(daemon.pid, 'SIGHUP');
  await waitUntil(
    () => daemon!.lines().filter((l) => l.message === 'configuration reloaded').length > reloads || null,
    'the daemon to reload its config',
    20000,
  );
  const { client } = await waitUntil(
    () => LineClient.negotiated(join(dir, 'guard', `${NAME}.qmp`)).catch(() => null),
    'the guarded socket',
  );
  t.teardown(() => client.socket.destroy());

  const hot = { driver: 'virtio-rng-pci', id: 'hot1', bus: 'rp2' };
  if (high) {
    // The verdict on the narrower host: too wide, and rng64's BAR named when it is mapped above 2^39.
    const narrow = await daemon.waitForStatus(
      (d) => d.host.physBits === 39 && d.vms.find((v) => v.name === NAME)?.verdict?.severity === 'critical',
      'the verdict against 39 bits',
    );
    const judged = narrow.vms.find((v) => v.name === NAME)!;
    const codes = judged.verdict!.reasons.map((r) => r.code);
    t.true(codes.includes('GUEST_WIDER_THAN_HOST'));
    const above = (judged.guest!.layout!.pciBars ?? []).filter((b) => b.base + b.size > 2 ** 39);
    t.is(codes.includes('PCI_BAR_BEYOND_HOST_LIMIT'), above.length > 0);
    for (const b of above) {
      t.regex(
        judged.verdict!.reasons.find((r) => r.code === 'PCI_BAR_BEYOND_HOST_LIMIT')!.message,
        new RegExp(`BAR ${b.bar} of ${b.address} \\("${b.id}"\\) at 0x${b.base.toString(16)}-`),
      );
    }
    const refused = await send(client, 1, 'device_add', hot);
    t.is(refused.error?.class, 'GenericError');
    t.regex(
      refused.error!.desc,
      /^refused by physbits guard: virtio-rng-pci "hot1" on bus "rp2" has a 64-bit memory BAR .* prefetchable window of bridge "rp2" \(00:02\.0\), 0x[0-9a-f]+-0x[0-9a-f]+, which reaches above this host's 39-bit physical addresses \(0x8000000000\).* \[REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT\]$/,
    );
    t.false(await onRp2(client, 2, 'hot1'), 'QEMU never saw the refused device_add');
  } else {
    // SeaBIOS 1.16.2's window is below 4 GiB: it fits a 32-bit host; the root bus does not.
    const root = await send(client, 1, 'device_add', { driver: 'virtio-rng-pci', id: 'root1' });
    t.regex(
      root.error!.desc,
      /virtio-rng-pci "root1" has a 64-bit memory BAR .* root bus's 64-bit PCI hole \(no bus= given: QEMU picks the root bus\), 0x140000000-0x93fffffff, which reaches above this host's 32-bit .*\[REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT\]$/,
    );
    t.deepEqual(await send(client, 2, 'device_add', hot), { return: {}, id: 2 });
    t.true(await onRp2(client, 3, 'hot1'));
    return;
  }

  // A host limit wide enough: the same device_add is passed to QEMU, which plugs it.
  writeConfig(daemon.configPath, mergeConfig(baseConfig(dir), { host: { physBits: 40 }, peers: [] }));
  const again = daemon.lines().filter((l) => l.message === 'configuration reloaded').length;
  process.kill(daemon.pid, 'SIGHUP');
  await waitUntil(
    () => daemon!.lines().filter((l) => l.message === 'configuration reloaded').length > again || null,
    'the daemon to reload its config',
    20000,
  );
  t.deepEqual(await send(client, 3, 'device_add', hot), { return: {}, id: 3 });
  t.true(await onRp2(client, 4, 'hot1'), 'QEMU plugged hot1 into rp2');
}

QEMUS.forEach((qemu, index) => {
  for (const firmware of ['seabios', 'ovmf'] as const) {
    test.serial(
      `${qemu.label}, ${firmware}: device_add into a root port is judged by the window firmware placed: refused above the limit, passed once it fits`,
      (t) => run(t, index, firmware),
    );
  }
});
