import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { parseAddress } from '../../qmp/address';
import { QmpClient, type QmpLogger } from '../../qmp/client';
import {
  AbortedError,
  BusyError,
  ClosedError,
  CommandError,
  ConnectError,
  LineTooLongError,
  NoGreetingError,
  ProtocolError,
  type QmpError,
  StateError,
  TimeoutError,
} from '../../qmp/errors';
import { QmpServerSession } from '../../qmp/server';
import { FIRST_CPU, QEMU_72_VERSION, startFakeQmp, type FakeQmpOptions } from '../helpers/fake-qmp';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

async function fakeFor(t: { teardown(fn: () => Promise<void>): void }, opts: FakeQmpOptions = {}) {
  const fake = await startFakeQmp(opts);
  t.teardown(() => fake.close());
  return fake;
}

function recordingLogger(): QmpLogger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    debug: (m, meta) => void lines.push(`debug ${m} ${JSON.stringify(meta)}`),
    warn: (m, meta) => void lines.push(`warn ${m} ${JSON.stringify(meta)}`),
  };
}

function closeReason(client: QmpClient): Promise<QmpError | undefined> {
  return new Promise((resolve) => client.once('close', resolve));
}

test('parseAddress: paths, unix:, tcp:, bare host:port', (t) => {
  t.deepEqual(parseAddress('/run/qemu/vm.qmp'), { kind: 'unix', path: '/run/qemu/vm.qmp' });
  t.deepEqual(parseAddress('unix:/run/qemu/vm.qmp'), { kind: 'unix', path: '/run/qemu/vm.qmp' });
  t.deepEqual(parseAddress('vm.qmp'), { kind: 'unix', path: 'vm.qmp' });
  t.deepEqual(parseAddress('./vm:1'), { kind: 'unix', path: './vm:1' });
  t.deepEqual(parseAddress('unix:vm:1'), { kind: 'unix', path: 'vm:1' });
  t.deepEqual(parseAddress('tcp:127.0.0.1:4444'), { kind: 'tcp', host: '127.0.0.1', port: 4444 });
  t.deepEqual(parseAddress('localhost:4444'), { kind: 'tcp', host: 'localhost', port: 4444 });
  t.deepEqual(parseAddress('tcp:[::1]:4444'), { kind: 'tcp', host: '::1', port: 4444 });
  for (const bad of ['', 'tcp:host', 'tcp:host:0', 'tcp:host:70000', 'unix:']) {
    t.throws(() => parseAddress(bad), { instanceOf: ConnectError }, bad);
  }
});

test('connect: greeting, capabilities, own ids; oob only when offered and asked for', async (t) => {
  const fake = await fakeFor(t, { physBits: 46 });
  const plain = await QmpClient.connect(fake.socket);
  t.is(plain.state, 'running');
  t.deepEqual(plain.greeting.QMP.version, QEMU_72_VERSION);
  t.deepEqual(plain.greeting.QMP.capabilities, ['oob']);
  t.deepEqual(plain.capabilities, []);
  t.is(await plain.execute('qom-get', { path: FIRST_CPU, property: 'phys-bits' }), 46);
  t.deepEqual(await plain.execute('query-status'), { status: 'prelaunch', singlestep: false, running: false });
  t.deepEqual(
    fake.commands.map((c) => c.id),
    ['__physbits#00002', '__physbits#00003'],
    'qmp_capabilities used #00001',
  );
  await t.throwsAsync(plain.execute('query-status', undefined, { oob: true }), { instanceOf: StateError });
  await plain.close();

  const oob = await QmpClient.connect(fake.socket, { oob: true });
  t.deepEqual(oob.capabilities, ['oob']);
  fake.script['migrate-pause'] = { return: {} };
  t.deepEqual(await oob.execute('migrate-pause', undefined, { oob: true }), {});
  t.true(fake.commands.at(-1)!.oob);
  t.regex(fake.commands.at(-1)!.text, /^\{"exec-oob":"migrate-pause","id":"__physbits#\d{5}"\}$/);
  await oob.close();

  const noOffer = await fakeFor(t, { capabilities: [] });
  const c = await QmpClient.connect(noOffer.socket, { oob: true });
  t.deepEqual(c.capabilities, [], 'oob asked for but not offered');
  await c.close();
});

