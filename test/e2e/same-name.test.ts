/**
 * Two QEMUs started with the same `-name dup` (different sockets, 39 and 52 bits): each keeps its
 * own series (`id` label), status entry and verdict; the daemon warns that the names collide;
 * `check-migration dup` is refused as ambiguous, naming both ids, while each id names one VM; and
 * when one QEMU exits, only its series go. And the identity of the build and the timing of QMP
 * commands in the same /metrics.
 */
import test from 'ava';
import { vmId } from '../../agent/core/vm-name';
import type { MigrationCheck } from '../../agent/api/api-types';
import { ctl, PHYSBITSD, sleep, startDaemon, waitUntil } from '../helpers/daemon';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function series(text: string, name: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`))
    .sort();
}

test('two guests named alike keep their own series, status and verdict; one leaving takes only its own', async (t) => {
  const dir = tempDir('physbits-same-name-');
  const vms = join(dir, 'vms');
  const d = await startDaemon({ dir, config: { host: { physBits: 46, name: 'hv1' } } });
  t.teardown(() => d.kill());
  const narrow = await startGuest({ dir: vms, name: 'dup', socketName: 'a.qmp', cpu: 'phys-bits=39' });
  t.teardown(() => narrow.kill());
  const wide = await startGuest({ dir: vms, name: 'dup', socketName: 'b.qmp', cpu: 'phys-bits=52' });
  t.teardown(() => wide.kill());
  const idA = vmId(narrow.socket);
  const idB = vmId(wide.socket);
  t.not(idA, idB);

  const doc = await d.waitForStatus(
    (s) => s.vms.filter((v) => v.name === 'dup' && v.verdict).length === 2,
    'both verdicts',
  );
  const byId = new Map(doc.vms.map((v) => [v.id, v]));
  t.like(byId.get(idA), {
    name: 'dup',
    socket: narrow.socket,
    guest: { physBits: 39 },
    verdict: { severity: 'ok' },
  });
  t.like(byId.get(idB), {
    name: 'dup',
    socket: wide.socket,
    guest: { physBits: 52 },
    verdict: { severity: 'critical' },
  });

  const warned = await d.waitForLog((l) => l.message.startsWith('VM names collide'));
  t.is(warned.level, 'warn');
  t.is(warned.fields.vm, 'dup');
  t.deepEqual(warned.fields.ids.split(',').sort(), [idA, idB].sort());

  let text = await waitUntil(async () => {
    const m = await d.metrics();
    return series(m, 'physbits_vm_severity').length === 2 ? m : null;
  }, 'two severity series');
  t.deepEqual(
    series(text, 'physbits_guest_phys_bits'),
    [
      `physbits_guest_phys_bits{vm="dup",id="${idA}",host="hv1",accelerator="tcg"} 39`,
      `physbits_guest_phys_bits{vm="dup",id="${idB}",host="hv1",accelerator="tcg"} 52`,
    ].sort(),
  );
  t.deepEqual(
    series(text, 'physbits_vm_severity'),
    [
      `physbits_vm_severity{vm="dup",id="${idA}",host="hv1"} 0`,
      `physbits_vm_severity{vm="dup",id="${idB}",host="hv1"} 3`,
    ].sort(),
  );
  t.true(
    series(text, 'physbits_vm_reason_info').includes(
      `physbits_vm_reason_info{vm="dup",id="${idB}",host="hv1",reason="GUEST_WIDER_THAN_HOST",severity="critical"} 1`,
    ),
  );
  const counted = series(text, 'physbits_vms').filter((l) => !l.endsWith(' 0'));
  t.is(
    counted.reduce((n, l) => n + Number(l.split(' ')[1]), 0),
    2,
    counted.join('\n'),
  );

  // A name two VMs share is refused, naming each id; an id names one.
  const ambiguous = await ctl(['check-migration', 'dup', '--to', 'narrow', '--api', d.apiSocket]);
  t.is(ambiguous.code, 64, ambiguous.stderr);
  t.regex(ambiguous.stderr, new RegExp(`2 VMs are named 'dup': name one by its id \\(.*${idA}.*\\)`));
  t.true(ambiguous.stderr.includes(idB));
  const one = await ctl(['check-migration', idA, '--to', 'narrow', '--json', '--api', d.apiSocket]);
  t.is(one.code, 0, one.stderr);
  t.like(JSON.parse(one.stdout) as MigrationCheck, { vm: 'dup', id: idA, allowed: true });
  const other = await ctl(['check-migration', idB, '--to', 'narrow', '--json', '--api', d.apiSocket]);
  t.is(other.code, 2, other.stderr);
  t.like(JSON.parse(other.stdout) as MigrationCheck, { vm: 'dup', id: idB, allowed: false });

  // One stops: it turns unreachable, the other's series stay as they were.
  await narrow.kill();
  text = await waitUntil(async () => {
    const m = await d.metrics();
    return m.includes(`physbits_vm_up{vm="dup",id="${idA}",host="hv1"} 0`) ? m : null;
  }, 'the stopped guest unreachable');
  t.true(text.includes(`physbits_vm_up{vm="dup",id="${idB}",host="hv1"} 1`));
  t.true(text.includes(`physbits_guest_phys_bits{vm="dup",id="${idB}",host="hv1",accelerator="tcg"} 52`));
  t.true(text.includes(`physbits_vm_severity{vm="dup",id="${idB}",host="hv1"} 3`));
  // Its socket goes (discovery drops the VM): its series go, the other's stay.
  rmSync(narrow.socket, { force: true });
  text = await waitUntil(async () => {
    const m = await d.metrics();
    return series(m, 'physbits_guest_phys_bits').length === 1 ? m : null;
  }, 'the narrow guest gone from /metrics');
  t.deepEqual(series(text, 'physbits_guest_phys_bits'), [
    `physbits_guest_phys_bits{vm="dup",id="${idB}",host="hv1",accelerator="tcg"} 52`,
  ]);
  t.deepEqual(series(text, 'physbits_vm_severity'), [`physbits_vm_severity{vm="dup",id="${idB}",host="hv1"} 3`]);
  const after = await d.status();
  t.deepEqual(
    after.vms.map((v) => v.id),
    [idB],
  );
});

test('physbits_build_info matches --version; physbits_qmp_request_duration_seconds counts each QMP command (heartbeats too)', async (t) => {
  const dir = tempDir('physbits-build-info-');
  const d = await startDaemon({ dir, config: { host: { name: 'hv1' }, qmp: { heartbeatMs: 200 } } });
  t.teardown(() => d.kill());
  const guest = await startGuest({ dir: join(dir, 'vms'), name: 'beat', cpu: 'phys-bits=39' });
  t.teardown(() => guest.kill());
  const id = vmId(guest.socket);
  const version = await new Promise<string>((done, fail) =>
    execFile(process.execPath, [PHYSBITSD, '--version'], (err, out) => (err ? fail(err) : done(out))),
  );
  const m = /^physbitsd (\S+) \(commit ([0-9a-f]{12})(, modified)?\)\n$/.exec(version);
  t.truthy(m, version);
  const count = (text: string): number =>
    Number(
      new RegExp(`^physbits_qmp_request_duration_seconds_count\\{vm="beat",id="${id}",host="hv1"\\} (\\d+)$`, 'm').exec(
        text,
      )?.[1] ?? NaN,
    );
  const first = await waitUntil(async () => {
    const text = await d.metrics();
    return count(text) > 0 ? text : null;
  }, 'a timed QMP command');
  const info = /^physbits_build_info\{version="([^"]+)",revision="([^"]+)"\} 1$/m.exec(first);
  t.truthy(info, first);
  t.is(info![1], m![1]);
  t.is(info![2].slice(0, 12), m![2]);
  t.is(info![2].endsWith('-modified'), !!m![3]);
  // The read's commands, then a heartbeat (query-status) every 200 ms: the count follows the commands.
  const before = count(first);
  await sleep(2000);
  const after = count(await d.metrics());
  t.true(after - before >= 5, `${before} → ${after} in 2 s of 200 ms heartbeats`);
  t.regex(
    first,
    new RegExp(`physbits_qmp_request_duration_seconds_bucket\\{le="0.005",vm="beat",id="${id}",host="hv1"\\} \\d+`),
  );
});

test('physbits_config_last_reload_successful: 1 at start, 0 after a refused SIGHUP, 1 again after a good one', async (t) => {
  const dir = tempDir('physbits-reload-metric-');
  const d = await startDaemon({ dir });
  t.teardown(() => d.kill());
  const value = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  let text = await d.metrics();
  t.is(value(text, 'physbits_config_last_reload_successful'), 1);
  const started = value(text, 'physbits_config_last_reload_success_timestamp_seconds');
  t.true(Math.abs(started - Date.now() / 1000) < 60, String(started));
  const good = readFileSync(d.configPath, 'utf8');
  writeFileSync(d.configPath, '{ "guard": { "holdMs": "soon" } }');
  d.proc.kill('SIGHUP');
  await d.waitForLog(/reload refused/);
  text = await d.metrics();
  t.is(value(text, 'physbits_config_last_reload_successful'), 0);
  t.is(value(text, 'physbits_config_last_reload_success_timestamp_seconds'), started);
  writeFileSync(d.configPath, good);
  d.proc.kill('SIGHUP');
  await d.waitForLog(/configuration reloaded/);
  text = await waitUntil(async () => {
    const m = await d.metrics();
    return value(m, 'physbits_config_last_reload_successful') === 1 ? m : null;
  }, 'the good reload counted');
  t.true(value(text, 'physbits_config_last_reload_success_timestamp_seconds') >= started);
});
