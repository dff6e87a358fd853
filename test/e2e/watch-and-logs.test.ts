/**
 * What `physbitsctl watch` and the daemon's log say as things happen, on a real daemon and real QEMU
 * guests: watch announces itself on stderr, a guest that quits cleanly through QMP `quit` (SHUTDOWN
 * event, then the end of its monitor) is an INFO line and `unknown VM_SHUT_DOWN` on the stream, a
 * reload reads as a sentence, and a planned stop logs INFO per VM and a final `stopped` line while
 * watch says on stderr that the daemon stopped and exits 3. Nothing prints `(null)`.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LineClient, PHYSBITSCTL, startDaemon, vmNamed, waitUntil } from '../helpers/daemon';
import { QEMUS, startGuest } from '../helpers/qemu';

interface Watch {
  stdout: () => string[];
  stderr: () => string[];
  exited: Promise<number | null>;
  kill: () => void;
}

function startWatch(apiSocket: string): Watch {
  const proc = spawn(process.execPath, [PHYSBITSCTL, 'watch', '--api', apiSocket], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const lines = (s: string) => s.split('\n').filter((l) => l !== '');
  return {
    stdout: () => lines(out),
    stderr: () => lines(err),
    exited: new Promise((r) => proc.once('exit', (code) => r(code))),
    kill: () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    },
  };
}

for (const qemu of QEMUS) {
  test(`${qemu.label}: watch and the log tell a clean quit, a reload and a planned stop for people`, async (t) => {
    const dir = qemu.tempDir('physbits-watch-');
    mkdirSync(join(dir, 'vms'));
    const wide = await startGuest({ qemu, dir: join(dir, 'vms'), name: 'wide', cpu: 'phys-bits=46' });
    t.teardown(() => wide.kill());
    const calm = await startGuest({ qemu, dir: join(dir, 'vms'), name: 'calm', cpu: 'phys-bits=40' });
    t.teardown(() => calm.kill());
    // No peer, and unknown peers allowed: the start-up warning of a config that knows no peer stays out.
    const d = await startDaemon({ dir, config: { peers: [], guard: { unknownPeer: 'allow' } } });
    t.teardown(() => d.kill());
    await d.waitForStatus(
      (s) => !!vmNamed(s, 'wide')?.verdict && !!vmNamed(s, 'calm')?.verdict && !!vmNamed(s, 'wide')?.guardSocket,
      'both verdicts and the guarded socket of wide',
    );

    const watch = startWatch(d.apiSocket);
    t.teardown(() => watch.kill());
    await waitUntil(() => watch.stderr().length > 0, 'the line watch prints on connect');
    t.deepEqual(watch.stderr(), [`physbitsctl: watching physbitsd at ${d.apiSocket}; events follow until Ctrl-C`]);
    t.deepEqual(watch.stdout(), []);

    // The guest quits as asked, through its guarded socket: QEMU sends SHUTDOWN, then closes.
    const { client } = await LineClient.negotiated(join(dir, 'guard', 'wide.qmp'));
    t.teardown(() => client.close());
    client.send('{"execute":"quit","id":"bye"}');
    const down = await d.waitForLog((l) => l.message === 'VM shut down', 20000);
    t.is(down.level, 'info');
    t.like(down.fields, { vm: 'wide', reason: 'host-qmp-quit' });
    await waitUntil(
      () => watch.stdout().some((l) => / wide: critical → unknown VM_SHUT_DOWN$/.test(l)),
      'the verdict line of the quit guest on watch',
      20000,
    );
    t.true(
      watch.stdout().some((l) => / wide: .*wide\.qmp: QEMU shut down \(host-qmp-quit\)$/.test(l)),
      watch.stdout().join('\n'),
    );
    // QEMU removes its socket as it exits: discovery lets the VM go, as it does for any VM gone.
    await d.waitForLog((l) => l.message === 'VM gone' && l.fields.vm === 'wide', 20000);

    // A reload, in words.
    process.kill(d.pid, 'SIGHUP');
    await waitUntil(
      () => watch.stdout().some((l) => /^\S+Z: the daemon reloaded its configuration$/.test(l)),
      'the reload line on watch',
      20000,
    );

    // A planned stop: INFO per VM it held, a last line, and watch says the daemon stopped.
    const stopped = await d.stop();
    t.is(stopped.code, 0);
    t.is(await watch.exited, 3);
    t.is(watch.stderr().length, 2, watch.stderr().join('\n'));
    t.is(watch.stderr()[1], `physbitsctl: physbitsd at ${d.apiSocket} stopped; no more events`);

    const lines = d.lines();
    const released = lines.filter((l) => l.message === 'VM released');
    t.true(
      released.some((l) => l.level === 'info' && l.fields.vm === 'calm'),
      d.stderr(),
    );
    t.is(lines[lines.length - 1].message, 'stopped', d.stderr());
    t.is(lines[lines.length - 1].level, 'info');
    t.is(lines[lines.length - 1].fields.signal, 'SIGTERM');
    const warnings = lines.filter((l) => l.level === 'warn' || l.level === 'error');
    t.deepEqual(
      warnings.map((l) => l.raw),
      [],
      'a clean quit and a planned stop warn about nothing',
    );
    t.false([...watch.stdout(), ...watch.stderr()].some((l) => l.includes('(null)')));
    t.false(d.stderr().includes('ECONNRESET'));
  });
}
