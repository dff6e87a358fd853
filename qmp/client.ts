/**
 * A QMP client: QMP as a thin layer over LineConnection, after qemu.qmp's QMPClient
 * (python/qemu/qmp/qmp_client.py). It reads the greeting, negotiates capabilities (out-of-band only
 * when offered and asked for), owns its id space ('__physbits#00001', ...), routes replies by id and
 * emits events. Reconnection is the caller's policy: a client connects once and closes once.
 */
import { EventEmitter } from 'node:events';
import { parseAddress } from './address';
import { LineConnection, type RunState } from './connection';
import {
  AbortedError,
  BusyError,
  ClosedError,
  LineTooLongError,
  NoGreetingError,
  ProtocolError,
  QmpError,
  StateError,
  TimeoutError,
} from './errors';
import { excerpt, jsonText } from './framing';
import { classifyMessage, type QmpEvent, type QmpGreeting, type QmpReply } from './messages';
import {
  Batch,
  type BatchEntry,
  commandError,
  PingEntry,
  type BatchResult,
  type EntryOwner,
  type Pending,
  type QmpTimers,
} from './pending';

export type { BatchResult, QmpTimers };

export interface QmpLogger {
  debug(message: string, meta?: Record<string, unknown>): void;
  /** What happened as planned (a connection closed by this side, or after QEMU's SHUTDOWN event). */
  info?(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
}

const realTimers: QmpTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface QmpClientOptions {
  /** Default per-command timeout; 0 means none. Default 5000 ms. */
  timeoutMs?: number;
  /** How long to wait for the greeting after connecting. Default: timeoutMs. */
  greetingTimeoutMs?: number;
  /** Default: timeoutMs. */
  connectTimeoutMs?: number;
  /** Longest accepted line. Default 1 MiB. */
  maxLineBytes?: number;
  /** Commands in flight at once before execute() fails with BusyError. Default 64. */
  maxPending?: number;
  /** Enable out-of-band execution when the server offers it. Default false. */
  oob?: boolean;
  /** Events kept until the first 'event' listener is attached (oldest dropped beyond). Default 256. */
  maxQueuedEvents?: number;
  /** Output bytes allowed to wait for a server that does not read. Default 16 MiB. */
  maxWriteBufferBytes?: number;
  /** Aborts connect() (not later commands). */
  signal?: AbortSignal;
  logger?: QmpLogger;
  /** Default: the real ones. The connect timeout always runs on real time. */
  timers?: QmpTimers;
  /**
   * Called for every command that got its reply (a return or an error), with the seconds from
   * sending it to the reply; not for one that timed out, was aborted or lost with the connection.
   */
  onReply?: (command: string, seconds: number) => void;
}

export interface ExecuteOptions {
  /** Overrides the client's timeoutMs for this command; 0 means none. */
  timeoutMs?: number;
  /** Send as exec-oob; needs the 'oob' capability negotiated. */
  oob?: boolean;
  signal?: AbortSignal;
}

/** One command of executeAll: its name and arguments. */
export type BatchCommand = readonly [name: string, args?: Record<string, unknown>];

/** A reply and the exact line it arrived as (the line still carries this client's id, `id`). */
export interface RawReply {
  reply: QmpReply;
  text: string;
  id: string;
}

/** The one place a command object is built: `{ execute | exec-oob: name, arguments? }`. */
function commandObject(name: string, args: Record<string, unknown> | undefined, oob: boolean): Record<string, unknown> {
  const msg: Record<string, unknown> = { [oob ? 'exec-oob' : 'execute']: name };
  if (args !== undefined) msg.arguments = args;
  return msg;
}

export const ID_PREFIX = '__physbits#';
const MAX_ABANDONED_IDS = 1024;

type Phase = 'greeting' | 'negotiating' | 'ready' | 'closed';

const silent: QmpLogger = { debug: () => undefined, warn: () => undefined };

/** QmpClient's events and their arguments (`newListener` is Node's own). */
export interface QmpClientEvents {
  event: [ev: QmpEvent, text: string];
  close: [err?: QmpError];
  newListener: [event: string | symbol];
}

export class QmpClient extends EventEmitter<QmpClientEvents> {
  readonly address: string;
  private readonly conn: LineConnection;
  private readonly pending = new Map<string, Pending>();
  private readonly abandoned = new Set<string>();
  private readonly timeoutMs: number;
  private readonly onReply: ((command: string, seconds: number) => void) | undefined;
  private readonly maxPending: number;
  private readonly maxQueuedEvents: number;
  private readonly logger: QmpLogger;
  private seq = 0;
  private phase: Phase = 'greeting';
  private greetingMsg: QmpGreeting | null = null;
  private negotiated: string[] = [];
  private backlog: Array<[QmpEvent, string]> | null = [];
  private handshakeDone: ((err?: QmpError) => void) | null = null;
  private eventsDropped = 0;
  private readonly wantOob: boolean;
  private readonly timers: QmpTimers;
  /** What an executeAll batch or the ping needs of this client. */
  private readonly entryOwner: EntryOwner;
  /** The one heartbeat entry of this client, made at its first ping. */
  private pingEntry: PingEntry<QmpClient> | null = null;

