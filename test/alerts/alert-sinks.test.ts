import test from 'ava';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AlertDeliveryError } from '../../agent/alerts/alert-errors';
import { conditionAlert, refusalAlert } from '../../agent/alerts/alert-model';
import { AlertmanagerSink, alertsEndpoint } from '../../agent/alerts/alertmanager-sink';
import { realTimers } from '../../agent/core/timers';
import { postJson, redactUrl } from '../../agent/alerts/http-post';
import { sign, webhookBody, WebhookSink } from '../../agent/alerts/webhook-sink';
import { verifySignature } from '../helpers/webhook-signature';
import { freePort, startReceiver } from '../helpers/alertmanager';

const T0 = Date.parse('2030-01-02T03:04:05.000Z');
const wider = conditionAlert(
  'hv1',
  'web1',
  { code: 'GUEST_WIDER_THAN_HOST', severity: 'critical', message: 'too wide' },
  T0,
);
const http = { timeoutMs: 2000, timers: realTimers };

test('HMAC signature over "<timestamp>.<body>": known vector, and verification is exact', (t) => {
  // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
  const body = '{"a":1}';
  t.is(sign(1700000000, body, 's3cret'), 'sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940');
  const sig = sign(1700000000, body, 's3cret');
  t.true(verifySignature(body, 's3cret', '1700000000', sig));
  t.false(verifySignature(body, 's3cret', '1700000001', sig), 'another timestamp does not verify');
  t.false(verifySignature(body + ' ', 's3cret', '1700000000', sig));
  t.false(verifySignature(body, 'other', '1700000000', sig));
  t.false(verifySignature(body, 's3cret', undefined, sig));
  t.false(verifySignature(body, 's3cret', '1700000000', undefined));
  t.false(verifySignature(body, 's3cret', '1700000000', 'sha256=00'));
});

test('webhook: a loopback receiver gets the documented body, signed over the raw bytes', async (t) => {
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  const sink = new WebhookSink({ url: rx.url + 'hook?token=abc', secret: 'k3y' }, { ...http, host: 'hv1' });
  t.regex(
    sink.name,
    new RegExp(`^webhook:${rx.url}hook#[0-9a-f]{12}$`),
    'no query string in names, a hash of the URL instead',
  );
  const refusal = refusalAlert({
    host: 'hv1',
    vm: 'web1',
    code: 'REFUSED_X',
    message: 'no',
    command: 'device_add',
    time: T0,
    holdMs: 60_000,
  });
  await sink.send(
    [
      { id: 'a1', record: wider },
      { id: 'a2', record: refusal },
    ],
    T0 + 120_000,
    new AbortController().signal,
  );
  t.is(rx.requests.length, 1);
  const req = rx.requests[0];
  t.is(req.path, '/hook?token=abc');
  t.is(req.headers['content-type'], 'application/json');
  t.is(req.headers['x-physbits-timestamp'], String(Math.floor((T0 + 120_000) / 1000)), 'the send time, Unix seconds');
  t.true(
    verifySignature(
      req.body,
      'k3y',
      req.headers['x-physbits-timestamp'] as string,
      req.headers['x-physbits-signature'] as string,
    ),
  );
  t.deepEqual(JSON.parse(req.body), {
    version: '1',
    sender: 'physbits',
    host: 'hv1',
    alerts: [
      {
        id: 'a1',
        status: 'firing',
        labels: wider.labels,
        annotations: wider.annotations,
        startsAt: '2030-01-02T03:04:05.000Z',
        endsAt: null,
      },
      {
        id: 'a2',
        status: 'resolved',
        labels: refusal.labels,
        annotations: refusal.annotations,
        startsAt: '2030-01-02T03:04:05.000Z',
        endsAt: '2030-01-02T03:05:05.000Z',
      },
    ],
  });
});

