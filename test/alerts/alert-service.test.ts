import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SPOOL_FILE } from '../../agent/alerts/spool';
import { AlertService, type AlertEvent, type AlertMetrics } from '../../agent/alerts/alert-service';
import type { Timers } from '../../agent/core/timers';
import { verifySignature } from '../helpers/webhook-signature';
import { parseConfig, type Config } from '../../agent/core/config';
import type { Reason } from '../../agent/core/types';
import { freePort, startReceiver, waitFor, type Receiver } from '../helpers/alertmanager';
import { tempDir } from '../helpers/tmp';

const T0 = Date.parse('2030-01-02T03:04:05.000Z');
const iso = (ms: number) => new Date(ms).toISOString();
const critical: Reason = { code: 'GUEST_WIDER_THAN_HOST', severity: 'critical', message: 'guest 52 bits > host 46' };
const fine: Reason = { code: 'GUEST_EQUALS_HOST', severity: 'ok', message: 'equal' };

/** Manual time: timers run only when the test advances the clock. */
class FakeTime implements Timers {
  t = T0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; ms: number; fn: () => void }>();
  now = () => this.t;
  setTimeout(fn: () => void, ms: number): number {
    this.pending.set(++this.seq, { at: this.t + ms, ms, fn });
    return this.seq;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  delays(): number[] {
    return [...this.pending.values()].map((p) => p.ms).sort((a, b) => a - b);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.pending.entries()].filter(([, p]) => p.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.pending.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = end;
  }
}

class CountingMetrics implements AlertMetrics {
  results: string[] = [];
  pending = -1;
  entries = -1;
  firing: Record<string, number> = {};
  drops: string[] = [];
  setAlertsPending(n: number) {
    this.pending = n;
  }
  setSpoolEntries(n: number) {
    this.entries = n;
  }
  setAlertsFiring(c: Record<string, number>) {
    this.firing = { ...c };
  }
  alertDelivery(sink: string, result: string) {
    this.results.push(`${sink.split(':')[0]} ${result}`);
  }
  spoolDropped(reason: string) {
    this.drops.push(reason);
  }
}

function alertsConfig(over: Record<string, unknown>): Config['alerts'] {
  return parseConfig({ alerts: over }).alerts;
}

function service(cfg: Config['alerts'], time: FakeTime, metrics = new CountingMetrics()) {
  const svc = new AlertService({ config: cfg, host: 'hv1', timers: time, metrics, random: () => 1 });
  const events: AlertEvent[] = [];
  svc.on('alert', (e) => events.push(e));
  return { svc, events, metrics };
}

/** Deliveries are recorded after the receiver's answer, a little after it saw the request. */
const drained = (svc: AlertService) => waitFor('all delivered', () => (svc.pending() === 0 ? true : undefined));

type AlertJson = { status?: string; labels: Record<string, string>; startsAt?: string; endsAt?: string | null };
const amBodies = (rx: Receiver) => rx.requests.map((r) => JSON.parse(r.body) as AlertJson[]);
const hookAlerts = (rx: Receiver) => rx.requests.flatMap((r) => (JSON.parse(r.body) as { alerts: AlertJson[] }).alerts);

