import test from 'ava';
import { spawnSync } from 'node:child_process';
import { Histogram, Registry } from 'prom-client';
import { Metrics, MAX_LABEL_VALUES_PER_VM } from '../../agent/api/metrics';
import { QMP_DURATION_BUCKETS } from '../../agent/api/vm-series';
import { parseListen, startMetricsServer } from '../../agent/api/metrics-server';
import { PROMTOOL, requireTool } from '../helpers/alertmanager';

/**
 * What `promtool check metrics` says of our exposition, and why it stays: the contract names these
 * metrics in bits, the unit QEMU and CPUID use for address widths.
 */
const ACCEPTED_LINT = [
  'physbits_guest_phys_bits use base unit "bytes" instead of "bits"',
  'physbits_host_phys_bits use base unit "bytes" instead of "bits"',
];

/** A VM as the daemon names it to the metrics: its id (here `id-<name>`) and its name. */
const v = (name: string, id = `id-${name}`) => ({ id, name });

function series(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

test('contract metrics carry the exact values', async (t) => {
  const m = new Metrics({ version: '1.2.3', defaultMetrics: false });
  m.setHost({ physBits: 46 });
  m.setVm(v('web1'), { physBits: 52 }, { relation: 'wider', severity: 'critical' });
  m.setVm(v('db1'), { physBits: 46 }, { relation: 'equal', severity: 'ok' });
  m.setVm(v('ci1'), { physBits: 40 }, { relation: 'narrower', severity: 'info' });
  m.refused(v('web1'), 'device_add');
  m.refused(v('web1'), 'device_add');
  m.refused(v('web1'), 'migrate');
  const text = await m.text();
  t.deepEqual(series(text, 'physbits_build_info'), ['physbits_build_info{version="1.2.3",revision="unknown"} 1']);
  t.deepEqual(series(text, 'physbits_host_phys_bits'), ['physbits_host_phys_bits 46']);
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    'physbits_guest_phys_bits{vm="web1",id="id-web1"} 52',
    'physbits_guest_phys_bits{vm="db1",id="id-db1"} 46',
    'physbits_guest_phys_bits{vm="ci1",id="id-ci1"} 40',
  ]);
  t.deepEqual(series(text, 'physbits_vm_severity'), [
    'physbits_vm_severity{vm="web1",id="id-web1"} 3',
    'physbits_vm_severity{vm="db1",id="id-db1"} 0',
    'physbits_vm_severity{vm="ci1",id="id-ci1"} 1',
  ]);
  t.deepEqual(series(text, 'physbits_refused_commands_total'), [
    'physbits_refused_commands_total{vm="web1",id="id-web1",command="device_add"} 2',
    'physbits_refused_commands_total{vm="web1",id="id-web1",command="migrate"} 1',
  ]);
  const vms = series(text, 'physbits_vms');
  t.is(vms.length, 12, 'every relation × severity pair is present');
  t.true(vms.includes('physbits_vms{relation="wider",severity="critical"} 1'));
  t.true(vms.includes('physbits_vms{relation="narrower",severity="info"} 1'));
  t.true(vms.includes('physbits_vms{relation="equal",severity="warning"} 0'));
  t.false(text.includes('process_cpu'), 'no default metrics when switched off');
});

test('removeVm drops every series of the VM and nothing else', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  for (const vm of [v('a'), v('b')]) {
    m.setVm(vm, { physBits: 40 }, { relation: 'narrower', severity: 'ok' });
    m.refused(vm, 'device_add');
    m.qmpError(vm, 'QMP_TIMEOUT');
    m.observeQmp(vm, 0.02);
    m.setVmUp(vm, false);
  }
  m.removeVm('id-a');
  const text = await m.text();
  t.false(/vm="a"/.test(text));
  t.is(text.match(/vm="b"/g)!.length, 5 + 12, '4 single series + histogram (9 buckets, +Inf, sum, count)');
  t.deepEqual(series(text, 'physbits_vm_up'), ['physbits_vm_up{vm="b",id="id-b"} 0']);
  t.deepEqual(series(text, 'physbits_qmp_errors_total'), [
    'physbits_qmp_errors_total{vm="b",id="id-b",code="QMP_TIMEOUT"} 1',
  ]);
  t.true(series(text, 'physbits_vms').includes('physbits_vms{relation="narrower",severity="ok"} 1'));
});

