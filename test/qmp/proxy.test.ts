import test, { type ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { QmpClient } from '../../qmp/client';
import { ClosedError, SlowPeerError, type QmpError } from '../../qmp/errors';
import { QmpProxy, type Interceptor, type ProxyCommand, type QmpProxyOptions } from '../../qmp/proxy';
import { startFakeQmp } from '../helpers/fake-qmp';
import { startGuest, type Guest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

/** A raw line client, to see the exact bytes a downstream client receives. */
class LineClient {
  readonly lines: string[] = [];
  closed = false;
  private buf = '';
  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, i).replace(/\r$/, ''));
        this.buf = this.buf.slice(i + 1);
      }
    });
    socket.on('close', () => (this.closed = true));
  }
  static connect(path: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path }, () => resolve(new LineClient(s)));
      s.once('error', reject);
    });
  }
  send(text: string): void {
    this.socket.write(text + '\n');
  }
  /** The first line (removed from the buffer) that satisfies `match`. */
  async take(match: (line: string) => boolean, timeoutMs = 15000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.lines.findIndex(match);
      if (i >= 0) return this.lines.splice(i, 1)[0];
      if (this.closed || Date.now() > deadline) throw new Error(`no matching line; have ${JSON.stringify(this.lines)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  reply(idText: string | null): Promise<string> {
    return this.take((l) => {
      const m = JSON.parse(l);
      if (!('return' in m || 'error' in m)) return false;
      return idText === null ? !('id' in m) : l.endsWith(`"id": ${idText}}`) || l.endsWith(`"id":${idText}}`);
    });
  }
  event(name: string): Promise<string> {
    return this.take((l) => JSON.parse(l).event === name);
  }
  close(): void {
    this.socket.destroy();
  }
}

interface Proxied {
  guest: Guest;
  upstream: QmpClient;
  proxy: QmpProxy;
  path: string;
  seen: Array<{ cmd: ProxyCommand; client: number }>;
}

async function proxied(
  t: ExecutionContext,
  opts: Partial<QmpProxyOptions> = {},
  interceptor?: Interceptor,
): Promise<Proxied> {
  const guest = await startGuest({ cpu: 'phys-bits=43' });
  t.teardown(() => guest.kill());
  const upstream = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
  t.teardown(() => upstream.close());
  const seen: Proxied['seen'] = [];
  const proxy = new QmpProxy({
    upstream,
    interceptor: (cmd, client) => {
      seen.push({ cmd, client: client.id });
      return interceptor ? interceptor(cmd, client) : { action: 'forward' };
    },
    ...opts,
  });
  t.teardown(() => proxy.close());
  const path = join(tempDir(), 'vm.qmp');
  await proxy.listen(path, { mode: 0o600 });
  return { guest, upstream, proxy, path, seen };
}

async function negotiated(path: string): Promise<LineClient> {
  const c = await LineClient.connect(path);
  await c.take((l) => 'QMP' in JSON.parse(l));
  c.send('{"execute":"qmp_capabilities","id":"caps"}');
  await c.reply('"caps"');
  return c;
}

test('two clients on one proxied QEMU: own greeting, own ids of every JSON type, both see RESUME', async (t) => {
  const p = await proxied(t);
  const a = await LineClient.connect(p.path);
  const b = await LineClient.connect(p.path);
  t.teardown(() => (a.close(), b.close()));
  const greeting = JSON.parse(await a.take((l) => 'QMP' in JSON.parse(l)));
  t.deepEqual(greeting.QMP.version, p.upstream.greeting.QMP.version);
  t.deepEqual(greeting.QMP.capabilities, [], 'oob is offered only when the upstream negotiated it');
  await b.take((l) => 'QMP' in JSON.parse(l));

  // Each negotiates on its own; QEMU never sees a second qmp_capabilities (it would refuse it).
  a.send('{"execute":"qmp_capabilities","id":1}');
  b.send('{"execute":"qmp_capabilities"}');
  t.is(await a.reply('1'), '{"return":{},"id":1}');
  t.is(await b.reply(null), '{"return":{}}');

  const ids = ['"s-1"', '7', '{"k": [1, "x"]}', '12345678901234567890', '-0.5'];
  for (const id of ids) {
    a.send(`{"execute":"query-status","id":${id}}`);
    b.send(
      `{"execute":"qom-get","arguments":{"path":"/machine/unattached/device[0]","property":"phys-bits"},"id":${id}}`,
    );
  }
  b.send('{"execute":"query-name"}');
  for (const id of ids) {
    t.is(await a.reply(id), `{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": ${id}}`);
    t.is(await b.reply(id), `{"return": 43, "id": ${id}}`);
  }
  t.is(await b.reply(null), '{"return": {}}', 'an id-less command gets an id-less reply');

  a.send('{"execute":"cont","id":"go"}');
  t.is(await a.reply('"go"'), '{"return": {}, "id": "go"}');
  const evA = JSON.parse(await a.event('RESUME'));
  const evB = JSON.parse(await b.event('RESUME'));
  t.deepEqual(evA, evB);
  t.is(typeof evA.timestamp.seconds, 'number');
  t.like(p.proxy.counters, { clients: 2, accepted: 2, refused: 0, forwarded: ids.length * 2 + 2 });
  t.deepEqual(
    p.seen.filter((s) => s.cmd.execute === 'cont'),
    [{ cmd: { execute: 'cont', arguments: undefined, oob: false }, client: 1 }],
  );
});