test('fires, re-sends to Alertmanager only, resolves; events and metrics follow', async (t) => {
  const am = await startReceiver();
  const hook = await startReceiver();
  t.teardown(() => Promise.all([am.close(), hook.close()]));
  const time = new FakeTime();
  const cfg = alertsConfig({
    alertmanagers: [am.url],
    webhooks: [{ url: hook.url, secret: 'k' }],
    spoolDir: tempDir(),
    resendSeconds: 60,
  });
  const { svc, events, metrics } = service(cfg, time);
  t.teardown(() => svc.stop());
  await svc.start();

  svc.setVmReasons('web1', [critical, fine]);
  await waitFor('first deliveries', () => (am.requests.length && hook.requests.length ? true : undefined));
  const labels = {
    alertname: 'PhysbitsGuestWiderThanHost',
    vm: 'web1',
    host: 'hv1',
    severity: 'critical',
    reason: 'GUEST_WIDER_THAN_HOST',
  };
  t.deepEqual(amBodies(am)[0], [
    {
      labels,
      annotations: { summary: 'web1 on hv1: guest wider than host', description: critical.message },
      startsAt: iso(T0),
      endsAt: iso(T0 + 240_000),
    },
  ]);
  t.true(
    verifySignature(
      hook.requests[0].body,
      'k',
      hook.requests[0].headers['x-physbits-timestamp'] as string,
      hook.requests[0].headers['x-physbits-signature'] as string,
    ),
  );
  t.deepEqual(
    hookAlerts(hook).map((a) => [a.status, a.labels.reason, a.endsAt]),
    [['firing', 'GUEST_WIDER_THAN_HOST', null]],
  );
  t.deepEqual(
    events.map((e) => [e.change, e.status, e.labels.alertname]),
    [['fired', 'firing', 'PhysbitsGuestWiderThanHost']],
  );
  await drained(svc);

  svc.setVmReasons('web1', [critical]);
  t.is(events.length, 1, 'a reason that still holds changes nothing');

  time.advance(60_000);
  await waitFor('re-send', () => (am.requests.length === 2 ? true : undefined));
  // The receiver has seen the re-send (which is not spooled); its answer must be in before fake time moves
  // past the send's timeout, or the re-send times out and is sent again.
  await waitFor('re-send answered', () => (metrics.results.length === 3 ? true : undefined));
  t.deepEqual(
    amBodies(am)[1].map((a) => [a.startsAt, a.endsAt]),
    [[iso(T0), iso(T0 + 300_000)]],
  );
  t.is(hook.requests.length, 1, 'webhooks get state changes, not re-sends');

  time.advance(5_000);
  svc.setVmReasons('web1', [fine]);
  await waitFor('resolution', () => (am.requests.length === 3 && hook.requests.length === 2 ? true : undefined));
  await drained(svc);
  t.deepEqual(
    amBodies(am)[2].map((a) => [a.labels.reason, a.startsAt, a.endsAt]),
    [['GUEST_WIDER_THAN_HOST', iso(T0), iso(T0 + 65_000)]],
  );
  t.deepEqual(hookAlerts(hook)[1].status, 'resolved');
  t.deepEqual(
    events.map((e) => e.change),
    ['fired', 'resolved'],
  );
  await svc.settled();
  t.deepEqual(svc.firing(), []);
  t.deepEqual([metrics.pending, metrics.entries], [0, 0]);
  t.deepEqual(metrics.firing, { info: 0, warning: 0, critical: 0 });
  t.true(metrics.results.every((r) => r.endsWith('success')));
});

test('a refusal queued through an outage and a restart arrives with endsAt from the refusal time', async (t) => {
  const amPort = await freePort();
  const hookPort = await freePort();
  const spoolDir = tempDir();
  const time = new FakeTime();
  const cfg = alertsConfig({
    alertmanagers: [`http://127.0.0.1:${amPort}`],
    webhooks: [{ url: `http://127.0.0.1:${hookPort}/` }],
    spoolDir,
    refusalHoldMinutes: 15,
  });
  const first = service(cfg, time);
  await first.svc.start();
  first.svc.refusal('web1', 'REFUSED_MEMORY_ABOVE_HOST_LIMIT', 'DIMM above the host limit', 'device_add');
  await waitFor('failed attempts', () => (first.metrics.results.length === 2 ? true : undefined));
  t.deepEqual(first.metrics.results.sort(), ['alertmanager error', 'webhook error']);
  t.is(first.svc.pending(), 1);
  t.true(time.delays().includes(1000), `retry scheduled after 1 s: ${time.delays()}`);
  await first.svc.stop();

  time.advance(10 * 60_000);
  const am = await startReceiver(amPort);
  const hook = await startReceiver(hookPort);
  t.teardown(() => Promise.all([am.close(), hook.close()]));
  const second = service(cfg, time);
  t.teardown(() => second.svc.stop());
  await second.svc.start();
  await waitFor('delivery after recovery', () =>
    hook.requests.length === 1 && am.requests.length >= 1 ? true : undefined,
  );
  await drained(second.svc);
  await second.svc.settled();
  const refusalLabels = {
    alertname: 'PhysbitsRefusedMemoryAboveHostLimit',
    vm: 'web1',
    host: 'hv1',
    severity: 'warning',
    reason: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
  };
  for (const body of amBodies(am))
    t.deepEqual(
      body.map((a) => [a.labels, a.startsAt, a.endsAt]),
      [[refusalLabels, iso(T0), iso(T0 + 900_000)]],
    );
  t.deepEqual(
    hookAlerts(hook).map((a) => [a.status, a.startsAt, a.endsAt]),
    [['firing', iso(T0), iso(T0 + 900_000)]],
  );
  t.is(second.svc.pending(), 0);
  t.deepEqual(second.events, [], 'nothing is new after a restart');
  t.deepEqual(
    second.svc.firing().map((r) => r.labels.reason),
    ['REFUSED_MEMORY_ABOVE_HOST_LIMIT'],
  );

  time.advance(6 * 60_000);
  await second.svc.settled();
  t.deepEqual(second.svc.firing(), [], 'the refusal ran out its hold');
});