  private constructor(address: string, opts: QmpClientOptions) {
    super();
    this.address = address;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.onReply = opts.onReply;
    this.maxPending = opts.maxPending ?? 64;
    this.maxQueuedEvents = opts.maxQueuedEvents ?? 256;
    this.logger = opts.logger ?? silent;
    this.wantOob = opts.oob ?? false;
    this.timers = opts.timers ?? realTimers;
    const onReply = this.onReply;
    this.entryOwner = {
      address,
      timers: this.timers,
      replied: onReply && ((command, sentAt) => onReply(command, (performance.now() - sentAt) / 1000)),
      forget: (id) => void this.pending.delete(id),
      abandon: (id) => this.abandon(id),
    };
    this.conn = new LineConnection({
      maxLineBytes: opts.maxLineBytes,
      maxWriteBufferBytes: opts.maxWriteBufferBytes,
      label: address,
    });
    this.conn.on('message', (value, text) => this.onMessage(value, text));
    this.conn.on('close', (err) => this.onConnClose(err));
    this.on('newListener', (event) => {
      if (event === 'event' && this.backlog) queueMicrotask(() => this.flushBacklog());
    });
  }

  /**
   * Connects to `address` (a socket path, 'unix:/path', 'tcp:host:port' or 'host:port'), reads the
   * greeting and negotiates capabilities; resolves once commands may be sent.
   */
  static async connect(address: string, opts: QmpClientOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(address, opts);
    await client.handshake(opts);
    return client;
  }

  /** The server's greeting. */
  get greeting(): QmpGreeting {
    if (!this.greetingMsg) throw new StateError(`${this.address}: no greeting yet`);
    return this.greetingMsg;
  }

  /** The capabilities enabled by negotiation. */
  get capabilities(): string[] {
    return [...this.negotiated];
  }

  get state(): RunState {
    return this.conn.state;
  }

  /** Commands sent and not yet answered. */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** Events discarded because no 'event' listener took them and the backlog was full. */
  get droppedEvents(): number {
    return this.eventsDropped;
  }

  /** Runs a command: resolves with its 'return' value, or rejects with CommandError for an error reply. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: ExecuteOptions = {}): Promise<T> {
    return this.request<T>(commandObject(command, args, !!opts.oob), command, opts, true);
  }

  /**
   * Sends `commands` together (one write) and resolves, once each has its reply or has timed out,
   * with every command's outcome in order: its reply, return or error as QEMU sent it, or the
   * QmpError that kept it from one (TimeoutError after `timeoutMs` from sending, ClosedError,
   * BusyError when they would pass maxPending). Never rejects. A command costs an entry in the
   * pending table and no promise, timer or error object of its own: for reads of many commands
   * whose failures are expected (properties an older QEMU lacks).
   */
  executeAll(commands: readonly BatchCommand[], opts: { timeoutMs?: number } = {}): Promise<BatchResult[]> {
    const results = new Array<BatchResult>(commands.length);
    const failAll = (err: QmpError): Promise<BatchResult[]> => Promise.resolve(results.fill(err));
    if (commands.length === 0) return Promise.resolve(results);
    if (this.phase !== 'ready' || this.conn.state !== 'running')
      return failAll(new ClosedError(`${this.address}: ${commands[0][0]}: not connected`));
    if (this.pending.size + commands.length > this.maxPending) {
      const err = new BusyError(this.maxPending);
      err.message = `${this.address}: ${commands.length} commands: ${err.message}`;
      return failAll(err);
    }
    return new Promise<BatchResult[]>((resolve) => {
      const batch = new Batch(this.entryOwner, results, resolve);
      const lines: string[] = [];
      const entries: BatchEntry[] = [];
      for (const [name, args] of commands) {
        const id = this.nextId();
        const entry = batch.add(name, id);
        try {
          const msg = commandObject(name, args, false);
          msg.id = id;
          lines.push(jsonText(msg));
        } catch (err) {
          entry.settle(new ProtocolError(`${this.address}: ${name}: the command has no JSON form`, { cause: err }));
          continue;
        }
        this.pending.set(id, entry);
        entries.push(entry);
      }
      // One write for the whole batch.
      if (lines.length > 0 && !this.conn.sendLines(lines))
        for (const entry of entries) entry.settle(new ClosedError(`${this.address}: ${entry.command}: not connected`));
      const ms = opts.timeoutMs ?? this.timeoutMs;
      if (batch.waiting > 0 && ms > 0 && Number.isFinite(ms)) batch.expireIn(ms);
    });
  }

