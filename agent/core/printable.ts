/**
 * Text from VMs, clients and peers made safe for a terminal or a log: C0 and C1 control characters,
 * DEL and the Unicode line and paragraph separators (U+2028, U+2029) shown as \uXXXX. The escape is
 * plain ASCII, so escaping twice changes nothing, and inside a JSON string it decodes to the same text.
 */
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const CONTROLS_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/g;

function escape(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** One line: every control character escaped, newlines included. */
export function printable(text: string): string {
  return text.replace(CONTROLS, escape);
}

/** Several lines (a table, a report): every control character escaped except the newlines between them. */
export function printableLines(text: string): string {
  return text.replace(CONTROLS_BUT_NEWLINE, escape);
}
