/**
 * winston, set up for a daemon: under systemd (JOURNAL_STREAM set) every line starts with the
 * sd-daemon priority prefix (`<3>` … `<7>`) and carries no timestamp of its own, since journald adds
 * one; elsewhere a timestamped text line. Context (vm, socket) is appended as key=value pairs.
 */
import winston from 'winston';
import { printable } from './printable';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'auto' | 'journal' | 'text' | 'json';

/** Where winston's formats leave the finished line (triple-beam's MESSAGE). */
const MESSAGE = Symbol.for('message');

/** syslog priorities for sd-daemon prefixes. */
const PRIORITY: Record<string, number> = { error: 3, warn: 4, info: 6, debug: 7 };

export interface Logger {
  error(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
  info(message: string, meta?: Record<string, unknown>): void;
  debug(message: string, meta?: Record<string, unknown>): void;
  child(meta: Record<string, unknown>): Logger;
  /** Changes the level of this logger, of every child made from it and of the one it was made from (a reload's `log.level`). */
  setLevel?(level: LogLevel): void;
}

/**
 * Values that came from VMs or clients: quoted, control characters escaped (C0 by JSON, C1 and
 * U+2028/2029, which JSON leaves raw, by printable), length bounded.
 */
export function safeValue(v: unknown): string {
  let s = typeof v === 'string' ? v : (JSON.stringify(v) ?? String(v));
  if (s.length > 256) s = `${s.slice(0, 256)}…`;
  return /^[\w./:@+-]*$/.test(s) && s !== '' ? s : printable(JSON.stringify(s));
}

function contextOf(info: Record<string | symbol, unknown>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(info)) {
    if (k === 'level' || k === 'message' || k === 'timestamp' || v === undefined) continue;
    parts.push(`${k}=${safeValue(v)}`);
  }
  return parts.length ? ` ${parts.join(' ')}` : '';
}

/** A message on one line: line breaks shown as ⏎, every other control character escaped. */
function oneLine(s: unknown): string {
  return printable(String(s).replace(/[\r\n]+/g, ' ⏎ '));
}

/** JSON lines with C1 and U+2028/2029 escaped too (JSON.stringify leaves them raw; the escape decodes the same). */
const escapedJson = winston.format((info) => {
  const line = (info as Record<symbol, unknown>)[MESSAGE];
  if (typeof line === 'string') (info as Record<symbol, unknown>)[MESSAGE] = printable(line);
  return info;
});

export function createLogger(
  opts: { level?: LogLevel; format?: LogFormat; stream?: NodeJS.WritableStream } = {},
): Logger {
  let format = opts.format ?? 'auto';
  if (format === 'auto') format = process.env.JOURNAL_STREAM ? 'journal' : 'text';
  const f = winston.format;
  const formats: Record<Exclude<LogFormat, 'auto'>, winston.Logform.Format> = {
    journal: f.printf((info) => `<${PRIORITY[info.level] ?? 6}>${oneLine(info.message)}${contextOf(info)}`),
    text: f.combine(
      f.timestamp(),
      f.printf((info) => `${info.timestamp} ${info.level.toUpperCase()} ${oneLine(info.message)}${contextOf(info)}`),
    ),
    json: f.combine(f.timestamp(), f.json(), escapedJson()),
  };
  const transport = new winston.transports.Stream({ stream: opts.stream ?? process.stderr });
  const w = winston.createLogger({
    level: opts.level ?? 'info',
    levels: { error: 0, warn: 1, info: 2, debug: 3 },
    format: formats[format],
    transports: [transport],
  });
  return wrap(w, { rank: RANK[opts.level ?? 'info'] });
}

/** The levels by rank: a line is written when its rank is at most the logger's. */
const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** A logger's level, shared with every child made from it (a reload's `log.level` reaches them all). */
interface LevelState {
  rank: number;
}

/**
 * A line below the logger's level is dropped here, on a number this side keeps: winston would build
 * it and pass it through its streams before its level check (winston/lib/winston/logger.js
 * `_transform`), and its own isLevelEnabled() walks its transports on every call. A child's winston
 * logger is made when it first writes a line, not when the child is made: the daemon makes one per
 * VM and per guarded socket, and most never write.
 */
function wrap(root: winston.Logger, state: LevelState, meta?: Record<string, unknown>): Logger {
  let made: winston.Logger | null = meta ? null : root;
  const w = (): winston.Logger => (made ??= root.child(meta!));
  return {
    error: (m, meta) => void w().error(m, meta),
    warn: (m, meta) => void (state.rank >= RANK.warn && w().warn(m, meta)),
    info: (m, meta) => void (state.rank >= RANK.info && w().info(m, meta)),
    debug: (m, meta) => void (state.rank >= RANK.debug && w().debug(m, meta)),
    child: (more) => wrap(root, state, meta ? { ...meta, ...more } : more),
    setLevel: (level) => {
      state.rank = RANK[level];
      root.level = level;
    },
  };
}

/** A logger that discards everything (one-shot CLI commands that print their own output). */
export const silentLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  child() {
    return silentLogger;
  },
};
