/**
 * End to end: physbitsd as a process on a temp config, real paused TCG guests, and physbitsctl as
 * the operator runs it. Discovery, reconnection, hung sockets, SIGHUP, SIGTERM, the status
 * document, watch, check-migration, poll mode, the guard's DIMM rule, two clients on one guarded
 * socket: every case with a guest on both QEMUs (this machine's 7.2 and Debian 13's 10.0,
 * test/helpers/qemu.ts). The API socket's mode and bad configs need no guest.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseGroupFile } from '../../agent/core/unix-groups';
import type { StatusDocument, VmStatus } from '../../agent/core/types';
import {
  ctl,
  LineClient,
  startDaemon,
  vmNamed,
  waitUntil,
  writeConfig,
  mergeConfig,
  baseConfig,
  type JsonObject,
} from '../helpers/daemon';
import { freePort } from '../helpers/alertmanager';
import { startFakeQmp } from '../helpers/fake-qmp';
import { HOST_QEMU, QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';

const GiB = 2 ** 30;

function guestIn(dir: string, name: string, cpu: string, extra: { memory?: string; qemu?: Qemu } = {}): Promise<Guest> {
  return startGuest({ dir: join(dir, 'vms'), name, cpu, memory: extra.memory, qemu: extra.qemu });
}

/** A temp dir with the vms/ directory the config's glob watches, where `qemu` reaches it; removed after the test. */
function e2eDir(t: { teardown(fn: () => void): void }, qemu: Qemu = HOST_QEMU): string {
  const dir = qemu.tempDir('physbits-e2e-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'vms'));
  return dir;
}

const hasVerdict = (vm: VmStatus | undefined): boolean => !!vm && !vm.error && !!vm.verdict;

test.serial('the API socket is created 0660 with api.group; no daemon: one line and exit 3', async (t) => {
  const dir = e2eDir(t);
  let groupText = '';
  try {
    groupText = readFileSync('/etc/group', 'utf8');
  } catch {
    /* no group file */
  }
  const group = ['staff', 'users', 'adm'].find((g) => parseGroupFile(groupText, g) !== null);
  const d = await startDaemon({ dir, config: group ? { api: { group } } : {} });
  t.teardown(() => d.kill());
  const st = lstatSync(d.apiSocket);
  t.true(st.isSocket());
  t.is(st.mode & 0o777, 0o660);
  if (group && process.getuid?.() === 0) t.is(st.gid, parseGroupFile(groupText, group)!);
  else t.log(`api.group not checked: ${group ? 'not root, cannot chown' : 'no candidate group in /etc/group'}`);

  const r = await ctl(['status', '--api', '/nonexistent']);
  t.is(r.code, 3);
  t.is(r.stdout, '');
  t.is(r.stderr.split('\n').filter(Boolean).length, 1);
  t.regex(r.stderr, /^physbitsctl: cannot reach the physbits daemon at \/nonexistent: ENOENT\n$/);
});

test('a bad config file: physbitsd exits 78 with one line naming the key', async (t) => {
  const dir = e2eDir(t);
  const shortToken = join(dir, 'short-token');
  writeFileSync(shortToken, `${'s'.repeat(31)}\n`, { mode: 0o600 });
  const cases: Array<[JsonObject | string, RegExp]> = [
    [mergeConfig(baseConfig(dir), { host: { physBits: 'forty' } }), /host\.physBits/],
    [mergeConfig(baseConfig(dir), { discovery: { pollIntervalSeconds: 0 } }), /discovery\.pollIntervalSeconds/],
    [mergeConfig(baseConfig(dir), { api: { lisen: '127.0.0.1:1' } }), /api\.lisen: unknown key/],
    [mergeConfig(baseConfig(dir), { api: { listen: '127.0.0.1:9' } }), /api\.tokenFile/],
    [
      mergeConfig(baseConfig(dir), { api: { listen: '127.0.0.1:0', tokenFile: shortToken } }),
      /api\.tokenFile: .*short-token: the token must be at least 32 characters \(it has 31\)$/m,
    ],
    [
      mergeConfig(baseConfig(dir), { api: { maxConnections: 4, maxConnectionsPerAddress: 5 } }),
      /api\.maxConnectionsPerAddress: must not exceed api\.maxConnections \(4\)/,
    ],
    ['{"host": ', /not valid JSON/],
  ];
  for (const [i, [cfg, key]] of cases.entries()) {
    const path = join(dir, `bad${i}.json`);
    writeFileSync(path, typeof cfg === 'string' ? cfg : JSON.stringify(cfg));
    const r = await new Promise<{ code: number | null; out: string; err: string }>((done) => {
      const p = spawn(
        process.execPath,
        [join(__dirname, '..', '..', 'agent', 'bin', 'physbitsd.js'), '--config', path],
        {
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      let err = '';
      p.stdout.on('data', (c: Buffer) => (out += c));
      p.stderr.on('data', (c: Buffer) => (err += c));
      p.once('exit', (code) => done({ code, out, err }));
    });
    t.is(r.code, 78, r.err);
    t.is(r.out, '');
    t.is(r.err.split('\n').filter(Boolean).length, 1, r.err);
    t.regex(r.err, /^physbitsd: config: /);
    t.regex(r.err, key);
    t.notRegex(r.err, /\n\s+at /);
  }
  t.false(existsSync(join(dir, 'api.sock')));
});

/** { major, minor } of a label "QEMU 10.0". */

function labelVersion(qemu: Qemu): { major: number; minor: number } {
  const m = /(\d+)\.(\d+)/.exec(qemu.label);
  return { major: Number(m?.[1]), minor: Number(m?.[2]) };
}

for (const qemu of QEMUS) {
  test.serial(
    `${qemu.label}: a guest started after the daemon is in status (how soon is logged); watch --json gets its verdict event`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      t.deepEqual((await d.status()).vms, []);

      const watch = spawn(
        process.execPath,
        [join(__dirname, '..', '..', 'agent', 'bin', 'physbitsctl.js'), 'watch', '--json', '--api', d.apiSocket],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      t.teardown(() => void watch.kill('SIGKILL'));
      const events: JsonObject[] = [];
      let partial = '';
      watch.stdout.on('data', (c: Buffer) => {
        const parts = (partial + c.toString()).split('\n');
        partial = parts.pop()!;
        for (const p of parts) if (p.trim()) events.push(JSON.parse(p) as JsonObject);
      });
      // A reload publishes a `config` event: once watch prints it, it is subscribed. A loaded machine
      // may take seconds to start physbitsctl.
      await waitUntil(
        () => {
          process.kill(d.pid, 'SIGHUP');
          return waitUntil(() => events.some((e) => e.type === 'config'), 'config event', 1000).catch(() => false);
        },
        'watch to be subscribed',
        30000,
        10,
      );

      const guest = await guestIn(dir, 'late', 'phys-bits=46', { qemu });
      t.teardown(() => guest.kill());
      const t0 = Date.now();
      const doc = await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'late')), 'the late guest', 10000);
      const ms = Date.now() - t0;
      t.log(`late guest in status after ${ms} ms`);
      const vm = vmNamed(doc, 'late')!;
      t.is(vm.socket, guest.socket);
      t.is(vm.guest?.physBits, 46);
      t.like(vm.verdict, { relation: 'wider', severity: 'critical' });

      const ev = await waitUntil(
        () => events.find((e) => e.type === 'verdict' && e.vm === 'late'),
        'verdict event',
        5000,
      );
      t.like(ev, {
        type: 'verdict',
        vm: 'late',
        socket: guest.socket,
        previous: null,
        severity: 'critical',
        relation: 'wider',
        reason: 'GUEST_WIDER_THAN_HOST',
      });
      t.regex(String(ev.time), /^\d{4}-\d\d-\d\dT/);

      const exit = new Promise<number | null>((r) => watch.once('exit', (code) => r(code)));
      watch.kill('SIGINT');
      t.is(await exit, 0);
    },
  );

  test.serial(
    `${qemu.label}: a guest killed and restarted on the same socket path turns unknown, then gets its verdict back`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      let guest = await guestIn(dir, 'phoenix', 'phys-bits=39', { qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'phoenix')), 'first verdict');
      const guardPath = join(dir, 'guard', 'phoenix.qmp');
      await waitUntil(() => existsSync(guardPath), 'guarded socket');

      for (const down of [300, 4500]) {
        await guest.kill();
        const t0 = Date.now();
        const dead = await d.waitForStatus((s) => !!vmNamed(s, 'phoenix')?.error, 'unknown after the kill', 5000);
        t.log(`unknown after ${Date.now() - t0} ms: ${vmNamed(dead, 'phoenix')!.error!.code}`);
        t.true(['QMP_CLOSED', 'QMP_CONNECT_FAILED'].includes(vmNamed(dead, 'phoenix')!.error!.code));
        t.is(vmNamed(dead, 'phoenix')!.guardSocket, null);
        await waitUntil(() => !existsSync(guardPath), 'the guarded socket to go away', 5000);
        await new Promise((r) => setTimeout(r, down));

        guest = await guestIn(dir, 'phoenix', 'phys-bits=39', { qemu });
        const t1 = Date.now();
        const back = await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'phoenix')), 'verdict after restart', 10000);
        const ms = Date.now() - t1;
        t.log(`down ${down} ms: verdict back ${ms} ms after the restart`);
        t.like(vmNamed(back, 'phoenix')!.verdict, { relation: 'narrower', severity: 'ok' });
        await waitUntil(() => existsSync(guardPath), 'the guarded socket back', 5000);
      }
      t.is(d.proc.exitCode, null);
    },
  );

  test.serial(
    `${qemu.label}: a hung socket (no greeting) and a stopped QEMU do not hold up the other guests`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const hang = await startFakeQmp({ dir: join(dir, 'vms'), socketName: 'hang.qmp', greeting: 'none' });
      t.teardown(() => hang.close());
      const good = await guestIn(dir, 'good', 'phys-bits=40', { qemu });
      t.teardown(() => good.kill());
      const frozen = await guestIn(dir, 'frozen', 'phys-bits=40', { qemu });
      t.teardown(async () => {
        process.kill(frozen.pid, 'SIGCONT');
        await frozen.kill();
      });
      const d = await startDaemon({
        dir,
        config: { qmp: { timeoutMs: 1000, heartbeatMs: 500, heartbeatTimeoutMs: 1000 } },
      });
      t.teardown(() => d.kill());
      let doc = await d.waitForStatus(
        (s) =>
          hasVerdict(vmNamed(s, 'good')) &&
          hasVerdict(vmNamed(s, 'frozen')) &&
          vmNamed(s, 'hang')?.error?.code !== 'PENDING',
        'first pass',
      );
      t.is(vmNamed(doc, 'hang')!.error!.code, 'QMP_NO_GREETING');

      process.kill(frozen.pid, 'SIGSTOP');
      const t0 = Date.now();
      doc = await d.waitForStatus((s) => !!vmNamed(s, 'frozen')?.error, 'the stopped guest to turn unknown', 6000);
      t.log(`stopped guest unknown after ${Date.now() - t0} ms`);
      t.is(vmNamed(doc, 'frozen')!.error!.code, 'QMP_TIMEOUT');
      t.true(hasVerdict(vmNamed(doc, 'good')));
      // The API answers while both stay hung.
      for (let i = 0; i < 5; i++) {
        const s = await d.status();
        t.true(hasVerdict(vmNamed(s, 'good')));
        t.like(vmNamed(s, 'frozen')?.error, { code: vmNamed(s, 'frozen')?.error?.code });
      }
      t.is((await ctl(['check-migration', 'good', '--to', 'narrow', '--api', d.apiSocket])).code, 2);

      process.kill(frozen.pid, 'SIGCONT');
      const t1 = Date.now();
      doc = await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'frozen')), 'the resumed guest back', 10000);
      t.log(`resumed guest back after ${Date.now() - t1} ms`);
      t.is(vmNamed(doc, 'hang')!.error!.code, 'QMP_NO_GREETING');
    },
  );

  test.serial(
    `${qemu.label}: SIGHUP: a good config changes verdicts; a bad one is logged and the old one kept`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const guest = await guestIn(dir, 'reload', 'phys-bits=46', { qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir, config: { peers: [] } });
      t.teardown(() => d.kill());
      let doc = await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'reload')), 'verdict');
      t.like(vmNamed(doc, 'reload')!.verdict, { relation: 'wider', severity: 'critical' });

      writeConfig(d.configPath, mergeConfig(d.config, { host: { physBits: 46 }, metrics: { listen: '127.0.0.1:1' } }));
      process.kill(d.pid, 'SIGHUP');
      const later = await d.waitForLog((l) => l.message === 'settings that take effect at the next restart changed');
      t.is(later.fields.keys, 'metrics.listen');
      doc = await d.waitForStatus(
        (s) => s.host.physBits === 46 && vmNamed(s, 'reload')?.verdict?.relation === 'equal',
        'the new width',
      );
      t.like(vmNamed(doc, 'reload')!.verdict, { relation: 'equal', severity: 'ok' });
      t.deepEqual(
        vmNamed(doc, 'reload')!.verdict!.reasons.map((r) => r.code),
        ['GUEST_EQUALS_HOST'],
      );
      await d.waitForLog((l) => l.message === 'configuration reloaded');

      t.regex(await d.metrics(), /physbits_host_phys_bits\{host="[^"]+"\} 46/);
      writeConfig(d.configPath, mergeConfig(d.config, { host: { physBits: 'forty' } }));
      process.kill(d.pid, 'SIGHUP');
      const refused = await d.waitForLog((l) => l.message === 'reload refused: keeping the running configuration');
      t.is(refused.level, 'error');
      t.regex(refused.fields.error, /host\.physBits/);
      writeFileSync(d.configPath, '{ not json');
      process.kill(d.pid, 'SIGHUP');
      await d.waitForLog(
        (l) =>
          l.message === 'reload refused: keeping the running configuration' && /not valid JSON/.test(l.fields.error),
      );
      doc = await d.status();
      t.is(doc.host.physBits, 46);
      t.like(vmNamed(doc, 'reload')!.verdict, { relation: 'equal', severity: 'ok' });
      t.is(d.proc.exitCode, null);
    },
  );

  test.serial(`${qemu.label}: SIGTERM exits 0 within a few seconds and leaves no socket files`, async (t) => {
    const dir = e2eDir(t, qemu);
    const guests = await Promise.all(['a', 'b'].map((n) => guestIn(dir, n, 'phys-bits=40', { qemu })));
    t.teardown(() => Promise.all(guests.map((g) => g.kill())));
    const d = await startDaemon({ dir });
    t.teardown(() => d.kill());
    await waitUntil(
      () => existsSync(join(dir, 'guard', 'a.qmp')) && existsSync(join(dir, 'guard', 'b.qmp')),
      'guarded sockets',
    );
    // A client on a guarded socket and one on the event stream do not delay the exit.
    const { client } = await LineClient.negotiated(join(dir, 'guard', 'a.qmp'));
    t.teardown(() => client.close());
    const st = await d.stop();
    t.log(`exit ${st.code} after ${st.ms} ms`);
    t.is(st.code, 0);
    t.is(st.signal, null);
    t.false(existsSync(d.apiSocket));
    t.deepEqual(readdirSync(join(dir, 'guard')), []);
    t.deepEqual(
      readdirSync(dir).filter((n) => n.startsWith('.sock-')),
      [],
    );
    await client.ended;
    // The upstream sockets are QEMU's: still there, and QEMU still answers on them.
    for (const g of guests) t.true(lstatSync(g.socket).isSocket());
    const { client: direct } = await LineClient.negotiated(guests[0].socket);
    t.like(await direct.command('{"execute":"query-status","id":1}', 1), { return: { status: 'prelaunch' } });
    await direct.close();
  });

  test.serial(`${qemu.label}: status --json is the contract document; the exit code is the worst state`, async (t) => {
    const dir = e2eDir(t, qemu);
    const guest = await guestIn(dir, 'web1', 'phys-bits=46', { qemu });
    t.teardown(() => guest.kill());
    const bad = await startFakeQmp({ dir: join(dir, 'vms'), socketName: 'dead.qmp', greeting: 'garbage' });
    t.teardown(() => bad.close());
    const d = await startDaemon({ dir, config: { qmp: { timeoutMs: 1000 } } });
    t.teardown(() => d.kill());
    await d.waitForStatus(
      (s) =>
        hasVerdict(vmNamed(s, 'web1')) && !!vmNamed(s, 'dead')?.error && vmNamed(s, 'dead')?.error?.code !== 'PENDING',
      'both VMs judged',
    );
    const r = await ctl(['status', '--json', '--api', d.apiSocket]);
    t.is(r.code, 2, r.stderr);
    t.is(r.stderr, '');
    const doc = JSON.parse(r.stdout) as StatusDocument;
    t.deepEqual(Object.keys(doc).sort(), ['host', 'summary', 'vms']);
    t.is(doc.host.physBits, 40);
    t.is(typeof doc.host.vendor, 'string');
    t.is(doc.vms.length, 2);
    const web1 = vmNamed(doc, 'web1')!;
    t.is(web1.socket, guest.socket);
    t.is(web1.accelerator, 'tcg');
    t.like(web1.guest, { physBits: 46, hostPhysBits: false, hostPhysBitsLimit: 0 });
    t.is(web1.verdict!.relation, 'wider');
    t.is(web1.verdict!.severity, 'critical');
    t.deepEqual(
      web1.verdict!.reasons.map((x) => x.code),
      ['GUEST_WIDER_THAN_HOST', 'MIGRATION_PEER_NARROWER'],
    );
    for (const reason of web1.verdict!.reasons) {
      t.regex(reason.code, /^[A-Z][A-Z0-9_]+$/);
      t.true(reason.message.length > 20);
    }
    const dead = vmNamed(doc, 'dead')!;
    t.is(dead.socket, bad.socket);
    t.is(dead.error!.code, 'QMP_PROTOCOL');
    t.regex(dead.error!.message, /invalid JSON .*"this is not QMP"/);
    t.is(dead.verdict, undefined);
    t.deepEqual(doc.summary, {
      worst: 'critical',
      exitCode: 2,
      counts: { ok: 0, info: 0, warning: 0, critical: 1, unknown: 1 },
    });
    // Same document over the API.
    const api = await d.status();
    t.deepEqual(api.vms.map((v) => v.name).sort(), ['dead', 'web1']);
  });

  test.serial(
    `${qemu.label}: check-migration --to narrow: exit 2 for a 46-bit guest, 0 for a 39-bit one`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const wide = await guestIn(dir, 'wide', 'phys-bits=46', { qemu });
      const fits = await guestIn(dir, 'fits', 'phys-bits=39', { qemu });
      t.teardown(() => Promise.all([wide.kill(), fits.kill()]));
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'wide')) && hasVerdict(vmNamed(s, 'fits')), 'verdicts');
      const refused = await ctl(['check-migration', 'wide', '--to', 'narrow', '--api', d.apiSocket]);
      t.is(refused.code, 2);
      t.regex(refused.stdout, /^refused: wide → narrow: /);
      const allowed = await ctl(['check-migration', 'fits', '--to', 'narrow', '--json', '--api', d.apiSocket]);
      t.is(allowed.code, 0);
      t.like(JSON.parse(allowed.stdout), { vm: 'fits', peer: 'narrow', allowed: true, peerPhysBits: 39 });
      const unknownPeer = await ctl(['check-migration', 'fits', '--to', 'nowhere', '--api', d.apiSocket]);
      // Unknown, like every other thing physbits cannot find (exit 3); with --json, the error on stdout.
      t.is(unknownPeer.code, 3);
      t.is(unknownPeer.stderr, "physbitsctl: no peer named 'nowhere' in the config\n");
      const unknownVm = await ctl(['check-migration', 'nothing', '--to', 'narrow', '--json', '--api', d.apiSocket]);
      t.is(unknownVm.code, 3);
      t.deepEqual(JSON.parse(unknownVm.stdout), {
        error: { code: 'VM_NOT_FOUND', message: "no VM named 'nothing' (nor with that id)" },
        exitCode: 3,
      });
    },
  );

  test.serial(
    `${qemu.label}: poll mode: a client connecting every 100 ms is always greeted between the polls; no guarded socket`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const guest = await startGuest({
        dir: join(dir, 'vms'),
        name: 'polled',
        cpu: 'phys-bits=40',
        socketName: 'polled.qmp',
        qemu,
      });
      t.teardown(() => guest.kill());
      const d = await startDaemon({
        dir,
        config: { discovery: { sockets: [{ glob: join(dir, 'vms', '*.qmp'), mode: 'poll' }], pollIntervalSeconds: 1 } },
      });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'polled')), 'first poll');

      const waits: number[] = [];
      const checks = new Set<string>();
      // 30 connections, one every 100 ms or slower: three seconds or more, three polls or more.
      while (waits.length < 30) {
        if (waits.length % 5 === 0) checks.add(vmNamed(await d.status(), 'polled')!.checkedAt!);
        const started = Date.now();
        const c = await LineClient.connect(guest.socket);
        await c.next((m) => 'QMP' in m, 5000);
        waits.push(Date.now() - started);
        await c.close();
        await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - started))));
      }
      const worst = Math.max(...waits);
      const sorted = [...waits].sort((x, y) => x - y);
      t.log(`${waits.length} connections; greeting after median ${sorted[waits.length >> 1]} ms, worst ${worst} ms`);
      // Every client was greeted (QEMU greets one client at a time: a daemon that held the socket would
      // have kept them waiting past the 5 s bound), and the daemon kept polling throughout.
      t.true(checks.size >= 3, `${checks.size} distinct reads`);
      const doc = await d.status();
      const vm = vmNamed(doc, 'polled')!;
      t.is(vm.mode, 'poll');
      t.true(hasVerdict(vm));
      t.is(vm.guardSocket ?? null, null);
      t.false(existsSync(join(dir, 'guard', 'polled.qmp')));
      t.deepEqual(existsSync(join(dir, 'guard')) ? readdirSync(join(dir, 'guard')) : [], []);
    },
  );

  test.serial(
    `${qemu.label}: a second daemon on the same config refuses to start and leaves the first one alone`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const guest = await guestIn(dir, 'solo', 'phys-bits=46', { qemu });
      t.teardown(() => guest.kill());
      // Alerts go to a webhook nobody serves: they wait in the spool.
      const config = { alerts: { webhooks: [{ url: `http://127.0.0.1:${await freePort()}/hook` }] } };
      const first = await startDaemon({ dir, config });
      t.teardown(() => first.kill());
      const spool = join(dir, 'spool', 'alerts.log');
      await waitUntil(
        () => existsSync(spool) && readFileSync(spool, 'utf8').includes('GUEST_WIDER_THAN_HOST'),
        'the alert in the spool',
      );

      const second = await startDaemon({ dir, config, configName: 'cfg2.json', waitReady: false });
      t.teardown(() => second.kill());
      const st = await second.exited;
      t.is(st.code, 1);
      const line = await second.waitForLog((l) => l.message === 'cannot start');
      t.is(line.fields.code, 'QMP_SOCKET_IN_USE');
      t.regex(line.fields.error, /api\.sock is in use/);

      // The first goes on: its API answers, and what it spools still reaches the file.
      t.true(hasVerdict(vmNamed(await first.status(), 'solo')));
      const { client } = await LineClient.negotiated(join(dir, 'guard', 'solo.qmp'));
      t.teardown(() => client.close());
      const reply = await client.command(
        `{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"big","memdev":"nope","addr":${2 ** 41}},"id":1}`,
        1,
      );
      t.regex(String((reply.error as { desc: string }).desc), /^refused by physbits guard: /);
      await waitUntil(
        () => /"reason":"REFUSED_/.test(readFileSync(spool, 'utf8')),
        'the refusal in the spool file',
        5000,
      );
      t.is(first.proc.exitCode, null);
    },
  );

  test.serial(
    `${qemu.label}: guard: a DIMM that fits is plugged, one above 2^host.physBits is refused with the client's own id, and counted`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const guest = await guestIn(dir, 'hotplug', '', { memory: '128M,slots=4,maxmem=8G', qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir, config: { host: { physBits: 33 } } });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => hasVerdict(vmNamed(s, 'hotplug')), 'verdict');
      const guarded = join(dir, 'guard', 'hotplug.qmp');
      await waitUntil(() => existsSync(guarded), 'guarded socket');
      const { client, greeting } = await LineClient.negotiated(guarded);
      t.teardown(() => client.close());
      t.like(greeting, { QMP: { version: { qemu: labelVersion(qemu) } } });
      // The daemon read the device-memory region on this QEMU too (8.2+ has no device-memory-region-size).
      const vm = vmNamed(await d.status(), 'hotplug');
      t.deepEqual(vm?.guest?.layout?.deviceMemory, { base: 4 * GiB, size: 8 * GiB - 128 * 2 ** 20 + 4 * GiB });
      t.is(vm?.guest?.unreadable, undefined);

      for (const [id, size] of [
        ['m1', 3 * GiB],
        ['m2', 2 * GiB],
        ['m3', GiB],
      ] as const) {
        t.deepEqual(
          await client.command(
            JSON.stringify({
              execute: 'object-add',
              arguments: { 'qom-type': 'memory-backend-ram', id, size, reserve: false },
              id: `add-${id}`,
            }),
            `add-${id}`,
          ),
          { return: {}, id: `add-${id}` },
        );
      }
      // 3 GiB first fit at 4 GiB ends at 7 GiB, below 8 GiB: forwarded, and QEMU plugs it.
      t.deepEqual(
        await client.command(
          '{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"d1","memdev":"m1"},"id":{"mine":[1,2]}}',
          { mine: [1, 2] },
        ),
        { return: {}, id: { mine: [1, 2] } },
      );
      // 2 GiB would be placed at [7 GiB, 9 GiB): refused, with the id as the client wrote it.
      const r2 = await client.command(
        '{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"d2","memdev":"m2"},"id":"client-7"}',
        'client-7',
      );
      t.deepEqual(Object.keys(r2).sort(), ['error', 'id']);
      t.is(r2.id, 'client-7');
      t.like(r2.error, { class: 'GenericError' });
      t.regex((r2.error as { desc: string }).desc, /^refused by physbits guard: .*REFUSED_MEMORY_ABOVE_HOST_LIMIT/);
      // An explicit address at 8 GiB: refused; a numeric id comes back as a number.
      const r3 = await client.command(
        `{"execute":"device_add","arguments":{"driver":"pc-dimm","id":"d3","memdev":"m3","addr":${8 * GiB}},"id":42}`,
        42,
      );
      t.is(r3.id, 42);
      t.regex((r3.error as { desc: string }).desc, /^refused by physbits guard: /);
      // Nothing refused reached QEMU.
      const devs = await client.command('{"execute":"query-memory-devices","id":"q"}', 'q');
      t.deepEqual(
        (devs.return as Array<{ data: { id: string; addr: number } }>).map((x) => [x.data.id, x.data.addr]),
        [['d1', 4 * GiB]],
      );

      const metrics = await waitUntil(
        async () => {
          const text = await d.metrics();
          return /physbits_refused_commands_total\{vm="hotplug",id="[0-9a-f]{12}",host="[^"]+",command="device_add"\} 2/.test(
            text,
          )
            ? text
            : null;
        },
        'refusals in /metrics',
        5000,
      );
      t.regex(metrics, /physbits_host_phys_bits\{host="[^"]+"\} 33/);
      t.regex(metrics, /physbits_guest_phys_bits\{vm="hotplug",id="[0-9a-f]{12}",host="[^"]+",accelerator="tcg"\} 40/);
    },
  );

  test.serial(
    `${qemu.label}: two clients on one guarded socket both get their replies and the RESUME event after cont`,
    async (t) => {
      const dir = e2eDir(t, qemu);
      const guest = await guestIn(dir, 'shared', 'phys-bits=40', { qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      const guarded = join(dir, 'guard', 'shared.qmp');
      await waitUntil(() => existsSync(guarded), 'guarded socket');
      const a = (await LineClient.negotiated(guarded)).client;
      const b = (await LineClient.negotiated(guarded)).client;
      t.teardown(() => Promise.all([a.close(), b.close()]));
      // The same id on both: each gets its own reply.
      a.send('{"execute":"query-status","id":1}');
      b.send('{"execute":"query-status","id":1}');
      const [ra, rb] = await Promise.all([a.next((m) => m.id === 1), b.next((m) => m.id === 1)]);
      // QEMU 7.2 adds singlestep: false; 10.0 drops it.
      t.like(ra, { return: { status: 'prelaunch', running: false }, id: 1 });
      t.deepEqual(rb, ra);
      t.deepEqual(await a.command('{"execute":"cont","id":"go"}', 'go'), { return: {}, id: 'go' });
      const [ea, eb] = await Promise.all([a.next((m) => m.event === 'RESUME'), b.next((m) => m.event === 'RESUME')]);
      t.deepEqual(ea, eb);
      t.like(await b.command('{"execute":"query-status","id":"b2"}', 'b2'), {
        return: { status: 'running', running: true },
      });
      // The daemon saw the event too and re-read the facts.
      await d.waitForStatus((s) => vmNamed(s, 'shared')?.guest?.runState === 'running', 'runState running');
    },
  );
}
