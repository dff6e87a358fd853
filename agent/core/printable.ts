/**
 * Text from VMs, clients and peers made safe for a terminal or a log: C0 and C1 control characters,
 * DEL, the Unicode line and paragraph separators (U+2028, U+2029) and the bidirectional controls
 * (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069: they reorder what a reader sees, so
 * `invoice\u202egpj.exe` would read as `invoiceexe.jpg`) shown as \uXXXX. The escape is plain ASCII,
 * so escaping twice changes nothing, and inside a JSON string it decodes to the same text.
 */
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;
const CONTROLS_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

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
