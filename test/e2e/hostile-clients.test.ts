/**
 * Hostile clients of physbitsd: on a guarded socket (malformed and oversized lines, floods of
 * commands, half-open connections past guard.maxClients) and on the API socket (bodies over
 * api.maxBodyBytes, malformed JSON and HTTP, floods, half-open requests, WebSocket clients that
 * never read or send too much). Each gets a bounded, exact answer; well-behaved clients beside them
 * are served throughout, and the daemon's memory stays bounded.
 */
import test from 'ava';
import http from 'node:http';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { LineClient, startDaemon, waitUntil, type DaemonProcess, type JsonObject } from '../helpers/daemon';
import { startFakeQmp, type FakeQmp } from '../helpers/fake-qmp';
import { tempDir } from '../helpers/tmp';

const MiB = 1024 * 1024;
const UPGRADE =
  'GET /v1/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';

interface Setup {
  dir: string;
  d: DaemonProcess;
  fake: FakeQmp;
  guarded: string;
}

async function setup(t: { teardown(fn: () => unknown): void }, config: JsonObject = {}): Promise<Setup> {
  const dir = tempDir('physbits-hostile-clients-');
  mkdirSync(join(dir, 'vms'));
  const fake = await startFakeQmp({ dir: join(dir, 'vms'), socketName: 'target.qmp', physBits: 40 });
  t.teardown(() => fake.close());
  // The fake answers the daemon's heartbeat from this process's event loop, which the floods below
  // keep busy for seconds on a loaded machine: a late heartbeat reply here is this test's own doing,
  // not a stalled QEMU, so the heartbeat allows for it (stalls are tested in hostile-qmp and vm-supervisor).
  const d = await startDaemon({ dir, config: { peers: [], qmp: { heartbeatTimeoutMs: 60000 }, ...config } });
  t.teardown(() => d.kill());
  const guarded = join(dir, 'guard', 'target.qmp');
  await waitUntil(async () => (await d.status()).vms[0]?.guardSocket === guarded, 'the guarded socket');
  return { dir, d, fake, guarded };
}

