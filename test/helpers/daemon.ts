/**
 * A real physbitsd process on a temp config, for end-to-end tests: start it, wait until it says
 * `ready` (its API socket is up by then), read its log as parsed lines, ask its API, signal it,
 * stop it. Also: physbitsctl as a child process, and a process's memory from /proc/<pid>/status.
 *
 *   const d = await startDaemon({ dir, config: { host: { physBits: 39 } } });
 *   t.teardown(() => d.kill());
 *   await d.waitForStatus((doc) => doc.vms.length === 1);
 *   t.is((await d.stop()).code, 0);
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import WebSocket from 'ws';
import { apiRequest } from '../../agent/api/api-client';
import type { StatusDocument } from '../../agent/core/types';
import { DIE_WITH_PARENT } from './die-with-parent';

/** The compiled programs (this file runs from build/test/helpers/). */
export const PHYSBITSD = resolve(__dirname, '..', '..', 'agent', 'bin', 'physbitsd.js');
export const PHYSBITSCTL = resolve(__dirname, '..', '..', 'agent', 'bin', 'physbitsctl.js');

/** Log lines kept per daemon (the oldest go first); `lineCount` still counts every one. */
const MAX_KEPT_LINES = 20000;

export type JsonObject = Record<string, unknown>;

/** The working config of the end-to-end tests, every path inside `dir`. */
export function baseConfig(dir: string): JsonObject {
  return {
    host: { physBits: 40 },
    discovery: { sockets: [join(dir, 'vms', '*.qmp')] },
    guard: { socketDir: join(dir, 'guard') },
    api: { socket: join(dir, 'api.sock') },
    metrics: { listen: '127.0.0.1:0' },
    policy: { accelerators: ['kvm', 'tcg'] },
    alerts: { spoolDir: join(dir, 'spool') },
    peers: [{ name: 'narrow', address: '127.0.0.2', physBits: 39 }],
  };
}

/** Objects merged key by key; anything else (arrays included) in `patch` replaces what `base` has. */
export function mergeConfig(base: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    const b = out[k];
    const isObj = (x: unknown): x is JsonObject => !!x && typeof x === 'object' && !Array.isArray(x);
    out[k] = isObj(b) && isObj(v) ? mergeConfig(b, v) : v;
  }
  return out;
}

export function writeConfig(path: string, config: JsonObject): string {
  writeFileSync(path, JSON.stringify(config, null, 2));
  return path;
}

export interface LogLine {
  time: string | null;
  /** Lower case: error, warn, info, debug. */
  level: string;
  message: string;
  /** key=value context, values unquoted (JSON-decoded when the logger quoted them). */
  fields: Record<string, string>;
  raw: string;
}

const LEVEL_RE = /^(?:(\d{4}-\d\d-\d\dT[\d:.]+Z) )?(ERROR|WARN|INFO|DEBUG) (.*)$/;
const JOURNAL_RE = /^<([3467])>(.*)$/;
const JOURNAL_LEVEL: Record<string, string> = { '3': 'error', '4': 'warn', '6': 'info', '7': 'debug' };

/** Splits "message words k=v k2="quoted \"v\"" into the message and its fields. */
function splitFields(rest: string): { message: string; fields: Record<string, string> } {
  const fields: Record<string, string> = {};
  const re = / ([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|[^ ]*)(?= [A-Za-z_][\w.-]*=|$)/g;
  const first = rest.search(/ [A-Za-z_][\w.-]*=/);
  if (first < 0) return { message: rest, fields };
  re.lastIndex = first;
  const message = rest.slice(0, first);
  for (let m = re.exec(rest); m; m = re.exec(rest)) {
    let v = m[2];
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        /* kept as written */
      }
    }
    fields[m[1]] = v;
  }
  return { message, fields };
}

/**
 * One line of physbitsd's log in any of its formats: text (`<ISO time> LEVEL message k=v ...`),
 * journal (`<6>message k=v ...`) or json. Null for anything else (a line that is not the logger's).
 */
export function parseLogLine(raw: string): LogLine | null {
  if (raw.startsWith('{')) {
    try {
      const o = JSON.parse(raw) as Record<string, unknown>;
      if (typeof o.level !== 'string' || typeof o.message !== 'string') return null;
      const fields: Record<string, string> = {};
      for (const [k, v] of Object.entries(o)) {
        if (k !== 'level' && k !== 'message' && k !== 'timestamp')
          fields[k] = typeof v === 'string' ? v : JSON.stringify(v);
      }
      return {
        time: typeof o.timestamp === 'string' ? o.timestamp : null,
        level: o.level,
        message: o.message,
        fields,
        raw,
      };
    } catch {
      return null;
    }
  }
  const j = JOURNAL_RE.exec(raw);
  if (j) return { time: null, level: JOURNAL_LEVEL[j[1]], ...splitFields(j[2]), raw };
  const m = LEVEL_RE.exec(raw);
  if (!m) return null;
  return { time: m[1] ?? null, level: m[2].toLowerCase(), ...splitFields(m[3]), raw };
}

