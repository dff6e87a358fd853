/**
 * The monitoring files under contrib/ are checked by the real tools (promtool, amtool), and name
 * only metrics that physbits exports.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Metrics } from '../../agent/api/metrics';
import { alertName } from '../../agent/alerts/alert-model';
import { REFUSED } from '../../agent/guard/refusal';
import { REASON_CODES } from '../../agent/judge/reasons';
import { AMTOOL, PROMTOOL, requireTool } from '../helpers/alertmanager';

// build/test/… → repository root
const ROOT = join(__dirname, '..', '..', '..');
const RULES = join(ROOT, 'contrib/prometheus/physbits-rules.yml');
const RULE_TESTS = join(ROOT, 'contrib/prometheus/physbits-rules.test.yml');
const FLEET_RULES = join(ROOT, 'contrib/prometheus/physbits-fleet-rules.yml');
const FLEET_RULE_TESTS = join(ROOT, 'contrib/prometheus/physbits-fleet-rules.test.yml');
const ROUTES = join(ROOT, 'contrib/alertmanager/route-example.yml');
const DASHBOARD = join(ROOT, 'contrib/grafana/physbits-dashboard.json');

function run(bin: string, args: string[]) {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

async function exportedNames(): Promise<Set<string>> {
  const m = new Metrics({ version: '0', defaultMetrics: false });
  return new Set((await m.registry.getMetricsAsJSON()).map((x) => x.name));
}

/** physbits_* names used in a text, histogram suffixes folded into the metric name. */
function usedNames(text: string): string[] {
  const names = new Set<string>();
  for (const [n] of text.matchAll(/physbits_[a-z_]+/g)) {
    if (n.endsWith('_')) continue;
    names.add(n.replace(/_(bucket|sum|count)$/, ''));
  }
  return [...names].sort();
}

test('promtool check rules accepts the alerting rules', (t) => {
  if (!requireTool(t, PROMTOOL, 'prometheus')) return t.pass();
  const r = run(PROMTOOL, ['check', 'rules', RULES]);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /SUCCESS: 8 rules found/);
});

test('promtool test rules: the cases that must fire do, the silent ones stay silent', (t) => {
  if (!requireTool(t, PROMTOOL, 'prometheus')) return t.pass();
  const r = run(PROMTOOL, ['test', 'rules', RULE_TESTS]);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /SUCCESS/);
});

test('promtool: the fleet rules check, and their tests pass (guests that fit no other host, pools narrower than a guest)', (t) => {
  if (!requireTool(t, PROMTOOL, 'prometheus')) return t.pass();
  const check = run(PROMTOOL, ['check', 'rules', FLEET_RULES]);
  t.is(check.status, 0, check.out);
  t.regex(check.out, /SUCCESS: 8 rules found/);
  const r = run(PROMTOOL, ['test', 'rules', FLEET_RULE_TESTS]);
  t.is(r.status, 0, r.out);
  t.regex(r.out, /SUCCESS/);
});

test('amtool accepts the example route, and it routes physbits alerts as documented', (t) => {
  if (!requireTool(t, AMTOOL, 'prometheus-alertmanager')) return t.pass();
  const check = run(AMTOOL, ['check-config', ROUTES]);
  t.is(check.status, 0, check.out);
  t.regex(check.out, /SUCCESS/);
  const route = (...labels: string[]) => {
    const r = spawnSync(AMTOOL, ['config', 'routes', 'test', `--config.file=${ROUTES}`, ...labels], {
      encoding: 'utf8',
      timeout: 60000,
    });
    return r.stdout.trim();
  };
  t.is(
    route(
      `alertname=${alertName('REFUSED_MEMORY_ABOVE_HOST_LIMIT')}`,
      'severity=warning',
      'reason=REFUSED_MEMORY_ABOVE_HOST_LIMIT',
    ),
    'ops-chat',
  );
  t.is(
    route(`alertname=${alertName('GUEST_WIDER_THAN_HOST')}`, 'severity=critical', 'reason=GUEST_WIDER_THAN_HOST'),
    'ops-pager',
  );
  t.is(
    route(`alertname=${alertName('GUEST_NARROWER_THAN_HOST')}`, 'severity=info', 'reason=GUEST_NARROWER_THAN_HOST'),
    'ops-ticket',
  );
  t.is(route('alertname=SomethingElse', 'severity=critical'), 'ops-default');
});