  /**
   * The heartbeat: `query-status`, answered to `done` with its return value or the QmpError that
   * kept it from one (TimeoutError after `timeoutMs`, ClosedError, CommandError). One at a time; no
   * promise or closure is made per ping (the client keeps one entry for it), since a daemon holding
   * a thousand VMs pings two hundred times a second. `done` may be called before ping() returns
   * when the command cannot be sent.
   */
  ping(timeoutMs: number, done: PingDone): void {
    const fail = (err: QmpError): void => done(err, this);
    if (this.phase !== 'ready' || this.conn.state !== 'running')
      return fail(new ClosedError(`${this.address}: query-status: not connected`));
    const entry = (this.pingEntry ??= new PingEntry<QmpClient>(this, this.entryOwner));
    if (entry.busy) return fail(new StateError(`${this.address}: query-status: a ping is already pending`));
    if (this.pending.size >= this.maxPending) {
      const err = new BusyError(this.maxPending);
      err.message = `${this.address}: query-status: ${err.message}`;
      return fail(err);
    }
    const id = this.nextId();
    entry.start(id, done, timeoutMs);
    this.pending.set(id, entry);
    if (!this.conn.sendLine(`{"execute":"query-status","id":"${id}"}`, false))
      entry.settle(new ClosedError(`${this.address}: query-status: not connected`));
  }

  /** The next command id of this client. */
  private nextId(): string {
    return `${ID_PREFIX}${String(++this.seq).padStart(5, '0')}`;
  }

  /**
   * Sends a command this side has already checked (the proxy's): `name`, its arguments, exec-oob or
   * not; resolves with the whole reply (return or error) and its exact text, for relaying it.
   */
  forwardCommand(
    name: string,
    args: Record<string, unknown> | undefined,
    oob: boolean,
    opts: Omit<ExecuteOptions, 'oob'> = {},
  ): Promise<RawReply> {
    return this.request<RawReply>(commandObject(name, args, oob), name, oob ? { ...opts, oob } : opts, false);
  }

  /**
   * Sends a command line a server side has already checked (the proxy's: a JSON object with at
   * least one member, that QEMU reads as it was checked) as it is, but for its top-level id, which
   * becomes this client's own: `idSpan` is where the sender's id value is in `text`, or undefined
   * when it sent none (this client's id is then put first). `done` gets the reply and its exact text,
   * or why there is none, once (it may be called before this returns); no promise is made.
   */
  forwardLine(
    text: string,
    idSpan: { start: number; end: number } | undefined,
    command: string,
    oob: boolean,
    opts: { timeoutMs?: number },
    done: (result: RawReply | QmpError) => void,
  ): void {
    if (this.phase === 'closed' || this.phase === 'greeting' || this.conn.state !== 'running')
      return done(new ClosedError(`${this.address}: ${command}: not connected`));
    if (oob && !this.negotiated.includes('oob'))
      return done(new StateError(`${this.address}: ${command}: out-of-band execution was not negotiated`));
    if (this.pending.size >= this.maxPending) {
      const err = new BusyError(this.maxPending);
      err.message = `${this.address}: ${command}: ${err.message}`;
      return done(err);
    }
    const id = this.nextId();
    let line: string;
    if (idSpan) line = `${text.slice(0, idSpan.start)}"${id}"${text.slice(idSpan.end)}`;
    else {
      const open = text.indexOf('{') + 1;
      line = `${text.slice(0, open)}"id":"${id}",${text.slice(open)}`;
    }
    const sent = this.onReply ? performance.now() : 0;
    const entry: Pending = {
      command,
      settle: (result, replyText, replyId) => {
        if (timer !== undefined) this.timers.clearTimeout(timer);
        this.pending.delete(id);
        if (result instanceof QmpError) return done(result);
        this.onReply?.(command, (performance.now() - sent) / 1000);
        done({ reply: result, text: replyText!, id: replyId! });
      },
    };
    // Read by settle, which runs only after this line (a reply, the timeout, or sendLine below).
    const timer = this.track(id, entry, opts.timeoutMs);
    if (!this.conn.sendLine(line)) entry.settle(new ClosedError(`${this.address}: ${command}: not connected`));
  }

