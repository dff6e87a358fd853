/**
 * Migration uris against the real QEMU 7.2 and 10.0: each uri of the table is sent to a paused
 * guest's own QMP socket (no daemon) and QEMU's answer is compared with migrateTargets for that
 * version: a uri QEMU rejects at once is one physbits calls invalid, and where QEMU accepts it, a
 * listener of the test sees the connection exactly when physbits read that listener as the target
 * (`tcp:unix:PATH` reaches PATH on 7.2 and not on 10.0; `tcp:tcp:127.0.0.1:PORT` reaches neither:
 * both name host "tcp"; `channels` exist on 10.0 only). A malformed `rdma:` uri makes QEMU 10.0
 * exit, so it goes last. One guest at a time, a fresh one after every migration QEMU started.
 */
import test from 'ava';
import { mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { parseMigrateUri, migrateTargets, type MigrationTarget } from '../../agent/guard/migration-target';
import { LineClient } from '../helpers/daemon';
import { QEMUS, startGuest, type Guest } from '../helpers/qemu';

type JsonObject = Record<string, unknown>;

/** A listener that counts the connections it gets (and drops them, failing the migration). */
async function listener(
  t: { teardown(fn: () => unknown): void },
  where: { port: number; host: string } | { path: string },
) {
  let connections = 0;
  const server = net.createServer((s) => {
    connections += 1;
    s.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('path' in where) server.listen(where.path, resolve);
    else server.listen(where.port, where.host, resolve);
  });
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return {
    address: server.address(),
    connections: () => connections,
  };
}

for (const qemu of QEMUS) {
  test.serial(`${qemu.label}: migrate uris are accepted, rejected and routed as physbits reads them`, async (t) => {
    if (qemu.unavailable) {
      t.log(`skipped: ${qemu.unavailable}`);
      t.pass();
      return;
    }
    const dir = qemu.tempDir('physbits-migrate-uri-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    mkdirSync(join(dir, 'vms'), { recursive: true });
    // QEMU 7.2 takes no second migrate after a failed one ("duplicate yank instance"), and 10.0
    // stays paused after a completed one: a fresh guest after every migration QEMU started.
    let guest: Guest | null = null;
    let client!: LineClient;
    let version = '';
    let id = 0;
    const fresh = async () => {
      await guest?.kill();
      guest = await startGuest({ name: 'uris', dir: join(dir, 'vms'), memory: '16M', qemu });
      const negotiated = await LineClient.negotiated(guest.socket);
      client = negotiated.client;
      const v = (negotiated.greeting.QMP as { version: { qemu: { major: number; minor: number; micro: number } } })
        .version.qemu;
      version = `${v.major}.${v.minor}.${v.micro}`;
      t.like(await call('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] }), {
        return: {},
      });
    };
    const call = async (execute: string, args?: JsonObject): Promise<JsonObject> => {
      const tag = `c${++id}`;
      client.send(JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id: tag }));
      return client.next((m) => m.id === tag, 30000, `the reply to ${execute} ${JSON.stringify(args)}`);
    };
    t.teardown(async () => {
      client?.socket.destroy();
      await guest?.kill();
    });
    await fresh();
    t.log(`QEMU ${version}`);

    const tcp = await listener(t, { port: 0, host: '127.0.0.1' });
    const port = (tcp.address as net.AddressInfo).port;
    const unixPath = join(dir, 'in.sock');
    const unix = await listener(t, { path: unixPath });
    const inner = qemu.inner(unixPath);
    const uris = [
      `tcp:127.0.0.1:${port},ipv4=on`,
      `tcp:127.0.0.1:${port},ipv4=yes`,
      `tcp:127.0.0.1:${port},to=x`,
      `tcp:tcp:127.0.0.1:${port}`,
      `tcp:unix:${inner}`,
      `unix:${inner}`,
      'unix:',
      'fd:',
      'vsock:',
      `127.0.0.1:${port}`,
      `file:${qemu.inner(join(dir, 'state.mig'))}`,
    ];
    const seen: Array<{ label: string; target: MigrationTarget; outcome: string; reached?: string }> = [];
    const channels = [
      { 'channel-type': 'main', addr: { transport: 'socket', type: 'inet', host: '127.0.0.1', port: String(port) } },
    ];
    // rdma: last: QEMU 10.0 exits on it (see below).
    for (const args of [...uris.map((uri) => ({ uri })), { channels }, { uri: 'rdma:' }]) {
      const label = JSON.stringify(args);
      const [target] = migrateTargets(args, version);
      const before = { tcp: tcp.connections(), unix: unix.connections() };
      let reply: JsonObject;
      try {
        reply = await call('migrate', args);
      } catch (err) {
        if (!client.closed) throw err;
        seen.push({ label, target, outcome: 'QEMU closed its monitor (exited)' });
        break;
      }
      if ('error' in reply) {
        seen.push({ label, target, outcome: `rejected: ${(reply.error as { desc: string }).desc}` });
        continue;
      }
      const end = await client.next(
        (m) =>
          m.event === 'MIGRATION' &&
          ['failed', 'completed', 'cancelled'].includes((m.data as { status: string }).status),
        60000,
        `the end of the migration to ${label}`,
      );
      const reached =
        tcp.connections() > before.tcp ? 'tcp listener' : unix.connections() > before.unix ? 'unix listener' : 'none';
      seen.push({ label, target, outcome: `accepted, ${(end.data as { status: string }).status}`, reached });
      await fresh();
    }
    t.log(
      seen
        .map(
          (x) =>
            `${x.label} → ${x.outcome}${x.reached ? `, reached ${x.reached}` : ''} | physbits: ${JSON.stringify(x.target)}`,
        )
        .join('\n'),
    );
    for (const x of seen) {
      if (x.reached === undefined) {
        t.is(x.target.kind, 'invalid', `${x.label}: QEMU ${x.outcome}; physbits read ${JSON.stringify(x.target)}`);
      } else {
        t.not(x.target.kind, 'invalid', `${x.label}: QEMU ${x.outcome}; physbits read ${JSON.stringify(x.target)}`);
        t.is(
          x.reached,
          expectedListener(x.target, port, inner),
          `${x.label}: physbits read ${JSON.stringify(x.target)}`,
        );
      }
    }
    // The uris whose reading differs between the versions, as this version reads them.
    t.deepEqual(parseMigrateUri(`tcp:tcp:127.0.0.1:${port}`, version), {
      kind: 'network',
      transport: 'tcp',
      host: 'tcp',
      port: `127.0.0.1:${port}`,
    });
  });
}

/** Which listener QEMU reaches if physbits read the target right. */
function expectedListener(target: MigrationTarget, port: number, unixPath: string): string {
  if (target.kind === 'network' && target.host === '127.0.0.1' && target.port === String(port)) return 'tcp listener';
  if (target.kind === 'local' && target.transport === 'unix' && target.detail === unixPath) return 'unix listener';
  return 'none';
}
