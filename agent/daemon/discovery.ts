/**
 * Discovery of QMP sockets: the config's globs, re-expanded when a watched directory changes
 * (new sockets are seen within a second) and on a node-cron schedule as a safety net.
 * Emits `added` / `removed` with the socket and its mode, and `replaced` when a new socket took the
 * path of a known one (a restarted QEMU binds a fresh socket: a waiting reconnect can go now).
 *
 * An error while listing never counts as "gone": a known socket is removed only when it is shown to
 * have disappeared (stat says ENOENT or ENOTDIR, or the path is no longer a socket). A pass that met
 * errors emits `listing` with them (an empty list once a pass is clean again), so the daemon can say
 * so; fast-glob's suppressErrors would otherwise turn EMFILE into "no sockets" and every VM would go.
 */
import { EventEmitter } from 'node:events';
import { statSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import fg from 'fast-glob';
import type { Logger } from '../core/logger';
import { expandSocketGlobs, socketState, type FoundSocket, type SocketPattern } from '../core/socket-globs';

export interface DiscoveryOptions {
  patterns: SocketPattern[];
  schedule: string;
  logger: Logger;
  /** Delay that coalesces a burst of directory changes into one rescan. */
  debounceMs?: number;
}

/** The directory a glob's matches live in, when that directory has no magic in its path. */
export function watchDirOf(glob: string): string | null {
  const dir = dirname(glob);
  return fg.isDynamicPattern(dir) ? null : dir;
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** "dev:ino" of a directory (its ctime changes with every entry, so it is left out). */
function dirIdentity(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** `dir` when it exists, else its nearest existing ancestor (null only if none can be read). */
export function nearestExisting(dir: string): string | null {
  let d = dir;
  for (;;) {
    if (isDir(d)) return d;
    const up = dirname(d);
    if (up === d) return null;
    d = up;
  }
}

/**
 * "dev:ino:ctime" of a path, or null when it cannot be read now. The inode number alone does not
 * tell: a socket unlinked and bound again at once often gets the same one back (tmpfs).
 */
export function socketIdentity(path: string): string | null {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}:${st.ctimeNs}`;
  } catch {
    return null;
  }
}

/** Discovery's events: a socket found, gone, or re-created at the same path; a pass's listing errors when they change. */
export interface DiscoveryEvents {
  added: [found: FoundSocket];
  removed: [found: FoundSocket];
  replaced: [found: FoundSocket];
  listing: [errors: string[]];
}

export class Discovery extends EventEmitter<DiscoveryEvents> {
  private readonly known = new Map<string, FoundSocket>();
  /** socketIdentity() of each known socket, to tell a re-created socket from the old one. */
  private readonly identity = new Map<string, string>();
  /** Per glob directory: the directory actually watched (itself, or its nearest existing ancestor). */
  private readonly watchers = new Map<string, { target: string; id: string | null; w: FSWatcher }>();
  private task: ScheduledTask | null = null;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private again = false;
  private stopped = false;
  /** The last pass's errors, one a line ('' when it met none). */
  private lastErrors = '';

  constructor(private readonly opts: DiscoveryOptions) {
    super();
  }

  async start(): Promise<void> {
    this.armWatchers();
    this.task = cron.schedule(this.opts.schedule, () => this.soon(0), { noOverlap: true });
    await this.rescan();
  }

  /**
   * Watches each glob's directory; one that does not exist yet (e.g. /run/qemu before the first
   * guest) is waited for by watching its nearest existing ancestor. Idempotent: every pass re-arms
   * what changed (a directory created, or removed and created again).
   */
  private armWatchers(): void {
    if (this.stopped) return;
    const dirs = new Set(this.opts.patterns.map((p) => watchDirOf(p.glob)).filter((d): d is string => !!d));
    for (const dir of dirs) {
      const target = nearestExisting(dir);
      const id = target ? dirIdentity(target) : null;
      const cur = this.watchers.get(dir);
      // Same directory, same inode: the watch still stands (a directory removed and made again is new).
      if (cur && cur.target === target && cur.id === id) continue;
      cur?.w.close();
      this.watchers.delete(dir);
      if (!target) continue;
      try {
        const w = watch(target, { persistent: false }, () => {
          if (target !== dir) this.armWatchers();
          this.soon();
        });
        w.on('error', (err) => {
          this.opts.logger.warn('directory watch failed; relying on the schedule', { dir: target, error: err.message });
          w.close();
          if (this.watchers.get(dir)?.w === w) this.watchers.delete(dir);
        });
        this.watchers.set(dir, { target, id, w });
      } catch (err) {
        this.opts.logger.warn('cannot watch directory; relying on the schedule', {
          dir: target,
          error: (err as Error).message,
        });
      }
    }
  }

  soon(delay = this.opts.debounceMs ?? 100): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.rescan();
    }, delay);
  }

  /** Re-expands the globs; concurrent calls coalesce into one extra pass. */
  rescan(): Promise<void> {
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        await this.pass();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.scanning = null;
    });
    return this.scanning;
  }

  private async pass(): Promise<void> {
    this.armWatchers();
    let found: FoundSocket[];
    const errors: string[] = [];
    try {
      const listing = await expandSocketGlobs(this.opts.patterns);
      found = listing.sockets;
      errors.push(...listing.errors);
    } catch (err) {
      found = [];
      errors.push((err as Error).message);
    }
    if (this.stopped) return;
    const now = new Set(found.map((f) => f.path));
    for (const [path, s] of this.known) {
      if (now.has(path)) continue;
      const state = socketState(path);
      if (state === true) continue; // still there: only the listing missed it
      if (state !== false) {
        errors.push(`${path}: ${state.code ?? state.message}`);
        continue;
      }
      this.known.delete(path);
      this.identity.delete(path);
      this.emit('removed', s);
    }
    for (const f of found) {
      const id = socketIdentity(f.path);
      if (!this.known.has(f.path)) {
        this.known.set(f.path, f);
        if (id) this.identity.set(f.path, id);
        this.emit('added', f);
      } else if (id && this.identity.get(f.path) !== id) {
        const before = this.identity.get(f.path);
        this.identity.set(f.path, id);
        const known = this.known.get(f.path);
        if (before && known) this.emit('replaced', known);
      }
    }
    // Said once per change of the errors, not on every pass while they last.
    const text = errors.join('\n');
    if (text !== this.lastErrors) {
      if (errors.length) this.opts.logger.error('discovery could not list everything; known VMs kept', { errors });
      else this.opts.logger.info('discovery lists everything again');
      this.lastErrors = text;
      this.emit('listing', errors);
    }
  }

  sockets(): FoundSocket[] {
    return [...this.known.values()];
  }

  stop(): void {
    this.stopped = true;
    for (const { w } of this.watchers.values()) w.close();
    this.watchers.clear();
    void this.task?.destroy();
    this.task = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
