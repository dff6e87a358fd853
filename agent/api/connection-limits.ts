/**
 * Bounds on the connections others open to an HTTP listener (/metrics, the API's UNIX socket and
 * TCP port), enforced before anyone is known: at most `maxConnections` in all and `maxPerSource`
 * from one source (an IPv4 address, an IPv6 /64, the UNIX socket as one), a connection that has not
 * completed a request's headers within `firstRequestMs` is closed, and none is taken when the
 * daemon's descriptor reserve would shrink (agent/core/fd-budget.ts).
 *
 * A connection the listener vouches for (`trust`: an authenticated request, or any complete request
 * where there is nothing to authenticate) keeps its slot; when a cap is reached, a new connection
 * takes the slot of the oldest one not vouched for, so idle or unauthenticated connections can delay
 * a peer by at most one round trip, never lock it out.
 */
import type { Server } from 'node:net';
import type { Socket } from 'node:net';
import type { Logger } from '../core/logger';

export interface ConnectionLimitsOptions {
  /** Names the listener in log lines ("metrics", "API TCP"). */
  label: string;
  maxConnections: number;
  maxPerSource: number;
  firstRequestMs: number;
  /** The source a connection is counted against; all one source when absent (a UNIX socket). */
  sourceOf?: (socket: Socket) => string;
  /** The daemon's descriptor budget: returns a release function, or null to refuse. */
  admit?: () => (() => void) | null;
  logger: Logger;
}

interface Tracked {
  socket: Socket;
  source: string;
  trusted: boolean;
}

/** "10.0.0.1", "::ffff:10.0.0.1" → "10.0.0.1"; an IPv6 address → its /64 ("2001:db8:0:1::/64"). */
export function sourcePrefix(address: string | undefined): string {
  if (!address) return '?';
  const v4 = /^(?:::ffff:)?(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (v4) return v4[1];
  const groups = expandIpv6(address.split('%')[0]);
  if (!groups) return address.toLowerCase();
  return `${groups.slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (hex, no leading zeros), or null when it is not one. */
function expandIpv6(address: string): string[] | null {
  let text = address.toLowerCase();
  const dotted = /(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number);
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  return groups.map((g) => parseInt(g, 16).toString(16));
}

export class ConnectionLimits {
  /** Open connections, oldest first (a Map keeps insertion order). */
  private readonly open = new Map<Socket, Tracked>();
  private readonly perSource = new Map<string, Set<Tracked>>();
  /** When each kind of warning was last logged. */
  private readonly lastWarning = new Map<string, number>();

  constructor(
    server: Server,
    private readonly opts: ConnectionLimitsOptions,
  ) {
    server.on('connection', (socket: Socket) => this.arrive(socket));
  }

  /** Connections open now. */
  get size(): number {
    return this.open.size;
  }

  /** The connection carried a request the listener vouches for: it is never displaced. */
  trust(socket: Socket): void {
    const t = this.open.get(socket);
    if (t) t.trusted = true;
  }

  /** The connection may be displaced again (its request was answered). */
  untrust(socket: Socket): void {
    const t = this.open.get(socket);
    if (t) t.trusted = false;
  }

  /** A request's headers arrived: the first-request deadline no longer applies. */
  started(socket: Socket): void {
    const timer = (socket as Socket & { [FIRST]?: NodeJS.Timeout })[FIRST];
    if (timer) clearTimeout(timer);
  }

  private arrive(socket: Socket): void {
    const source = this.opts.sourceOf ? this.opts.sourceOf(socket) : 'local';
    const release = this.opts.admit ? this.opts.admit() : () => undefined;
    if (!release) {
      this.warn('connection refused: the daemon keeps its remaining file descriptors for its own work', { source });
      socket.destroy();
      return;
    }
    const mine = this.perSource.get(source) ?? new Set<Tracked>();
    if (mine.size >= this.opts.maxPerSource && !this.displace(mine)) {
      this.warn('connection refused: the per-source limit is reached', { source, limit: this.opts.maxPerSource });
      release();
      socket.destroy();
      return;
    }
    if (this.open.size >= this.opts.maxConnections && !this.displace(this.open.values())) {
      this.warn('connection refused: the connection limit is reached', { source, limit: this.opts.maxConnections });
      release();
      socket.destroy();
      return;
    }
    const tracked: Tracked = { socket, source, trusted: false };
    this.open.set(socket, tracked);
    this.perSource.set(source, mine.add(tracked));
    // Past the deadline the client is told (408) and the connection ends, whatever it was sending.
    const timer = setTimeout(
      () => socket.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n', () => socket.destroy()),
      this.opts.firstRequestMs,
    );
    timer.unref();
    (socket as Socket & { [FIRST]?: NodeJS.Timeout })[FIRST] = timer;
    socket.once('close', () => {
      clearTimeout(timer);
      release();
      this.open.delete(socket);
      mine.delete(tracked);
      if (mine.size === 0 && this.perSource.get(source) === mine) this.perSource.delete(source);
    });
  }

  /** Closes the oldest connection among `candidates` not vouched for; false when every one is. */
  private displace(candidates: Iterable<Tracked>): boolean {
    for (const t of candidates) {
      if (t.trusted || t.socket.destroyed) continue;
      this.warn('connection displaced: a cap was reached and it had sent no trusted request', {
        source: t.source,
      });
      t.socket.destroy();
      // 'close' comes on a later tick: forget it now so the count is right for the newcomer.
      this.open.delete(t.socket);
      this.perSource.get(t.source)?.delete(t);
      return true;
    }
    return false;
  }

  /** Each kind once a minute at most: a flood of refused connections must not become a flood of log lines. */
  private warn(message: string, meta: Record<string, unknown>): void {
    const now = Date.now();
    if (now - (this.lastWarning.get(message) ?? -Infinity) < 60_000) return;
    this.lastWarning.set(message, now);
    this.opts.logger.warn(`${this.opts.label} ${message}`, meta);
  }
}

const FIRST = Symbol('first-request deadline');
