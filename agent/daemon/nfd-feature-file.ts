/**
 * The host's limit where Kubernetes schedulers look: a Node Feature Discovery local feature file
 * (schedulers.nfdFeatureFile, usually /etc/kubernetes/node-feature-discovery/features.d/physbits).
 * nfd-worker turns each `name=value` line into a node label; the labels live under
 * physbits.feature.node.kubernetes.io/, a sub-namespace nfd-master allows by default. The file is
 * written to a dot file beside it (nfd-worker ignores dot files) and renamed over it, so the worker
 * never reads half a file (docs/kubevirt.md).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export const NFD_PREFIX = 'physbits.feature.node.kubernetes.io';
/** The narrowest width QEMU accepts for a 64-bit CPU: the first `phys-bits-ge-N` label. */
const MIN_LABEL_BITS = 32;

/**
 * Pure: the feature file for a host of `physBits`: `phys-bits=N` (for nodeAffinity's Gt/Lt) and
 * `phys-bits-ge-M=true` for every M from 32 to N (for a plain nodeSelector).
 */
export function nfdFeatureText(host: { name: string; physBits: number }): string {
  const lines = [
    `# physbitsd on ${host.name}: this host's limit (host.physBits), kept current by schedulers.nfdFeatureFile`,
    `${NFD_PREFIX}/phys-bits=${host.physBits}`,
  ];
  for (let bits = MIN_LABEL_BITS; bits <= host.physBits; bits++) lines.push(`${NFD_PREFIX}/phys-bits-ge-${bits}=true`);
  return `${lines.join('\n')}\n`;
}

/**
 * Why the daemon will not write in `dir`, or null when it may: the directory must be a real
 * directory (not a symlink), owned by root or the daemon's own user, and writable by nobody else. In
 * a directory others may write, a planted file or symlink could make a root daemon write elsewhere.
 */
export async function unsafeDirectory(dir: string, uid = process.getuid?.() ?? 0): Promise<string | null> {
  const st = await lstat(dir);
  const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
  if (!st.isDirectory()) return `${dir} is not a directory`;
  if (st.uid !== 0 && st.uid !== uid) return `${dir} is owned by uid ${st.uid}, not root`;
  if (st.mode & 0o022) return `${dir} is writable by group or others (mode ${mode})`;
  return null;
}

/**
 * Writes `text` to `path` atomically (a dot file with an unpredictable name in the same directory,
 * opened O_CREAT|O_EXCL|O_NOFOLLOW, fsynced, renamed over it), mode 0644; nothing is written when the
 * file already holds exactly `text`, and nothing at all in a directory others may write
 * (unsafeDirectory). Returns whether it wrote.
 */
export async function writeNfdFeatureFile(path: string, text: string): Promise<boolean> {
  const current = await readFile(path, 'utf8').catch(() => null);
  if (current === text) return false;
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const unsafe = await unsafeDirectory(dir);
  if (unsafe) throw new Error(`${unsafe}; the feature file is not written there`);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(12).toString('hex')}.tmp`);
  const file = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    await file.writeFile(text);
    await file.sync();
  } finally {
    await file.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  return true;
}
