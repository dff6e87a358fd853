/**
 * The merge rule for a host that more than one source describes (a configured width, its live
 * agent, one or more Prometheus series): the lower width wins. Never the freshest or the last one
 * read: a source can only make a migration to the host safer by claiming less, never open it by
 * claiming more (docs/fleet-prometheus.md, SECURITY.md).
 */

/** The narrowest of the widths that are known; null when none is. */
export function lowerWidth(...widths: ReadonlyArray<number | null | undefined>): number | null {
  let low: number | null = null;
  for (const w of widths) if (typeof w === 'number' && (low === null || w < low)) low = w;
  return low;
}
