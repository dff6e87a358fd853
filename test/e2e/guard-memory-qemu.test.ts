/**
 * The memory rule against a real (paused, TCG) QEMU: the placement the guard predicts is where QEMU
 * then puts the DIMM, and the DIMM it refuses is one QEMU would indeed have put above the limit.
 * On both QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { parseConfig } from '../../agent/core/config';
import { readGuestFacts, parseMemoryDevices } from '../../agent/facts/guest-facts';
import { createGuardInterceptor, type GuardCommand, type GuardRefusal } from '../../agent/guard/guard-decision';
import { parseHmpCommandLine } from '../../agent/guard/hmp-command';
import { memoryDeviceRequest } from '../../agent/guard/memory-hotplug-rule';
import { QmpClient } from '../../qmp/client';
import { GiB, hostFacts } from '../helpers/guard-facts';
import { QEMUS, startGuest } from '../helpers/qemu';

const cmd = (execute: string, args?: Record<string, unknown>): GuardCommand => ({
  execute,
  arguments: args,
  oob: false,
});

for (const qemu of QEMUS) {
  test(`${qemu.label}: predicted DIMM placement matches QEMU; the one crossing 2^33 is refused`, async (t) => {
    const guest = await startGuest({ name: 'hotplug', memory: '128M,slots=4,maxmem=8G', qemu });
    t.teardown(() => guest.kill());
    const q = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    t.teardown(() => q.close());

    const facts = await readGuestFacts(q, { timeoutMs: 20000 });
    t.is(facts.accelerator, 'tcg');
    // q35 with 128 MiB: no RAM above 4 GiB, device memory starts at 4 GiB and spans
    // maxmem - mem + 1 GiB per slot.
    t.deepEqual(facts.layout?.deviceMemory, { base: 4 * GiB, size: 8 * GiB - 128 * 2 ** 20 + 4 * GiB });

    const refusals: GuardRefusal[] = [];
    const config = parseConfig({ policy: { accelerators: ['tcg'] } });
    const guard = createGuardInterceptor({
      vm: 'hotplug',
      host: () => hostFacts(33), // 8 GiB: the region [4 GiB, ~15.9 GiB) straddles it
      facts: () => facts,
      waitForFacts: async () => facts,
      q,
      config: () => config,
      peers: { findByAddress: () => null, facts: async () => ({ name: '', physBits: null, reachable: false }) },
      onRefusal: (r) => refusals.push(r),
    });

    for (const [id, size] of [
      ['m1', 3 * GiB],
      ['m2', 2 * GiB],
      ['m3', GiB],
    ] as const) {
      await q.execute('object-add', { 'qom-type': 'memory-backend-ram', id, size, reserve: false });
    }

    // 3 GiB: first fit at 4 GiB, ends at 7 GiB: forwarded, and QEMU agrees on the address.
    const d1 = cmd('device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm1' });
    t.deepEqual(await guard(d1), { action: 'forward' });
    await q.execute('device_add', d1.arguments);
    t.deepEqual(
      parseMemoryDevices(await q.execute('query-memory-devices')).map((d) => [d.id, d.addr, d.size]),
      [['d1', 4 * GiB, 3 * GiB]],
    );

    // 2 GiB: would go to [7 GiB, 9 GiB): refused.
    const d2 = cmd('device_add', { driver: 'pc-dimm', id: 'd2', memdev: 'm2' });
    const r2 = await guard(d2);
    t.is(r2.action === 'reply-error' && r2.code, 'REFUSED_MEMORY_ABOVE_HOST_LIMIT');
    t.regex((r2 as { desc: string }).desc, /QEMU would place it at 0x1c0000000/);

    // The same through HMP with an explicit address below the limit: forwarded, and QEMU takes it.
    const h3 = cmd('human-monitor-command', {
      'command-line': `device_add pc-dimm,id=d3,memdev=m3,addr=0x${(7 * GiB).toString(16)}`,
    });
    t.deepEqual(await guard(h3), { action: 'forward' });
    t.is(await q.execute('human-monitor-command', h3.arguments), '');

    // Unguarded, QEMU puts the refused DIMM exactly where the guard said: above 8 GiB.
    await q.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'm4', size: 2 * GiB, reserve: false });
    const d4 = cmd('device_add', { driver: 'pc-dimm', id: 'd4', memdev: 'm4' });
    const r4 = await guard(d4);
    t.regex((r4 as { desc: string }).desc, /QEMU would place it at 0x200000000/);
    await q.execute('device_add', d4.arguments);
    const placed = parseMemoryDevices(await q.execute('query-memory-devices')).find((d) => d.id === 'd4');
    t.is(placed?.addr, 8 * GiB);
    t.deepEqual(
      refusals.map((r) => r.code),
      ['REFUSED_MEMORY_ABOVE_HOST_LIMIT', 'REFUSED_MEMORY_ABOVE_HOST_LIMIT'],
    );
  });

  test(`${qemu.label}: HMP parity: QEMU reads device_add addresses as the guard does (octal, last duplicate wins, quotes)`, async (t) => {
    const guest = await startGuest({ name: 'hmpparity', memory: '128M,slots=4,maxmem=8G', qemu });
    t.teardown(() => guest.kill());
    const q = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    t.teardown(() => q.close());
    const lines = [
      'device_add pc-dimm,id=oct,memdev=ma,addr=0120000000000',
      'device_add pc-dimm,id=dup,memdev=mb,addr=0x100000000,addr=0x2c0000000',
      'device_add "pc-dimm,id=quo,memdev=mc,addr=0x140000000"',
    ];
    for (const id of ['ma', 'mb', 'mc']) {
      await q.execute('object-add', { 'qom-type': 'memory-backend-ram', id, size: GiB, reserve: false });
    }
    const expected: Array<[string, number]> = [];
    for (const line of lines) {
      const parsed = parseHmpCommandLine(line);
      if (parsed.kind !== 'device_add') return t.fail(line);
      const dev = memoryDeviceRequest(parsed.args);
      if (!dev || dev.addr.kind !== 'value') return t.fail(line);
      expected.push([dev.id!, dev.addr.value]);
      t.is(await q.execute('human-monitor-command', { 'command-line': line }), '', line);
    }
    t.deepEqual(expected, [
      ['oct', 10 * GiB],
      ['dup', 11 * GiB],
      ['quo', 5 * GiB],
    ]);
    // Past QEMU's 1023-byte argument buffer the addr is cut off: QEMU places the DIMM itself (first
    // fit, 4 GiB), and the guard, seeing no address either, would have predicted that placement.
    await q.execute('object-add', { 'qom-type': 'memory-backend-ram', id: 'md', size: GiB, reserve: false });
    const longId = `long${'x'.repeat(1100)}`;
    const cut = parseHmpCommandLine(`device_add pc-dimm,memdev=md,id=${longId},addr=0x300000000`);
    if (cut.kind !== 'device_add') return t.fail();
    t.deepEqual(memoryDeviceRequest(cut.args)?.addr, { kind: 'absent' });
    t.is(
      await q.execute('human-monitor-command', {
        'command-line': `device_add pc-dimm,memdev=md,id=${longId},addr=0x300000000`,
      }),
      '',
    );
    const plugged = parseMemoryDevices(await q.execute('query-memory-devices'));
    t.deepEqual(
      plugged.map((d) => d.addr).sort((a, b) => a - b),
      [4 * GiB, ...expected.map(([, addr]) => addr)].sort((a, b) => a - b),
    );
    for (const [id, addr] of expected) t.is(plugged.find((d) => d.id === id)?.addr, addr, id);
  });
}
