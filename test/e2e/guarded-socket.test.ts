/**
 * End to end, real QEMU behind a real physbitsd: where guarded sockets appear (the upstream path
 * mirrored below the glob's fixed part), who can open them (a real connect as uid 65534), two VMs on
 * one guarded path, a live socket in the way, and a client that half-closes (`printf | socat`). On
 * both QEMUs (this machine's 7.2 and Debian 13's 10.0).
 */
import test from 'ava';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import type { VmStatus } from '../../agent/core/types';
import { startReceiver, waitFor } from '../helpers/alertmanager';
import { LineClient, startDaemon } from '../helpers/daemon';
import { QEMUS, startGuest, type Guest, type Qemu } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const NOBODY = 65534;

/** A directory tree others may traverse (tmp dirs are 0700), so only the socket's own mode decides. */
function openDir(qemu: Qemu, prefix: string): string {
  const dir = qemu.tempDir(prefix);
  chmodSync(dir, 0o755);
  return dir;
}

/** Connects to `path` as uid/gid in a child process: 'greeting' when QEMU's greeting came, else the errno. */
function connectAs(path: string, uid: number, gid: number): Promise<string> {
  const script = `const s = require('net').connect(process.argv[1]);
    s.on('data', (d) => { if (String(d).includes('"QMP"')) { console.log('greeting'); process.exit(0); } });
    s.on('error', (e) => { console.log(e.code); process.exit(0); });
    setTimeout(() => { console.log('no greeting'); process.exit(0); }, 10000);`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, path], { uid, gid, timeout: 20000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout.trim()),
    );
  });
}

/** The first line QEMU (or whoever serves `path`) sends, or null after `ms`. */
function firstLine(path: string, ms = 15000): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    let buf = '';
    const done = (v: string | null): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(null), ms);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) done(buf.slice(0, buf.indexOf('\n')));
    });
    s.on('error', () => done(null));
  });
}

const guardReason = (vm: VmStatus | undefined) => vm?.verdict?.reasons.find((r) => r.code === 'GUARD_UNAVAILABLE');

test.serial('an unknown guard.socketGroup is a config error (exit 78, one line naming the key)', async (t) => {
  const dir = tempDir('physbits-ggrp-');
  const d = await startDaemon({ dir, config: { guard: { socketGroup: 'no-such-group-physbits' } }, waitReady: false });
  t.teardown(() => d.kill());
  const st = await d.exited;
  t.is(st.code, 78);
  t.is(d.stderr().trim(), "physbitsd: CONFIG_INVALID: guard.socketGroup: no group named 'no-such-group-physbits'");
});

