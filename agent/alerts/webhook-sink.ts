/**
 * A generic JSON webhook: every state change (fired, resolved, refused) is POSTed once, in order,
 * in the body documented in docs/alerts.md. With a secret each request is signed with its send time,
 * so a receiver can refuse a replayed request: `X-Physbits-Timestamp: <Unix seconds>` and
 * `X-Physbits-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>", keyed with the secret>`.
 */
import { createHash, createHmac } from 'node:crypto';
import { isFiring, type AlertLabels, type AlertAnnotations } from './alert-model';
import { postJson, redactUrl } from './http-post';
import type { AlertSink, HttpSinkOptions, SinkItem } from './alertmanager-sink';

export const SIGNATURE_HEADER = 'X-Physbits-Signature';
export const TIMESTAMP_HEADER = 'X-Physbits-Timestamp';
export const WEBHOOK_VERSION = '1';

export interface WebhookAlert {
  /** Unique per state change; a receiver that sees an id twice may ignore the second. */
  id: string;
  status: 'firing' | 'resolved';
  labels: AlertLabels;
  annotations: AlertAnnotations;
  startsAt: string;
  /** null while a condition holds; a refusal's end is known when it fires. */
  endsAt: string | null;
  generatorURL?: string;
}

export interface WebhookBody {
  version: string;
  sender: 'physbits';
  host: string;
  alerts: WebhookAlert[];
}

/** "sha256=<hex>" of "<timestamp>.<raw body>" (timestamp in Unix seconds). */
export function sign(timestamp: number, body: string | Buffer, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`;
}

export function webhookBody(host: string, items: SinkItem[], sendTime: number, generatorURL?: string): WebhookBody {
  return {
    version: WEBHOOK_VERSION,
    sender: 'physbits',
    host,
    alerts: items.map(({ id, record }) => {
      const a: WebhookAlert = {
        id,
        status: isFiring(record, sendTime) ? 'firing' : 'resolved',
        labels: { ...record.labels },
        annotations: { ...record.annotations },
        startsAt: new Date(record.startsAt).toISOString(),
        endsAt: record.endsAt === null ? null : new Date(record.endsAt).toISOString(),
      };
      if (generatorURL) a.generatorURL = generatorURL;
      return a;
    }),
  };
}

/**
 * Who a webhook is, from its whole URL: two that differ only in their query, fragment or credentials
 * are two receivers, each with its own deliveries. Logs and metrics never show those parts, so such a
 * URL is named by its redacted form and the first 12 hex digits of its SHA-256; a URL without them is
 * its redacted form alone (the id deliveries were spooled under before).
 */
export function webhookIdentity(url: string): string {
  const shown = redactUrl(url);
  let plain: boolean;
  try {
    const u = new URL(url);
    plain = !u.username && !u.password && !u.search && !u.hash;
  } catch {
    plain = false;
  }
  return plain ? shown : `${shown}#${createHash('sha256').update(url).digest('hex').slice(0, 12)}`;
}

export class WebhookSink implements AlertSink {
  readonly id: string;
  readonly name: string;
  readonly latestOnly = false;
  private readonly url: string;
  private readonly secret: string | undefined;
  private readonly opts: HttpSinkOptions & { host: string; generatorURL?: string };

  constructor(hook: { url: string; secret?: string }, opts: HttpSinkOptions & { host: string; generatorURL?: string }) {
    this.url = hook.url;
    this.secret = hook.secret;
    this.id = `webhook ${webhookIdentity(hook.url)}`;
    this.name = `webhook:${webhookIdentity(hook.url)}`;
    this.opts = opts;
  }

  send(items: SinkItem[], sendTime: number, signal: AbortSignal): Promise<void> {
    const body = JSON.stringify(webhookBody(this.opts.host, items, sendTime, this.opts.generatorURL));
    const headers: Record<string, string> = {};
    if (this.secret) {
      const timestamp = Math.floor(sendTime / 1000);
      headers[TIMESTAMP_HEADER] = String(timestamp);
      headers[SIGNATURE_HEADER] = sign(timestamp, body, this.secret);
    }
    return postJson({
      url: this.url,
      body,
      headers,
      timeoutMs: this.opts.timeoutMs,
      timers: this.opts.timers,
      signal,
      fetch: this.opts.fetch,
    });
  }
}
