/**
 * The shape checks every part makes of untrusted JSON and numbers: one copy each. (qmp/ keeps its
 * own object check in qmp/messages.ts: it imports nothing of agent/.)
 */

/** A JSON object: not null, not an array. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `v` when it is a JSON object, else null. */
export function asObject(v: unknown): Record<string, unknown> | null {
  return isObject(v) ? v : null;
}

/** An address width an x86 CPU or a guest can have: a whole number from 1 to 64. */
export function isWidth(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 64;
}

/** `v` when it is a width (isWidth), else null. */
export function widthOrNull(v: unknown): number | null {
  return isWidth(v) ? v : null;
}
