/**
 * Who may send a notice of a guest migrating here (POST /v1/incoming) over TCP: the peer the
 * migration comes from, and only it. The notice names its source host (`from`, that host's
 * host.name); a configured peer of that name (`peers[].name`) must exist, and the request must come
 * from one of the addresses its `address` or `url` host names. Holding the shared token is not
 * enough: every peer holds it, and a notice sets the width a later incoming guest is judged with.
 * Notices on the local API socket are the operator's (its mode and group decide who may send one).
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { Config } from '../core/config';
import type { IncomingNotice } from '../peers/incoming-notice';
import { remoteKey } from '../api/api-server';

/** Addresses a name stands for (an IP literal for itself); injected by tests. */
export type ResolveAll = (host: string) => Promise<string[]>;

export const resolveAll: ResolveAll = async (host) => {
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare)) return [bare];
  return (await lookup(bare, { all: true })).map((a) => a.address);
};

/** The host part of a peer's `address` ("hv2", "10.0.0.2", "hv2:4444", "[fd00::2]:4444"). */
function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(address);
  if (bracketed) return bracketed[1];
  return isIP(address) === 6 ? address : address.replace(/:\d+$/, '');
}

/** Why a TCP notice from `remote` is refused, or null when it comes from the peer it names. */
export async function noticeRefusal(
  notice: IncomingNotice,
  remote: string,
  peers: Config['peers'],
  resolve: ResolveAll = resolveAll,
): Promise<string | null> {
  if (!notice.from) return 'the notice does not name the host it comes from (from)';
  const peer = peers.find((p) => p.name === notice.from);
  if (!peer) return `no peer named '${notice.from}' in the config`;
  const hosts = [hostOf(peer.address)];
  if ('url' in peer) hosts.push(new URL(peer.url).hostname);
  const want = remoteKey(remote);
  for (const host of new Set(hosts)) {
    const addresses = await resolve(host).catch(() => [] as string[]);
    if (addresses.some((a) => remoteKey(a) === want)) return null;
  }
  return `peer '${notice.from}' (${[...new Set(hosts)].join(', ')}) does not have the address ${want}`;
}