test('events interleaved with replies arrive in order; a command error is CommandError', async (t) => {
  const fake = await fakeFor(t);
  fake.script['query-status'] = [
    { event: 'A', data: { n: 1 } },
    { event: 'B' },
    { return: { status: 'x' } },
    { event: 'C' },
  ];
  fake.script.boom = [{ event: 'D' }, { error: { class: 'DeviceNotFound', desc: 'no such thing' } }];
  const client = await QmpClient.connect(fake.socket);
  const seen: string[] = [];
  client.on('event', (ev) => void seen.push(ev.event + (ev.data ? JSON.stringify(ev.data) : '')));
  t.deepEqual(await client.execute('query-status'), { status: 'x' });
  const err = await t.throwsAsync(client.execute('boom'), { instanceOf: CommandError });
  t.is(err?.code, 'QMP_COMMAND_FAILED');
  t.is(err?.errorClass, 'DeviceNotFound');
  t.is(err?.desc, 'no such thing');
  t.is(err?.message, `${fake.socket}: boom: DeviceNotFound: no such thing`);
  t.deepEqual(seen, ['A{"n":1}', 'B', 'C', 'D']);
  await client.close();
});

test('events that arrive before any listener wait for it, bounded by maxQueuedEvents', async (t) => {
  const fake = await fakeFor(t);
  fake.script.burst = [1, 2, 3, 4, 5].map((n) => ({ event: `E${n}` })).concat([{ return: {} }] as never[]);
  const client = await QmpClient.connect(fake.socket, { maxQueuedEvents: 2 });
  await client.execute('burst');
  const seen: string[] = [];
  client.on('event', (ev) => void seen.push(ev.event));
  await new Promise((r) => setImmediate(r));
  t.deepEqual(seen, ['E4', 'E5']);
  t.is(client.droppedEvents, 3);
  const later = new Promise<string>((resolve) => client.once('event', (ev) => resolve(ev.event)));
  fake.emitEvent('LATER');
  t.is(await later, 'LATER');
  await client.close();
});

test('an error reply without an id is a protocol error: the connection closes, pending commands fail', async (t) => {
  const fake = await fakeFor(t);
  fake.script['query-status'] = { reply: { error: { class: 'GenericError', desc: 'JSON parse error, something' } } };
  const client = await QmpClient.connect(fake.socket);
  const closed = closeReason(client);
  const err = await t.throwsAsync(client.execute('query-status'), { instanceOf: ClosedError });
  t.is(err?.code, 'QMP_CLOSED');
  t.true(err?.cause instanceof ProtocolError);
  const reason = await closed;
  t.true(reason instanceof ProtocolError);
  t.regex(reason!.message, /a reply without an id/);
  t.true(reason!.message.startsWith(fake.socket));
  t.is(client.state, 'idle');
  await t.throwsAsync(client.execute('query-name'), { instanceOf: ClosedError });
});

test('an oversized line closes the connection with LineTooLongError', async (t) => {
  const fake = await fakeFor(t);
  fake.script.big = { line: `{"return": "${'x'.repeat(5000)}"}` };
  const client = await QmpClient.connect(fake.socket, { maxLineBytes: 4096 });
  const closed = closeReason(client);
  const err = await t.throwsAsync(client.execute('big'), { instanceOf: ClosedError });
  t.true(err?.cause instanceof LineTooLongError);
  const reason = await closed;
  t.is(reason?.code, 'QMP_LINE_TOO_LONG');
  t.is(reason?.message, `${fake.socket}: a message exceeded the 4096-byte line limit`);
});

test('a hang-up mid-command rejects every pending command with ClosedError', async (t) => {
  const fake = await fakeFor(t);
  fake.script.slow = { stall: true };
  fake.script.die = [{ delayMs: 50 }, { hangup: true }];
  const client = await QmpClient.connect(fake.socket);
  const closed = closeReason(client);
  const results = await Promise.allSettled([client.execute('die'), client.execute('slow')]);
  for (const r of results) {
    t.is(r.status, 'rejected');
    t.true((r as PromiseRejectedResult).reason instanceof ClosedError);
  }
  t.regex((results[0] as PromiseRejectedResult).reason.message, /connection closed while die was pending/);
  const reason = await closed;
  t.true(reason instanceof ClosedError);
  t.is(reason?.message, `${fake.socket}: connection closed by the peer`);
});

