#!/usr/bin/env node
/**
 * Many scripted QMP servers in one process (test/helpers/fake-qmp.ts, each answering like a paused
 * QEMU 7.2 q35 TCG guest), so the daemon can be measured over a thousand VMs without a thousand
 * QEMUs. Its CPU is spent here, not in the daemon being measured.
 *
 *   node build/bench/fake-fleet.js --dir DIR --count N [--phys-bits B]
 *
 * Prints one JSON line {"sockets": N, "ms": ...} once every socket listens; on each SIGUSR2 one line
 * {"queryStatus": n}, the query-status commands received over all sockets so far (the heartbeats
 * actually sent, whoever holds the sockets); SIGTERM closes them all.
 */
import { parseArgs } from 'node:util';
import { startFakeQmp, type FakeCommand, type FakeQmp } from '../test/helpers/fake-qmp';
import { nowMs } from './stats';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { dir: { type: 'string' }, count: { type: 'string' }, 'phys-bits': { type: 'string' } },
  });
  const dir = values.dir;
  const count = Number(values.count ?? 1000);
  const physBits = Number(values['phys-bits'] ?? 40);
  if (!dir || !(count > 0)) throw new Error('usage: fake-fleet --dir DIR --count N');
  const started = nowMs();
  const fakes: FakeQmp[] = [];
  const width = String(count).length;
  for (let i = 0; i < count; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 100); j++) {
      batch.push(startFakeQmp({ dir, socketName: `vm${String(j).padStart(width, '0')}.qmp`, physBits }));
    }
    fakes.push(...(await Promise.all(batch)));
  }
  let queryStatus = 0;
  for (const f of fakes) {
    f.on('command', (cmd: FakeCommand) => {
      if (cmd.name === 'query-status') queryStatus++;
    });
  }
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ queryStatus }) + '\n'));
  process.stdout.write(JSON.stringify({ sockets: fakes.length, ms: nowMs() - started }) + '\n');
  process.once('SIGTERM', () => {
    void Promise.all(fakes.map((f) => f.close())).finally(() => process.exit(0));
  });
}

main().catch((err) => {
  process.stderr.write(`fake-fleet: ${(err as Error).message}\n`);
  process.exit(1);
});