test('after a restart a condition that still holds is not new: startsAt kept, webhook not told twice', async (t) => {
  const am = await startReceiver();
  const hook = await startReceiver();
  t.teardown(() => Promise.all([am.close(), hook.close()]));
  const spoolDir = tempDir();
  const time = new FakeTime();
  const cfg = alertsConfig({ alertmanagers: [am.url], webhooks: [{ url: hook.url }], spoolDir });
  const a = service(cfg, time);
  await a.svc.start();
  a.svc.setVmReasons('web1', [critical]);
  await waitFor('delivered', () => (hook.requests.length === 1 && am.requests.length === 1 ? true : undefined));
  await drained(a.svc);
  await a.svc.stop();

  time.advance(30_000);
  const b = service(cfg, time);
  t.teardown(() => b.svc.stop());
  await b.svc.start();
  await waitFor('re-send at start', () => (am.requests.length === 2 ? true : undefined));
  t.deepEqual(
    amBodies(am)[1].map((x) => x.startsAt),
    [iso(T0)],
  );
  b.svc.setVmReasons('web1', [critical]);
  await b.svc.settled();
  t.deepEqual(b.events, []);
  t.is(hook.requests.length, 1);
  b.svc.retainVms(['web2']);
  await waitFor('resolved by retainVms', () => (hook.requests.length === 2 ? true : undefined));
  t.deepEqual(
    b.events.map((e) => [e.change, e.labels.vm, e.endsAt]),
    [['resolved', 'web1', iso(T0 + 30_000)]],
  );
});

test('after a restart, alerts of VMs the daemon does not read again resolve after the grace period', async (t) => {
  const spoolDir = tempDir();
  const time = new FakeTime();
  const cfg = alertsConfig({ spoolDir, resendSeconds: 60 });
  const a = service(cfg, time);
  await a.svc.start();
  a.svc.setVmReasons('gone', [critical]);
  a.svc.setVmReasons('kept', [critical]);
  await a.svc.stop();

  const b = service(cfg, time);
  t.teardown(() => b.svc.stop());
  await b.svc.start();
  b.svc.setVmReasons('kept', [critical]);
  time.advance(240_000);
  t.deepEqual(b.events, []);
  t.deepEqual(
    b.svc.firing().map((r) => r.labels.vm),
    ['gone', 'kept'],
  );
  time.advance(60_000);
  t.deepEqual(
    b.events.map((e) => [e.change, e.labels.vm, e.endsAt]),
    [['resolved', 'gone', iso(T0 + 300_000)]],
  );
  t.deepEqual(
    b.svc.firing().map((r) => r.labels.vm),
    ['kept'],
  );
});

test('each Alertmanager of an HA pair has its own retry state', async (t) => {
  const up = await startReceiver();
  const flaky = await startReceiver();
  t.teardown(() => Promise.all([up.close(), flaky.close()]));
  flaky.status = 503;
  const time = new FakeTime();
  const cfg = alertsConfig({ alertmanagers: [up.url, flaky.url], spoolDir: tempDir(), retryMaxSeconds: 3 });
  const { svc, metrics } = service(cfg, time);
  t.teardown(() => svc.stop());
  await svc.start();
  svc.setVmReasons('web1', [critical]);
  await waitFor('first attempts', () => (metrics.results.length === 2 ? true : undefined));
  t.is(up.requests.length, 1);
  t.is(flaky.requests.length, 1);
  t.is(svc.pending(), 1, 'still owed to the failing member');

  const seen: number[] = [];
  for (let i = 1; i <= 3; i++) {
    const delay = Math.max(...time.delays().filter((d) => d <= 3000));
    seen.push(delay);
    time.advance(delay);
    await waitFor(`retry ${i}`, () => (flaky.requests.length === i + 1 ? true : undefined));
    await waitFor(`retry ${i} failed`, () => (metrics.results.length === i + 2 ? true : undefined));
  }
  t.deepEqual(seen, [1000, 2000, 3000], 'exponential, capped at retryMaxSeconds');
  flaky.status = 200;
  time.advance(3000);
  await waitFor('recovered', () => (svc.pending() === 0 ? true : undefined));
  t.is(up.requests.length, 1, 'the healthy member was not bothered by the retries');
  t.deepEqual(metrics.results.filter((r) => r.endsWith('error')).length, 4);
});

