import test from 'ava';
import fc from 'fast-check';
import { LineTooLongError, ProtocolError } from '../../qmp/errors';
import { decodeLine, encodeLine, encodeMessage, LineFramer } from '../../qmp/framing';
import { scanJson, topLevelIdText, withKnownTopLevelId, withTopLevelId } from '../../qmp/json-text';
import { checkCommand, classifyMessage } from '../../qmp/messages';

/** Feeds `bytes` cut at `cuts` and returns every decoded value. */
function frameAll(bytes: Buffer, cuts: number[], max = 1024 * 1024): unknown[] {
  const framer = new LineFramer(max);
  const out: unknown[] = [];
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    framer.push(bytes.subarray(prev, p), (line) => {
      const d = decodeLine(line);
      if (d) out.push(d.value);
    });
    prev = p;
  }
  return out;
}

const roundTrip = (v: unknown): unknown => JSON.parse(JSON.stringify(v));

test('property: any chunking of a message stream yields the same messages', (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.jsonValue({ stringUnit: 'binary', maxDepth: 4 }), { minLength: 0, maxLength: 8 }),
      fc.array(fc.nat(), { maxLength: 40 }),
      fc.boolean(),
      (values, cuts, crlf) => {
        const text = values.map((v) => encodeMessage(v).toString('utf8')).join('');
        const bytes = Buffer.from(crlf ? text.replace(/\n/g, '\r\n') : text, 'utf8');
        t.deepEqual(frameAll(bytes, cuts), values.map(roundTrip));
      },
    ),
    { numRuns: 300 },
  );
});

test('a multibyte character split at every byte boundary decodes whole', (t) => {
  const msg = { s: 'a€b😀c\u2028' };
  const bytes = encodeMessage(msg);
  for (let i = 0; i <= bytes.length; i++) {
    for (let j = i; j <= bytes.length; j++) {
      t.deepEqual(frameAll(bytes, [i, j]), [msg]);
    }
  }
});

test('CRLF is tolerated, blank lines are skipped, a final unterminated line waits', (t) => {
  const framer = new LineFramer(100);
  const lines: string[] = [];
  framer.push(Buffer.from('{"a":1}\r\n\r\n  \n{"b":2}\n{"c"'), (l) => void lines.push(l.toString()));
  t.deepEqual(lines, ['{"a":1}', '', '  ', '{"b":2}']);
  t.deepEqual(
    lines.map((l) => decodeLine(Buffer.from(l))?.value ?? null),
    [{ a: 1 }, null, null, { b: 2 }],
  );
  t.is(framer.buffered, 4);
  framer.push(Buffer.from(':3}\n'), (l) => void lines.push(l.toString()));
  t.is(lines[4], '{"c":3}');
  t.is(framer.buffered, 0);
});

test('line bound: exactly the limit passes, one byte more fails, and the stream stays failed', (t) => {
  const ok = new LineFramer(10);
  const got: number[] = [];
  ok.push(Buffer.from('x'.repeat(10) + '\n' + 'y'.repeat(10) + '\r\n'), (l) => void got.push(l.length));
  t.deepEqual(got, [10, 10]);

  const bad = new LineFramer(10);
  const seen: string[] = [];
  const err = t.throws(
    () => bad.push(Buffer.from('{"a":1}\n' + 'z'.repeat(11) + '\n{"b":2}\n'), (l) => void seen.push(l.toString())),
    { instanceOf: LineTooLongError },
  );
  t.is(err?.code, 'QMP_LINE_TOO_LONG');
  t.deepEqual(seen, ['{"a":1}'], 'lines before the oversized one are delivered, none after it');
  t.throws(() => bad.push(Buffer.from('{}\n'), () => undefined), { instanceOf: LineTooLongError });
});

test('line bound: an unterminated line fails as soon as it passes the limit, without waiting for its end', (t) => {
  const framer = new LineFramer(8);
  framer.push(Buffer.from('123456789'), () => t.fail()); // 9 bytes: could still be 8 + '\r'
  t.is(framer.buffered, 9);
  t.throws(() => framer.push(Buffer.from('0'), () => t.fail()), { instanceOf: LineTooLongError });
  t.is(framer.buffered, 0, 'nothing is kept after the failure');
});

test('onLine returning false stops the chunk', (t) => {
  const framer = new LineFramer(100);
  const seen: string[] = [];
  framer.push(Buffer.from('a\nb\nc\n'), (l) => {
    seen.push(l.toString());
    return l.toString() !== 'b' ? undefined : false;
  });
  t.deepEqual(seen, ['a', 'b']);
});

test('invalid UTF-8 and invalid JSON are ProtocolError', (t) => {
  for (const bytes of [[0xff], [0x22, 0xc0, 0xaf, 0x22], [0x22, 0xed, 0xa0, 0x80, 0x22], [0x22, 0xe2, 0x82, 0x22]]) {
    const err = t.throws(() => decodeLine(Buffer.from(bytes)), { instanceOf: ProtocolError });
    t.is(err?.code, 'QMP_PROTOCOL');
    t.regex(err!.message, /invalid UTF-8/);
  }
  for (const text of ['garbage', '{"a":', '{"a":1}{"b":2}', "{'a':1}"]) {
    const err = t.throws(() => decodeLine(Buffer.from(text)), { instanceOf: ProtocolError });
    t.regex(err!.message, /^invalid JSON/);
  }
});