export interface ProcMemory {
  /** Resident set now, kB. */
  rssKb: number;
  /** Peak resident set (VmHWM), kB. */
  hwmKb: number;
}

/** VmRSS and VmHWM of a /proc/<pid>/status text. */
export function parseProcStatus(text: string): ProcMemory {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(text);
    if (!m) throw new Error(`no ${key} in /proc status`);
    return Number(m[1]);
  };
  return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

export function procMemory(pid: number): ProcMemory {
  return parseProcStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
}

/** Polls `fn` until it returns something truthy; rejects with `what` after `timeoutMs`. */
export async function waitUntil<T>(
  fn: () => T | Promise<T>,
  what: string,
  timeoutMs = 10000,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DaemonProcess {
  readonly dir: string;
  readonly configPath: string;
  readonly config: JsonObject;
  readonly apiSocket: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitStatus>;
  /** Every log line kept so far (parsed; lines that are not the logger's are left out). */
  lines(): LogLine[];
  /** Lines seen in all. */
  lineCount(): number;
  /** The raw stderr kept so far. */
  stderr(): string;
  waitForLog(match: RegExp | ((l: LogLine) => boolean), timeoutMs?: number): Promise<LogLine>;
  /** "127.0.0.1:PORT" of /metrics, from the `metrics listening` line. */
  metricsAddress(): string;
  metrics(): Promise<string>;
  status(): Promise<StatusDocument>;
  waitForStatus(pred: (doc: StatusDocument) => boolean, what: string, timeoutMs?: number): Promise<StatusDocument>;
  memory(): ProcMemory;
  /** SIGTERM and wait for the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<ExitStatus & { ms: number }>;
  /** SIGKILL (when still running) and wait. */
  kill(): Promise<void>;
}

export interface StartDaemonOptions {
  /** Directory for the config and default paths; its vms/ is created. */
  dir: string;
  /** Merged over baseConfig(dir) (ignored when `rawConfig` is given). */
  config?: JsonObject;
  /** The config exactly as written. */
  rawConfig?: JsonObject;
  /** Config file name inside dir. Default cfg.json. */
  configName?: string;
  /** Wait for the `ready` line (default true). */
  waitReady?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  /** A command the daemon runs under, e.g. ['strace', '-f', '-o', FILE]; `pid` is then the wrapper's. */
  wrapper?: string[];
}

/** Every daemon still running, killed when the test worker exits (and by DIE_WITH_PARENT when it is killed). */
const runningDaemons = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of runningDaemons) p.kill('SIGKILL');
});

