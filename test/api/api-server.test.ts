/**
 * The control API server on its own, with handlers written here: routes and status codes, body
 * bounds, the bearer token on TCP, the event stream and its bounds, close().
 */
import test from 'ava';
import { existsSync, lstatSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { ApiServer, apiError, remoteKey, tokenMatches, type ApiHandlers } from '../../agent/api/api-server';
import { EventBus } from '../../agent/daemon/event-bus';
import type { Logger } from '../../agent/core/logger';
import { tempDir } from '../helpers/tmp';

const TOKEN = 'tok-0123456789abcdef-0123456789abcdef';

function recordingLogger(lines: string[]): Logger {
  const l: Logger = {
    error: (m) => void lines.push(`error ${m}`),
    warn: (m) => void lines.push(`warn ${m}`),
    info: () => undefined,
    debug: () => undefined,
    child: () => l,
  };
  return l;
}

/** Routing fixtures: the server only serializes what the handlers answer, so partial documents do. */
function handlers(calls: string[]): ApiHandlers {
  const fixtures = {
    status: () => ({ host: { physBits: 40 }, vms: [] }),
    host: () => ({ physBits: 40 }),
    vm: (name: string) => (calls.push(`vm ${name}`), name === 'web 1' ? { name } : null),
    checkMigration: async (body: { vm?: unknown }) => {
      calls.push(`check ${JSON.stringify(body)}`);
      if (body.vm === 'boom') throw new Error('exploded');
      if (body.vm === 'missing') throw apiError(404, 'VM_NOT_FOUND', "no VM named 'missing'");
      return { allowed: true };
    },
    fleet: async () => ({ hosts: [], guests: [] }),
    advise: async (vm?: string, poolBits?: number) => ({ vm: vm ?? null, poolBits: poolBits ?? null }),
    libvirtEvent: (body: unknown) => void calls.push(`libvirt ${JSON.stringify(body)}`),
    incoming: (notice: unknown) => (
      calls.push(`incoming ${JSON.stringify(notice)}`),
      { accepted: true, matched: null }
    ),
  };
  return fixtures as unknown as ApiHandlers;
}

interface Served {
  api: ApiServer;
  events: EventBus;
  socket: string;
  calls: string[];
  logs: string[];
}

async function serve(
  t: { teardown(fn: () => unknown): void },
  opts: {
    maxBodyBytes?: number;
    eventBufferBytes?: number;
    maxEventClients?: number;
    mode?: number;
    idleTimeoutMs?: number;
    maxConnections?: number;
    maxConnectionsPerAddress?: number;
    firstRequestMs?: number;
    maxPeerEventClients?: number;
    eventPingMs?: number;
  } = {},
): Promise<Served> {
  const dir = tempDir('physbits-api-');
  const calls: string[] = [];
  const logs: string[] = [];
  const events = new EventBus();
  const api = new ApiServer({
    handlers: handlers(calls),
    events,
    logger: recordingLogger(logs),
    maxBodyBytes: opts.maxBodyBytes ?? 1024,
    maxEventClients: opts.maxEventClients ?? 4,
    eventBufferBytes: opts.eventBufferBytes ?? 64 * 1024,
    idleTimeoutMs: opts.idleTimeoutMs,
    maxConnections: opts.maxConnections,
    maxConnectionsPerAddress: opts.maxConnectionsPerAddress,
    firstRequestMs: opts.firstRequestMs,
    maxPeerEventClients: opts.maxPeerEventClients,
    eventPingMs: opts.eventPingMs,
  });
  const socket = join(dir, 'api.sock');
  await api.listenUnix(socket, opts.mode ?? 0o660);
  t.teardown(() => api.close());
  return { api, events, socket, calls, logs };
}

function call(
  target: { socketPath: string } | { port: number },
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const where = 'socketPath' in target ? { socketPath: target.socketPath } : { host: '127.0.0.1', port: target.port };
    const req = http.request({ ...where, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('tokenMatches: only "Bearer <exactly the token>"', (t) => {
  const table: Array<[string | undefined, boolean]> = [
    [`Bearer ${TOKEN}`, true],
    [`bearer ${TOKEN}`, true],
    [`Bearer   ${TOKEN}  `, true],
    [`Bearer ${TOKEN}x`, false],
    [`Bearer ${TOKEN.slice(1)}`, false],
    [`Basic ${TOKEN}`, false],
    [TOKEN, false],
    ['Bearer', false],
    ['', false],
    [undefined, false],
    [`Bearer ${TOKEN} extra`, false],
  ];
  for (const [header, ok] of table) t.is(tokenMatches(header, TOKEN), ok, String(header));
  t.false(tokenMatches('Bearer ', ''));
});

test('UNIX socket: mode, routes, codes and body bounds', async (t) => {
  const s = await serve(t, { mode: 0o640 });
  t.is(lstatSync(s.socket).mode & 0o777, 0o640);
  const u = { socketPath: s.socket };
  t.deepEqual(await call(u, 'GET', '/v1/status'), { status: 200, json: { host: { physBits: 40 }, vms: [] } });
  t.deepEqual(await call(u, 'GET', '/v1/host'), { status: 200, json: { physBits: 40 } });
  t.deepEqual(await call(u, 'GET', '/v1/vms/web%201'), { status: 200, json: { name: 'web 1' } });
  t.deepEqual(await call(u, 'GET', '/v1/vms/nope'), {
    status: 404,
    json: { error: { code: 'VM_NOT_FOUND', message: "no VM named 'nope'" } },
  });
  t.deepEqual(await call(u, 'GET', '/v1/vms/a%20b%0A'), {
    status: 404,
    json: { error: { code: 'VM_NOT_FOUND', message: "no VM named 'a b\n'" } },
  });
  t.deepEqual(await call(u, 'GET', '/v1/vms/%E0%A4%A'), {
    status: 400,
    json: { error: { code: 'API_BAD_REQUEST', message: 'the VM name is not valid percent-encoded UTF-8' } },
  });
  t.deepEqual(await call(u, 'GET', '/v1/advise?vm=web1&poolBits=39'), {
    status: 200,
    json: { vm: 'web1', poolBits: 39 },
  });
  for (const bad of ['0', '65', '39.5', 'x']) {
    t.like(
      await call(u, 'GET', `/v1/advise?poolBits=${bad}`),
      { status: 400, json: { error: { code: 'API_BAD_REQUEST' } } },
      bad,
    );
  }
  t.deepEqual(await call(u, 'POST', '/v1/check-migration', '{"vm":"web1","peer":"hv2"}'), {
    status: 200,
    json: { allowed: true },
  });
  t.deepEqual(await call(u, 'POST', '/v1/check-migration', '{"vm":"missing","peer":"hv2"}'), {
    status: 404,
    json: { error: { code: 'VM_NOT_FOUND', message: "no VM named 'missing'" } },
  });
  t.deepEqual(await call(u, 'POST', '/v1/check-migration', '{"vm":"boom","peer":"hv2"}'), {
    status: 500,
    json: { error: { code: 'INTERNAL', message: 'exploded' } },
  });
  t.deepEqual(s.logs, ['error API request failed']);
  t.deepEqual(await call(u, 'POST', '/v1/check-migration', '{"vm":'), {
    status: 400,
    json: { error: { code: 'API_BAD_JSON', message: 'request body is not JSON' } },
  });
  t.deepEqual(await call(u, 'POST', '/v1/check-migration', JSON.stringify({ vm: 'x'.repeat(2000) })), {
    status: 413,
    json: { error: { code: 'API_BODY_TOO_LARGE', message: 'request body larger than 1024 bytes' } },
  });
  t.deepEqual(await call(u, 'POST', '/v1/libvirt-events', '{"domain":"web1","operation":"started"}'), {
    status: 202,
    json: { accepted: true },
  });
  t.deepEqual(await call(u, 'PUT', '/v1/status'), {
    status: 404,
    json: { error: { code: 'API_NOT_FOUND', message: 'no such endpoint: PUT /v1/status' } },
  });
  t.deepEqual(s.calls, [
    'vm web 1',
    'vm nope',
    'vm a b\n',
    'check {"vm":"web1","peer":"hv2"}',
    'check {"vm":"missing","peer":"hv2"}',
    'check {"vm":"boom","peer":"hv2"}',
    'libvirt {"domain":"web1","operation":"started"}',
  ]);
});

test('TCP: the bearer token on every request and on the event stream; reads only', async (t) => {
  const s = await serve(t);
  const addr = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  t.is(addr.address, '127.0.0.1');
  const tcp = { port: addr.port };
  const auth = { authorization: `Bearer ${TOKEN}` };
  t.deepEqual(await call(tcp, 'GET', '/v1/status'), {
    status: 401,
    json: { error: { code: 'API_UNAUTHORIZED', message: 'a valid bearer token is required' } },
  });
  t.is((await call(tcp, 'GET', '/v1/status', undefined, { authorization: 'Bearer nope' })).status, 401);
  t.is((await call(tcp, 'GET', '/v1/status', undefined, auth)).status, 200);
  t.deepEqual(await call(tcp, 'POST', '/v1/libvirt-events', '{}', auth), {
    status: 403,
    json: { error: { code: 'API_READ_ONLY', message: 'the TCP API only serves reads and POST /v1/incoming' } },
  });
  t.deepEqual(s.calls, []);
  // The one write peers may send: a guard's notice of a guest migrating here, with the token, bounded.
  const notice = '{"vm": "web1", "port": "4444", "physBits": 46, "from": "hv1"}';
  t.is((await call(tcp, 'POST', '/v1/incoming', notice)).status, 401);
  t.deepEqual(await call(tcp, 'POST', '/v1/incoming', notice, auth), {
    status: 202,
    json: { accepted: true, matched: null },
  });
  t.deepEqual(s.calls, ['incoming {"vm":"web1","port":"4444","physBits":46,"from":"hv1"}']);
  t.deepEqual(await call(tcp, 'POST', '/v1/incoming', '{"vm": "web1", "physBits": 65}', auth), {
    status: 400,
    json: {
      error: { code: 'API_BAD_REQUEST', message: 'incoming notice: physBits must be a whole number from 1 to 64' },
    },
  });
  const big = JSON.stringify({ vm: 'web1', physBits: 46, pad: 'x'.repeat(5000) });
  t.is((await call(tcp, 'POST', '/v1/incoming', big, auth)).status, 413);
  t.is(s.calls.length, 1);
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${addr.port}/v1/events`);
    ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => undefined);
  });
  t.is(status, 401);
});

function openWs(socket: string, path = '/v1/events'): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws+unix://${socket}:${path}`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

test('event stream: every event to every client; a client that does not read is dropped', async (t) => {
  const s = await serve(t, { eventBufferBytes: 4096, maxEventClients: 3 });
  const reader = await openWs(s.socket);
  const got: Array<Record<string, unknown>> = [];
  reader.on('message', (m) => got.push(JSON.parse(String(m)) as Record<string, unknown>));
  // A raw client that completes the upgrade and stops reading.
  const deaf = net.createConnection({ path: s.socket });
  deaf.on('error', () => undefined);
  t.teardown(() => deaf.destroy());
  deaf.write(
    'GET /v1/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  );
  await new Promise<void>((resolve) =>
    deaf.once('data', () => {
      deaf.pause();
      resolve();
    }),
  );
  s.events.publish({ type: 'config', message: 'hello', time: '2026-01-01T00:00:00.000Z' });
  await new Promise<void>((r) => {
    const check = (): void => void (got.length ? r() : setTimeout(check, 5));
    check();
  });
  t.deepEqual(got[0], { type: 'config', message: 'hello', time: '2026-01-01T00:00:00.000Z' });
  // Publish in small steps the reader keeps up with, until the deaf one is dropped.
  let n = 0;
  while (!s.logs.includes('warn dropping a slow event-stream client') && n < 5000) {
    s.events.publish({
      type: 'refusal',
      vm: 'web1',
      command: 'device_add',
      effective: 'device_add',
      code: 'REFUSED_ABOVE_HOST_LIMIT',
      message: `${++n} ${'x'.repeat(1000)}`,
    });
    if (n % 4 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  t.true(s.logs.includes('warn dropping a slow event-stream client'), `${n} events`);
  t.log(`deaf client dropped after ${n} events of ~1 KiB`);
  await new Promise((r) => setTimeout(r, 200));
  t.is(reader.readyState, WebSocket.OPEN);
  t.is(got.length, n + 1);
  t.deepEqual(
    got.slice(1).map((e) => parseInt(String(e.message), 10)),
    Array.from({ length: n }, (_, i) => i + 1),
  );
  // Room again below maxEventClients: two more connect; the third is turned away.
  const more = [await openWs(s.socket), await openWs(s.socket)];
  t.teardown(() => more.forEach((w) => w.terminate()));
  const refused = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws+unix://${s.socket}:/v1/events`);
    ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => undefined);
  });
  t.is(refused, 503);
  const elsewhere = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws+unix://${s.socket}:/v1/status`);
    ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => undefined);
  });
  t.is(elsewhere, 404);
  // What clients send is ignored, up to 4 KiB a frame; more closes them with 1009.
  more[0].send('ignored');
  const closed = new Promise<number>((r) => more[1].once('close', (code) => r(code)));
  more[1].send('x'.repeat(5000));
  t.is(await closed, 1009);
  reader.terminate();
});

test('close(): clients are cut, the socket file goes, later events are harmless', async (t) => {
  const s = await serve(t);
  const ws = await openWs(s.socket);
  const closed = new Promise<void>((r) => ws.once('close', () => r()));
  await s.api.close();
  await closed;
  t.false(existsSync(s.socket));
  t.notThrows(() => s.events.publish({ type: 'config', message: 'after close' }));
  await t.throwsAsync(call({ socketPath: s.socket }, 'GET', '/v1/status'), { code: 'ENOENT' });
});

/** A raw client socket: what it received, and a promise of its close. */
interface Raw {
  socket: net.Socket;
  received: () => string;
  closed: Promise<number>;
}

/** Connects to 127.0.0.1:port (from `localAddress` when given); resolves once connected. */
function connectRaw(t: { teardown(fn: () => void): void }, port: number, localAddress?: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    t.teardown(() => socket.destroy());
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('error', () => undefined);
    const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
    socket.once('connect', () => resolve({ socket, received: () => text, closed }));
    socket.once('error', reject);
  });
}

/** The milliseconds until `raw` closed; fails naming `what` when it is still open after `boundMs`. */
async function closedWithin(raw: Raw, boundMs: number, what: string): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still open after ${boundMs} ms`)), boundMs);
  });
  try {
    return await Promise.race([raw.closed, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** Writes `text` to `raw` one byte every 100 ms, round and round, until it closes. */
function trickle(raw: Raw, text: string): void {
  let i = 0;
  const timer = setInterval(() => {
    if (!raw.socket.destroyed) raw.socket.write(text[i++ % text.length]);
  }, 100);
  void raw.closed.then(() => clearInterval(timer));
}

/** One keep-alive GET /v1/host on `raw`; resolves with the status line once the body has arrived. */
function getOn(raw: Raw): Promise<string> {
  const before = raw.received().length;
  raw.socket.write(`GET /v1/host HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    const onData = () => {
      const text = raw.received().slice(before);
      if (!text.endsWith('{"physBits":40}')) return;
      raw.socket.off('data', onData);
      resolve(text.split('\r\n')[0]);
    };
    raw.socket.on('data', onData);
    void raw.closed.then(() => reject(new Error(`connection closed before a reply: ${raw.received().slice(before)}`)));
  });
}

