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
  CommandError,
  LineTooLongError,
  NoGreetingError,
  ProtocolError,
  QmpError,
  StateError,
  TimeoutError,
} from './errors';
import { excerpt, jsonText } from './framing';
import { classifyMessage, type QmpEvent, type QmpGreeting, type QmpReply } from './messages';

export interface QmpLogger {
  debug(message: string, meta?: Record<string, unknown>): void;
  /** What happened as planned (a connection closed by this side, or after QEMU's SHUTDOWN event). */
  info?(message: string, meta?: Record<string, unknown>): void;
  warn(message: string, meta?: Record<string, unknown>): void;
}

/** The timers behind command, greeting and event-wait timeouts (an agent Timers fits). */
export interface QmpTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
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

interface Pending {
  command: string;
  settle(result: RawReply | QmpError): void;
}

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
  async execute<T = unknown>(command: string, args?: Record<string, unknown>, opts: ExecuteOptions = {}): Promise<T> {
    const { reply } = await this.request(commandObject(command, args, !!opts.oob), command, opts);
    if ('error' in reply) {
      const err = new CommandError(command, reply.error.class, reply.error.desc);
      err.message = `${this.address}: ${err.message}`;
      throw err;
    }
    return reply.return as T;
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
    return this.request(commandObject(name, args, oob), name, oob ? { ...opts, oob } : opts);
  }

  /**
   * Sends a command line a server side has already checked (the proxy's: a JSON object with at
   * least one member, that QEMU reads as it was checked) as it is, but for its top-level id, which
   * becomes this client's own: `idSpan` is where the sender's id value is in `text`, or undefined
   * when it sent none (this client's id is then put first). `done` gets the reply and its exact text,
   * or why there is none, once; no promise is made.
   */
  forwardLine(
    text: string,
    idSpan: { start: number; end: number } | undefined,
    name: string,
    oob: boolean,
    opts: Omit<ExecuteOptions, 'oob'>,
    done: (result: RawReply | QmpError) => void,
  ): void {
    const line = (id: string): string => {
      if (idSpan) return `${text.slice(0, idSpan.start)}"${id}"${text.slice(idSpan.end)}`;
      const open = text.indexOf('{') + 1;
      return `${text.slice(0, open)}"id":"${id}",${text.slice(open)}`;
    };
    this.send(name, oob ? { ...opts, oob } : opts, line, done);
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
      ({ reply } = await this.request(
        commandObject('qmp_capabilities', enable.length ? { enable } : undefined, false),
        'qmp_capabilities',
        {},
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

  private request(msg: Record<string, unknown>, command: string, opts: ExecuteOptions): Promise<RawReply> {
    return new Promise<RawReply>((resolve, reject) => {
      this.send(
        command,
        opts,
        (id) => {
          // commandObject() made `msg` for this request alone: it takes this client's id.
          msg.id = id;
          return jsonText(msg);
        },
        (result) => (result instanceof QmpError ? reject(result) : resolve(result)),
      );
    });
  }

  /**
   * Sends one command under a new id of this client, the line made by `line(id)`; `settle` is
   * called once, with the reply or why there is none (it may be called before send returns).
   */
  private send(
    command: string,
    opts: ExecuteOptions,
    line: (id: string) => string,
    settle: (result: RawReply | QmpError) => void,
  ): void {
    if (this.phase === 'closed' || this.phase === 'greeting' || this.conn.state !== 'running')
      return settle(new ClosedError(`${this.address}: ${command}: not connected`));
    if (opts.oob && !this.negotiated.includes('oob'))
      return settle(new StateError(`${this.address}: ${command}: out-of-band execution was not negotiated`));
    if (this.pending.size >= this.maxPending) {
      const err = new BusyError(this.maxPending);
      err.message = `${this.address}: ${command}: ${err.message}`;
      return settle(err);
    }
    if (opts.signal?.aborted)
      return settle(new AbortedError(`${this.address}: ${command}: aborted`, { cause: opts.signal.reason }));
    const id = `${ID_PREFIX}${String(++this.seq).padStart(5, '0')}`;
    let text: string;
    try {
      text = line(id);
    } catch (err) {
      return settle(
        new ProtocolError(`${this.address}: ${command}: the command has no JSON form: ${(err as Error).message}`, {
          cause: err,
        }),
      );
    }
    let timer: unknown;
    const onAbort = (): void => {
      this.abandon(id);
      entry.settle(new AbortedError(`${this.address}: ${command}: aborted`, { cause: opts.signal?.reason }));
    };
    const sent = this.onReply ? performance.now() : 0;
    const entry: Pending = {
      command,
      settle: (result) => {
        if (timer !== undefined) this.timers.clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
        if (!(result instanceof QmpError)) this.onReply?.(command, (performance.now() - sent) / 1000);
        settle(result);
      },
    };
    this.pending.set(id, entry);
    const ms = opts.timeoutMs ?? this.timeoutMs;
    if (ms > 0 && Number.isFinite(ms)) {
      timer = this.timers.setTimeout(() => {
        this.abandon(id);
        entry.settle(new TimeoutError(`${this.address}: ${command}: no reply within ${ms} ms`));
      }, ms);
    }
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (!this.conn.sendLine(text)) entry.settle(new ClosedError(`${this.address}: ${command}: not connected`));
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
      if (entry) return entry.settle({ reply: m.reply, text, id: m.id as string });
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