test('a greeting that is not QMP is ProtocolError naming the socket', async (t) => {
  const notQmp = await fakeFor(t, { greeting: { hello: 'world' } });
  const e1 = await t.throwsAsync(QmpClient.connect(notQmp.socket), { instanceOf: ProtocolError });
  t.is(e1?.message, `${notQmp.socket}: not a QMP server: expected a greeting, got "{\\"hello\\":\\"world\\"}"`);
  const garbage = await fakeFor(t, { greeting: 'garbage' });
  const e2 = await t.throwsAsync(QmpClient.connect(garbage.socket), { instanceOf: ProtocolError });
  t.true(e2!.message.startsWith(`${garbage.socket}: invalid JSON`));
});

test('no greeting is NoGreetingError; QEMU-style one-client sockets greet the next client only when the first leaves', async (t) => {
  const silent = await fakeFor(t, { greeting: 'none' });
  const started = Date.now();
  const err = await t.throwsAsync(QmpClient.connect(silent.socket, { greetingTimeoutMs: 300 }), {
    instanceOf: NoGreetingError,
  });
  t.true(Date.now() - started >= 290);
  t.is(err?.code, 'QMP_NO_GREETING');
  t.true(err!.message.startsWith(`${silent.socket}: connected, but no QMP greeting within 300 ms`));

  const fake = await fakeFor(t);
  const first = await QmpClient.connect(fake.socket);
  await t.throwsAsync(QmpClient.connect(fake.socket, { greetingTimeoutMs: 300 }), { instanceOf: NoGreetingError });
  await first.close();
  const third = await QmpClient.connect(fake.socket);
  t.deepEqual(await third.execute('query-name'), {});
  await third.close();
});

test('a command timeout is TimeoutError; the late reply is dropped quietly and the client goes on', async (t) => {
  const fake = await fakeFor(t);
  fake.script.late = [{ delayMs: 400 }, { return: 'late' }];
  const logger = recordingLogger();
  const client = await QmpClient.connect(fake.socket, { timeoutMs: 5000, logger });
  const err = await t.throwsAsync(client.execute('late', undefined, { timeoutMs: 100 }), { instanceOf: TimeoutError });
  t.is(err?.message, `${fake.socket}: late: no reply within 100 ms`);
  t.is(client.pendingCount, 0);
  t.deepEqual(await client.execute('query-name'), {}, 'answered after the late reply');
  t.is(logger.lines.filter((l) => l.startsWith('debug late QMP reply dropped')).length, 1);
  t.is(logger.lines.filter((l) => l.startsWith('warn')).length, 0);
  await client.close();
});

test('timeouts run on injected timers: nothing times out until the timer fires', async (t) => {
  const fake = await fakeFor(t);
  fake.script.hang = { stall: true };
  const armed: Array<{ fn: () => void; ms: number; cleared: boolean }> = [];
  const timers = {
    setTimeout: (fn: () => void, ms: number) => {
      const h = { fn, ms, cleared: false };
      armed.push(h);
      return h;
    },
    clearTimeout: (h: unknown) => void ((h as { cleared: boolean }).cleared = true),
  };
  const client = await QmpClient.connect(fake.socket, { timeoutMs: 1234, timers });
  t.deepEqual(
    armed.map((h) => [h.ms, h.cleared]),
    [
      [1234, true],
      [1234, true],
    ],
    'greeting and negotiation timers, both cleared',
  );
  let outcome: unknown = 'pending';
  const p = client.execute('hang').then(
    () => (outcome = 'resolved'),
    (e: unknown) => (outcome = e),
  );
  await fake.waitForCommand('hang');
  await new Promise((r) => setTimeout(r, 50));
  t.is(outcome, 'pending');
  const timer = armed.at(-1)!;
  t.is(timer.ms, 1234);
  timer.fn();
  await p;
  t.true(outcome instanceof TimeoutError);
  t.is(client.pendingCount, 0);
  await client.close();
});

