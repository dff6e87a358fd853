/**
 * The benchmarks' floor (bench/probe-floor.ts --full) must send what the daemon's facts read sends,
 * or the ratios against it measure a different job: both read the same scripted QEMU, and the
 * commands each sent (name and arguments, in any order) are compared, for the guests whose replies
 * change what the second round asks (a plain q35 guest, one with a DIMM region and host-phys-bits=on,
 * one under KVM with a confidential-guest-support object).
 */
import test from 'ava';
import { QmpClient } from '../../qmp/client';
import { readGuestFacts } from '../../agent/facts/guest-facts';
import { probeFull } from '../../bench/probe-floor';
import { WireClient } from '../../bench/qmp-wire';
import { FIRST_CPU, startFakeQmp, type FakeCommand, type FakeQmpOptions } from '../helpers/fake-qmp';

async function commandsOf(opts: FakeQmpOptions, read: (socket: string) => Promise<void>): Promise<string[]> {
  const fake = await startFakeQmp(opts);
  const seen: string[] = [];
  fake.on('command', (cmd: FakeCommand) => {
    if (cmd.name !== 'qmp_capabilities') seen.push(JSON.stringify([cmd.name, cmd.arguments ?? null]));
  });
  try {
    await read(fake.socket);
  } finally {
    await fake.close();
  }
  return seen.sort();
}

const guests: Array<[string, FakeQmpOptions]> = [
  ['q35 TCG guest', {}],
  [
    'DIMM region, host-phys-bits=on',
    {
      props: {
        '/machine': { 'device-memory-region-size': 1073741824 },
        [FIRST_CPU]: { 'host-phys-bits': true },
        '/machine/device-memory[0]': { addr: 4294967296, size: 1073741824 },
      },
    },
  ],
  [
    'KVM guest with a confidential-guest-support object',
    {
      vm: { kvm: { enabled: true, present: true } },
      props: {
        '/machine': { 'confidential-guest-support': '/objects/sev0' },
        '/objects/sev0': { type: 'sev-guest', 'reduced-phys-bits': 1 },
      },
    },
  ],
];

for (const [title, opts] of guests) {
  test(`the floor sends the daemon's facts commands: ${title}`, async (t) => {
    const daemon = await commandsOf(opts, async (socket) => {
      const client = await QmpClient.connect(socket);
      await readGuestFacts(client);
      await client.close();
    });
    const floor = await commandsOf(opts, async (socket) => {
      const client = await WireClient.connect(socket);
      const r = await probeFull(client);
      // Its own count: the commands above and qmp_capabilities.
      t.is(r.commands, daemon.length + 1);
      t.is(typeof r.physBits, 'number');
      await client.close();
    });
    t.true(daemon.length > 20, `${daemon.length} commands`);
    t.deepEqual(floor, daemon);
  });
}
