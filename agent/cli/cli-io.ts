import { printableLines } from '../core/printable';

/** What a CLI command gets from its caller: arguments and where to write. Tests pass their own. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Standard input, read whole (libvirt hook). */
  readStdin?: () => Promise<string>;
  env: NodeJS.ProcessEnv;
  /** The terminal's width when stdout is one; tables are cut to it unless `--wide`. */
  columns?: number;
  /** Resolves once stdout has written what it was given (a pipe buffers in memory what its reader has not read). */
  drain?: () => Promise<void>;
}

/** The width tables fit: the terminal's, else $COLUMNS when set; a pipe without it gets whole lines. */
export function terminalColumns(
  stream: { isTTY?: boolean; columns?: number },
  env: NodeJS.ProcessEnv,
): number | undefined {
  if (stream.isTTY && stream.columns && stream.columns > 0) return stream.columns;
  const n = Number(env.COLUMNS);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/**
 * One line or several, ending in a newline, every control character but the newlines escaped: the
 * last guard for text a command did not escape itself (a daemon's error message naming a VM, a
 * peer's answer). JSON stays JSON: the characters it leaves raw (C1, U+2028/2029) only occur inside
 * strings, where the \uXXXX escape decodes to the same text.
 */
export function terminalText(text: string): string {
  const safe = printableLines(text);
  return safe.endsWith('\n') ? safe : `${safe}\n`;
}

export const processIo: CliIo = {
  stdout: (t) => void process.stdout.write(terminalText(t)),
  stderr: (t) => void process.stderr.write(terminalText(t)),
  env: process.env,
  columns: terminalColumns(process.stdout, process.env),
  drain: () =>
    new Promise<void>((resolve) => {
      const out = process.stdout;
      if (!out.writableNeedDrain || out.destroyed) return resolve();
      const done = () => {
        out.off('drain', done).off('close', done).off('error', done);
        resolve();
      };
      out.once('drain', done).once('close', done).once('error', done);
    }),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of process.stdin) {
      total += (c as Buffer).length;
      if (total > 16 * 1024 * 1024) throw new Error('standard input larger than 16 MiB');
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString('utf8');
  },
};
