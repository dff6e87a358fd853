/**
 * Listening on a UNIX socket path with a given mode and owner, with no moment at which the socket
 * is reachable under wider permissions:
 *
 *  1. the socket is bound inside a fresh private directory (mkdtemp, 0700) next to the target, which
 *     nobody but this process's user can enter;
 *  2. it is chown'ed and chmod'ed there, where nobody else can reach it;
 *  3. link(2) publishes it under the target name, which fails when anything is there: a stale
 *     socket found there is removed first (and only when it is still the one found stale), so a
 *     live socket, even one bound a moment before, is never replaced (rename(2) would);
 *  4. the temporary name and directory are removed (unlink, rmdir); the socket file keeps the inode
 *     read in step 2, by which close() knows it is still its own.
 *
 * What is at the target is looked at only when link(2) finds something there: a fresh path costs
 * no probe (the daemon binds one guarded socket per VM, a thousand at start on a large host). The
 * steps are synchronous calls, as bind(2) itself is in Node (net.Server.listen on a path): metadata
 * operations in the socket's own directory, microseconds on the tmpfs of /run, where a round trip
 * through libuv's thread pool and a promise for each cost the daemon more than the calls.
 *
 * A path that exists and is not a socket is never replaced; a socket some live process still
 * accepts on is never replaced either (SocketInUseError).
 *
 * The process umask is never changed: it is shared by every thread, libuv's threadpool included,
 * so a mkdir or open running there during the bind would be created under the socket's umask
 * (a 0600 directory, or a file wider than the daemon's own umask allows).
 */
import { chmodSync, chownSync, linkSync, lstatSync, mkdtempSync, rmdirSync, unlinkSync } from 'node:fs';
import { lstat, rm, unlink } from 'node:fs/promises';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { MAX_UNIX_PATH_BYTES } from './address';
import { ListenError, SocketInUseError } from './errors';

export interface UnixListenOptions {
  /** Permission bits of the socket, e.g. 0o660. */
  mode: number;
  uid?: number;
  gid?: number;
  backlog?: number;
  /** How long to wait for an existing socket to answer before calling it stale. Default 1000 ms. */
  probeTimeoutMs?: number;
}

export interface UnixListenHandle {
  readonly path: string;
  /** Stops listening and removes the socket file when it is still the one created here. */
  close(): Promise<void>;
}

/** What occupies a path now. Exported for the daemon's own checks. */
export async function probeSocketPath(path: string, timeoutMs = 1000): Promise<'absent' | 'stale' | 'live'> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw new ListenError(`${path}: cannot inspect: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
  }
  if (!st.isSocket()) throw new ListenError(`${path} exists and is not a socket; refusing to replace it`);
  return new Promise((done, fail) => {
    const sock = net.createConnection({ path });
    const timer = setTimeout(() => finish('live'), timeoutMs);
    function finish(result: 'absent' | 'stale' | 'live' | Error): void {
      clearTimeout(timer);
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      if (result instanceof Error) fail(result);
      else done(result);
    }
    sock.once('connect', () => finish('live'));
    sock.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ECONNREFUSED') finish('stale');
      else if (e.code === 'ENOENT') finish('absent');
      else finish(new ListenError(`${path}: cannot tell whether it is in use: ${e.code}`, { cause: e }));
    });
  });
}

/** link(2) of `tmp` at `target`: false when something is there already (EEXIST). */
function linkedAt(tmp: string, target: string): boolean {
  try {
    linkSync(tmp, target);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

/** Links the bound socket `tmp` in at `target`, removing only a stale socket found there. */
async function publish(tmp: string, target: string, probeTimeoutMs: number | undefined): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    if (linkedAt(tmp, target)) return;
    let found;
    try {
      found = await lstat(target);
    } catch {
      continue; // gone meanwhile: link again
    }
    const state = await probeSocketPath(target, probeTimeoutMs);
    if (state === 'live') throw new SocketInUseError(target);
    if (state === 'stale') {
      const now = await lstat(target).catch(() => null);
      if (now && now.ino === found.ino && now.dev === found.dev) await unlink(target).catch(() => undefined);
    }
  }
  throw new ListenError(`${target}: kept being re-created while this socket was being published`);
}

/** Binds `server` (a net.Server or http.Server) to `path` as described above. */
export async function listenUnixSocket(
  server: net.Server,
  path: string,
  opts: UnixListenOptions,
): Promise<UnixListenHandle> {
  const target = resolve(path);
  const mode = opts.mode & 0o777;
  if (Buffer.byteLength(target) > MAX_UNIX_PATH_BYTES)
    throw new ListenError(`${target}: a socket path holds at most ${MAX_UNIX_PATH_BYTES} bytes`);

  let tmpDir: string;
  try {
    tmpDir = mkdtempSync(join(dirname(target), '.sock-'));
  } catch (err) {
    throw new ListenError(
      `${target}: cannot create a temporary directory beside it: ${(err as NodeJS.ErrnoException).code}`,
      { cause: err },
    );
  }
  const tmp = join(tmpDir, 's');
  let bound = false;
  let st;
  try {
    if (Buffer.byteLength(tmp) > MAX_UNIX_PATH_BYTES) {
      throw new ListenError(
        `${target}: the temporary name ${tmp} would exceed ${MAX_UNIX_PATH_BYTES} bytes; use a shorter directory`,
      );
    }
    await new Promise<void>((ok, fail) => {
      const onError = (e: Error): void => {
        server.off('listening', onListening);
        fail(e);
      };
      const onListening = (): void => {
        server.off('error', onError);
        ok();
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ path: tmp, backlog: opts.backlog });
    });
    bound = true;
    if (opts.uid !== undefined || opts.gid !== undefined) chownSync(tmp, opts.uid ?? -1, opts.gid ?? -1);
    chmodSync(tmp, mode);
    st = lstatSync(tmp);
    await publish(tmp, target, opts.probeTimeoutMs);
  } catch (err) {
    if (bound) await new Promise<void>((r) => server.close(() => r()));
    await rm(tmpDir, { recursive: true, force: true });
    if (err instanceof ListenError || err instanceof SocketInUseError) throw err;
    throw new ListenError(
      `${target}: cannot listen: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    );
  }
  try {
    unlinkSync(tmp);
    rmdirSync(tmpDir);
  } catch {
    await rm(tmpDir, { recursive: true, force: true });
  }

  let closed: Promise<void> | null = null;
  return {
    path: target,
    close(): Promise<void> {
      closed ??= (async () => {
        try {
          const now = await lstat(target);
          if (now.ino === st.ino && now.dev === st.dev) await unlink(target);
        } catch {
          // Already gone, or replaced by someone else's socket: leave it.
        }
        await new Promise<void>((r) => server.close(() => r()));
      })();
      return closed;
    },
  };
}
