/**
 * Asking a live peer agent: GET {url}/<path> (or POST a small JSON document) with the shared bearer token read from the peer's
 * tokenFile, bounded in time (headers and body) and in size (declared and streamed), redirects never
 * followed so the token is sent nowhere else. An https peer's certificate is verified, always: against
 * the peer's CA file when one is configured (it then replaces the system's roots), else Node's roots,
 * and its name against the url's host; a certificate that does not verify is PEER_TLS_UNTRUSTED and
 * the token is never sent. Every failure is a PeerError with a stable code (docs/fleet-and-advice.md,
 * docs/guard.md); what the document must hold is the caller's check.
 */
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { AgentError } from '../core/errors';
import { BodyTooLargeError, readBoundedText } from '../core/bounded-body';

/**
 * Why a live peer could not be asked: PEER_TOKEN_UNREADABLE, PEER_CA_UNREADABLE, PEER_UNREACHABLE,
 * PEER_TLS_UNTRUSTED, PEER_TIMEOUT, PEER_UNAUTHORIZED, PEER_HTTP_STATUS, PEER_RESPONSE_TOO_LARGE,
 * PEER_BAD_RESPONSE.
 */
export class PeerError extends AgentError {}

/** The part of fetch a peer request uses; the global fetch fits. */
export type PeerFetch = (
  url: string,
  init: {
    headers: Record<string, string>;
    signal: AbortSignal;
    redirect: 'manual';
    method?: 'GET' | 'POST';
    body?: string;
  },
) => Promise<{
  status: number;
  headers?: { get(name: string): string | null };
  body: ReadableStream<Uint8Array> | null;
}>;

export type ReadTextFile = (path: string) => Promise<string> | string;

export interface PeerGetOptions {
  timeoutMs: number;
  /** Largest response body accepted. */
  maxBytes: number;
  readFile: ReadTextFile;
  /** Default: node's http/https client, verifying https peers against the peer's caFile (nodePeerFetch). */
  fetch?: PeerFetch;
}

/** What a live peer is asked with. */
export interface PeerTarget {
  url: string;
  tokenFile: string;
  /** PEM certificates that verify an https peer; Node's roots when absent. */
  caFile?: string;
}

/**
 * GET over node's http or https client. For https the server's certificate chain and name are
 * verified (rejectUnauthorized is never turned off); `ca`, when given, is the only trust anchor. No
 * connection is kept or pooled: peers are asked rarely.
 */
export function nodePeerFetch(tls: { ca?: string } = {}): PeerFetch {
  return (url, init) =>
    new Promise((resolve, reject) => {
      const target = new URL(url);
      const secure = target.protocol === 'https:';
      if (!secure && target.protocol !== 'http:') {
        reject(new Error(`unsupported protocol ${target.protocol}`));
        return;
      }
      const options: https.RequestOptions = {
        method: init.method ?? 'GET',
        headers: init.headers,
        signal: init.signal,
        agent: false,
        ...(secure ? { rejectUnauthorized: true, ...(tls.ca ? { ca: tls.ca } : {}) } : {}),
      };
      const req = (secure ? https : http).request(target, options, (res) => {
        resolve({
          status: res.statusCode ?? 0,
          headers: {
            get: (name) => {
              const v = res.headers[name.toLowerCase()];
              return v === undefined ? null : Array.isArray(v) ? v.join(', ') : v;
            },
          },
          body: Readable.toWeb(res) as ReadableStream<Uint8Array>,
        });
      });
      req.once('error', reject);
      req.end(init.body);
    });
}

/** OpenSSL's and node's codes for a certificate that does not verify (chain, name, dates). */
const TLS_VERIFY_CODE = /CERT|SIGNATURE|ISSUER|SELF_SIGNED|ALTNAME|UNABLE_TO_GET|UNABLE_TO_VERIFY/;

/** The text of `path`, or PeerError `code` naming the file (`what`) and why it could not be read. */
async function readPeerFile(path: string, readFile: ReadTextFile, code: string, what: string): Promise<string> {
  try {
    return String(await readFile(path));
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new PeerError(code, `${path}: cannot read the ${what}: ${reason}`, { cause: err });
  }
}