test('a batch the receiver refuses is given up, not retried forever', async (t) => {
  const am = await startReceiver();
  t.teardown(() => am.close());
  am.status = 400;
  const time = new FakeTime();
  const { svc, metrics } = service(alertsConfig({ alertmanagers: [am.url], spoolDir: tempDir() }), time);
  t.teardown(() => svc.stop());
  await svc.start();
  svc.setVmReasons('web1', [critical]);
  await waitFor('rejected', () => (metrics.results.length === 1 ? true : undefined));
  await svc.settled();
  t.deepEqual(metrics.results, ['alertmanager rejected']);
  t.is(svc.pending(), 0);
  t.deepEqual(
    time.delays().filter((d) => d < 60_000),
    [],
    'no retry timer',
  );
});

test('the spool bound holds while Alertmanager is down; drops are counted', async (t) => {
  const closed = await freePort();
  const spoolDir = tempDir();
  const time = new FakeTime();
  const cfg = alertsConfig({ alertmanagers: [`http://127.0.0.1:${closed}`], spoolDir, spoolMaxEntries: 5 });
  const { svc, metrics } = service(cfg, time);
  t.teardown(() => svc.stop());
  await svc.start();
  for (let i = 0; i < 20; i++) svc.setVmReasons(`vm${i}`, [critical]);
  await svc.settled();
  t.deepEqual([metrics.entries, metrics.pending], [5, 5]);
  t.deepEqual(metrics.drops, Array(15).fill('firing'));
  await svc.stop();
  const puts = readFileSync(join(spoolDir, SPOOL_FILE), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"op":"put"'));
  t.true(puts.length <= 20);
  const again = service(cfg, time);
  t.teardown(() => again.svc.stop());
  await again.svc.start();
  t.deepEqual(
    again.svc.firing().map((r) => r.labels.vm),
    ['vm15', 'vm16', 'vm17', 'vm18', 'vm19'],
  );
  t.is(again.svc.pending(), 5);
});

test('the service refuses work before start and after stop', async (t) => {
  const time = new FakeTime();
  const { svc } = service(alertsConfig({ spoolDir: tempDir() }), time);
  t.throws(() => svc.setVmReasons('web1', [critical]), { message: /when the alert service is new/ });
  await svc.start();
  await svc.stop();
  const err = t.throws(() => svc.refusal('web1', 'X', 'm', 'c'));
  t.is((err as { code?: string }).code, 'ALERT_SERVICE_STATE');
});

test('webhooks that differ only in query string or credentials are separate sinks: each gets every alert', async (t) => {
  const hook = await startReceiver();
  t.teardown(() => hook.close());
  const base = `http://127.0.0.1:${hook.port}/hook`;
  const withUser = (user: string) => `http://${user}:pw@127.0.0.1:${hook.port}/hook`;
  const urls = [`${base}?team=a`, `${base}?team=b`, withUser('a'), withUser('b'), base];
  const time = new FakeTime();
  const { svc, metrics } = service(alertsConfig({ webhooks: urls.map((url) => ({ url })), spoolDir: tempDir() }), time);
  t.teardown(() => svc.stop());
  await svc.start();
  t.deepEqual(
    svc.sinkNames.map((n) => n.replace(/#[0-9a-f]{12}$/, '#<hash>')),
    [
      `webhook:${base}#<hash>`,
      `webhook:${base}#<hash>`,
      `webhook:${base}#<hash>`,
      `webhook:${base}#<hash>`,
      `webhook:${base}`,
    ],
  );
  t.is(new Set(svc.sinkNames).size, 5, 'five sinks, five names in logs and metrics');
  t.false(
    svc.sinkNames.some((n) => /team|pw|a:|b:/.test(n)),
    'no query or credential in a name',
  );
  svc.setVmReasons('web1', [critical]);
  await drained(svc);
  const seen = hook.requests.map((r) => `${r.path} ${r.headers.authorization ?? ''}`).sort();
  t.deepEqual(seen, [
    '/hook ',
    `/hook Basic ${Buffer.from('a:pw').toString('base64')}`,
    `/hook Basic ${Buffer.from('b:pw').toString('base64')}`,
    '/hook?team=a ',
    '/hook?team=b ',
  ]);
  t.is(metrics.results.filter((r) => r === 'webhook success').length, 5);
});
