/**
 * Who can reach what: the guarded sockets and the API socket appear only with their final modes (a
 * separate process watches the directories while they are created), the daemon's umask is left as
 * it was, /metrics listens on loopback by default, the TCP API wants the bearer token and serves
 * only reads, and VM names carrying control characters or shell metacharacters reach the log
 * escaped, one record per line, in every log format.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { describeEvent } from '../../agent/cli/watch-command';
import { parseConfig } from '../../agent/core/config';
import { parseLogLine, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { startFakeQmp } from '../helpers/fake-qmp';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

interface Seen {
  path: string;
  type: 'socket' | 'dir';
  mode: number;
}

/**
 * A separate process that lists `dirs` (and any .sock-* directory inside them) as fast as it can,
 * recording every socket and temporary directory it sees with its mode, until stopped.
 */
function watchModes(dirs: string[]): { stop(): Promise<{ seen: Seen[]; passes: number }>; kill(): Promise<void> } {
  const script = `
    const fs = require('fs'), path = require('path');
    const dirs = JSON.parse(process.argv[1]);
    const seen = new Map(); let passes = 0; let stop = false;
    process.on('message', () => { stop = true; });
    process.on('disconnect', () => process.exit(0));
    const look = (p) => { try { const st = fs.lstatSync(p); const type = st.isSocket() ? 'socket' : st.isDirectory() ? 'dir' : null;
      if (type) seen.set(p + ' ' + (st.mode & 0o777), { path: p, type, mode: st.mode & 0o777 }); return st; } catch { return null; } };
    const pass = () => { for (const d of dirs) { let names = []; try { names = fs.readdirSync(d); } catch {}
      for (const n of names) { const p = path.join(d, n); const st = look(p);
        if (st && st.isDirectory() && n.startsWith('.sock-')) { let inner = []; try { inner = fs.readdirSync(p); } catch {} for (const m of inner) look(path.join(p, m)); } } }
      passes++; };
    const loop = () => { for (let i = 0; i < 50; i++) pass(); if (stop) { process.send({ seen: [...seen.values()], passes }, () => process.exit(0)); } else setImmediate(loop); };
    loop();`;
  const child = spawn(process.execPath, ['-e', script, JSON.stringify(dirs)], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const result = new Promise<{ seen: Seen[]; passes: number }>((resolve) =>
    child.once('message', (m) => resolve(m as { seen: Seen[]; passes: number })),
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    async stop() {
      child.send('stop');
      return result;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

test('sockets are reachable only with their final modes; the umask is left alone', async (t) => {
  const dir = tempDir('physbits-access-');
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  mkdirSync(join(dir, 'guard'));
  const modes: Record<string, number> = { m600: 0o600, m640: 0o640, m660: 0o660, m755: 0o755, m200: 0o200 };
  // A guarded socket is 0600 less any owner bit the upstream lacks: group and other bits never carry over.
  const guardedMode = (name: string): number => modes[name] & 0o600;
  const guests = await Promise.all(Object.keys(modes).map((name) => startGuest({ dir: vms, name })));
  t.teardown(() => Promise.all(guests.map((g) => g.kill())));
  for (const g of guests) chmodSync(g.socket, modes[g.socket.replace(/^.*\/(m\d+)\.qmp$/, '$1')]);

  const watcher = watchModes([dir, join(dir, 'guard')]);
  t.teardown(() => watcher.kill());
  const umaskBefore = process.umask(0o022);
  process.umask(umaskBefore);
  const d = await startDaemon({ dir, config: { api: { mode: '0660' } } });
  t.teardown(() => d.kill());
  await waitUntil(
    async () => (await d.status()).vms.filter((v) => v.guardSocket).length === 5,
    'five guarded sockets',
    15000,
  );
  // Reconnects create the sockets again: kill and restart one guest meanwhile.
  await guests[0].kill();
  await waitUntil(async () => !(await d.status()).vms.find((v) => v.name === 'm600')?.guardSocket, 'm600 unguarded');
  guests[0] = await startGuest({ dir: vms, name: 'm600' });
  chmodSync(guests[0].socket, 0o600);
  await waitUntil(
    async () => (await d.status()).vms.filter((v) => v.guardSocket).length === 5,
    'five guarded sockets again',
    15000,
  );
  const { seen, passes } = await watcher.stop();

  const want = (p: string): number | undefined => {
    if (p === d.apiSocket) return 0o660;
    const m = /\/(m\d+)\.qmp$/.exec(p);
    return m ? guardedMode(m[1]) : undefined;
  };
  const sockets = seen.filter((s) => s.type === 'socket');
  // Inside a private .sock-* directory (0700, checked below) nobody else can reach the socket, so its
  // mode there does not matter; everywhere else it must be the final one.
  const wrong = sockets.filter((s) => !/\/\.sock-[^/]+\/s$/.test(s.path) && want(s.path) !== s.mode);
  const tmpDirs = seen.filter((s) => s.type === 'dir' && /\/\.sock-[^/]+$/.test(s.path));
  t.log(
    `${passes} directory passes; ${sockets.length} (socket, mode) pairs and ${tmpDirs.length} private directories seen`,
  );
  t.deepEqual(wrong, []);
  t.true(
    tmpDirs.every((s) => s.mode === 0o700),
    JSON.stringify(tmpDirs),
  );
  t.true(sockets.some((s) => s.path === d.apiSocket));
  for (const name of Object.keys(modes)) {
    const st = lstatSync(join(dir, 'guard', `${name}.qmp`));
    t.true(st.isSocket());
    t.is(st.mode & 0o777, guardedMode(name), name);
  }
  t.is(lstatSync(d.apiSocket).mode & 0o777, 0o660);
  // The daemon's umask after all that is the one it was started with.
  const umask = /^Umask:\s+([0-7]+)$/m.exec(readFileSync(`/proc/${d.pid}/status`, 'utf8'))![1];
  t.is(parseInt(umask, 8), umaskBefore);
});

test('metrics listen on loopback by default', async (t) => {
  t.is(parseConfig({}).metrics.listen, '127.0.0.1:9741');
  const example = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'config.example.json'), 'utf8')) as {
    metrics: { listen: string };
  };
  t.regex(example.metrics.listen, /^127\.0\.0\.1:/);
  const dir = tempDir('physbits-access-');
  const d = await startDaemon({ dir });
  t.teardown(() => d.kill());
  t.regex(d.metricsAddress(), /^127\.0\.0\.1:\d+$/);
});

function get(url: string, opts: { method?: string; token?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: opts.method ?? 'GET', headers: opts.token ? { authorization: opts.token } : {} },
      (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end(opts.method === 'POST' ? '{"vm":"x","peer":"y"}' : undefined);
  });
}

