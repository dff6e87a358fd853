/**
 * What a configured peer is and how it is named: a live agent (it has a `url`) or a static width,
 * the address a `migrate` names matched to it, and the width in an agent's host document.
 *
 * Address matching is deliberately plain: the target host string equals a peer's `address` after
 * trimming, dropping IPv6 brackets and one trailing dot, ignoring case. Nothing is resolved through
 * DNS; "localhost" or 127.0.0.1 match only a peer configured with exactly that address.
 */
import type { PeerConfig } from '../core/config';
import { widthOrNull } from '../core/checks';

export type LivePeerConfig = Extract<PeerConfig, { url: string }>;

/** A peer whose agent is asked (`url` set), as opposed to a static width. */
export function isLivePeer(peer: PeerConfig): peer is LivePeerConfig {
  return typeof (peer as { url?: unknown }).url === 'string';
}

/** Canonical form of a host string for matching. */
export function normalizeAddress(host: string): string {
  let h = host.trim();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.') && h.length > 1) h = h.slice(0, -1);
  return h.toLowerCase();
}

/** The width in a host document ({ physBits } or a status document's { host: { physBits } }). */
export function physBitsOfHostDocument(doc: unknown): number | null {
  if (typeof doc !== 'object' || doc === null) return null;
  const d = doc as Record<string, unknown>;
  const v = typeof d.physBits === 'number' ? d.physBits : (d.host as Record<string, unknown> | undefined)?.physBits;
  return widthOrNull(v);
}

/** "CODE: message" of a typed error, else its message. */
export function errorText(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}
