/**
 * The daemon's log stream (stderr: a pipe, or journald's socket under systemd) behind a fuse. A
 * stream that fails (EPIPE when its reader went away, EBADF, a socket reset) is never written
 * again, its error never reaches the process (an unhandled stream error would be an uncaught
 * exception, whose log line would fail the same way, and so on), and what is logged from then on is
 * counted and dropped. A stream that stops taking lines (a full pipe, a journald that does not read)
 * holds at most `maxQueuedBytes`; past that lines are dropped and counted, and once it drains the
 * daemon says how many were lost. Writing never throws and never waits.
 */
import { Writable } from 'node:stream';

/** What the metrics and the daemon's notices read. */
export interface LogStreamHealth {
  /** Lines dropped so far because the stream had failed or was full. */
  dropped(): number;
  /** The failure that closed the stream for good (`EPIPE`, …); null while it works. */
  failure(): string | null;
}

export interface LogStreamOptions {
  /** Bytes left waiting in the target before lines are dropped (default 1 MiB). */
  maxQueuedBytes?: number;
  /** Called once, when the target fails for good. */
  onFailure?: (reason: string) => void;
  /** Called when a full target drains after lines were dropped, with how many (once per episode). */
  onRecovered?: (dropped: number) => void;
}

/** The part of a stream the fuse uses; process.stderr fits. */
export interface LogTarget {
  write(chunk: Buffer | string): boolean;
  readonly writableLength: number;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'drain', listener: () => void): unknown;
}

const DEFAULT_MAX_QUEUED = 1024 * 1024;

export class LogStream extends Writable implements LogStreamHealth {
  private readonly maxQueued: number;
  private failed: string | null = null;
  private droppedLines = 0;
  /** Lines dropped since the target last had room; reported when it drains. */
  private droppedWhileFull = 0;

  constructor(
    private readonly target: LogTarget,
    private readonly opts: LogStreamOptions = {},
  ) {
    super({ decodeStrings: false });
    this.maxQueued = opts.maxQueuedBytes ?? DEFAULT_MAX_QUEUED;
    target.on('error', (err) => this.fail(err));
    target.on('drain', () => this.drained());
  }

  dropped(): number {
    return this.droppedLines;
  }

  failure(): string | null {
    return this.failed;
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    if (this.failed !== null || this.target.writableLength >= this.maxQueued) {
      this.droppedLines++;
      if (this.failed === null) this.droppedWhileFull++;
    } else {
      try {
        this.target.write(chunk);
      } catch (err) {
        this.fail(err as Error);
        this.droppedLines++;
      }
    }
    done();
  }

  private fail(err: Error): void {
    if (this.failed !== null) return;
    this.failed = (err as NodeJS.ErrnoException).code ?? err.message ?? String(err);
    try {
      this.opts.onFailure?.(this.failed);
    } catch {
      // A notice that fails is not a reason to fail the daemon.
    }
  }

  private drained(): void {
    if (this.failed !== null || this.droppedWhileFull === 0) return;
    const count = this.droppedWhileFull;
    this.droppedWhileFull = 0;
    try {
      this.opts.onRecovered?.(count);
    } catch {
      // As above.
    }
  }
}
