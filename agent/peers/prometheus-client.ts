/**
 * Instant queries against a Prometheus-compatible HTTP API (Prometheus, Thanos Query, Mimir,
 * VictoriaMetrics): GET {url}/api/v1/query?query=…&time=…, bounded in time (one deadline for
 * connecting, headers and body) and in size, redirects never followed (a bearer token goes nowhere
 * else). Every failure is a PrometheusError with a stable code (docs/errors.md).
 */
import { AgentError } from '../core/errors';
import { BodyTooLargeError, readBoundedText, type BoundedResponse } from '../core/bounded-body';
import { isObject } from '../core/checks';

/**
 * PROM_UNREACHABLE, PROM_TIMEOUT, PROM_UNAUTHORIZED, PROM_HTTP_STATUS, PROM_RESPONSE_TOO_LARGE,
 * PROM_BAD_RESPONSE, PROM_QUERY_FAILED, PROM_TOKEN_UNREADABLE.
 */
export class PrometheusError extends AgentError {}

/** The part of fetch a query uses; the global fetch fits. */
export type PrometheusFetch = (
  url: string,
  init: { headers: Record<string, string>; signal: AbortSignal; redirect: 'manual' },
) => Promise<BoundedResponse & { status: number }>;

export interface PrometheusClientOptions {
  /** Base URL: http://prometheus:9090, or a path prefix (http://thanos/…, http://mimir/prometheus). */
  url: string;
  /** Deadline of each query: connecting, headers and body. */
  timeoutMs: number;
  /** Largest response body accepted. */
  maxBytes: number;
  /** Sent as `Authorization: Bearer …` when set. */
  token?: string;
  /** Sent as `X-Scope-OrgID` when set (Mimir, Cortex). */
  tenant?: string;
  fetch?: PrometheusFetch;
}

/** One element of an instant vector: its labels (without __name__), its value and the sample's time. */
export interface PromSample {
  labels: Record<string, string>;
  value: number;
  /** Unix seconds. */
  time: number;
}

/** {base}/api/v1/query. */
export function queryUrl(base: string): string {
  return `${base.replace(/\/+$/, '')}/api/v1/query`;
}

/** A bearer token file's one line (fleet.tokenFile). */
export function tokenOf(text: string, file: string): string {
  const token = text.trim();
  if (!token || /[\r\n]/.test(token) || token.length > 4096)
    throw new PrometheusError('PROM_TOKEN_UNREADABLE', `${file}: the token file must hold one non-empty line`);
  return token;
}

/**
 * Pure: the instant vector of a query API's JSON answer. A scalar answer is one sample without
 * labels; anything else than a success with a vector or scalar is PROM_BAD_RESPONSE, and an error
 * answer is PROM_QUERY_FAILED with the server's errorType and message.
 */
export function parseQueryResponse(text: string, where: string): PromSample[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: not JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: not a query API answer`);
  if (doc.status === 'error') {
    const type = typeof doc.errorType === 'string' ? doc.errorType : 'error';
    const msg = typeof doc.error === 'string' ? doc.error.slice(0, 500) : 'no message';
    throw new PrometheusError('PROM_QUERY_FAILED', `${where}: ${type}: ${msg}`);
  }
  const data = doc.data;
  if (doc.status !== 'success' || !isObject(data))
    throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: no "status": "success" with data`);
  if (data.resultType === 'scalar') return [sampleOf({ metric: {}, value: data.result }, where)];
  if (data.resultType !== 'vector' || !Array.isArray(data.result))
    throw new PrometheusError(
      'PROM_BAD_RESPONSE',
      `${where}: expected an instant vector, got ${String(data.resultType)}`,
    );
  return data.result.map((r) => sampleOf(r, where));
}

function sampleOf(r: unknown, where: string): PromSample {
  const bad = () => new PrometheusError('PROM_BAD_RESPONSE', `${where}: a result is not {metric, value: [time, "v"]}`);
  if (!isObject(r) || !isObject(r.metric) || !Array.isArray(r.value) || r.value.length !== 2) throw bad();
  const [time, text] = r.value as unknown[];
  if (typeof time !== 'number' || typeof text !== 'string') throw bad();
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.metric)) {
    if (typeof v !== 'string') throw bad();
    if (k !== '__name__') labels[k] = v;
  }
  return { labels, value: Number(text), time };
}

export class PrometheusClient {
  constructor(private readonly opts: PrometheusClientOptions) {}

  get url(): string {
    return this.opts.url;
  }

  /** The instant vector of `query` evaluated at `time` (Unix seconds). */
  async query(query: string, time: number): Promise<PromSample[]> {
    const base = queryUrl(this.opts.url);
    const url = `${base}?${new URLSearchParams({ query, time: time.toFixed(3) })}`;
    const where = `${base} (${query.length > 80 ? `${query.slice(0, 77)}...` : query})`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (this.opts.tenant) headers['x-scope-orgid'] = this.opts.tenant;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.opts.timeoutMs);
    timer.unref?.();
    const fetchImpl: PrometheusFetch = this.opts.fetch ?? (fetch as unknown as PrometheusFetch);
    try {
      let res: Awaited<ReturnType<PrometheusFetch>>;
      try {
        res = await fetchImpl(url, { headers, redirect: 'manual', signal: abort.signal });
      } catch (err) {
        if (abort.signal.aborted)
          throw new PrometheusError('PROM_TIMEOUT', `${where}: no answer within ${this.opts.timeoutMs} ms`);
        const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
        const detail = cause?.code ?? cause?.message ?? (err as Error)?.message ?? String(err);
        throw new PrometheusError('PROM_UNREACHABLE', `${base}: ${detail}`, { cause: err });
      }
      if (res.status === 401 || res.status === 403) {
        await res.body?.cancel().catch(() => undefined);
        throw new PrometheusError('PROM_UNAUTHORIZED', `${base}: HTTP ${res.status}`);
      }
      // 400 and 422 carry the API's error document (a bad query, a timeout of the engine).
      if (res.status !== 200 && res.status !== 400 && res.status !== 422 && res.status !== 503) {
        await res.body?.cancel().catch(() => undefined);
        throw new PrometheusError('PROM_HTTP_STATUS', `${base}: HTTP ${res.status}`);
      }
      let text: string;
      try {
        text = await readBoundedText(res, this.opts.maxBytes);
      } catch (err) {
        if (err instanceof BodyTooLargeError)
          throw new PrometheusError('PROM_RESPONSE_TOO_LARGE', `${where}: ${err.message}`);
        if (abort.signal.aborted)
          throw new PrometheusError('PROM_TIMEOUT', `${where}: answer not complete within ${this.opts.timeoutMs} ms`);
        throw new PrometheusError('PROM_UNREACHABLE', `${base}: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
        });
      }
      if (res.status === 503 && !text.trimStart().startsWith('{'))
        throw new PrometheusError('PROM_HTTP_STATUS', `${base}: HTTP 503`);
      return parseQueryResponse(text, where);
    } finally {
      clearTimeout(timer);
    }
  }
}
