/**
 * The shipped unit runs the product: the daemon, with a real guest, its guarded socket, the API (UNIX
 * and TCP), metrics, a webhook and a reload, runs under `strace -f`; every system call it made must be
 * allowed by the unit's SystemCallFilter= lines (expanded by `systemd-analyze syscall-filter`, applied
 * in order as systemd.exec(5) says), and everything it wrote must lie in a directory the unit lets it
 * write when the shipped config's paths are used.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { startReceiver, waitFor } from '../helpers/alertmanager';
import { LineClient, startDaemon } from '../helpers/daemon';
import { startGuest } from '../helpers/qemu';
import { tempDir } from '../helpers/tmp';

const ROOT = join(__dirname, '..', '..', '..');
const UNIT = join(ROOT, 'systemd', 'physbitsd.service');

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((ok, fail) =>
    execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (err, out) => (err ? fail(err) : ok(out))),
  );
}

/** `systemd-analyze syscall-filter` output: every @group with its members (calls and @groups). */
export function parseSyscallGroups(text: string): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of text.split('\n')) {
    const head = /^(@[\w-]+)\s*$/.exec(line);
    if (head) groups.set(head[1], (current = []));
    else if (current && /^\s+[@\w-]+\s*$/.test(line)) current.push(line.trim());
  }
  return groups;
}

function expand(name: string, groups: Map<string, string[]>, out = new Set<string>()): Set<string> {
  if (!name.startsWith('@')) return out.add(name);
  const members = groups.get(name);
  if (!members) throw new Error(`systemd-analyze knows no group ${name}`);
  for (const m of members) expand(m, groups, out);
  return out;
}

/** The unit's directive values, in order. */
export function unitValues(unit: string, key: string): string[] {
  return [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1].trim());
}

/**
 * systemd.exec(5): the first SystemCallFilter= decides the default (an allow list when it has no `~`);
 * each later line adds its calls to, or removes them from, the set.
 */
export function allowedCalls(lines: string[], groups: Map<string, string[]>): (call: string) => boolean {
  if (lines.length === 0) return () => true;
  const allowList = !lines[0].startsWith('~');
  const set = new Set<string>();
  for (const line of lines) {
    const deny = line.startsWith('~');
    const calls = new Set<string>();
    for (const item of (deny ? line.slice(1) : line).split(/\s+/).filter(Boolean)) expand(item, groups, calls);
    // In an allow list, `~` lines remove; in a deny list, plain lines remove.
    const add = allowList ? !deny : deny;
    for (const c of calls)
      if (add) set.add(c);
      else set.delete(c);
  }
  return allowList ? (c) => set.has(c) : (c) => !set.has(c);
}

interface Traced {
  calls: Set<string>;
  /** Paths the daemon created, wrote, removed, renamed, linked, chmod'ed, chown'ed or bound. */
  written: Set<string>;
}

const WRITE_CALLS =
  /^(mkdir|mkdirat|unlink|unlinkat|rmdir|rename|renameat2?|link|linkat|symlink|symlinkat|chmod|fchmodat|chown|lchown|fchownat|truncate|mknod|mknodat)$/;

/** Reads `strace -f -o` output: the calls made, and the paths written (resolved against `cwd`). */
export function parseTrace(text: string, cwd: string): Traced {
  const calls = new Set<string>();
  const written = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\d+\s+([a-z_0-9]+)\((.*)$/.exec(line);
    if (!m) continue;
    const [, call, rest] = m;
    calls.add(call);
    if (/ = -1 /.test(rest)) continue; // failed: wrote nothing
    const paths = [...rest.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((p) => p[1]);
    if (call === 'openat' || call === 'open' || call === 'creat') {
      if (paths[0] && (call === 'creat' || /O_WRONLY|O_RDWR|O_CREAT|O_TRUNC/.test(rest)))
        written.add(resolve(cwd, paths[0]));
    } else if (WRITE_CALLS.test(call)) {
      for (const p of paths) written.add(resolve(cwd, p));
    } else if (call === 'bind') {
      const sun = /sun_path="((?:[^"\\]|\\.)*)"/.exec(rest);
      if (sun) written.add(resolve(cwd, sun[1]));
    }
  }
  return { calls, written };
}