test('webhook without a secret sends no signature header', async (t) => {
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  await new WebhookSink({ url: rx.url }, { ...http, host: 'hv1' }).send(
    [{ id: 'x', record: wider }],
    T0,
    new AbortController().signal,
  );
  t.is(rx.requests[0].headers['x-physbits-signature'], undefined);
  t.deepEqual(webhookBody('hv1', [], T0), { version: '1', sender: 'physbits', host: 'hv1', alerts: [] });
});

test('alertmanager: endpoint keeps a path prefix; body is the postable array', async (t) => {
  t.is(alertsEndpoint('http://am:9093'), 'http://am:9093/api/v2/alerts');
  t.is(alertsEndpoint('https://mon.example/alertmanager/'), 'https://mon.example/alertmanager/api/v2/alerts');
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  const sink = new AlertmanagerSink(rx.url + 'am', {
    ...http,
    resendMs: 60_000,
    generatorURL: 'http://hv1:9741/metrics',
  });
  await sink.send([{ id: 'x', record: wider }], T0, new AbortController().signal);
  t.is(rx.requests[0].path, '/am/api/v2/alerts');
  t.deepEqual(JSON.parse(rx.requests[0].body), [
    {
      labels: wider.labels,
      annotations: wider.annotations,
      startsAt: '2030-01-02T03:04:05.000Z',
      endsAt: '2030-01-02T03:08:05.000Z',
      generatorURL: 'http://hv1:9741/metrics',
    },
  ]);
});

test('credentials in a URL become a Basic header and never appear in errors', async (t) => {
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  rx.status = 503;
  const url = rx.url.replace('http://', 'http://user:p%40ss@');
  const err = await postJson({ url, body: '[]', timeoutMs: 2000 }).catch((e: unknown) => e);
  t.true(err instanceof AlertDeliveryError);
  const e = err as AlertDeliveryError;
  t.deepEqual([e.code, e.retryable, e.status], ['ALERT_DELIVERY_FAILED', true, 503]);
  t.false(e.message.includes('p@ss') || e.message.includes('p%40ss') || e.message.includes('user'));
  t.is(rx.requests[0].headers.authorization, `Basic ${Buffer.from('user:p@ss').toString('base64')}`);
  t.is(redactUrl('https://u:p@h:1/x?y=z#f'), 'https://h:1/x');
});

test('outcomes: 4xx is rejected for good, 429 retried, refused connection retried, silence times out', async (t) => {
  const rx = await startReceiver();
  t.teardown(() => rx.close());
  rx.status = 400;
  const e400 = (await postJson({ url: rx.url, body: '[]', timeoutMs: 2000 }).catch(
    (e: unknown) => e,
  )) as AlertDeliveryError;
  t.deepEqual([e400.code, e400.retryable], ['ALERT_DELIVERY_REJECTED', false]);
  rx.status = 429;
  const e429 = (await postJson({ url: rx.url, body: '[]', timeoutMs: 2000 }).catch(
    (e: unknown) => e,
  )) as AlertDeliveryError;
  t.deepEqual([e429.code, e429.retryable], ['ALERT_DELIVERY_FAILED', true]);

  const closed = await freePort();
  const eConn = (await postJson({ url: `http://127.0.0.1:${closed}/`, body: '[]', timeoutMs: 2000 }).catch(
    (e: unknown) => e,
  )) as AlertDeliveryError;
  t.deepEqual([eConn.code, eConn.retryable], ['ALERT_DELIVERY_FAILED', true]);
  t.regex(eConn.message, /ECONNREFUSED/);

  const silent = createServer(() => undefined);
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    silent.closeAllConnections();
    silent.close();
  });
  const port = (silent.address() as AddressInfo).port;
  const started = Date.now();
  const eTime = (await postJson({ url: `http://127.0.0.1:${port}/`, body: '[]', timeoutMs: 300 }).catch(
    (e: unknown) => e,
  )) as AlertDeliveryError;
  t.deepEqual([eTime.code, eTime.retryable], ['ALERT_DELIVERY_TIMEOUT', true]);
  t.true(Date.now() - started < 5000);
});
