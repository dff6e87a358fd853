/**
 * The control API: HTTP + a WebSocket event stream, on the UNIX socket `api.socket` (local, guarded
 * by the socket's mode and group) and optionally on TCP `api.listen` for peer agents, where every
 * request must carry the shared bearer token and only reads are allowed, and a peer guard's notice
 * of a guest migrating here (POST /v1/incoming, at most MAX_NOTICE_BYTES, from that peer alone).
 *
 * Connections are bounded before anyone is authenticated (agent/api/connection-limits.ts): each must
 * complete its first request's headers within `firstRequestMs`, a request within `idleTimeoutMs`
 * (Node's `headersTimeout`/`requestTimeout`, checked every second); `maxConnections` bounds each
 * listener and, on TCP, `maxConnectionsPerAddress` each source (an IPv4 address, an IPv6 /64). A
 * connection that presented the token keeps its slot; a new one displaces the oldest that has not,
 * so idle or unauthenticated clients never lock a peer out. Event-stream clients have their own slots
 * on each listener (`maxEventClients` local, `maxPeerEventClients` on TCP) and are pinged every
 * `eventPingMs`; one that has not answered the previous ping by the next is cut off.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { listenUnixSocket } from '../../qmp/unix-server';
import { AgentError } from '../core/errors';
import type { ApiHandlers, DaemonEvent, RequestOrigin } from './api-types';
import { ConnectionLimits, sourcePrefix } from './connection-limits';
import { MAX_NOTICE_BYTES, parseIncomingNotice } from '../peers/incoming-notice';
import type { Logger } from '../core/logger';
import { isWidth } from '../core/checks';
import { splitHostPort } from '../core/host-port';

export type { ApiHandlers } from './api-types';

export interface ApiServerOptions {
  handlers: ApiHandlers;
  /** Where the event stream's events come from (the daemon's EventBus). */
  events: { subscribe(fn: (ev: DaemonEvent) => void): () => void };
  logger: Logger;
  maxBodyBytes: number;
  /** Event-stream clients on the UNIX socket. */
  maxEventClients: number;
  /** api.maxPeerEventClients: event-stream clients on TCP (default 16). */
  maxPeerEventClients?: number;
  eventBufferBytes: number;
  /** api.eventPingMs: how often event-stream clients are pinged (default 30 s). */
  eventPingMs?: number;
  /** api.idleTimeoutMs: a connection without a complete request is closed after this (default 10 s). */
  idleTimeoutMs?: number;
  /** api.firstRequestMs: a connection must complete its first request's headers within this (default 2 s). */
  firstRequestMs?: number;
  /** api.maxConnections: open connections per listener (default 256). */
  maxConnections?: number;
  /** api.maxConnectionsPerAddress: open TCP connections from one IPv4 address or IPv6 /64 (default 16). */
  maxConnectionsPerAddress?: number;
  /** The daemon's descriptor budget (agent/core/fd-budget.ts). */
  admit?: () => (() => void) | null;
}

export const API_DEFAULTS = {
  idleTimeoutMs: 10_000,
  firstRequestMs: 2000,
  maxConnections: 256,
  maxConnectionsPerAddress: 16,
  maxPeerEventClients: 16,
  eventPingMs: 30_000,
} as const;
/** How often Node checks headersTimeout and requestTimeout on open connections. */
const CONNECTION_CHECK_MS = 1000;

/** One remote address: "::ffff:10.0.0.1" and "10.0.0.1" are the same peer. */
export function remoteKey(address: string | undefined): string {
  if (!address) return '?';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address.toLowerCase();
}

class HttpError extends AgentError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

/** Constant-time comparison of a presented bearer token with the expected one. */
export function tokenMatches(header: string | undefined, expected: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  const got = createHash('sha256')
    .update(m ? m[1] : '')
    .digest();
  const want = createHash('sha256').update(expected).digest();
  return timingSafeEqual(got, want) && !!m;
}

type Listener = { token: string | null; limits: ConnectionLimits | null; clients: Set<WebSocket>; maxClients: number };

export class ApiServer {
  private readonly servers: http.Server[] = [];
  private readonly wss: WebSocketServer;
  private readonly clients = new Set<WebSocket>();
  private readonly unsubscribe: () => void;
  private closing: Array<() => Promise<void>> = [];
  private pinger: NodeJS.Timeout | null = null;
  private readonly alive = new WeakSet<WebSocket>();

