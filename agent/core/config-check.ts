/**
 * `physbitsd --check-config`: every problem of a config file at once, without starting anything
 * (the unit's ExecReload runs it before it signals the daemon, so a reload of a broken file fails).
 * A JSON syntax error is placed by line and column; schema problems are listed by key, as the
 * daemon's own load names the first of them.
 */
import { configProblems, readConfigText } from './config';

/** Line and column (both from 1) of a character offset in `text`. */
export function lineColumn(text: string, offset: number): { line: number; column: number } {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length)));
  const lines = before.split('\n');
  return { line: lines.length, column: lines[lines.length - 1].length + 1 };
}

/**
 * Where V8's JSON.parse message says the error is: "… at position N" (Node 18/20), or "(line L
 * column C)" (newer V8), or at the end for "Unexpected end of JSON input".
 */
export function jsonErrorPlace(text: string, message: string): { line: number; column: number } {
  const lc = /line (\d+) column (\d+)/.exec(message);
  if (lc) return { line: Number(lc[1]), column: Number(lc[2]) };
  const pos = /position (\d+)/.exec(message);
  return lineColumn(text, pos ? Number(pos[1]) : text.length);
}

/** The message without V8's own place, which jsonErrorPlace gives as line and column. */
function jsonWhat(message: string): string {
  return message.replace(/\s*(?:in JSON )?at position \d+(?: \(line \d+ column \d+\))?$/, '').trim();
}

/**
 * Every problem of the config at `path` (default: /etc/physbits/config.json, where a missing file
 * means every default), each line starting with the file's name; empty when the file is valid.
 */
export function checkConfigFile(path: string | undefined): string[] {
  let file: string;
  let text: string | null;
  try {
    ({ file, text } = readConfigText(path));
  } catch (err) {
    return [(err as Error).message];
  }
  if (text === null) return [];
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    const message = (err as Error).message;
    const { line, column } = jsonErrorPlace(text, message);
    return [`${file}:${line}:${column}: not valid JSON: ${jsonWhat(message)}`];
  }
  return configProblems(raw).map((problem) => `${file}: ${problem}`);
}

/**
 * The keys whose values differ between two configs, as dotted paths to the leaves that changed
 * (`guard.unknownPeer`, `peers`: arrays are compared whole), for a reload's log line.
 */
export function changedKeys(prev: unknown, next: unknown, prefix = ''): string[] {
  const isMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
  if (!isMap(prev) || !isMap(next)) return JSON.stringify(prev) === JSON.stringify(next) ? [] : [prefix || '(all)'];
  const keys = [...new Set([...Object.keys(prev), ...Object.keys(next)])].sort();
  return keys.flatMap((k) => changedKeys(prev[k], next[k], prefix ? `${prefix}.${k}` : k));
}
