/**
 * The version and commit a build is made from: package.json's version, `git rev-parse HEAD` and
 * whether the tree had uncommitted changes. Run as a script it writes build/build-info.json
 * (`npm run build`); the package's bundle embeds the same object (bundle.ts).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BuildInfo } from '../../agent/core/version';

export const REPO_ROOT = join(__dirname, '..', '..', '..');

/** `git -C <repo> ARGS` trimmed, or null where there is no git or no checkout. */
export function git(args: string[]): string | null {
  try {
    return execFileSync('git', ['-C', REPO_ROOT, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null; // no git, or not a checkout (a source tarball)
  }
}

export function readBuildInfo(): BuildInfo {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
  const commit = git(['rev-parse', 'HEAD']);
  const status = commit === null ? null : git(['status', '--porcelain', '--untracked-files=no']);
  return { version: pkg.version, commit: commit && /^[0-9a-f]{40}$/.test(commit) ? commit : null, dirty: !!status };
}

if (require.main === module) {
  writeFileSync(join(REPO_ROOT, 'build', 'build-info.json'), `${JSON.stringify(readBuildInfo())}\n`);
}
