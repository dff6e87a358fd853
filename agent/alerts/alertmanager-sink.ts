/**
 * Alertmanager API v2: POST {base}/api/v2/alerts with a JSON array of postable alerts. Every
 * configured URL is its own sink (an HA pair gets each alert twice, as Alertmanager expects, and
 * each member has its own retry state). Alertmanager keeps only the newest state of an alert, so
 * older queued states of the same alert are skipped, and firing alerts are re-sent periodically.
 */
import { toPostable, type AlertRecord } from './alert-model';
import { postJson, redactUrl, type FetchLike } from './http-post';
import type { Timers } from '../core/timers';

export interface SinkItem {
  /** The spool entry's id; empty for a periodic re-send. */
  id: string;
  record: AlertRecord;
}

/** A place alerts are delivered to. */
export interface AlertSink {
  /** Stable across restarts (the spool records deliveries by it). */
  readonly id: string;
  /** For logs and the `sink` metric label: kind and URL without credentials. */
  readonly name: string;
  /** Only the latest state of an alert matters, and firing alerts are re-sent. */
  readonly latestOnly: boolean;
  send(items: SinkItem[], sendTime: number, signal: AbortSignal): Promise<void>;
}

export interface HttpSinkOptions {
  timeoutMs: number;
  timers: Timers;
  fetch?: FetchLike;
}

/** {base}/api/v2/alerts, keeping any path prefix of the base (e.g. behind a reverse proxy). */
export function alertsEndpoint(base: string): string {
  const u = new URL(base);
  u.pathname = `${u.pathname.replace(/\/+$/, '')}/api/v2/alerts`;
  return u.toString();
}

export class AlertmanagerSink implements AlertSink {
  readonly id: string;
  readonly name: string;
  readonly latestOnly = true;
  private readonly endpoint: string;
  private readonly opts: HttpSinkOptions & { resendMs: number; generatorURL?: string };

  constructor(baseUrl: string, opts: HttpSinkOptions & { resendMs: number; generatorURL?: string }) {
    this.endpoint = alertsEndpoint(baseUrl);
    this.id = `alertmanager ${redactUrl(this.endpoint)}`;
    this.name = `alertmanager:${redactUrl(baseUrl)}`;
    this.opts = opts;
  }

  /** The request body for a batch (exported behaviour, tested on literal values). */
  body(items: SinkItem[], sendTime: number): string {
    return JSON.stringify(
      items.map((i) =>
        toPostable(i.record, sendTime, { resendMs: this.opts.resendMs, generatorURL: this.opts.generatorURL }),
      ),
    );
  }

  send(items: SinkItem[], sendTime: number, signal: AbortSignal): Promise<void> {
    return postJson({
      url: this.endpoint,
      body: this.body(items, sendTime),
      timeoutMs: this.opts.timeoutMs,
      timers: this.opts.timers,
      signal,
      fetch: this.opts.fetch,
    });
  }
}
