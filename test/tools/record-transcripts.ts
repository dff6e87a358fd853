/**
 * Re-records test/fixtures/qmp-transcripts/: for each QEMU the tests run (this machine's and the
 * Debian 13 tree's, test/helpers/qemu.ts), starts the guests below, sends exactly what physbits sends
 * (readGuestFacts, the guard's resolveMemoryDevice) and writes every command with QEMU's answer,
 * plus what query-qmp-schema and qom-list say about the commands and objects physbits uses.
 *
 *   npm run record-transcripts
 *
 * The unit tests in test/facts/qmp-transcripts.test.ts replay them; after re-recording, a fact that a new
 * QEMU answers differently shows there as a failing assertion.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { QmpClient } from '../../qmp/client';
import { DEVICE_MEMORY_REGION, findHostBridge, firstCpuPath, readGuestFacts } from '../../agent/facts/guest-facts';
import { resolveMemoryDevice } from '../../agent/facts/memory-placement';
import { firmwareGuestDevices, waitForBar64 } from '../helpers/firmware-guest';
import { QEMUS, startGuest, type GuestOptions, type Qemu } from '../helpers/qemu';
import { recording, TRANSCRIPT_DIR, type Exchange, type Transcript } from '../helpers/transcripts';

/** Commands physbits sends or looks into as the guard, beside those readGuestFacts sends. */
const GUARDED = ['qmp_capabilities', 'device_add', 'object-add', 'migrate', 'migrate_cancel', 'human-monitor-command'];

interface Scenario {
  name: string;
  guest: GuestOptions;
  /** Commands sent before recording (not part of what physbits sends). */
  setup: [string, Record<string, unknown>][];
  firmware?: boolean;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'paused-dimm',
    guest: { name: 'rec', cpu: 'phys-bits=46', memory: '64M,slots=4,maxmem=1G' },
    setup: [
      ['object-add', { 'qom-type': 'memory-backend-ram', id: 'm1', size: 128 * 2 ** 20 }],
      ['device_add', { driver: 'pc-dimm', id: 'd1', memdev: 'm1' }],
      ['object-add', { 'qom-type': 'memory-backend-ram', id: 'm2', size: 64 * 2 ** 20 }],
    ],
  },
  {
    name: 'seabios',
    guest: { name: 'rec', cpu: 'phys-bits=40', memory: '3G', firmware: 'seabios', extraArgs: firmwareGuestDevices() },
    setup: [],
    firmware: true,
  },
  {
    name: 'ovmf',
    guest: { name: 'rec', cpu: 'phys-bits=40', memory: '3G', firmware: 'ovmf', extraArgs: firmwareGuestDevices() },
    setup: [],
    firmware: true,
  },
];

interface SchemaEntry {
  name: string;
  'meta-type': string;
  'arg-type'?: string;
  members?: { name: string }[];
  variants?: { case: string; type: string }[];
}

/** Argument names of each command in `names` (null: not in the schema). */
function commandArgs(schema: SchemaEntry[], names: string[]): Record<string, string[] | null> {
  const byName = new Map(schema.map((e) => [e.name, e]));
  const out: Record<string, string[] | null> = {};
  for (const n of [...new Set(names)].sort()) {
    const cmd = byName.get(n);
    if (!cmd || cmd['meta-type'] !== 'command') {
      out[n] = null;
      continue;
    }
    const arg = cmd['arg-type'] ? byName.get(cmd['arg-type']) : undefined;
    out[n] = (arg?.members ?? []).map((m) => m.name).sort();
  }
  return out;
}

async function record(qemu: Qemu, scenario: Scenario): Promise<Transcript> {
  const guest = await startGuest({ ...scenario.guest, qemu });
  try {
    if (scenario.firmware) await waitForBar64(guest.socket, 120000);
    const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
    try {
      for (const [command, args] of scenario.setup) await client.execute(command, args);
      const exchanges: Exchange[] = [];
      const q = recording(client, exchanges);
      await readGuestFacts(q);
      if (scenario.name === 'paused-dimm') {
        await resolveMemoryDevice(q, { driver: 'pc-dimm', id: 'd2', memdev: 'm2' });
      }
      const version = await client.execute<{ qemu: { major: number; minor: number; micro: number }; package: string }>(
        'query-version',
      );
      const schema = await client.execute<SchemaEntry[]>('query-qmp-schema');
      const list = await client.execute('qom-list', { path: '/machine' });
      const cpu = firstCpuPath(await client.execute('query-cpus-fast'));
      const paths = ['/machine', cpu, findHostBridge(list) ?? '/machine/q35', DEVICE_MEMORY_REGION];
      if (scenario.name === 'paused-dimm') paths.push('/objects/m2');
      const qom: Record<string, string[] | null> = {};
      for (const path of paths) {
        qom[path] = await client
          .execute<{ name: string }[]>('qom-list', { path })
          .then((props) => props.map((p) => p.name).sort())
          .catch(() => null);
      }
      const v = version.qemu;
      return {
        qemu: `${v.major}.${v.minor}.${v.micro}`,
        package: version.package.trim(),
        scenario: scenario.name,
        args: guest.args.map((a) => a.split(qemu.inner(guest.dir)).join('<dir>')),
        exchanges,
        commands: commandArgs(schema, [...exchanges.map((e) => e.execute), ...GUARDED]),
        qom,
      };
    } finally {
      await client.close();
    }
  } finally {
    await guest.kill();
  }
}

async function main(): Promise<void> {
  for (const qemu of QEMUS) {
    for (const scenario of SCENARIOS) {
      const transcript = await record(qemu, scenario);
      const [major, minor] = transcript.qemu.split('.');
      const file = join(TRANSCRIPT_DIR, `qemu-${major}.${minor}-${scenario.name}.json`);
      writeFileSync(file, `${JSON.stringify(transcript, null, 2)}\n`);
      console.log(`${file}: ${transcript.exchanges.length} commands`);
    }
  }
}

main().catch((err: unknown) => {
  console.error(`record-transcripts: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
