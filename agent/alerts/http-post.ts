/**
 * One JSON POST with a deadline, and the sorting of its outcome into "done", "try again later" and
 * "the receiver refuses this". Node's own fetch; credentials in a URL become a Basic header (fetch
 * refuses URLs that carry them), and the URL shown in logs and metrics never contains them.
 */
import { AlertDeliveryError } from './alert-errors';
import { realTimers, type Timers } from '../core/timers';

/** At most this much of an error reply is read, for the log line. */
const MAX_ERROR_BODY = 512;

export type FetchLike = typeof fetch;

export interface PostOptions {
  url: string;
  body: string;
  headers?: Record<string, string>;
  timeoutMs: number;
  timers?: Timers;
  /** Aborts the request (the service is stopping). */
  signal?: AbortSignal;
  fetch?: FetchLike;
}

/** The URL without user, password, query or fragment: safe for logs and metric labels. */
export function redactUrl(raw: string): string {
  try {
    const u = new URL(raw);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

function splitCredentials(raw: string): { url: string; authorization: string | null } {
  const u = new URL(raw);
  if (!u.username && !u.password) return { url: u.toString(), authorization: null };
  const auth = Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
  u.username = '';
  u.password = '';
  return { url: u.toString(), authorization: `Basic ${auth}` };
}

async function readSome(res: Response): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    while (size < MAX_ERROR_BODY) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(Buffer.from(value));
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).toString('utf8').slice(0, MAX_ERROR_BODY).trim();
}

/** Statuses worth retrying: the receiver is overloaded, restarting or timed out. */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 429;
}

/** POSTs the body; resolves on 2xx, throws AlertDeliveryError otherwise. */
export async function postJson(opts: PostOptions): Promise<void> {
  const timers = opts.timers ?? realTimers;
  const shown = redactUrl(opts.url);
  const ctrl = new AbortController();
  let timedOut = false;
  const timer = timers.setTimeout(() => {
    timedOut = true;
    ctrl.abort();
  }, opts.timeoutMs);
  const onAbort = () => ctrl.abort();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const { url, authorization } = splitCredentials(opts.url);
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'physbits',
      ...(authorization ? { authorization } : {}),
      ...opts.headers,
    };
    let res: Response;
    try {
      res = await (opts.fetch ?? fetch)(url, {
        method: 'POST',
        headers,
        body: opts.body,
        signal: ctrl.signal,
        redirect: 'error',
      });
    } catch (err) {
      if (timedOut) {
        throw new AlertDeliveryError('ALERT_DELIVERY_TIMEOUT', `${shown}: no answer within ${opts.timeoutMs} ms`, {
          retryable: true,
          cause: err,
        });
      }
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new AlertDeliveryError('ALERT_DELIVERY_FAILED', `${shown}: ${why}`, { retryable: true, cause: err });
    }
    if (res.ok) {
      await res.body?.cancel().catch(() => undefined);
      return;
    }
    const text = await readSome(res).catch(() => '');
    const retryable = retryableStatus(res.status);
    throw new AlertDeliveryError(
      retryable ? 'ALERT_DELIVERY_FAILED' : 'ALERT_DELIVERY_REJECTED',
      `${shown}: HTTP ${res.status}${text ? `: ${text}` : ''}`,
      { retryable, status: res.status },
    );
  } finally {
    timers.clearTimeout(timer);
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
