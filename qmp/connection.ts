/**
 * A line-JSON connection over a net.Socket, either side of the wire: `connect()` dials out, `accept()`
 * wraps a socket a server accepted. Modelled on qemu.qmp protocol.py's AsyncProtocol: an explicit run
 * state (idle → connecting → running → disconnecting → idle), 'message' for every decoded line and
 * 'close' once, with the reason.
 *
 * Output is bounded: when more than `maxWriteBufferBytes` already wait for the peer at the moment
 * another message is queued, the peer is not reading and is dropped with SlowPeerError.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { formatAddress, MAX_UNIX_PATH_BYTES, type QmpAddress } from './address';
import {
  AbortedError,
  ClosedError,
  ConnectError,
  LineTooLongError,
  ProtocolError,
  type QmpError,
  SlowPeerError,
  StateError,
} from './errors';
import { decodeLine, DEFAULT_MAX_LINE_BYTES, jsonText, LineFramer } from './framing';

export type RunState = 'idle' | 'connecting' | 'running' | 'disconnecting';

export const DEFAULT_MAX_WRITE_BUFFER_BYTES = 16 * 1024 * 1024;

export interface LineConnectionOptions {
  maxLineBytes?: number;
  /** Bytes allowed to wait for a peer that does not read before it is dropped. Default 16 MiB. */
  maxWriteBufferBytes?: number;
  /**
   * 'close' (default): an undecodable line ends the connection with ProtocolError.
   * 'report': it is emitted as 'invalid' and reading goes on (a server answers it, as QEMU does).
   */
  invalidLines?: 'close' | 'report';
  /** How a graceful close waits for the peer before the socket is destroyed. Default 2000 ms. */
  closeTimeoutMs?: number;
  /** Names the peer in every message; defaults to the address. */
  label?: string;
}

export interface ConnectOptions {
  connectTimeoutMs?: number;
  signal?: AbortSignal;
}

const ERRNO_REASONS: Record<string, string> = {
  ENOENT: 'no such socket',
  ECONNREFUSED: 'connection refused: nothing listens there (a stale socket, or QEMU has exited)',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTSOCK: 'not a socket',
  ENOTDIR: 'a component of the path is not a directory',
  ENAMETOOLONG: 'the socket path is too long',
  EAGAIN: "the listener's backlog is full",
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host name not found',
  EADDRNOTAVAIL: 'address not available',
};

/** Maps a socket error of a connection attempt to ConnectError naming the address. */
export function connectError(label: string, err: NodeJS.ErrnoException): ConnectError {
  const code = err.code ?? 'EUNKNOWN';
  const reason = ERRNO_REASONS[code] ?? err.message;
  return new ConnectError(`${label}: cannot connect: ${code} (${reason})`, { cause: err });
}

/** LineConnection's events and their arguments. */
export interface LineConnectionEvents {
  message: [value: unknown, text: string];
  invalid: [err: ProtocolError];
  state: [state: RunState];
  close: [err?: QmpError];
  end: [];
}

/**
 * The buffer every dialled-out connection reads into. Reads happen one at a time on this thread, and
 * the framer hands each complete line on (decoded at once) and copies any unterminated rest before
 * the read returns, so nothing keeps a view of it past one read.
 */
const READ_BUFFER_BYTES = 64 * 1024;
const sharedReadBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

export class LineConnection extends EventEmitter<LineConnectionEvents> {
  private runState: RunState = 'idle';
  private socket: net.Socket | null = null;
  private framer: LineFramer;
  private closing: Promise<void> | null = null;
  private closed: (() => void) | null = null;
  private closeTimer: NodeJS.Timeout | null = null;
  private localClose = false;
  private closeReason: QmpError | undefined;
  private socketError: NodeJS.ErrnoException | undefined;
  private abortConnect: ((err: QmpError) => void) | null = null;
  private readonly maxLineBytes: number;
  private readonly maxWriteBufferBytes: number;
  private readonly invalidLines: 'close' | 'report';
  private readonly closeTimeoutMs: number;
  label: string;

