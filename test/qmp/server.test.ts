import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { ListenError, SlowPeerError, SocketInUseError, type QmpError } from '../../qmp/errors';
import { topLevelIdText } from '../../qmp/json-text';
import { QmpServerSession, type CommandHandler, type ServerCommand } from '../../qmp/server';
import { listenUnixSocket, probeSocketPath } from '../../qmp/unix-server';
import { QEMU_72_VERSION } from '../helpers/fake-qmp';
import { waitUntil } from '../helpers/daemon';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

/** A raw line client: what socat would see. */
class LineClient {
  readonly lines: string[] = [];
  private waiters: Array<() => void> = [];
  private buf = '';
  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('error', () => undefined);
    socket.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, i).replace(/\r$/, ''));
        this.buf = this.buf.slice(i + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('close', () => {
      for (const w of this.waiters.splice(0)) w();
    });
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
  async next(timeoutMs = 10000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.socket.destroyed) throw new Error('connection closed while waiting for a line');
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for a line`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.lines.shift()!;
  }
  async ask(text: string): Promise<string> {
    this.send(text);
    return this.next();
  }
  close(): void {
    this.socket.destroy();
  }
}

interface Served {
  path: string;
  sessions: QmpServerSession[];
  sockets: net.Socket[];
}

async function serve(
  t: { teardown(fn: () => unknown): void },
  handler: CommandHandler,
  extra: Partial<ConstructorParameters<typeof QmpServerSession>[1]> = {},
): Promise<Served> {
  const path = join(tempDir(), 'qmp.sock');
  const out: Served = { path, sessions: [], sockets: [] };
  const server = net.createServer((socket) => {
    out.sockets.push(socket);
    out.sessions.push(
      new QmpServerSession(socket, { version: QEMU_72_VERSION, capabilities: ['oob'], handler, ...extra }),
    );
  });
  await new Promise<void>((r) => server.listen(path, r));
  t.teardown(() => {
    for (const s of out.sessions) void s.close();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return out;
}

const echo: CommandHandler = (cmd) => ({ return: { name: cmd.name, args: cmd.arguments ?? null } });

/** Commands exercising negotiation and input checking, none of which depends on what the VM is. */
const TRANSCRIPT = [
  '{"execute":"query-status","id":1}',
  '{"execute":"qmp_capabilities","arguments":{"enable":["foo"]},"id":2}',
  '{"execute":"qmp_capabilities","arguments":{"enable":"oob"},"id":"two"}',
  '{"execute":"qmp_capabilities","arguments":{"bogus":1},"id":[2]}',
  '{"execute":"qmp_capabilities","arguments":{"enable":["oob",1]},"id":2.5}',
  'garbage',
  '[1]',
  '{"exec-oob":"query-status","id":"x"}',
  '{"execute":"query-status","foo":1,"id":{"a":[1]}}',
  '{"execute":"query-status","execute":"query-name","id":6}',
  '{"execute":5,"id":7}',
  '{"id":8}',
  '{"execute":"query-status","arguments":[],"id":9}',
  '{"execute":"qmp_capabilities","id":12345678901234567890}',
  '{"execute":"qmp_capabilities","id":4}',
  '{"execute":"qmp_capabilities","arguments":{"enable":[true]},"id":5}',
  '{"execute":"qmp_capabilities","arguments":{"enable":["oob"]},"id":6}',
  '{"exec-oob":"query-status","id":"y"}',
  // Strings JSON.parse reads and QEMU's parser does not (surrogates, noncharacters), and ones both read.
  '{"execute":"query-status","id":"\\ud800"}',
  '{"execute":"query-status","arguments":{"x":"\\udc00"},"id":20}',
  '{"execute":"query-status","id":"\\ud800\\u0041"}',
  '{"execute":"query-status","id":"\\ud83f\\udffe"}',
  '{"execute":"query-status","id":"\\uFDD0"}',
  '{"execute":"query-status","id":"\uffff"}',
  '{"execute":"query-status","id":"\u{10fffe}"}',
  '{"execute":"qmp_capabilities","id":"\\uD83D\\uDE00 \\u0000 \\\\ud800"}',
];

async function runTranscript(
  path: string,
): Promise<{ greeting: unknown; replies: Array<{ reply: Record<string, unknown>; idText: string | undefined }> }> {
  const c = await LineClient.connect(path);
  try {
    const greeting = JSON.parse(await c.next());
    const replies = [];
    for (const line of TRANSCRIPT) {
      const text = await c.ask(line);
      replies.push({ reply: JSON.parse(text), idText: topLevelIdText(text) });
    }
    return { greeting, replies };
  } finally {
    c.close();
  }
}

test('negotiation and input checks answer exactly as QEMU 7.2 does (same transcript, compared with real QEMU)', async (t) => {
  const guest = await startGuest();
  t.teardown(() => guest.kill());
  const ours = await serve(t, echo);
  const real = await runTranscript(guest.socket);
  const mine = await runTranscript(ours.path);
  t.deepEqual((mine.greeting as { QMP: { capabilities: string[] } }).QMP.capabilities, ['oob']);
  for (let i = 0; i < TRANSCRIPT.length; i++) {
    const r = real.replies[i];
    const m = mine.replies[i];
    // QEMU re-prints ids with its own spacing; the digits of 12345678901234567890 must survive both.
    t.is(m.idText?.replace(/\s+/g, ''), r.idText?.replace(/\s+/g, ''), `id of ${TRANSCRIPT[i]}`);
    const rErr = r.reply.error as { class: string; desc: string } | undefined;
    const mErr = m.reply.error as { class: string; desc: string } | undefined;
    if (TRANSCRIPT[i] === 'garbage') {
      // The JSON parsers word their complaints differently; the shape is the same.
      t.is(mErr?.class, rErr?.class);
      t.regex(mErr!.desc, /^JSON parse error, /);
      continue;
    }
    t.deepEqual(m.reply, r.reply, TRANSCRIPT[i]);
  }
});

test('the handler sees only checked, negotiated commands, with the id as written', async (t) => {
  const seen: ServerCommand[] = [];
  const s = await serve(t, (cmd) => {
    seen.push(cmd);
    return { return: 42 };
  });
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  t.is(
    await c.ask('{"execute":"x","id":1}'),
    `{"error":{"class":"CommandNotFound","desc":"Expecting capabilities negotiation with 'qmp_capabilities'"},"id":1}`,
  );
  t.is(await c.ask('{"execute":"qmp_capabilities"}'), '{"return":{}}');
  t.is(await c.ask('{"execute":"x","arguments":{"a":[1,2]},"id":{"k":"v\\"}"}}'), '{"return":42,"id":{"k":"v\\"}"}}');
  t.is(await c.ask('{"execute":"y"}'), '{"return":42}');
  t.deepEqual(
    seen.map((x) => [x.name, x.arguments, x.hasId, x.idText]),
    [
      ['x', { a: [1, 2] }, true, '{"k":"v\\"}"}'],
      ['y', undefined, false, undefined],
    ],
  );
  t.true(s.sessions[0].negotiated);
});

test('replies keep command order although handlers finish out of order; exec-oob overtakes', async (t) => {
  let running = 0;
  let maxRunning = 0;
  const s = await serve(t, async (cmd) => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    await new Promise((r) => setTimeout(r, Number(cmd.arguments?.ms ?? 0)));
    running--;
    return { return: cmd.arguments?.n };
  });
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  t.is(await c.ask('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}'), '{"return":{}}');
  c.send('{"execute":"w","arguments":{"n":1,"ms":200},"id":1}');
  c.send('{"execute":"w","arguments":{"n":2,"ms":0},"id":2}');
  c.send('{"exec-oob":"w","arguments":{"n":3,"ms":0},"id":3}');
  const got = [await c.next(), await c.next(), await c.next()];
  t.deepEqual(got, ['{"return":3,"id":3}', '{"return":1,"id":1}', '{"return":2,"id":2}']);
  t.is(maxRunning, 2, 'the in-band commands never ran together; only the out-of-band one ran beside one');
});

test('a handler that throws becomes a GenericError reply; replyText gets the client id spliced in', async (t) => {
  const s = await serve(t, (cmd) => {
    if (cmd.name === 'fail') throw new Error('it broke');
    return { replyText: '{"return": {"n": 18446744073709551615}, "id": "__physbits#00009"}' };
  });
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  await c.ask('{"execute":"qmp_capabilities"}');
  t.is(await c.ask('{"execute":"fail","id":"f"}'), '{"error":{"class":"GenericError","desc":"it broke"},"id":"f"}');
  t.is(
    await c.ask('{"execute":"relay","id":12345678901234567890}'),
    '{"return": {"n": 18446744073709551615}, "id": 12345678901234567890}',
  );
  t.is(await c.ask('{"execute":"relay"}'), '{"return": {"n": 18446744073709551615}}');
});

test('events go only to negotiated clients', async (t) => {
  const s = await serve(t, echo);
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  const session = s.sessions[0];
  t.false(session.sendEvent({ event: 'EARLY', timestamp: { seconds: 1, microseconds: 0 } }));
  await c.ask('{"execute":"qmp_capabilities"}');
  t.true(session.sendEvent('{"timestamp": {"seconds": 2, "microseconds": 0}, "event": "LATE"}'));
  t.is(await c.next(), '{"timestamp": {"seconds": 2, "microseconds": 0}, "event": "LATE"}');
  t.deepEqual(c.lines, []);
});

test('reading pauses while commands queue up, and every queued command is answered in order', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let handled = 0;
  const s = await serve(
    t,
    async (cmd) => {
      handled++;
      await gate;
      return { return: cmd.arguments?.n };
    },
    { maxQueuedCommands: 2 },
  );
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  await c.ask('{"execute":"qmp_capabilities"}');
  const n = 2000;
  let batch = '';
  for (let i = 0; i < n; i++) batch += `{"execute":"w","arguments":{"n":${i}},"id":${i}}\n`;
  c.socket.write(batch);
  // The first command holds the handler, two more fill the queue: reading pauses and stays paused.
  await waitUntil(() => s.sockets[0].isPaused(), 'the server to stop reading', 10000, 5);
  t.is(handled, 1);
  release();
  for (let i = 0; i < n; i++) t.is(await c.next(), `{"return":${i},"id":${i}}`);
});

test('a client that does not read is dropped with SlowPeerError once its output passes the bound', async (t) => {
  const s = await serve(t, echo, { maxQueueBytes: 64 * 1024 });
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  await c.ask('{"execute":"qmp_capabilities"}');
  c.socket.pause();
  const session = s.sessions[0];
  const closed = new Promise<QmpError | undefined>((r) => session.once('close', r));
  const big = JSON.stringify({
    event: 'BIG',
    data: { pad: 'x'.repeat(16 * 1024) },
    timestamp: { seconds: 0, microseconds: 0 },
  });
  let sent = 0;
  let maxBuffered = 0;
  while (session.sendEvent(big)) {
    sent++;
    maxBuffered = Math.max(maxBuffered, session.conn.writeBuffered);
    if (sent > 100000) break;
  }
  const err = await closed;
  t.true(err instanceof SlowPeerError);
  t.is(err?.code, 'QMP_SLOW_PEER');
  t.true(sent < 100000);
  t.true(maxBuffered <= 64 * 1024 + big.length + 1, `buffered at most the bound plus one message (${maxBuffered})`);
});

test('a line over maxLineBytes ends the session', async (t) => {
  const s = await serve(t, echo, { maxLineBytes: 1024 });
  const c = await LineClient.connect(s.path);
  t.teardown(() => c.close());
  await c.next();
  const closed = new Promise<QmpError | undefined>((r) => s.sessions[0].once('close', r));
  c.send('{"execute":"' + 'x'.repeat(2000) + '"}');
  t.is((await closed)?.code, 'QMP_LINE_TOO_LONG');
});

test('listenUnixSocket: the socket appears with exactly the mode, replaces a stale socket, and leaves live ones and non-sockets alone', async (t) => {
  const dir = tempDir();
  const path = join(dir, 'guard.sock');

  const s1 = net.createServer((sock) => sock.on('error', () => undefined).end('hello\n'));
  const h1 = await listenUnixSocket(s1, path, { mode: 0o640 });
  t.is(lstatSync(path).mode & 0o777, 0o640);
  t.true(lstatSync(path).isSocket());
  const got = await new Promise<string>((r) =>
    net
      .createConnection({ path })
      .on('error', () => undefined)
      .on('data', (d) => r(d.toString())),
  );
  t.is(got, 'hello\n');
  t.is(await probeSocketPath(path), 'live');
  const s2 = net.createServer();
  await t.throwsAsync(listenUnixSocket(s2, path, { mode: 0o600 }), { instanceOf: SocketInUseError });

  await h1.close();
  t.throws(() => lstatSync(path), { code: 'ENOENT' });
  t.is(await probeSocketPath(path), 'absent');

  // A stale socket (its process killed, the file left behind) is replaced in one rename.
  const stale = join(dir, 'stale.sock');
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)})`], {
    stdio: 'ignore',
  });
  t.teardown(() => void child.kill('SIGKILL'));
  await waitUntil(() => existsSync(stale), `the child to listen on ${stale}`, 10000, 10);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  t.is(await probeSocketPath(stale), 'stale');
  const s3 = net.createServer((sock) => sock.on('error', () => undefined).end('fresh\n'));
  const h3 = await listenUnixSocket(s3, stale, { mode: 0o660 });
  t.is(lstatSync(stale).mode & 0o777, 0o660);
  const fresh = await new Promise<string>((r) =>
    net
      .createConnection({ path: stale })
      .on('error', () => undefined)
      .on('data', (d) => r(d.toString())),
  );
  t.is(fresh, 'fresh\n');
  t.deepEqual(
    readdirSync(dir).filter((f) => f.startsWith('.')),
    [],
    'no temporary directory is left behind',
  );
  await h3.close();

  const file = join(dir, 'file.sock');
  writeFileSync(file, 'data');
  await t.throwsAsync(listenUnixSocket(net.createServer(), file, { mode: 0o600 }), { instanceOf: ListenError });
  t.is(statSync(file).size, 4, 'the file was not touched');
  const link = join(dir, 'link.sock');
  symlinkSync(file, link);
  await t.throwsAsync(listenUnixSocket(net.createServer(), link, { mode: 0o600 }), { instanceOf: ListenError });
  const sub = join(dir, 'sub');
  mkdirSync(sub);
  await t.throwsAsync(listenUnixSocket(net.createServer(), join(sub, 'missing', 'x.sock'), { mode: 0o600 }), {
    instanceOf: ListenError,
  });
});

