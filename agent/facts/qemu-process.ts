/**
 * Which process serves a QMP socket, so that what QEMU names by path (a memory backend's
 * `mem-path`) is looked up where QEMU sees it: `<procRoot>/<pid>/root`, its root and mount
 * namespace (a chrooted or containerised QEMU). Node has no SO_PEERCRED, so the listener is found
 * the way `ss -xlp` finds it: the listening socket's inode in `<procRoot>/net/unix` (the path as
 * QEMU bound it, relative to its root), the process holding that inode among `<procRoot>/<pid>/fd`,
 * and a check that `<procRoot>/<pid>/root/<bound path>` is the very socket file (same device and
 * inode, the last component not followed) this side connects to. The bound path must be the whole
 * path this side uses, or its end (QEMU chrooted or in a container sees the tail below its root): a
 * listener of the same basename elsewhere whose path was replaced by a link to this socket is not
 * QEMU. When more than one process passes, none is taken (the caller measures nothing rather than
 * in the wrong process's root). Read through the injected procRoot; bounded.
 */
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join } from 'node:path';

/** At most this many processes and descriptors per process are looked at. */
const MAX_PROCESSES = 65536;
const MAX_FDS = 65536;
/** /proc/net/unix is read up to this size. */
const MAX_NET_UNIX = 16 * 1024 * 1024;
/** __SO_ACCEPTCON in the Flags column: a listening socket. */
const LISTENING = 0x10000;

export interface UnixListener {
  inode: number;
  path: string;
}

/** Listening sockets bound to a path, from the text of /proc/net/unix. */
export function parseNetUnix(text: string): UnixListener[] {
  const out: UnixListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !f[7].startsWith('/')) continue;
    if ((parseInt(f[3], 16) & LISTENING) === 0) continue;
    const inode = Number(f[6]);
    if (Number.isSafeInteger(inode) && inode > 0) out.push({ inode, path: f.slice(7).join(' ') });
  }
  return out;
}

/** Whether a listener bound at `bound` (its own view) can be the socket this side reaches at `socket`. */
function samePath(socket: string, bound: string): boolean {
  return socket === bound || socket.endsWith(bound);
}

/** The pid of the process listening on `socket` (a path on this side), or null when not found or not one. */
export async function findSocketListener(socket: string, procRoot = '/proc'): Promise<number | null> {
  let want: { dev: number; ino: number };
  let text: string;
  try {
    want = await lstat(socket);
    text = (await readFile(join(procRoot, 'net', 'unix'), 'utf8')).slice(0, MAX_NET_UNIX);
  } catch {
    return null;
  }
  const candidates = new Map<number, string>();
  for (const l of parseNetUnix(text)) if (samePath(socket, l.path)) candidates.set(l.inode, l.path);
  if (candidates.size === 0) return null;
  let pids: string[];
  try {
    pids = (await readdir(procRoot)).filter((p) => /^[0-9]+$/.test(p)).slice(0, MAX_PROCESSES);
  } catch {
    return null;
  }
  const found = new Set<number>();
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = (await readdir(join(procRoot, pid, 'fd'))).slice(0, MAX_FDS);
    } catch {
      continue;
    }
    for (const fd of fds) {
      const link = await readlink(join(procRoot, pid, 'fd', fd)).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(link);
      const bound = m ? candidates.get(Number(m[1])) : undefined;
      if (bound === undefined) continue;
      const seen = await lstat(join(procRoot, pid, 'root', bound)).catch(() => null);
      if (seen && seen.dev === want.dev && seen.ino === want.ino) {
        found.add(Number(pid));
        break;
      }
    }
  }
  return found.size === 1 ? [...found][0] : null;
}

/** QEMU's root as this side reaches it: `<procRoot>/<pid>/root`, or null when the listener is unknown. */
export async function qemuRootOf(socket: string, procRoot = '/proc'): Promise<string | null> {
  const pid = await findSocketListener(socket, procRoot);
  return pid === null ? null : join(procRoot, String(pid), 'root');
}
