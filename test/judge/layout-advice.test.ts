import test from 'ava';
import { AMD_ABOVE_1TB_START, estimatePcLayout, GiB } from '../../agent/facts/guest-layout';
import { layoutAdvice } from '../../agent/judge/layout-advice';

// 1000 GiB on q35: 2 GiB below 4 GiB, 998 GiB above. From 4 GiB the 64-bit hole would end at
// 1034 GiB, past AMD's HyperTransport hole at 1012 GiB, so on an AMD vCPU QEMU 7.1+ starts the
// RAM above 4 GiB at 1 TiB instead (hw/i386/pc.c pc_memory_init): RAM ends at 2022 GiB, the hole
// runs from 2022 to 2054 GiB.
const amd = estimatePcLayout({
  machine: 'q35',
  ramBytes: 1000 * GiB,
  maxRamBytes: 0,
  slots: 0,
  vendor: 'AuthenticAMD',
});
const intel = estimatePcLayout({
  machine: 'q35',
  ramBytes: 1000 * GiB,
  maxRamBytes: 0,
  slots: 0,
  vendor: 'GenuineIntel',
});

test('AMD 1 TiB start: the layout moved to 1 TiB is reproduced exactly, RAM measured from 1 TiB', (t) => {
  t.is(amd.above4gStart, AMD_ABOVE_1TB_START);
  const advice = layoutAdvice(amd, 41);
  t.false(advice.fits);
  t.false(advice.approximate);
  t.is(advice.end, 2054 * GiB);
  t.deepEqual(advice.passes, [{ region: 'pci-hole64', end: 2054 * GiB }]);
  // Memory that fits under 2 TiB with the 32 GiB hole: above-4G RAM up to 2016 - 1024 = 992 GiB.
  const memory = advice.fixes.find((f) => f.setting === 'memory');
  t.like(memory, { atMost: 994 * GiB, shrinkBy: 6 * GiB, alone: true, qemu: '-m 994G' });
  const hole = advice.fixes.find((f) => f.setting === 'pci-hole64-size');
  t.like(hole, { atMost: 26 * GiB, alone: true });
});

test('AMD 1 TiB start: RAM that itself passes the limit is named', (t) => {
  const advice = layoutAdvice(amd, 40);
  t.deepEqual(
    advice.passes.map((p) => [p.region, p.end / GiB]),
    [
      ['ram-above-4g', 2022],
      ['pci-hole64', 2054],
    ],
  );
  const memory = advice.fixes.find((f) => f.setting === 'memory');
  t.like(memory, { atMost: null, alone: false });
});

test('Intel: the same RAM starts at 4 GiB and fits 41 bits', (t) => {
  t.is(intel.above4gStart, 4 * GiB);
  const advice = layoutAdvice(intel, 41);
  t.true(advice.fits);
  t.false(advice.approximate);
  t.is(advice.end, 1034 * GiB);
});