test('label values chosen by clients are bounded per VM', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  for (let i = 0; i < 100; i++) m.refused(v('web1'), `cmd${i}`);
  const lines = series(await m.text(), 'physbits_refused_commands_total');
  t.is(lines.length, MAX_LABEL_VALUES_PER_VM + 1);
  t.true(
    lines.includes(
      `physbits_refused_commands_total{vm="web1",id="id-web1",command="other"} ${100 - MAX_LABEL_VALUES_PER_VM}`,
    ),
  );
});

test('alert metrics', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  m.setAlertsPending(3);
  m.setSpoolEntries(7);
  m.setAlertsFiring({ info: 0, warning: 1, critical: 2 });
  m.alertDelivery('alertmanager:http://am:9093/', 'error', 1);
  m.alertDelivery('alertmanager:http://am:9093/', 'success', 1);
  m.spoolDropped('superseded');
  const text = await m.text();
  t.deepEqual(series(text, 'physbits_alerts_undelivered'), ['physbits_alerts_undelivered 3']);
  t.deepEqual(series(text, 'physbits_alerts_pending'), [], 'the old name is gone');
  t.deepEqual(series(text, 'physbits_spool_entries'), ['physbits_spool_entries 7']);
  t.deepEqual(series(text, 'physbits_alerts_firing'), [
    'physbits_alerts_firing{severity="info"} 0',
    'physbits_alerts_firing{severity="warning"} 1',
    'physbits_alerts_firing{severity="critical"} 2',
  ]);
  t.deepEqual(series(text, 'physbits_alert_deliveries_total'), [
    'physbits_alert_deliveries_total{sink="alertmanager:http://am:9093/",result="error"} 1',
    'physbits_alert_deliveries_total{sink="alertmanager:http://am:9093/",result="success"} 1',
  ]);
  t.deepEqual(series(text, 'physbits_spool_dropped_total'), [
    'physbits_spool_dropped_total{reason="superseded"} 1',
    'physbits_spool_dropped_total{reason="ended"} 0',
    'physbits_spool_dropped_total{reason="firing"} 0',
  ]);
});

test('two Metrics instances do not share a registry', async (t) => {
  const a = new Metrics({ version: 'a', defaultMetrics: false });
  const b = new Metrics({ version: 'b', defaultMetrics: false });
  a.setHost({ physBits: 39 });
  b.setHost({ physBits: 52 });
  t.deepEqual(series(await a.text(), 'physbits_host_phys_bits'), ['physbits_host_phys_bits 39']);
  t.deepEqual(series(await b.text(), 'physbits_host_phys_bits'), ['physbits_host_phys_bits 52']);
});

test('listen addresses', (t) => {
  t.deepEqual(parseListen('127.0.0.1:9741'), { host: '127.0.0.1', port: 9741 });
  t.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  t.throws(() => parseListen('9741'), { instanceOf: RangeError });
  t.throws(() => parseListen('h:70000'), { instanceOf: RangeError });
});