export async function startDaemon(opts: StartDaemonOptions): Promise<DaemonProcess> {
  const { dir } = opts;
  mkdirSync(join(dir, 'vms'), { recursive: true });
  const config = opts.rawConfig ?? mergeConfig(baseConfig(dir), opts.config ?? {});
  const configPath = writeConfig(join(dir, opts.configName ?? 'cfg.json'), config);
  const apiSocket = String((config.api as JsonObject | undefined)?.socket ?? join(dir, 'api.sock'));
  const env = { ...process.env, ...opts.env };
  delete env.JOURNAL_STREAM;
  delete env.NOTIFY_SOCKET;
  Object.assign(env, opts.env);
  const argv = [process.execPath, PHYSBITSD, '--config', configPath];
  const [cmd, ...args] = [...DIE_WITH_PARENT, ...(opts.wrapper ?? []), ...argv];
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  runningDaemons.add(proc);
  const kept: LogLine[] = [];
  let count = 0;
  let stderr = '';
  let partial = '';
  const listeners = new Set<(l: LogLine) => void>();
  const onText = (chunk: Buffer): void => {
    const text = partial + chunk.toString('utf8');
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    for (const raw of parts) {
      if (stderr.length < 1_000_000) stderr += raw + '\n';
      const l = parseLogLine(raw);
      if (!l) continue;
      count++;
      kept.push(l);
      if (kept.length > MAX_KEPT_LINES) kept.shift();
      for (const fn of [...listeners]) fn(l);
    }
  };
  proc.stderr!.on('data', onText);
  proc.stdout!.on('data', onText);
  const exited = new Promise<ExitStatus>((r) =>
    proc.once('exit', (code, signal) => {
      runningDaemons.delete(proc);
      r({ code, signal });
    }),
  );

  const waitForLog = (match: RegExp | ((l: LogLine) => boolean), timeoutMs = 10000): Promise<LogLine> => {
    const test = typeof match === 'function' ? match : (l: LogLine) => match.test(l.raw);
    const seen = kept.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolveLine, reject) => {
      const timer = setTimeout(() => {
        listeners.delete(on);
        reject(
          new Error(
            `physbitsd: no log line matching ${String(match)} within ${timeoutMs} ms; log:\n${stderr.slice(-4000)}`,
          ),
        );
      }, timeoutMs);
      const on = (l: LogLine): void => {
        if (!test(l)) return;
        clearTimeout(timer);
        listeners.delete(on);
        resolveLine(l);
      };
      listeners.add(on);
      void exited.then((st) => {
        if (!listeners.has(on)) return;
        clearTimeout(timer);
        listeners.delete(on);
        reject(
          new Error(
            `physbitsd exited (${st.code ?? st.signal}) before logging ${String(match)}; log:\n${stderr.slice(-4000)}`,
          ),
        );
      });
    });
  };

  let metricsAddr: string | null = null;
  const d: DaemonProcess = {
    dir,
    configPath,
    config,
    apiSocket,
    proc,
    pid: proc.pid!,
    exited,
    lines: () => [...kept],
    lineCount: () => count,
    stderr: () => stderr,
    waitForLog,
    metricsAddress() {
      if (metricsAddr) return metricsAddr;
      const l = kept.find((x) => x.message === 'metrics listening');
      if (!l) throw new Error('physbitsd has not logged its metrics address');
      metricsAddr = l.fields.address;
      return metricsAddr;
    },
    async metrics() {
      const res = await fetch(`http://${d.metricsAddress()}/metrics`);
      return res.text();
    },
    status: () => apiRequest<StatusDocument>({ socketPath: apiSocket }, 'GET', '/v1/status', undefined, 10000),
    waitForStatus: (pred, what, timeoutMs = 30000) =>
      waitUntil(
        async () => {
          const doc = await d.status();
          return pred(doc) ? doc : null;
        },
        what,
        timeoutMs,
        100,
      ),
    memory: () => procMemory(proc.pid!),
    async stop(timeoutMs = 10000) {
      const t0 = Date.now();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
      const st = await exited;
      clearTimeout(timer);
      return { ...st, ms: Date.now() - t0 };
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
  if (opts.waitReady ?? true) {
    try {
      await waitForLog((l) => l.message === 'ready', opts.timeoutMs ?? 60000);
    } catch (err) {
      await d.kill();
      throw err;
    }
  }
  return d;
}

export interface CtlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs physbitsctl with `args`; never rejects for a non-zero exit. */
export function ctl(args: string[], timeoutMs = 20000): Promise<CtlResult> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [PHYSBITSCTL, ...args],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err?.killed) stderr += `\n(physbitsctl ${args.join(' ')} killed after ${timeoutMs} ms without exiting)`;
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : null
          : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

/**
 * The daemon's event stream (`/v1/events` on the API socket), kept as it arrives, for states too
 * short-lived to catch by polling the status (a reason set and cleared within a round trip).
 */