test('TCP: a connection without a complete request within api.idleTimeoutMs is closed: silent, slow headers, a slow second request', async (t) => {
  const idleTimeoutMs = 1000;
  const s = await serve(t, { idleTimeoutMs });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const silent = await connectRaw(t, port);
  const slowHeaders = await connectRaw(t, port);
  slowHeaders.socket.write('GET /v1/host HTTP/1.1\r\nHost: x\r\n');
  trickle(slowHeaders, 'X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n');
  const keptAlive = await connectRaw(t, port);
  t.is(await getOn(keptAlive), 'HTTP/1.1 200 OK');
  keptAlive.socket.write('GET /v1/host HTTP/1.1\r\n');
  trickle(keptAlive, 'X-Slow: b\r\n');

  // Generous bound: ten times the configured window (0.1 kept such connections 30 s and more).
  const bound = 10 * idleTimeoutMs;
  const times = {
    silent: await closedWithin(silent, bound, 'a connection that never sent a byte'),
    slowHeaders: await closedWithin(slowHeaders, bound, 'a connection sending its headers a byte at a time'),
    keptAlive: await closedWithin(keptAlive, bound, 'a keep-alive connection trickling its second request'),
  };
  t.log(`closed after (ms, window ${idleTimeoutMs}): ${JSON.stringify(times)}`);
  t.regex(silent.received(), /^(HTTP\/1\.1 408 |$)/, 'a silent connection gets no more than a 408');
  t.regex(slowHeaders.received(), /^HTTP\/1\.1 408 /);
  t.deepEqual(s.calls, [], 'no handler saw the incomplete requests');
});