const under = (path: string, dir: string): boolean =>
  path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);

test('the daemon under strace makes no system call the unit denies, and writes only where the unit lets it', async (t) => {
  const dir = tempDir('physbits-unit-');
  const traceFile = join(dir, 'trace');
  const vms = join(dir, 'vms');
  mkdirSync(vms);
  const guest = await startGuest({ dir: vms, name: 'traced', cpu: 'phys-bits=42' });
  t.teardown(() => guest.kill());
  // Owned by nobody, as a QEMU user's socket is: the guarded socket gets chown'ed to it.
  await run('chown', ['65534:65534', guest.socket]);
  const receiver = await startReceiver();
  t.teardown(() => receiver.close());
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'x'.repeat(40) + '\n', { mode: 0o600 });
  // The feature file's directory, as an NFD deployment makes it: what the drop-in grants.
  const nfdDir = join(dir, 'nfd', 'features.d');
  mkdirSync(nfdDir, { recursive: true, mode: 0o755 });
  const d = await startDaemon({
    dir,
    wrapper: ['strace', '-f', '-qq', '-s', '512', '-o', traceFile],
    config: {
      api: { socket: join(dir, 'run', 'api.sock'), listen: '127.0.0.1:0', tokenFile },
      alerts: { webhooks: [{ url: receiver.url }] },
      schedulers: { nfdFeatureFile: join(nfdDir, 'physbits') },
    },
    timeoutMs: 60000,
  });
  // strace's only child is the daemon; killing strace alone would leave it running, detached.
  const daemonPid = Number(readFileSync(`/proc/${d.pid}/task/${d.pid}/children`, 'utf8').trim().split(/\s+/)[0]);
  t.teardown(async () => {
    try {
      process.kill(daemonPid, 'SIGKILL');
    } catch {
      // already gone
    }
    await d.kill();
  });
  const doc = await d.waitForStatus((s) => !!s.vms[0]?.guardSocket, 'the guarded socket', 30000);
  t.is(doc.vms[0].verdict?.severity, 'critical');
  const { client } = await LineClient.negotiated(doc.vms[0].guardSocket!);
  t.like(await client.command('{"execute": "query-status", "id": 1}', 1), { return: { status: 'prelaunch' } });
  await client.close();
  t.regex(await d.metrics(), /physbits_guest_phys_bits\{vm="traced"[^}]*\} 42/);
  await waitFor('a webhook', () => receiver.requests[0], 30000);
  // A reload, then the end: SIGTERM to the daemon itself (strace's only child).
  process.kill(daemonPid, 'SIGHUP');
  await d.waitForLog((l) => l.message === 'configuration reloaded', 20000);
  process.kill(daemonPid, 'SIGTERM');
  const st = await d.exited;
  t.is(st.code, 0, d.stderr().slice(-2000));

  const traced = parseTrace(readFileSync(traceFile, 'utf8'), ROOT);
  t.log(
    `${traced.calls.size} distinct system calls, ${traced.written.size} paths written: ${[...traced.written].join(' ')}`,
  );
  t.true(traced.calls.has('fchownat') || traced.calls.has('chown') || traced.calls.has('fchown'), 'chown was traced');

  // 1. System calls.
  const unit = readFileSync(UNIT, 'utf8');
  const groups = parseSyscallGroups(await run('systemd-analyze', ['syscall-filter']));
  t.true(groups.has('@system-service') && groups.has('@privileged'));
  const allowed = allowedCalls(unitValues(unit, 'SystemCallFilter'), groups);
  const denied = [...traced.calls].filter((c) => !allowed(c)).sort();
  t.deepEqual(denied, [], `system calls the unit denies: ${denied.join(' ')}`);

  // 2. Paths: everything written lies in a directory the config names (or the private /tmp).
  const configDirs = [dirname(d.apiSocket), join(dir, 'guard'), join(dir, 'spool'), nfdDir];
  t.true(
    [...traced.written].some((p) => under(p, nfdDir)),
    'the feature file was written (under strace, in its directory)',
  );
  const stray = [...traced.written].filter(
    (p) => !configDirs.some((c) => under(p, c)) && !under(p, '/tmp') && p !== '/dev/null',
  );
  // The test's own temp dir lives under /tmp too: be exact about it.
  const strayInTmp = [...traced.written].filter((p) => under(p, dir) && !configDirs.some((c) => under(p, c)));
  t.deepEqual([...stray, ...strayInTmp], [], 'paths written outside the configured directories');

  // 3. The unit lets the daemon write exactly the shipped config's directories.
  const example = JSON.parse(readFileSync(join(ROOT, 'config.example.json'), 'utf8')) as {
    api: { socket: string };
    guard: { socketDir: string };
    alerts: { spoolDir: string };
  };
  const needed = [dirname(example.api.socket), example.guard.socketDir, example.alerts.spoolDir];
  const writable = [
    ...unitValues(unit, 'ReadWritePaths').flatMap((v) => v.split(/\s+/)),
    ...unitValues(unit, 'RuntimeDirectory').map((v) => `/run/${v}`),
    ...unitValues(unit, 'StateDirectory').map((v) => `/var/lib/${v}`),
  ].map((p) => p.replace(/^-/, ''));
  t.deepEqual(
    needed.filter((p) => !writable.some((w) => under(p, w))),
    [],
    'shipped paths the unit leaves read-only',
  );
  t.deepEqual(
    unitValues(unit, 'ReadWritePaths')
      .flatMap((v) => v.split(/\s+/))
      .filter((w) => !needed.some((p) => under(p, w.replace(/^-/, '')))),
    [],
    'ReadWritePaths= the daemon does not need',
  );
  t.is(unitValues(unit, 'ProtectSystem')[0], 'strict');
  t.deepEqual(readdirSync(join(dir, 'guard')), []);
});

