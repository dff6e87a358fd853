/**
 * Running virsh safely: execFile (never a shell), every name and value as its own `--opt=value`
 * argument (so a domain called "-x" stays a name), the C locale (so errors can be classified), a
 * timeout that kills, and a bound on what is read back.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { AgentError } from '../core/errors';

export interface VirshOptions {
  /** The virsh binary (config discovery.virsh); default 'virsh' on PATH. */
  virsh?: string;
  /** Kill virsh after this long; default 10 s. */
  timeoutMs?: number;
  /** Largest stdout or stderr accepted; default 4 MiB. */
  maxOutputBytes?: number;
}

export const VIRSH_DEFAULTS = { virsh: 'virsh', timeoutMs: 10000, maxOutputBytes: 4 * 1024 * 1024 } as const;

export type VirshErrorCode =
  | 'VIRSH_NOT_FOUND'
  | 'VIRSH_TIMEOUT'
  | 'VIRSH_OUTPUT_TOO_LARGE'
  | 'VIRSH_FAILED'
  | 'LIBVIRT_UNREACHABLE'
  | 'LIBVIRT_DOMAIN_NOT_FOUND'
  | 'LIBVIRT_DOMAIN_NOT_RUNNING';

/** virsh could not do what was asked; `code` says why, `stderr` holds virsh's own words. */
export class VirshError extends AgentError {
  readonly stderr: string;
  constructor(code: VirshErrorCode, message: string, stderr = '', options?: { cause?: unknown }) {
    super(code, message, options);
    this.stderr = stderr;
  }
}

/** The first "error: …" line of virsh's stderr, else its first non-empty line. */
export function virshErrorLine(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const errors = lines.filter((l) => l.startsWith('error: ')).map((l) => l.slice(7));
  // virsh prints a generic line first ("failed to connect to the hypervisor") and the cause after.
  if (errors.length > 1 && /^failed to connect to the hypervisor$/.test(errors[0])) return `${errors[0]}: ${errors[1]}`;
  return (errors[0] ?? lines[0] ?? '').slice(0, 500);
}

/** Which VirshErrorCode libvirt 9.0's message (LC_ALL=C) means. */
export function classifyVirshFailure(stderr: string): VirshErrorCode {
  if (
    /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|End of file while reading data/i.test(
      stderr,
    )
  )
    return 'LIBVIRT_UNREACHABLE';
  if (/failed to get domain|Domain not found|no domain with matching (name|uuid|id)/i.test(stderr))
    return 'LIBVIRT_DOMAIN_NOT_FOUND';
  if (/domain is not running|domain is no longer running/i.test(stderr)) return 'LIBVIRT_DOMAIN_NOT_RUNNING';
  return 'VIRSH_FAILED';
}

/**
 * Runs `virsh --connect=URI ARGS...` and resolves to its stdout. Rejects with VirshError:
 * VIRSH_NOT_FOUND, VIRSH_TIMEOUT, VIRSH_OUTPUT_TOO_LARGE, or the classified failure.
 */
export function runVirsh(uri: string, args: readonly string[], opts: VirshOptions = {}): Promise<string> {
  const virsh = opts.virsh ?? VIRSH_DEFAULTS.virsh;
  const timeoutMs = opts.timeoutMs ?? VIRSH_DEFAULTS.timeoutMs;
  const maxBuffer = opts.maxOutputBytes ?? VIRSH_DEFAULTS.maxOutputBytes;
  const argv = [`--connect=${uri}`, ...args];
  const what = `virsh ${args[0] ?? ''}`.trim();
  return new Promise((resolve, reject) => {
    execFile(
      virsh,
      argv,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer,
        encoding: 'utf8',
        windowsHide: true,
        env: { ...process.env, LC_ALL: 'C', LANG: 'C' },
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve(stdout);
          return;
        }
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: string | number };
        if (e.code === 'ENOENT') {
          reject(
            new VirshError(
              'VIRSH_NOT_FOUND',
              `${virsh}: not found (install libvirt-clients or set discovery.virsh)`,
              '',
              { cause: err },
            ),
          );
        } else if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') {
          reject(
            new VirshError('VIRSH_OUTPUT_TOO_LARGE', `${what}: output larger than ${maxBuffer} bytes`, '', {
              cause: err,
            }),
          );
        } else if (e.killed && e.signal === 'SIGKILL') {
          reject(new VirshError('VIRSH_TIMEOUT', `${what}: no answer within ${timeoutMs} ms`, stderr, { cause: err }));
        } else {
          const line = virshErrorLine(stderr) || e.message;
          reject(new VirshError(classifyVirshFailure(stderr), `${what}: ${line}`, stderr, { cause: err }));
        }
      },
    );
  });
}

/**
 * One argument of a virsh command string: double-quoted, with `\\` and `"` escaped (virsh's own
 * parser, tools/vsh.c vshCommandStringGetArg; no shell is involved). Null when the text holds a
 * line break or NUL, which a command string cannot carry.
 */
export function quoteVirshArg(text: string): string | null {
  if (/[\n\r\0]/.test(text)) return null;
  return `"${text.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * Runs several virsh commands in one virsh process and one libvirt connection: virsh takes a
 * single argument as a command string, runs its ';'-separated commands in order and goes on after
 * a failed one. A random marker echoed after each command splits the output. Resolves to each
 * command's stdout, or null for a command that printed nothing (it failed: run it alone to learn
 * why). Rejects as runVirsh does when virsh itself fails (no connection, timeout, too much output).
 */
export async function runVirshBatch(
  uri: string,
  commands: readonly (readonly string[])[],
  opts: VirshOptions = {},
): Promise<Array<string | null>> {
  const token = randomBytes(9).toString('hex');
  const parts: string[] = [];
  commands.forEach((argv, i) => {
    const quoted = argv.map((a, j) => (j === 0 ? a : quoteVirshArg(a)));
    if (quoted.some((q) => q === null))
      throw new VirshError('VIRSH_FAILED', `virsh ${argv[0]}: an argument holds a line break`);
    parts.push(quoted.join(' '), `echo pb-${token}-${i}`);
  });
  const stdout = await runVirsh(uri, ['--quiet', parts.join(' ; ')], opts);
  const out: Array<string | null> = [];
  let rest = stdout;
  for (let i = 0; i < commands.length; i++) {
    const marker = `pb-${token}-${i}`;
    const at = rest.indexOf(marker);
    if (at < 0) {
      out.push(null);
      continue;
    }
    const text = rest.slice(0, at).trim();
    out.push(text === '' ? null : text);
    rest = rest.slice(at + marker.length);
  }
  return out;
}
