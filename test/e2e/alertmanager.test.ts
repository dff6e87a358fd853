/**
 * Against a real Alertmanager (prometheus-alertmanager): what physbits sends is what Alertmanager
 * shows, a resolution clears it, and an alert queued through an Alertmanager outage and a physbits
 * restart arrives once, with its original startsAt.
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AlertService, type AlertEvent } from '../../agent/alerts/alert-service';
import { SPOOL_FILE } from '../../agent/alerts/spool';
import { verifySignature } from '../helpers/webhook-signature';
import { parseConfig, type Config } from '../../agent/core/config';
import { Metrics } from '../../agent/api/metrics';
import type { Reason } from '../../agent/core/types';
import {
  ALERTMANAGER,
  freePort,
  requireTool,
  startAlertmanager,
  startReceiver,
  waitFor,
  type Receiver,
} from '../helpers/alertmanager';
import { tempDir } from '../helpers/tmp';

const critical: Reason = {
  code: 'GUEST_WIDER_THAN_HOST',
  severity: 'critical',
  message: 'guest 52 bits > host 46 bits',
};

function alertsConfig(over: Record<string, unknown>): Config['alerts'] {
  return parseConfig({ alerts: { resendSeconds: 2, retryMaxSeconds: 1, timeoutMs: 2000, ...over } }).alerts;
}

/** Alertmanager webhook notifications: [status, alert statuses] per request. */
function notifications(rx: Receiver, vm: string): Array<[string, string[]]> {
  return rx.requests.map((r) => {
    const b = JSON.parse(r.body) as {
      status: string;
      alerts: Array<{ status: string; labels: Record<string, string> }>;
    };
    return [b.status, b.alerts.filter((a) => a.labels.vm === vm).map((a) => a.status)];
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a critical reason shows in Alertmanager with exact labels; clearing it resolves it', async (t) => {
  if (!requireTool(t, ALERTMANAGER, 'prometheus-alertmanager')) return t.pass();
  const notified = await startReceiver();
  t.teardown(() => notified.close());
  const am = await startAlertmanager({ webhookUrl: notified.url });
  t.teardown(() => am.stop());
  const svc = new AlertService({ config: alertsConfig({ alertmanagers: [am.url], spoolDir: tempDir() }), host: 'hv1' });
  t.teardown(() => svc.stop());
  await svc.start();

  svc.setVmReasons('web1', [critical]);
  const shown = await waitFor('alert in Alertmanager', async () => {
    const list = await am.alerts();
    return list.length ? list : undefined;
  });
  t.is(shown.length, 1);
  t.deepEqual(shown[0].labels, {
    alertname: 'PhysbitsGuestWiderThanHost',
    vm: 'web1',
    host: 'hv1',
    severity: 'critical',
    reason: 'GUEST_WIDER_THAN_HOST',
  });
  t.deepEqual(shown[0].annotations, { summary: 'web1 on hv1: guest wider than host', description: critical.message });
  t.is(shown[0].status.state, 'active');
  await waitFor('firing notification', () => (notified.requests.length >= 1 ? true : undefined));

  svc.setVmReasons('web1', []);
  await waitFor('gone from Alertmanager', async () => ((await am.alerts()).length === 0 ? true : undefined));
  await waitFor('resolved notification', () =>
    notifications(notified, 'web1').some(([s]) => s === 'resolved') ? true : undefined,
  );
  t.deepEqual(notifications(notified, 'web1'), [
    ['firing', ['firing']],
    ['resolved', ['resolved']],
  ]);
});

test('Alertmanager down and physbits restarted meanwhile: the alert arrives exactly once', async (t) => {
  if (!requireTool(t, ALERTMANAGER, 'prometheus-alertmanager')) return t.pass();
  const amPort = await freePort();
  const hookPort = await freePort();
  const spoolDir = tempDir();
  const cfg = alertsConfig({
    alertmanagers: [`http://127.0.0.1:${amPort}`],
    webhooks: [{ url: `http://127.0.0.1:${hookPort}/physbits`, secret: 'shared-secret' }],
    spoolDir,
  });

  const metrics1 = new Metrics({ version: 'test', defaultMetrics: false });
  const first = new AlertService({ config: cfg, host: 'hv1', metrics: metrics1 });
  const fired: AlertEvent[] = [];
  first.on('alert', (e) => fired.push(e));
  await first.start();
  first.setVmReasons('db7', [critical]);
  await waitFor('a failed attempt to each sink', async () =>
    ((await metrics1.text()).match(/^physbits_alert_deliveries_total\{.*result="error"\} [1-9]/gm) ?? []).length === 2
      ? true
      : undefined,
  );
  await first.settled();
  t.is(first.pending(), 1);
  t.true(readFileSync(join(spoolDir, SPOOL_FILE), 'utf8').includes('"PhysbitsGuestWiderThanHost"'), 'spooled on disk');
  await first.stop();
  t.is(fired.length, 1);
  const startsAt = fired[0].startsAt;

  const second = new AlertService({ config: cfg, host: 'hv1' });
  const refired: AlertEvent[] = [];
  second.on('alert', (e) => refired.push(e));
  t.teardown(() => second.stop());
  await second.start();
  t.is(second.pending(), 1, 'the queued state survived the restart');
  second.setVmReasons('db7', [critical]);
  t.deepEqual(refired, [], 'a restart does not make it new');
  await sleep(1500);

  const notified = await startReceiver();
  t.teardown(() => notified.close());
  const hook = await startReceiver(hookPort);
  t.teardown(() => hook.close());
  const am = await startAlertmanager({ port: amPort, webhookUrl: notified.url });
  t.teardown(() => am.stop());

  const shown = await waitFor('alert in Alertmanager', async () => {
    const list = await am.alerts();
    return list.length ? list : undefined;
  });
  t.is(shown.length, 1);
  t.is(shown[0].labels.vm, 'db7');
  t.is(Date.parse(shown[0].startsAt), Date.parse(startsAt), 'startsAt from the first instance');
  await waitFor('notification', () => (notified.requests.length ? true : undefined));
  await waitFor('webhook', () => (hook.requests.length ? true : undefined));
  // Several re-sends (every 2 s) and Alertmanager group intervals (1 s) pass; nothing may repeat.
  await sleep(5000);
  t.is((await am.alerts()).length, 1);
  t.deepEqual(notifications(notified, 'db7'), [['firing', ['firing']]]);
  t.is(hook.requests.length, 1);
  const req = hook.requests[0];
  t.is(req.path, '/physbits');
  t.true(
    verifySignature(
      req.body,
      'shared-secret',
      req.headers['x-physbits-timestamp'] as string,
      req.headers['x-physbits-signature'] as string,
    ),
  );
  const body = JSON.parse(req.body) as { alerts: Array<{ id: string; status: string; startsAt: string }> };
  t.deepEqual(
    body.alerts.map((a) => [a.id, a.status, a.startsAt]),
    [[fired[0].id, 'firing', startsAt]],
  );
  t.is(second.pending(), 0);
});
