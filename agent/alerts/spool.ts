/**
 * The durable, bounded queue of alert states. Every state change is appended to a JSON-lines log
 * and fsync'ed before any sink may see it; deliveries are recorded per sink ("settle"); the log is
 * rewritten (temp file + fsync + rename + fsync of the directory) when it has grown well past the
 * live entries, and once on open, which also drops a torn last line left by a crash.
 *
 * An entry is kept while some sink still has to receive it, or while it is the latest state of an
 * alert that still fires (so a restart knows the alert and its startsAt). When the bound is hit the
 * oldest superseded states go first, then states of alerts that have ended, then the oldest firing.
 */
import { createReadStream } from 'node:fs';
import { chmod, mkdir, open, rename, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { isFiring, type AlertRecord } from './alert-model';
import { SpoolError } from './alert-errors';
import { parseOp, type LogOp } from './spool-log';
import { silentLogger, type Logger } from '../core/logger';
import type { Timers } from '../core/timers';

export const SPOOL_FILE = 'alerts.log';
const TMP_SUFFIX = '.tmp';

export interface SpoolEntry {
  seq: number;
  /** Unique id of this state change, stable across restarts (receivers may de-duplicate on it). */
  id: string;
  record: AlertRecord;
  /** A state change notification receivers (webhooks) get; false for annotation-only updates. */
  notify: boolean;
  /** Sinks that have not received this state yet. */
  pending: string[];
}

export type DropReason = 'superseded' | 'ended' | 'firing';

export interface SpoolOptions {
  dir: string;
  maxEntries: number;
  clock: Pick<Timers, 'now'>;
  logger?: Logger;
  /** Sinks that need only the latest state of an alert (Alertmanager): older states are settled for them. */
  latestOnly?: (sink: string) => boolean;
  onDrop?: (entry: SpoolEntry, reason: DropReason) => void;
}

export interface SpoolLoad {
  entries: number;
  /** Lines that could not be read (a torn final write, or damage). */
  skippedLines: number;
}

export class Spool {
  readonly file: string;
  private readonly opts: SpoolOptions;
  private readonly logger: Logger;
  private readonly all = new Map<number, SpoolEntry>();
  private readonly latestByKey = new Map<string, number>();
  /** Entries per alert key (the latest and any superseded states still waiting for a sink). */
  private readonly countByKey = new Map<string, number>();
  /** Entries that are no longer the latest of their key, in the order they became so. */
  private readonly superseded = new Set<number>();
  /** Latest entries with an endsAt (resolved conditions, refusals), oldest first. */
  private readonly bounded = new Set<number>();
  private readonly bySink = new Map<string, Set<number>>();
  private pendingEntries = 0;
  private nextSeq = 1;
  private durableSeq = 0;
  private buffer: string[] = [];
  private fileLines = 0;
  private needCompact = true;
  private handle: FileHandle | null = null;
  private chain: Promise<void> = Promise.resolve();
  private opened = false;

  constructor(opts: SpoolOptions) {
    this.opts = opts;
    this.logger = opts.logger ?? silentLogger;
    this.file = join(opts.dir, SPOOL_FILE);
  }

  get size(): number {
    return this.all.size;
  }

  /** Entries some sink still waits for. */
  get pendingCount(): number {
    return this.pendingEntries;
  }

  /** Creates the directory (0700), replays the log and rewrites it compactly. */
  async open(): Promise<SpoolLoad> {
    try {
      await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
      await chmod(this.opts.dir, 0o700);
    } catch (err) {
      throw new SpoolError(`cannot create spool directory ${this.opts.dir}: ${(err as Error).message}`, { cause: err });
    }
    let skipped = 0;
    try {
      await stat(this.file);
      skipped = await this.replay();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        if (err instanceof SpoolError) throw err;
        throw new SpoolError(`cannot read ${this.file}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (skipped) this.logger.warn('alert spool: skipped unreadable lines', { file: this.file, lines: skipped });
    this.rebuildIndexes();
    this.prune(this.opts.clock.now());
    this.enforceBound();
    this.opened = true;
    this.needCompact = true;
    this.durableSeq = this.nextSeq - 1;
    await this.flush();
    return { entries: this.all.size, skippedLines: skipped };
  }

  private async replay(): Promise<number> {
    let skipped = 0;
    const lines = createInterface({ input: createReadStream(this.file, { encoding: 'utf8' }), crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line) continue;
      const op = parseOp(line);
      if (!op) {
        skipped++;
        continue;
      }
      if (op.op === 'put') {
        this.all.set(op.seq, { seq: op.seq, id: op.id, record: op.rec, notify: op.notify, pending: op.pending });
        if (op.seq >= this.nextSeq) this.nextSeq = op.seq + 1;
      } else if (op.op === 'settle') {
        const e = this.all.get(op.seq);
        if (e) e.pending = e.pending.filter((s) => !op.sinks.includes(s));
      } else {
        this.all.delete(op.seq);
      }
    }
    // Map iteration is insertion order; replayed seqs are increasing, but make sure.
    const sorted = [...this.all.values()].sort((a, b) => a.seq - b.seq);
    this.all.clear();
    for (const e of sorted) this.all.set(e.seq, e);
    return skipped;
  }

  private rebuildIndexes(): void {
    this.latestByKey.clear();
    this.countByKey.clear();
    this.superseded.clear();
    this.bounded.clear();
    this.bySink.clear();
    this.pendingEntries = 0;
    for (const e of this.all.values()) {
      const prev = this.latestByKey.get(e.record.key);
      if (prev !== undefined) {
        this.bounded.delete(prev);
        this.superseded.add(prev);
      }
      this.latestByKey.set(e.record.key, e.seq);
      this.countByKey.set(e.record.key, (this.countByKey.get(e.record.key) ?? 0) + 1);
      if (e.record.endsAt !== null) this.bounded.add(e.seq);
      this.indexPending(e);
    }
    for (const seq of [...this.superseded]) {
      const e = this.all.get(seq)!;
      const keep = e.pending.filter((s) => !this.latestOnly(s));
      if (keep.length !== e.pending.length) this.setPending(e, keep, false);
      if (!e.pending.length) this.deleteEntry(e, false);
    }
  }

  private latestOnly(sink: string): boolean {
    return this.opts.latestOnly ? this.opts.latestOnly(sink) : false;
  }

  private indexPending(e: SpoolEntry): void {
    if (e.pending.length) this.pendingEntries++;
    for (const s of e.pending) {
      let set = this.bySink.get(s);
      if (!set) this.bySink.set(s, (set = new Set()));
      set.add(e.seq);
    }
  }

  private unindexPending(e: SpoolEntry): void {
    if (e.pending.length) this.pendingEntries--;
    for (const s of e.pending) this.bySink.get(s)?.delete(e.seq);
  }

  private setPending(e: SpoolEntry, pending: string[], log: boolean): void {
    const removed = e.pending.filter((s) => !pending.includes(s));
    if (!removed.length) return;
    this.unindexPending(e);
    e.pending = pending;
    this.indexPending(e);
    if (log) this.log({ op: 'settle', seq: e.seq, sinks: removed });
  }

  private deleteEntry(e: SpoolEntry, log: boolean): void {
    if (!this.all.delete(e.seq)) return;
    this.unindexPending(e);
    this.superseded.delete(e.seq);
    this.bounded.delete(e.seq);
    const key = e.record.key;
    const left = (this.countByKey.get(key) ?? 1) - 1;
    if (left > 0) this.countByKey.set(key, left);
    else this.countByKey.delete(key);
    if (log) this.log({ op: 'del', seq: e.seq });
    const latestSeq = this.latestByKey.get(key);
    if (latestSeq === e.seq) {
      this.latestByKey.delete(key);
    } else if (latestSeq !== undefined && left === 1) {
      // The last older state is gone: the latest may now go too.
      const latest = this.all.get(latestSeq);
      if (latest && !this.retained(latest, this.opts.clock.now())) this.deleteEntry(latest, log);
    }
  }

  private log(op: LogOp): void {
    if (this.opened) this.buffer.push(JSON.stringify(op));
  }

  /**
   * Whether an entry has to stay: a sink waits for it, or it is the latest state of an alert that
   * still fires, or older states of its alert remain (a restart must not take one of those for the
   * latest).
   */
  private retained(e: SpoolEntry, now: number): boolean {
    if (e.pending.length > 0) return true;
    if (this.latestByKey.get(e.record.key) !== e.seq) return false;
    return isFiring(e.record, now) || (this.countByKey.get(e.record.key) ?? 0) > 1;
  }

  /** Appends a new state (buffered until flush). Returns the entry. */
  append(record: AlertRecord, notify: boolean, pending: string[], id: string): SpoolEntry {
    const now = this.opts.clock.now();
    const prevSeq = this.latestByKey.get(record.key);
    const entry: SpoolEntry = { seq: this.nextSeq++, id, record, notify, pending: [...new Set(pending)] };
    this.all.set(entry.seq, entry);
    this.latestByKey.set(record.key, entry.seq);
    this.countByKey.set(record.key, (this.countByKey.get(record.key) ?? 0) + 1);
    if (record.endsAt !== null) this.bounded.add(entry.seq);
    this.indexPending(entry);
    this.log({ op: 'put', seq: entry.seq, id, notify: entry.notify, pending: entry.pending, rec: record });
    if (prevSeq !== undefined) {
      const prev = this.all.get(prevSeq);
      if (prev) {
        this.bounded.delete(prev.seq);
        this.superseded.add(prev.seq);
        this.setPending(
          prev,
          prev.pending.filter((s) => !this.latestOnly(s)),
          true,
        );
        if (!this.retained(prev, now)) this.deleteEntry(prev, true);
      }
    }
    this.enforceBound();
    return entry;
  }

  /** Records that `sinks` have the entry (delivered, or given up); removes it when nothing keeps it. */
  settle(seq: number, sinks: string[]): void {
    const e = this.all.get(seq);
    if (!e) return;
    this.setPending(
      e,
      e.pending.filter((s) => !sinks.includes(s)),
      true,
    );
    if (!this.retained(e, this.opts.clock.now())) this.deleteEntry(e, true);
  }

  /** Removes entries nothing keeps any more (alerts that ended and were delivered). */
  prune(now: number): number {
    let n = 0;
    for (const e of [...this.all.values()]) {
      if (!this.retained(e, now)) {
        this.deleteEntry(e, true);
        n++;
      }
    }
    return n;
  }

  /** Forgets sinks that are no longer configured. */
  retainSinks(known: ReadonlySet<string>): string[] {
    const gone = [...this.bySink.keys()].filter((s) => !known.has(s));
    if (!gone.length) return gone;
    for (const e of [...this.all.values()]) {
      if (e.pending.some((s) => gone.includes(s))) this.settle(e.seq, gone);
    }
    for (const s of gone) this.bySink.delete(s);
    return gone;
  }

  private enforceBound(): void {
    const now = this.opts.clock.now();
    while (this.all.size > this.opts.maxEntries) {
      let victim: SpoolEntry | undefined;
      let reason: DropReason = 'superseded';
      const s = this.superseded.values().next();
      if (!s.done) victim = this.all.get(s.value);
      if (!victim) {
        reason = 'ended';
        for (const seq of this.bounded) {
          const e = this.all.get(seq)!;
          if (!isFiring(e.record, now)) {
            victim = e;
            break;
          }
        }
      }
      if (!victim) {
        reason = 'firing';
        victim = this.all.values().next().value!;
      }
      this.deleteEntry(victim, true);
      this.logger.warn('alert spool full: dropped an entry', {
        reason,
        alert: victim.record.labels.alertname,
        vm: victim.record.labels.vm,
        maxEntries: this.opts.maxEntries,
      });
      this.opts.onDrop?.(victim, reason);
    }
  }

  get(seq: number): SpoolEntry | undefined {
    return this.all.get(seq);
  }

  /** Every entry, oldest first. */
  entries(): SpoolEntry[] {
    return [...this.all.values()];
  }

  /** The latest state of every alert that the spool still holds. */
  latestRecords(): AlertRecord[] {
    const out: AlertRecord[] = [];
    for (const seq of this.latestByKey.values()) out.push(this.all.get(seq)!.record);
    return out;
  }

  /** Up to `limit` durable entries the sink still needs, oldest first. */
  pendingFor(sink: string, limit: number): SpoolEntry[] {
    const out: SpoolEntry[] = [];
    const set = this.bySink.get(sink);
    if (!set) return out;
    for (const seq of set) {
      if (seq > this.durableSeq) break;
      out.push(this.all.get(seq)!);
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * Writes what was buffered and fsyncs. Entries appended before the call become deliverable once
   * it resolves. A write error is logged and the next flush rewrites the whole file; delivery is
   * not held back by a failing disk.
   */
  flush(): Promise<void> {
    const upTo = this.nextSeq - 1;
    const run = this.chain.then(async () => {
      try {
        await this.write();
      } catch (err) {
        this.needCompact = true;
        this.logger.error('alert spool: write failed', { file: this.file, error: (err as Error).message });
      } finally {
        if (upTo > this.durableSeq) this.durableSeq = upTo;
      }
    });
    this.chain = run;
    return run;
  }

  private async write(): Promise<void> {
    if (!this.opened) return;
    const lines = this.buffer;
    this.buffer = [];
    if (this.needCompact || this.fileLines + lines.length > 2 * this.all.size + 1024) {
      await this.compact();
      return;
    }
    if (!lines.length) return;
    if (!this.handle) this.handle = await open(this.file, 'a', 0o600);
    await this.handle.write(lines.join('\n') + '\n');
    await this.handle.datasync();
    this.fileLines += lines.length;
  }

  private async compact(): Promise<void> {
    const tmp = this.file + TMP_SUFFIX;
    const body = [...this.all.values()]
      .map((e) =>
        JSON.stringify({ op: 'put', seq: e.seq, id: e.id, notify: e.notify, pending: e.pending, rec: e.record }),
      )
      .join('\n');
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.write(body ? body + '\n' : '');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.handle?.close();
    this.handle = null;
    await rename(tmp, this.file);
    const dir = await open(this.opts.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
    this.fileLines = this.all.size;
    this.needCompact = false;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.chain;
    await this.handle?.close();
    this.handle = null;
    this.opened = false;
  }
}
