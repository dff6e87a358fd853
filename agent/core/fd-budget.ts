/**
 * The daemon's file descriptors: its limit (RLIMIT_NOFILE's soft value, as `/proc/self/limits`
 * shows it), how many are open (the entries of `/proc/self/fd`), and a reserve kept for its own work
 * (QMP connections, guarded sockets, the spool, discovery's directory listings). Connections others
 * open to the daemon's listeners are admitted only while the reserve stays free; the count is read
 * again every second and kept current in between by what was admitted and released.
 */
import { readdirSync, readFileSync, statfsSync, statSync } from 'node:fs';
import type { Timers } from './timers';

/** The soft "Max open files" of a /proc/<pid>/limits text; null when absent or "unlimited". */
export function parseOpenFilesLimit(text: string): number | null {
  const m = /^Max open files\s+(\d+|unlimited)\s+/m.exec(text);
  if (!m || m[1] === 'unlimited') return null;
  return Number(m[1]);
}

/** What the budget reads (injected by tests). */
export interface FdReadings {
  /** The descriptor limit, null when unknown. */
  limit(): number | null;
  /** Descriptors open now, null when they cannot be counted. */
  open(): number | null;
}

/** procfs's f_type (include/uapi/linux/magic.h PROC_SUPER_MAGIC). */
const PROC_SUPER_MAGIC = 0x9fa0;

export function procFdReadings(procSelf = '/proc/self'): FdReadings {
  const fdDir = `${procSelf}/fd`;
  let sized: boolean | undefined;
  return {
    limit: () => {
      try {
        return parseOpenFilesLimit(readFileSync(`${procSelf}/limits`, 'utf8'));
      } catch {
        return null;
      }
    },
    open: () => {
      try {
        // Linux 6.2 and later give the number of open descriptors as the size of /proc/<pid>/fd
        // (fs/proc/fd.c proc_fd_getattr, from proc_readfd_count): one stat, where listing the
        // directory made a string for each of the thousands a daemon holding many VMs has open,
        // every second. Earlier kernels say 0 there, and a directory that is not procfs (a fixture
        // tree) has a size of its own: both are listed.
        sized ??= statfsSync(fdDir).type === PROC_SUPER_MAGIC;
        const n = sized ? statSync(fdDir).size : 0;
        return n > 0 ? n : readdirSync(fdDir).length;
      } catch {
        return null;
      }
    },
  };
}

/**
 * The reserve for a limit: a quarter of it, at least 64 and at most 4096 descriptors. A daemon
 * guarding a thousand VMs holds about three per VM (QEMU's monitor, the guarded socket, a client).
 */
export function reserveFor(limit: number): number {
  return Math.min(4096, Math.max(64, Math.floor(limit / 4)));
}

/** Above this share of the limit the daemon says it nears it; below LOW_FRACTION it says it no longer does. */
export const HIGH_FRACTION = 0.8;
export const LOW_FRACTION = 0.7;

export interface FdPressure {
  /** True while the daemon nears its limit (or refuses connections to keep its reserve). */
  high: boolean;
  open: number;
  limit: number;
}

export interface FdBudgetOptions {
  readings?: FdReadings;
  timers: Timers;
  /** How often the open descriptors are counted (default 1000 ms). */
  intervalMs?: number;
  /** Told when the pressure starts and when it ends. */
  onPressure(pressure: FdPressure): void;
}

export class FdBudget {
  private readonly readings: FdReadings;
  private limitValue: number | null;
  private sampled: number | null = null;
  /** Admitted minus released since the last count. */
  private delta = 0;
  private high = false;
  private refusedSinceCount = false;
  private timer: unknown = null;

  constructor(private readonly opts: FdBudgetOptions) {
    this.readings = opts.readings ?? procFdReadings();
    this.limitValue = this.readings.limit();
    this.count();
  }

  /** The limit, and the descriptors others' connections may not take. */
  get limit(): number | null {
    return this.limitValue;
  }

  get reserve(): number {
    return this.limitValue === null ? 0 : reserveFor(this.limitValue);
  }

  /** Descriptors open now (the last count plus what was admitted and released since). */
  get open(): number | null {
    return this.sampled === null ? null : this.sampled + this.delta;
  }

  start(): void {
    const tick = () => {
      this.count();
      this.timer = this.opts.timers.setTimeout(tick, this.opts.intervalMs ?? 1000);
    };
    this.timer = this.opts.timers.setTimeout(tick, this.opts.intervalMs ?? 1000);
  }

  stop(): void {
    if (this.timer !== null) this.opts.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /**
   * Whether one more connection from outside may be taken. When it may, the returned function
   * releases it (call it once, when the connection closes); null when it would eat into the reserve.
   */
  admit(): (() => void) | null {
    const open = this.open;
    if (this.limitValue !== null && open !== null && open + 1 > this.limitValue - this.reserve) {
      this.refusedSinceCount = true;
      this.judge(open);
      return null;
    }
    this.delta++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.delta--;
    };
  }

  private count(): void {
    this.limitValue = this.readings.limit() ?? this.limitValue;
    const open = this.readings.open();
    // No count at all (EMFILE while listing /proc/self/fd) is the limit reached.
    this.sampled = open ?? this.limitValue;
    this.delta = 0;
    if (this.sampled !== null) this.judge(this.sampled);
    this.refusedSinceCount = false;
  }

  private judge(open: number): void {
    const limit = this.limitValue;
    if (limit === null) return;
    const high = this.high
      ? open >= limit * LOW_FRACTION || this.refusedSinceCount
      : open >= limit * HIGH_FRACTION || this.refusedSinceCount;
    if (high === this.high) return;
    this.high = high;
    this.opts.onPressure({ high, open, limit });
  }
}