  /** Closes the connection; pending commands reject with ClosedError and 'close' is emitted without error. */
  async close(): Promise<void> {
    await this.conn.close();
  }

  private handshake(opts: QmpClientOptions): Promise<void> {
    const greetingMs = opts.greetingTimeoutMs ?? this.timeoutMs;
    return new Promise<void>((resolve, reject) => {
      let timer: unknown;
      const onAbort = (): void =>
        finish(new AbortedError(`${this.address}: connect aborted`, { cause: opts.signal?.reason }));
      const finish = (err?: QmpError): void => {
        if (!this.handshakeDone) return;
        this.handshakeDone = null;
        if (timer !== undefined) this.timers.clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        if (!err) return resolve();
        this.phase = 'closed';
        void this.conn.close(err);
        reject(err);
      };
      this.handshakeDone = finish;
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      let address;
      try {
        address = parseAddress(this.address);
      } catch (err) {
        return finish(err as QmpError);
      }
      this.conn
        .connect(address, { connectTimeoutMs: opts.connectTimeoutMs ?? this.timeoutMs, signal: opts.signal })
        .then(
          () => {
            if (!this.handshakeDone) return void this.conn.close();
            if (greetingMs > 0) {
              timer = this.timers.setTimeout(() => {
                finish(
                  new NoGreetingError(
                    `${this.address}: connected, but no QMP greeting within ${greetingMs} ms (QEMU serves one client per QMP socket: another client may hold it)`,
                  ),
                );
              }, greetingMs);
            }
          },
          (err: QmpError) => finish(err),
        );
    });
  }

  private async negotiate(oob: boolean): Promise<void> {
    const offered = this.greetingMsg!.QMP.capabilities;
    const enable = oob && offered.includes('oob') ? ['oob'] : [];
    let reply: QmpReply;
    try {
      ({ reply } = await this.request<RawReply>(
        commandObject('qmp_capabilities', enable.length ? { enable } : undefined, false),
        'qmp_capabilities',
        {},
        false,
      ));
    } catch (err) {
      return this.handshakeDone?.(err as QmpError);
    }
    if ('error' in reply) {
      return this.handshakeDone?.(
        new ProtocolError(
          `${this.address}: capabilities negotiation failed: ${reply.error.class}: ${reply.error.desc}`,
        ),
      );
    }
    this.negotiated = enable;
    this.phase = 'ready';
    this.handshakeDone?.();
  }

  /**
   * Sends one command. `unwrap`: resolve with its return value and reject an error reply as
   * CommandError (execute); else resolve with the whole reply and its text (forwardCommand).
   */
  private request<R>(msg: Record<string, unknown>, command: string, opts: ExecuteOptions, unwrap: boolean): Promise<R> {
    if (this.phase === 'closed' || this.phase === 'greeting' || this.conn.state !== 'running') {
      return Promise.reject(new ClosedError(`${this.address}: ${command}: not connected`));
    }
    if (opts.oob && !this.negotiated.includes('oob')) {
      return Promise.reject(new StateError(`${this.address}: ${command}: out-of-band execution was not negotiated`));
    }
    if (this.pending.size >= this.maxPending) {
      const err = new BusyError(this.maxPending);
      err.message = `${this.address}: ${command}: ${err.message}`;
      return Promise.reject(err);
    }
    if (opts.signal?.aborted)
      return Promise.reject(new AbortedError(`${this.address}: ${command}: aborted`, { cause: opts.signal.reason }));
    const id = this.nextId();
    let line: string;
    try {
      // commandObject() made `msg` for this request alone: it takes this client's id.
      msg.id = id;
      line = jsonText(msg);
    } catch (err) {
      return Promise.reject(
        new ProtocolError(`${this.address}: ${command}: the command has no JSON form: ${(err as Error).message}`, {
          cause: err,
        }),
      );
    }
    return new Promise<R>((resolve, reject) => {
      const signal = opts.signal;
      const onAbort =
        signal &&
        ((): void => {
          this.abandon(id);
          entry.settle(new AbortedError(`${this.address}: ${command}: aborted`, { cause: signal.reason }));
        });
      const sent = this.onReply ? performance.now() : 0;
      const entry: Pending = {
        command,
        settle: (result, text, replyId) => {
          if (timer !== undefined) this.timers.clearTimeout(timer);
          if (onAbort) signal.removeEventListener('abort', onAbort);
          this.pending.delete(id);
          if (result instanceof QmpError) return reject(result);
          this.onReply?.(command, (performance.now() - sent) / 1000);
          if (!unwrap) resolve({ reply: result, text: text!, id: replyId! } as R);
          else if ('error' in result) reject(commandError(this.address, command, result.error));
          else resolve(result.return as R);
        },
      };
      // Read by settle, which runs only after this line (a reply, the timeout, an abort, or sendLine).
      const timer = this.track(id, entry, opts.timeoutMs);
      if (onAbort) signal.addEventListener('abort', onAbort, { once: true });
      if (!this.conn.sendLine(line)) entry.settle(new ClosedError(`${this.address}: ${command}: not connected`));
    });
  }

