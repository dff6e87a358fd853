import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { changedKeys, checkConfigFile, jsonErrorPlace, lineColumn } from '../../agent/core/config-check';

const dir = mkdtempSync(join(tmpdir(), 'physbits-config-check-'));
function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

test('lineColumn counts lines and columns from 1', (t) => {
  t.deepEqual(lineColumn('ab\ncd\n', 0), { line: 1, column: 1 });
  t.deepEqual(lineColumn('ab\ncd\n', 4), { line: 2, column: 2 });
  t.deepEqual(lineColumn('ab\ncd\n', 99), { line: 3, column: 1 });
});

test("jsonErrorPlace reads V8's position, its line and column, or the end", (t) => {
  t.deepEqual(jsonErrorPlace('{\n  x\n}', 'Unexpected token x in JSON at position 4'), { line: 2, column: 3 });
  t.deepEqual(jsonErrorPlace('{}', "Expected ',' at position 1 (line 7 column 9)"), { line: 7, column: 9 });
  t.deepEqual(jsonErrorPlace('{\n"a":', 'Unexpected end of JSON input'), { line: 2, column: 5 });
});

test('a JSON error is one line with the file, its line and its column, as this Node places it', (t) => {
  const path = file('syntax.json', '{\n  "host": {\n    "physBits": 46,\n  }\n}\n');
  t.deepEqual(checkConfigFile(path), [
    `${path}:4:3: not valid JSON: ${jsonMessage('{\n  "host": {\n    "physBits": 46,\n  }\n}\n')}`,
  ]);
});

function jsonMessage(text: string): string {
  try {
    JSON.parse(text);
  } catch (err) {
    return (err as Error).message.replace(/\s*(?:in JSON )?at position \d+(?: \(line \d+ column \d+\))?$/, '').trim();
  }
  throw new Error('valid JSON');
}

test('every schema problem at once, each naming its key', (t) => {
  const path = file('schema.json', JSON.stringify({ host: { physBits: 99 }, nope: 1, api: { listen: 'x' } }));
  const problems = checkConfigFile(path);
  t.true(
    problems.every((p) => p.startsWith(`${path}: `)),
    problems.join('\n'),
  );
  t.true(problems.some((p) => /host\.physBits: Too big/.test(p)));
  t.true(problems.some((p) => /nope: unknown key/.test(p)));
  t.true(problems.some((p) => /api\.listen: /.test(p)));
  t.true(problems.length >= 3);
});

test('a valid file has no problems; a missing named file is one', (t) => {
  t.deepEqual(checkConfigFile(file('good.json', '{"host": {"physBits": 46}}')), []);
  t.deepEqual(checkConfigFile(join(dir, 'absent.json')), [`${join(dir, 'absent.json')}: cannot read: ENOENT`]);
});

test('physbitsd --check-config: exit 0 and one line for a valid file, 78 and every problem on stderr, nothing started', (t) => {
  const physbitsd = join(__dirname, '..', '..', 'agent', 'bin', 'physbitsd.js');
  const good = file('cli-good.json', '{"host": {"physBits": 46}}');
  const ok = spawnSync(process.execPath, [physbitsd, '--check-config', '--config', good], { encoding: 'utf8' });
  t.is(ok.status, 0, ok.stderr);
  t.is(ok.stdout, `physbitsd: config ${good}: ok\n`);
  const bad = file('cli-bad.json', JSON.stringify({ host: { physBits: 99 }, nope: 1 }));
  const refused = spawnSync(process.execPath, [physbitsd, '--check-config', '--config', bad], { encoding: 'utf8' });
  t.is(refused.status, 78);
  t.is(refused.stdout, '');
  t.deepEqual(refused.stderr.trim().split('\n').sort(), [
    `physbitsd: config: ${bad}: host.physBits: Too big: expected number to be <=64`,
    `physbitsd: config: ${bad}: nope: unknown key`,
  ]);
});

test('changedKeys: dotted paths to the leaves that differ; arrays compared whole; keys added or removed', (t) => {
  t.deepEqual(changedKeys({ a: { b: 1, c: 2 }, p: [1] }, { a: { b: 1, c: 3 }, p: [1] }), ['a.c']);
  t.deepEqual(changedKeys({ p: [1, 2] }, { p: [1] }), ['p']);
  t.deepEqual(changedKeys({ a: 1 }, { a: 1, b: { c: 1 } }), ['b']);
  t.deepEqual(changedKeys({ a: 1 }, { a: 1 }), []);
});