test('the TCP API: 401 without the right token, 403 for anything but GET', async (t) => {
  const dir = tempDir('physbits-access-');
  const token = 'peer-token-0123456789-abcdef-0123456789';
  writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
  const d = await startDaemon({ dir, config: { api: { listen: '127.0.0.1:0', tokenFile: join(dir, 'token') } } });
  t.teardown(() => d.kill());
  const addr = (await d.waitForLog((l) => l.message === 'peer API listening')).fields.address;
  t.regex(addr, /^127\.0\.0\.1:\d+$/);
  const base = `http://${addr}`;
  const unauthorized = { error: { code: 'API_UNAUTHORIZED', message: 'a valid bearer token is required' } };
  for (const auth of [
    undefined,
    'Bearer wrong-token-0123456789-abcdef',
    `Basic ${token}`,
    `Bearer ${token}x`,
    `Bearer ${token.slice(0, -1)}`,
    'Bearer',
  ]) {
    const r = await get(`${base}/v1/status`, { token: auth });
    t.is(r.status, 401, String(auth));
    t.deepEqual(JSON.parse(r.body), unauthorized);
  }
  const ok = await get(`${base}/v1/status`, { token: `Bearer ${token}` });
  t.is(ok.status, 200);
  t.is(JSON.parse(ok.body).host.physBits, 40);
  const post = await get(`${base}/v1/check-migration`, { method: 'POST', token: `Bearer ${token}` });
  t.is(post.status, 403);
  t.deepEqual(JSON.parse(post.body), {
    error: { code: 'API_READ_ONLY', message: 'the TCP API only serves reads and POST /v1/incoming' },
  });
  const postNoToken = await get(`${base}/v1/libvirt-events`, { method: 'POST' });
  t.is(postNoToken.status, 401);
  // The event stream over TCP wants the token too.
  const refused = await new Promise<number>((resolve) => {
    const ws = new WebSocket(`ws://${addr}/v1/events`);
    ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.on('error', () => undefined);
  });
  t.is(refused, 401);
  const ws = new WebSocket(`ws://${addr}/v1/events`, { headers: { authorization: `Bearer ${token}` } });
  t.teardown(() => ws.terminate());
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  t.is(ws.readyState, WebSocket.OPEN);
});