  constructor(private readonly opts: ApiServerOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false });
    this.unsubscribe = opts.events.subscribe((ev) => this.broadcast(ev));
  }

  /** Listens on a UNIX socket created with `mode` (and group) from the start. */
  async listenUnix(path: string, mode: number, gid?: number): Promise<void> {
    const server = this.makeServer({ token: null, clients: new Set(), maxClients: this.opts.maxEventClients });
    const handle = await listenUnixSocket(server, path, { mode, gid });
    this.closing.push(() => handle.close());
  }

  /** Listens on TCP for peers; every request must present `token`. Returns the bound port. */
  async listenTcp(hostPort: string, token: string): Promise<AddressInfo> {
    const split = splitHostPort(hostPort);
    if (!split) throw new RangeError(`api.listen: expected host:port, got ${JSON.stringify(hostPort)}`);
    const { host, port } = split;
    const server = this.makeServer({
      token,
      clients: new Set(),
      maxClients: this.opts.maxPeerEventClients ?? API_DEFAULTS.maxPeerEventClients,
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.closing.push(() => new Promise((r) => server.close(() => r())));
    return server.address() as AddressInfo;
  }

  private makeServer(partial: Omit<Listener, 'limits'>): http.Server {
    // Node measures headersTimeout and requestTimeout from a connection's first byte wait (a
    // connection that never sends one included) and checks them every `check` ms; the sum stays
    // within api.idleTimeoutMs. A slow client is answered 408 and closed.
    const idleMs = this.opts.idleTimeoutMs ?? API_DEFAULTS.idleTimeoutMs;
    const check = Math.min(CONNECTION_CHECK_MS, Math.floor(idleMs / 2));
    const server = http.createServer({
      headersTimeout: idleMs - check,
      requestTimeout: idleMs - check,
      connectionsCheckingInterval: check,
      maxHeaderSize: 16384,
    });
    const tcp = partial.token !== null;
    const listener: Listener = {
      ...partial,
      limits: new ConnectionLimits(server, {
        label: tcp ? 'API (TCP)' : 'API (local)',
        maxConnections: this.opts.maxConnections ?? API_DEFAULTS.maxConnections,
        maxPerSource: tcp
          ? (this.opts.maxConnectionsPerAddress ?? API_DEFAULTS.maxConnectionsPerAddress)
          : (this.opts.maxConnections ?? API_DEFAULTS.maxConnections),
        firstRequestMs: Math.min(this.opts.firstRequestMs ?? API_DEFAULTS.firstRequestMs, idleMs),
        sourceOf: tcp ? (socket) => sourcePrefix(socket.remoteAddress) : undefined,
        admit: this.opts.admit,
        logger: this.opts.logger,
      }),
    };
    server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      listener.limits?.started(req.socket);
      void this.handle(req, res, listener);
    });
    server.keepAliveTimeout = Math.min(5000, idleMs - check);
    server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
      listener.limits?.started(socket);
      if (listener.token !== null && !tokenMatches(req.headers.authorization, listener.token)) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
        return;
      }
      listener.limits?.trust(socket);
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/v1/events') {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      if (listener.clients.size >= listener.maxClients) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.addClient(ws, listener.clients));
    });
    this.servers.push(server);
    return server;
  }

  private addClient(ws: WebSocket, slots: Set<WebSocket>): void {
    this.clients.add(ws);
    slots.add(ws);
    this.alive.add(ws);
    const gone = () => {
      this.clients.delete(ws);
      slots.delete(ws);
    };
    ws.on('close', gone);
    ws.on('error', gone);
    ws.on('pong', () => this.alive.add(ws));
    // Clients only listen; anything they send is ignored (and bounded by maxPayload).
    ws.on('message', () => undefined);
    this.armPings();
  }

  /** Every eventPingMs each client is pinged; one that did not answer the previous ping is cut off. */
  private armPings(): void {
    if (this.pinger) return;
    this.pinger = setInterval(() => {
      for (const ws of this.clients) {
        if (!this.alive.has(ws)) {
          this.opts.logger.warn('event-stream client did not answer a ping; cut off');
          this.clients.delete(ws);
          ws.terminate();
          continue;
        }
        this.alive.delete(ws);
        ws.ping();
      }
    }, this.opts.eventPingMs ?? API_DEFAULTS.eventPingMs);
    this.pinger.unref();
  }

  private broadcast(ev: DaemonEvent): void {
    if (this.clients.size === 0) return;
    const data = JSON.stringify(ev);
    for (const ws of this.clients) {
      if (ws.bufferedAmount + data.length > this.opts.eventBufferBytes) {
        // A client that does not read is dropped rather than allowed to grow the daemon's memory.
        this.opts.logger.warn('dropping a slow event-stream client', { buffered: ws.bufferedAmount });
        this.clients.delete(ws);
        ws.terminate();
        continue;
      }
      ws.send(data);
    }
  }

  private async readBody(req: http.IncomingMessage, maxBytes = this.opts.maxBodyBytes): Promise<unknown> {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBytes)
      throw new HttpError(413, 'API_BODY_TOO_LARGE', `request body larger than ${maxBytes} bytes`);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > maxBytes) throw new HttpError(413, 'API_BODY_TOO_LARGE', `request body larger than ${maxBytes} bytes`);
      chunks.push(c as Buffer);
    }
    if (size === 0) return {};
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new HttpError(400, 'API_BAD_JSON', 'request body is not JSON');
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, listener: Listener): Promise<void> {
    const token = listener.token;
    const send = (status: number, body: unknown, json?: string) => {
      const text = json ?? JSON.stringify(body);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        'cache-control': 'no-store',
      });
      res.end(text);
    };
    try {
      if (token !== null && !tokenMatches(req.headers.authorization, token)) {
        // Nothing more is read from a client without the token: its connection ends with the answer.
        res.setHeader('connection', 'close');
        throw new HttpError(401, 'API_UNAUTHORIZED', 'a valid bearer token is required');
      }
      listener.limits?.trust(req.socket);
      const url = new URL(req.url ?? '/', 'http://x');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      // Peers only read, except to tell this host the width of a guest migrating here.
      if (token !== null && method !== 'GET' && !(method === 'POST' && path === '/v1/incoming'))
        throw new HttpError(403, 'API_READ_ONLY', 'the TCP API only serves reads and POST /v1/incoming');
      const h = this.opts.handlers;
      if (method === 'GET' && path === '/v1/status')
        return h.statusText ? send(200, null, h.statusText()) : send(200, h.status());
      if (method === 'GET' && path === '/v1/host') return send(200, h.host());
      if (method === 'GET' && path.startsWith('/v1/vms/')) {
        let name: string;
        try {
          name = decodeURIComponent(path.slice('/v1/vms/'.length));
        } catch {
          throw new HttpError(400, 'API_BAD_REQUEST', 'the VM name is not valid percent-encoded UTF-8');
        }
        const vm = h.vm(name);
        if (!vm) throw new HttpError(404, 'VM_NOT_FOUND', `no VM named '${name}'`);
        return send(200, vm);
      }
      if (method === 'GET' && path === '/v1/fleet') return send(200, await h.fleet());
      if (method === 'GET' && path === '/v1/advise') {
        const pb = url.searchParams.get('poolBits');
        const poolBits = pb === null ? undefined : Number(pb);
        if (poolBits !== undefined && !isWidth(poolBits))
          throw new HttpError(400, 'API_BAD_REQUEST', 'poolBits must be a whole number from 1 to 64');
        return send(200, await h.advise(url.searchParams.get('vm') ?? undefined, poolBits));
      }
      if (method === 'POST' && path === '/v1/check-migration') {
        const body = (await this.readBody(req)) as { vm?: unknown; peer?: unknown };
        return send(200, await h.checkMigration(body));
      }
      if (method === 'POST' && path === '/v1/incoming') {
        const notice = parseIncomingNotice(await this.readBody(req, MAX_NOTICE_BYTES));
        if ('error' in notice) throw new HttpError(400, 'API_BAD_REQUEST', `incoming notice: ${notice.error}`);
        const origin: RequestOrigin =
          token === null
            ? { transport: 'unix', address: null }
            : { transport: 'tcp', address: remoteKey(req.socket.remoteAddress) };
        return send(202, await h.incoming(notice, origin));
      }
      if (method === 'POST' && path === '/v1/libvirt-events') {
        h.libvirtEvent(await this.readBody(req));
        return send(202, { accepted: true });
      }
      throw new HttpError(404, 'API_NOT_FOUND', `no such endpoint: ${method} ${path}`);
    } catch (err) {
      if (err instanceof HttpError) return send(err.status, { error: { code: err.code, message: err.message } });
      const code = (err as { code?: unknown }).code;
      const status = (err as { status?: unknown }).status;
      if (typeof status === 'number' && typeof code === 'string')
        return send(status, { error: { code, message: (err as Error).message } });
      this.opts.logger.error('API request failed', { error: (err as Error).message });
      return send(500, { error: { code: 'INTERNAL', message: (err as Error).message } });
    }
  }

  async close(): Promise<void> {
    this.unsubscribe();
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
    // Event-stream clients are told why (1001 "going away", RFC 6455 7.4.1), then cut off: a client
    // that does not answer the close within a second is not waited for.
    const clients = [...this.clients];
    this.clients.clear();
    await Promise.all(
      clients.map(
        (ws) =>
          new Promise<void>((done) => {
            if (ws.readyState === ws.CLOSED) return done();
            const timer = setTimeout(() => {
              ws.terminate();
              done();
            }, 1000);
            ws.once('close', () => {
              clearTimeout(timer);
              done();
            });
            ws.close(1001, 'physbitsd is stopping');
          }),
      ),
    );
    for (const s of this.servers) s.closeAllConnections?.();
    await Promise.all(this.closing.map((c) => c()));
    this.closing = [];
  }
}

/** An error the API turns into an HTTP status. */
export function apiError(status: number, code: string, message: string): Error {
  return new HttpError(status, code, message);
}