test('a refused command gets a GenericError with the client id and never reaches QEMU', async (t) => {
  const refusals: unknown[] = [];
  const p = await proxied(t, {}, (cmd) =>
    cmd.execute === 'cont'
      ? { action: 'reply-error', errorClass: 'GenericError', desc: 'refused by physbits guard: test rule' }
      : { action: 'forward' },
  );
  p.proxy.on('refused', (info) => void refusals.push(info));
  let events = 0;
  p.upstream.on('event', () => void events++);
  const c = await negotiated(p.path);
  t.teardown(() => c.close());
  c.send('{"execute":"cont","id":{"n":1}}');
  t.is(
    await c.reply('{"n":1}'),
    '{"error":{"class":"GenericError","desc":"refused by physbits guard: test rule"},"id":{"n":1}}',
  );
  c.send('{"execute":"query-status","id":2}');
  t.is(
    await c.reply('2'),
    '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": 2}',
    'the guest never resumed',
  );
  t.is(events, 0, 'no RESUME: cont was not forwarded');
  t.deepEqual(refusals, [
    { client: 1, command: 'cont', errorClass: 'GenericError', desc: 'refused by physbits guard: test rule' },
  ]);

  c.send('{"execute":"getfd","arguments":{"fdname":"x"},"id":3}');
  const fd = JSON.parse(await c.reply('3'));
  t.is(fd.error.class, 'GenericError');
  t.true(fd.error.desc.includes(p.guest.socket), 'names the upstream socket');
  t.like(p.proxy.counters, { refused: 2, forwarded: 1 });
});

test('an interceptor that throws or answers nonsense refuses (fail closed)', async (t) => {
  let n = 0;
  const p = await proxied(t, {}, () => {
    n++;
    if (n === 1) throw new Error('peer lookup failed');
    return { action: 'maybe' } as never;
  });
  const c = await negotiated(p.path);
  t.teardown(() => c.close());
  c.send('{"execute":"cont","id":1}');
  t.is(
    await c.reply('1'),
    '{"error":{"class":"GenericError","desc":"cont refused: its check failed: peer lookup failed"},"id":1}',
  );
  c.send('{"execute":"cont","id":2}');
  t.is(await c.reply('2'), '{"error":{"class":"GenericError","desc":"cont refused"},"id":2}');
  t.like(p.proxy.counters, { refused: 2, forwarded: 0 });
});

test('a client that never reads is dropped while a fast one keeps working', async (t) => {
  const p = await proxied(t, { clientQueueBytes: 64 * 1024 });
  const dropped = new Promise<{ id: number; error: QmpError }>((r) => p.proxy.once('client-dropped', r));
  const slow = await negotiated(p.path);
  t.teardown(() => slow.close());
  const fast = await QmpClient.connect(p.path, { timeoutMs: 20000 });
  t.teardown(() => fast.close());
  slow.socket.pause();
  // query-qmp-schema answers about 200 KB on QEMU 7.2: a few of them fill the socket buffers.
  for (let i = 0; i < 40; i++) slow.send(`{"execute":"query-qmp-schema","id":${i}}`);
  let fastOk = 0;
  let drop: { id: number; error: QmpError } | null = null;
  void dropped.then((d) => (drop = d));
  const deadline = Date.now() + 60000;
  while (!drop && Date.now() < deadline) {
    t.deepEqual(await fast.execute('query-name'), {});
    fastOk++;
  }
  t.truthy(drop, 'the slow client was dropped');
  t.is(drop!.id, 1);
  t.true(drop!.error instanceof SlowPeerError);
  t.true(fastOk > 0);
  t.is(
    await fast.execute('qom-get', { path: '/machine/unattached/device[0]', property: 'phys-bits' }),
    43,
    'the fast client still works',
  );
  t.like(p.proxy.counters, { clients: 1, dropped: 1 });
});

