/**
 * A multiplexing QMP proxy: one upstream QmpClient (QEMU serves a single client per QMP socket),
 * many downstream clients, each served by its own QmpServerSession with its own greeting (the
 * upstream's version, and 'oob' only when the upstream negotiated it) and its own negotiation.
 *
 * - Commands: checked as QEMU checks them (parsed once). A command the user's `inspects` predicate
 *   does not name (by the name QEMU will read, escapes decoded) goes on as the client's own line
 *   with only its id replaced by the upstream client's, in the same turn, without the interceptor.
 *   An inspected one (or one whose name is spelt with an escape) is put to the interceptor, then
 *   forwarded as the object that was checked (re-serialized, so what the interceptor saw is exactly
 *   what QEMU receives) under the upstream client's own id. Either way the reply line goes back
 *   with the client's id spliced in as the client wrote it (or removed when it sent none); every
 *   other byte of the reply is QEMU's.
 * - One client's in-band commands are answered one at a time and in order, as QEMU answers them.
 * - Events: every upstream event line goes to every negotiated client.
 * - getfd / add-fd: file descriptors ride SCM_RIGHTS on the socket and cannot cross the proxy;
 *   they are answered here with a GenericError naming the upstream socket.
 * - Bounds: maxClients; per client, queued output (a client that does not read is dropped, the
 *   others go on) and queued commands (reading from it pauses).
 * - When the upstream closes, every client is disconnected and the proxy closes; the owner makes a
 *   new one when the VM is back.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { QmpClient, QmpLogger } from './client';
import { ClosedError, QmpError } from './errors';
import { ANSWER_LATER, QmpServerSession, type CommandOutcome, type ServerCommand } from './server';
import { listenUnixSocket, type UnixListenHandle, type UnixListenOptions } from './unix-server';

export interface ProxyCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  oob: boolean;
}

export interface ProxyClient {
  id: number;
}

export type InterceptResult = { action: 'forward' } | { action: 'reply-error'; errorClass: string; desc: string };

export type Interceptor = (cmd: ProxyCommand, client: ProxyClient) => Promise<InterceptResult> | InterceptResult;

export interface QmpProxyOptions {
  upstream: QmpClient;
  interceptor?: Interceptor;
  /**
   * The commands the interceptor looks at, by name (a cheap test: it runs for every command). The
   * others pass without it. Default: every command, when there is an interceptor.
   */
  inspects?: (name: string) => boolean;
  /** Clients served at once; more are closed on arrival. Default 64. */
  maxClients?: number;
  /** Output bytes allowed to wait for one client before it is dropped. Default 4 MiB. */
  clientQueueBytes?: number;
  maxLineBytes?: number;
  /** In-band commands of one client waiting before reading from it pauses. Default 8. */
  maxQueuedCommands?: number;
  /** Upstream timeout for a forwarded command; 0 (default) waits as long as QEMU takes. */
  commandTimeoutMs?: number;
  /** Names the proxy in messages and logs (e.g. the VM). Default: the upstream address. */
  label?: string;
  /** A client that has not negotiated within this long is dropped (frees its slot). Default 10 s; 0 never. */
  negotiationTimeoutMs?: number;
  logger?: QmpLogger;
}

export interface ProxyCounters {
  /** Clients connected now. */
  clients: number;
  accepted: number;
  /** Turned away at maxClients. */
  rejected: number;
  /** Cut off by the proxy (did not read, oversized line). */
  dropped: number;
  forwarded: number;
  /** Answered with an error here (interceptor refusals, getfd/add-fd). */
  refused: number;
  /** Event lines delivered (one per client). */
  events: number;
}

export interface RefusalInfo {
  client: number;
  command: string;
  errorClass: string;
  desc: string;
}

export const FD_COMMANDS = new Set(['getfd', 'add-fd']);

/** QmpProxy's events and their arguments. */
export interface QmpProxyEvents {
  'client-connected': [info: { id: number }];
  'client-disconnected': [info: { id: number }];
  'client-dropped': [info: { id: number; error: QmpError }];
  'client-rejected': [info: { reason: string }];
  refused: [info: RefusalInfo];
  'upstream-closed': [err?: QmpError];
  closed: [];
}

