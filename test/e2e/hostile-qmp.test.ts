/**
 * Hostile QMP peers behind the sockets physbitsd watches: garbage, invalid UTF-8, a 100 MB line,
 * a greeting that is not QMP, replies with unknown ids, a flood of events, a peer that hangs
 * half-way. Each one ends in a clear error code on its own VM in the status document (or, for the
 * flood, in a verdict that holds), a real guest beside them is not disturbed, and the daemon's
 * memory stays bounded.
 */
import test from 'ava';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { StatusDocument } from '../../agent/core/types';
import { LineClient, startDaemon, vmNamed, type JsonObject } from '../helpers/daemon';
import { DEFAULT_COMMANDS, startFakeQmp } from '../helpers/fake-qmp';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const GREETING =
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n';
const MiB = 1024 * 1024;

interface RawServer {
  connections: number;
  bytesSent: number;
  close(): Promise<void>;
}

/**
 * A QMP-shaped server written byte by byte: greets like QEMU 7.2, answers qmp_capabilities, then
 * hands the socket to `after` (called once per connection).
 */
async function rawServer(
  path: string,
  after: (sock: net.Socket, srv: RawServer) => void | Promise<void>,
  greeting: string | Buffer = GREETING,
): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const srv: RawServer = { connections: 0, bytesSent: 0, close: async () => undefined };
  const server = net.createServer((sock) => {
    srv.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    sock.write(greeting);
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString('latin1');
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.off('data', onData);
      let id = 'null';
      try {
        const cmd = JSON.parse(buf.slice(0, nl)) as { id?: unknown };
        if (cmd.id !== undefined) id = JSON.stringify(cmd.id);
      } catch {
        /* answered with no id */
      }
      sock.write(`{"return": {}, "id": ${id}}\r\n`);
      sock.on('data', () => undefined);
      void after(sock, srv);
    };
    sock.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  srv.close = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return srv;
}

