/**
 * The fleet view's peers from the config: static ones as configured, live ones asked for their
 * status document now (GET {url}/v1/status with the peer's bearer token; bounded in time and size;
 * typed failures, peer-client.ts). A live peer's configured physBits is a ceiling (merge.ts).
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { mapLimit } from '../core/async-limits';
import type { PeerConfig } from '../core/config';
import type { PeerFacts, StatusDocument } from '../core/types';
import { lowerWidth } from './merge';
import { isLivePeer } from './peer';
import { getPeerJson, PeerError, peerUrl, type PeerFetch, type PeerTarget } from './peer-client';
import { isObject, isWidth } from '../core/checks';

export interface FetchPeerOptions {
  timeoutMs: number;
  /** Largest response body accepted, default 16 MiB. */
  maxBytes?: number;
  readFile?: (path: string) => Promise<string>;
  /** Default: node's http/https client, verifying https peers against their caFile. */
  fetch?: PeerFetch;
}

const DEFAULT_MAX_BYTES = 16 * 1024 * 1024;
const STATUS_PATH = 'v1/status';

/** GET {url}/v1/status with the peer's bearer token; bounded in time and size; typed failures (peer-client.ts). */
export async function fetchPeerStatus(peer: PeerTarget, opts: FetchPeerOptions): Promise<StatusDocument> {
  const doc = await getPeerJson(peer, STATUS_PATH, {
    timeoutMs: opts.timeoutMs,
    maxBytes: opts.maxBytes ?? DEFAULT_MAX_BYTES,
    readFile: opts.readFile ?? ((p: string) => fsReadFile(p, 'utf8')),
    fetch: opts.fetch,
  });
  return statusDocumentOf(doc, peerUrl(peer.url, STATUS_PATH));
}

/**
 * Checks the shape a peer's status document must have for the fleet view: a host width and a list
 * of VMs, each named, with guest facts (a width) or an error. Anything else is PEER_BAD_RESPONSE.
 */
export function parseStatusDocument(text: string, where = 'peer'): StatusDocument {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new PeerError('PEER_BAD_RESPONSE', `${where}: not JSON: ${(err as Error).message}`);
  }
  return statusDocumentOf(raw, where);
}

/** parseStatusDocument's check on an already parsed document. */
function statusDocumentOf(raw: unknown, where = 'peer'): StatusDocument {
  if (!isObject(raw) || !isObject(raw.host) || !Array.isArray(raw.vms)) {
    throw new PeerError('PEER_BAD_RESPONSE', `${where}: not a status document (host and vms expected)`);
  }
  const bits = raw.host.physBits;
  if (!isWidth(bits)) {
    throw new PeerError('PEER_BAD_RESPONSE', `${where}: host.physBits is not a width`);
  }
  raw.vms.forEach((vm, i) => {
    const ok =
      isObject(vm) &&
      typeof vm.name === 'string' &&
      (isObject(vm.error) ||
        (isObject(vm.guest) &&
          typeof vm.guest.physBits === 'number' &&
          (vm.guest.layout === null || vm.guest.layout === undefined || isObject(vm.guest.layout))));
    if (!ok) throw new PeerError('PEER_BAD_RESPONSE', `${where}: vms[${i}] has neither guest facts nor an error`);
  });
  return raw as unknown as StatusDocument;
}

export interface CollectPeersOptions extends FetchPeerOptions {
  /** Peers asked at once, default 8. */
  concurrency?: number;
}

/** What is known of each configured peer: static ones as configured, live ones asked now. Never rejects. */
export async function collectPeers(peers: PeerConfig[], opts: CollectPeersOptions): Promise<PeerFacts[]> {
  return mapLimit(peers, opts.concurrency ?? 8, async (p): Promise<PeerFacts> => {
    if (!isLivePeer(p)) return { name: p.name, physBits: p.physBits, reachable: true, source: 'static' };
    try {
      const status = await fetchPeerStatus({ url: p.url, tokenFile: p.tokenFile, caFile: p.caFile }, opts);
      // The configured width, when there is one, is a ceiling: the agent may report less, never more.
      const physBits = lowerWidth(status.host.physBits, p.physBits);
      return { name: p.name, physBits, reachable: true, source: 'live', status };
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'PEER_UNREACHABLE';
      const physBits = p.physBits ?? null;
      return {
        name: p.name,
        physBits,
        reachable: false,
        source: physBits === null ? 'none' : 'fallback',
        error: { code, message: (err as Error).message },
      };
    }
  });
}
