/**
 * A real libvirt 9 system daemon for end-to-end tests, without systemd: `virtlogd -d` and
 * `libvirtd -d` as root, the physbits hook installed at /etc/libvirt/hooks/qemu, and everything
 * put back afterwards. libvirtd reads hooks only when it starts, so a daemon already running is
 * restarted with the hook in place, and restarted again without it at the end; daemons started
 * here are stopped by the PID in their pidfiles. Domains created through `createdDomains` are
 * destroyed (and undefined) before the daemon stops, since QEMU outlives libvirtd.
 *
 * libvirtd, its socket and the hook path are the machine's: one test file at a time has them. The
 * others wait for the lock (a directory holding the holder's PID, taken over when that PID is gone).
 */
import { execFile, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const LIBVIRT_URI = 'qemu:///system';
export const LIBVIRT_SOCKET = '/run/libvirt/libvirt-sock';
export const HOOK_PATH = '/etc/libvirt/hooks/qemu';
const LIBVIRTD_PIDFILE = '/run/libvirtd.pid';
const VIRTLOGD_PIDFILE = '/run/virtlogd.pid';
const VIRTLOGD_SOCKET = '/run/libvirt/virtlogd-sock';
const LOCK_DIR = '/run/physbits-test-libvirtd.lock';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program (no shell) and resolves with its exit code and output, whatever the code. */
export function run(file: string, args: string[], timeoutMs = 30000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 127
          : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

export function virsh(args: string[], timeoutMs = 30000): Promise<ExecResult> {
  return run('virsh', ['--connect', LIBVIRT_URI, ...args], timeoutMs);
}

/** Why the libvirt end-to-end tests cannot run here, or null when they can. */
export function libvirtUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'needs root to run the system libvirtd';
  for (const program of ['libvirtd', 'virtlogd', 'virsh']) {
    const r = spawnSync(program, ['--version'], { timeout: 10000, stdio: 'ignore' });
    if (r.status !== 0) return `${program} is not installed (apt-get install libvirt-daemon-system)`;
  }
  return null;
}

function pidFrom(file: string): number | null {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return null;
    process.kill(pid, 0);
    return pid;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function stopPid(pid: number, timeoutMs = 15000): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < deadline) await sleep(50);
  if (alive(pid)) {
    process.kill(pid, 'SIGKILL');
    while (alive(pid)) await sleep(50);
  }
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Waits until no other test process has libvirtd, and takes it; resolves to the release. A holder
 * that died (its PID gone, or no PID written within 10 s) loses the lock.
 */
async function lockLibvirtd(timeoutMs = 15 * 60 * 1000): Promise<() => void> {
  const pidFile = `${LOCK_DIR}/pid`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(LOCK_DIR, { mode: 0o700 });
      writeFileSync(pidFile, String(process.pid));
      return () => rmSync(LOCK_DIR, { recursive: true, force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: number | null = null;
    try {
      holder = Number(readFileSync(pidFile, 'utf8').trim());
    } catch {
      holder = null;
    }
    const stale =
      holder !== null
        ? !alive(holder)
        : Date.now() - (statSync(LOCK_DIR, { throwIfNoEntry: false })?.mtimeMs ?? 0) > 10000;
    if (stale) rmSync(LOCK_DIR, { recursive: true, force: true });
    else if (Date.now() > deadline) throw new Error(`libvirtd is still in use by process ${holder} (${LOCK_DIR})`);
    else await sleep(250);
  }
}

export interface LibvirtdHandle {
  /** Names of domains the test created; all are destroyed and undefined by stop(). */
  createdDomains: Set<string>;
  /** Stops libvirtd and starts it again (its running domains' QEMUs stay). */
  restart(): Promise<void>;
  /** Puts back the hook, stops what was started here, restarts a daemon that was running before. */
  stop(): Promise<void>;
}

/**
 * Installs `hookScript` (a sh script) as the qemu hook and (re)starts libvirtd so that it reads it.
 */
export async function startLibvirtdWithHook(hookScript: string): Promise<LibvirtdHandle> {
  const createdDomains = new Set<string>();
  const unlock = await lockLibvirtd();
  try {
    return await startLocked(hookScript, createdDomains, unlock);
  } catch (err) {
    unlock();
    throw err;
  }
}

async function startLocked(
  hookScript: string,
  createdDomains: Set<string>,
  unlock: () => void,
): Promise<LibvirtdHandle> {
  let startedVirtlogd = false;
  if (pidFrom(VIRTLOGD_PIDFILE) === null) {
    const r = await run('virtlogd', ['-d']);
    if (r.code !== 0) throw new Error(`virtlogd -d failed: ${r.stderr.trim()}`);
    startedVirtlogd = true;
    await waitFor(`${VIRTLOGD_SOCKET} to appear`, () => existsSync(VIRTLOGD_SOCKET), 10000);
  }

  const hooksDir = dirname(HOOK_PATH);
  const createdHooksDir = !existsSync(hooksDir);
  if (createdHooksDir) mkdirSync(hooksDir, { recursive: true });
  const backup = `${HOOK_PATH}.physbits-test-backup`;
  const hadHook = existsSync(HOOK_PATH);
  if (hadHook) renameSync(HOOK_PATH, backup);
  writeFileSync(HOOK_PATH, hookScript);
  chmodSync(HOOK_PATH, 0o755);

  const before = pidFrom(LIBVIRTD_PIDFILE);
  if (before !== null) await stopPid(before);

  const startDaemon = async () => {
    const r = await run('libvirtd', ['-d']);
    if (r.code !== 0) throw new Error(`libvirtd -d failed: ${r.stderr.trim()}`);
    await waitFor(`${LIBVIRT_SOCKET} to appear`, () => existsSync(LIBVIRT_SOCKET), 20000);
    await waitFor('libvirtd to answer', async () => (await virsh(['list', '--name'], 10000)).code === 0, 20000);
  };

  const restoreHook = () => {
    rmSync(HOOK_PATH, { force: true });
    if (hadHook) renameSync(backup, HOOK_PATH);
    if (createdHooksDir) rmSync(hooksDir, { recursive: true, force: true });
  };

  try {
    await startDaemon();
  } catch (err) {
    restoreHook();
    throw err;
  }

  return {
    createdDomains,
    async restart() {
      const running = pidFrom(LIBVIRTD_PIDFILE);
      if (running !== null) await stopPid(running);
      await startDaemon();
    },
    async stop() {
      for (const name of createdDomains) {
        await virsh(['destroy', `--domain=${name}`], 15000);
        await virsh(['undefine', `--domain=${name}`], 15000);
      }
      createdDomains.clear();
      const ours = pidFrom(LIBVIRTD_PIDFILE);
      if (ours !== null) await stopPid(ours);
      restoreHook();
      if (before !== null) await startDaemon().catch(() => undefined);
      if (startedVirtlogd) {
        const v = pidFrom(VIRTLOGD_PIDFILE);
        if (v !== null) await stopPid(v);
      }
      unlock();
    },
  };
}

/** A minimal TCG q35 domain without disks: boots into firmware and idles, or stays paused. */
export function tcgDomainXml(name: string, maxphysaddr: string): string {
  return `<domain type='qemu'>
  <name>${name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>${maxphysaddr}</cpu>
  <devices>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}