test('listenUnixSocket leaves the process umask alone: files and directories created meanwhile keep their modes', async (t) => {
  // The umask belongs to the whole process, libuv's threadpool included: a mkdir or open running
  // there while a bind happened under another umask would get that umask's modes.
  const dir = tempDir();
  const umask = process.umask();
  const want = 0o700 & ~umask;
  let listening = true;
  const made: string[] = [];
  const makeDirs = async (): Promise<void> => {
    while (listening) made.push(await mkdtemp(join(dir, 'd-')));
  };
  const makers = Array.from({ length: 2 }, () => makeDirs());
  const handles = [];
  // At least 50 sockets, and on until more than 50 directories were made meanwhile: the bind's own
  // steps are synchronous, so how many the makers fit in between depends on the machine's load.
  for (let i = 0; i < 50 || (made.length <= 50 && i < 1000); i++) {
    handles.push(await listenUnixSocket(net.createServer(), join(dir, `s${i}.sock`), { mode: 0o600 }));
    await new Promise((r) => setImmediate(r));
  }
  listening = false;
  await Promise.all(makers);
  for (const h of handles) await h.close();
  const wrong = made.filter((p) => (lstatSync(p).mode & 0o777) !== want);
  t.log(`${made.length} directories made while ${handles.length} sockets were bound`);
  t.true(made.length > 50);
  t.deepEqual(wrong, []);
});
