/**
 * libvirt's domain events, followed through one long-running `virsh event --all --loop --timestamp`
 * (libvirt tools/virsh-domain-event.c cmdEvent: it registers for every event type and prints each
 * as it comes, flushing per event). virsh ends when its connection does: a libvirtd restart prints
 * "error: Disconnected from qemu:///system due to end of file" and exits 1; with no libvirtd it exits
 * at once. The stream then starts virsh again after a backoff (agent/core/backoff.ts) and, once the
 * new one has run for `settleMs`, says so (`onUp`): the caller reads everything again, since events
 * in between were lost.
 *
 * Bounds: a line longer than `maxLineBytes` ends that virsh (the framing is lost); stderr keeps its
 * last 2 KiB for the message; a throw anywhere in handling a line ends that virsh too, never the
 * process. Stopping kills virsh: SIGTERM, SIGKILL after `killGraceMs`.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { LineFramer } from '../../qmp/framing';
import { backoffDelay, type BackoffOptions } from '../core/backoff';
import type { Timers } from '../core/timers';
import { parseEventLine, type LibvirtDomainEvent } from './libvirt-events';
import { virshErrorLine } from './virsh';

/** The running virsh, as the stream needs it. */
export interface StreamProcess {
  readonly stdout: Readable;
  readonly stderr: Readable;
  kill(signal: NodeJS.Signals): void;
  /** `fn` runs once, after the process ended and its output was read: why it ended. */
  onEnd(fn: (how: string) => void): void;
}

export type SpawnStream = (file: string, args: readonly string[]) => StreamProcess;

export interface EventStreamOptions {
  uri: string;
  /** The virsh binary (config discovery.virsh), read at each start. */
  virsh: () => string;
  timers: Timers;
  /** Default: node's spawn, no shell, LC_ALL=C. */
  spawn?: SpawnStream;
  /** For the backoff's jitter; default Math.random. */
  random?: () => number;
  backoff?: BackoffOptions;
  /** How long a new virsh must run before it counts as listening (`onUp`); default 1000 ms. */
  settleMs?: number;
  /** A virsh that ran this long starts the backoff over when it ends; default 30 s. */
  stableMs?: number;
  maxLineBytes?: number;
  killGraceMs?: number;
  onEvent(event: LibvirtDomainEvent): void;
  /** Something happened that no one domain can be named for (a header not understood, a lost line). */
  onUnreadable(why: string): void;
  /** virsh has listened for `settleMs`; `first` is false after a restart (events were lost). */
  onUp(first: boolean): void;
  /** virsh ended; the next one starts in `retryMs`. */
  onDown(reason: string, retryMs: number): void;
}

export const EVENT_STREAM_DEFAULTS = {
  backoff: { baseMs: 500, maxMs: 30000, jitter: 0.2 },
  settleMs: 1000,
  stableMs: 30000,
  maxLineBytes: 16 * 1024,
  killGraceMs: 2000,
} as const;

const STDERR_KEEP = 2048;

/** Node's spawn as the stream uses it. */
export const spawnVirshStream: SpawnStream = (file, args) => {
  const child = spawn(file, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
    windowsHide: true,
  });
  let ended = false;
  let failure: string | null = null;
  const waiting: Array<(how: string) => void> = [];
  const end = (how: string) => {
    if (ended) return;
    ended = true;
    for (const fn of waiting) fn(how);
  };
  child.on('error', (err: NodeJS.ErrnoException) => {
    failure =
      err.code === 'ENOENT' ? `${file}: not found (install libvirt-clients or set discovery.virsh)` : err.message;
    // A process that never started emits no 'close' on some paths: end here.
    if (child.pid === undefined) end(failure);
  });
  child.on('close', (code, signal) => end(failure ?? (signal ? `killed by ${signal}` : `exited with code ${code}`)));
  return {
    stdout: child.stdout,
    stderr: child.stderr,
    kill: (signal) => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    onEnd: (fn) => {
      waiting.push(fn);
    },
  };
};

