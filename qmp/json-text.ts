/**
 * Structural facts about a JSON text that JSON.parse cannot give: duplicate keys (QEMU's parser
 * rejects them, JSON.parse silently keeps the last), nesting depth (QEMU's json-parser.c stops at
 * 1024), and the exact source span of the top-level "id", so that a reply can be handed to another
 * client with its id replaced and every other byte (numbers beyond 2^53 included) left untouched.
 *
 * Every function here expects text that JSON.parse has already accepted.
 */

/** QEMU's MAX_NESTING (qobject/json-parser.c). */
export const MAX_JSON_NESTING = 1024;

export interface MemberSpan {
  key: string;
  /** Offset of the key's opening quote. */
  keyStart: number;
  valueStart: number;
  /** Offset one past the value's last character. */
  valueEnd: number;
}

export interface JsonShape {
  /** The first key that occurs twice in one object, at any depth; null when none. */
  duplicateKey: string | null;
  maxDepth: number;
  /** Members of the top-level value when it is an object; null otherwise. */
  members: MemberSpan[] | null;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

function stringEnd(text: string, quote: number): number {
  let i = quote + 1;
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) i += 2;
    else if (c === 0x22) return i + 1;
    else if (Number.isNaN(c)) throw new SyntaxError('unterminated string');
    else i++;
  }
}

function keyOf(text: string, start: number, end: number): string {
  const raw = text.slice(start, end);
  return raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
}

interface Frame {
  object: boolean;
  keys: Set<string> | null;
  expectKey: boolean;
}

/** One pass over the text; iterative, so depth costs no stack. */
export function scanJson(text: string): JsonShape {
  const stack: Frame[] = [];
  let duplicateKey: string | null = null;
  let maxDepth = 0;
  let members: MemberSpan[] | null = null;
  let current: MemberSpan | null = null;
  let lastEnd = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (WS.has(c)) {
      i++;
      continue;
    }
    const top = stack.length > 0 ? stack[stack.length - 1] : null;
    if (c === 0x7b || c === 0x5b) {
      if (stack.length === 1 && current && current.valueStart < 0) current.valueStart = i;
      const object = c === 0x7b;
      stack.push({ object, keys: object ? new Set() : null, expectKey: object });
      if (stack.length > maxDepth) maxDepth = stack.length;
      if (stack.length === 1 && object) members = [];
      i++;
      lastEnd = i;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
      i++;
      lastEnd = i;
      if (stack.length === 0 && current) {
        current.valueEnd = lastEndBefore(text, i - 1);
        members!.push(current);
        current = null;
      }
    } else if (c === 0x2c) {
      if (top?.object) top.expectKey = true;
      if (stack.length === 1 && current) {
        current.valueEnd = lastEnd;
        members!.push(current);
        current = null;
      }
      i++;
    } else if (c === 0x3a) {
      i++;
    } else if (c === 0x22) {
      const end = stringEnd(text, i);
      if (top?.object && top.expectKey) {
        const key = keyOf(text, i, end);
        if (top.keys!.has(key)) duplicateKey ??= key;
        top.keys!.add(key);
        top.expectKey = false;
        if (stack.length === 1) current = { key, keyStart: i, valueStart: -1, valueEnd: -1 };
      } else if (stack.length === 1 && current && current.valueStart < 0) {
        current.valueStart = i;
      }
      i = end;
      lastEnd = i;
    } else {
      // A number or a literal: runs until a delimiter.
      if (stack.length === 1 && current && current.valueStart < 0) current.valueStart = i;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (WS.has(d) || d === 0x2c || d === 0x7d || d === 0x5d) break;
        i++;
      }
      lastEnd = i;
    }
  }
  return { duplicateKey, maxDepth, members };
}

/** Offset one past the last non-whitespace character before `close`. */
function lastEndBefore(text: string, close: number): number {
  let j = close;
  while (j > 0 && WS.has(text.charCodeAt(j - 1))) j--;
  return j;
}

/** The top-level "id" exactly as written, or undefined when the object has none. */
export function topLevelIdText(text: string): string | undefined {
  const m = scanJson(text).members?.find((x) => x.key === 'id');
  return m ? text.slice(m.valueStart, m.valueEnd) : undefined;
}

/**
 * The same object text with its top-level "id" set to `idText` (raw JSON), or removed when
 * `idText` is undefined. Nothing else in the text changes.
 */
export function withTopLevelId(text: string, idText: string | undefined): string {
  const members = scanJson(text).members;
  if (!members) throw new TypeError('not a JSON object');
  const at = members.findIndex((m) => m.key === 'id');
  if (at >= 0) {
    const m = members[at];
    if (idText !== undefined) return text.slice(0, m.valueStart) + idText + text.slice(m.valueEnd);
    if (members.length === 1) return text.slice(0, m.keyStart) + text.slice(m.valueEnd);
    if (at < members.length - 1) return text.slice(0, m.keyStart) + text.slice(members[at + 1].keyStart);
    return text.slice(0, members[at - 1].valueEnd) + text.slice(m.valueEnd);
  }
  if (idText === undefined) return text;
  const close = text.lastIndexOf('}');
  if (members.length === 0) return text.slice(0, close) + `"id": ${idText}` + text.slice(close);
  const last = members[members.length - 1];
  return text.slice(0, last.valueEnd) + `, "id": ${idText}` + text.slice(last.valueEnd);
}