test('the server serves /metrics on a free port; 404 elsewhere; 405 for POST', async (t) => {
  const m = new Metrics({ version: '0.1.0' });
  m.setHost({ physBits: 46 });
  const srv = await startMetricsServer(m, '127.0.0.1:0');
  t.teardown(() => srv.close());
  t.is(srv.address, '127.0.0.1');
  t.true(srv.port > 0);
  const base = `http://127.0.0.1:${srv.port}`;
  const res = await fetch(`${base}/metrics`);
  t.is(res.status, 200);
  t.regex(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  t.true(text.includes('physbits_host_phys_bits 46'));
  t.true(text.includes('process_cpu_user_seconds_total'), 'standard process_* metrics');
  t.is((await fetch(`${base}/`)).status, 404);
  t.is((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
});

test('promtool check metrics accepts what /metrics serves', async (t) => {
  if (!requireTool(t, PROMTOOL, 'prometheus')) return t.pass();
  const m = new Metrics({ version: '0.1.0' });
  m.setHost({ physBits: 46 });
  m.setVm(v('web1'), { physBits: 52 }, { relation: 'wider', severity: 'critical' });
  m.refused(v('web1'), 'device_add');
  m.qmpError(v('web1'), 'QMP_TIMEOUT');
  m.observeQmp(v('web1'), 0.004);
  m.alertDelivery('webhook:http://h/', 'success', 1);
  const srv = await startMetricsServer(m, '127.0.0.1:0');
  t.teardown(() => srv.close());
  const text = await (await fetch(`http://127.0.0.1:${srv.port}/metrics`)).text();
  const r = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30000 });
  // Exit 1 is a parse error; 3 means lint findings only, which must be exactly the accepted ones.
  t.not(r.status, 1, `${r.stdout}${r.stderr}`);
  const findings = `${r.stdout}${r.stderr}`
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
  t.deepEqual(findings, [...ACCEPTED_LINT].sort());
  t.false(text.includes('nodejs_active_handles_total'));
  t.true(text.includes('nodejs_active_handles '));
});

test('fleet identity: host_info and the host label on the series a fleet query joins; relabelled when it changes', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  m.setHost({ physBits: 46, name: 'hv1' }, 'east');
  m.setVm(
    v('web1'),
    { physBits: 46, accelerator: 'kvm', layout: { highestAddress: 53687091200 } as never },
    { relation: 'equal', severity: 'ok' },
  );
  m.setVm(
    v('ci1'),
    { physBits: 40, accelerator: 'tcg', layout: null, uuid: '6f1c3a52-9b0e-4c55-8a44-1e0f7b2d9c01' },
    { relation: 'narrower', severity: 'ok' },
  );
  let text = await m.text();
  t.deepEqual(series(text, 'physbits_host_info'), ['physbits_host_info{host="hv1",pool="east"} 1']);
  t.deepEqual(series(text, 'physbits_host_phys_bits'), ['physbits_host_phys_bits{host="hv1",pool="east"} 46']);
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    'physbits_guest_phys_bits{vm="web1",id="id-web1",host="hv1",pool="east",accelerator="kvm"} 46',
    'physbits_guest_phys_bits{vm="ci1",id="id-ci1",host="hv1",pool="east",accelerator="tcg",uuid="6f1c3a52-9b0e-4c55-8a44-1e0f7b2d9c01"} 40',
  ]);
  t.deepEqual(series(text, 'physbits_guest_highest_address_bytes'), [
    'physbits_guest_highest_address_bytes{vm="web1",id="id-web1",host="hv1",pool="east"} 53687091200',
  ]);
  t.deepEqual(series(text, 'physbits_vm_up'), [
    'physbits_vm_up{vm="web1",id="id-web1",host="hv1",pool="east"} 1',
    'physbits_vm_up{vm="ci1",id="id-ci1",host="hv1",pool="east"} 1',
  ]);

  // Renamed, no pool; a guest restarted under another accelerator: no series under the old labels.
  m.setHost({ physBits: 39, name: 'hv9' });
  m.setVm(v('ci1'), { physBits: 40, accelerator: 'kvm', layout: null }, { relation: 'wider', severity: 'critical' });
  m.setVmUp(v('web1'), false);
  text = await m.text();
  t.deepEqual(series(text, 'physbits_host_info'), ['physbits_host_info{host="hv9"} 1']);
  t.deepEqual(series(text, 'physbits_host_phys_bits'), ['physbits_host_phys_bits{host="hv9"} 39']);
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    'physbits_guest_phys_bits{vm="web1",id="id-web1",host="hv9",accelerator="kvm"} 46',
    'physbits_guest_phys_bits{vm="ci1",id="id-ci1",host="hv9",accelerator="kvm"} 40',
  ]);
  t.deepEqual(series(text, 'physbits_vm_up'), [
    'physbits_vm_up{vm="web1",id="id-web1",host="hv9"} 0',
    'physbits_vm_up{vm="ci1",id="id-ci1",host="hv9"} 1',
  ]);
  m.removeVm('id-web1');
  text = await m.text();
  t.false(text.includes('vm="web1"'));
});