  constructor(opts: LineConnectionOptions = {}) {
    super();
    this.maxLineBytes = opts.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES;
    this.maxWriteBufferBytes = opts.maxWriteBufferBytes ?? DEFAULT_MAX_WRITE_BUFFER_BYTES;
    this.invalidLines = opts.invalidLines ?? 'close';
    this.closeTimeoutMs = opts.closeTimeoutMs ?? 2000;
    this.label = opts.label ?? 'QMP peer';
    this.framer = new LineFramer(this.maxLineBytes);
  }

  /** Wraps a socket that is already connected (the server side). The connection starts running. */
  static accept(socket: net.Socket, opts: LineConnectionOptions = {}): LineConnection {
    const conn = new LineConnection(opts);
    conn.attach(socket);
    return conn;
  }

  get state(): RunState {
    return this.runState;
  }

  /** Bytes queued for the peer and not yet handed to the kernel. */
  get writeBuffered(): number {
    return this.socket?.writableLength ?? 0;
  }

  async connect(address: QmpAddress, opts: ConnectOptions = {}): Promise<void> {
    if (this.runState !== 'idle') throw new StateError(`${this.label}: connect() while ${this.runState}`);
    if (this.label === 'QMP peer') this.label = formatAddress(address);
    const label = this.label;
    if (opts.signal?.aborted) throw new AbortedError(`${label}: connect aborted`, { cause: opts.signal.reason });
    if (address.kind === 'unix' && Buffer.byteLength(address.path) > MAX_UNIX_PATH_BYTES) {
      throw new ConnectError(
        `${label}: cannot connect: ENAMETOOLONG (a socket path holds at most ${MAX_UNIX_PATH_BYTES} bytes)`,
      );
    }
    this.setState('connecting');
    this.framer = new LineFramer(this.maxLineBytes);
    this.localClose = false;
    this.closeReason = undefined;
    this.socketError = undefined;
    // Reads go straight into the shared buffer (net's `onread`): no allocation per read and no
    // stream machinery; 'data' is then never emitted. Nothing arrives before attach(): the
    // connection is attached in the microtask that follows 'connect', before the loop reads again.
    const onread = {
      buffer: sharedReadBuffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        this.onData(Buffer.from(buf.buffer, buf.byteOffset, n));
        return true;
      },
    };
    const socket =
      address.kind === 'unix'
        ? net.createConnection({ path: address.path, onread })
        : net.createConnection({ host: address.host, port: address.port, onread });
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        if (timer) clearTimeout(timer);
        socket.off('connect', onConnect);
        socket.off('error', onError);
        opts.signal?.removeEventListener('abort', onAbort);
        this.abortConnect = null;
      };
      const fail = (err: QmpError): void => {
        cleanup();
        socket.on('error', () => undefined);
        socket.destroy();
        this.setState('idle');
        reject(err);
      };
      const onConnect = (): void => {
        cleanup();
        resolve();
      };
      const onError = (e: NodeJS.ErrnoException): void => fail(connectError(label, e));
      const onAbort = (): void => fail(new AbortedError(`${label}: connect aborted`, { cause: opts.signal?.reason }));
      socket.once('connect', onConnect);
      socket.once('error', onError);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.abortConnect = fail;
      const ms = opts.connectTimeoutMs ?? 0;
      if (ms > 0 && Number.isFinite(ms))
        timer = setTimeout(() => fail(new ConnectError(`${label}: cannot connect: timed out after ${ms} ms`)), ms);
    });
    if (address.kind === 'tcp') socket.setNoDelay(true);
    this.attach(socket, true);
  }

  /** Queues one message. Returns false when it was not sent (not running, or the peer was dropped). */
  send(obj: unknown): boolean {
    return this.sendLine(jsonText(obj));
  }

  /** Queues one line of JSON text as it is (`check`: that it holds no raw newline; sendLines checks its own). */
  sendLine(text: string, check = true): boolean {
    const socket = this.socket;
    if (this.runState !== 'running' || !socket) return false;
    if (socket.writableLength > this.maxWriteBufferBytes) {
      void this.close(
        new SlowPeerError(
          `${this.label}: dropped: more than ${this.maxWriteBufferBytes} bytes of output waited unread`,
        ),
      );
      return false;
    }
    // A string goes to the kernel without a Buffer of its own (encodeLine's check, not its copy).
    if (check && text.includes('\n')) throw new ProtocolError('a message must not contain a raw newline');
    socket.write(text + '\n');
    return true;
  }

  /**
   * Queues several lines of JSON text as one write: one string and one write(2) for all of them,
   * instead of one each. Returns false when they were not sent.
   */
  sendLines(texts: readonly string[]): boolean {
    if (texts.length === 1) return this.sendLine(texts[0]);
    for (const text of texts)
      if (text.includes('\n')) throw new ProtocolError('a message must not contain a raw newline');
    return this.sendLine(texts.join('\n'), false);
  }

  /** Stops reading from the peer (flow control); lines already framed are still delivered. */
  pause(): void {
    this.socket?.pause();
  }

  resume(): void {
    this.socket?.resume();
  }

  /**
   * Ends the connection. Without `err` queued output is flushed first (bounded by closeTimeoutMs) and
   * 'close' carries no error; with `err` the socket is destroyed at once and 'close' carries `err`.
   */
  close(err?: QmpError): Promise<void> {
    if (this.runState === 'connecting' && this.abortConnect) {
      this.abortConnect(err ?? new AbortedError(`${this.label}: closed while connecting`));
      return Promise.resolve();
    }
    if (this.closing) return this.closing;
    if (this.runState === 'idle' || !this.socket) return Promise.resolve();
    this.localClose = true;
    this.closeReason = err;
    this.closing = new Promise<void>((resolve) => (this.closed = resolve));
    this.setState('disconnecting');
    const socket = this.socket;
    if (err) {
      socket.destroy();
    } else {
      socket.end();
      this.closeTimer = setTimeout(() => socket.destroy(), this.closeTimeoutMs);
      this.closeTimer.unref();
    }
    return this.closing;
  }

  private attach(socket: net.Socket, dialled = false): void {
    this.socket = socket;
    this.framer = new LineFramer(this.maxLineBytes);
    if (!dialled) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.socketError ??= e;
    });
    socket.on('close', () => this.onSocketClose());
    // The peer finished sending (a half-close, on sockets made with allowHalfOpen): lines it sent
    // before are all delivered by now.
    socket.on('end', () => this.emit('end'));
    if (socket.destroyed) {
      queueMicrotask(() => this.onSocketClose());
    }
    this.setState('running');
  }

  private onData(chunk: Buffer): void {
    if (this.runState !== 'running') return;
    try {
      this.framer.push(chunk, (line) => this.onLine(line));
    } catch (err) {
      if (!(err instanceof LineTooLongError)) throw err;
      err.message = `${this.label}: ${err.message}`;
      void this.close(err);
    }
  }

  private onLine(line: Buffer): boolean {
    if (this.runState !== 'running') return false;
    let decoded;
    try {
      decoded = decodeLine(line);
    } catch (err) {
      const e = new ProtocolError(`${this.label}: ${(err as Error).message}`, { cause: err });
      if (this.invalidLines === 'report') {
        this.emit('invalid', e);
        return this.runState === 'running';
      }
      void this.close(e);
      return false;
    }
    if (decoded) this.emit('message', decoded.value, decoded.text);
    return this.runState === 'running';
  }

  private onSocketClose(): void {
    if (!this.socket) return;
    this.socket = null;
    if (this.closeTimer) clearTimeout(this.closeTimer);
    this.closeTimer = null;
    let reason: QmpError | undefined;
    if (this.localClose) {
      reason = this.closeReason;
    } else if (this.socketError) {
      reason = new ClosedError(`${this.label}: connection lost: ${this.socketError.code ?? this.socketError.message}`, {
        cause: this.socketError,
      });
    } else {
      reason = new ClosedError(`${this.label}: connection closed by the peer`);
    }
    const done = this.closed;
    this.closing = null;
    this.closed = null;
    this.setState('idle');
    this.emit('close', reason);
    done?.();
  }

  private setState(state: RunState): void {
    if (this.runState === state) return;
    this.runState = state;
    this.emit('state', state);
  }
}
