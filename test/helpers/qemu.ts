/**
 * Starts real QEMU guests for tests: paused (`-S -nodefaults -display none`, a few MiB each), or
 * firmware-booted (SeaBIOS or OVMF run until they have placed the PCI BARs). TCG unless
 * `accel: 'kvm'` is asked for and /dev/kvm can be opened.
 *
 * Two QEMUs: this machine's (`HOST_QEMU`, QEMU 7.2 on Debian 12) and Debian 13's QEMU 10 with its
 * SeaBIOS and OVMF (`TRIXIE_QEMU`), run as `chroot <tree> qemu-system-x86_64 ...` from the tree
 * contrib/debian13-tree.sh builds (PHYSBITS_TEST_TRIXIE, default /var/cache/physbits-test/trixie),
 * with /proc and /sys mounted in a mount namespace of its own.
 * A chrooted guest's sockets live inside the tree and are reached through the tree's path:
 * `qemu.tempDir()` gives a directory both sides see. When the tree is missing, every guest started
 * on it fails with one line saying so; nothing is skipped.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { DIE_WITH_PARENT } from './die-with-parent';
import { tcpListening } from './net';

export const QEMU = process.env.PHYSBITS_TEST_QEMU ?? 'qemu-system-x86_64';
export const TRIXIE_TREE = process.env.PHYSBITS_TEST_TRIXIE ?? '/var/cache/physbits-test/trixie';
const TREE_MARKER = '.physbits-tree-complete';

/** One QEMU the tests run guests on. */
export interface Qemu {
  /** For test titles: "QEMU 7.2", "QEMU 10.0". */
  label: string;
  /** The Debian 13 tree it runs chrooted in; null for this machine's QEMU. */
  tree: string | null;
  /** The command line prefix that runs it. */
  command: string[];
  /** Why it cannot run (tree missing), or null. */
  unavailable: string | null;
  /** A fresh temp directory QEMU can reach (inside the tree for a chrooted QEMU). */
  tempDir(prefix?: string): string;
  /** The path QEMU sees for a path on this side (inside the tree: relative to its root). */
  inner(path: string): string;
  /** Firmware images as QEMU sees them. */
  firmware: { seabios: string; ovmfCode: string; ovmfVars: string };
}

function versionLabel(command: string[]): string | null {
  try {
    const out = execFileSync(command[0], [...command.slice(1), '--version'], { encoding: 'utf8', timeout: 10000 });
    const m = /version (\d+)\.(\d+)/.exec(out);
    return m ? `QEMU ${m[1]}.${m[2]}` : null;
  } catch {
    return null;
  }
}

const hostFirmware = {
  seabios: 'bios-256k.bin',
  ovmfCode: '/usr/share/OVMF/OVMF_CODE_4M.fd',
  ovmfVars: '/usr/share/OVMF/OVMF_VARS_4M.fd',
};

export const HOST_QEMU: Qemu = {
  label: versionLabel([QEMU]) ?? 'QEMU (host)',
  tree: null,
  command: [QEMU],
  unavailable: null,
  tempDir: (prefix = 'physbits-qemu-') => mkdtempSync(join(tmpdir(), prefix)),
  inner: (path) => path,
  firmware: hostFirmware,
};

/** The QEMU of a Debian 13 tree built by contrib/debian13-tree.sh, run chrooted in it. */
export function trixieQemu(tree: string): Qemu {
  const complete = existsSync(join(tree, TREE_MARKER));
  // In a private mount namespace, with the host's /proc, /sys and /dev/kvm mounted into the tree (QEMU reads
  // e.g. /proc/sys/vm/overcommit_memory for reserve=off backends); gone when QEMU exits. Each step
  // execs the next, so the child's pid is QEMU's.
  const command = [
    'unshare',
    '--mount',
    'sh',
    '-c',
    'mount -t proc proc "$0/proc" && mount -t sysfs sysfs "$0/sys" && ' +
      // The host's /dev/kvm, where there is one, bound over a node the tree keeps for it.
      '{ [ ! -c /dev/kvm ] || { : >>"$0/dev/kvm" && mount --bind /dev/kvm "$0/dev/kvm"; }; } && ' +
      'exec chroot "$0" qemu-system-x86_64 "$@"',
    tree,
  ];
  const label = (complete && versionLabel(command)) || 'QEMU 10 (Debian 13 tree)';
  return {
    label,
    tree,
    command,
    unavailable: complete
      ? null
      : `the Debian 13 QEMU tree is missing at ${tree}: bash contrib/debian13-tree.sh builds it`,
    tempDir(prefix = 'physbits-qemu-') {
      mkdirSync(join(tree, 'tmp'), { recursive: true });
      return mkdtempSync(join(tree, 'tmp', prefix));
    },
    inner(path) {
      const rel = relative(tree, resolve(path));
      if (rel.startsWith('..') || rel.startsWith(sep)) throw new Error(`${path} is outside the tree ${tree}`);
      return `/${rel}`;
    },
    firmware: hostFirmware,
  };
}

export const TRIXIE_QEMU: Qemu = trixieQemu(TRIXIE_TREE);
/** Every QEMU the end-to-end tests run on. */
export const QEMUS: readonly Qemu[] = [HOST_QEMU, TRIXIE_QEMU];

/** Every guest still running, killed when the test worker exits however it exits. */
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

