/**
 * The PCI rule's device classes end to end, on QEMU 7.2 and 10.0, through a daemon whose
 * host.physBits (34: 16 GiB) plays a narrow host:
 *  - a paused q35 with a pcie-root-port (windows off until firmware runs: the root bus's 64-bit
 *    hole, which ends near 38 GiB, is the window) and a pci-bridge (its windows read base 0 /
 *    limit 0xfffff until programmed, which is not a window at [0, 1 MiB)): QEMU's short names,
 *    nvme's PMR, virtio-mem-pci's modern BAR and devices behind the pci-bridge are refused; e1000
 *    (32-bit BARs only) is passed and QEMU plugs it;
 *  - a SeaBIOS-booted pc-i440fx-2.10 (x-pci-hole64-fix=off: pci-hole64 0/0, no 64-bit window in
 *    ACPI): a virtio device on the root bus is passed, not "unknown", and QEMU plugs it.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { waitForBar64 } from '../helpers/firmware-guest';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';

const NAME = 'pcidev';

interface Reply {
  id?: unknown;
  return?: unknown;
  error?: { class: string; desc: string };
}

async function send(client: LineClient, id: number, execute: string, args: Record<string, unknown>): Promise<Reply> {
  client.send(JSON.stringify({ execute, arguments: args, id }));
  return (await client.next((m) => m.id === id, 60000, `the reply to ${execute} (id ${id})`)) as Reply;
}

async function guarded(
  t: ExecutionContext,
  qemu: Qemu,
  start: (dir: string) => Promise<Guest>,
  ready: (vm: { guest?: { layout?: { pciBridges?: unknown[] } | null } }) => boolean,
): Promise<LineClient> {
  const dir = qemu.tempDir('physbits-pcidev-');
  let guest: Guest | null = null;
  let daemon: DaemonProcess | null = null;
  t.teardown(async () => {
    await daemon?.stop();
    await guest?.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  mkdirSync(join(dir, 'vms'));
  guest = await start(join(dir, 'vms'));
  daemon = await startDaemon({ dir, config: { host: { physBits: 34 }, peers: [] } });
  await daemon.waitForStatus((d) => {
    const vm = d.vms.find((v) => v.name === NAME);
    return !!vm && ready(vm);
  }, 'the guest read with its PCI layout');
  const { client } = await waitUntil(
    () => LineClient.negotiated(join(dir, 'guard', `${NAME}.qmp`)).catch(() => null),
    'the guarded socket',
  );
  t.teardown(() => client.socket.destroy());
  return client;
}

const REFUSED = /^refused by physbits guard: .* \[REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT\]$/;

QEMUS.forEach((qemu) => {
  test.serial(
    `${qemu.label}: short names, nvme's PMR, virtio-mem-pci and an unprogrammed pci-bridge meet the PCI rule`,
    async (t) => {
      const client = await guarded(
        t,
        qemu,
        (dir) =>
          startGuest({
            qemu,
            name: NAME,
            dir,
            memory: '128M,slots=2,maxmem=1G',
            extraArgs: [
              '-device',
              'pcie-root-port,id=rp1,chassis=1,slot=1',
              '-device',
              'pci-bridge,id=pb1,chassis_nr=2',
              '-object',
              'memory-backend-ram,id=mem1,size=64M',
              '-object',
              'memory-backend-ram,id=pmr1,size=16M',
              '-netdev',
              'user,id=n0',
            ],
          }),
        (vm) => (vm.guest?.layout?.pciBridges?.length ?? 0) === 2,
      );
      let id = 1;
      const refused = async (args: Record<string, unknown>, desc: RegExp) => {
        const r = await send(client, id++, 'device_add', args);
        t.is(r.error?.class, 'GenericError', JSON.stringify(args));
        t.regex(r.error?.desc ?? '', REFUSED);
        t.regex(r.error?.desc ?? '', desc);
      };
      // QEMU's alias: virtio-rng is virtio-rng-pci (system/qdev-monitor.c qdev_alias_table).
      await refused(
        { driver: 'virtio-rng', id: 'r1', bus: 'rp1' },
        /virtio-rng \(virtio-rng-pci\) "r1" on bus "rp1" has a 64-bit memory BAR .*root bus's 64-bit PCI hole \(bridge "rp1" \(00:01\.0\) has no prefetchable window/,
      );
      const hmp = await send(client, id++, 'human-monitor-command', {
        'command-line': 'device_add virtio-net,id=n1,netdev=n0,bus=rp1',
      });
      t.regex(
        hmp.error?.desc ?? '',
        /virtio-net \(virtio-net-pci\) "n1" on bus "rp1" .*\[REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT\]$/,
      );
      // nvme's persistent memory region: BAR 4, 64-bit prefetchable, host memory.
      await refused({ driver: 'nvme', id: 'nv1', serial: 'x', pmrdev: 'pmr1', bus: 'rp1' }, /nvme_init_pmr/);
      // virtio-mem-pci: its memory fits the 34-bit host, its modern BAR does not.
      await refused({ driver: 'virtio-mem-pci', id: 'vm1', memdev: 'mem1', bus: 'rp1' }, /virtio-mem-pci "vm1"/);
      // Behind the pci-bridge, whose windows read base 0 / limit 0xfffff: not programmed.
      await refused(
        { driver: 'virtio-rng-pci', id: 'r2', bus: 'pb1' },
        /root bus's 64-bit PCI hole \(bridge "pb1" \(00:0[0-9a-f]\.0\) has no prefetchable window/,
      );
      // 32-bit BARs only: passed, and QEMU plugs it.
      t.deepEqual(await send(client, id++, 'device_add', { driver: 'e1000', id: 'e1', netdev: 'n0', bus: 'rp1' }), {
        return: {},
        id: id - 1,
      });
    },
  );

  test.serial(
    `${qemu.label}: a SeaBIOS-booted pc-i440fx-2.10 (pci-hole64 0/0) takes a virtio device on its root bus`,
    async (t) => {
      const client = await guarded(
        t,
        qemu,
        async (dir) => {
          const guest = await startGuest({
            qemu,
            name: NAME,
            dir,
            firmware: 'seabios',
            memory: '1G',
            extraArgs: ['-machine', 'pc-i440fx-2.10', '-device', 'virtio-rng-pci,id=rng64'],
          });
          // SeaBIOS placed the 64-bit BAR, below 4 GiB: the host bridge still reports no 64-bit hole.
          const bar = await waitForBar64(guest.socket, 60000).catch(async (err: unknown) => {
            await guest.kill();
            throw err;
          });
          t.true(bar.address + bar.size <= 2 ** 32, JSON.stringify(bar));
          return guest;
        },
        (vm) => Array.isArray(vm.guest?.layout?.pciBridges),
      );
      const r = await send(client, 1, 'device_add', { driver: 'virtio-rng-pci', id: 'r1' });
      t.deepEqual(r, { return: {}, id: 1 });
    },
  );
});
