/**
 * VmSupervisor on a fake QMP server with injected timers: the reconnect backoff, heartbeats, event
 * re-reads, kick() after a restart, poll mode's schedule, attach/detach of the guard, stop().
 * Timers the supervisor sets are fired by hand; only QMP command timeouts run on the real clock.
 */
import test from 'ava';
import { parseConfig, type Config } from '../../agent/core/config';
import type { Logger } from '../../agent/core/logger';
import type { VmStatus } from '../../agent/core/types';
import { VmSupervisor, type Attachment, type SupervisorOptions } from '../../agent/daemon/vm-supervisor';
import type { QmpClient } from '../../qmp/client';
import { FIRST_CPU, startFakeQmp, type FakeQmp } from '../helpers/fake-qmp';
import { hostFacts } from '../helpers/guard-facts';
import { ManualTimers } from '../helpers/manual-timers';
import { tempDir } from '../helpers/tmp';

const quiet: Logger = { error() {}, warn() {}, info() {}, debug() {}, child: () => quiet };

function config(over: Record<string, unknown> = {}): Config {
  return parseConfig({
    policy: { accelerators: ['kvm', 'tcg'] },
    qmp: { timeoutMs: 2000, heartbeatMs: 1000, heartbeatTimeoutMs: 150 },
    ...over,
  });
}

function supervisor(
  socket: string,
  timers: ManualTimers,
  over: Partial<SupervisorOptions> = {},
): { sup: VmSupervisor; statuses: VmStatus[] } {
  const cfg = config();
  const sup = new VmSupervisor({
    socket,
    mode: 'hold',
    config: () => cfg,
    host: () => hostFacts(40),
    peers: () => [],
    logger: quiet,
    timers,
    backoff: { baseMs: 100, maxMs: 400, jitter: 0 },
    ...over,
  });
  const statuses: VmStatus[] = [];
  sup.on('status', (s) => statuses.push(s));
  return { sup, statuses };
}

async function until(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function fake(t: { teardown(fn: () => unknown): void }, physBits = 46): Promise<FakeQmp> {
  const f = await startFakeQmp({ physBits, vm: { name: 'web1' } });
  t.teardown(() => f.close());
  return f;
}

test('hold: reads, judges, keeps the connection and schedules a heartbeat', async (t) => {
  const f = await fake(t);
  const timers = new ManualTimers();
  const { sup, statuses } = supervisor(f.socket, timers);
  t.teardown(() => sup.stop());
  t.deepEqual(sup.status().error, { code: 'PENDING', message: 'not read yet' });
  sup.start();
  await until('the verdict', () => !!sup.status().verdict);
  await until('the heartbeat', () => timers.delays().includes(1000));
  const s = sup.status();
  t.is(s.name, 'web1');
  t.is(s.mode, 'hold');
  t.is(s.guest?.physBits, 46);
  t.like(s.verdict, { relation: 'wider', severity: 'critical' });
  t.is(statuses.length, 1);
  t.is(f.clients, 1);
  t.not(sup.upstream(), null);
  t.deepEqual(timers.delays(), [1000]);
  // The heartbeat asks query-status and schedules the next one.
  const asked = f.waitForCommand('query-status');
  timers.fire();
  await asked;
  await until('the next heartbeat', () => timers.delays().length === 1);
  t.deepEqual(timers.delays(), [1000]);
  t.is(statuses.length, 1);
});

test('hold: an unreachable socket is retried with exponential backoff; a good read resets it', async (t) => {
  const dir = tempDir('physbits-sup-');
  const timers = new ManualTimers();
  const { sup, statuses } = supervisor(`${dir}/later.qmp`, timers);
  t.teardown(() => sup.stop());
  sup.start();
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    await until(`retry ${i}`, () => timers.pending.size === 1);
    seen.push(...timers.delays());
    timers.fire();
  }
  t.deepEqual(seen, [100, 200, 400, 400, 400]);
  t.is(statuses.at(-1)?.error?.code, 'QMP_CONNECT_FAILED');
  // The VM appears: the next attempt connects, and after a later hang-up the backoff starts over.
  const f = await startFakeQmp({ dir, socketName: 'later.qmp', physBits: 40 });
  t.teardown(() => f.close());
  await until('retry 6', () => timers.pending.size === 1);
  timers.fire();
  await until('the verdict', () => !!sup.status().verdict);
  await until('the heartbeat', () => timers.delays().includes(1000));
  f.hangup();
  await until('closed', () => sup.status().error?.code === 'QMP_CLOSED');
  t.deepEqual(timers.delays(), [100]);
  t.is(sup.status().guest, undefined);
  t.is(sup.facts(), null);
  timers.fire();
  await until('back', () => !!sup.status().verdict);
  t.like(sup.status().verdict, { relation: 'equal' });
});

