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

/**
 * The scanner: push() bytes in order, then finish() for the samples or the typed error. Outside
 * data.result a byte-by-byte state machine finds the keys that lead there and keeps the rest as the
 * skeleton; inside it a tighter loop (scanResult) only follows strings and brackets to find where
 * each element ends, and the elements a chunk holds whole are parsed together with one JSON.parse.
 */
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
  /** Inside data.result: the element being read, its nesting, and whether it is in a string. */
  private inElement = false;
  private elementDepth = 0;
  private elementString = false;
  private elementEscaped = false;
  /** The element is a bare number or literal (a scalar answer's parts): it ends at a delimiter. */
  private elementBare = false;
  /** The bytes of an element that began in an earlier chunk. */
  private carried: Uint8Array[] = [];
  private elementBytes = 0;
  private readonly samples: PromSample[] = [];
  private readonly parts: unknown[] = [];

  constructor(
    private readonly where: string,
    private readonly budget: AskBudget | null = null,
  ) {}

  push(chunk: Uint8Array): void {
    let runStart = 0;
    /** Bytes [runStart, end) belong to the skeleton. */
    const flush = (end: number) => {
      if (end > runStart) this.keep(chunk.subarray(runStart, end));
      runStart = end;
    };
    for (let i = 0; i < chunk.length; i++) {
      if (this.resultDepth > 0 && this.stack.length === this.resultDepth && !this.inString) {
        flush(i);
        i = this.scanResult(chunk, i);
        runStart = i;
        if (i >= chunk.length) break;
      }
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
        }
        continue;
      }
      const depth = this.stack.length;
      if (b === QUOTE) {
        this.inString = true;
        const top = this.stack[depth - 1];
        if (top?.obj && top.expectKey && depth <= 2) this.keyBytes = [];
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
        // The end of data.result: scanResult stopped at its closing bracket.
        if (this.resultDepth > 0 && depth === this.resultDepth) this.resultDepth = 0;
        this.stack.pop();
        continue;
      }
      if (b === COMMA) {
        const top = this.stack[depth - 1];
        if (top?.obj) top.expectKey = true;
      }
    }
    flush(chunk.length);
  }

  /**
   * Inside data.result from chunk[i]: every element that ends in this chunk is taken; returns the
   * index of the bracket that closes the result, or chunk.length when the chunk ends first.
   */
  private scanResult(chunk: Uint8Array, i: number): number {
    const n = chunk.length;
    let inEl = this.inElement;
    let depth = this.elementDepth;
    let inStr = this.elementString;
    let esc = this.elementEscaped;
    let bare = this.elementBare;
    /** Where the current element began in this chunk (0 when carried over). */
    let elStart = inEl ? i : -1;
    let carriedOver = inEl;
    /** The elements this chunk holds whole: [batchStart, batchEnd), and how many are objects. */
    let batchStart = -1;
    let batchEnd = -1;
    let batchObjects = 0;
    let firstByte = 0;
    const ended = (end: number) => {
      if (carriedOver) {
        this.carried.push(chunk.subarray(elStart, end));
        this.checkElement(this.elementBytes + (end - elStart));
        this.endCarried();
        carriedOver = false;
      } else {
        this.checkElement(end - elStart);
        if (batchStart < 0) batchStart = elStart;
        batchEnd = end;
        if (firstByte === OPEN_OBJ) batchObjects++;
      }
      inEl = false;
    };
    let end = n;
    for (; i < n; i++) {
      const b = chunk[i];
      if (!inEl) {
        if (b === COMMA || isSpace(b)) continue;
        if (b === CLOSE_ARR) {
          end = i;
          break;
        }
        inEl = true;
        elStart = i;
        firstByte = b;
        depth = 0;
        bare = false;
        if (b === OPEN_OBJ || b === OPEN_ARR) depth = 1;
        else if (b === QUOTE) inStr = true;
        else bare = true;
        continue;
      }
      if (inStr) {
        if (esc) esc = false;
        else if (b === BACKSLASH) esc = true;
        else if (b === QUOTE) {
          inStr = false;
          if (depth === 0) ended(i + 1);
        }
        continue;
      }
      if (bare) {
        if (b === COMMA || b === CLOSE_ARR || isSpace(b)) {
          ended(i);
          i--; // the delimiter is looked at again, between elements
        }
        continue;
      }
      if (b === QUOTE) inStr = true;
      else if (b === OPEN_OBJ || b === OPEN_ARR) depth++;
      else if (b === CLOSE_OBJ || b === CLOSE_ARR) {
        depth--;
        if (depth === 0) ended(i + 1);
      }
    }
    if (batchStart >= 0) this.parseBatch(chunk.subarray(batchStart, batchEnd), batchObjects);
    if (inEl) {
      // The element goes on in the next chunk: its bytes so far are kept (copied), within the bound.
      if (!carriedOver) this.elementBytes = 0;
      this.checkElement(this.elementBytes + (end - elStart));
      this.elementBytes += end - elStart;
      this.carried.push(chunk.slice(elStart, end));
    }
    this.inElement = inEl;
    this.elementDepth = depth;
    this.elementString = inStr;
    this.elementEscaped = esc;
    this.elementBare = bare;
    return end;
  }

  private checkElement(bytes: number): void {
    if (bytes > MAX_ELEMENT_BYTES)
      throw new PrometheusError('PROM_BAD_RESPONSE', `${this.where}: a result larger than ${MAX_ELEMENT_BYTES} bytes`);
  }

  private keep(bytes: Uint8Array): void {
    this.skeletonBytes += bytes.byteLength;
    if (this.skeletonBytes > MAX_SKELETON_BYTES)
      throw new PrometheusError(
        'PROM_BAD_RESPONSE',
        `${this.where}: more than ${MAX_SKELETON_BYTES} bytes outside data.result`,
      );
    this.skeleton.push(bytes.slice());
  }

  private parse(text: string): unknown {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new PrometheusError('PROM_BAD_RESPONSE', `${this.where}: not JSON: ${(err as Error).message}`);
    }
  }

  private take(value: unknown): void {
    if (isObject(value)) this.samples.push(sampleOf(value, this.where));
    else this.parts.push(value);
  }

  /** Whole elements and the commas and white space between them, parsed as one array. */
  private parseBatch(bytes: Uint8Array, objects: number): void {
    if (objects > 0) this.budget?.takeSeries(objects, this.where);
    const values = this.parse(`[${this.decoder.decode(bytes)}]`) as unknown[];
    for (const v of values) this.take(v);
  }

  /** The element that began in an earlier chunk, now whole. */
  private endCarried(): void {
    const parts = this.carried;
    this.carried = [];
    this.elementBytes = 0;
    const value = this.parse(Buffer.concat(parts).toString('utf8'));
    if (isObject(value)) this.budget?.takeSeries(1, this.where);
    this.take(value);
  }

  /** The instant vector (a scalar answer is one sample without labels), or the answer's typed error. */
  finish(): PromSample[] {
    if (this.inElement && this.elementBare) this.endCarried();
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