test('upstream killed: every client is disconnected, the proxy reports it and removes its socket', async (t) => {
  const p = await proxied(t);
  const a = await QmpClient.connect(p.path, { timeoutMs: 20000 });
  const b = await negotiated(p.path);
  t.teardown(() => b.close());
  const aClosed = new Promise<QmpError | undefined>((r) => a.once('close', r));
  const upstreamClosed = new Promise<QmpError | undefined>((r) => p.proxy.once('upstream-closed', r));
  const proxyClosed = new Promise<void>((r) => p.proxy.once('closed', r));
  await p.guest.kill();
  const why = await upstreamClosed;
  t.true(why instanceof ClosedError);
  t.true((await aClosed) instanceof ClosedError);
  await proxyClosed;
  for (let i = 0; i < 100 && !b.closed; i++) await new Promise((r) => setTimeout(r, 20));
  t.true(b.closed);
  t.true(p.proxy.closed);
  t.false(existsSync(p.path));
  t.is(p.proxy.counters.clients, 0);
});

test('maxClients turns further clients away; a client that leaves frees its place', async (t) => {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  const upstream = await QmpClient.connect(fake.socket);
  t.teardown(() => upstream.close());
  const proxy = new QmpProxy({ upstream, maxClients: 1 });
  t.teardown(() => proxy.close());
  const path = join(tempDir(), 'p.qmp');
  await proxy.listen(path, { mode: 0o600 });
  const rejected: string[] = [];
  proxy.on('client-rejected', (r) => void rejected.push(r.reason));
  const first = await QmpClient.connect(path);
  await t.throwsAsync(QmpClient.connect(path), { instanceOf: ClosedError });
  t.is(rejected.length, 1);
  await first.close();
  for (let i = 0; i < 100 && proxy.counters.clients > 0; i++) await new Promise((r) => setTimeout(r, 10));
  const second = await QmpClient.connect(path);
  t.deepEqual(await second.execute('query-status'), { status: 'prelaunch', singlestep: false, running: false });
  await second.close();
  t.like(proxy.counters, { accepted: 2, rejected: 1 });
});

test('a client that never negotiates is dropped after negotiationTimeoutMs, freeing its place', async (t) => {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  const upstream = await QmpClient.connect(fake.socket);
  t.teardown(() => upstream.close());
  const proxy = new QmpProxy({ upstream, maxClients: 1, negotiationTimeoutMs: 1500 });
  t.teardown(() => proxy.close());
  const path = join(tempDir(), 'p.qmp');
  await proxy.listen(path, { mode: 0o600 });
  const dropped: QmpError[] = [];
  const droppedOnce = new Promise((r) => proxy.once('client-dropped', r));
  proxy.on('client-dropped', (d) => void dropped.push(d.error));
  const idle = net.connect(path);
  idle.on('error', () => undefined);
  idle.resume();
  await Promise.all([new Promise((r) => idle.once('close', r)), droppedOnce]);
  t.is(dropped.length, 1);
  t.true(dropped[0] instanceof SlowPeerError);
  t.regex(dropped[0].message, /no capabilities negotiation within 1500 ms/);
  const next = await QmpClient.connect(path);
  t.deepEqual(await next.execute('query-status'), { status: 'prelaunch', singlestep: false, running: false });
  await next.close();
});

