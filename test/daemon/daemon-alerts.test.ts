import test from 'ava';
import { QmpClient } from '../../qmp/client';
import { parseConfig } from '../../agent/core/config';
import { silentLogger } from '../../agent/core/logger';
import type { Timers } from '../../agent/core/timers';
import type { PeerFacts, Reason } from '../../agent/core/types';
import type { PublishedEvent } from '../../agent/api/api-types';
import { DaemonAlerts, type MigratingVm } from '../../agent/daemon/daemon-alerts';
import { guestFacts, hostFacts } from '../helpers/facts';
import { startFakeQmp } from '../helpers/fake-qmp';

const noMetrics = {
  setAlertsPending() {},
  setSpoolEntries() {},
  setAlertsFiring() {},
  alertDelivery() {},
  spoolDropped() {},
};

function peer(name: string, physBits: number | null): PeerFacts {
  return { name, physBits, reachable: true };
}

/** DaemonAlerts on a clock the test moves, with the events it publishes and a VM whose reasons it keeps. */
function setup(opts: { peers?: PeerFacts[]; cancelUnsafe?: boolean; upstream?: QmpClient | null } = {}) {
  const clock = { now: 1_000_000 };
  const timers: Timers = { now: () => clock.now, setTimeout: () => null, clearTimeout() {} };
  const config = parseConfig({ guard: { cancelUnsafe: opts.cancelUnsafe ?? false } });
  const events: PublishedEvent[] = [];
  const alerts = new DaemonAlerts({
    config: () => config,
    host: () => hostFacts(46),
    peers: () => opts.peers ?? [peer('hv2', 46)],
    logger: silentLogger,
    timers,
    metrics: noMetrics,
    events: { publish: (event) => events.push(event) },
  });
  let extra: readonly Reason[] = [];
  const vm: MigratingVm = {
    name: 'web1',
    socket: '/run/qemu/web1.qmp',
    facts: () => guestFacts({ physBits: 46 }),
    extraReasons: () => extra,
    setExtraReasons: (reasons) => {
      extra = reasons;
    },
    upstream: () => opts.upstream ?? null,
  };
  return { alerts, vm, events, clock, codes: () => extra.map((r) => `${r.code}:${r.severity}`) };
}

test('an unseen migration is kept on the VM once, published once, and cleared when it ends', (t) => {
  const { alerts, vm, events, codes } = setup();
  alerts.onMigrationEvent(vm, { status: 'setup' });
  alerts.onMigrationEvent(vm, { status: 'active' });
  t.deepEqual(codes(), ['MIGRATION_UNVERIFIED:warning']);
  t.deepEqual(
    events.map((e) => (e.type === 'migration' ? [e.vm, e.status, e.severity, e.verified] : e.type)),
    [['web1', 'setup', 'warning', false]],
  );
  alerts.onMigrationEvent(vm, { status: 'device' });
  t.deepEqual(codes(), ['MIGRATION_UNVERIFIED:warning']);
  alerts.onMigrationEvent(vm, { status: 'completed' });
  t.deepEqual(codes(), []);
});

test('a migration the guard let through is not flagged for 60 s; after that it is', (t) => {
  const { alerts, vm, events, clock, codes } = setup();
  alerts.migrationApproved(vm.socket);
  clock.now += 59_999;
  alerts.onMigrationEvent(vm, { status: 'setup' });
  t.deepEqual(codes(), []);
  t.is(events.length, 0);
  clock.now += 1;
  alerts.onMigrationEvent(vm, { status: 'setup' });
  t.deepEqual(codes(), ['MIGRATION_UNVERIFIED:warning']);
});

test('a MIGRATION event without a status, or before any start, changes nothing', (t) => {
  const { alerts, vm, events, codes } = setup();
  alerts.onMigrationEvent(vm, undefined);
  alerts.onMigrationEvent(vm, { status: 'cancelled' });
  t.deepEqual(codes(), []);
  t.is(events.length, 0);
});

test('guard.cancelUnsafe: a narrower peer makes it critical and migrate_cancel goes to QEMU', async (t) => {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  fake.script['migrate_cancel'] = { return: {} };
  const client = await QmpClient.connect(fake.socket);
  t.teardown(() => client.close());
  const { alerts, vm, events, codes } = setup({ peers: [peer('hv2', 39)], cancelUnsafe: true, upstream: client });
  alerts.onMigrationEvent(vm, { status: 'active' });
  t.deepEqual(codes(), ['MIGRATION_UNVERIFIED:critical']);
  const published = events[0];
  t.is(published.type === 'migration' ? published.message : '', vm.extraReasons()[0].message);
  t.regex(vm.extraReasons()[0].message, /peers hv2 \(39 bits\) .*; physbits cancelled it$/);
  const deadline = Date.now() + 5000;
  while (!fake.commands.some((c) => c.name === 'migrate_cancel') && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 10));
  t.deepEqual(
    fake.commands.filter((c) => c.name === 'migrate_cancel').map((c) => c.name),
    ['migrate_cancel'],
  );
});

test('without guard.cancelUnsafe a narrower peer is critical and nothing is sent', async (t) => {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  const client = await QmpClient.connect(fake.socket);
  t.teardown(() => client.close());
  const { alerts, vm, codes } = setup({ peers: [peer('hv2', 39)], upstream: client });
  alerts.onMigrationEvent(vm, { status: 'active' });
  t.deepEqual(codes(), ['MIGRATION_UNVERIFIED:critical']);
  await client.execute('query-status');
  t.false(fake.commands.some((c) => c.name === 'migrate_cancel'));
});
