/**
 * A document printed as `JSON.stringify(doc, null, 2)` prints it, without ever holding the whole
 * text: the top level key by key, the elements of its arrays one at a time, handed to `write` in
 * pieces of whole lines. The fleet document at 10,000 hosts × 20 guests is over 100 MB of text;
 * built whole, then escaped (printableLines) and turned into bytes, it was held three times over.
 */

/** Text handed to `write` at a time, about. */
const PIECE_CHARS = 64 * 1024;
/** Elements of a top-level array stringified together. */
const ITEMS_AT_ONCE = 64;

/**
 * Writes `value` as JSON.stringify(value, null, 2) would, split into pieces that each hold whole
 * lines without the newline after the last one (the newline between two pieces is the one
 * CliIo.stdout ends each piece with), so that the pieces written one after the other are the text
 * and its final newline. Arrays and objects directly under the top level are split between their
 * elements; everything below is stringified by JSON.stringify itself. `drain`, when given, is
 * awaited after each piece: it resolves once the output has taken what it was given.
 */
export async function writeJson(
  value: unknown,
  write: (piece: string) => void,
  drain?: () => Promise<void>,
): Promise<void> {
  if (value === null || typeof value !== 'object' || (value as { toJSON?: unknown }).toJSON !== undefined) {
    write(JSON.stringify(value, null, 2) ?? 'undefined');
    return;
  }
  let piece: string[] = [];
  let size = 0;
  /** One or more whole lines, without the newline that ends the last. */
  const lines = (text: string) => {
    piece.push(text);
    size += text.length;
    if (size >= PIECE_CHARS) {
      write(piece.join('\n'));
      piece = [];
      size = 0;
      return true;
    }
    return false;
  };
  /** A value one level down, indented as it would be inside its parent. */
  const nested = (v: unknown, indent: string) => JSON.stringify(v, null, 2).replace(/\n/g, `\n${indent}`);
  const entries: Array<[string | null, unknown]> = Array.isArray(value)
    ? value.map((v) => [null, v === undefined || typeof v === 'function' || typeof v === 'symbol' ? null : v])
    : Object.entries(value).filter(([, v]) => v !== undefined && typeof v !== 'function' && typeof v !== 'symbol');
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  if (entries.length === 0) {
    write(`${open}${close}`);
    return;
  }
  lines(open);
  for (const [i, [key, v]] of entries.entries()) {
    const comma = i < entries.length - 1 ? ',' : '';
    const head = `  ${key === null ? '' : `${JSON.stringify(key)}: `}`;
    const items = Array.isArray(v) ? v : null;
    if (items && items.length > 0 && (v as { toJSON?: unknown }).toJSON === undefined) {
      lines(`${head}[`);
      // A run of elements stringified inside {"k": [...]}, which indents them as deep as they
      // are here; the two lines before them and the two after are cut off.
      for (let j = 0; j < items.length; j += ITEMS_AT_ONCE) {
        const text = JSON.stringify({ k: items.slice(j, j + ITEMS_AT_ONCE) }, null, 2);
        const first = text.indexOf('\n', text.indexOf('\n') + 1) + 1;
        const last = text.lastIndexOf('\n', text.lastIndexOf('\n') - 1);
        // A pipe takes what the reader has not read yet into memory: wait for it to drain.
        if (lines(`${text.slice(first, last)}${j + ITEMS_AT_ONCE < items.length ? ',' : ''}`)) await drain?.();
      }
      lines(`  ]${comma}`);
    } else lines(`${head}${nested(v, '  ')}${comma}`);
  }
  lines(close);
  write(piece.join('\n'));
}