test('UNIX socket: a silent connection and a slow body are closed too', async (t) => {
  const s = await serve(t, { idleTimeoutMs: 1000 });
  const connectUnix = () =>
    new Promise<Raw>((resolve, reject) => {
      const started = Date.now();
      const socket = net.connect(s.socket);
      t.teardown(() => socket.destroy());
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      socket.on('error', () => undefined);
      const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
      socket.once('connect', () => resolve({ socket, received: () => text, closed }));
      socket.once('error', reject);
    });
  const silent = await connectUnix();
  const slowBody = await connectUnix();
  slowBody.socket.write('POST /v1/check-migration HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n');
  trickle(slowBody, ' ');
  const times = {
    silent: await closedWithin(silent, 10_000, 'a silent UNIX-socket client'),
    slowBody: await closedWithin(slowBody, 10_000, 'a UNIX-socket client sending its body a byte at a time'),
  };
  t.log(`closed after (ms, window 1000): ${JSON.stringify(times)}`);
  t.regex(slowBody.received(), /^HTTP\/1\.1 408 /);
  t.deepEqual(s.calls, [], 'the handler never got the incomplete body');
});

test('TCP: api.maxConnections: a new connection displaces the oldest unauthenticated one; authenticated ones keep their slots', async (t) => {
  const s = await serve(t, { idleTimeoutMs: 60_000, maxConnections: 3, maxConnectionsPerAddress: 3 });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const idle = [
    await connectRaw(t, port),
    await connectRaw(t, port, '127.0.0.2'),
    await connectRaw(t, port, '127.0.0.3'),
  ];
  const late = await connectRaw(t, port, '127.0.0.4');
  await closedWithin(idle[0], 10_000, 'the oldest idle connection, displaced');
  t.is(idle[0].received(), '');
  t.is(await getOn(late), 'HTTP/1.1 200 OK');
  t.is(await getOn(idle[1]), 'HTTP/1.1 200 OK');
  t.is(await getOn(idle[2]), 'HTTP/1.1 200 OK');
  t.true(
    s.logs.some((l) => l.startsWith('warn API (TCP) connection displaced')),
    s.logs.join('\n'),
  );
  // Three authenticated connections now hold every slot: a fourth is closed on arrival, untouched.
  const extra = await connectRaw(t, port, '127.0.0.5');
  await closedWithin(extra, 10_000, 'the connection past api.maxConnections');
  t.is(extra.received(), '');
  for (const raw of [late, idle[1], idle[2]]) t.is(await getOn(raw), 'HTTP/1.1 200 OK');
  late.socket.destroy();
  await late.closed;
  const served = await retryUntilServed(t, port, '127.0.0.6');
  t.is(served, 'HTTP/1.1 200 OK');
});