/** Writes `total` bytes of `fill` with no newline, honouring back-pressure; stops when the peer goes. */
async function stream(sock: net.Socket, total: number, srv: RawServer): Promise<void> {
  const chunk = Buffer.alloc(64 * 1024, 'a');
  let sent = 0;
  while (sent < total && !sock.destroyed) {
    sent += chunk.length;
    srv.bytesSent += chunk.length;
    if (!sock.write(chunk)) {
      await new Promise<void>((r) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          r();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    }
  }
}

const errorOf = (doc: StatusDocument, vm: string): string | undefined => vmNamed(doc, vm)?.error?.code;

test('hostile QMP peers each end in their own error code; the real guest and the daemon are unharmed', async (t) => {
  // 300 000 events paced by their reader outlast AVA's default of 120 s between results on a loaded machine.
  t.timeout(600_000, 'the hostile peers and the event flood');
  const dir = tempDir('physbits-hostile-qmp-');
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  const calm = await startGuest({ dir: vms, name: 'calm', cpu: 'phys-bits=40' });
  t.teardown(() => calm.kill());

  const closers: Array<() => Promise<void>> = [];
  t.teardown(() => Promise.all(closers.map((c) => c())));
  const garbage = await startFakeQmp({ dir: vms, socketName: 'garbage.qmp', greeting: 'garbage' });
  const notQmp = await startFakeQmp({ dir: vms, socketName: 'notqmp.qmp', greeting: { hello: 'world', version: 1 } });
  let bogusReplies = 0;
  const unknownIds = await startFakeQmp({
    dir: vms,
    socketName: 'unknownids.qmp',
    script: Object.fromEntries(
      DEFAULT_COMMANDS.map((c) => [
        c,
        () => {
          bogusReplies++;
          return { reply: { return: {}, id: `not-yours-${bogusReplies}` } };
        },
      ]),
    ),
  });
  const stall = await startFakeQmp({
    dir: vms,
    socketName: 'stall.qmp',
    script: { 'query-cpus-fast': { stall: true }, 'qom-get': { stall: true } },
  });
  closers.push(
    () => garbage.close(),
    () => notQmp.close(),
    () => unknownIds.close(),
    () => stall.close(),
  );

  const badUtf8 = await rawServer(join(vms, 'badutf8.qmp'), (sock) => {
    sock.write(
      Buffer.concat([
        Buffer.from('{"return": "'),
        Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80]),
        Buffer.from('"}\r\n'),
      ]),
    );
  });
  const giant = await rawServer(join(vms, 'giant.qmp'), (sock, srv) => stream(sock, 100 * MiB, srv));
  const halfway = await rawServer(join(vms, 'halfway.qmp'), (sock) => {
    sock.write('{"return": {"status": "runn');
  });
  const binaryGreeting = await rawServer(
    join(vms, 'binary.qmp'),
    () => undefined,
    Buffer.from([0x00, 0x01, 0xff, 0x0a, 0x00, 0x0a]),
  );
  closers.push(
    () => badUtf8.close(),
    () => giant.close(),
    () => halfway.close(),
    () => binaryGreeting.close(),
  );

  // The flood: a well-formed guest that sends events as fast as the daemon takes them.
  const flood = await startFakeQmp({ dir: vms, socketName: 'flood.qmp', physBits: 40 });
  closers.push(() => flood.close());

  const d = await startDaemon({
    dir,
    // Stalled and silent peers are caught by the command timeout of the fact reads. It is the default
    // 5 s: the hostile peers write from this process, and on a loaded machine 1 MiB of the giant line
    // can take longer than 1 s to arrive (a QMP_TIMEOUT would then win over QMP_LINE_TOO_LONG). The
    // heartbeat waits longer still: the flood below keeps this process's event loop busy, and a
    // heartbeat timeout would drop the flooded VM's guarded clients along with its connection.
    config: { peers: [], qmp: { timeoutMs: 5000, heartbeatMs: 500, heartbeatTimeoutMs: 30000 } },
  });
  t.teardown(() => d.kill());
  const expected: Record<string, string> = {
    garbage: 'QMP_PROTOCOL',
    notqmp: 'QMP_PROTOCOL',
    binary: 'QMP_PROTOCOL',
    badutf8: 'QMP_PROTOCOL',
    unknownids: 'QMP_TIMEOUT',
    stall: 'QMP_TIMEOUT',
    halfway: 'QMP_TIMEOUT',
    giant: 'QMP_LINE_TOO_LONG',
  };
  const doc = await d.waitForStatus(
    (s) =>
      Object.keys(expected).every((vm) => (errorOf(s, vm) ?? 'PENDING') !== 'PENDING') &&
      !!vmNamed(s, 'calm')?.verdict &&
      !!vmNamed(s, 'flood')?.verdict,
    'every VM judged',
    60000,
  );
  const before = d.memory();
  const got = Object.fromEntries(Object.keys(expected).map((vm) => [vm, errorOf(doc, vm)]));
  t.deepEqual(got, expected);
  t.regex(vmNamed(doc, 'badutf8')!.error!.message, /invalid UTF-8/);
  t.regex(vmNamed(doc, 'notqmp')!.error!.message, /not a QMP server/);
  t.regex(vmNamed(doc, 'giant')!.error!.message, /1048576-byte line limit/);
  // Cut off near the bound, not after 100 MB: at most the bound plus socket buffers per attempt.
  t.true(
    giant.bytesSent < giant.connections * 4 * MiB,
    `${giant.bytesSent} bytes over ${giant.connections} connections`,
  );
  t.true(bogusReplies >= 1);

  // A guarded client on the flooded VM that never reads: dropped at guard.clientQueueBytes.
  const stuck = await LineClient.negotiated(join(dir, 'guard', 'flood.qmp'));
  stuck.client.socket.pause();
  t.teardown(() => stuck.client.close());
  const reader = (await LineClient.negotiated(join(dir, 'guard', 'flood.qmp'))).client;
  t.teardown(() => reader.close());
  const EVENTS = 300_000;
  const names = ['RTC_CHANGE', 'BALLOON_CHANGE', 'STOP', 'RESUME', 'VSERPORT_CHANGE'];
  const floodStart = Date.now();
  // Paced by the client that reads: each batch of 2000 events (about 300 KiB) reaches it before the
  // next is sent, so it is never more than a batch behind however slowly this process reads, while
  // the queue of the client that does not read only grows.
  const offsetIs = (offset: number) => (m: JsonObject) =>
    (m.data as { offset?: number } | undefined)?.offset === offset;
  for (let i = 0; i < EVENTS; i++) {
    flood.emitEvent(names[i % names.length], { offset: i, padding: 'x'.repeat(64) });
    if (i % 2000 === 1999 && i !== EVENTS - 1) await reader.next(offsetIs(i), 60000, `flood event ${i}`);
  }
  const floodMs = Date.now() - floodStart;
  await d.waitForLog((l) => l.message === 'QMP proxy client dropped' && l.fields.code === 'QMP_SLOW_PEER', 30000);
  // The reading client got the tail of the flood, in order.
  await reader.next(offsetIs(EVENTS - 1), 60000, `the last flood event (${EVENTS - 1})`);
  t.like(await reader.command('{"execute":"query-status","id":"after-flood"}', 'after-flood', 10000), {
    id: 'after-flood',
  });

  const after = await d.waitForStatus(
    (s) => !!vmNamed(s, 'flood')?.verdict && !vmNamed(s, 'flood')?.error,
    'flood VM judged after the flood',
    10000,
  );
  t.like(vmNamed(after, 'flood')!.verdict, { relation: 'equal', severity: 'ok' });
  t.like(vmNamed(after, 'calm')!.verdict, { relation: 'equal', severity: 'ok' });
  t.is(vmNamed(after, 'calm')!.error, undefined);
  t.deepEqual(Object.fromEntries(Object.keys(expected).map((vm) => [vm, errorOf(after, vm)])), expected);
  t.is(d.proc.exitCode, null);

  const end = d.memory();
  t.log(
    `inputs: ${Object.keys(expected).length} hostile peers, ${giant.connections} connections to the 100 MB line (${(giant.bytesSent / MiB).toFixed(1)} MiB sent in all), ${bogusReplies} replies with foreign ids, ${EVENTS} events in ${floodMs} ms`,
  );
  t.log(`daemon RSS ${before.rssKb} kB before the flood, ${end.rssKb} kB after, peak ${end.hwmKb} kB`);
  t.true(end.hwmKb < 350 * 1024, `peak ${end.hwmKb} kB`);
  t.true(end.rssKb < before.rssKb + 150 * 1024, `RSS grew from ${before.rssKb} to ${end.rssKb} kB`);
  t.is((await d.stop()).code, 0);
});
