/**
 * Delivery to one sink: drains the spool's entries for it in order, in bounded batches; on a
 * failure that may pass, waits (exponential backoff, injected timers) and tries again; a batch the
 * receiver refuses outright is given up for that sink (logged, counted) so it cannot block the
 * queue. For Alertmanager sinks it also sends the periodic re-send of every firing alert.
 */
import { AlertDeliveryError } from './alert-errors';
import type { AlertRecord } from './alert-model';
import type { AlertSink, SinkItem } from './alertmanager-sink';
import { backoffDelay, type BackoffOptions } from '../core/backoff';
import type { Logger } from '../core/logger';
import type { Timers } from '../core/timers';
import type { Spool } from './spool';

export type DeliveryResult = 'success' | 'error' | 'timeout' | 'rejected';

export interface SinkWorkerOptions {
  spool: Spool;
  timers: Timers;
  logger: Logger;
  backoff: BackoffOptions;
  random?: () => number;
  /** Alerts per request. */
  batchSize: number;
  /** Called after entries were settled (the caller schedules a spool flush). */
  onSettled(): void;
  onResult(sink: AlertSink, result: DeliveryResult, alerts: number): void;
}

export type WorkerState = 'idle' | 'sending' | 'backoff' | 'stopped';

export class SinkWorker {
  readonly sink: AlertSink;
  private readonly opts: SinkWorkerOptions;
  private state: WorkerState = 'idle';
  private failures = 0;
  private retryTimer: unknown = null;
  private resendSource: (() => AlertRecord[]) | null = null;
  private ctrl = new AbortController();
  private running: Promise<void> = Promise.resolve();
  private again = false;

  constructor(sink: AlertSink, opts: SinkWorkerOptions) {
    this.sink = sink;
    this.opts = opts;
  }

  get status(): { state: WorkerState; failures: number } {
    return { state: this.state, failures: this.failures };
  }

  /** There may be new work. Ignored while backing off: the retry timer resumes. */
  kick(): void {
    if (this.state === 'stopped' || this.state === 'backoff') return;
    if (this.state === 'sending') {
      this.again = true;
      return;
    }
    this.state = 'sending';
    this.running = this.drain();
  }

  /** Queues a re-send of the firing set (Alertmanager sinks only). */
  resend(source: () => AlertRecord[]): void {
    if (!this.sink.latestOnly) return;
    this.resendSource = source;
    this.kick();
  }

  private async drain(): Promise<void> {
    try {
      for (;;) {
        this.again = false;
        const entries = this.opts.spool.pendingFor(this.sink.id, this.opts.batchSize);
        if (entries.length) {
          const items: SinkItem[] = entries.map((e) => ({ id: e.id, record: e.record }));
          const outcome = await this.attempt(items);
          if (outcome === 'stop') return;
          if (outcome === 'retry') return this.scheduleRetry();
          for (const e of entries) this.opts.spool.settle(e.seq, [this.sink.id]);
          this.opts.onSettled();
          continue;
        }
        if (this.resendSource) {
          const now = this.opts.timers.now();
          const firing = this.resendSource().filter((r) => r.endsAt === null || r.endsAt > now);
          this.resendSource = null;
          for (let i = 0; i < firing.length; i += this.opts.batchSize) {
            const outcome = await this.attempt(
              firing.slice(i, i + this.opts.batchSize).map((record) => ({ id: '', record })),
            );
            if (outcome === 'stop') return;
            if (outcome === 'retry') return this.scheduleRetry();
          }
          continue;
        }
        if (!this.again) break;
      }
      if (this.state === 'sending') this.state = 'idle';
    } catch (err) {
      this.opts.logger.error('alert delivery: unexpected failure', {
        sink: this.sink.name,
        error: (err as Error).message,
      });
      if (this.state === 'sending') this.scheduleRetry();
    }
  }

  /** 'ok' (delivered or given up), 'retry', or 'stop' (the worker was stopped meanwhile). */
  private async attempt(items: SinkItem[]): Promise<'ok' | 'retry' | 'stop'> {
    try {
      await this.sink.send(items, this.opts.timers.now(), this.ctrl.signal);
      if (this.state === 'stopped') return 'stop';
      if (this.failures)
        this.opts.logger.info('alert delivery recovered', { sink: this.sink.name, after: this.failures });
      this.failures = 0;
      this.opts.onResult(this.sink, 'success', items.length);
      return 'ok';
    } catch (err) {
      if (this.state === 'stopped') return 'stop';
      const e = err instanceof AlertDeliveryError ? err : null;
      if (e && !e.retryable) {
        this.opts.onResult(this.sink, 'rejected', items.length);
        this.opts.logger.error('alert delivery rejected; giving these alerts up for this sink', {
          sink: this.sink.name,
          code: e.code,
          error: e.message,
          alerts: items.length,
        });
        return 'ok';
      }
      this.opts.onResult(this.sink, e?.code === 'ALERT_DELIVERY_TIMEOUT' ? 'timeout' : 'error', items.length);
      this.failures++;
      const log = this.failures === 1 ? this.opts.logger.warn : this.opts.logger.debug;
      log.call(this.opts.logger, 'alert delivery failed; will retry', {
        sink: this.sink.name,
        code: e?.code ?? 'ALERT_DELIVERY_FAILED',
        error: (err as Error).message,
        failures: this.failures,
      });
      return 'retry';
    }
  }

  private scheduleRetry(): void {
    if (this.state === 'stopped') return;
    this.state = 'backoff';
    const delay = backoffDelay(this.failures - 1, this.opts.backoff, this.opts.random);
    this.retryTimer = this.opts.timers.setTimeout(() => {
      this.retryTimer = null;
      if (this.state !== 'backoff') return;
      this.state = 'idle';
      this.kick();
    }, delay);
  }

  /** Stops retrying and aborts a request in flight; what is undelivered stays in the spool. */
  async stop(): Promise<void> {
    this.state = 'stopped';
    if (this.retryTimer !== null) this.opts.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.ctrl.abort();
    await this.running;
  }
}