export class LibvirtEventStream {
  private child: StreamProcess | null = null;
  private timer: unknown = null;
  private settleTimer: unknown = null;
  private killTimer: unknown = null;
  private attempt = 0;
  private started = false;
  private stopped = false;
  private ended: Promise<void> = Promise.resolve();

  constructor(private readonly opts: EventStreamOptions) {}

  private get backoff(): BackoffOptions {
    return this.opts.backoff ?? EVENT_STREAM_DEFAULTS.backoff;
  }

  /** Whether a virsh is running now. */
  get running(): boolean {
    return this.child !== null;
  }

  start(): void {
    if (this.child || this.stopped) return;
    this.launch();
  }

  private launch(): void {
    this.timer = null;
    const opts = this.opts;
    const first = !this.started;
    this.started = true;
    const startedAt = opts.timers.now();
    let child: StreamProcess;
    try {
      child = (opts.spawn ?? spawnVirshStream)(opts.virsh(), [
        `--connect=${opts.uri}`,
        'event',
        '--all',
        '--loop',
        '--timestamp',
      ]);
    } catch (err) {
      this.retry((err as Error).message, startedAt);
      return;
    }
    this.child = child;
    const framer = new LineFramer(opts.maxLineBytes ?? EVENT_STREAM_DEFAULTS.maxLineBytes);
    let stderr = '';
    let failure: string | null = null;
    const fail = (why: string) => {
      failure ??= why;
      child.stdout.removeAllListeners('data');
      child.kill('SIGTERM');
    };
    child.stdout.on('data', (chunk: Buffer) => {
      try {
        framer.push(chunk, (line) => {
          const parsed = parseEventLine(line.toString('utf8'));
          if (parsed.kind === 'event') opts.onEvent(parsed.event);
          else if (parsed.kind === 'unreadable') opts.onUnreadable(`a '${parsed.type}' event virsh printed unreadably`);
        });
      } catch (err) {
        opts.onUnreadable('the event stream broke off');
        fail((err as Error).message);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString('utf8')).slice(-STDERR_KEEP);
    });
    this.ended = new Promise((resolve) =>
      child.onEnd((how) => {
        if (this.child === child) this.child = null;
        this.clear('settleTimer');
        this.clear('killTimer');
        resolve();
        this.retry(failure ?? (virshErrorLine(stderr) || how), startedAt);
      }),
    );
    this.settleTimer = opts.timers.setTimeout(() => {
      this.settleTimer = null;
      if (this.child === child && !this.stopped) opts.onUp(first);
    }, opts.settleMs ?? EVENT_STREAM_DEFAULTS.settleMs);
  }

  private retry(reason: string, startedAt: number): void {
    if (this.stopped) return;
    if (this.opts.timers.now() - startedAt >= (this.opts.stableMs ?? EVENT_STREAM_DEFAULTS.stableMs)) this.attempt = 0;
    const delay = backoffDelay(this.attempt++, this.backoff, this.opts.random);
    this.opts.onDown(reason, delay);
    this.timer = this.opts.timers.setTimeout(() => this.launch(), delay);
  }

  private clear(which: 'timer' | 'settleTimer' | 'killTimer'): void {
    if (this[which]) this.opts.timers.clearTimeout(this[which]);
    this[which] = null;
  }

  /** Ends the stream: no restart; virsh gets SIGTERM, and SIGKILL if it is still there after the grace. */
  stop(): Promise<void> {
    this.stopped = true;
    this.clear('timer');
    this.clear('settleTimer');
    const child = this.child;
    if (child) {
      child.kill('SIGTERM');
      this.killTimer = this.opts.timers.setTimeout(() => {
        this.killTimer = null;
        child.kill('SIGKILL');
      }, this.opts.killGraceMs ?? EVENT_STREAM_DEFAULTS.killGraceMs);
    }
    return this.ended;
  }
}
