import test from 'ava';
import { parseConfig } from '../../agent/core/config';
import { silentLogger } from '../../agent/core/logger';
import { realTimers } from '../../agent/core/timers';
import type { GuestFacts } from '../../agent/core/types';
import { HeldConnection } from '../../agent/daemon/held-connection';
import { startFakeQmp } from '../helpers/fake-qmp';

/** Resolves once `predicate` holds, polling every 10 ms for at most 5 s. */
async function until(predicate: () => boolean): Promise<boolean> {
  const deadline = Date.now() + 5000;
  while (!predicate() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  return predicate();
}

async function held(t: { teardown(fn: () => Promise<void> | void): void }, attach = false) {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  const reads: GuestFacts[] = [];
  const failures: string[] = [];
  const events: string[] = [];
  const attached: string[] = [];
  const connection = new HeldConnection({
    socket: fake.socket,
    name: () => 'web1',
    config: () => parseConfig({ qmp: { heartbeatMs: 60_000 } }),
    logger: silentLogger,
    timers: realTimers,
    attach: attach
      ? async () => {
          attached.push('attached');
          return { close: async () => void attached.push('closed') };
        }
      : undefined,
    report: {
      read: (g) => reads.push(g),
      failed: (e) => failures.push((e as Error).message),
      event: (ev) => events.push(ev.event),
    },
  });
  t.teardown(() => connection.stop());
  return { fake, connection, reads, failures, events, attached };
}

test('holds the socket: reads the facts once connected, and again after an event that may change them', async (t) => {
  const { fake, connection, reads, events } = await held(t);
  connection.start();
  t.true(await until(() => reads.length === 1));
  t.is(connection.upstream()?.state, 'running');
  fake.emitEvent('STOP');
  t.true(await until(() => reads.length === 2));
  t.deepEqual(events, ['STOP']);
  fake.emitEvent('BLOCK_JOB_READY');
  t.true(await until(() => events.length === 2));
  await new Promise((r) => setTimeout(r, 200));
  t.is(reads.length, 2);
});

test('the attachment runs while connected and is closed when the connection stops', async (t) => {
  const { connection, reads, attached } = await held(t, true);
  connection.start();
  t.true(await until(() => reads.length === 1 && attached.length === 1));
  await connection.stop();
  t.deepEqual(attached, ['attached', 'closed']);
  t.is(connection.upstream(), null);
});

test('QEMU hanging up is reported as a failure', async (t) => {
  const { fake, connection, reads, failures } = await held(t);
  connection.start();
  t.true(await until(() => reads.length === 1));
  await fake.close();
  t.true(await until(() => failures.length >= 1));
});