test('two VMs with one name keep their own series; one leaving takes only its own', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  m.setHost({ physBits: 46, name: 'hv1' });
  const narrow = v('dup', 'aaaaaaaaaaaa');
  const wide = v('dup', 'bbbbbbbbbbbb');
  m.setVm(narrow, { physBits: 39 }, { relation: 'narrower', severity: 'ok' });
  m.setVm(
    wide,
    { physBits: 52 },
    {
      relation: 'wider',
      severity: 'critical',
      reasons: [{ code: 'GUEST_WIDER_THAN_HOST', severity: 'critical', message: 'wider' }],
    },
  );
  m.refused(wide, 'migrate');
  let text = await m.text();
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    'physbits_guest_phys_bits{vm="dup",id="aaaaaaaaaaaa",host="hv1"} 39',
    'physbits_guest_phys_bits{vm="dup",id="bbbbbbbbbbbb",host="hv1"} 52',
  ]);
  t.deepEqual(series(text, 'physbits_vm_severity'), [
    'physbits_vm_severity{vm="dup",id="aaaaaaaaaaaa",host="hv1"} 0',
    'physbits_vm_severity{vm="dup",id="bbbbbbbbbbbb",host="hv1"} 3',
  ]);
  t.deepEqual(series(text, 'physbits_vm_reason_info'), [
    'physbits_vm_reason_info{vm="dup",id="bbbbbbbbbbbb",host="hv1",reason="GUEST_WIDER_THAN_HOST",severity="critical"} 1',
  ]);
  const counted = series(text, 'physbits_vms').filter((l) => !l.endsWith(' 0'));
  t.deepEqual(counted.sort(), [
    'physbits_vms{relation="narrower",severity="ok"} 1',
    'physbits_vms{relation="wider",severity="critical"} 1',
  ]);
  m.removeVm(narrow.id);
  text = await m.text();
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    'physbits_guest_phys_bits{vm="dup",id="bbbbbbbbbbbb",host="hv1"} 52',
  ]);
  t.deepEqual(series(text, 'physbits_refused_commands_total'), [
    'physbits_refused_commands_total{vm="dup",id="bbbbbbbbbbbb",host="hv1",command="migrate"} 1',
  ]);
});

test('a renamed VM keeps its counts under its new name, none under the old one', async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  m.refused(v('old', 'cccccccccccc'), 'device_add');
  m.observeQmp(v('old', 'cccccccccccc'), 0.01);
  m.refused(v('new', 'cccccccccccc'), 'device_add');
  m.observeQmp(v('new', 'cccccccccccc'), 0.01);
  const text = await m.text();
  t.deepEqual(series(text, 'physbits_refused_commands_total'), [
    'physbits_refused_commands_total{vm="new",id="cccccccccccc",command="device_add"} 2',
  ]);
  t.deepEqual(series(text, 'physbits_qmp_request_duration_seconds_count'), [
    'physbits_qmp_request_duration_seconds_count{vm="new",id="cccccccccccc"} 2',
  ]);
  t.false(text.includes('vm="old"'));
});

test("physbits_qmp_request_duration_seconds reads as prom-client's own histogram fed the same round trips", async (t) => {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  m.setHost({ physBits: 46, name: 'hv1' }, 'rack"1');
  const registry = new Registry();
  const h = new Histogram({
    name: 'physbits_qmp_request_duration_seconds',
    help: 'x',
    labelNames: ['vm', 'id', 'host', 'pool'],
    buckets: [...QMP_DURATION_BUCKETS],
    registers: [registry],
  });
  // Every bound itself (a bucket is `le`: less than or equal), between them, above the last, and zero.
  const seconds = [0, ...QMP_DURATION_BUCKETS, 0.0004, 0.003, 0.07, 2, 11, 600];
  for (const [vm, n] of [
    ['a\\b', 1],
    ['web1', 2],
  ] as const) {
    for (let i = 0; i < n; i++)
      for (const s of seconds) {
        m.observeQmp(v(vm), s);
        h.observe({ vm, id: `id-${vm}`, host: 'hv1', pool: 'rack"1' }, s);
      }
  }
  const ours = (await m.text()).split('\n').filter((l) => l.startsWith('physbits_qmp_request_duration_seconds'));
  const theirs = (await registry.metrics())
    .split('\n')
    .filter((l) => l.startsWith('physbits_qmp_request_duration_seconds'));
  t.is(ours.length, 2 * 12);
  t.deepEqual(ours, theirs);
});

test('build_info carries the version and revision; reload metrics start at 1', async (t) => {
  const m = new Metrics({ version: '0.1.0', revision: 'a3a1fba0', defaultMetrics: false });
  let text = await m.text();
  t.deepEqual(series(text, 'physbits_build_info'), ['physbits_build_info{version="0.1.0",revision="a3a1fba0"} 1']);
  t.deepEqual(series(text, 'physbits_config_last_reload_successful'), ['physbits_config_last_reload_successful 1']);
  m.configLoaded(true, 1_700_000_000_500);
  m.configLoaded(false, 1_700_000_100_000);
  text = await m.text();
  t.deepEqual(series(text, 'physbits_config_last_reload_successful'), ['physbits_config_last_reload_successful 0']);
  t.deepEqual(series(text, 'physbits_config_last_reload_success_timestamp_seconds'), [
    'physbits_config_last_reload_success_timestamp_seconds 1700000000',
  ]);
});
