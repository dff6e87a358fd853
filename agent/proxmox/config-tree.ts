/**
 * Reading files of the Proxmox cluster file system (`proxmox.configDir`, /etc/pve) safely: the path
 * of a VM's config, bounded reads, and nothing outside the tree. /etc/pve holds links of its own
 * (`qemu-server` → `nodes/<this node>/qemu-server`, `local` → `nodes/<this node>`), so links are
 * followed, but the file they end at must lie inside the tree's real path.
 *
 * Where the config is (qemu-server src/PVE/QemuConfig.pm cfs_config_path, QemuServer.pm vm_start):
 * `qemu-server/<vmid>.conf` on this node; on a migration target vm_start loads it from the source
 * node, `nodes/<PVE_MIGRATED_FROM>/qemu-server/<vmid>.conf`, because the file moves only after the
 * migration has finished.
 */
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync } from 'node:fs';
import { join, sep } from 'node:path';
import { VM_CONFIG_MAX_BYTES, VmConfigError } from './vm-config';

/** Proxmox VMIDs: 100 to 999999999 (pve-common PVE/JSONSchema.pm pve-vmid). */
export const VMID = /^[1-9][0-9]{2,8}$/;
/** A node name as Proxmox allows one (a host name label). */
export const NODE_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;

export function parseVmid(text: string): number | null {
  return VMID.test(text) ? Number(text) : null;
}

/** The config file of `vmid`, relative to the tree: this node's, or the migration source's. */
export function vmConfigPath(vmid: number, migratedFrom: string | null): string {
  if (migratedFrom === null) return join('qemu-server', `${vmid}.conf`);
  if (!NODE_NAME.test(migratedFrom))
    throw new VmConfigError(
      'PROXMOX_CONFIG_UNREADABLE',
      `PVE_MIGRATED_FROM '${migratedFrom.slice(0, 64)}' is not a node name`,
    );
  return join('nodes', migratedFrom, 'qemu-server', `${vmid}.conf`);
}

function unreadable(file: string, why: string): VmConfigError {
  return new VmConfigError('PROXMOX_CONFIG_UNREADABLE', `${file}: ${why}`);
}

/**
 * The text of `rel` under `root`, at most `maxBytes`. Throws VmConfigError naming the file when it
 * is missing, unreadable, not a regular file, larger than maxBytes, or resolves outside `root`.
 */
export function readTreeFile(root: string, rel: string, maxBytes = VM_CONFIG_MAX_BYTES): string {
  const file = join(root, rel);
  let realRoot: string;
  let real: string;
  try {
    realRoot = realpathSync(root);
  } catch (err) {
    throw unreadable(root, `proxmox.configDir cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    real = realpathSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw unreadable(file, code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? 'error'})`);
  }
  if (!real.startsWith(realRoot.endsWith(sep) ? realRoot : realRoot + sep))
    throw unreadable(file, `leads to ${real}, outside ${realRoot}`);
  let fd: number;
  try {
    // The resolved path, not followed again: a link swapped in meanwhile fails with ELOOP.
    fd = openSync(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    throw unreadable(file, `cannot be opened (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw unreadable(file, 'is not a regular file');
    if (st.size > maxBytes) throw unreadable(file, `is ${st.size} bytes, more than the ${maxBytes} a config may have`);
    const buf = Buffer.alloc(maxBytes + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n <= maxBytes; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > maxBytes) throw unreadable(file, `grew past ${maxBytes} bytes while being read`);
    const text = buf.subarray(0, n).toString('utf8');
    if (text.includes('\u0000')) throw unreadable(file, 'holds NUL bytes: not a config');
    return text;
  } catch (err) {
    if (err instanceof VmConfigError) throw err;
    throw unreadable(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  } finally {
    closeSync(fd);
  }
}