test('rules and dashboard use only metrics physbits exports', async (t) => {
  const exported = await exportedNames();
  const rules = usedNames(readFileSync(RULES, 'utf8'));
  const fleetRules = usedNames(readFileSync(FLEET_RULES, 'utf8'));
  t.deepEqual(
    fleetRules.filter((n) => !exported.has(n)),
    [],
  );
  t.deepEqual(fleetRules, [
    'physbits_guest_highest_address_bytes',
    'physbits_guest_phys_bits',
    'physbits_host_phys_bits',
  ]);
  const dashboardText = readFileSync(DASHBOARD, 'utf8');
  const dashboard = usedNames(dashboardText);
  t.deepEqual(
    rules.filter((n) => !exported.has(n)),
    [],
  );
  t.deepEqual(
    dashboard.filter((n) => !exported.has(n)),
    [],
  );
  for (const contract of [
    'physbits_host_phys_bits',
    'physbits_guest_phys_bits',
    'physbits_vm_severity',
    'physbits_refused_commands_total',
  ]) {
    t.true(dashboard.includes(contract), `dashboard shows ${contract}`);
  }
  t.true(rules.includes('physbits_vm_severity') && rules.includes('physbits_refused_commands_total'));
});

test('the dashboard: unique panel ids, a datasource variable (file provisioning resolves no inputs), a host variable on `host`, a panel for `up`', (t) => {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    uid: string;
    __inputs?: unknown;
    templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid: string } }> };
    panels: Array<{ id: number; type: string; datasource?: { uid: string }; targets?: Array<{ expr: string }> }>;
  };
  t.is(d.uid, 'physbits-overview');
  t.is(d.__inputs, undefined);
  const text = readFileSync(DASHBOARD, 'utf8');
  t.false(text.includes('${DS_'), 'no import-time input left');
  const [ds, host] = d.templating.list;
  t.like(ds, { name: 'datasource', type: 'datasource', query: 'prometheus' });
  t.like(host, { name: 'host', type: 'query', datasource: { uid: '${datasource}' } });
  t.regex(JSON.stringify(host.query), /label_values\(physbits_host_info, host\)/);
  const ids = d.panels.map((p) => p.id);
  t.is(new Set(ids).size, ids.length);
  for (const p of d.panels.filter((p) => p.type !== 'row')) t.is(p.datasource?.uid, '${datasource}');
  const queries = d.panels.flatMap((p) => p.targets ?? []).map((q) => q.expr);
  t.true(queries.length >= 10);
  t.true(queries.includes('up{job="physbits"}'), 'a panel shows up');
  t.deepEqual(
    queries.filter((q) => q !== 'up{job="physbits"}' && !q.includes('host=~"$host"')),
    [],
    'every other query follows the host selector',
  );
  t.false(text.includes('$instance'));
});

test('every rule has a runbook_url into docs/reasons.md and the origin label', (t) => {
  const reasons = readFileSync(join(ROOT, 'docs/reasons.md'), 'utf8');
  const anchors = new Set(
    [...reasons.matchAll(/^#{2,3} (.+)$/gm)].map((m) =>
      m[1]
        .toLowerCase()
        .replace(/[^a-z0-9_ -]/g, '')
        .replace(/ /g, '-'),
    ),
  );
  let rules = 0;
  for (const file of [RULES, FLEET_RULES]) {
    const text = readFileSync(file, 'utf8');
    for (const block of text.split(/\n(?= {6}- alert: )/).slice(1)) {
      rules++;
      const name = /- alert: (\w+)/.exec(block)![1];
      const url = /runbook_url: '([^']+)'/.exec(block)?.[1];
      t.is(url, `file:///usr/share/doc/physbits/reasons.md#${name.toLowerCase()}`, name);
      t.true(anchors.has(name.toLowerCase()), `docs/reasons.md has a section ${name}`);
      t.regex(block, /\n {10}origin: prometheus\n/, name);
    }
  }
  t.is(rules, 10);
});

test('docs list every metric, every alertname and every alert error code', async (t) => {
  const metricsDoc = readFileSync(join(ROOT, 'docs/metrics.md'), 'utf8');
  for (const name of await exportedNames()) t.true(metricsDoc.includes(`\`${name}\``), `docs/metrics.md lists ${name}`);
  const alertsDoc = readFileSync(join(ROOT, 'docs/alerts.md'), 'utf8');
  const codes = [...REASON_CODES, ...Object.values(REFUSED)];
  t.true(codes.length >= 20);
  for (const code of codes)
    t.true(alertsDoc.includes(`| \`${code}\` | \`${alertName(code)}\` |`), `docs/alerts.md maps ${code}`);
  const errorSource = readFileSync(join(ROOT, 'agent/alerts/alert-errors.ts'), 'utf8');
  const errorCodes = [...errorSource.matchAll(/'(ALERT_[A-Z_]+)'/g)].map((m) => m[1]);
  t.deepEqual([...new Set(errorCodes)].sort(), [
    'ALERT_DELIVERY_FAILED',
    'ALERT_DELIVERY_REJECTED',
    'ALERT_DELIVERY_TIMEOUT',
    'ALERT_SERVICE_STATE',
    'ALERT_SPOOL_IO',
  ]);
  for (const code of errorCodes) t.true(alertsDoc.includes(`| \`${code}\` |`), `docs/alerts.md lists ${code}`);
});
