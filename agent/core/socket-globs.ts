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
 * Where a VM's guarded socket appears (CONTRACT.md, `guard.socketDir`): the upstream path below the
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

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

/** Sockets matching the patterns, each once, with the mode of the first pattern that names it. */
export async function expandSocketGlobs(patterns: SocketPattern[]): Promise<FoundSocket[]> {
  const seen = new Map<string, FoundSocket>();
  if (patterns.length === 0) return [];
  // Loaded here, not at start-up: `scan --socket` and the libvirt hook never need it.
  const { default: fg } = await import('fast-glob');
  for (const p of patterns) {
    const base = resolve(globBase(p.glob, (segment) => fg.isDynamicPattern(segment)));
    const paths = await fg(p.glob, {
      onlyFiles: false,
      absolute: true,
      dot: true,
      followSymbolicLinks: false,
      suppressErrors: true,
    });
    for (const path of paths.sort()) {
      if (!seen.has(path) && isSocket(path)) seen.set(path, { path, mode: p.mode, base });
    }
  }
  return [...seen.values()];
}