test('more than maxPending commands in flight is BusyError', async (t) => {
  const fake = await fakeFor(t);
  fake.script.slow = [{ delayMs: 150 }, { return: 1 }];
  const client = await QmpClient.connect(fake.socket, { maxPending: 2 });
  const a = client.execute('slow');
  const b = client.execute('slow');
  const err = await t.throwsAsync(client.execute('slow'), { instanceOf: BusyError });
  t.is(err?.code, 'QMP_TOO_MANY_PENDING');
  t.deepEqual(await Promise.all([a, b]), [1, 1]);
  t.is(await client.execute('slow'), 1, 'room again once replies came');
  await client.close();
});

test('a reply with an unknown id is logged and dropped', async (t) => {
  const fake = await fakeFor(t);
  fake.script['query-status'] = [
    { reply: { return: 'not yours', id: 'someone-else' } },
    { reply: { return: 'nor this', id: 17 } },
    { return: 'yours' },
  ];
  const logger = recordingLogger();
  const client = await QmpClient.connect(fake.socket, { logger });
  t.is(await client.execute('query-status'), 'yours');
  const warnings = logger.lines.filter((l) => l.startsWith('warn QMP reply with an unknown id dropped'));
  t.is(warnings.length, 2);
  t.true(warnings[0].includes('someone-else'));
  t.is(client.state, 'running');
  await client.close();
});

