/**
 * What `--version` prints: the package's version and the git commit it was built from, fixed at build
 * time. The packaged bundle gets them from esbuild (`define`, contrib/package/bundle.ts); a build
 * from the repository reads build/build-info.json, written by `npm run build` (contrib/package/build-info.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface BuildInfo {
  version: string;
  /** Full commit id; null when the tree was built without git (a tarball). */
  commit: string | null;
  /** The tree had changes not committed when it was built. */
  dirty: boolean;
}

/** Replaced by an object literal in the bundle; undeclared (typeof "undefined") elsewhere. */
declare const PHYSBITS_BUILD_INFO: BuildInfo | undefined;

function fromBuildDir(): BuildInfo | null {
  // build/agent/core/version.js → build/build-info.json
  try {
    return JSON.parse(readFileSync(join(__dirname, '..', '..', 'build-info.json'), 'utf8')) as BuildInfo;
  } catch {
    return null;
  }
}

export function buildInfo(): BuildInfo | null {
  if (typeof PHYSBITS_BUILD_INFO !== 'undefined') return PHYSBITS_BUILD_INFO;
  return fromBuildDir();
}

/** `physbitsctl 0.1.0 (commit 0123456789ab)`; says so when the build had no git or no build step. */
export function versionLine(program: string, info: BuildInfo | null = buildInfo()): string {
  if (!info) return `${program}: version unknown (built with tsc alone; \`npm run build\` records it)`;
  if (!info.commit) return `${program} ${info.version} (built without git: commit unknown)`;
  return `${program} ${info.version} (commit ${info.commit.slice(0, 12)}${info.dirty ? ', modified' : ''})`;
}