/** A JSON string of these characters is written as they are: no escape can spell one differently. */
const PLAIN_ID = /^[A-Za-z0-9_#.:-]+$/;
const isJsonSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/**
 * withTopLevelId for an object text whose top-level "id" is already known to be the string
 * `knownId` (an id this side chose and routed the reply by), without scanning the text: the
 * proxy's per-reply fast path. It applies only when the text holds no backslash at all (so no
 * string in it is escaped and every quote is a token boundary), `knownId` is plain, its JSON form
 * occurs exactly once, and that occurrence follows `"id"` and a colon. The top-level id is then
 * written in exactly that form, and it is the only occurrence, so it is the member found. In any
 * other case the text is scanned (withTopLevelId). The result is the same either way.
 */
export function withKnownTopLevelId(text: string, knownId: string, idText: string | undefined): string {
  const fast = PLAIN_ID.test(knownId) && !text.includes('\\') ? knownIdMember(text, `"${knownId}"`) : null;
  if (!fast) return withTopLevelId(text, idText);
  const { keyStart, valueStart, valueEnd } = fast;
  if (idText !== undefined) return text.slice(0, valueStart) + idText + text.slice(valueEnd);
  // Removal, as withTopLevelId removes a member: up to the next key, or from the end of the previous value.
  let after = valueEnd;
  while (after < text.length && isJsonSpace(text.charCodeAt(after))) after++;
  if (text.charCodeAt(after) === 0x2c) {
    let next = after + 1;
    while (next < text.length && isJsonSpace(text.charCodeAt(next))) next++;
    return text.slice(0, keyStart) + text.slice(next);
  }
  let before = keyStart;
  while (before > 0 && isJsonSpace(text.charCodeAt(before - 1))) before--;
  if (text.charCodeAt(before - 1) !== 0x2c) return text.slice(0, keyStart) + text.slice(valueEnd);
  let prevEnd = before - 1;
  while (prevEnd > 0 && isJsonSpace(text.charCodeAt(prevEnd - 1))) prevEnd--;
  return text.slice(0, prevEnd) + text.slice(valueEnd);
}

/** The single `"id": <needle>` member of an unescaped text, or null when it is not there exactly once. */
function knownIdMember(
  text: string,
  needle: string,
): { keyStart: number; valueStart: number; valueEnd: number } | null {
  const valueStart = text.indexOf(needle);
  if (valueStart < 0 || text.indexOf(needle, valueStart + 1) >= 0) return null;
  let i = valueStart;
  while (i > 0 && isJsonSpace(text.charCodeAt(i - 1))) i--;
  if (text.charCodeAt(i - 1) !== 0x3a) return null;
  i--;
  while (i > 0 && isJsonSpace(text.charCodeAt(i - 1))) i--;
  const keyStart = i - 4;
  if (keyStart < 0 || text.slice(keyStart, i) !== '"id"') return null;
  return { keyStart, valueStart, valueEnd: valueStart + needle.length };
}

/** Surrogates and Unicode's 66 noncharacters, in any form JSON text can hold them (raw or escaped). */
const MAYBE_REFUSED_CHAR = /[\uD800-\uDFFF\uFDD0-\uFDEF\uFFFE\uFFFF]|\\u/;

/** A code point QEMU accepts in a string: util/unicode.c is_valid_codepoint() (no surrogate, no noncharacter). */
function validCodePoint(cp: number): boolean {
  if (cp >= 0xfdd0 && cp <= 0xfdef) return false;
  if ((cp & 0xfffe) === 0xfffe) return false;
  return cp < 0xd800 || cp > 0xdfff;
}

/**
 * The parse error QEMU reports for a string JSON.parse accepts and QEMU's parser does not
 * (qobject/json-parser.c parse_string(), util/unicode.c): a surrogate that is not half of a pair, or
 * a noncharacter (U+FDD0..U+FDEF, U+xxFFFE, U+xxFFFF), escaped ("\\ud800 is not a valid Unicode
 * character", naming the escape as written) or raw ("invalid UTF-8 sequence in string"). null when
 * QEMU reads every string. QEMU answers such a line without an id, as any parse error: sent on, it
 * would be a reply no command owns, so it is answered here instead.
 *
 * Expects text that JSON.parse accepted and that was decoded from valid UTF-8 (raw surrogates then
 * only come in pairs, and a backslash only occurs inside a string, starting a well-formed escape).
 */
export function qemuStringError(text: string): string | null {
  if (!MAYBE_REFUSED_CHAR.test(text)) return null;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5c) {
      if (text.charCodeAt(i + 1) !== 0x75) {
        i++;
        continue;
      }
      const start = i;
      let cp = parseInt(text.slice(i + 2, i + 6), 16);
      i += 5;
      // A leading surrogate and an escaped trailing one make one character (QEMU's parse_string()).
      if (cp >= 0xd800 && cp <= 0xdbff && text.charCodeAt(i + 1) === 0x5c && text.charCodeAt(i + 2) === 0x75) {
        const trail = parseInt(text.slice(i + 3, i + 7), 16);
        if (trail >= 0xdc00 && trail <= 0xdfff) {
          cp = 0x10000 + ((cp & 0x3ff) << 10) + (trail & 0x3ff);
          i += 6;
        } else cp = -1;
      }
      if (cp < 0 || !validCodePoint(cp))
        return `${text.slice(start, cp < 0 ? start + 6 : i + 1)} is not a valid Unicode character`;
    } else if (c >= 0xd800 && c <= 0xdbff) {
      const cp = 0x10000 + ((c & 0x3ff) << 10) + (text.charCodeAt(i + 1) & 0x3ff);
      i++;
      if (!validCodePoint(cp)) return 'invalid UTF-8 sequence in string';
    } else if (!validCodePoint(c)) {
      return 'invalid UTF-8 sequence in string';
    }
  }
  return null;
}
