/** Numbers in sentences: sizes, addresses. One formatter each, so every message reads alike. */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** Bytes in the largest binary unit that reads well: 2^46 → "64 TiB", 1.5 GiB → "1.5 GiB", 3.25 GiB → "3.25 GiB". */
export function formatBytes(n: number): string {
  let v = n;
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  const text = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, '');
  return `${text} ${UNITS[i]}`;
}

/** 0x-prefixed hex of a non-negative integer address (anything else as it is). */
export function hex(n: number): string {
  return Number.isFinite(n) && n >= 0 ? `0x${Math.floor(n).toString(16)}` : String(n);
}