export class QmpProxy extends EventEmitter<QmpProxyEvents> {
  readonly upstream: QmpClient;
  readonly label: string;
  private readonly opts: QmpProxyOptions;
  private readonly inspects: ((name: string) => boolean) | undefined;
  private readonly sessions = new Map<number, QmpServerSession>();
  private readonly stats: ProxyCounters = {
    clients: 0,
    accepted: 0,
    rejected: 0,
    dropped: 0,
    forwarded: 0,
    refused: 0,
    events: 0,
  };
  private nextClientId = 1;
  private shut: Promise<void> | null = null;
  private listener: { server: net.Server; handle: UnixListenHandle } | null = null;
  /** QEMU announced its end (a SHUTDOWN event): the upstream closing after it is expected. */
  private upstreamShutdown: string | null = null;
  private readonly onEvent = (ev: unknown, text: string): void => {
    if ((ev as { event?: unknown } | null)?.event === 'SHUTDOWN') {
      const reason = (ev as { data?: { reason?: unknown } }).data?.reason;
      this.upstreamShutdown = typeof reason === 'string' ? reason : 'shutdown';
    }
    for (const s of this.sessions.values()) if (s.sendEvent(text)) this.stats.events++;
  };
  private readonly onUpstreamClose = (err?: QmpError): void => {
    // Closed by this side (err undefined: the daemon stopping or letting the VM go; its owner says so),
    // or by QEMU after its SHUTDOWN event (INFO): planned. Anything else is a lost connection.
    if (!err) this.opts.logger?.debug('QMP proxy closed with its upstream connection', { proxy: this.label });
    else if (this.upstreamShutdown !== null)
      this.opts.logger?.info?.('QMP proxy closed: QEMU shut down', {
        proxy: this.label,
        reason: this.upstreamShutdown,
      });
    else this.opts.logger?.warn('QMP proxy upstream closed', { proxy: this.label, error: err.message });
    this.emit('upstream-closed', err);
    void this.close();
  };

  constructor(opts: QmpProxyOptions) {
    super();
    this.opts = opts;
    this.upstream = opts.upstream;
    this.inspects = opts.inspects;
    this.label = opts.label ?? opts.upstream.address;
    this.upstream.on('event', this.onEvent);
    this.upstream.on('close', this.onUpstreamClose);
    if (this.upstream.state !== 'running')
      queueMicrotask(() => this.onUpstreamClose(new ClosedError(`${this.label}: upstream not connected`)));
  }

  get counters(): ProxyCounters {
    return { ...this.stats, clients: this.sessions.size };
  }

  get closed(): boolean {
    return this.shut !== null;
  }

  /** The socket path clients connect to, when listen() was used. */
  get socketPath(): string | null {
    return this.listener?.handle.path ?? null;
  }

  /** Listens on a UNIX socket path (created atomically with `opts.mode`) and serves every connection. */
  async listen(path: string, opts: UnixListenOptions): Promise<void> {
    if (this.shut || this.listener)
      throw new ClosedError(`${this.label}: proxy already ${this.shut ? 'closed' : 'listening'}`);
    // allowHalfOpen: a client that shuts down its sending side still gets every reply (`printf … | socat`).
    const server = net.createServer({ allowHalfOpen: true }, (socket) => this.handleConnection(socket));
    server.on('error', (err) =>
      this.opts.logger?.warn('QMP proxy listener error', { proxy: this.label, error: err.message }),
    );
    const handle = await listenUnixSocket(server, path, opts);
    if (this.shut) {
      await handle.close();
      throw new ClosedError(`${this.label}: proxy closed while it started listening`);
    }
    this.listener = { server, handle };
  }

  /** Serves one accepted connection. */
  handleConnection(socket: net.Socket): void {
    socket.on('error', () => undefined);
    if (this.shut || this.upstream.state !== 'running') {
      socket.destroy();
      return;
    }
    const max = this.opts.maxClients ?? 64;
    if (this.sessions.size >= max) {
      this.stats.rejected++;
      socket.destroy();
      const reason = `${this.label}: ${max} clients already connected`;
      this.opts.logger?.warn('QMP proxy client rejected', { proxy: this.label, reason });
      this.emit('client-rejected', { reason });
      return;
    }
    const id = this.nextClientId++;
    const session = new QmpServerSession(socket, {
      version: this.upstream.greeting.QMP.version,
      capabilities: this.upstream.capabilities.includes('oob') ? ['oob'] : [],
      handler: (cmd, _session, answer) => this.onCommand(id, cmd, answer),
      maxLineBytes: this.opts.maxLineBytes,
      maxQueueBytes: this.opts.clientQueueBytes ?? 4 * 1024 * 1024,
      maxQueuedCommands: this.opts.maxQueuedCommands,
      negotiationTimeoutMs: this.opts.negotiationTimeoutMs ?? 10_000,
      label: `${this.label} client #${id}`,
      logger: this.opts.logger,
    });
    this.sessions.set(id, session);
    this.stats.accepted++;
    session.on('close', (err) => {
      this.sessions.delete(id);
      if (err && !(err instanceof ClosedError)) {
        this.stats.dropped++;
        this.opts.logger?.warn('QMP proxy client dropped', {
          proxy: this.label,
          client: id,
          code: err.code,
          error: err.message,
        });
        this.emit('client-dropped', { id, error: err });
      } else {
        this.emit('client-disconnected', { id });
      }
    });
    this.emit('client-connected', { id });
  }

