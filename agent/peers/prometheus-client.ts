/**
 * Instant queries against a Prometheus-compatible HTTP API (Prometheus, Thanos Query, Mimir,
 * VictoriaMetrics): GET {url}/api/v1/query?query=…&time=…, bounded in time (one deadline for
 * connecting, headers and body), in bytes and series (one AskBudget across the queries of one ask),
 * redirects never followed (a bearer token goes nowhere else). The answer is read as it streams in
 * and parsed series by series (prometheus-answer.ts), yielding to the event loop every few
 * milliseconds. Every failure is a PrometheusError with a stable code (docs/errors.md).
 */
import { setImmediate as turn } from 'node:timers/promises';
import type { BoundedResponse } from '../core/bounded-body';
import { AskBudget, PrometheusError, QueryAnswerScanner, type PromSample } from './prometheus-answer';
import { nodePeerFetch } from './peer-client';

export { AskBudget, PrometheusError, parseQueryResponse, type PromSample } from './prometheus-answer';

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
  /** Bytes of one query's answer when it is asked without an ask's budget. */
  maxBytes: number;
  /** Series of one query's answer when it is asked without an ask's budget (default 200,000). */
  maxSeries?: number;
  /** Sent as `Authorization: Bearer …` when set. */
  token?: string;
  /** Sent as `X-Scope-OrgID` when set (Mimir, Cortex). */
  tenant?: string;
  /** Default: node's http/https client (nodePeerFetch). */
  fetch?: PrometheusFetch;
}

/**
 * Node's own http/https client, as live peers are asked (peer-client.ts): it is loaded with the
 * program, where the global fetch loads undici and compiles its parser on the first request (about
 * 60 ms of a cold guard decision here, docs/BENCHMARKS.md); https is verified against the system's
 * roots and NODE_EXTRA_CA_CERTS; no redirect is followed.
 */
const defaultFetch: PrometheusFetch = nodePeerFetch();

/** Series of one answer when no budget is given. */
const DEFAULT_MAX_SERIES = 200_000;
/** Bytes scanned between two looks at the clock. */
const SLICE_BYTES = 16 * 1024;
/** Work done before the readers give the event loop a turn. */
const YIELD_AFTER_MS = 8;

/**
 * One clock for every answer being read: the queries of an ask read at once, and one turn of the
 * event loop may wake them all, so the time since the last turn given up is shared; each reader gives
 * a turn once the readers together have worked YIELD_AFTER_MS.
 */
const sharedTurn = {
  since: performance.now(),
  pending: null as Promise<void> | null,
  /** Resolves at once while the readers' share of this turn lasts; else with the next turn, one for all of them. */
  maybeYield(): Promise<void> | undefined {
    if (performance.now() - this.since < YIELD_AFTER_MS) return undefined;
    this.pending ??= turn().then(() => {
      this.since = performance.now();
      this.pending = null;
    });
    return this.pending;
  },
};

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

export class PrometheusClient {
  constructor(private readonly opts: PrometheusClientOptions) {}

  get url(): string {
    return this.opts.url;
  }

  /**
   * The instant vector of `query` evaluated at `time` (Unix seconds); its bytes and series are taken
   * from `budget` (an ask's, shared by its queries), else from this client's own bounds.
   */
  async query(query: string, time: number, budget?: AskBudget): Promise<PromSample[]> {
    const limits = budget ?? new AskBudget(this.opts.maxBytes, this.opts.maxSeries ?? DEFAULT_MAX_SERIES);
    const base = queryUrl(this.opts.url);
    const url = `${base}?${new URLSearchParams({ query, time: time.toFixed(3) })}`;
    const where = `${base} (${query.length > 80 ? `${query.slice(0, 77)}...` : query})`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (this.opts.tenant) headers['x-scope-orgid'] = this.opts.tenant;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.opts.timeoutMs);
    timer.unref?.();
    const fetchImpl: PrometheusFetch = this.opts.fetch ?? defaultFetch;
    try {
      let res: Awaited<ReturnType<PrometheusFetch>>;
      try {
        res = await fetchImpl(url, { headers, redirect: 'manual', signal: abort.signal });
      } catch (err) {
        if (abort.signal.aborted)
          throw new PrometheusError('PROM_TIMEOUT', `${where}: no answer within ${this.opts.timeoutMs} ms`);
        const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
        const detail = e?.cause?.code ?? e?.code ?? e?.cause?.message ?? e?.message ?? String(err);
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
      const declared = Number(res.headers?.get('content-length') ?? NaN);
      if (Number.isFinite(declared) && !limits.fits(declared)) {
        await res.body?.cancel().catch(() => undefined);
        limits.takeBytes(declared, where);
      }
      try {
        return await this.read(res, where, limits);
      } catch (err) {
        if (err instanceof PrometheusError) {
          if (res.status === 503 && err.code === 'PROM_BAD_RESPONSE')
            throw new PrometheusError('PROM_HTTP_STATUS', `${base}: HTTP 503`);
          throw err;
        }
        if (abort.signal.aborted)
          throw new PrometheusError('PROM_TIMEOUT', `${where}: answer not complete within ${this.opts.timeoutMs} ms`);
        throw new PrometheusError('PROM_UNREACHABLE', `${base}: ${(err as Error)?.message ?? String(err)}`, {
          cause: err,
        });
      }
    } finally {
      clearTimeout(timer);
    }
  }

  /** The body scanned slice by slice, a turn of the event loop given up every YIELD_AFTER_MS. */
  private async read(res: BoundedResponse, where: string, budget: AskBudget): Promise<PromSample[]> {
    const scanner = new QueryAnswerScanner(where, budget);
    if (!res.body) return scanner.finish();
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        budget.takeBytes(value.byteLength, where);
        for (let off = 0; off < value.byteLength; off += SLICE_BYTES) {
          scanner.push(value.subarray(off, off + SLICE_BYTES));
          await sharedTurn.maybeYield();
        }
      }
    } catch (err) {
      await reader.cancel().catch(() => undefined);
      throw err;
    }
    return scanner.finish();
  }
}