/** Resolves when `socket` receives its first bytes; rejects naming `what` when it closes or times out first. */
function firstData(socket: net.Socket, what: string, timeoutMs = 10000): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onData = (): void => done();
    const onClose = (): void => done(new Error(`connection closed while waiting for ${what}`));
    const timer = setTimeout(() => done(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}

/** One raw HTTP exchange on the API socket: what the server answers to exactly these bytes. */
function rawHttp(socketPath: string, bytes: Buffer | string, timeoutMs = 10000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: socketPath });
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer within ${timeoutMs} ms; got ${JSON.stringify(out.slice(0, 200))}`));
    }, timeoutMs);
    s.on('data', (c) => (out += c.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(bytes);
  });
}

function request(
  socketPath: string,
  method: string,
  path: string,
  body?: Buffer | string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('guarded socket: malformed and oversized lines, floods and half-open connections', async (t) => {
  const { d, fake, guarded } = await setup(t, { guard: { maxClients: 8, clientQueueBytes: MiB } });
  const memStart = d.memory();
  const { client: good } = await LineClient.negotiated(guarded);
  t.teardown(() => good.close());

  // Malformed input gets QEMU's own answers, and the connection stays.
  const { client: bad } = await LineClient.negotiated(guarded);
  t.teardown(() => bad.close());
  const malformed: Array<[string | Buffer, string]> = [
    ['{"execute": ', 'JSON parse error'],
    [
      Buffer.concat([Buffer.from('{"execute": "'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
      'JSON parse error, invalid UTF-8 sequence',
    ],
    ['[1, 2, 3]', 'QMP input must be a JSON object'],
    ['{"arguments": {}}', "QMP input lacks member 'execute'"],
    ['{"execute": 42}', "QMP input member 'execute' must be a string"],
    ['{"execute": "query-status", "bogus": 1}', "QMP input member 'bogus' is unexpected"],
    ['{"execute": "query-status", "execute": "stop"}', 'JSON parse error, duplicate key'],
    [`${'['.repeat(2000)}${']'.repeat(2000)}`, 'JSON parse error, nesting too deep'],
  ];
  for (const [line, desc] of malformed) {
    bad.socket.write(Buffer.concat([Buffer.isBuffer(line) ? line : Buffer.from(line), Buffer.from('\n')]));
    const reply = await bad.next((m) => 'error' in m);
    t.is((reply.error as { class: string }).class, 'GenericError');
    t.true(
      String((reply.error as { desc: string }).desc).startsWith(desc),
      `${String(line).slice(0, 40)} → ${JSON.stringify(reply)}`,
    );
  }
  t.like(await bad.command('{"execute":"query-status","id":"still"}', 'still'), { return: { status: 'prelaunch' } });
  t.false(bad.closed);

  // A line past qmp.maxLineBytes (1 MiB by default): that client is cut off; nothing reaches QEMU.
  // (The daemon's own heartbeat goes on meanwhile, so what QEMU receives is looked at, not counted.)
  const { client: huge } = await LineClient.negotiated(guarded);
  const reachedQemu: string[] = [];
  const onCommand = (cmd: { text: string }): number => reachedQemu.push(cmd.text.slice(0, 100));
  fake.on('command', onCommand);
  huge.socket.write(`{"execute": "query-status", "arguments": {"x": "${'y'.repeat(3 * MiB)}"}}\n`);
  await huge.ended;
  await d.waitForLog((l) => l.message === 'QMP proxy client dropped' && l.fields.code === 'QMP_LINE_TOO_LONG');
  fake.off('command', onCommand);
  t.deepEqual(
    reachedQemu.filter((text) => text.includes('"arguments"')),
    [],
  );

  // A pipelined flood of 20000 commands from one client: every reply, in order, with its own id;
  // meanwhile another client's command is answered promptly.
  const { client: flood } = await LineClient.negotiated(guarded, 10000, 30000);
  t.teardown(() => flood.close());
  const FLOOD = 20000;
  const lines: string[] = [];
  for (let i = 0; i < FLOOD; i++) lines.push(`{"execute":"query-status","id":${i}}`);
  flood.socket.write(lines.join('\n') + '\n');
  t.like(await good.command('{"execute":"query-name","id":"meanwhile"}', 'meanwhile'), { id: 'meanwhile' });
  const floodRepliesMeanwhile = flood.messages.filter((m) => typeof m.id === 'number').length;
  t.true(floodRepliesMeanwhile < FLOOD, 'the other client was answered before the flood was through');
  await flood.next((m) => m.id === FLOOD - 1, 60000);
  const ids = flood.messages.filter((m) => typeof m.id === 'number').map((m) => m.id as number);
  t.is(ids.length, FLOOD);
  t.is(
    ids.findIndex((v, i) => v !== i),
    -1,
    'replies out of order',
  );

  // A client that never reads: its commands stop being read after a few (reading pauses, so its
  // flood costs nothing), and once guard.clientQueueBytes (1 MiB here) of events wait for it, it is dropped.
  const { client: deaf } = await LineClient.negotiated(guarded);
  deaf.socket.pause();
  const deafLines = Array.from({ length: 20000 }, (_, i) => `{"execute":"query-status","id":${i}}`).join('\n');
  deaf.socket.write(deafLines + '\n');
  const pad = 'e'.repeat(4096);
  // Paced by the clients that do read: every batch of 20 events (80 KiB) reaches each of them before
  // the next is sent, so none of them ever has more than a batch queued, however slowly this process
  // reads, while the queue of the client that does not read only grows.
  const eventNamed = (id: string) => (m: JsonObject) =>
    m.event === 'VSERPORT_CHANGE' && (m.data as { id: string }).id === id;
  for (let i = 0; i < 1000; i++) {
    fake.emitEvent('VSERPORT_CHANGE', { id: `ev${i}`, open: true, pad });
    if (i % 20 === 19) await Promise.all([good, bad, flood].map((c) => c.next(eventNamed(`ev${i}`), 20000)));
  }
  await d.waitForLog((l) => l.message === 'QMP proxy client dropped' && l.fields.code === 'QMP_SLOW_PEER', 30000);
  deaf.socket.destroy();

  // Half-open connections (never greeted back, never negotiated) fill guard.maxClients; beyond it
  // connections are closed at once; the clients already served go on.
  const open = 8 - 3; // good, bad and flood are connected
  const halfOpen: net.Socket[] = [];
  t.teardown(() => halfOpen.forEach((s) => s.destroy()));
  for (let i = 0; i < open; i++) {
    const s = net.createConnection({ path: guarded });
    s.on('error', () => undefined);
    s.write('{"execute": "qmp_capa');
    halfOpen.push(s);
  }
  // Each is served (it has its greeting) before one more connects.
  await Promise.all(halfOpen.map((s, i) => firstData(s, `the greeting on half-open connection ${i}`)));
  const extra = net.createConnection({ path: guarded });
  extra.on('error', () => undefined);
  await new Promise<void>((r) => extra.once('close', () => r()));
  await d.waitForLog((l) => l.message === 'QMP proxy client rejected');
  t.like(await good.command('{"execute":"query-status","id":"end"}', 'end'), { return: { status: 'prelaunch' } });
  t.like(await bad.command('{"execute":"query-status","id":"end"}', 'end'), { return: { status: 'prelaunch' } });

  const mem = d.memory();
  t.log(
    `guarded socket: ${malformed.length} malformed lines, a 3 MiB line, ${FLOOD} pipelined commands (another client answered after ${floodRepliesMeanwhile} of their replies), 20000 unread commands and 1000 4-KiB events for a client that does not read (guard.clientQueueBytes 1 MiB), ${open} half-open connections`,
  );
  t.log(`daemon RSS ${memStart.rssKb} kB at start, ${mem.rssKb} kB at the end, peak ${mem.hwmKb} kB`);
  t.true(mem.hwmKb < 350 * 1024);
  t.is(d.proc.exitCode, null);
});

test('API: oversized and malformed requests, floods, half-open connections', async (t) => {
  const { d } = await setup(t, { api: { maxBodyBytes: 4096 } });
  const sock = d.apiSocket;
  const memStart = d.memory();

  // Over api.maxBodyBytes: 413, whether the body is 5 KiB or 64 MiB.
  const r1 = await request(
    sock,
    'POST',
    '/v1/check-migration',
    JSON.stringify({ vm: 'target', peer: 'x', pad: 'z'.repeat(5000) }),
    { 'content-type': 'application/json' },
  );
  t.is(r1.status, 413);
  t.deepEqual(JSON.parse(r1.body), {
    error: { code: 'API_BODY_TOO_LARGE', message: 'request body larger than 4096 bytes' },
  });
  const big = await request(sock, 'POST', '/v1/libvirt-events', Buffer.alloc(64 * MiB, 0x41)).catch(
    (err: NodeJS.ErrnoException) => ({ status: -1, body: err.code ?? '' }),
  );
  t.true(big.status === 413 || big.body === 'EPIPE' || big.body === 'ECONNRESET', JSON.stringify(big).slice(0, 200));

  // Malformed JSON: 400.
  const r2 = await request(sock, 'POST', '/v1/check-migration', '{"vm": ', { 'content-type': 'application/json' });
  t.is(r2.status, 400);
  t.is(JSON.parse(r2.body).error.code, 'API_BAD_JSON');
  const r3 = await request(sock, 'POST', '/v1/check-migration', '[]');
  t.is(r3.status, 400);
  t.is(JSON.parse(r3.body).error.code, 'API_BAD_REQUEST');
  // Not HTTP at all, and headers past the limit: Node's own 400 / 431, connection closed.
  t.regex(await rawHttp(sock, 'HELLO\x00\xff\r\n\r\n'), /^HTTP\/1\.1 400 Bad Request/);
  t.regex(
    await rawHttp(sock, `GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: ${'h'.repeat(32 * 1024)}\r\n\r\n`),
    /^HTTP\/1\.1 431 /,
  );
  // Unknown paths and methods: 404 with a code.
  const r4 = await request(sock, 'DELETE', '/v1/status');
  t.is(r4.status, 404);
  t.is(JSON.parse(r4.body).error.code, 'API_NOT_FOUND');
  const r5 = await request(sock, 'GET', `/v1/vms/${encodeURIComponent('\u0000\n<script>')}`);
  t.is(r5.status, 404);
  t.is(JSON.parse(r5.body).error.code, 'VM_NOT_FOUND');

  // Half-open requests (headers never finished) do not hold up others.
  const half: net.Socket[] = [];
  t.teardown(() => half.forEach((s) => s.destroy()));
  for (let i = 0; i < 100; i++) {
    const s = net.createConnection({ path: sock });
    s.on('error', () => undefined);
    s.write('GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    half.push(s);
  }
  // A flood: 2000 requests, 50 at a time.
  const started = Date.now();
  let okCount = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
  t.teardown(() => agent.destroy());
  await Promise.all(
    Array.from(
      { length: 2000 },
      () =>
        new Promise<void>((resolve, reject) => {
          http
            .get({ socketPath: sock, path: '/v1/status', agent }, (res) => {
              res.resume();
              res.on('end', () => {
                if (res.statusCode === 200) okCount++;
                resolve();
              });
            })
            .on('error', reject);
        }),
    ),
  );
  const floodMs = Date.now() - started;
  t.is(okCount, 2000);
  const s = await request(sock, 'GET', '/v1/status');
  t.is(s.status, 200);
  const mem = d.memory();
  t.log(
    `API: 2000 requests in ${floodMs} ms beside 100 half-open connections; RSS ${memStart.rssKb} → ${mem.rssKb} kB, peak ${mem.hwmKb} kB`,
  );
  t.true(mem.hwmKb < 350 * 1024);
});

test('event stream: a client that never reads is dropped past api.eventBufferBytes; others go on', async (t) => {
  const { d, guarded } = await setup(t, { api: { eventBufferBytes: 16384, maxEventClients: 3 } });
  const memStart = d.memory();
  // A WebSocket client that completes the handshake and then never reads.
  const deaf = net.createConnection({ path: d.apiSocket });
  deaf.on('error', () => undefined);
  t.teardown(() => deaf.destroy());
  deaf.write(UPGRADE);
  await new Promise<void>((resolve) => {
    let head = '';
    const on = (c: Buffer): void => {
      head += c.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      deaf.off('data', on);
      deaf.pause();
      resolve();
    };
    deaf.on('data', on);
  });
  // A client that reads.
  const events: JsonObject[] = [];
  const ws = new WebSocket(`ws+unix://${d.apiSocket}:/v1/events`);
  t.teardown(() => ws.terminate());
  ws.on('message', (m) => events.push(JSON.parse(String(m)) as JsonObject));
  await new Promise((r) => ws.once('open', r));
  // One that sends more than the server's 4 KiB frame bound: closed with 1009.
  const loud = new WebSocket(`ws+unix://${d.apiSocket}:/v1/events`);
  // The server may close while the oversized frame is still being written: EPIPE on this side is
  // part of being closed, and the close code below is what is checked.
  loud.on('error', () => undefined);
  await new Promise((r) => loud.once('open', r));
  const loudClosed = new Promise<number>((r) => loud.once('close', (code) => r(code)));
  loud.send('x'.repeat(10000));
  t.is(await loudClosed, 1009);

  // Refusals make events (a refusal and an alert each): send them until the deaf client is dropped.
  const { client } = await LineClient.negotiated(guarded);
  t.teardown(() => client.close());
  const id = 'i'.repeat(70);
  let sent = 0;
  const dropped = d.waitForLog((l) => l.message === 'dropping a slow event-stream client', 120000);
  let isDropped = false;
  void dropped.then(
    () => (isDropped = true),
    () => undefined,
  );
  // Small batches, each awaited by the reading client, so that it never falls a batch behind.
  while (!isDropped && sent < 20000) {
    const batch: string[] = [];
    for (let i = 0; i < 10; i++, sent++)
      batch.push(
        `{"execute":"human-monitor-command","arguments":{"command-line":"device_add pc-dimm,id=${id}${sent},memdev=m,addr=\\"unterminated"},"id":${sent}}`,
      );
    client.socket.write(batch.join('\n') + '\n');
    await client.next((m) => m.id === sent - 1, 30000);
    const want = sent;
    await waitUntil(
      () => events.filter((e) => e.type === 'refusal').length >= want,
      'the reading client to catch up',
      10000,
      5,
    );
  }
  const line = await dropped;
  t.true(Number(line.fields.buffered) <= 16384);
  const refusalsSeen = await waitUntil(
    () => {
      const n = events.filter((e) => e.type === 'refusal').length;
      return n === sent ? n : null;
    },
    'every refusal event on the reading client',
    20000,
  ).catch((err: Error) => {
    t.log(
      `sent ${sent}, refusal events ${events.filter((e) => e.type === 'refusal').length}, all events ${events.length}, ws state ${ws.readyState}`,
      events.slice(-3),
    );
    t.log(
      d
        .lines()
        .filter((l) => l.level !== 'info')
        .slice(-10)
        .map((l) => l.raw),
    );
    throw err;
  });
  t.is(refusalsSeen, sent);
  t.is(ws.readyState, WebSocket.OPEN);
  const last = events.filter((e) => e.type === 'refusal').at(-1)!;
  t.like(last, {
    type: 'refusal',
    vm: 'target',
    command: 'human-monitor-command',
    effective: 'device_add',
    code: 'REFUSED_MEMORY_PLACEMENT_UNKNOWN',
  });
  const mem = d.memory();
  t.log(
    `event stream: ${sent} refusals until the deaf client was dropped; RSS ${memStart.rssKb} → ${mem.rssKb} kB, peak ${mem.hwmKb} kB`,
  );
  t.true(mem.hwmKb < 350 * 1024);

  // Past api.maxEventClients (3): 503. The reading client is one; two more fill the rest.
  const more = [
    new WebSocket(`ws+unix://${d.apiSocket}:/v1/events`),
    new WebSocket(`ws+unix://${d.apiSocket}:/v1/events`),
  ];
  t.teardown(() => more.forEach((w) => w.terminate()));
  await Promise.all(more.map((w) => new Promise((r) => w.once('open', r))));
  t.regex(await rawHttp(d.apiSocket, UPGRADE), /^HTTP\/1\.1 503 Service Unavailable\r\n/);
});
