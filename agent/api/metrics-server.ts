/**
 * The small HTTP server that serves the metrics registry (metrics.ts) at GET /metrics, with bounds
 * on its connections.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { splitHostPort } from '../core/host-port';
import type { Logger } from '../core/logger';
import { ConnectionLimits, sourcePrefix } from './connection-limits';
import type { Metrics } from './metrics';

/** 'host:port' / '[v6]:port' → parts. */
export function parseListen(listen: string): { host: string; port: number } {
  const split = splitHostPort(listen);
  if (!split) throw new RangeError(`metrics.listen: expected host:port, got ${JSON.stringify(listen)}`);
  return split;
}

export interface MetricsServer {
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Bounds on the connections to /metrics (metrics.* in the config); none by default in tests that leave them out. */
export interface MetricsListenLimits {
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** The daemon's descriptor budget (agent/core/fd-budget.ts). */
  admit?: () => (() => void) | null;
  logger: Logger;
}

/** A connection must complete its first request's headers within this, and an idle one is closed after METRICS_IDLE_MS. */
export const METRICS_FIRST_REQUEST_MS = 2000;
export const METRICS_IDLE_MS = 1000;

/** Serves GET /metrics (HEAD too); 404 elsewhere, 405 for other methods. Port 0 picks a free port. */
export async function startMetricsServer(
  metrics: Metrics,
  listen = '127.0.0.1:9741',
  limits?: MetricsListenLimits,
): Promise<MetricsServer> {
  const { host, port } = parseListen(listen);
  // A scrape is one short request: a second to the next one, a few seconds for headers and body
  // (checked every 500 ms), then the connection is closed.
  const server: Server = createServer({
    headersTimeout: METRICS_FIRST_REQUEST_MS,
    requestTimeout: 5000,
    connectionsCheckingInterval: 500,
    keepAliveTimeout: METRICS_IDLE_MS,
  });
  const guard = limits
    ? new ConnectionLimits(server, {
        label: 'metrics',
        maxConnections: limits.maxConnections,
        maxPerSource: limits.maxConnectionsPerAddress,
        firstRequestMs: METRICS_FIRST_REQUEST_MS,
        sourceOf: (socket) => sourcePrefix(socket.remoteAddress),
        admit: limits.admit,
        logger: limits.logger,
      })
    : null;
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    // A connection is kept from being displaced only while a scrape is being answered.
    guard?.started(req.socket);
    guard?.trust(req.socket);
    res.once('finish', () => guard?.untrust(req.socket));
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res
        .writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' })
        .end('method not allowed\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: Error) => {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${err.message}\n`);
      },
    );
  });
  server.maxHeadersCount = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return {
    address: addr.address,
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
