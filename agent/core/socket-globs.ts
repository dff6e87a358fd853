/**
 * The config's discovery patterns expanded to the UNIX sockets that exist now. A pattern is a glob
 * string (mode = discovery.defaultMode) or `{ glob, mode }`.
 */
import { statSync } from 'node:fs';
import type { Config } from './config';

export type VmMode = 'hold' | 'poll';

export interface SocketPattern {
  glob: string;
  mode: VmMode;
}

export interface FoundSocket {
  path: string;
  mode: VmMode;
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
    const paths = await fg(p.glob, {
      onlyFiles: false,
      absolute: true,
      dot: true,
      followSymbolicLinks: false,
      suppressErrors: true,
    });
    for (const path of paths.sort()) {
      if (!seen.has(path) && isSocket(path)) seen.set(path, { path, mode: p.mode });
    }
  }
  return [...seen.values()];
}
