/**
 * Reading a query API's JSON answer without building it whole: the bytes are scanned as they come,
 * each element of `data.result` is cut out and parsed on its own (one series, a few hundred bytes),
 * and everything else (status, errorType, error, resultType, warnings) is kept as a small skeleton
 * parsed at the end. The reader (prometheus-client.ts) feeds it in slices and yields to the event
 * loop between them, so a 20 MB answer never blocks the daemon for more than a few milliseconds at a
 * time; every series is counted against the ask's budget (`AskBudget`) as soon as it is cut out.
 */
import { isObject } from '../core/checks';
import { AgentError } from '../core/errors';

/**
 * PROM_UNREACHABLE, PROM_TIMEOUT, PROM_UNAUTHORIZED, PROM_HTTP_STATUS, PROM_RESPONSE_TOO_LARGE,
 * PROM_TOO_MANY_SERIES, PROM_TOO_MANY_HOSTS, PROM_BAD_RESPONSE, PROM_QUERY_FAILED, PROM_TOKEN_UNREADABLE.
 */
export class PrometheusError extends AgentError {}

/** One element of an instant vector: the labels physbits reads (KEPT_LABELS), its value and the sample's time. */
export interface PromSample {
  labels: Record<string, string>;
  value: number;
  /** Unix seconds. */
  time: number;
}

/**
 * What one ask (every query of a fleet read or a host list) may take from Prometheus, all queries
 * together: bytes read (fleet.maxResponseBytes) and series (fleet.maxSeries).
 */
export class AskBudget {
  private bytesLeft: number;
  private seriesLeft: number;

  constructor(
    readonly maxBytes: number,
    readonly maxSeries: number,
  ) {
    this.bytesLeft = maxBytes;
    this.seriesLeft = maxSeries;
  }

  /** Whether `n` more bytes fit (a declared Content-Length is checked before a byte is read). */
  fits(n: number): boolean {
    return n <= this.bytesLeft;
  }

  takeBytes(n: number, where: string): void {
    this.bytesLeft -= n;
    if (this.bytesLeft < 0)
      throw new PrometheusError(
        'PROM_RESPONSE_TOO_LARGE',
        `${where}: the answers of one ask passed fleet.maxResponseBytes (${this.maxBytes} bytes)`,
      );
  }

  takeSeries(n: number, where: string): void {
    this.seriesLeft -= n;
    if (this.seriesLeft < 0)
      throw new PrometheusError(
        'PROM_TOO_MANY_SERIES',
        `${where}: the answers of one ask passed fleet.maxSeries (${this.maxSeries} series)`,
      );
  }
}

/** Bytes outside `data.result` (status, error, warnings, …) kept for the final parse. */
const MAX_SKELETON_BYTES = 64 * 1024;
/** One series' JSON: labels and a value; more than this is not a physbits series. */
const MAX_ELEMENT_BYTES = 256 * 1024;
/** Object keys are read only at the two levels that lead to data.result. */
const MAX_KEY_BYTES = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJ = 0x7b;
const CLOSE_OBJ = 0x7d;
const OPEN_ARR = 0x5b;
const CLOSE_ARR = 0x5d;
const COMMA = 0x2c;

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

interface Frame {
  obj: boolean;
  /** In an object: the last key read (only at depth 1 and 2), and whether a key comes next. */
  key: string | null;
  expectKey: boolean;
}

/**
 * The labels physbits reads (prometheus-hosts.ts, source-width.ts); others are dropped as each series
 * is parsed, so what a series costs in memory does not grow with labels an exporter or relabelling adds.
 */
const KEPT_LABELS = new Set(['host', 'vm', 'uuid', 'id', 'job', 'instance', 'pool', 'accelerator']);

function sampleOf(r: unknown, where: string): PromSample {
  const bad = () => new PrometheusError('PROM_BAD_RESPONSE', `${where}: a result is not {metric, value: [time, "v"]}`);
  if (!isObject(r) || !isObject(r.metric) || !Array.isArray(r.value) || r.value.length !== 2) throw bad();
  const [time, text] = r.value as unknown[];
  if (typeof time !== 'number' || typeof text !== 'string') throw bad();
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.metric)) {
    if (typeof v !== 'string') throw bad();
    if (KEPT_LABELS.has(k)) labels[k] = v;
  }
  return { labels, value: Number(text), time };
}

/** The scanner: push() bytes in order, then finish() for the samples or the typed error. */
export class QueryAnswerScanner {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private readonly stack: Frame[] = [];
  private inString = false;
  private escaped = false;
  /** stack.length while inside data.result; 0 when not. */
  private resultDepth = 0;
  private skeleton: Uint8Array[] = [];
  private skeletonBytes = 0;
  private keyBytes: number[] | null = null;
  private element: Uint8Array[] | null = null;
  private elementBytes = 0;
  /** The element is a bare number or literal (a scalar answer's parts): it ends at a delimiter. */
  private elementBare = false;
  private readonly samples: PromSample[] = [];
  private readonly parts: unknown[] = [];

  constructor(
    private readonly where: string,
    private readonly budget: AskBudget | null = null,
  ) {}

