/**
 * What a refused command looks like: a normal QMP error reply carrying the client's own id, whose
 * desc starts with REFUSAL_PREFIX and ends with the stable reason code. Every code is listed in
 * docs/guard.md.
 */

export const REFUSAL_PREFIX = 'refused by physbits guard: ';

export const REFUSED = {
  /** A memory device would end above 2^host.physBits under an enforced accelerator. */
  MEMORY_ABOVE_HOST_LIMIT: 'REFUSED_MEMORY_ABOVE_HOST_LIMIT',
  /** A memory device's address or size could not be told (guard.onUnknown). */
  MEMORY_PLACEMENT_UNKNOWN: 'REFUSED_MEMORY_PLACEMENT_UNKNOWN',
  /** A PCI device's 64-bit BAR would be placed in a window that reaches above 2^host.physBits. */
  PCI_WINDOW_ABOVE_HOST_LIMIT: 'REFUSED_PCI_WINDOW_ABOVE_HOST_LIMIT',
  /** The window a PCI device's 64-bit BAR would land in is not known (guard.onUnknown). */
  PCI_WINDOW_UNKNOWN: 'REFUSED_PCI_WINDOW_UNKNOWN',
  /** A PCI device the BAR table does not know, into a window above the limit (guard.onUnknown). */
  PCI_DEVICE_UNKNOWN: 'REFUSED_PCI_DEVICE_UNKNOWN',
  /** The migration peer's phys-bits are below the guest's. */
  MIGRATION_PEER_NARROWER: 'REFUSED_MIGRATION_PEER_NARROWER',
  /** The guest's layout reaches above 2^peer.physBits. */
  MIGRATION_LAYOUT_TOO_HIGH: 'REFUSED_MIGRATION_LAYOUT_TOO_HIGH',
  /** The migration target is no configured peer, or its width is unknown (guard.unknownPeer). */
  MIGRATION_UNKNOWN_PEER: 'REFUSED_MIGRATION_UNKNOWN_PEER',
  /** The guest's facts were not known within guard.holdMs (guard.onUnknown). */
  FACTS_UNKNOWN: 'REFUSED_FACTS_UNKNOWN',
  /** A human-monitor-command line for device_add or migrate that could not be parsed. */
  HMP_UNPARSABLE: 'REFUSED_HMP_UNPARSABLE',
  /** The guard itself failed while deciding (guard.onUnknown). */
  GUARD_ERROR: 'REFUSED_GUARD_ERROR',
} as const;

/** Bound on a reply's desc: the client, logs and alerts all carry it. */
export const MAX_DESC_CHARS = 1024;

/** "refused by physbits guard: <message> [CODE]", bounded. */
export function refusalDesc(code: string, message: string): string {
  const tail = ` [${code}]`;
  let body = message.replace(/[\r\n]+/g, ' ');
  const room = MAX_DESC_CHARS - REFUSAL_PREFIX.length - tail.length;
  if (body.length > room) body = `${body.slice(0, room - 1)}…`;
  return `${REFUSAL_PREFIX}${body}${tail}`;
}

/** A client-supplied value for a message: JSON-quoted, control characters escaped, bounded. */
export function quote(value: unknown, max = 80): string {
  let s = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
  if (s.length > max) s = `${s.slice(0, max)}…`;
  return JSON.stringify(s);
}
