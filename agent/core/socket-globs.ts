/**
 * The config's discovery patterns expanded to the UNIX sockets that exist now. A pattern is a glob
 * string (mode = discovery.defaultMode) or `{ glob, mode }`.
 */
import { statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Config } from './config';

export type VmMode = 'hold' | 'poll';

export interface SocketPattern {
  glob: string;
  mode: VmMode;
}

export interface FoundSocket {
  path: string;
  mode: VmMode;
  /** The fixed directory part of the glob that found it (`/srv/vms` for the glob `/srv/vms/{star}/qmp.sock`). */
  base: string;
}

/**
 * The leading directories of a glob that hold no pattern characters: `/run/qemu/*.qmp` → `/run/qemu`,
 * `/srv/vms/{star}/qmp.sock` → `/srv/vms` ({star} standing for `*`), a literal path → its directory. `isDynamic` is fast-glob's test.
 */
export function globBase(glob: string, isDynamic: (segment: string) => boolean): string {
  const parts = glob.split('/');
  let fixed = 0;
  // The last segment names the socket itself, never a directory of the base.
  while (fixed < parts.length - 1 && (parts[fixed] === '' || !isDynamic(parts[fixed]))) fixed++;
  const base = parts.slice(0, fixed).join('/');
  return base === '' && glob.startsWith('/') ? '/' : base || '.';
}

/**
 * Where a VM's guarded socket appears (docs/configuration.md, `guard.socketDir`): the upstream path below the
 * fixed part of its glob, mirrored under `socketDir` (`/run/qemu/web1.qmp` found by `/run/qemu/*.qmp`
 * → `<socketDir>/web1.qmp`; `/srv/vms/web1/qmp.sock` by `/srv/vms/{star}/qmp.sock` → `<socketDir>/web1/qmp.sock`).
 * Without a base, or one the path is not under, the upstream's file name.
 */
export function guardSocketPath(socketDir: string, upstream: string, base?: string): string {
  const rel = base === undefined ? '' : relative(base, upstream);
  const inside = rel !== '' && !isAbsolute(rel) && rel.split(sep)[0] !== '..';
  return join(socketDir, inside ? rel : basename(upstream));
}

/** The directories between `socketDir` and a guarded socket that must exist (outermost first). */
export function guardSubdirs(socketDir: string, path: string): string[] {
  const dirs: string[] = [];
  for (let d = dirname(path); d !== socketDir && d.startsWith(socketDir + sep); d = dirname(d)) dirs.unshift(d);
  return dirs;
}

export function socketPatterns(discovery: Config['discovery']): SocketPattern[] {
  return discovery.sockets.map((p) => (typeof p === 'string' ? { glob: p, mode: discovery.defaultMode } : p));
}

/** Errors that show a path is not there (nothing else does: EMFILE, EACCES, EIO say nothing of it). */
const ABSENT = new Set(['ENOENT', 'ENOTDIR']);

/** Whether a path is a socket now: true, false (shown absent or another kind of file), or the error that kept it from being told. */
export function socketState(path: string): boolean | NodeJS.ErrnoException {
  try {
    return statSync(path).isSocket();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return ABSENT.has(e.code ?? '') ? false : e;
  }
}

/** What a listing found, and each error that kept part of it from being listed. */
export interface SocketListing {
  sockets: FoundSocket[];
  /** One line per error (the glob and the error code); the listing may miss sockets when any is here. */
  errors: string[];
}

/**
 * Sockets matching the patterns, each once, with the mode of the first pattern that names it. Errors
 * are never taken for "no sockets": fast-glob is asked not to suppress them (it still passes over a
 * directory that does not exist), and each one is returned with whatever else was found.
 */
export async function expandSocketGlobs(patterns: SocketPattern[]): Promise<SocketListing> {
  const seen = new Map<string, FoundSocket>();
  const errors: string[] = [];
  if (patterns.length === 0) return { sockets: [], errors };
  // Loaded here, not at start-up: `scan --socket` and the libvirt hook never need it.
  const { default: fg } = await import('fast-glob');
  for (const p of patterns) {
    const base = resolve(globBase(p.glob, (segment) => fg.isDynamicPattern(segment)));
    let paths: string[];
    try {
      paths = await fg(p.glob, {
        onlyFiles: false,
        absolute: true,
        dot: true,
        followSymbolicLinks: false,
        suppressErrors: false,
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      errors.push(`${p.glob}: ${e.code ?? e.message}${e.path ? ` (${e.path})` : ''}`);
      continue;
    }
    for (const path of paths.sort()) {
      if (seen.has(path)) continue;
      const state = socketState(path);
      if (state === true) seen.set(path, { path, mode: p.mode, base });
      else if (state !== false) errors.push(`${path}: ${state.code ?? state.message}`);
    }
  }
  return { sockets: [...seen.values()], errors };
}