export class EventStream {
  readonly events: JsonObject[] = [];
  private readonly taken = new WeakSet<JsonObject>();
  private readonly waiters = new Set<() => void>();
  private closed = false;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      this.events.push(JSON.parse(data.toString('utf8')) as JsonObject);
      for (const w of [...this.waiters]) w();
    });
    ws.once('close', () => {
      this.closed = true;
      for (const w of [...this.waiters]) w();
    });
  }

  static open(apiSocket: string, timeoutMs = 10000): Promise<EventStream> {
    return new Promise((resolveStream, reject) => {
      const ws = new WebSocket(`ws+unix://${apiSocket}:/v1/events`);
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for the event stream on ${apiSocket}`));
      }, timeoutMs);
      ws.once('open', () => {
        clearTimeout(timer);
        resolveStream(new EventStream(ws));
      });
      ws.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** The first event not yet taken that matches; `what` names it when the stream closes or time runs out. */
  next(pred: (e: JsonObject) => boolean, what: string, timeoutMs = 10000): Promise<JsonObject> {
    return new Promise((resolveEvent, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      const check = (): void => {
        const e = this.events.find((x) => !this.taken.has(x) && pred(x));
        if (e) {
          this.taken.add(e);
          finish();
          resolveEvent(e);
        } else if (this.closed) {
          finish();
          reject(new Error(`the event stream closed while waiting for ${what}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; last events ${JSON.stringify(this.events.slice(-5)).slice(0, 1000)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

/** A VM's entry in a status document, by name. */
export function vmNamed(doc: StatusDocument, name: string) {
  return doc.vms.find((v) => v.name === name);
}

/**
 * A raw line client for a QMP socket (guarded or not): the test writes the exact lines, ids
 * included, and reads every message as it arrives. Holds the last `maxMessages` at least (the
 * oldest are dropped in batches). A waiter looks at each message once, so a client that receives
 * hundreds of thousands of messages costs this process little (the fake QMP servers of a test share
 * its event loop).
 */
export class LineClient {
  readonly messages: JsonObject[] = [];
  /** How many messages were dropped from the front of `messages`. */
  private dropped = 0;
  private readonly taken = new WeakSet<JsonObject>();
  private readonly waiters = new Set<() => void>();
  private buf = '';
  closed = false;
  readonly ended: Promise<void>;

  private constructor(
    readonly socket: net.Socket,
    /** The socket path, named in errors. */
    readonly path: string,
    private readonly maxMessages: number,
  ) {
    this.ended = new Promise((r) =>
      socket.once('close', () => {
        this.closed = true;
        for (const w of [...this.waiters]) w();
        r();
      }),
    );
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      this.buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl).trim();
        this.buf = this.buf.slice(nl + 1);
        if (!line) continue;
        try {
          this.messages.push(JSON.parse(line) as JsonObject);
        } catch {
          this.messages.push({ unparsable: line });
        }
      }
      if (this.messages.length > 2 * this.maxMessages) {
        const excess = this.messages.length - this.maxMessages;
        this.messages.splice(0, excess);
        this.dropped += excess;
      }
      for (const w of [...this.waiters]) w();
    });
  }

  static connect(path: string, opts: { timeoutMs?: number; maxMessages?: number } = {}): Promise<LineClient> {
    return new Promise((resolveClient, reject) => {
      const s = net.createConnection({ path });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`timed out after ${opts.timeoutMs ?? 5000} ms waiting for a connection to ${path}`));
      }, opts.timeoutMs ?? 5000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolveClient(new LineClient(s, path, opts.maxMessages ?? 10000));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /** Connects, reads the greeting and negotiates; resolves with the greeting. */
  static async negotiated(
    path: string,
    timeoutMs = 10000,
    maxMessages?: number,
  ): Promise<{ client: LineClient; greeting: JsonObject }> {
    const client = await LineClient.connect(path, { timeoutMs, maxMessages });
    const greeting = await client.next((m) => 'QMP' in m, timeoutMs, 'the QMP greeting');
    client.send('{"execute": "qmp_capabilities", "id": "neg"}');
    await client.next((m) => m.id === 'neg' && 'return' in m, timeoutMs, 'the qmp_capabilities reply');
    return { client, greeting };
  }

  send(line: string): void {
    this.socket.write(line.endsWith('\n') ? line : `${line}\n`);
  }

  /**
   * The first message not yet taken that matches; taken from now on. `what` names it in the error
   * when the connection closes or `timeoutMs` passes first (default: the predicate's source).
   */
  next(
    pred: (m: JsonObject) => boolean,
    timeoutMs = 10000,
    what = `a message matching ${String(pred)}`,
  ): Promise<JsonObject> {
    return new Promise((resolveMsg, reject) => {
      /** Absolute index (counting dropped messages) of the first message this waiter has not looked at. */
      let seen = 0;
      const check = (): boolean => {
        const start = Math.max(seen - this.dropped, 0);
        for (let i = start; i < this.messages.length; i++) {
          const m = this.messages[i];
          if (this.taken.has(m) || !pred(m)) continue;
          this.taken.add(m);
          finish();
          resolveMsg(m);
          return true;
        }
        seen = this.dropped + this.messages.length;
        if (this.closed) {
          finish();
          reject(
            new Error(
              `${this.path}: connection closed while waiting for ${what}; last messages ${JSON.stringify(this.messages.slice(-3)).slice(0, 600)}`,
            ),
          );
          return true;
        }
        return false;
      };
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(onData);
      };
      const onData = (): void => void check();
      const timer = setTimeout(() => {
        this.waiters.delete(onData);
        reject(
          new Error(
            `${this.path}: timed out after ${timeoutMs} ms waiting for ${what}; last messages ${JSON.stringify(this.messages.slice(-5)).slice(0, 1000)}`,
          ),
        );
      }, timeoutMs);
      this.waiters.add(onData);
      check();
    });
  }

  /** Sends a command line and resolves with the reply carrying `id` (compared as JSON). */
  async command(line: string, id: unknown, timeoutMs = 10000): Promise<JsonObject> {
    this.send(line);
    const want = JSON.stringify(id);
    return this.next(
      (m) => ('return' in m || 'error' in m) && JSON.stringify(m.id) === want,
      timeoutMs,
      `the reply to ${line.slice(0, 120)}`,
    );
  }

  close(): Promise<void> {
    this.socket.end();
    this.socket.destroy();
    return this.ended;
  }
}
