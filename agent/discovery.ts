/**
 * Discovery of QMP sockets: the config's globs, re-expanded when a watched directory changes
 * (new sockets are seen within a second) and on a node-cron schedule as a safety net.
 * Emits `added` / `removed` with the socket and its mode, and `replaced` when a new socket took the
 * path of a known one (a restarted QEMU binds a fresh socket: a waiting reconnect can go now).
 */
import { EventEmitter } from 'node:events';
import { statSync, watch, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import fg from 'fast-glob';
import type { Logger } from './logger';
import { expandSocketGlobs, type FoundSocket, type SocketPattern } from './socket-globs';

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

export class Discovery extends EventEmitter {
  private readonly known = new Map<string, FoundSocket>();
  /** socketIdentity() of each known socket, to tell a re-created socket from the old one. */
  private readonly identity = new Map<string, string>();
  private readonly watchers: FSWatcher[] = [];
  private task: ScheduledTask | null = null;
  private timer: NodeJS.Timeout | null = null;
  private scanning: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(private readonly opts: DiscoveryOptions) {
    super();
  }

  async start(): Promise<void> {
    for (const dir of new Set(this.opts.patterns.map((p) => watchDirOf(p.glob)).filter((d): d is string => !!d))) {
      try {
        const w = watch(dir, { persistent: false }, () => this.soon());
        w.on('error', (err) => this.opts.logger.warn('directory watch failed; relying on the schedule', { dir, error: err.message }));
        this.watchers.push(w);
      } catch (err) {
        this.opts.logger.warn('cannot watch directory; relying on the schedule', { dir, error: (err as Error).message });
      }
    }
    this.task = cron.schedule(this.opts.schedule, () => this.soon(0), { noOverlap: true });
    await this.rescan();
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
    let found: FoundSocket[];
    try {
      found = await expandSocketGlobs(this.opts.patterns);
    } catch (err) {
      this.opts.logger.warn('discovery pass failed', { error: (err as Error).message });
      return;
    }
    if (this.stopped) return;
    const now = new Set(found.map((f) => f.path));
    for (const [path, s] of this.known) {
      if (!now.has(path)) {
        this.known.delete(path);
        this.identity.delete(path);
        this.emit('removed', s);
      }
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
        if (before) this.emit('replaced', this.known.get(f.path));
      }
    }
  }

  sockets(): FoundSocket[] {
    return [...this.known.values()];
  }

  stop(): void {
    this.stopped = true;
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
    void this.task?.destroy();
    this.task = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
