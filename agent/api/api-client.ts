/**
 * Talking to a physbits daemon: over its UNIX control socket (local CLI) or over TCP with a bearer
 * token (peer agents). Responses are bounded in size and time.
 */
import http from 'node:http';
import { DaemonUnreachableError, AgentError } from '../core/errors';

export interface ApiTarget {
  /** UNIX socket path of the local API. */
  socketPath?: string;
  /** Base URL of a peer's `api.listen`, e.g. http://127.0.0.1:9740 */
  url?: string;
  token?: string;
}

export class ApiError extends AgentError {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body: unknown) {
    const msg = (body as { error?: { message?: string } })?.error?.message ?? `HTTP ${status}`;
    super((body as { error?: { code?: string } })?.error?.code ?? 'API_ERROR', msg);
    this.status = status;
    this.body = body;
  }
}

const MAX_RESPONSE = 32 * 1024 * 1024;

export function apiRequest<T = unknown>(
  target: ApiTarget,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    if (target.token) headers.authorization = `Bearer ${target.token}`;
    const where = target.socketPath ?? target.url ?? '(no target)';
    let opts: http.RequestOptions;
    if (target.socketPath) {
      opts = { socketPath: target.socketPath, path, method, headers };
    } else {
      const u = new URL(path, target.url);
      opts = {
        hostname: u.hostname.replace(/^\[|\]$/g, ''),
        port: u.port,
        path: u.pathname + u.search,
        method,
        headers,
      };
    }
    const req = http.request(opts, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_RESPONSE) {
          req.destroy(new AgentError('API_RESPONSE_TOO_LARGE', `${where}: response larger than ${MAX_RESPONSE} bytes`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => {
        let parsed: unknown;
        try {
          parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(new AgentError('API_BAD_RESPONSE', `${where}${path}: answer is not JSON (HTTP ${res.statusCode})`));
          return;
        }
        if ((res.statusCode ?? 500) >= 400) reject(new ApiError(res.statusCode ?? 500, parsed));
        else resolve(parsed as T);
      });
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () =>
      req.destroy(new DaemonUnreachableError(`${where}: no answer within ${timeoutMs} ms`)),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof AgentError) reject(err);
      else
        reject(
          new DaemonUnreachableError(
            `cannot reach the physbits daemon at ${where}: ${err.code ?? err.message}${
              err.code === 'EACCES' && target.socketPath
                ? ' (the API socket is open to root and to the group named by api.group in the config; run as root or join that group)'
                : ''
            }`,
            { cause: err },
          ),
        );
    });
    req.end(payload);
  });
}