test('exec-oob passes through when the upstream negotiated oob; commands keep their order per client', async (t) => {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  fake.script['migrate-pause'] = { return: 'oob-done' };
  fake.script.slow = [{ delayMs: 100 }, { return: 'slow' }];
  const upstream = await QmpClient.connect(fake.socket, { oob: true });
  t.teardown(() => upstream.close());
  const proxy = new QmpProxy({ upstream });
  t.teardown(() => proxy.close());
  const path = join(tempDir(), 'p.qmp');
  await proxy.listen(path, { mode: 0o600 });
  const c = await LineClient.connect(path);
  t.teardown(() => c.close());
  t.deepEqual(JSON.parse(await c.take((l) => 'QMP' in JSON.parse(l))).QMP.capabilities, ['oob']);
  c.send('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":0}');
  await c.reply('0');
  c.send('{"execute":"slow","id":1}');
  c.send('{"execute":"query-name","id":2}');
  c.send('{"exec-oob":"migrate-pause","id":3}');
  await c.reply('2');
  t.deepEqual(
    c.lines.map((l) => JSON.parse(l).id),
    [3, 1],
    'oob overtook; in-band replies kept order',
  );
  t.deepEqual(
    fake.commands.map((x) => [x.name, x.oob]),
    [
      ['slow', false],
      ['migrate-pause', true],
      ['query-name', false],
    ],
  );
});

/** A proxy over the scripted QMP server (oob negotiated), whose interceptor refuses whatever it is asked about. */
async function overFake(t: ExecutionContext, inspects: (name: string) => boolean) {
  const fake = await startFakeQmp();
  t.teardown(() => fake.close());
  const upstream = await QmpClient.connect(fake.socket, { oob: true });
  t.teardown(() => upstream.close());
  const asked: ProxyCommand[] = [];
  const proxy = new QmpProxy({
    upstream,
    inspects,
    interceptor: (cmd) => {
      asked.push(cmd);
      return { action: 'reply-error', errorClass: 'GenericError', desc: `refused: ${cmd.execute}` };
    },
  });
  t.teardown(() => proxy.close());
  const path = join(tempDir(), 'p.qmp');
  await proxy.listen(path, { mode: 0o600 });
  const c = await LineClient.connect(path);
  t.teardown(() => c.close());
  await c.take((l) => 'QMP' in JSON.parse(l));
  c.send('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":"caps"}');
  await c.reply('"caps"');
  // The daemon's own commands on the upstream (none here) would show in fake.commands too.
  const reached = (): string[] => fake.commands.map((x) => x.text);
  return { fake, upstream, proxy, c, asked, reached };
}