  /** Stops listening and disconnects every client. The upstream client stays open: it is the owner's. */
  close(): Promise<void> {
    this.shut ??= (async () => {
      this.upstream.off('event', this.onEvent);
      this.upstream.off('close', this.onUpstreamClose);
      const listener = this.listener;
      this.listener = null;
      await Promise.all([listener?.handle.close(), ...[...this.sessions.values()].map((s) => s.close())]);
      this.emit('closed');
    })();
    return this.shut;
  }

  /**
   * One client command: refused here, passed on as its own line, or put to the interceptor. A
   * verdict the interceptor gives at once is acted on in the same turn, without a promise between.
   */
  private onCommand(
    client: number,
    cmd: ServerCommand,
    answer: (outcome: CommandOutcome) => void,
  ): CommandOutcome | Promise<CommandOutcome> | typeof ANSWER_LATER {
    if (FD_COMMANDS.has(cmd.name)) {
      return this.refuse(
        client,
        cmd.name,
        'GenericError',
        `${cmd.name} cannot pass through this QMP proxy (file descriptors do not cross it); send it on the upstream socket ${this.upstream.address}`,
      );
    }
    const interceptor = this.opts.interceptor;
    // When in doubt (a name spelt with an escape), the command is re-serialized as it was checked.
    if (!interceptor || (!cmd.nameEscaped && this.inspects?.(cmd.name) === false)) return this.pass(cmd, answer);
    let verdict: InterceptResult | Promise<InterceptResult>;
    try {
      verdict = interceptor({ execute: cmd.name, arguments: cmd.arguments, oob: cmd.oob }, { id: client });
    } catch (err) {
      return this.act(client, cmd, checkFailed(cmd, err));
    }
    if (verdict instanceof Promise)
      return verdict.then(
        (v) => this.act(client, cmd, v),
        (err) => this.act(client, cmd, checkFailed(cmd, err)),
      );
    return this.act(client, cmd, verdict);
  }

  /** The client's own line, its id replaced by the upstream client's; the reply comes through `answer`. */
  private pass(cmd: ServerCommand, answer: (outcome: CommandOutcome) => void): typeof ANSWER_LATER {
    this.stats.forwarded++;
    this.upstream.forwardLine(
      cmd.text,
      cmd.idSpan,
      cmd.name,
      cmd.oob,
      { timeoutMs: this.opts.commandTimeoutMs ?? 0 },
      (result) =>
        answer(
          result instanceof QmpError
            ? { error: { class: 'GenericError', desc: result.message } }
            : { replyText: result.text, replyId: result.id },
        ),
    );
    return ANSWER_LATER;
  }

  private act(client: number, cmd: ServerCommand, verdict: InterceptResult): CommandOutcome | Promise<CommandOutcome> {
    if (verdict?.action !== 'forward') {
      // Anything but an explicit 'forward' refuses: a broken interceptor must not let commands through.
      const v = verdict as { errorClass?: unknown; desc?: unknown } | undefined;
      const errorClass = typeof v?.errorClass === 'string' ? v.errorClass : 'GenericError';
      const desc = typeof v?.desc === 'string' ? v.desc : `${cmd.name} refused`;
      return this.refuse(client, cmd.name, errorClass, desc);
    }
    return this.forward(cmd);
  }

  /** The command as checked (name, arguments, oob), under the upstream client's own id. */
  private forward(cmd: ServerCommand): Promise<CommandOutcome> {
    this.stats.forwarded++;
    return this.upstream
      .forwardCommand(cmd.name, cmd.arguments, cmd.oob, { timeoutMs: this.opts.commandTimeoutMs ?? 0 })
      .then(
        ({ text, id }): CommandOutcome => ({ replyText: text, replyId: id }),
        (err: unknown): CommandOutcome => ({ error: { class: 'GenericError', desc: (err as Error).message } }),
      );
  }

  private refuse(client: number, command: string, errorClass: string, desc: string): CommandOutcome {
    this.stats.refused++;
    this.emit('refused', { client, command, errorClass, desc });
    return { error: { class: errorClass, desc } };
  }
}

function checkFailed(cmd: ServerCommand, err: unknown): InterceptResult {
  return {
    action: 'reply-error',
    errorClass: 'GenericError',
    desc: `${cmd.name} refused: its check failed: ${(err as Error)?.message ?? String(err)}`,
  };
}
