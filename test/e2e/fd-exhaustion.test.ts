/**
 * File-descriptor exhaustion (SECURITY.md promise 11): the built daemon under a low RLIMIT_NOFILE
 * (`prlimit --nofile=N:N`), flooded by an unprivileged user (uid 65534 through setpriv) with idle
 * connections to /metrics and the TCP API from many loopback addresses, while a new guest appears
 * (a re-scan during the flood). No VM is removed, no alert resolved at the webhook, every guarded
 * socket answers, the new guest is found, and the daemon says it nears its limit.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, waitUntil, LineClient, sleep } from '../helpers/daemon';
import { startReceiver, waitFor } from '../helpers/alertmanager';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';
import { DIE_WITH_PARENT } from '../helpers/die-with-parent';

/** The daemon's descriptor limit in this test: far below the unit's 65536, so a flood reaches it. */
const NOFILE = 256;

/**
 * A child process as uid 65534 that keeps `perSource` idle connections open to each target from each
 * of `sources` loopback addresses, re-opening any the daemon closes, until killed.
 */
function flood(targets: Array<{ host: string; port: number }>, sources: string[], perSource: number): ChildProcess {
  const script = `
    const net = require('net');
    const [targets, sources, per] = JSON.parse(process.argv[1]);
    let open = 0, opened = 0;
    const one = (t, src) => {
      const s = net.connect({ host: t.host, port: t.port, localAddress: src });
      s.on('connect', () => { open++; opened++; });
      s.on('error', () => {});
      s.on('close', (hadConnect) => { if (s.__c) open--; setTimeout(() => one(t, src), 20); });
      s.on('connect', () => { s.__c = true; });
    };
    for (const t of targets) for (const src of sources) for (let i = 0; i < per; i++) one(t, src);
    setInterval(() => process.stdout.write(JSON.stringify({ open, opened }) + '\\n'), 500);`;
  return spawn(
    '/usr/bin/setpriv',
    [
      '--reuid',
      '65534',
      '--regid',
      '65534',
      '--clear-groups',
      ...DIE_WITH_PARENT.slice(1, -1),
      '--',
      process.execPath,
      '-e',
      script,
      JSON.stringify([targets, sources, perSource]),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
}

test('a connection flood under a low descriptor limit removes no VM, resolves no alert, and every guarded socket answers', async (t) => {
  const dir = tempDir('physbits-fd-');
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  const receiver = await startReceiver();
  t.teardown(() => receiver.close());
  const tokenFile = join(dir, 'api.token');
  writeFileSync(tokenFile, 'x'.repeat(40), { mode: 0o600 });
  const wide = await startGuest({ dir: vms, name: 'wide', cpu: 'phys-bits=46' });
  t.teardown(() => wide.kill());
  const d = await startDaemon({
    dir,
    config: {
      api: { listen: '127.0.0.1:0', tokenFile },
      alerts: { webhooks: [{ url: receiver.url }], retryMaxSeconds: 1 },
    },
    wrapper: ['/usr/bin/prlimit', `--nofile=${NOFILE}:${NOFILE}`, '--'],
  });
  t.teardown(() => d.kill());
  await d.waitForStatus((doc) => doc.vms.some((v) => v.name === 'wide' && !!v.verdict), 'the wide guest judged');
  await waitFor('the critical alert at the webhook', () =>
    receiver.requests.some((r) => r.body.includes('PhysbitsGuestWiderThanHost')) ? true : undefined,
  );
  const api = d.lines().find((l) => l.message === 'peer API listening')!.fields.address;
  const [metricsHost, metricsPort] = d.metricsAddress().split(':');
  const [apiHost, apiPort] = api.split(':');
  const sources = Array.from({ length: 40 }, (_, i) => `127.0.${1 + (i >> 4)}.${1 + (i & 15)}`);
  const attacker = flood(
    [
      { host: metricsHost, port: Number(metricsPort) },
      { host: apiHost, port: Number(apiPort) },
    ],
    sources,
    16,
  );
  let last = { open: 0, opened: 0 };
  attacker.stdout!.on('data', (c: Buffer) => {
    const lines = c.toString().trim().split('\n');
    last = JSON.parse(lines[lines.length - 1]) as typeof last;
  });
  t.teardown(() => {
    attacker.kill('SIGKILL');
  });
  await waitUntil(() => last.opened >= 300, 'the flood to get going', 20000);
  await sleep(3000);
  const fds = readdirSync(`/proc/${d.pid}/fd`).length;
  t.log(`flood: ${last.open} open, ${last.opened} opened; daemon fds ${fds} of ${NOFILE}`);
  t.true(fds < NOFILE, 'the daemon keeps descriptors to spare');

  // A re-scan during the flood: a new guest appears and is found, the first one stays.
  const late = await startGuest({ dir: vms, name: 'late', cpu: 'phys-bits=40' });
  t.teardown(() => late.kill());
  const doc = await d.waitForStatus(
    (s) => s.vms.some((v) => v.name === 'late' && !!v.verdict),
    'the late guest found during the flood',
    20000,
  );
  t.deepEqual(doc.vms.map((v) => v.name).sort(), ['late', 'wide']);
  for (const vm of doc.vms) {
    t.truthy(vm.guardSocket, `${vm.name} is guarded`);
    const { client } = await LineClient.negotiated(vm.guardSocket!);
    t.teardown(() => client.close());
    const reply = (await client.command('{"execute": "query-status", "id": 1}', 1)) as { return?: { status?: string } };
    t.truthy(reply.return?.status, `${vm.name}'s guarded socket answers`);
  }
  await sleep(2000);
  const logs = d.lines();
  t.deepEqual(
    logs.filter((l) => l.message === 'VM gone').map((l) => l.fields.socket),
    [],
    'no VM removed',
  );
  const statuses = receiver.requests.flatMap((r) =>
    (JSON.parse(r.body) as { alerts: Array<{ status: string; labels: Record<string, string> }> }).alerts.map(
      (a) => `${a.labels.alertname} ${a.labels.vm} ${a.status}`,
    ),
  );
  t.false(statuses.includes('PhysbitsGuestWiderThanHost wide resolved'), statuses.join('\n'));
  t.true(statuses.includes('PhysbitsDescriptorsLow  firing'), statuses.join('\n'));
  attacker.kill('SIGKILL');
});