test("TCP: api.maxConnectionsPerAddress: a source past it displaces its own oldest idle connection, never another source's", async (t) => {
  const s = await serve(t, { idleTimeoutMs: 60_000, maxConnections: 10, maxConnectionsPerAddress: 2 });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const other = await connectRaw(t, port, '127.0.0.6');
  const mine = [await connectRaw(t, port, '127.0.0.5'), await connectRaw(t, port, '127.0.0.5')];
  const third = await connectRaw(t, port, '127.0.0.5');
  await closedWithin(mine[0], 10_000, 'the oldest connection from 127.0.0.5');
  t.is(mine[0].received(), '');
  t.is(await getOn(third), 'HTTP/1.1 200 OK');
  t.is(await getOn(mine[1]), 'HTTP/1.1 200 OK');
  t.is(await getOn(other), 'HTTP/1.1 200 OK');
  // Both of 127.0.0.5's slots are authenticated now: a third connection from it is refused.
  const fourth = await connectRaw(t, port, '127.0.0.5');
  await closedWithin(fourth, 10_000, 'a connection past the per-source limit of authenticated ones');
  t.is(fourth.received(), '');
  t.true(
    s.logs.some((l) => l.startsWith('warn API (TCP) connection refused: the per-source limit is reached')),
    s.logs.join('\n'),
  );
});

