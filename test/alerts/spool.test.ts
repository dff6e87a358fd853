import test from 'ava';
import { appendFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { conditionAlert, refusalAlert, resolveAlert, type AlertRecord } from '../../agent/alerts/alert-model';
import { Spool, SPOOL_FILE, type DropReason, type SpoolOptions } from '../../agent/alerts/spool';
import { parseOp } from '../../agent/alerts/spool-log';
import { tempDir } from '../helpers/tmp';

const T0 = Date.parse('2030-01-02T03:04:05.000Z');
const AM = 'alertmanager http://am:9093/api/v2/alerts';
const HOOK = 'webhook http://hook/';

function clockAt(ms: number) {
  const c = { t: ms, now: () => c.t };
  return c;
}

function crit(vm: string, at = T0, code = 'GUEST_WIDER_THAN_HOST'): AlertRecord {
  return conditionAlert('hv1', vm, { code, severity: 'critical', message: `${vm} too wide` }, at);
}

function spool(dir: string, extra: Partial<SpoolOptions> = {}) {
  const drops: DropReason[] = [];
  const s = new Spool({
    dir,
    maxEntries: 100,
    clock: clockAt(T0),
    latestOnly: (sink) => sink === AM,
    onDrop: (_e, r) => drops.push(r),
    ...extra,
  });
  return { s, drops };
}

function fileLines(dir: string): string[] {
  return readFileSync(join(dir, SPOOL_FILE), 'utf8').split('\n').filter(Boolean);
}

test('a state change is on disk after flush, with private modes', async (t) => {
  const dir = join(tempDir(), 'spool');
  const { s } = spool(dir);
  await s.open();
  s.append(crit('web1'), true, [AM, HOOK], 'id-1');
  t.deepEqual(s.pendingFor(AM, 10), [], 'not deliverable before it is durable');
  await s.flush();
  t.deepEqual(
    s.pendingFor(AM, 10).map((e) => e.id),
    ['id-1'],
  );
  const lines = fileLines(dir);
  t.is(lines.length, 1);
  t.like(parseOp(lines[0]), { op: 'put', seq: 1, id: 'id-1', pending: [AM, HOOK] });
  t.is(statSync(dir).mode & 0o777, 0o700);
  t.is(statSync(join(dir, SPOOL_FILE)).mode & 0o777, 0o600);
  await s.close();
});

test('reopening restores entries, pending sinks and startsAt', async (t) => {
  const dir = tempDir();
  const a = spool(dir).s;
  await a.open();
  a.append(crit('web1'), true, [AM, HOOK], 'id-1');
  a.append(crit('web2', T0 + 1000), true, [AM, HOOK], 'id-2');
  await a.flush();
  a.settle(1, [HOOK]);
  await a.close();

  const b = spool(dir).s;
  const load = await b.open();
  t.deepEqual(load, { entries: 2, skippedLines: 0 });
  t.deepEqual(
    b.entries().map((e) => [e.seq, e.id, e.pending, e.record.startsAt]),
    [
      [1, 'id-1', [AM], T0],
      [2, 'id-2', [AM, HOOK], T0 + 1000],
    ],
  );
  t.deepEqual(
    b.pendingFor(HOOK, 10).map((e) => e.id),
    ['id-2'],
  );
  t.is(b.pendingCount, 2);
  await b.close();
});

test('a delivered firing state stays (the alert still fires); a delivered resolved state goes', async (t) => {
  const dir = tempDir();
  const { s } = spool(dir);
  await s.open();
  const rec = crit('web1');
  s.append(rec, true, [AM], 'f');
  s.settle(1, [AM]);
  t.is(s.size, 1);
  t.is(s.pendingCount, 0);
  s.append(resolveAlert(rec, T0), true, [AM], 'r');
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['r'],
    'the firing state is superseded for the latest-only sink',
  );
  s.settle(2, [AM]);
  t.is(s.size, 0);
  await s.close();
  const again = spool(dir).s;
  t.deepEqual(await again.open(), { entries: 0, skippedLines: 0 });
  await again.close();
});

test('older states wait for webhooks; a restart never takes one of them for the latest', async (t) => {
  const dir = tempDir();
  const a = spool(dir).s;
  await a.open();
  const rec = crit('web1');
  a.append(rec, true, [AM, HOOK], 'fire');
  a.append(resolveAlert(rec, T0), true, [AM, HOOK], 'resolve');
  await a.flush();
  t.deepEqual(
    a.entries().map((e) => [e.id, e.pending]),
    [
      ['fire', [HOOK]],
      ['resolve', [AM, HOOK]],
    ],
  );
  a.settle(2, [AM, HOOK]);
  t.deepEqual(
    a.entries().map((e) => e.id),
    ['fire', 'resolve'],
    'the resolved state is kept while an older one waits',
  );
  await a.close();

  const b = spool(dir).s;
  await b.open();
  t.deepEqual(
    b.latestRecords().map((r) => r.endsAt),
    [T0],
  );
  b.settle(1, [HOOK]);
  t.is(b.size, 0);
  await b.close();
});

test('a torn last line from a crash is skipped and the log rewritten', async (t) => {
  const dir = tempDir();
  const a = spool(dir).s;
  await a.open();
  a.append(crit('web1'), true, [AM], 'ok');
  await a.close();
  appendFileSync(join(dir, SPOOL_FILE), '{"op":"put","seq":2,"id":"x","notify":tr');
  const b = spool(dir).s;
  t.deepEqual(await b.open(), { entries: 1, skippedLines: 1 });
  t.deepEqual(
    fileLines(dir).map((l) => parseOp(l)?.op),
    ['put'],
  );
  await b.close();
});