for (const qemu of QEMUS) {
  test.serial(
    `${qemu.label}: guarded paths mirror the upstream path below the fixed part of the glob that found it`,
    async (t) => {
      const dir = qemu.tempDir('physbits-gpath-');
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'vms'));
      mkdirSync(join(dir, 'srv', 'web2'), { recursive: true });
      const guests: Guest[] = [];
      t.teardown(() => Promise.all(guests.map((g) => g.kill())));
      guests.push(await startGuest({ dir: join(dir, 'vms'), name: 'web1', qemu }));
      guests.push(await startGuest({ dir: join(dir, 'srv', 'web2'), name: 'web2', socketName: 'qmp.sock', qemu }));
      const d = await startDaemon({
        dir,
        config: { discovery: { sockets: [join(dir, 'vms', '*.qmp'), join(dir, 'srv', '*', 'qmp.sock')] } },
      });
      t.teardown(() => d.kill());
      const doc = await d.waitForStatus((s) => s.vms.filter((v) => v.guardSocket).length === 2, 'two guarded sockets');
      const byName = Object.fromEntries(doc.vms.map((v) => [v.name, v.guardSocket]));
      t.deepEqual(byName, { web1: join(dir, 'guard', 'web1.qmp'), web2: join(dir, 'guard', 'web2', 'qmp.sock') });
      // Each path leads to its own VM.
      for (const name of ['web1', 'web2']) {
        const { client } = await LineClient.negotiated(byName[name]!);
        const reply = await client.command('{"execute": "query-name", "id": 1}', 1);
        t.deepEqual(reply.return, { name }, name);
        await client.close();
      }
      t.is(lstatSync(join(dir, 'guard', 'web2')).mode & 0o777, 0o755);
    },
  );

  test.serial(
    `${qemu.label}: a 0777 QEMU socket in a 0700 directory gives a 0600 guarded socket uid 65534 cannot open; socketGroup opens it to a group`,
    async (t) => {
      const dir = openDir(qemu, 'physbits-gmode-');
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      const vms = join(dir, 'vms');
      mkdirSync(vms, { mode: 0o700 });
      chmodSync(vms, 0o700);
      const guest = await startGuest({ dir: vms, name: 'open', qemu });
      t.teardown(() => guest.kill());
      chmodSync(guest.socket, 0o777);
      // The upstream is out of reach for uid 65534: its directory is 0700.
      t.is(await connectAs(guest.socket, NOBODY, NOBODY), 'EACCES');

      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => !!s.vms[0]?.guardSocket, 'the guarded socket');
      const guarded = join(dir, 'guard', 'open.qmp');
      const st = lstatSync(guarded);
      t.is(st.mode & 0o777, 0o600);
      t.is(st.uid, lstatSync(guest.socket).uid);
      t.is(lstatSync(join(dir, 'guard')).mode & 0o777, 0o755);
      t.is(await connectAs(guarded, NOBODY, NOBODY), 'EACCES');
      t.is(await connectAs(guarded, 0, 0), 'greeting');
      await d.stop();

      // The same VM with guard.socketGroup: 0660 for that group, and its members get in.
      const group = await new Promise<string>((resolve) =>
        execFile('getent', ['group', String(NOBODY)], (_e, out) => resolve(out.split(':')[0] || String(NOBODY))),
      );
      const d2 = await startDaemon({ dir, config: { guard: { socketGroup: group } } });
      t.teardown(() => d2.kill());
      await d2.waitForStatus((s) => !!s.vms[0]?.guardSocket, 'the guarded socket');
      const st2 = lstatSync(guarded);
      t.is(st2.mode & 0o777, 0o660);
      t.is(st2.gid, NOBODY);
      t.is(await connectAs(guarded, NOBODY, NOBODY), 'greeting');
      t.is(await connectAs(guarded, NOBODY, 1), 'EACCES');
    },
  );

  test.serial(
    `${qemu.label}: two VMs on one guarded path: the second is refused, its QEMU released, GUARD_UNAVAILABLE alerted`,
    async (t) => {
      const dir = qemu.tempDir('physbits-gclash-');
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      for (const sub of ['a', 'b']) mkdirSync(join(dir, sub));
      const receiver = await startReceiver();
      t.teardown(() => receiver.close());
      const guests: Guest[] = [];
      t.teardown(() => Promise.all(guests.map((g) => g.kill())));
      guests.push(await startGuest({ dir: join(dir, 'a'), name: 'first', socketName: 'vm.qmp', qemu }));
      const d = await startDaemon({
        dir,
        config: {
          discovery: { sockets: [join(dir, 'a', '*.qmp'), join(dir, 'b', '*.qmp')] },
          alerts: { webhooks: [{ url: receiver.url }] },
        },
      });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => !!s.vms[0]?.guardSocket, 'the first guarded socket');
      guests.push(await startGuest({ dir: join(dir, 'b'), name: 'second', socketName: 'vm.qmp', qemu }));
      const doc = await d.waitForStatus(
        (s) => !!guardReason(s.vms.find((v) => v.name === 'second')),
        'GUARD_UNAVAILABLE on the second VM',
        20000,
      );
      const second = doc.vms.find((v) => v.name === 'second')!;
      t.is(second.verdict?.severity, 'critical');
      t.regex(guardReason(second)!.message, /already the guarded socket of .*\/a\/vm\.qmp/);
      t.falsy(second.guardSocket);
      t.is(doc.vms.find((v) => v.name === 'first')!.guardSocket, join(dir, 'guard', 'vm.qmp'));
      // The guarded path still leads to the first VM only.
      const { client } = await LineClient.negotiated(join(dir, 'guard', 'vm.qmp'));
      t.deepEqual((await client.command('{"execute": "query-name", "id": 1}', 1)).return, { name: 'first' });
      await client.close();
      // QEMU's socket of the second VM was let go: another client gets its greeting.
      t.regex((await firstLine(guests[1].socket)) ?? 'no greeting', /"QMP"/);
      const alert = await waitFor('a GUARD_UNAVAILABLE webhook', () =>
        receiver.requests
          .flatMap((r) => (JSON.parse(r.body) as { alerts: { labels: Record<string, string> }[] }).alerts)
          .find((a) => a.labels.reason === 'GUARD_UNAVAILABLE'),
      );
      t.is(alert.labels.vm, 'second');
      t.is(alert.labels.severity, 'critical');
      t.is(alert.labels.alertname, 'PhysbitsGuardUnavailable');

      // When the first VM goes, the second gets the path on its next attempt.
      await guests[0].kill();
      const after = await d.waitForStatus(
        (s) => s.vms.find((v) => v.name === 'second')?.guardSocket === join(dir, 'guard', 'vm.qmp'),
        'the second VM guarded once the path is free',
        40000,
      );
      t.falsy(guardReason(after.vms.find((v) => v.name === 'second')));
    },
  );

  test.serial(
    `${qemu.label}: a live socket at the guarded path is never replaced; the VM is released and alerted`,
    async (t) => {
      const dir = qemu.tempDir('physbits-glive-');
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'vms'));
      mkdirSync(join(dir, 'guard'));
      const squatter = net.createServer((s) => s.on('error', () => undefined).end('squatter\n'));
      const squatPath = join(dir, 'guard', 'taken.qmp');
      await new Promise<void>((r) => squatter.listen(squatPath, r));
      t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
      const ino = lstatSync(squatPath).ino;
      const guest = await startGuest({ dir: join(dir, 'vms'), name: 'taken', qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      const doc = await d.waitForStatus((s) => !!guardReason(s.vms[0]), 'GUARD_UNAVAILABLE');
      t.regex(guardReason(doc.vms[0])!.message, /a live process serves it/);
      t.is(lstatSync(squatPath).ino, ino);
      t.is(await firstLine(squatPath), 'squatter');
      t.regex((await firstLine(guest.socket)) ?? 'no greeting', /"QMP"/);
      t.true(d.lines().some((l) => l.message === 'guard could not start; QEMU socket released'));
    },
  );

  test.serial(
    `${qemu.label}: printf '<capabilities>\\n<query-status>\\n' | socat - UNIX-CONNECT:<guarded> gets every reply`,
    async (t) => {
      const dir = qemu.tempDir('physbits-ghalf-');
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      mkdirSync(join(dir, 'vms'));
      const guest = await startGuest({ dir: join(dir, 'vms'), name: 'half', qemu });
      t.teardown(() => guest.kill());
      const d = await startDaemon({ dir });
      t.teardown(() => d.kill());
      await d.waitForStatus((s) => !!s.vms[0]?.guardSocket, 'the guarded socket');
      const guarded = join(dir, 'guard', 'half.qmp');
      const run = (path: string) =>
        new Promise<string[]>((resolve, reject) => {
          const sh = spawn(
            'sh',
            [
              '-c',
              `printf '{"execute":"qmp_capabilities"}\\n{"execute":"query-status"}\\n' | socat - UNIX-CONNECT:${path}`,
            ],
            { stdio: ['ignore', 'pipe', 'inherit'] },
          );
          let out = '';
          sh.stdout.on('data', (c: Buffer) => (out += c.toString()));
          const timer = setTimeout(() => {
            sh.kill('SIGKILL');
            reject(new Error(`socat on ${path} did not finish within 20 s; output so far: ${out}`));
          }, 20000);
          sh.on('exit', () => {
            clearTimeout(timer);
            resolve(out.split('\n').filter(Boolean));
          });
        });
      const lines = (await run(guarded)).map((l) => JSON.parse(l) as Record<string, unknown>);
      t.is(lines.length, 3, JSON.stringify(lines));
      t.truthy(lines[0].QMP);
      t.deepEqual(lines[1], { return: {} });
      t.like(lines[2], { return: { status: 'prelaunch', running: false } });
      // The guarded socket is still served afterwards.
      t.true(existsSync(guarded));
    },
  );
}