export function kvmUsable(): boolean {
  // PHYSBITS_TEST_NO_KVM=1 runs the suite as on a machine without KVM (every guest under TCG, the
  // KVM-only tests skipped), where /dev/kvm works but the machines CI runs on have none.
  if (process.env.PHYSBITS_TEST_NO_KVM === '1') return false;
  // The node can exist without the kvm module behind it (a VM image without nested virtualization):
  // only an open tells.
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}

export interface GuestOptions {
  /** Extra -cpu properties after the model, e.g. 'phys-bits=46' or 'host-phys-bits=on,host-phys-bits-limit=39'. */
  cpu?: string;
  model?: string; // default qemu64
  accel?: 'tcg' | 'kvm';
  /** -m argument, default '64M'. */
  memory?: string;
  name?: string;
  /** Directory for the socket; a fresh temp dir by default. */
  dir?: string;
  /** Socket file name, default `${name ?? 'vm'}.qmp`. */
  socketName?: string;
  extraArgs?: string[];
  /** Which QEMU (default HOST_QEMU). */
  qemu?: Qemu;
  /**
   * Boot this firmware instead of staying paused at -S: the guest runs until the firmware has
   * programmed every BAR of the devices in extraArgs (no disk: it then waits for a boot device).
   */
  firmware?: 'seabios' | 'ovmf';
}

export interface Guest {
  /** The QMP socket's path on this side (inside the tree for a chrooted QEMU). */
  socket: string;
  qemu: Qemu;
  dir: string;
  pid: number;
  process: ChildProcess;
  args: string[];
  /** What QEMU wrote to standard error so far (the first 8 KiB). */
  stderr(): string;
  /** SIGKILL and wait for exit; removes the temp dir when it created one. */
  kill(): Promise<void>;
}

function accepts(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startGuest(opts: GuestOptions = {}): Promise<Guest> {
  const qemu = opts.qemu ?? HOST_QEMU;
  if (qemu.unavailable) throw new Error(qemu.unavailable);
  const ownDir = !opts.dir;
  const dir = opts.dir ?? qemu.tempDir('physbits-qemu-');
  const socket = join(dir, opts.socketName ?? `${opts.name ?? 'vm'}.qmp`);
  const accel = opts.accel === 'kvm' && kvmUsable() ? 'kvm' : 'tcg';
  const cpu = [opts.model ?? 'qemu64', opts.cpu].filter(Boolean).join(',');
  const firmware: string[] = [];
  if (opts.firmware === 'seabios') firmware.push('-bios', qemu.firmware.seabios);
  if (opts.firmware === 'ovmf') {
    const vars = join(dir, `${opts.name ?? 'vm'}-vars.fd`);
    copyFileSync(qemu.tree ? join(qemu.tree, qemu.firmware.ovmfVars) : qemu.firmware.ovmfVars, vars);
    firmware.push(
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${qemu.firmware.ovmfCode}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${qemu.inner(vars)}`,
    );
  }
  const args = [
    '-machine',
    `q35,accel=${accel}`,
    '-cpu',
    cpu,
    '-m',
    opts.memory ?? '64M',
    ...(opts.firmware ? firmware : ['-S']),
    '-nodefaults',
    '-display',
    'none',
    '-no-user-config',
    '-qmp',
    `unix:${qemu.inner(socket)},server=on,wait=off`,
    ...(opts.name ? ['-name', opts.name] : []),
    ...(opts.extraArgs ?? []),
  ];
  // Dies with the test worker however it ends (test/helpers/die-with-parent.ts).
  const [cmd, ...prefix] = [...DIE_WITH_PARENT, ...qemu.command];
  const child = spawn(cmd, [...prefix, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString();
  });
  running.add(child);
  // Closed: exited and its stderr read to the end (what an early exit said is all there).
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
  const deadline = Date.now() + 15000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await closed;
      throw new Error(`qemu exited early (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`timed out after 15000 ms waiting for qemu to create ${socket}: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // The socket file appears a moment before QEMU listens on it: wait until a connection is taken.
  while (!(await accepts(socket))) {
    if (child.exitCode !== null) {
      await closed;
      throw new Error(`qemu exited before listening on ${socket}: ${stderr.trim()}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`timed out after 15000 ms waiting for qemu to accept on ${socket}: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socket,
    qemu,
    dir,
    pid: child.pid!,
    process: child,
    args,
    stderr: () => stderr,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The destination of a migration: a guest like startGuest's (same machine, paused, its QMP socket
 * in `dir`) that waits for the stream on `tcp:<ip>:<port>` (`-incoming`); resolves once that port
 * listens (read from /proc/net/tcp: a connection would be taken for the stream).
 */
export async function startMigrationTarget(opts: GuestOptions & { ip: string; port: number }): Promise<Guest> {
  const { ip, port, ...guest } = opts;
  const target = await startGuest({
    ...guest,
    extraArgs: [...(guest.extraArgs ?? []), '-incoming', `tcp:${ip}:${port}`],
  });
  const deadline = Date.now() + 15000;
  while (!tcpListening(ip, port)) {
    if (target.process.exitCode !== null || Date.now() > deadline) {
      await target.kill();
      throw new Error(`timed out after 15000 ms waiting for the migration target to listen on ${ip}:${port}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return target;
}
