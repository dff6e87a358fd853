/**
 * The least code that speaks QMP: one UNIX socket, newline-split JSON, replies matched by a
 * numeric id, events handed to a callback. The benchmarks' baselines and load generators use it so
 * that they share nothing with the code they measure. Not hardened: it talks only to QEMU and to
 * physbits' own sockets on this machine.
 */
import net from 'node:net';

export interface WireReply {
  return?: unknown;
  error?: { class: string; desc: string };
  id?: number;
}

export interface WireEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp: { seconds: number; microseconds: number };
}

/** A longest line guard, so a broken peer cannot grow our memory without end. */
const MAX_BUFFER = 64 * 1024 * 1024;

export class WireClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<number, (r: WireReply) => void>();
  private greetingWaiter: ((g: unknown) => void) | null = null;
  private closedWith: Error | null = null;
  onEvent: ((ev: WireEvent) => void) | null = null;

  private constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('connection closed')));
  }

  /** Connects, reads the greeting and (unless `negotiate` is false) sends qmp_capabilities. */
  static async connect(path: string, opts: { timeoutMs?: number; negotiate?: boolean } = {}): Promise<WireClient> {
    const timeoutMs = opts.timeoutMs ?? 10000;
    const socket = net.createConnection(path);
    const c = new WireClient(socket);
    const greeting = new Promise<unknown>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${path}: no greeting within ${timeoutMs} ms`)), timeoutMs);
      c.greetingWaiter = (g) => {
        clearTimeout(t);
        resolve(g);
      };
      socket.once('error', (err) => {
        clearTimeout(t);
        reject(err);
      });
    });
    await greeting;
    if (opts.negotiate !== false) {
      const r = await c.command('qmp_capabilities');
      if (r.error) throw new Error(`${path}: qmp_capabilities: ${r.error.desc}`);
    }
    return c;
  }

  /** Sends one command; resolves with its reply (errors are replies, not rejections). */
  command(execute: string, args?: Record<string, unknown>): Promise<WireReply> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    const msg = args === undefined ? { execute, id } : { execute, arguments: args, id };
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.socket.write(JSON.stringify(msg) + '\n');
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      const t = setTimeout(() => this.socket.destroy(), 1000);
      this.socket.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.socket.end();
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    if (this.buf.length > MAX_BUFFER) {
      this.socket.destroy(new Error('line too long'));
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.trim()) this.onLine(line);
    }
  }

  private onLine(line: string): void {
    const msg = JSON.parse(line) as Record<string, unknown>;
    if ('QMP' in msg) {
      this.greetingWaiter?.(msg);
      this.greetingWaiter = null;
    } else if ('event' in msg) {
      this.onEvent?.(msg as unknown as WireEvent);
    } else if (typeof msg.id === 'number') {
      const settle = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      settle?.(msg as WireReply);
    }
  }

  private fail(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    for (const settle of this.pending.values()) settle({ error: { class: 'Closed', desc: err.message } });
    this.pending.clear();
  }
}

/** QEMU's own timestamp of an event, as wall-clock milliseconds since the epoch. */
export function eventWallMs(ev: WireEvent): number {
  return ev.timestamp.seconds * 1000 + ev.timestamp.microseconds / 1000;
}