test('TCP: authenticated requests are served while 256 idle connections from 16 addresses hold every slot', async (t) => {
  // Deadlines long enough that the idle connections hold their slots throughout (the deadline itself
  // is tested below): displacement alone must let the authenticated requests in.
  const s = await serve(t, { idleTimeoutMs: 60_000, firstRequestMs: 60_000 });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const idle: Raw[] = [];
  for (let a = 1; a <= 16; a++)
    for (let i = 0; i < 16; i++) idle.push(await connectRaw(t, port, `127.0.7.${a}`).catch(() => null as never));
  t.is(idle.filter((r) => !r.socket.destroyed).length, 256, 'every idle connection was taken');
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const started = Date.now();
    const raw = await connectRaw(t, port, i % 2 ? '127.0.8.1' : '127.0.7.3');
    t.is(await getOn(raw), 'HTTP/1.1 200 OK');
    times.push(Date.now() - started);
  }
  t.log(`authenticated requests served in (ms): ${times.join(', ')}`);
});

test('TCP: api.firstRequestMs: a connection that sends no complete request is closed with 408 after it', async (t) => {
  const s = await serve(t, { idleTimeoutMs: 60_000, firstRequestMs: 500 });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const silent = await connectRaw(t, port);
  const slow = await connectRaw(t, port);
  slow.socket.write('GET /v1/host HTTP/1.1\r\n');
  trickle(slow, 'X-Slow: a\r\n');
  const times = [
    await closedWithin(silent, 5000, 'a silent connection'),
    await closedWithin(slow, 5000, 'a connection trickling its headers'),
  ];
  t.log(`closed after (ms, deadline 500): ${times.join(', ')}`);
  t.regex(silent.received(), /^HTTP\/1\.1 408 /);
  t.regex(slow.received(), /^HTTP\/1\.1 408 /);
  t.deepEqual(s.calls, []);
});