/** The PEM text of a peer's CA file. */
async function readCa(caFile: string, readFile: ReadTextFile): Promise<string> {
  const text = await readPeerFile(caFile, readFile, 'PEER_CA_UNREADABLE', 'CA file');
  if (!text.includes('-----BEGIN CERTIFICATE-----'))
    throw new PeerError('PEER_CA_UNREADABLE', `${caFile}: holds no PEM certificate`);
  return text;
}

/** A token longer than this is not a bearer token. */
const TOKEN_MAX_CHARS = 4096;

/** The peer's bearer token: the token file's one line without surrounding white space. */
export async function readPeerToken(tokenFile: string, readFile: ReadTextFile): Promise<string> {
  const text = await readPeerFile(tokenFile, readFile, 'PEER_TOKEN_UNREADABLE', 'token file');
  const token = text.trim();
  if (!token || /[\r\n]/.test(token) || token.length > TOKEN_MAX_CHARS) {
    throw new PeerError('PEER_TOKEN_UNREADABLE', `${tokenFile}: the token file must hold one non-empty line`);
  }
  return token;
}

/** {base}/{path}, with one slash between them. */
export function peerUrl(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}/${path.replace(/^\/+/, '')}`;
}

/** GET {peer.url}/{path} as JSON: the parsed document, of any shape. */
export function getPeerJson(peer: PeerTarget, path: string, opts: PeerGetOptions): Promise<unknown> {
  return requestPeerJson(peer, path, undefined, opts);
}

/** POST `body` as JSON to {peer.url}/{path}; the answer (2xx) as JSON, bounded like a GET's. */
export function postPeerJson(peer: PeerTarget, path: string, body: unknown, opts: PeerGetOptions): Promise<unknown> {
  return requestPeerJson(peer, path, JSON.stringify(body), opts);
}

async function requestPeerJson(
  peer: PeerTarget,
  path: string,
  body: string | undefined,
  opts: PeerGetOptions,
): Promise<unknown> {
  const token = await readPeerToken(peer.tokenFile, opts.readFile);
  const url = peerUrl(peer.url, path);
  const fetchPeer =
    opts.fetch ?? nodePeerFetch({ ca: peer.caFile ? await readCa(peer.caFile, opts.readFile) : undefined });
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeoutMs);
  timer.unref?.();
  try {
    let res: Awaited<ReturnType<PeerFetch>>;
    try {
      const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
      if (body !== undefined) headers['content-type'] = 'application/json';
      res = await fetchPeer(url, {
        headers,
        redirect: 'manual',
        signal: abort.signal,
        ...(body !== undefined ? { method: 'POST' as const, body } : {}),
      });
    } catch (err) {
      if (abort.signal.aborted) throw new PeerError('PEER_TIMEOUT', `${url}: no answer within ${opts.timeoutMs} ms`);
      const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
      const code = e?.cause?.code ?? e?.code;
      if (code && TLS_VERIFY_CODE.test(code)) {
        throw new PeerError(
          'PEER_TLS_UNTRUSTED',
          `${url}: the peer's certificate does not verify (${code}); the token was not sent. Check peers[].caFile or tls.caFile`,
          { cause: err },
        );
      }
      const detail = code ?? e?.cause?.message ?? e?.message ?? String(err);
      throw new PeerError('PEER_UNREACHABLE', `${url}: ${detail}`, { cause: err });
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel().catch(() => undefined);
      throw new PeerError('PEER_UNAUTHORIZED', `${url}: HTTP ${res.status}: the peer refused the token`);
    }
    if (body === undefined ? res.status !== 200 : res.status < 200 || res.status > 299) {
      await res.body?.cancel().catch(() => undefined);
      throw new PeerError('PEER_HTTP_STATUS', `${url}: HTTP ${res.status}`);
    }
    let text: string;
    try {
      text = await readBoundedText(res, opts.maxBytes);
    } catch (err) {
      if (err instanceof BodyTooLargeError) throw new PeerError('PEER_RESPONSE_TOO_LARGE', `${url}: ${err.message}`);
      if (abort.signal.aborted)
        throw new PeerError('PEER_TIMEOUT', `${url}: response not complete within ${opts.timeoutMs} ms`);
      throw new PeerError('PEER_UNREACHABLE', `${url}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    }
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new PeerError('PEER_BAD_RESPONSE', `${url}: not JSON: ${(err as Error).message}`);
    }
  } finally {
    clearTimeout(timer);
  }
}
