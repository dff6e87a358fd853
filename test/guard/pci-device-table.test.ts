/**
 * The PCI device table against the QEMUs themselves: the aliases are the ones `-device help` prints,
 * every PCI device type either QEMU registers is classified or knowingly left unlisted, and each
 * device cold-plugged on a paused q35 shows in query-pci exactly the 64-bit BARs the table says.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { classifyPciDriver, QDEV_ALIASES, resolveDriver } from '../../agent/guard/pci-device-table';
import { QmpClient } from '../../qmp/client';
import { QEMUS, startGuest, type Qemu } from '../helpers/qemu';

test('resolveDriver: an alias is the -pci type; any other name is itself (lower case)', (t) => {
  t.deepEqual(resolveDriver('virtio-rng'), { driver: 'virtio-rng-pci', alias: 'virtio-rng' });
  t.deepEqual(resolveDriver('Virtio-Net'), { driver: 'virtio-net-pci', alias: 'virtio-net' });
  t.deepEqual(resolveDriver('ac97'), { driver: 'ac97', alias: 'ac97' });
  t.deepEqual(resolveDriver('virtio-rng-pci'), { driver: 'virtio-rng-pci', alias: null });
  t.deepEqual(resolveDriver('usb-tablet'), { driver: 'usb-tablet', alias: null });
  // virtio-mem and virtio-pmem have no alias on x86: QEMU refuses those names.
  t.deepEqual(resolveDriver('virtio-mem'), { driver: 'virtio-mem', alias: null });
});

/** Types the table leaves unlisted on purpose: not hot-pluggable, or needing hardware this test cannot give. */
const UNLISTED_ON_PURPOSE = new Set([
  'acpi-erst',
  'ctucan_pci',
  'gpex-root',
  'i440fx',
  'ich9-lpc',
  'ich9-smb',
  'kvaser_pci',
  'mch',
  'mioe3680_pci',
  'pci-ipmi-bt',
  'pci-ipmi-kcs',
  'pcm3680_pci',
  'piix3',
  'piix3-xen',
  'piix4-isa',
  'piix4_pm',
  'pvrdma',
  'pxb',
  'pxb-cxl',
  'pxb-pcie',
  'vfio-pci-igd-lpc-bridge',
  'x-pci-proxy-dev',
  'xen-platform',
]);

function deviceHelp(qemu: Qemu): string {
  const [cmd, ...prefix] = qemu.command;
  return execFileSync(cmd, [...prefix, '-device', 'help'], { encoding: 'utf8', timeout: 20000 });
}

/** Each device cold-plugged at 00:10.0, with what it needs to realize. */
const MEASURED: [string, string][] = [
  ['virtio-rng-pci', 'virtio-rng-pci'],
  ['virtio-net-pci', 'virtio-net-pci,netdev=n0'],
  ['virtio-blk-pci,disable-modern=on', 'virtio-blk-pci,drive=d0,disable-modern=on'],
  ['virtio-mem-pci', 'virtio-mem-pci,memdev=mem1'],
  ['virtio-vga', 'virtio-vga'],
  ['nvme', 'nvme,serial=x'],
  ['nvme,cmb_size_mb=16', 'nvme,serial=x,cmb_size_mb=16'],
  ['nvme,pmrdev=mem1', 'nvme,serial=x,pmrdev=mem1'],
  ['megasas', 'megasas'],
  ['megasas-gen2', 'megasas-gen2'],
  ['pci-bridge', 'pci-bridge,chassis_nr=5'],
  ['pci-bridge,shpc=off', 'pci-bridge,chassis_nr=5,shpc=off'],
  ['pcie-pci-bridge', 'pcie-pci-bridge'],
  ['qemu-xhci', 'qemu-xhci'],
  ['e1000', 'e1000,netdev=n0'],
  ['e1000e', 'e1000e,netdev=n0'],
  ['ich9-ahci', 'ich9-ahci'],
  ['VGA', 'VGA'],
  ['ivshmem-plain', 'ivshmem-plain,memdev=mem1'],
];

function parseArgs(spec: string): Record<string, unknown> {
  const [driver, ...rest] = spec.split(',');
  return { driver, ...Object.fromEntries(rest.map((kv) => kv.split('=') as [string, string])) };
}

for (const qemu of QEMUS) {
  test(`${qemu.label}: the alias table holds every alias -device help prints`, (t) => {
    const printed = [...deviceHelp(qemu).matchAll(/^name "([^"]+)", bus PCI, alias "([^"]+)"/gm)];
    t.true(printed.length >= 15, `${printed.length} aliases printed`);
    for (const [, type, alias] of printed) t.is(QDEV_ALIASES[alias], type, alias);
  });

  test(`${qemu.label}: every PCI device type is in the table or knowingly unlisted, and query-pci shows the 64-bit BARs it says`, async (t) => {
    const guest = await startGuest({
      qemu,
      memory: '128M,slots=2,maxmem=1G',
      extraArgs: [
        '-machine',
        'q35',
        '-object',
        'memory-backend-ram,id=mem1,size=64M',
        '-netdev',
        'user,id=n0',
        '-drive',
        'if=none,id=d0,driver=null-co',
      ],
    });
    t.teardown(() => guest.kill());
    const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    const types = await client.execute<{ name: string }[]>('qom-list-types', {
      implements: 'pci-device',
      abstract: false,
    });
    await client.close();
    const unlisted = types
      .map((x) => x.name.toLowerCase())
      .filter((n) => classifyPciDriver(n, {}).kind === 'unlisted' && !UNLISTED_ON_PURPOSE.has(n));
    t.deepEqual(unlisted, [], 'PCI device types the table does not classify');
  });

  test(`${qemu.label}: query-pci of each measured device matches the table`, async (t) => {
    for (const [label, spec] of MEASURED) {
      const guest = await startGuest({
        qemu,
        memory: '128M,slots=2,maxmem=1G',
        extraArgs: [
          '-object',
          'memory-backend-ram,id=mem1,size=64M',
          '-netdev',
          'user,id=n0',
          '-drive',
          'if=none,id=d0,driver=null-co',
          '-device',
          `${spec},id=probe,addr=0x10`,
        ],
      });
      try {
        const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
        const pci =
          await client.execute<
            { devices: { qdev_id: string; regions: { type: string; mem_type_64?: boolean; prefetch?: boolean }[] }[] }[]
          >('query-pci');
        await client.close();
        const device = pci[0].devices.find((d) => d.qdev_id === 'probe')!;
        const bars = device.regions.filter((r) => r.type === 'memory' && r.mem_type_64 === true);
        const measured = {
          prefetchable: bars.some((r) => r.prefetch === true),
          nonPrefetchable: bars.some((r) => r.prefetch !== true),
        };
        const args = parseArgs(label);
        const c = classifyPciDriver(resolveDriver(args.driver as string).driver, args);
        const table =
          c.kind === 'bar64'
            ? { prefetchable: c.kinds.prefetchable, nonPrefetchable: c.kinds.nonPrefetchable }
            : { prefetchable: false, nonPrefetchable: false };
        t.deepEqual(table, measured, label);
      } finally {
        await guest.kill();
      }
    }
  });
}