  push(chunk: Uint8Array): void {
    let runStart = 0;
    /** Bytes [runStart, i) belong to the skeleton or to the current element. */
    const flush = (end: number) => {
      if (end > runStart) this.keep(chunk.subarray(runStart, end));
      runStart = end;
    };
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.inString) {
        if (this.keyBytes && b !== QUOTE && this.keyBytes.length < MAX_KEY_BYTES) this.keyBytes.push(b);
        if (this.escaped) this.escaped = false;
        else if (b === BACKSLASH) this.escaped = true;
        else if (b === QUOTE) {
          this.inString = false;
          if (this.keyBytes) {
            const top = this.stack[this.stack.length - 1];
            top.key = this.decoder.decode(Uint8Array.from(this.keyBytes));
            top.expectKey = false;
            this.keyBytes = null;
          }
          if (this.element && this.stack.length === this.resultDepth) {
            flush(i + 1);
            this.endElement();
          }
        }
        continue;
      }
      const depth = this.stack.length;
      // A bare element (number, true, null) of the result array ends at the first delimiter.
      if (
        this.element &&
        this.elementBare &&
        depth === this.resultDepth &&
        (b === COMMA || b === CLOSE_ARR || isSpace(b))
      ) {
        flush(i);
        this.endElement();
      }
      if (this.resultDepth > 0 && depth === this.resultDepth && !this.element) {
        if (isSpace(b) || b === COMMA) {
          runStart = i + 1;
          continue;
        }
        if (b !== CLOSE_ARR) {
          flush(i);
          this.element = [];
          this.elementBytes = 0;
          this.elementBare = b !== QUOTE && b !== OPEN_OBJ && b !== OPEN_ARR;
        }
      }
      if (b === QUOTE) {
        this.inString = true;
        const top = this.stack[depth - 1];
        if (top?.obj && top.expectKey && depth <= 2 && !this.element) this.keyBytes = [];
        continue;
      }
      if (b === OPEN_OBJ || b === OPEN_ARR) {
        const parent = this.stack[depth - 1];
        if (parent?.obj) parent.expectKey = false;
        this.stack.push({ obj: b === OPEN_OBJ, key: null, expectKey: b === OPEN_OBJ });
        if (
          b === OPEN_ARR &&
          depth === 2 &&
          this.stack[0].obj &&
          this.stack[0].key === 'data' &&
          parent?.obj &&
          parent.key === 'result' &&
          this.resultDepth === 0
        ) {
          flush(i + 1);
          this.resultDepth = depth + 1;
        }
        continue;
      }
      if (b === CLOSE_OBJ || b === CLOSE_ARR) {
        if (this.resultDepth > 0 && depth === this.resultDepth && !this.element) {
          this.resultDepth = 0;
          runStart = i;
        }
        this.stack.pop();
        if (this.element && this.stack.length === this.resultDepth) {
          flush(i + 1);
          this.endElement();
        }
        continue;
      }
      if (b === COMMA) {
        const top = this.stack[depth - 1];
        if (top?.obj) top.expectKey = true;
      }
    }
    flush(chunk.length);
  }

  private keep(bytes: Uint8Array): void {
    if (this.element) {
      this.elementBytes += bytes.byteLength;
      if (this.elementBytes > MAX_ELEMENT_BYTES)
        throw new PrometheusError(
          'PROM_BAD_RESPONSE',
          `${this.where}: a result larger than ${MAX_ELEMENT_BYTES} bytes`,
        );
      this.element.push(bytes.slice());
      return;
    }
    if (this.resultDepth > 0) return; // white space and commas between elements
    this.skeletonBytes += bytes.byteLength;
    if (this.skeletonBytes > MAX_SKELETON_BYTES)
      throw new PrometheusError(
        'PROM_BAD_RESPONSE',
        `${this.where}: more than ${MAX_SKELETON_BYTES} bytes outside data.result`,
      );
    this.skeleton.push(bytes.slice());
  }

  private endElement(): void {
    const parts = this.element ?? [];
    this.element = null;
    const text = parts.length === 1 ? this.decoder.decode(parts[0]) : Buffer.concat(parts).toString('utf8');
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new PrometheusError('PROM_BAD_RESPONSE', `${this.where}: not JSON: ${(err as Error).message}`);
    }
    if (isObject(value)) {
      this.budget?.takeSeries(1, this.where);
      this.samples.push(sampleOf(value, this.where));
    } else this.parts.push(value);
  }

  /** The instant vector (a scalar answer is one sample without labels), or the answer's typed error. */
  finish(): PromSample[] {
    if (this.element && this.elementBare) this.endElement();
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.concat(this.skeleton).toString('utf8'));
    } catch (err) {
      throw new PrometheusError('PROM_BAD_RESPONSE', `${this.where}: not JSON: ${(err as Error).message}`);
    }
    const where = this.where;
    if (!isObject(doc)) throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: not a query API answer`);
    if (doc.status === 'error') {
      const type = typeof doc.errorType === 'string' ? doc.errorType : 'error';
      const msg = typeof doc.error === 'string' ? doc.error.slice(0, 500) : 'no message';
      throw new PrometheusError('PROM_QUERY_FAILED', `${where}: ${type}: ${msg}`);
    }
    const data = doc.data;
    if (doc.status !== 'success' || !isObject(data))
      throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: no "status": "success" with data`);
    if (data.resultType === 'scalar') {
      if (this.samples.length > 0) throw new PrometheusError('PROM_BAD_RESPONSE', `${where}: a scalar with series`);
      return [sampleOf({ metric: {}, value: this.parts }, where)];
    }
    if (data.resultType !== 'vector' || !Array.isArray(data.result) || this.parts.length > 0)
      throw new PrometheusError(
        'PROM_BAD_RESPONSE',
        `${where}: expected an instant vector, got ${String(data.resultType)}`,
      );
    return this.samples;
  }
}

/**
 * Pure: the instant vector of a query API's JSON answer. A scalar answer is one sample without
 * labels; anything else than a success with a vector or scalar is PROM_BAD_RESPONSE, and an error
 * answer is PROM_QUERY_FAILED with the server's errorType and message.
 */
export function parseQueryResponse(text: string, where: string, budget: AskBudget | null = null): PromSample[] {
  const scanner = new QueryAnswerScanner(where, budget);
  scanner.push(Buffer.from(text, 'utf8'));
  return scanner.finish();
}
