/**
 * The daemon's alert service: keeps the set of firing alerts per VM, turns changes into spooled
 * state changes (written to disk before any sink sees them), delivers them to every Alertmanager
 * and webhook, re-sends firing alerts to Alertmanager every alerts.resendSeconds, and emits an
 * 'alert' event for every state change (the daemon's event stream).
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Config } from '../core/config';
import type { Reason } from '../core/types';
import { AlertServiceStateError } from './alert-errors';
import {
  diffConditions,
  isFiring,
  refusalAlert,
  refusalCode,
  REFUSAL_SEVERITY,
  alertKey,
  vmKey,
  type AlertVm,
  type AlertAnnotations,
  type AlertLabels,
  type AlertRecord,
  type AlertSeverity,
} from './alert-model';
import { AlertmanagerSink, type AlertSink } from './alertmanager-sink';
import { silentLogger, type Logger } from '../core/logger';
import { realTimers, type Timers } from '../core/timers';
import type { FetchLike } from './http-post';
import { SinkWorker, type DeliveryResult } from './sink-worker';
import { Spool, type DropReason } from './spool';
import { WebhookSink } from './webhook-sink';

/** Alerts per HTTP request. */
export const BATCH_SIZE = 256;
/**
 * A condition alert taken back from the spool whose VM is not looked at again within this long
 * (at least 3 re-send periods) is resolved: the VM is gone, or the daemon no longer watches it.
 */
export const CONFIRM_GRACE_MIN_MS = 300_000;

/** What the service reports to the metrics (agent/api/metrics.ts implements it). */
export interface AlertMetrics {
  setAlertsPending(n: number): void;
  setSpoolEntries(n: number): void;
  setAlertsFiring(counts: Record<AlertSeverity, number>): void;
  alertDelivery(sink: string, result: DeliveryResult, alerts: number): void;
  spoolDropped(reason: DropReason): void;
}

/** One state change, as the event stream and `physbitsctl watch` show it. */
export interface AlertEvent {
  type: 'alert';
  /** fired, resolved, updated (description changed) or refused (a guard refusal). */
  change: 'fired' | 'resolved' | 'updated' | 'refused';
  status: 'firing' | 'resolved';
  id: string;
  labels: AlertLabels;
  annotations: AlertAnnotations;
  startsAt: string;
  endsAt: string | null;
}

export interface AlertServiceOptions {
  config: Config['alerts'];
  /** This host's name (alert label `host`). */
  host: string;
  timers?: Timers;
  logger?: Logger;
  metrics?: AlertMetrics;
  /** Jitter source for retry backoff, [0, 1). */
  random?: () => number;
  fetch?: FetchLike;
}

/** AlertService's events and their arguments. */
export interface AlertServiceEvents {
  alert: [ev: AlertEvent];
}

export class AlertService extends EventEmitter<AlertServiceEvents> {
  private readonly cfg: Config['alerts'];
  private readonly host: string;
  private readonly timers: Timers;
  private readonly logger: Logger;
  private readonly metrics: AlertMetrics | undefined;
  private readonly spool: Spool;
  private readonly sinks: AlertSink[];
  private readonly workers: SinkWorker[];
  /** Firing alerts by key, and the keys of each VM's. */
  private readonly active = new Map<string, AlertRecord>();
  private readonly keysByVm = new Map<string, Set<string>>();
  /** VMs with condition alerts from the spool that no setVmReasons/dropVm has confirmed yet. */
  private readonly unconfirmed = new Set<string>();
  private startedAt = 0;
  private state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  private resendTimer: unknown = null;
  private flushQueued = false;
  private lastFlush: Promise<void> = Promise.resolve();

  constructor(opts: AlertServiceOptions) {
    super();
    this.cfg = opts.config;
    this.host = opts.host;
    this.timers = opts.timers ?? realTimers;
    this.logger = opts.logger ?? silentLogger;
    this.metrics = opts.metrics;
    const http = { timeoutMs: this.cfg.timeoutMs, timers: this.timers, fetch: opts.fetch };
    const generatorURL = this.cfg.generatorURL || undefined;
    const sinks: AlertSink[] = [
      ...this.cfg.alertmanagers.map(
        (url) => new AlertmanagerSink(url, { ...http, resendMs: this.cfg.resendSeconds * 1000, generatorURL }),
      ),
      ...this.cfg.webhooks.map((hook) => new WebhookSink(hook, { ...http, host: this.host, generatorURL })),
    ];
    this.sinks = uniqueIds(sinks);
    const latestOnly = new Set(this.sinks.filter((s) => s.latestOnly).map((s) => s.id));
    this.spool = new Spool({
      dir: this.cfg.spoolDir,
      maxEntries: this.cfg.spoolMaxEntries,
      clock: this.timers,
      logger: this.logger,
      latestOnly: (sink) => latestOnly.has(sink),
      onDrop: (_e, reason) => this.metrics?.spoolDropped(reason),
    });
    this.workers = this.sinks.map(
      (sink) =>
        new SinkWorker(sink, {
          spool: this.spool,
          timers: this.timers,
          logger: this.logger,
          backoff: { baseMs: 1000, maxMs: this.cfg.retryMaxSeconds * 1000, jitter: 0.5 },
          random: opts.random,
          batchSize: BATCH_SIZE,
          onSettled: () => this.scheduleFlush(),
          onResult: (s, result, n) => this.metrics?.alertDelivery(s.name, result, n),
        }),
    );
  }

