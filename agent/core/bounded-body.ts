/**
 * Reading an HTTP response body with a size bound, declared (Content-Length) and streamed: the
 * stream is cancelled as soon as it passes the bound, so an endless body costs at most the bound.
 */

/** The body passed `maxBytes`; `declared` when Content-Length said so before a byte was read. */
export class BodyTooLargeError extends Error {
  constructor(
    readonly maxBytes: number,
    readonly declared: number | null,
  ) {
    super(
      declared !== null
        ? `response of ${declared} bytes exceeds ${maxBytes}`
        : `response larger than ${maxBytes} bytes`,
    );
  }
}

export interface BoundedResponse {
  headers?: { get(name: string): string | null };
  body: ReadableStream<Uint8Array> | null;
}

/** The body as UTF-8 text; rejects with BodyTooLargeError past `maxBytes`, or with the stream's own error. */
export async function readBoundedText(res: BoundedResponse, maxBytes: number): Promise<string> {
  const declared = Number(res.headers?.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel().catch(() => undefined);
    throw new BodyTooLargeError(maxBytes, declared);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLargeError(maxBytes, null);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
