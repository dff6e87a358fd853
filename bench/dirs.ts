/**
 * Where the benchmarks put their sockets and state. Sockets go to a tmpfs when one is writable
 * (/dev/shm), as they live in /run on a real host: creating a thousand socket files on a disk
 * directory measures the disk, not physbits. The alert spool stays on disk (the OS temp dir), as
 * /var/lib/physbits does on a real host, so its fsync is real.
 * PHYSBITS_BENCH_RUNDIR overrides the socket location.
 */
import { accessSync, constants, mkdtempSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** statfs f_type of tmpfs (linux/magic.h TMPFS_MAGIC). */
const TMPFS_MAGIC = 0x01021994;

function isWritableTmpfs(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return statfsSync(path).type === TMPFS_MAGIC;
  } catch {
    return false;
  }
}

/** The directory under which socket directories are made, and whether it is a tmpfs. */
export function runtimeBase(): { path: string; tmpfs: boolean } {
  const env = process.env.PHYSBITS_BENCH_RUNDIR;
  if (env) return { path: env, tmpfs: isWritableTmpfs(env) };
  if (isWritableTmpfs('/dev/shm')) return { path: '/dev/shm', tmpfs: true };
  return { path: tmpdir(), tmpfs: isWritableTmpfs(tmpdir()) };
}

/** A fresh private directory for sockets (remove it when done). */
export function runtimeDir(prefix: string): string {
  return mkdtempSync(join(runtimeBase().path, prefix));
}

/** A fresh private directory on disk for state that is fsync'ed (remove it when done). */
export function stateDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