test('hold: a heartbeat that times out turns the VM unknown, drops the connection and reconnects', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const { sup } = supervisor(f.socket, timers);
  t.teardown(() => sup.stop());
  sup.start();
  await until('the heartbeat', () => timers.delays().includes(1000));
  f.script['query-status'] = { stall: true };
  timers.fire();
  await until('unknown', () => sup.status().error?.code === 'QMP_TIMEOUT');
  t.is(sup.upstream(), null);
  await until('the reconnect timer', () => timers.delays().length === 1);
  t.deepEqual(timers.delays(), [100]);
  delete f.script['query-status'];
  await until('the stalled connection gone', () => f.clients === 0);
  timers.fire();
  await until('back', () => !!sup.status().verdict);
});

test('hold: events that change facts make it read again; others do not', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const { sup, statuses } = supervisor(f.socket, timers);
  t.teardown(() => sup.stop());
  const events: string[] = [];
  sup.on('qmp-event', (ev) => events.push(ev.event));
  sup.start();
  await until('the heartbeat', () => timers.delays().includes(1000));
  f.emitEvent('RTC_CHANGE', { offset: 1 });
  await until('the event', () => events.includes('RTC_CHANGE'));
  t.deepEqual(timers.delays(), [1000]);
  f.vm.props[FIRST_CPU]['phys-bits'] = 39;
  f.emitEvent('RESET', { guest: true, reason: 'guest-reset' });
  f.emitEvent('STOP');
  await until('the re-read timer', () => timers.delays().includes(50));
  t.deepEqual(timers.delays(), [50, 1000]);
  const before = statuses.length;
  timers.fire();
  await until('the re-read', () => statuses.length > before);
  t.is(sup.status().guest?.physBits, 39);
  t.like(sup.status().verdict, { relation: 'narrower' });
  t.deepEqual(events, ['RTC_CHANGE', 'RESET', 'STOP']);
});

test('kick(): a reconnect waiting out its backoff goes at once; a connected VM is left alone', async (t) => {
  const dir = tempDir('physbits-sup-');
  const timers = new ManualTimers();
  const { sup } = supervisor(`${dir}/vm.qmp`, timers, { backoff: { baseMs: 30000, maxMs: 30000, jitter: 0 } });
  t.teardown(() => sup.stop());
  sup.start();
  await until('the retry timer', () => timers.pending.size === 1);
  t.deepEqual(timers.delays(), [30000]);
  const f = await startFakeQmp({ dir, socketName: 'vm.qmp', physBits: 40 });
  t.teardown(() => f.close());
  sup.kick();
  t.deepEqual(timers.delays(), []);
  await until('connected', () => !!sup.status().verdict);
  await until('the heartbeat', () => timers.delays().includes(1000));
  sup.kick();
  t.deepEqual(timers.delays(), [1000]);
  t.is(f.connections, 1);
});

test('attach runs once per connection; its close() runs when the connection ends', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const log: string[] = [];
  const { sup } = supervisor(f.socket, timers, {
    attach: async (client: QmpClient): Promise<Attachment> => {
      log.push(`attach ${client.state}`);
      return { close: async () => void log.push('close') };
    },
  });
  t.teardown(() => sup.stop());
  sup.start();
  await until('attached', () => log.length === 1);
  f.hangup();
  await until('detached', () => log.length === 2);
  timers.fire();
  await until('attached again', () => log.length === 3);
  await sup.stop();
  t.deepEqual(log, ['attach running', 'close', 'attach running', 'close']);
  t.is(timers.pending.size, 0);
});

