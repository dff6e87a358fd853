/**
 * The daemon outlives its log stream, and dies of its own faults. The built daemon guards a real
 * QEMU guest with its stderr on a pipe; the pipe's reader is closed mid-run and the daemon is made
 * to log (a reload, a refused migration). It must go on answering `status` and refusing, tell the
 * event stream once that its log is gone, and stay near idle in CPU and memory: before the fuse in
 * agent/core/log-stream.ts, each failed write raised an uncaught exception whose log line failed
 * again, a loop that burned a core and grew without bound. An uncaught exception or unhandled
 * rejection (raised in the daemon by a preloaded module on SIGUSR2) is logged once and ends the
 * daemon with exit 70, releasing its sockets.
 */
import test from 'ava';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EventStream, LineClient, sleep, startDaemon, waitUntil, type DaemonProcess } from '../helpers/daemon';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

/** CPU seconds (user + system) a process has used, from /proc/PID/stat (proc(5): utime, stime). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of the line; the first two (pid, comm) are cut off above.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
}

/** CPU seconds and the largest RSS over `ms` of wall time. */
async function usage(pid: number, ms: number): Promise<{ cpu: number; wall: number; maxRssMiB: number }> {
  const c0 = cpuSeconds(pid);
  const t0 = Date.now();
  let maxRssMiB = rssMiB(pid);
  while (Date.now() - t0 < ms) {
    await sleep(250);
    maxRssMiB = Math.max(maxRssMiB, rssMiB(pid));
  }
  return { cpu: cpuSeconds(pid) - c0, wall: (Date.now() - t0) / 1000, maxRssMiB };
}

async function refusedMigration(guarded: string, id: string): Promise<string> {
  const { client } = await LineClient.negotiated(guarded);
  try {
    const reply = await client.command(
      `{"execute": "migrate", "arguments": {"uri": "tcp:192.0.2.1:4444"}, "id": "${id}"}`,
      id,
    );
    return (reply.error as { desc?: string } | undefined)?.desc ?? JSON.stringify(reply);
  } finally {
    await client.close();
  }
}

test('stderr reader closed mid-run: the daemon keeps answering and guarding, says so once, stays idle', async (t) => {
  const dir = tempDir('physbits-logpipe-');
  const vms = join(dir, 'vms');
  mkdirSync(vms, { recursive: true });
  const guest = await startGuest({ name: 'web1', dir: vms, memory: '32M' });
  let daemon: DaemonProcess | null = null;
  t.teardown(async () => {
    await daemon?.kill();
    await guest.kill();
    rmSync(dir, { recursive: true, force: true });
  });
  daemon = await startDaemon({ dir });
  const d = daemon;
  const guarded = join(dir, 'guard', 'web1.qmp');
  await d.waitForStatus((doc) => doc.vms.some((v) => v.name === 'web1' && v.guest), 'web1 read by the daemon');
  await waitUntil(
    () => LineClient.negotiated(guarded).then((c) => c.client.close().then(() => true)),
    'the guarded socket',
  );
  t.regex(await refusedMigration(guarded, 'before'), /^refused by physbits guard: .*\[REFUSED_/);
  const events = await EventStream.open(d.apiSocket);
  t.teardown(() => events.close());
  const idle = await usage(d.pid, 2000);

  // The reader goes away; whatever the daemon logs from now on meets EPIPE.
  d.proc.stderr!.destroy();
  d.proc.kill('SIGHUP');
  const notice = await events.next((e) => e.type === 'log', 'the log-stream notice on the event stream');
  t.regex(String(notice.message), /^the log stream failed \(EPIPE\)/);
  t.regex(await refusedMigration(guarded, 'after'), /^refused by physbits guard: .*\[REFUSED_/);
  d.proc.kill('SIGHUP');
  await events.next((e) => e.type === 'config', 'the second reload');

  const broken = await usage(d.pid, 3000);
  t.log(
    `idle: ${idle.cpu.toFixed(2)} s CPU in ${idle.wall.toFixed(1)} s, RSS ${idle.maxRssMiB.toFixed(0)} MiB; ` +
      `stderr gone: ${broken.cpu.toFixed(2)} s CPU in ${broken.wall.toFixed(1)} s, RSS up to ${broken.maxRssMiB.toFixed(0)} MiB`,
  );
  // Generous bounds: an idle daemon uses a few hundredths of a second; the old loop used a whole core.
  t.true(broken.cpu < idle.cpu + 0.25 * broken.wall, `CPU ${broken.cpu} s in ${broken.wall} s with stderr gone`);
  t.true(broken.maxRssMiB < idle.maxRssMiB + 64, `RSS ${broken.maxRssMiB} MiB against ${idle.maxRssMiB} MiB idle`);

  const doc = await d.status();
  t.truthy(doc.vms.find((v) => v.name === 'web1')?.guest, 'status still answers with web1 read');
  t.regex(await refusedMigration(guarded, 'last'), /^refused by physbits guard: .*\[REFUSED_/);
  const metrics = await d.metrics();
  t.regex(metrics, /^physbits_log_stream_up 0$/m);
  const dropped = Number(/^physbits_log_lines_dropped_total (\d+)$/m.exec(metrics)?.[1]);
  t.true(dropped >= 3, `${dropped} lines dropped (two reloads, two refusals at least)`);
  t.is(events.events.filter((e) => e.type === 'log').length, 1, 'the notice is given once');
  t.is((await d.stop()).code, 0);
});

for (const fault of ['exception', 'rejection'] as const) {
  test(`an unhandled ${fault} is logged once and ends the daemon with exit 70, its sockets released`, async (t) => {
    const dir = tempDir('physbits-fault-');
    let daemon: DaemonProcess | null = null;
    t.teardown(async () => {
      await daemon?.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    // Loaded before the daemon's code (node --require): on SIGUSR2, a fault nothing catches.
    const preload = join(dir, 'fault.js');
    writeFileSync(
      preload,
      fault === 'exception'
        ? "process.on('SIGUSR2', () => setImmediate(() => { throw new Error('injected fault'); }));\n"
        : "process.on('SIGUSR2', () => { void Promise.reject(new Error('injected fault')); });\n",
    );
    daemon = await startDaemon({ dir, env: { NODE_OPTIONS: `--require ${preload}` } });
    const d = daemon;
    t.true(existsSync(d.apiSocket));
    d.proc.kill('SIGUSR2');
    const status = await Promise.race([
      d.exited,
      sleep(15000).then(() => Promise.reject(new Error('timed out after 15000 ms waiting for the daemon to exit'))),
    ]);
    t.deepEqual(status, { code: 70, signal: null }, d.stderr());
    const faults = d
      .lines()
      .filter((l) => l.level === 'error' && /^(uncaught exception|unhandled rejection)/.test(l.message));
    t.is(faults.length, 1, d.stderr());
    t.is(faults[0].message, fault === 'exception' ? 'uncaught exception; exiting' : 'unhandled rejection; exiting');
    t.true(faults[0].fields.error.includes('injected fault'));
    t.false(existsSync(d.apiSocket), 'the API socket is removed');
  });
}