  /** Sink names (kind:url without credentials), as in logs and metrics. */
  get sinkNames(): string[] {
    return this.sinks.map((s) => s.name);
  }

  /**
   * Opens the spool, takes back the alerts that were firing (startsAt kept), delivers what was
   * queued and re-sends the firing set to Alertmanager.
   */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new AlertServiceStateError(`start() called when ${this.state}`);
    this.state = 'starting';
    const load = await this.spool.open();
    const gone = this.spool.retainSinks(new Set(this.sinks.map((s) => s.id)));
    if (gone.length) this.logger.warn('alert spool: dropped deliveries to sinks no longer configured', { sinks: gone });
    const now = this.timers.now();
    this.startedAt = now;
    for (const rec of this.spool.latestRecords()) {
      if (!isFiring(rec, now)) continue;
      this.setActive(rec);
      if (rec.kind === 'condition') this.unconfirmed.add(vmKey(rec.labels));
    }
    this.state = 'running';
    this.logger.info('alert service started', {
      sinks: this.sinkNames,
      spooled: load.entries,
      pending: this.spool.pendingCount,
      firing: this.active.size,
    });
    await this.flush();
    this.resendAll();
    this.armResend();
  }

  /** Stops timers and aborts requests in flight; everything undelivered stays in the spool. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    const wasRunning = this.state !== 'new';
    this.state = 'stopped';
    if (this.resendTimer !== null) this.timers.clearTimeout(this.resendTimer);
    this.resendTimer = null;
    await Promise.all(this.workers.map((w) => w.stop()));
    if (wasRunning) {
      await this.lastFlush;
      await this.spool.close();
    }
  }

  /** Entries that some sink has not received yet. */
  pending(): number {
    return this.spool.pendingCount;
  }

  /** Firing alerts, oldest first. */
  firing(): AlertRecord[] {
    const now = this.timers.now();
    return [...this.active.values()].filter((r) => isFiring(r, now)).sort((a, b) => a.startsAt - b.startsAt);
  }

  /** Resolves when every state change so far is on disk and handed to the sinks' queues. */
  async settled(): Promise<void> {
    await this.lastFlush;
    await this.spool.flush();
  }

  /** The VM's current reasons (any severity; ok raises nothing). Fires new alerts, resolves gone ones. */
  setVmReasons(vm: AlertVm, reasons: readonly Reason[]): void {
    this.mustRun('setVmReasons');
    const key = typeof vm === 'string' ? vm : vm.id;
    this.unconfirmed.delete(key);
    const now = this.timers.now();
    const mine = [...(this.keysByVm.get(key) ?? [])]
      .map((k) => this.active.get(k)!)
      .filter((r) => r.kind === 'condition');
    const diff = diffConditions(mine, this.host, vm, reasons, now);
    for (const r of diff.resolved) this.change(r, true, 'resolved');
    for (const r of diff.fired) this.change(r, true, 'fired');
    for (const r of diff.updated) this.change(r, false, 'updated');
  }

  /**
   * The VM is gone (stopped, migrated away, vanished): its condition alerts resolve. Refusal alerts
   * run out their hold: they report something that happened. `vm` is its id (or its bare name).
   */
  dropVm(vm: string): void {
    this.setVmReasons(vm, []);
  }

  /** Resolves the condition alerts of every VM not named (after a discovery pass, e.g. at start). */
  retainVms(vms: Iterable<string>): void {
    this.mustRun('retainVms');
    const keep = new Set(vms);
    const others = new Set([...this.active.values()].filter((r) => r.kind === 'condition').map((r) => vmKey(r.labels)));
    for (const vm of others) if (!keep.has(vm)) this.setVmReasons(vm, []);
  }

  /** A guard refusal: fires for alerts.refusalHoldMinutes from `at` (default now). */
  refusal(vm: AlertVm, code: string, message: string, command: string, at: number = this.timers.now()): void {
    this.mustRun('refusal');
    const named = typeof vm === 'string' ? { vm } : { vm: vm.name, id: vm.id };
    const key = alertKey({ ...named, reason: refusalCode(code), severity: REFUSAL_SEVERITY });
    const rec = refusalAlert({
      host: this.host,
      vm,
      code,
      message,
      command,
      time: at,
      holdMs: this.cfg.refusalHoldMinutes * 60_000,
      previous: this.active.get(key),
    });
    this.change(rec, true, 'refused');
  }

  private resolveUnconfirmed(now: number): void {
    if (!this.unconfirmed.size) return;
    const grace = Math.max(CONFIRM_GRACE_MIN_MS, 3 * this.cfg.resendSeconds * 1000);
    if (now - this.startedAt < grace) return;
    const vms = [...this.unconfirmed];
    this.logger.info('resolving alerts of VMs not seen since the restart', { vms });
    for (const vm of vms) this.setVmReasons(vm, []);
  }

  private setActive(rec: AlertRecord): void {
    this.active.set(rec.key, rec);
    let keys = this.keysByVm.get(vmKey(rec.labels));
    if (!keys) this.keysByVm.set(vmKey(rec.labels), (keys = new Set()));
    keys.add(rec.key);
  }

  private deleteActive(key: string): void {
    const rec = this.active.get(key);
    if (!rec) return;
    this.active.delete(key);
    const keys = this.keysByVm.get(vmKey(rec.labels));
    keys?.delete(key);
    if (keys && !keys.size) this.keysByVm.delete(vmKey(rec.labels));
  }

  private mustRun(what: string): void {
    if (this.state !== 'running')
      throw new AlertServiceStateError(`${what}() called when the alert service is ${this.state}`);
  }

  private change(rec: AlertRecord, notify: boolean, change: AlertEvent['change']): void {
    const now = this.timers.now();
    const firing = isFiring(rec, now);
    if (firing) this.setActive(rec);
    else this.deleteActive(rec.key);
    const pending = this.sinks.filter((s) => notify || s.latestOnly).map((s) => s.id);
    const entry = this.spool.append(rec, notify, pending, randomUUID());
    this.emit('alert', {
      type: 'alert',
      change,
      status: firing ? 'firing' : 'resolved',
      id: entry.id,
      labels: { ...rec.labels },
      annotations: { ...rec.annotations },
      startsAt: new Date(rec.startsAt).toISOString(),
      endsAt: rec.endsAt === null ? null : new Date(rec.endsAt).toISOString(),
    });
    this.scheduleFlush();
  }

  /** Coalesces the state changes of one turn of the event loop into one write and fsync. */
  private scheduleFlush(): void {
    if (this.flushQueued || this.state === 'stopped') return;
    this.flushQueued = true;
    const prev = this.lastFlush;
    this.lastFlush = prev.then(async () => {
      await Promise.resolve();
      this.flushQueued = false;
      await this.flush();
    });
  }

  private async flush(): Promise<void> {
    await this.spool.flush();
    this.report();
    if (this.state === 'running') for (const w of this.workers) w.kick();
  }

  private report(): void {
    if (!this.metrics) return;
    this.metrics.setAlertsPending(this.spool.pendingCount);
    this.metrics.setSpoolEntries(this.spool.size);
    const counts: Record<AlertSeverity, number> = { info: 0, warning: 0, critical: 0 };
    for (const r of this.firing()) counts[r.labels.severity]++;
    this.metrics.setAlertsFiring(counts);
  }

  private resendAll(): void {
    for (const w of this.workers) w.resend(() => this.firing());
  }

  private armResend(): void {
    this.resendTimer = this.timers.setTimeout(() => {
      this.resendTimer = null;
      if (this.state !== 'running') return;
      const now = this.timers.now();
      for (const [key, r] of [...this.active]) if (!isFiring(r, now)) this.deleteActive(key);
      this.resolveUnconfirmed(now);
      if (this.spool.prune(now)) this.scheduleFlush();
      this.report();
      this.resendAll();
      this.armResend();
    }, this.cfg.resendSeconds * 1000);
  }
}

/** Two sinks with the same id (same URL twice in the config) would share delivery records. */
function uniqueIds(sinks: AlertSink[]): AlertSink[] {
  const seen = new Set<string>();
  return sinks.filter((s) => {
    if (seen.has(s.id)) return false;
    seen.add(s.id);
    return true;
  });
}