test('the TCP API: a silent or slow-headers connection gets 408 within api.firstRequestMs (2 s), a source past api.maxConnectionsPerAddress displaces its own oldest idle connection', async (t) => {
  const dir = tempDir('physbits-access-');
  writeFileSync(join(dir, 'token'), `${'t'.repeat(40)}\n`, { mode: 0o600 });
  const d = await startDaemon({
    dir,
    config: { api: { listen: '127.0.0.1:0', tokenFile: join(dir, 'token'), maxConnectionsPerAddress: 3 } },
  });
  t.teardown(() => d.kill());
  const addr = (await d.waitForLog((l) => l.message === 'peer API listening')).fields.address;
  const port = Number(addr.split(':')[1]);
  const open = (localAddress: string) =>
    new Promise<{ socket: net.Socket; text: () => string; closed: Promise<number> }>((resolve, reject) => {
      const started = Date.now();
      const socket = net.connect({ host: '127.0.0.1', port, localAddress });
      t.teardown(() => socket.destroy());
      let text = '';
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      const closed = new Promise<number>((done) => socket.once('close', () => done(Date.now() - started)));
      socket.once('connect', () => {
        socket.on('error', () => undefined);
        resolve({ socket, text: () => text, closed });
      });
      socket.once('error', reject);
    });
  const within = async (c: { closed: Promise<number> }, ms: number, what: string) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        c.closed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`${what}: still open after ${ms} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
  // Per source: three from 127.0.0.7 are held; a fourth displaces the oldest, 127.0.0.1 is still served.
  const first = await open('127.0.0.7');
  const held = [await open('127.0.0.7'), await open('127.0.0.7'), await open('127.0.0.7')];
  await within(first, 10_000, 'the oldest connection from 127.0.0.7');
  t.is(first.text(), '');
  const other = await get(`http://${addr}/v1/host`, { token: `Bearer ${'t'.repeat(40)}` });
  t.is(other.status, 200, 'another address is still served');
  // The first-request deadline: the silent ones close, and a client sending headers a byte a second gets 408.
  held[2].socket.write('GET /v1/host HTTP/1.1\r\n');
  const drip = setInterval(() => held[2].socket.write('X'), 1000);
  t.teardown(() => clearInterval(drip));
  // Generous bound: five times the default 2 s (0.1 kept a silent connection 30 s, slow headers ~32 s).
  const times = [
    await within(held[0], 10_000, 'a silent connection'),
    await within(held[1], 10_000, 'a second silent connection'),
    await within(held[2], 10_000, 'a slow-headers connection'),
  ];
  clearInterval(drip);
  t.log(`closed after (ms, api.firstRequestMs 2000): ${times.join(', ')}`);
  t.regex(held[2].text(), /^HTTP\/1\.1 408 /);
  await d.waitForLog((l) => l.message.startsWith('API (TCP) connection displaced'), 5000);
});

const HOSTILE_NAME = 'evil\nINJECTED level=error\r\u001b[31m$(reboot);`id`|rm -rf /\u0000';

