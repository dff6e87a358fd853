/**
 * Facts read on a schedule: a socket visited and left (QEMU serves one QMP client at a time, so
 * others may use it between visits), or a libvirt domain read through libvirt's own monitor.
 */
import type { Timers } from '../core/timers';
import type { GuestFacts } from '../core/types';
import type { FactReport, FactSource } from './fact-source';

export interface FactPollerOptions {
  /** One read; rejects with a coded error. */
  readFacts: () => Promise<GuestFacts>;
  /** Milliseconds between reads (the config may change between them). */
  intervalMs: () => number;
  timers: Timers;
  report: FactReport;
}

export class FactPoller implements FactSource {
  private timer: unknown = null;
  private stopped = false;
  private lastFailed = false;
  /** Reads started, and the latest one reported: a read that ends after a later one's report is stale. */
  private started = 0;
  private reported = 0;

  constructor(private readonly opts: FactPollerOptions) {}

  start(): void {
    void this.poll();
  }

  refresh(): Promise<void> {
    return this.poll(false);
  }

  /** A VM that was unreachable is visited now. */
  kick(): void {
    if (this.stopped || !this.timer || !this.lastFailed) return;
    this.opts.timers.clearTimeout(this.timer);
    this.timer = null;
    void this.poll();
  }

  rereadSoon(): void {}

  upstream(): null {
    return null;
  }

  stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.opts.timers.clearTimeout(this.timer);
    this.timer = null;
    return Promise.resolve();
  }

  private async poll(reschedule = true): Promise<void> {
    if (this.stopped) return;
    const seq = ++this.started;
    try {
      const guest = await this.opts.readFacts();
      if (seq > this.reported) {
        this.reported = seq;
        this.lastFailed = false;
        if (!this.stopped) this.opts.report.read(guest);
      }
    } catch (err) {
      if (seq > this.reported) {
        this.reported = seq;
        this.lastFailed = true;
        if (!this.stopped) this.opts.report.failed(err);
      }
    }
    if (reschedule && !this.stopped) {
      this.timer = this.opts.timers.setTimeout(() => {
        this.timer = null;
        void this.poll();
      }, this.opts.intervalMs());
    }
  }
}
