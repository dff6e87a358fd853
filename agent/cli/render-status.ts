/** The status document as a table for people: one row per VM. */
import { printable } from '../core/printable';
import type { StatusDocument, VmStatus } from '../core/types';

function row(vm: VmStatus, hostBits: number): string[] {
  if (vm.error)
    return [vm.name, '-', '-', String(hostBits), '-', 'unknown', `${vm.error.code}: ${vm.error.message}`].map(
      printable,
    );
  const g = vm.guest!;
  const v = vm.verdict!;
  const first = v.reasons[0];
  return [
    vm.name,
    vm.accelerator ?? g.accelerator,
    String(g.physBits),
    String(hostBits),
    v.relation,
    v.severity,
    first ? `${first.code}: ${first.message}` : '',
  ].map(printable);
}

/** The last column never gets fewer characters than this: past it a row is left to wrap. */
const MIN_LAST = 20;

/** `text` in at most `room` characters, an ellipsis marking the cut. */
export function cut(text: string, room: number): string {
  const chars = [...text];
  return chars.length <= room ? text : `${chars.slice(0, Math.max(0, room - 1)).join('')}…`;
}

/**
 * Columns padded to their widest cell; the last (free text) is cut so that each line fits `width`
 * characters, when a width is given (a terminal's).
 */
export function renderTable(rows: string[][], header: string[], width?: number): string {
  const all = [header, ...rows];
  const last = header.length - 1;
  // A loop, not Math.max(...): a spread of 200,000 rows overflows the call stack.
  const widths = header.map((_, i) => all.reduce((w, r) => Math.max(w, i === last ? 0 : [...r[i]].length), 0));
  const before = widths.slice(0, last).reduce((sum, w) => sum + w + 2, 0);
  const room = width === undefined ? Infinity : Math.max(MIN_LAST, width - before);
  return all
    .map((r) =>
      r
        .map((cell, i) => (i === last ? cut(cell, room) : cell.padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export interface StatusRenderOptions {
  /** The terminal's width: REASON is cut to fit it. Absent: every line whole (`--wide`, pipes). */
  width?: number;
}

export function renderStatus(doc: StatusDocument, opts: StatusRenderOptions = {}): string {
  const h = doc.host;
  const head = printable(`host ${h.name}: ${h.physBits} bits physical (${h.physBitsSource}), ${h.vendor}`);
  if (doc.vms.length === 0) return `${head}\nno VMs found`;
  const table = renderTable(
    doc.vms.map((vm) => row(vm, h.physBits)),
    ['VM', 'ACCEL', 'GUEST', 'HOST', 'RELATION', 'SEVERITY', 'REASON'],
    opts.width,
  );
  return `${head}\n${table}`;
}
