/**
 * Starts real, paused QEMU guests for tests: `-S -nodefaults -display none`, a few MiB each.
 * TCG unless `accel: 'kvm'` is asked for and /dev/kvm can be opened.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const QEMU = process.env.PHYSBITS_TEST_QEMU ?? 'qemu-system-x86_64';

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
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
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
}

export interface Guest {
  socket: string;
  dir: string;
  pid: number;
  process: ChildProcess;
  args: string[];
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
  const ownDir = !opts.dir;
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'physbits-qemu-'));
  const socket = join(dir, opts.socketName ?? `${opts.name ?? 'vm'}.qmp`);
  const accel = opts.accel === 'kvm' && kvmUsable() ? 'kvm' : 'tcg';
  const cpu = [opts.model ?? 'qemu64', opts.cpu].filter(Boolean).join(',');
  const args = [
    '-machine',
    `q35,accel=${accel}`,
    '-cpu',
    cpu,
    '-m',
    opts.memory ?? '64M',
    '-S',
    '-nodefaults',
    '-display',
    'none',
    '-no-user-config',
    '-qmp',
    `unix:${socket},server=on,wait=off`,
    ...(opts.name ? ['-name', opts.name] : []),
    ...(opts.extraArgs ?? []),
  ];
  const child = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    if (stderr.length < 8192) stderr += d.toString();
  });
  running.add(child);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      running.delete(child);
      resolve();
    }),
  );
  const deadline = Date.now() + 15000;
  while (!existsSync(socket)) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`qemu exited early (${child.exitCode ?? child.signalCode}): ${stderr.trim()}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`qemu did not create ${socket} in time: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // The socket file appears a moment before QEMU listens on it: wait until a connection is taken.
  while (!(await accepts(socket))) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`qemu is not listening on ${socket}: ${stderr.trim()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    socket,
    dir,
    pid: child.pid!,
    process: child,
    args,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