test('encodeMessage: compact JSON and one newline; no raw newline can escape into a line', (t) => {
  t.is(
    encodeMessage({ execute: 'x', arguments: { s: 'a\nb' } }).toString(),
    '{"execute":"x","arguments":{"s":"a\\nb"}}\n',
  );
  t.throws(() => encodeMessage(undefined), { instanceOf: TypeError });
  t.throws(() => encodeLine('{"a":1}\n{"b":2}'), { instanceOf: ProtocolError });
});

test('scanJson: duplicate keys at any depth, with escaped spellings; nesting depth', (t) => {
  t.is(scanJson('{"execute":"a","execute":"b"}').duplicateKey, 'execute');
  t.is(scanJson('{"a":{"x":1,"y":[{"k":1,"k":2}]}}').duplicateKey, 'k');
  t.is(scanJson('{"id":1,"\\u0069d":2}').duplicateKey, 'id');
  t.is(scanJson('{"a":{"k":1},"b":{"k":1}}').duplicateKey, null, 'the same key in sibling objects is fine');
  t.is(scanJson('{"a":"{\\"a\\":1,\\"a\\":2}"}').duplicateKey, null, 'keys inside strings do not count');
  t.is(scanJson('[[[[1]]]]').maxDepth, 4);
  t.is(scanJson('['.repeat(5000) + ']'.repeat(5000)).maxDepth, 5000);
  t.is(scanJson('"x"').members, null);
});

test('topLevelIdText: the id exactly as written, never a nested one', (t) => {
  t.is(topLevelIdText('{"execute":"q","id":12345678901234567890}'), '12345678901234567890');
  t.is(topLevelIdText('{"id" : "a\\"}b" , "execute":"q"}'), '"a\\"}b"');
  t.is(topLevelIdText('{"execute":"q","arguments":{"id":5},"id":{"k":[1,{"id":2}]} }'), '{"k":[1,{"id":2}]}');
  t.is(topLevelIdText('{"execute":"q","arguments":{"id":5}}'), undefined);
  t.is(topLevelIdText('{"id":null}'), 'null');
  t.is(topLevelIdText('{"id":-1.5e3}'), '-1.5e3');
});

test('withTopLevelId: replace, remove (first, middle, last, only) and insert, other bytes untouched', (t) => {
  const reply = '{"return": {"big": 18446744073709551615, "id": "inner"}, "id": "__physbits#00001"}';
  t.is(withTopLevelId(reply, '7'), '{"return": {"big": 18446744073709551615, "id": "inner"}, "id": 7}');
  t.is(withTopLevelId(reply, undefined), '{"return": {"big": 18446744073709551615, "id": "inner"}}');
  t.is(
    withTopLevelId('{"id": 1, "error": {"class": "X", "desc": "d"}}', undefined),
    '{"error": {"class": "X", "desc": "d"}}',
  );
  t.is(withTopLevelId('{"a": 1, "id": 2, "b": 3}', undefined), '{"a": 1, "b": 3}');
  t.is(withTopLevelId('{"id": 2}', undefined), '{}');
  t.is(withTopLevelId('{"return": {}}', '"x"'), '{"return": {}, "id": "x"}');
  t.is(withTopLevelId('{}', '1'), '{"id": 1}');
  t.is(withTopLevelId('{"return": {}}', undefined), '{"return": {}}');
});

test('property: withTopLevelId agrees with JSON.parse on any object, any id, wherever the old id sits', (t) => {
  const entries = fc.uniqueArray(
    fc.tuple(
      fc.string().filter((k) => k !== 'id' && k !== '__proto__'),
      fc.jsonValue({ maxDepth: 3 }),
    ),
    { selector: (e) => e[0], maxLength: 5 },
  );
  const maybeId = fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined });
  fc.assert(
    fc.property(entries, maybeId, fc.nat(), maybeId, fc.boolean(), (list, oldId, at, newId, spaced) => {
      const pairs = list.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
      if (oldId !== undefined) pairs.splice(at % (pairs.length + 1), 0, `"id":${JSON.stringify(oldId)}`);
      const text = spaced ? `{ ${pairs.join(' , ')} }` : `{${pairs.join(',')}}`;
      const expected: Record<string, unknown> = Object.fromEntries(list.map(([k, v]) => [k, roundTrip(v)]));
      if (newId !== undefined) expected.id = roundTrip(newId);
      const out = withTopLevelId(text, newId === undefined ? undefined : JSON.stringify(newId));
      t.deepEqual(JSON.parse(out), expected);
      if (oldId !== undefined && newId !== undefined) t.is(topLevelIdText(out), JSON.stringify(newId));
    }),
    { numRuns: 500 },
  );
});

