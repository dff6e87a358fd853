/**
 * What a QmpClient waits on: the entry of each command sent and not yet answered, the commands of
 * one executeAll sharing a timer, and the heartbeat's one reusable entry. Each settles once, with
 * the reply or the reason there is none.
 */
import { CommandError, QmpError, TimeoutError } from './errors';
import type { QmpReply } from './messages';

/** The timers behind command, greeting and event-wait timeouts (an agent Timers fits). */
export interface QmpTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** What executeAll gives for one command: QEMU's reply (return or error), or why none came. */
export type BatchResult = QmpReply | QmpError;

/**
 * A command sent and not yet answered. `settle` takes the reply (with its exact text) or why there
 * is none; `execute` resolves with the reply's return value, `forwardCommand` with the whole reply.
 */
export interface Pending {
  command: string;
  settle(result: QmpReply | QmpError, text?: string, id?: string): void;
}

/**
 * QEMU's error reply as a CommandError, without a JavaScript stack: the error is QEMU's, and the
 * stack would show only this client's read path. Capturing it cost about 30 µs an error, and
 * reading a guest's facts meets several on purpose (properties an older QEMU lacks).
 */
export function commandError(address: string, command: string, error: { class: string; desc: string }): CommandError {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const err = new CommandError(command, error.class, error.desc);
    err.message = `${address}: ${err.message}`;
    return err;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** What a batch or the ping needs of its client. */
export interface EntryOwner {
  address: string;
  timers: QmpTimers;
  /** The onReply observer with the time the batch was sent; undefined when replies are not timed. */
  replied: ((command: string, sentAt: number) => void) | undefined;
  /** Removes an answered id from the pending table. */
  forget(id: string): void;
  /** Removes an id whose reply is no longer awaited; a late reply is then dropped quietly. */
  abandon(id: string): void;
}

/**
 * The commands of one executeAll: their outcomes, how many still wait, and one timer for all of
 * them. Each command's pending entry is a BatchEntry, which knows its batch and its place in it.
 */
export class Batch {
  waiting = 0;
  private readonly entries: BatchEntry[] = [];
  private timer: unknown = undefined;
  private readonly sentAt: number;

  constructor(
    private readonly owner: EntryOwner,
    private readonly results: BatchResult[],
    private readonly resolve: (results: BatchResult[]) => void,
  ) {
    this.sentAt = owner.replied ? performance.now() : 0;
  }

  add(command: string, id: string): BatchEntry {
    const entry = new BatchEntry(command, id, this, this.entries.length);
    this.entries.push(entry);
    this.waiting++;
    return entry;
  }

  answer(entry: BatchEntry, result: QmpReply | QmpError): void {
    if (this.results[entry.index] !== undefined) return;
    this.owner.forget(entry.id);
    this.results[entry.index] = result;
    if (!(result instanceof QmpError)) this.owner.replied?.(entry.command, this.sentAt);
    if (--this.waiting > 0) return;
    if (this.timer !== undefined) this.owner.timers.clearTimeout(this.timer);
    this.resolve(this.results);
  }

  /** Each command still unanswered `ms` from now fails with TimeoutError; its late reply is dropped. */
  expireIn(ms: number): void {
    this.timer = this.owner.timers.setTimeout(() => {
      this.timer = undefined;
      const err = new TimeoutError(`${this.owner.address}: no reply within ${ms} ms`);
      for (const entry of this.entries) {
        if (this.results[entry.index] !== undefined) continue;
        this.owner.abandon(entry.id);
        this.answer(entry, err);
      }
    }, ms);
  }
}

export class BatchEntry implements Pending {
  constructor(
    readonly command: string,
    readonly id: string,
    private readonly batch: Batch,
    readonly index: number,
  ) {}

  settle(result: QmpReply | QmpError): void {
    this.batch.answer(this, result);
  }
}

/** The heartbeat's pending entry: one per client, used again for every ping. */
export class PingEntry<C> implements Pending {
  readonly command = 'query-status';
  private id = '';
  private done: ((result: unknown, client: C) => void) | null = null;
  private timer: unknown = undefined;
  private ms = 0;
  private sentAt = 0;

  constructor(
    private readonly client: C,
    private readonly owner: EntryOwner,
  ) {}

  get busy(): boolean {
    return this.done !== null;
  }

  start(id: string, done: (result: unknown, client: C) => void, ms: number): void {
    this.id = id;
    this.done = done;
    this.ms = ms;
    this.sentAt = this.owner.replied ? performance.now() : 0;
    this.timer = ms > 0 && Number.isFinite(ms) ? this.owner.timers.setTimeout(this.expire, ms) : undefined;
  }

  settle(result: QmpReply | QmpError): void {
    const done = this.done;
    if (!done) return;
    this.done = null;
    if (this.timer !== undefined) this.owner.timers.clearTimeout(this.timer);
    this.timer = undefined;
    this.owner.forget(this.id);
    if (result instanceof QmpError) return done(result, this.client);
    this.owner.replied?.(this.command, this.sentAt);
    if ('error' in result) return done(commandError(this.owner.address, this.command, result.error), this.client);
    done(result.return, this.client);
  }

  private readonly expire = (): void => {
    this.timer = undefined;
    this.owner.abandon(this.id);
    this.settle(new TimeoutError(`${this.owner.address}: ${this.command}: no reply within ${this.ms} ms`));
  };
}