test('waitForFacts: resolves with the facts once read, or null after the time given', async (t) => {
  const dir = tempDir('physbits-sup-');
  const timers = new ManualTimers();
  const { sup } = supervisor(`${dir}/vm.qmp`, timers);
  t.teardown(() => sup.stop());
  sup.start();
  await until('the retry timer', () => timers.pending.size === 1);
  const nothing = sup.waitForFacts(3000);
  const late = sup.waitForFacts(60000);
  t.deepEqual(timers.delays(), [100, 3000, 60000]);
  timers.fireDelay(3000);
  t.is(await nothing, null);
  t.deepEqual(timers.delays(), [100, 60000]);
  const f = await startFakeQmp({ dir, socketName: 'vm.qmp', physBits: 40 });
  t.teardown(() => f.close());
  sup.kick();
  const g = await late;
  t.is(g?.physBits, 40);
  t.false(timers.delays().includes(60000));
  t.is((await sup.waitForFacts(0))?.physBits, 40);
});

test('poll: visits, lets go of the socket, and visits again after pollIntervalSeconds', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const cfg = config({ discovery: { pollIntervalSeconds: 7 } });
  const { sup, statuses } = supervisor(f.socket, timers, { mode: 'poll', config: () => cfg });
  t.teardown(() => sup.stop());
  sup.start();
  await until('the verdict', () => !!sup.status().verdict);
  await until('the next poll', () => timers.pending.size === 1);
  t.deepEqual(timers.delays(), [7000]);
  await until('the socket let go', () => f.clients === 0);
  t.is(sup.upstream(), null);
  t.is(sup.status().mode, 'poll');
  f.vm.props[FIRST_CPU]['phys-bits'] = 46;
  timers.fire();
  await until('the second visit', () => statuses.length === 2);
  t.like(sup.status().verdict, { relation: 'wider' });
  t.is(f.connections, 2);
  // A VM gone between visits: unknown, and still visited on schedule.
  await until('the next poll', () => timers.pending.size === 1);
  await f.close();
  timers.fire();
  await until('unknown', () => statuses.length === 3);
  t.is(sup.status().error?.code, 'QMP_CONNECT_FAILED');
  await until('the next poll', () => timers.pending.size === 1);
  t.deepEqual(timers.delays(), [7000]);
});

test('stop(): no timer is left and the connection is closed', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const { sup } = supervisor(f.socket, timers);
  sup.start();
  await until('the heartbeat', () => timers.delays().includes(1000));
  f.emitEvent('STOP');
  await until('the re-read timer', () => timers.delays().includes(50));
  const waiting = sup.waitForFacts(0);
  await sup.stop();
  t.is(timers.pending.size, 0);
  t.is(sup.upstream(), null);
  await until('the fake sees it go', () => f.clients === 0);
  t.is((await waiting)?.physBits, 40);
  sup.kick();
  await sup.refresh();
  t.is(timers.pending.size, 0);
});

test('statusText(): the JSON of status() at every step, made again only when the status changes', async (t) => {
  const f = await fake(t, 40);
  const timers = new ManualTimers();
  const { sup } = supervisor(f.socket, timers);
  t.teardown(() => sup.stop());
  t.is(sup.statusText(), JSON.stringify(sup.status()));
  sup.start();
  await until('the verdict', () => !!sup.status().verdict);
  const read = sup.statusText();
  t.is(read, JSON.stringify(sup.status()));
  t.is(sup.statusText(), read, 'the same text while nothing changed');
  sup.setGuardSocket('/run/physbits/guard/web1.qmp');
  t.is(sup.statusText(), JSON.stringify(sup.status()));
  t.regex(sup.statusText(), /"guardSocket":"\/run\/physbits\/guard\/web1.qmp"/);
  await until('the heartbeat', () => timers.delays().includes(1000));
  f.script['query-status'] = { stall: true };
  timers.fire();
  await until('unknown', () => sup.status().error?.code === 'QMP_TIMEOUT');
  t.is(sup.statusText(), JSON.stringify(sup.status()));
  t.regex(sup.statusText(), /QMP_TIMEOUT/);
});