  /**
   * Holds `entry` as the pending command `id` and arms its timeout (timeoutMs, else the client's);
   * returns the timer, which the entry's settle clears.
   */
  private track(id: string, entry: Pending, timeoutMs: number | undefined): unknown {
    this.pending.set(id, entry);
    const ms = timeoutMs ?? this.timeoutMs;
    if (!(ms > 0 && Number.isFinite(ms))) return undefined;
    return this.timers.setTimeout(() => {
      this.abandon(id);
      entry.settle(new TimeoutError(`${this.address}: ${entry.command}: no reply within ${ms} ms`));
    }, ms);
  }

  /** Forgets a pending id whose caller gave up; its late reply is then dropped quietly. */
  private abandon(id: string): void {
    this.pending.delete(id);
    this.abandoned.add(id);
    if (this.abandoned.size > MAX_ABANDONED_IDS) this.abandoned.delete(this.abandoned.values().next().value as string);
  }

  private onMessage(value: unknown, text: string): void {
    const m = classifyMessage(value);
    if (this.phase === 'greeting') {
      if (m.kind !== 'greeting') {
        return this.fatal(
          new ProtocolError(`${this.address}: not a QMP server: expected a greeting, got ${excerpt(text)}`),
        );
      }
      this.greetingMsg = m.greeting;
      this.phase = 'negotiating';
      void this.negotiate(this.wantOob);
      return;
    }
    if (m.kind === 'event') return this.onEvent(m.event, text);
    if (m.kind === 'reply') {
      if (!m.hasId) {
        return this.fatal(
          new ProtocolError(
            `${this.address}: a reply without an id (the server could not parse a command): ${excerpt(text)}`,
          ),
        );
      }
      const entry = typeof m.id === 'string' ? this.pending.get(m.id) : undefined;
      if (entry) return entry.settle(m.reply, text, m.id as string);
      if (typeof m.id === 'string' && this.abandoned.delete(m.id)) {
        this.logger.debug('late QMP reply dropped', { socket: this.address, id: m.id });
      } else {
        this.logger.warn('QMP reply with an unknown id dropped', {
          socket: this.address,
          id: excerpt(JSON.stringify(m.id) ?? ''),
        });
      }
      return;
    }
    this.fatal(
      new ProtocolError(
        `${this.address}: unexpected message: ${m.kind === 'invalid' ? m.reason + ': ' : ''}${excerpt(text)}`,
      ),
    );
  }

  private onEvent(ev: QmpEvent, text: string): void {
    if (!this.backlog) {
      this.emit('event', ev, text);
      return;
    }
    this.backlog.push([ev, text]);
    if (this.backlog.length > this.maxQueuedEvents) {
      this.backlog.shift();
      this.eventsDropped++;
    }
    if (this.listenerCount('event') > 0) queueMicrotask(() => this.flushBacklog());
  }

  private flushBacklog(): void {
    const backlog = this.backlog;
    if (!backlog || this.listenerCount('event') === 0) return;
    this.backlog = null;
    for (const [ev, text] of backlog) this.emit('event', ev, text);
  }

  private fatal(err: QmpError): void {
    void this.conn.close(err);
  }

  private onConnClose(err?: QmpError): void {
    const handshaking = this.handshakeDone;
    const wasPhase = this.phase;
    this.phase = 'closed';
    for (const entry of [...this.pending.values()]) {
      const why = err ? `: ${err.message}` : '';
      entry.settle(
        new ClosedError(`${this.address}: connection closed while ${entry.command} was pending${why}`, { cause: err }),
      );
    }
    if (handshaking) {
      const passThrough =
        err instanceof ProtocolError ||
        err instanceof LineTooLongError ||
        err instanceof NoGreetingError ||
        err instanceof AbortedError;
      if (passThrough) return handshaking(err);
      const when = wasPhase === 'greeting' ? 'before its QMP greeting' : 'during capabilities negotiation';
      return handshaking(new ClosedError(`${this.address}: the connection closed ${when}`, { cause: err }));
    }
    this.emit('close', err);
  }
}

/** Where a ping's outcome goes: the status query's return value, or why there is none. */
export type PingDone = (result: unknown, client: QmpClient) => void;
