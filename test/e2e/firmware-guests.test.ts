/**
 * Firmware-booted guests on both QEMUs: SeaBIOS and OVMF run on a q35 machine with RAM above 4 GiB,
 * three pcie-root-ports and a virtio-rng-pci whose 64-bit BAR they place; physbitsctl scan then reads
 * the layout firmware produced. Measured: SeaBIOS 1.16.2 (QEMU 7.2's) keeps the small BAR below
 * 4 GiB; SeaBIOS 1.16.3 and OVMF move the 64-bit window near the top of the guest's space. A guest
 * whose width equals the host's stays within the host limit however high firmware put the window.
 */
import test from 'ava';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { ctl } from '../helpers/daemon';
import { startFirmwareGuest } from '../helpers/firmware-guest';
import { QEMUS } from '../helpers/qemu';

const G = 2 ** 30;
const BITS = 40;

for (const qemu of QEMUS) {
  for (const firmware of ['seabios', 'ovmf'] as const) {
    test(`${qemu.label}, ${firmware}: the layout is the one firmware produced; equal width is not past the host limit`, async (t) => {
      const dir = qemu.tempDir('physbits-fw-');
      const fw = await startFirmwareGuest({ qemu, firmware, name: `fw-${firmware}`, dir, cpu: `phys-bits=${BITS}` });
      t.teardown(async () => {
        await fw.kill();
        rmSync(dir, { recursive: true, force: true });
      });
      const config = join(dir, 'config.json');
      writeFileSync(
        config,
        JSON.stringify({ host: { physBits: BITS, name: 'hv-fw' }, policy: { accelerators: ['tcg'] } }),
      );
      const r = await ctl(['scan', '--json', '--config', config, '--socket', fw.guest.socket], 60000);
      t.is(r.code, 0, r.stderr);
      const vm = (JSON.parse(r.stdout) as StatusDocument).vms[0];
      t.is(vm.guest?.runState, 'running');
      const layout = vm.guest!.layout!;
      t.like(layout, { ramBelow4g: 2 * G, ramAbove4g: G, usedEnd: 5 * G, deviceMemory: null });
      // The window physbits reports holds the BAR where firmware put it.
      const bar = fw.bar64;
      if (bar.address >= 4 * G) {
        t.true(layout.pciHole64!.start <= bar.address && bar.address + bar.size <= layout.pciHole64!.end);
        // Near the top: in the highest quarter of the 40-bit space.
        t.true(bar.address >= 2 ** BITS - 2 ** (BITS - 2), `BAR at 0x${bar.address.toString(16)}`);
      } else {
        t.true(bar.address + bar.size <= 4 * G);
        // Nothing placed above 4 GiB: QEMU's own window after RAM (hw/i386/pc.c pc_pci_hole64_start).
        t.deepEqual(layout.pciHole64, { start: 5 * G, end: 37 * G });
      }
      t.true(layout.highestAddress <= 2 ** BITS);
      // The BARs and bridge windows query-pci shows are inside the same 2^40, wherever firmware put them.
      t.true(layout.pciBridges!.length === 3);
      for (const b of layout.pciBars!) t.true(b.base + b.size <= 2 ** BITS, `${b.address} BAR ${b.bar}`);
      for (const w of layout.pciBridges!) t.true((w.prefetchable?.end ?? 0) <= 2 ** BITS, `${w.address} window`);
      t.like(vm.verdict, { relation: 'equal', severity: 'ok' });
      t.deepEqual(
        vm.verdict!.reasons.map((x) => x.code),
        ['GUEST_EQUALS_HOST'],
      );
      t.log(`${firmware}: 64-bit BAR at 0x${bar.address.toString(16)}, window ${JSON.stringify(layout.pciHole64)}`);
    });
  }
}