test('a command no rule inspects reaches QEMU as the client wrote it, only its id replaced; the reply gets the id back', async (t) => {
  const { fake, proxy, c, asked, reached } = await overFake(t, (name) => name === 'device_add');
  fake.script['qom-set'] = { return: {} };
  const lines = [
    // Odd spacing, a number no double holds, an escape in an argument, an id of each JSON type.
    '{ "arguments" : {"path": "/machine", "property": "x", "value": 18446744073709551615, "s": "a\\u005fb"},  "execute":"qom-set", "id": {"k": [1, "x"]} }',
    '{"execute":"qom-set","arguments":{"path":"/machine","property":"y","value":-0.5e3},"id":12345678901234567890}',
    '{"execute":"query-name"}',
    '   {"id":"s-1","execute":"query-status"}',
  ];
  for (const line of lines) c.send(line);
  t.is(await c.reply('{"k": [1, "x"]}'), '{"return": {}, "id": {"k": [1, "x"]}}');
  t.is(await c.reply('12345678901234567890'), '{"return": {}, "id": 12345678901234567890}');
  t.is(await c.reply(null), '{"return": {}}');
  t.is(await c.reply('"s-1"'), '{"return": {"status":"prelaunch","singlestep":false,"running":false}, "id": "s-1"}');
  const seen = reached();
  t.is(seen.length, 4);
  const ids = fake.commands.map((x) => x.id as string);
  for (const id of ids) t.regex(id, /^__physbits#\d{5}$/);
  t.deepEqual(seen, [
    lines[0].replace('{"k": [1, "x"]}', `"${ids[0]}"`),
    lines[1].replace('12345678901234567890', `"${ids[1]}"`),
    `{"id":"${ids[2]}","execute":"query-name"}`,
    lines[3].replace('"s-1"', `"${ids[3]}"`),
  ]);
  t.deepEqual(asked, [], 'the interceptor was not asked');
  t.like(proxy.counters, { forwarded: 4, refused: 0 });
});

test('no spelling of an inspected command passes without the interceptor', async (t) => {
  const inspected = new Set(['device_add', 'migrate', 'human-monitor-command']);
  const { c, asked, reached, upstream } = await overFake(t, (name) => inspected.has(name));
  // Each of these is, as QEMU reads it, an inspected command (or no command at all). A fast path
  // that looked for `"execute": "<name>"` in the text, or took the first or last "execute", or
  // forwarded what it could not parse, would let the ones marked so reach QEMU unasked.
  const refusedAs: Array<[string, string]> = [
    ['{"execute":"device\\u005fadd","arguments":{"driver":"pc-dimm"},"id":1}', 'device_add'],
    ['{"exec\\u0075te":"device_add","id":2}', 'device_add'],
    ['{ "execute" :\t"device_add" , "id" : 3 }', 'device_add'],
    ['{"arguments":{"execute":"query-status"},"execute":"migrate","id":4}', 'migrate'],
    ['{"id":{"execute":"query-status"},"execute":"migrate"}', 'migrate'],
    ['{"exec-oob":"migrate","id":6}', 'migrate'],
    [
      '{"execute":"human-monitor-command","arguments":{"command-line":"device_add pc-dimm"},"id":7}',
      'human-monitor-command',
    ],
    ['{"execute":"\\u006digrate","id":8}', 'migrate'],
    ['{"execute":"migrate\\ud83d\\ude00","id":9}', 'migrate\u{1f600}'],
  ];
  for (const [line, name] of refusedAs) {
    c.send(line);
    const reply = JSON.parse(await c.take((l) => 'error' in JSON.parse(l)));
    t.is(reply.error.desc, `refused: ${name}`, line);
  }
  t.deepEqual(
    asked.map((a) => a.execute),
    refusedAs.map(([, name]) => name),
  );
  // Not commands QEMU would run: answered here as QEMU answers them, nothing forwarded.
  const answeredHere: Array<[string, string]> = [
    ['{"execute":"query-status","execute":"device_add","id":10}', 'JSON parse error, duplicate key'],
    ['{"execute":"device_add","exec\\u0075te":"query-status","id":11}', 'JSON parse error, duplicate key'],
    ['{"execute":"query-status","id":12}{"execute":"device_add","id":13}', 'JSON parse error, '],
    ['{"execute":"query-status","id":14', 'JSON parse error, '],
    ['{"execute":"query-status","arguments":{"a":"\\ud800"},"id":15}', 'JSON parse error, \\ud800 is not'],
    ['{"execute":"query-status","execute-oob":"device_add","id":16}', "QMP input member 'execute-oob' is unexpected"],
    [
      '{"execute":"query-status","exec-oob":"device_add","id":17}',
      "QMP input member 'exec-oob' clashes with 'execute'",
    ],
  ];
  for (const [line, desc] of answeredHere) {
    c.send(line);
    const reply = JSON.parse(await c.take((l) => 'error' in JSON.parse(l)));
    t.true(String(reply.error.desc).startsWith(desc), `${line} → ${JSON.stringify(reply)}`);
  }
  t.deepEqual(reached(), [], 'nothing reached QEMU');
  t.is(upstream.state, 'running');
});

test('a string QEMU would not parse is answered as QEMU answers it, and the upstream connection stays', async (t) => {
  const p = await proxied(t, { inspects: () => false });
  const c = await negotiated(p.path);
  t.teardown(() => c.close());
  // QEMU answers these with an error that carries no id: sent on, that reply would belong to no
  // command, and the upstream client would drop the connection (every client of the proxy with it).
  const lines: Array<[string, string]> = [
    [
      '{"execute":"qom-get","arguments":{"path":"/machine","property":"\\ud800"},"id":1}',
      '\\ud800 is not a valid Unicode character',
    ],
    [
      '{"execute":"qom-get","arguments":{"path":"/machine","property":"\uFFFE"},"id":2}',
      'invalid UTF-8 sequence in string',
    ],
    ['{"execute":"query-status","id":"\\ufdd0"}', '\\ufdd0 is not a valid Unicode character'],
  ];
  for (const [line, why] of lines) {
    c.send(line);
    t.is(await c.reply(null), JSON.stringify({ error: { class: 'GenericError', desc: `JSON parse error, ${why}` } }));
  }
  c.send('{"execute":"query-status","id":"\\u0000 still here"}');
  t.is(
    await c.reply('"\\u0000 still here"'),
    '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": "\\u0000 still here"}',
  );
  t.is(p.upstream.state, 'running');
  t.like(p.proxy.counters, { clients: 1, forwarded: 1 });
});