test('connect errors name the socket: ENOENT, a stale socket, a regular file, an over-long path', async (t) => {
  const dir = tempDir();
  const missing = join(dir, 'missing.qmp');
  const e1 = await t.throwsAsync(QmpClient.connect(missing), { instanceOf: ConnectError });
  t.is(e1?.code, 'QMP_CONNECT_FAILED');
  t.is(e1?.message, `${missing}: cannot connect: ENOENT (no such socket)`);

  const stale = join(dir, 'stale.qmp');
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)})`], {
    stdio: 'ignore',
  });
  t.teardown(() => void child.kill('SIGKILL'));
  while (!existsSync(stale)) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const e2 = await t.throwsAsync(QmpClient.connect(stale), { instanceOf: ConnectError });
  t.regex(e2!.message, new RegExp(`^${stale.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot connect: ECONNREFUSED`));

  const file = join(dir, 'file.qmp');
  writeFileSync(file, '');
  const e3 = await t.throwsAsync(QmpClient.connect(file), { instanceOf: ConnectError });
  t.true(e3!.message.startsWith(`${file}: cannot connect: `));

  const long = join(dir, 'x'.repeat(120));
  const e4 = await t.throwsAsync(QmpClient.connect(long), { instanceOf: ConnectError });
  t.regex(e4!.message, /ENAMETOOLONG/);
});

test('an AbortSignal aborts connect while it waits for the greeting', async (t) => {
  const silent = await fakeFor(t, { greeting: 'none' });
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 100);
  const err = await t.throwsAsync(QmpClient.connect(silent.socket, { greetingTimeoutMs: 10000, signal: ac.signal }), {
    instanceOf: AbortedError,
  });
  t.is(err?.code, 'QMP_ABORTED');
  const already = AbortSignal.abort();
  await t.throwsAsync(QmpClient.connect(silent.socket, { signal: already }), { instanceOf: AbortedError });
});

test('close(): pending commands reject, close is emitted without an error, later calls fail', async (t) => {
  const fake = await fakeFor(t);
  fake.script.slow = { stall: true };
  const client = await QmpClient.connect(fake.socket);
  const closed = closeReason(client);
  const pending = client.execute('slow');
  await fake.waitForCommand('slow');
  await client.close();
  const err = await t.throwsAsync(pending, { instanceOf: ClosedError });
  t.is(err?.message, `${fake.socket}: connection closed while slow was pending`);
  t.is(await closed, undefined);
  t.is(client.state, 'idle');
  await t.throwsAsync(client.execute('query-name'), { instanceOf: ClosedError });
  await client.close();
});

test("forwardCommand: the whole reply (return or error) with its text, sent under this client's id", async (t) => {
  const fake = await fakeFor(t);
  const client = await QmpClient.connect(fake.socket);
  const ok = await client.forwardCommand('query-name', undefined, false);
  t.regex(fake.commands.at(-1)!.text, /^\{"execute":"query-name","id":"__physbits#\d{5}"\}$/);
  t.deepEqual(ok.reply, { return: {}, id: ok.id });
  t.is(ok.text, `{"return": {}, "id": "${ok.id}"}`);
  const failed = await client.forwardCommand('nope', { a: 1 }, false);
  t.regex(fake.commands.at(-1)!.text, /^\{"execute":"nope","arguments":\{"a":1\},"id":"__physbits#\d{5}"\}$/);
  t.deepEqual(failed.reply, {
    error: { class: 'CommandNotFound', desc: 'The command nope has not been found' },
    id: failed.id,
  });
  await client.close();
});

test('executeAll: every outcome in order, error replies as values, under its own ids; one timing per reply', async (t) => {
  const fake = await fakeFor(t, { physBits: 46 });
  const timed: string[] = [];
  const client = await QmpClient.connect(fake.socket, { onReply: (command) => void timed.push(command) });
  const before = fake.commands.length;
  const out = await client.executeAll([
    ['query-name'],
    ['qom-get', { path: FIRST_CPU, property: 'phys-bits' }],
    ['nope', { a: 1 }],
    ['qom-get', { path: FIRST_CPU, property: 'no-such' }],
  ]);
  const sent = fake.commands.slice(before);
  t.deepEqual(
    sent.map((c) => c.name),
    ['query-name', 'qom-get', 'nope', 'qom-get'],
  );
  t.regex(sent[2].text, /^\{"execute":"nope","arguments":\{"a":1\},"id":"__physbits#\d{5}"\}$/);
  const ids = sent.map((c) => (JSON.parse(c.text) as { id: string }).id);
  t.is(new Set(ids).size, 4);
  t.deepEqual(out, [
    { return: {}, id: ids[0] },
    { return: 46, id: ids[1] },
    { error: { class: 'CommandNotFound', desc: 'The command nope has not been found' }, id: ids[2] },
    { error: { class: 'GenericError', desc: "Property 'qemu64-x86_64-cpu.no-such' not found" }, id: ids[3] },
  ]);
  t.false(out.some((o) => o instanceof Error));
  t.deepEqual(timed.slice(-4), ['query-name', 'qom-get', 'nope', 'qom-get']);
  t.is(client.pendingCount, 0);
  t.deepEqual(await client.executeAll([]), []);
  await client.close();
});

test('executeAll: commands still unanswered after timeoutMs are TimeoutError, their late replies dropped quietly; the rest answered', async (t) => {
  const fake = await fakeFor(t);
  fake.script.late = [{ delayMs: 400 }, { return: 'late' }];
  const logger = recordingLogger();
  const client = await QmpClient.connect(fake.socket, { timeoutMs: 5000, logger });
  const out = await client.executeAll([['query-name'], ['late'], ['query-status']], { timeoutMs: 100 });
  t.deepEqual(out[0], { return: {}, id: (out[0] as { id: string }).id });
  t.true(out[1] instanceof TimeoutError);
  t.is((out[1] as TimeoutError).message, `${fake.socket}: no reply within 100 ms`);
  t.is(out[2], out[1], 'answered in order: the command behind the late one waits too');
  t.is(client.pendingCount, 0);
  t.deepEqual(await client.execute('query-name'), {}, 'answered after the late replies');
  t.is(logger.lines.filter((l) => l.startsWith('debug late QMP reply dropped')).length, 2);
  t.is(logger.lines.filter((l) => l.startsWith('warn')).length, 0);
  await client.close();
});

test('executeAll: a hang-up fails what was not answered with ClosedError; beyond maxPending, or not connected, nothing is sent', async (t) => {
  const fake = await fakeFor(t);
  fake.script.bye = { hangup: true };
  const client = await QmpClient.connect(fake.socket, { maxPending: 3 });
  const before = fake.commands.length;
  const busy = await client.executeAll([['query-name'], ['query-name'], ['query-name'], ['query-name']]);
  t.true(busy.every((o) => o instanceof BusyError));
  t.is(fake.commands.length, before);
  const out = await client.executeAll([['query-name'], ['bye'], ['query-status']]);
  t.false(out[0] instanceof Error);
  t.true(out[1] instanceof ClosedError);
  t.true(out[2] instanceof ClosedError);
  t.is(client.pendingCount, 0);
  const after = await client.executeAll([['query-name']]);
  t.true(after[0] instanceof ClosedError);
  t.is((after[0] as ClosedError).message, `${fake.socket}: query-name: not connected`);
});

test('TCP addresses work the same way', async (t) => {
  const server = net.createServer((socket) => {
    new QmpServerSession(socket, { version: QEMU_72_VERSION, handler: (cmd) => ({ return: { echo: cmd.name } }) });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  for (const address of [`tcp:127.0.0.1:${port}`, `127.0.0.1:${port}`]) {
    const client = await QmpClient.connect(address);
    t.deepEqual(await client.execute('ping'), { echo: 'ping' });
    await client.close();
  }
});

test('real QEMU: qom-get phys-bits returns what -cpu set; a second client is never greeted', async (t) => {
  const guest = await startGuest({ cpu: 'phys-bits=42', name: 'physbits-client-test' });
  t.teardown(() => guest.kill());
  const client = await QmpClient.connect(guest.socket, { timeoutMs: 20000 });
  t.teardown(() => client.close());
  t.is(client.greeting.QMP.version.qemu.major, 7);
  const cpus = await client.execute<Array<{ 'qom-path': string }>>('query-cpus-fast');
  t.is(await client.execute('qom-get', { path: cpus[0]['qom-path'], property: 'phys-bits' }), 42);
  t.deepEqual(await client.execute('query-name'), { name: 'physbits-client-test' });
  const err = await t.throwsAsync(client.execute('qom-get', { path: '/nope', property: 'x' }), {
    instanceOf: CommandError,
  });
  t.is(err?.errorClass, 'DeviceNotFound');
  await t.throwsAsync(QmpClient.connect(guest.socket, { greetingTimeoutMs: 500 }), { instanceOf: NoGreetingError });
});

test('many connections reading at once: replies larger than a read, cut anywhere, each reaches its own client whole', async (t) => {
  // Every dialled-out connection reads into one shared buffer: a reply bigger than that buffer, written
  // in odd pieces by several servers at once, must come out whole and to the right client.
  const servers: net.Server[] = [];
  const clients: QmpClient[] = [];
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  });
  const big = (n: number, i: number) => ({ who: n, at: i, blob: `${n}:${i}:`.repeat(9000 + n * 777 + i) });
  for (let n = 0; n < 4; n++) {
    const server = net.createServer((socket) => {
      socket.on('error', () => undefined);
      let buf = '';
      // One reply after the other on this socket, each in odd pieces with a pause after every piece,
      // so that the reads of all connections interleave.
      let queue = Promise.resolve();
      const send = (text: string) => {
        queue = queue.then(async () => {
          for (let at = 0, k = n; at < text.length && !socket.destroyed; k++) {
            const size = 1 + ((k * 7919) % 50000);
            await new Promise<void>((r) => socket.write(text.slice(at, at + size), () => setImmediate(r)));
            at += size;
          }
        });
      };
      socket.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const msg = JSON.parse(buf.slice(0, nl)) as { execute: string; id: string; arguments?: { at: number } };
          buf = buf.slice(nl + 1);
          const ret = msg.execute === 'qmp_capabilities' ? {} : big(n, msg.arguments!.at);
          send(JSON.stringify({ return: ret, id: msg.id }) + '\r\n');
        }
      });
      send(JSON.stringify({ QMP: { version: QEMU_72_VERSION, capabilities: [] } }) + '\r\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    servers.push(server);
    clients.push(await QmpClient.connect(`127.0.0.1:${(server.address() as net.AddressInfo).port}`));
  }
  const results = await Promise.all(
    clients.flatMap((c) => [0, 1, 2].map((i) => c.execute('big', { at: i }).then((r) => [clients.indexOf(c), i, r]))),
  );
  t.is(results.length, 12);
  for (const [n, i, r] of results as Array<[number, number, unknown]>) t.deepEqual(r, big(n, i));
});
