/**
 * The control API: HTTP + a WebSocket event stream, on the UNIX socket `api.socket` (local, guarded
 * by the socket's mode and group) and optionally on TCP `api.listen` for peer agents, where every
 * request must carry the shared bearer token and only reads are allowed, and a peer guard's notice
 * of a guest migrating here (POST /v1/incoming, at most MAX_NOTICE_BYTES).
 *
 * Connections are bounded before anyone is authenticated: a connection that has not completed a
 * request within `idleTimeoutMs` (no byte at all, slow headers, a slow body) is closed by Node's
 * `headersTimeout`/`requestTimeout`, checked every second (`connectionsCheckingInterval`). On TCP, `maxConnections` bounds the
 * whole listener (Node's `server.maxConnections`: past it a new connection is closed on arrival) and
 * `maxConnectionsPerAddress` each remote address.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { listenUnixSocket } from '../../qmp/unix-server';
import { AgentError } from '../core/errors';
import type { ApiHandlers, DaemonEvent } from './api-types';
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
  maxEventClients: number;
  eventBufferBytes: number;
  /** api.idleTimeoutMs: a connection without a complete request is closed after this (default 10 s). */
  idleTimeoutMs?: number;
  /** api.maxConnections: open TCP connections in all (default 256). */
  maxConnections?: number;
  /** api.maxConnectionsPerAddress: open TCP connections from one remote address (default 16). */
  maxConnectionsPerAddress?: number;
}

export const API_DEFAULTS = { idleTimeoutMs: 10_000, maxConnections: 256, maxConnectionsPerAddress: 16 } as const;
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

export class ApiServer {
  private readonly servers: http.Server[] = [];
  private readonly wss: WebSocketServer;
  private readonly clients = new Set<WebSocket>();
  private readonly unsubscribe: () => void;
  private closing: Array<() => Promise<void>> = [];

  constructor(private readonly opts: ApiServerOptions) {
    this.wss = new WebSocketServer({ noServer: true, maxPayload: 4096, perMessageDeflate: false });
    this.unsubscribe = opts.events.subscribe((ev) => this.broadcast(ev));
  }

  /** Listens on a UNIX socket created with `mode` (and group) from the start. */
  async listenUnix(path: string, mode: number, gid?: number): Promise<void> {
    const server = this.makeServer(null);
    const handle = await listenUnixSocket(server, path, { mode, gid });
    this.closing.push(() => handle.close());
  }

  /** Listens on TCP for peers; every request must present `token`. Returns the bound port. */
  async listenTcp(hostPort: string, token: string): Promise<AddressInfo> {
    const split = splitHostPort(hostPort);
    if (!split) throw new RangeError(`api.listen: expected host:port, got ${JSON.stringify(hostPort)}`);
    const { host, port } = split;
    const server = this.makeServer(token);
    this.capConnections(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.closing.push(() => new Promise((r) => server.close(() => r())));
    return server.address() as AddressInfo;
  }

  private makeServer(token: string | null): http.Server {
    // Node measures headersTimeout and requestTimeout from a connection's first byte wait (a
    // connection that never sends one included) and checks them every `check` ms; the sum stays
    // within api.idleTimeoutMs. A slow client is answered 408 and closed.
    const idleMs = this.opts.idleTimeoutMs ?? API_DEFAULTS.idleTimeoutMs;
    const check = Math.min(CONNECTION_CHECK_MS, Math.floor(idleMs / 2));
    const server = http.createServer(
      {
        headersTimeout: idleMs - check,
        requestTimeout: idleMs - check,
        connectionsCheckingInterval: check,
        maxHeaderSize: 16384,
      },
      (req, res) => {
        void this.handle(req, res, token);
      },
    );
    server.keepAliveTimeout = Math.min(5000, idleMs - check);
    server.on('upgrade', (req, socket, head) => {
      if (token !== null && !tokenMatches(req.headers.authorization, token)) {
        socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
        return;
      }
      if (new URL(req.url ?? '/', 'http://x').pathname !== '/v1/events') {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n');
        return;
      }
      if (this.clients.size >= this.opts.maxEventClients) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.addClient(ws));
    });
    this.servers.push(server);
    return server;
  }

  /** api.maxConnections over the listener, api.maxConnectionsPerAddress per remote address. */
  private capConnections(server: http.Server): void {
    server.maxConnections = this.opts.maxConnections ?? API_DEFAULTS.maxConnections;
    const perAddress = this.opts.maxConnectionsPerAddress ?? API_DEFAULTS.maxConnectionsPerAddress;
    const open = new Map<string, number>();
    let lastWarning = -Infinity;
    const warnOnce = (message: string, meta: Record<string, unknown>) => {
      // Once a minute at most: a flood of refused connections must not become a flood of log lines.
      const now = Date.now();
      if (now - lastWarning < 60_000) return;
      lastWarning = now;
      this.opts.logger.warn(message, meta);
    };
    // Node closes a connection past server.maxConnections on arrival and says so with 'drop'.
    server.on('drop', (data?: { remoteAddress?: string }) =>
      warnOnce('API connection refused: api.maxConnections reached', {
        limit: server.maxConnections,
        address: remoteKey(data?.remoteAddress),
      }),
    );
    server.on('connection', (socket: Socket) => {
      const key = remoteKey(socket.remoteAddress);
      const n = open.get(key) ?? 0;
      if (n >= perAddress) {
        warnOnce('API connection refused: api.maxConnectionsPerAddress reached', { limit: perAddress, address: key });
        socket.destroy();
        return;
      }
      open.set(key, n + 1);
      socket.once('close', () => {
        const left = (open.get(key) ?? 1) - 1;
        if (left > 0) open.set(key, left);
        else open.delete(key);
      });
    });
  }

  private addClient(ws: WebSocket): void {
    this.clients.add(ws);
    ws.on('close', () => this.clients.delete(ws));
    ws.on('error', () => this.clients.delete(ws));
    // Clients only listen; anything they send is ignored (and bounded by maxPayload).
    ws.on('message', () => undefined);
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

  private async handle(req: http.IncomingMessage, res: http.ServerResponse, token: string | null): Promise<void> {
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        'cache-control': 'no-store',
      });
      res.end(text);
    };
    try {
      if (token !== null && !tokenMatches(req.headers.authorization, token))
        throw new HttpError(401, 'API_UNAUTHORIZED', 'a valid bearer token is required');
      const url = new URL(req.url ?? '/', 'http://x');
      const path = url.pathname;
      const method = req.method ?? 'GET';
      // Peers only read, except to tell this host the width of a guest migrating here.
      if (token !== null && method !== 'GET' && !(method === 'POST' && path === '/v1/incoming'))
        throw new HttpError(403, 'API_READ_ONLY', 'the TCP API only serves reads and POST /v1/incoming');
      const h = this.opts.handlers;
      if (method === 'GET' && path === '/v1/status') return send(200, h.status());
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
        return send(202, h.incoming(notice));
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