test('withKnownTopLevelId: the known id replaced or removed as withTopLevelId does, nested look-alikes untouched', (t) => {
  const id = '__physbits#00042';
  const cases = [
    '{"return": {"status": "running"}, "id": "__physbits#00042"}',
    '{"id": "__physbits#00042", "return": {}}',
    '{ "return" : 1 , "id" : "__physbits#00042" , "x" : [ ] }',
    '{"id":"__physbits#00042"}',
    // A nested member with the same id: not unique, so the text is scanned.
    '{"return": {"id": "__physbits#00042"}, "id": "__physbits#00042"}',
    // Escapes anywhere: scanned.
    '{"return": "a\\"b", "id": "__physbits#00042"}',
    '{"return": "\\"id\\": \\"__physbits#00042\\"", "id": "__physbits#00042"}',
  ];
  for (const text of cases) {
    t.is(JSON.parse(text).id, id, text);
    for (const idText of ['7', '"client"', '{"a": [1]}', undefined])
      t.is(withKnownTopLevelId(text, id, idText), withTopLevelId(text, idText), `${text} with ${idText}`);
  }
  t.is(withKnownTopLevelId(cases[4], id, '1'), '{"return": {"id": "__physbits#00042"}, "id": 1}');
});

test('property: withKnownTopLevelId equals withTopLevelId on any object holding the known id', (t) => {
  const entries = fc.uniqueArray(
    fc.tuple(
      fc.string().filter((k) => k !== 'id' && k !== '__proto__'),
      fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant({ id: '__physbits#00007' }), fc.constant('__physbits#00007')),
    ),
    { selector: (e) => e[0], maxLength: 5 },
  );
  const newId = fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined });
  fc.assert(
    fc.property(entries, fc.nat(), newId, fc.constantFrom('', ' ', '\t', ' \r\n '), (list, at, id, space) => {
      const pairs = list.map(([k, v]) => `${JSON.stringify(k)}${space}:${space}${JSON.stringify(v)}`);
      pairs.splice(at % (pairs.length + 1), 0, `"id"${space}:${space}"__physbits#00007"`);
      const text = `{${space}${pairs.join(`${space},${space}`)}${space}}`;
      const idText = id === undefined ? undefined : JSON.stringify(id);
      t.is(withKnownTopLevelId(text, '__physbits#00007', idText), withTopLevelId(text, idText));
    }),
    { numRuns: 1000 },
  );
});

test('classifyMessage sorts greetings, replies, events and commands', (t) => {
  const greeting = {
    QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'p' }, capabilities: ['oob'] },
  };
  t.is(classifyMessage(greeting).kind, 'greeting');
  t.deepEqual(classifyMessage({ return: {}, id: 1 }), {
    kind: 'reply',
    reply: { return: {}, id: 1 },
    hasId: true,
    id: 1,
  });
  t.deepEqual(classifyMessage({ error: { class: 'GenericError', desc: 'x' } }), {
    kind: 'reply',
    reply: { error: { class: 'GenericError', desc: 'x' } },
    hasId: false,
    id: undefined,
  });
  t.is(classifyMessage({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } }).kind, 'event');
  t.like(classifyMessage({ 'exec-oob': 'migrate-pause', id: 'a' }), {
    kind: 'command',
    name: 'migrate-pause',
    oob: true,
    hasId: true,
    id: 'a',
  });
  const invalid = [
    [1],
    null,
    { QMP: { version: {}, capabilities: [] } },
    { event: 'X' },
    { event: 'X', timestamp: { seconds: 1, microseconds: 1 }, data: [] },
    { return: 1, error: { class: 'a', desc: 'b' } },
    { error: 'boom' },
    { execute: 5 },
    { hello: 1 },
  ];
  for (const m of invalid) t.is(classifyMessage(m).kind, 'invalid', JSON.stringify(m));
});

test("checkCommand gives QEMU's qmp-dispatch texts", (t) => {
  const cases: Array<[unknown, boolean, string | null]> = [
    [[1], false, 'QMP input must be a JSON object'],
    [{ execute: 'q', foo: 1 }, false, "QMP input member 'foo' is unexpected"],
    [{ 'exec-oob': 'q' }, false, "QMP input member 'exec-oob' is unexpected"],
    [{ execute: 1 }, false, "QMP input member 'execute' must be a string"],
    [{ execute: 'q', arguments: [] }, false, "QMP input member 'arguments' must be an object"],
    [{ id: 1 }, false, "QMP input lacks member 'execute'"],
    [{ execute: 'a', 'exec-oob': 'b' }, true, "QMP input member 'exec-oob' clashes with 'execute'"],
    [{ execute: 'q', arguments: {}, id: [1] }, false, null],
    [{ 'exec-oob': 'q' }, true, null],
  ];
  for (const [msg, oob, desc] of cases) {
    const r = checkCommand(msg, oob);
    if (desc === null) t.true(r.ok, JSON.stringify(msg));
    else t.like(r, { ok: false, desc }, JSON.stringify(msg));
  }
  t.like(checkCommand({ id: { a: 1 }, execute: 'q', x: 1 }, false), { ok: false, hasId: true, id: { a: 1 } });
  t.like(checkCommand({ 'exec-oob': 'q', id: 2 }, true), { ok: true, name: 'q', oob: true, hasId: true, id: 2 });
});
