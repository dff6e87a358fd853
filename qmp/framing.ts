/**
 * Line framing of a QMP byte stream: one JSON message per line, '\n' terminated, '\r\n' tolerated
 * (QEMU writes '\r\n': monitor/monitor.c turns every '\n' of its output into '\r\n').
 *
 * Splitting happens on bytes, before any decoding: 0x0A never occurs inside a multibyte UTF-8
 * sequence, so a character split across two chunks is whole again once its line is complete.
 */
import { LineTooLongError, ProtocolError } from './errors';

export const DEFAULT_MAX_LINE_BYTES = 1024 * 1024;

const NL = 0x0a;
const CR = 0x0d;

/**
 * Incremental splitter with a hard bound on line length. `push` hands every completed line (without
 * its terminator) to `onLine`, in order; when a line grows past `maxLineBytes` it throws
 * LineTooLongError and every later `push` throws the same: the stream has lost its framing.
 */
export class LineFramer {
  private parts: Buffer[] = [];
  private partBytes = 0;
  private broken = false;

  constructor(readonly maxLineBytes: number = DEFAULT_MAX_LINE_BYTES) {
    if (!Number.isInteger(maxLineBytes) || maxLineBytes < 1)
      throw new RangeError(`maxLineBytes must be a positive integer, got ${maxLineBytes}`);
  }

  /** Bytes of the incomplete line held so far. */
  get buffered(): number {
    return this.partBytes;
  }

  /**
   * Feeds one chunk. `onLine` may return false to stop: the rest of the chunk is discarded
   * (the caller is closing the stream).
   */
  push(chunk: Uint8Array, onLine: (line: Buffer) => boolean | void): void {
    if (this.broken) throw new LineTooLongError(this.maxLineBytes);
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(NL, start);
      if (nl < 0) break;
      const piece = buf.subarray(start, nl);
      start = nl + 1;
      let line = piece;
      if (this.partBytes > 0) {
        this.parts.push(piece);
        line = Buffer.concat(this.parts, this.partBytes + piece.length);
        this.parts = [];
        this.partBytes = 0;
      }
      if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
      if (line.length > this.maxLineBytes) this.fail();
      if (onLine(line) === false) return;
    }
    if (start < buf.length) {
      const rest = buf.subarray(start);
      // One more byte than the bound is allowed while unterminated: it may be the '\r' of '\r\n'.
      if (this.partBytes + rest.length > this.maxLineBytes + 1) this.fail();
      // Copy so that a small remainder does not pin a large chunk in memory.
      this.parts.push(Buffer.from(rest));
      this.partBytes += rest.length;
    }
  }

  private fail(): never {
    this.broken = true;
    this.parts = [];
    this.partBytes = 0;
    throw new LineTooLongError(this.maxLineBytes);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A decoded line: the parsed value and the exact text it came from. */
export interface DecodedLine {
  value: unknown;
  text: string;
}

/**
 * Decodes one line as UTF-8 JSON. Returns null for a blank line (QEMU's parser skips whitespace
 * between messages too). Invalid UTF-8 or invalid JSON throws ProtocolError.
 */
export function decodeLine(line: Uint8Array): DecodedLine | null {
  let text: string;
  try {
    text = utf8.decode(line);
  } catch (err) {
    throw new ProtocolError('invalid UTF-8 in a message', { cause: err });
  }
  if (text.trim() === '') return null;
  try {
    return { value: JSON.parse(text), text };
  } catch (err) {
    throw new ProtocolError(`invalid JSON (${(err as Error).message}): ${excerpt(text)}`, { cause: err });
  }
}

/** The wire form of one message: compact JSON and '\n'. */
export function encodeMessage(obj: unknown): Buffer {
  return encodeLine(jsonText(obj));
}

/** The wire form of a line of JSON text that is already encoded (no raw '\n' may occur in it). */
export function encodeLine(text: string): Buffer {
  if (text.includes('\n')) throw new ProtocolError('a message must not contain a raw newline');
  return Buffer.from(text + '\n', 'utf8');
}

/** JSON.stringify that refuses values with no JSON form instead of returning undefined. */
export function jsonText(obj: unknown): string {
  const text = JSON.stringify(obj);
  if (text === undefined) throw new TypeError(`${typeof obj} has no JSON form`);
  return text;
}

/** A short, escaped quotation of untrusted text for error messages and logs. */
export function excerpt(text: string, max = 80): string {
  const cut = text.length > max ? text.slice(0, max) + '…' : text;
  return JSON.stringify(cut);
}