test('lines that are not ours are rejected field by field', (t) => {
  t.is(parseOp('not json'), null);
  t.is(parseOp('{"op":"put","seq":1}'), null);
  t.is(parseOp('{"op":"del","seq":0}'), null);
  t.is(parseOp('{"op":"settle","seq":3,"sinks":[1]}'), null);
  t.deepEqual(parseOp('{"op":"del","seq":3}'), { op: 'del', seq: 3 });
});

test('the bound drops superseded states first, then ended alerts, then the oldest firing', async (t) => {
  const dir = tempDir();
  const { s, drops } = spool(dir, { maxEntries: 3 });
  await s.open();
  const w1 = crit('web1');
  s.append(w1, true, [HOOK], 'w1-fire');
  s.append(resolveAlert(w1, T0), true, [HOOK], 'w1-resolve');
  s.append(crit('web2'), true, [HOOK], 'w2-fire');
  t.deepEqual(drops, []);
  s.append(crit('web3'), true, [HOOK], 'w3-fire');
  t.deepEqual(drops, ['superseded']);
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['w1-resolve', 'w2-fire', 'w3-fire'],
  );
  s.append(crit('web4'), true, [HOOK], 'w4-fire');
  t.deepEqual(drops, ['superseded', 'ended']);
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['w2-fire', 'w3-fire', 'w4-fire'],
  );
  s.append(crit('web5'), true, [HOOK], 'w5-fire');
  t.deepEqual(drops, ['superseded', 'ended', 'firing']);
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['w3-fire', 'w4-fire', 'w5-fire'],
  );
  await s.close();
  const again = spool(dir, { maxEntries: 3 }).s;
  t.deepEqual(await again.open(), { entries: 3, skippedLines: 0 });
  await again.close();
});

test('a refusal whose hold has passed counts as ended for the bound', async (t) => {
  const dir = tempDir();
  const clock = clockAt(T0);
  const { s, drops } = spool(dir, { maxEntries: 2, clock });
  await s.open();
  s.append(crit('web1'), true, [HOOK], 'cond');
  s.append(
    refusalAlert({ host: 'hv1', vm: 'web1', code: 'REFUSED_X', message: 'm', command: 'c', time: T0, holdMs: 60_000 }),
    true,
    [HOOK],
    'refusal',
  );
  clock.t = T0 + 60_000;
  s.append(crit('web2'), true, [HOOK], 'cond2');
  t.deepEqual(drops, ['ended']);
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['cond', 'cond2'],
  );
  await s.close();
});

test('a smaller bound applies at open', async (t) => {
  const dir = tempDir();
  const a = spool(dir).s;
  await a.open();
  for (let i = 0; i < 10; i++) a.append(crit(`vm${i}`), true, [HOOK], `id${i}`);
  await a.close();
  const { s, drops } = spool(dir, { maxEntries: 4 });
  t.deepEqual(await s.open(), { entries: 4, skippedLines: 0 });
  t.is(drops.length, 6);
  t.deepEqual(
    s.entries().map((e) => e.id),
    ['id6', 'id7', 'id8', 'id9'],
  );
  t.is(fileLines(dir).length, 4);
  await s.close();
});

test('the log is compacted: it stays bounded however many changes pass through', async (t) => {
  const dir = tempDir();
  const { s } = spool(dir, { maxEntries: 10 });
  await s.open();
  let max = 0;
  for (let i = 0; i < 3000; i++) {
    const e = s.append(crit(`vm${i % 5}`, T0 + i, i % 2 ? 'A' : 'B'), true, [HOOK], `id${i}`);
    s.settle(e.seq, [HOOK]);
    if (i % 100 === 0) {
      await s.flush();
      max = Math.max(max, fileLines(dir).length);
    }
  }
  await s.close();
  t.true(max <= 2 * 10 + 1024 + 300, `log lines peaked at ${max}`);
  const again = spool(dir, { maxEntries: 10 }).s;
  const load = await again.open();
  t.is(load.entries, 10, 'the latest firing state of each of the 10 alert keys');
  t.is(again.pendingCount, 0);
  await again.close();
});

test('sinks no longer configured are forgotten', async (t) => {
  const dir = tempDir();
  const { s } = spool(dir);
  await s.open();
  s.append(resolveAlert(crit('web1'), T0), true, [AM, HOOK], 'r');
  t.deepEqual(s.retainSinks(new Set([AM])), [HOOK]);
  t.deepEqual(
    s.entries().map((e) => e.pending),
    [[AM]],
  );
  t.deepEqual(s.retainSinks(new Set()), [AM]);
  t.is(s.size, 0);
  await s.close();
});

test('a spool directory that cannot be created is a SpoolError', async (t) => {
  const dir = tempDir();
  writeFileSync(join(dir, 'file'), '');
  const { s } = spool(join(dir, 'file', 'spool'));
  await t.throwsAsync(s.open(), { instanceOf: Error, message: /cannot create spool directory/ });
  const err = await s.open().catch((e: { code?: string }) => e);
  t.is((err as { code?: string }).code, 'ALERT_SPOOL_IO');
});