/** Connects from `localAddress` until a request is served (the server may not have seen a close yet). */
async function retryUntilServed(
  t: { teardown(fn: () => void): void },
  port: number,
  localAddress: string,
): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const raw = await connectRaw(t, port, localAddress);
    try {
      return await getOn(raw);
    } catch (err) {
      raw.socket.destroy();
      if (Date.now() > deadline)
        throw new Error(`no connection from ${localAddress} served within 10 s: ${String(err)}`);
    }
  }
}

test('remoteKey: an IPv4-mapped IPv6 address is its IPv4 address', (t) => {
  t.is(remoteKey('::ffff:10.0.0.1'), '10.0.0.1');
  t.is(remoteKey('10.0.0.1'), '10.0.0.1');
  t.is(remoteKey('2001:DB8::1'), '2001:db8::1');
  t.is(remoteKey(undefined), '?');
});

test('event-stream slots: TCP clients fill only their own; a client that never answers pings is cut off', async (t) => {
  const s = await serve(t, { maxEventClients: 2, maxPeerEventClients: 3, eventPingMs: 300 });
  const { port } = await s.api.listenTcp('127.0.0.1:0', TOKEN);
  const upgrade = (url: string, headers: Record<string, string> = {}) =>
    new Promise<WebSocket | number>((resolve) => {
      const ws = new WebSocket(url, { headers });
      t.teardown(() => ws.terminate());
      ws.once('open', () => resolve(ws));
      ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => undefined);
    });
  const auth = { authorization: `Bearer ${TOKEN}` };
  const tcp = [];
  for (let i = 0; i < 4; i++) tcp.push(await upgrade(`ws://127.0.0.1:${port}/v1/events`, auth));
  t.deepEqual(
    tcp.map((w) => (typeof w === 'number' ? w : 101)),
    [101, 101, 101, 503],
    'the fourth TCP client finds the TCP slots full',
  );
  const local = [await upgrade(`ws+unix://${s.socket}:/v1/events`), await upgrade(`ws+unix://${s.socket}:/v1/events`)];
  t.true(
    local.every((w) => typeof w !== 'number'),
    'the local socket still has its own slots',
  );
  t.is(await upgrade(`ws+unix://${s.socket}:/v1/events`), 503);

  // A client that completes the upgrade by hand and then never answers a ping.
  const deaf = net.connect({ host: '127.0.0.1', port });
  t.teardown(() => deaf.destroy());
  (tcp[0] as WebSocket).close();
  await new Promise((r) => setTimeout(r, 100));
  deaf.write(
    `GET /v1/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`,
  );
  let text = '';
  deaf.on('data', (c: Buffer) => (text += c.toString('latin1')));
  const started = Date.now();
  await new Promise<void>((resolve) => deaf.once('close', () => resolve()));
  const ms = Date.now() - started;
  t.regex(text, /^HTTP\/1\.1 101 /);
  t.log(`a deaf event-stream client was cut off after ${ms} ms (pings every 300 ms)`);
  t.true(ms < 3000, `${ms} ms`);
  t.true(
    s.logs.some((l) => l.startsWith('warn event-stream client did not answer a ping')),
    s.logs.join('\n'),
  );
  // The clients that answer pings (the ws library does) are still there.
  t.is((tcp[1] as WebSocket).readyState, WebSocket.OPEN);
  t.is((local[0] as WebSocket).readyState, WebSocket.OPEN);
});