for (const format of ['text', 'journal', 'json'] as const) {
  test(`VM names with control characters and shell metacharacters are escaped in the ${format} log`, async (t) => {
    const dir = tempDir('physbits-access-');
    const vms = join(dir, 'vms');
    mkdirSync(vms);
    // One name from QEMU (query-name), one from the socket's file name.
    const named = await startFakeQmp({ dir: vms, socketName: 'named.qmp', vm: { name: HOSTILE_NAME } });
    const fileNamed = await startFakeQmp({
      dir: vms,
      socketName: 'x\n$(id)\u001b[2J;`reboot`.qmp',
      greeting: 'garbage',
    });
    t.teardown(() => Promise.all([named.close(), fileNamed.close()]));
    const d: DaemonProcess = await startDaemon({ dir, config: { log: { format } } });
    t.teardown(() => d.kill());
    await d.waitForStatus(
      (s) => s.vms.length === 2 && s.vms.every((v) => v.error?.code !== 'PENDING'),
      'both VMs read',
    );
    await d.waitForLog((l) => l.message === 'verdict');
    await d.waitForLog((l) => l.message === 'VM unreachable');
    await d.stop();
    const raw = d.stderr();
    const lines = raw.split('\n').filter(Boolean);
    const unparsed = lines.filter((l) => !parseLogLine(l));
    t.deepEqual(unparsed, [], 'every line of the log is one whole record');
    t.false(/[\u0000-\u0008\u000b-\u001f\u007f]/.test(raw), 'no raw control character in the log');
    t.false(raw.includes('\nINJECTED'));
    const verdict = d.lines().find((l) => l.message === 'verdict')!;
    t.is(verdict.fields.vm, HOSTILE_NAME);
    const found = d
      .lines()
      .filter((l) => l.message === 'VM found')
      .map((l) => l.fields.socket);
    t.true(found.includes(fileNamed.socket), JSON.stringify(found));
  });
}

const BIDI_NAME = 'invoice\u202egpj.exe \u2066a\u2067b\u2068c\u2069 \u202a\u202b\u202c\u202d \u200e\u200f\u061c';
const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

test('bidirectional control characters in a VM name reach neither the log nor /metrics raw', async (t) => {
  const dir = tempDir('physbits-access-');
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  const named = await startFakeQmp({ dir: vms, socketName: 'bidi.qmp', vm: { name: BIDI_NAME } });
  t.teardown(() => named.close());
  const d: DaemonProcess = await startDaemon({ dir, config: { log: { format: 'text' } } });
  t.teardown(() => d.kill());
  await d.waitForStatus((s) => s.vms.length === 1 && !!s.vms[0].verdict, 'the VM judged');
  await d.waitForLog((l) => l.message === 'verdict');
  const metrics = await d.metrics();
  await d.stop();
  t.false(BIDI.test(d.stderr()), 'no raw bidirectional control in the log');
  t.false(BIDI.test(metrics), 'no raw bidirectional control in /metrics');
  const escaped =
    'invoice\\u202egpj.exe \\u2066a\\u2067b\\u2068c\\u2069 \\u202a\\u202b\\u202c\\u202d \\u200e\\u200f\\u061c';
  // The log's quoted values are JSON strings: the escape decodes to the name itself.
  t.is(d.lines().find((l) => l.message === 'verdict')!.fields.vm, BIDI_NAME);
  // The exposition format escapes the backslash itself: the label value is the escaped text.
  t.true(metrics.includes(`physbits_vm_severity{vm="${escaped.replace(/\\/g, '\\\\')}",`), metrics.slice(0, 3000));
});

test('physbitsctl watch shows control characters in VM names and messages as escapes', (t) => {
  const line = describeEvent({
    type: 'refusal',
    time: '2026-01-01T00:00:00.000Z',
    vm: HOSTILE_NAME,
    command: 'device_add',
    effective: 'device_add',
    code: 'REFUSED_X',
    message: 'a\u001b]0;title\u0007b\u009bc',
  });
  t.false(/[\u0000-\u001f\u007f-\u009f]/.test(line), line);
  t.is(
    line,
    '2026-01-01T00:00:00.000Z evil\\u000aINJECTED level=error\\u000d\\u001b[31m$(reboot);`id`|rm -rf /\\u0000: REFUSED device_add: REFUSED_X: a\\u001b]0;title\\u0007b\\u009bc',
  );
});