test('the NFD drop-in grants exactly the directory of the feature file docs/kubevirt.md recommends', (t) => {
  const dropIn = readFileSync(join(ROOT, 'systemd', 'nfd-feature-file.conf'), 'utf8');
  const doc = readFileSync(join(ROOT, 'docs', 'kubevirt.md'), 'utf8');
  const recommended = /"nfdFeatureFile": "([^"]+)"/.exec(doc)![1];
  t.is(recommended, '/etc/kubernetes/node-feature-discovery/features.d/physbits');
  t.true(dropIn.includes('[Service]'));
  // The unit test above shows every write for the feature file lies in its directory.
  t.deepEqual(unitValues(dropIn, 'ReadWritePaths'), [`-${dirname(recommended)}`]);
  t.deepEqual(
    unitValues(dropIn, 'ReadWritePaths').filter((v) => !/^-?\//.test(v)),
    [],
    'absolute paths only',
  );
  // Without it the unit leaves that directory read-only.
  const unit = readFileSync(UNIT, 'utf8');
  const writable = unitValues(unit, 'ReadWritePaths').flatMap((v) => v.split(/\s+/));
  t.false(writable.some((w) => under(recommended, w.replace(/^-/, ''))));
});

test('the cpuid driver is loaded at boot: systemd/physbits-modules.conf names it', (t) => {
  const text = readFileSync(join(ROOT, 'systemd', 'physbits-modules.conf'), 'utf8');
  t.deepEqual(
    text.split('\n').filter((l) => l.trim() && !l.startsWith('#')),
    ['cpuid'],
  );
  // The unit cannot load it itself.
  t.deepEqual(unitValues(readFileSync(UNIT, 'utf8'), 'ProtectKernelModules'), ['yes']);
});
