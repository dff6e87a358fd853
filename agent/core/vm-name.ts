import { createHash } from 'node:crypto';
import { basename } from 'node:path';

/** The name a VM goes by when QEMU does not tell one: its socket's basename without the extension. */
export function nameFromSocket(socket: string): string {
  const base = basename(socket);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

/** Hex digits of a VM's id: 48 bits, so that a host's thousand sockets collide with odds below 1 in 10^8. */
export const VM_ID_DIGITS = 12;

/**
 * A VM's identity on this host: the first 12 hex digits of the SHA-256 of its upstream QMP socket's
 * path as discovery found it (`/run/qemu/web1.qmp`), or of `libvirt:<domain>` for a domain watched
 * through libvirt. Two VMs that QEMU names alike (`-name dup` twice) have two ids; the same socket
 * keeps its id across restarts of the VM and of the daemon. Names are for people, the id is the
 * `id` label of every per-VM series, the `id` field of status documents and the `id` label of alerts
 * (docs/metrics.md).
 */
export function vmId(socket: string): string {
  return createHash('sha256').update(socket).digest('hex').slice(0, VM_ID_DIGITS);
}

/** Whether a string has the form of a VM id (what `check-migration` and `advise` accept beside a name). */
export function looksLikeVmId(text: string): boolean {
  return text.length === VM_ID_DIGITS && /^[0-9a-f]+$/.test(text);
}
